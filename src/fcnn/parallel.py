"""Synchronous data-parallel training over MPI, with the communicator always explicit.

Every rank runs the same program on the same global batches (the same generator,
so the same order and augmentation) and computes the gradient of its own slice of
each one. One fused allreduce per step sums the slices' gradients, weighted by
their sizes, so every rank applies the same update: the gradient of the whole
global batch, as in one process::

    comm = world()                                  # None when not started by mpiexec
    step = data_parallel_step(model, opt, comm)     # same signature as fcnn.make_step's
    ts, loss = train_epoch(step, ts, x, y, batch_size, rng)   # unchanged epoch loop
    ts = ts._replace(state=allreduce_mean(ts.state, comm))   # batch-norm statistics
    test_loss, test_acc = evaluate_sharded(model, ts.params, ts.state, x_test, y_test, comm)

A training program holds a ``Ranks`` record instead of the communicator and asks these
functions for what differs between one process and many (``training_step``,
``evaluate_on``, ``sync``, ``agree``, ``wait_for_root``); ``on_every_rank`` runs its main
under one abort policy, so no rank is ever left waiting in a collective::

    sys.exit(on_every_rank(lambda ranks: train(args, ranks)))

A global batch of B samples is split into ``size`` contiguous slices whose sizes
differ by at most one (``shard``), so a short last batch needs no special case
and no rank ever skips a collective. The layers know nothing of this module;
mpi4py is imported only by ``world`` (``pip install "fcnn[mpi]"``), and the other
functions take any object with mpi4py's buffer methods (``Allreduce``,
``Bcast``, ``Allgather``, ``Barrier``, ``Abort``, ``Get_rank``, ``Get_size``).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from .layers.base import Array, Context, Layer, Params, State
from .losses import softmax_cross_entropy
from .model import LossPair, loss_and_grad, predict
from .ops.xp import is_numpy, namespace, to_device, to_host
from .optim import Optimizer
from .training import Step, TrainState, evaluate, make_step, update
from .tree import flatten_dict, tree_map, tree_map_with_path, unflatten_dict

__all__ = [
    "MPI_ENV_VARS",
    "TIMEOUT_VAR",
    "Comm",
    "EveryRankError",
    "MPISetupError",
    "MissingMPIError",
    "Ranks",
    "RanksDisagreeError",
    "RanksOutOfStepError",
    "WatchedComm",
    "abort",
    "abort_on_failure",
    "agree",
    "agree_on",
    "allreduce_mean",
    "allreduce_sum",
    "broadcast",
    "check_same_everywhere",
    "data_parallel_step",
    "differing_parts",
    "drop_last_batch",
    "evaluate_on",
    "evaluate_sharded",
    "fingerprint",
    "join_ranks",
    "mpi_timeout",
    "on_every_rank",
    "set_blas_threads",
    "shard",
    "sync",
    "sync_train_state",
    "training_step",
    "wait_for_root",
    "wait_limit",
    "world",
]

# Set by the launchers of MPICH (Hydra), Open MPI and PMIx in every rank they start.
MPI_ENV_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK")


class Comm(Protocol):
    """The part of an mpi4py communicator this module uses (buffer methods only)."""

    def Get_rank(self) -> int: ...
    def Get_size(self) -> int: ...
    def Allreduce(self, sendbuf: Any, recvbuf: Any) -> None: ...
    def Bcast(self, buf: Any, root: int = 0) -> None: ...
    def Allgather(self, sendbuf: Any, recvbuf: Any) -> None: ...
    def Barrier(self) -> None: ...
    def Abort(self, errorcode: int = 0) -> None: ...


class MissingMPIError(ImportError):
    """Started by mpiexec, but mpi4py is not installed."""


class MPISetupError(Exception):
    """This process cannot join the job as asked (a malformed ``FCNN_MPI_TIMEOUT``); every
    rank raises it, and the one with ``root`` true says it."""

    def __init__(self, message: str, *, root: bool = True) -> None:
        super().__init__(message)
        self.root = root


def world() -> Comm | None:
    """``MPI.COMM_WORLD`` when this process was started by an MPI launcher, else ``None``.

    Without a launcher mpi4py is not even imported, so a plain ``python train.py``
    runs exactly as it would without this module. ``MissingMPIError`` when a
    launcher started the process but mpi4py is missing.
    """
    if not any(os.environ.get(var) for var in MPI_ENV_VARS):
        return None
    try:
        from mpi4py import MPI
    except ImportError as err:
        raise MissingMPIError(
            'started by mpiexec, but mpi4py is not installed: pip install "fcnn[mpi]"'
        ) from err
    comm: Comm = MPI.COMM_WORLD
    return comm


def shard(n: int, rank: int, size: int) -> slice:
    """The ``rank``-th of ``size`` contiguous slices of ``range(n)``; sizes differ by <= 1.

    ``shard(10, r, 4)`` gives sizes 3, 3, 2, 2; a slice may be empty when ``n < size``.
    """
    if not 0 <= rank < size:
        raise ValueError(f"shard: rank must be in [0, {size}), got {rank}")
    base, extra = divmod(n, size)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (rank < extra))


def _on_host(a: Any) -> bool:
    return is_numpy(namespace(a))


def _pack(tree: Mapping[str, Any]) -> tuple[list[str], Array]:
    """The leaves of ``tree`` as one contiguous host buffer, in ``paths`` order: the leaves
    on a device first (packed there, then one download), then those on the host (an
    optimizer's step count stays there), each part in sorted path order."""
    flat = flatten_dict(tree)
    device = sorted(p for p in flat if not _on_host(flat[p]))
    host = sorted(p for p in flat if _on_host(flat[p]))
    dtype = np.result_type(*(flat[p].dtype for p in flat)) if flat else np.float32
    parts = [to_host(_concat([flat[p] for p in device], dtype))] if device else []
    parts += [_concat([np.asarray(flat[p]) for p in host], dtype)] if host else []
    buf = parts[0] if len(parts) == 1 else np.concatenate([np.empty(0, dtype), *parts])
    return device + host, buf


def _concat(leaves: list[Any], dtype: Any) -> Array:
    """The leaves, flattened, one after another in a new buffer of their library."""
    xp = namespace(*leaves)
    buf: Array = xp.empty(sum(a.size for a in leaves), dtype=dtype)
    offset = 0
    for a in leaves:
        buf[offset : offset + a.size] = a.reshape(-1)
        offset += a.size
    return buf


def _unpack(paths: list[str], buf: Array, like: Mapping[str, Any]) -> dict[str, Any]:
    """A new tree of ``like``'s structure (empty dicts kept) whose leaves are read from the
    host buffer ``buf`` in ``paths`` order, each with its ``like`` leaf's shape, dtype and
    place: the leaves on a device come from one upload of their part of ``buf``."""
    flat = flatten_dict(like)
    device = [flat[p] for p in paths if not _on_host(flat[p])]
    n = sum(a.size for a in device)
    source = {False: to_device(buf[:n], namespace(*device)) if device else buf, True: buf}
    pieces: dict[str, Any] = {}
    offset = 0
    for p in paths:
        a = flat[p]
        part = source[_on_host(a)][offset : offset + a.size]
        pieces[p] = part.reshape(a.shape).astype(a.dtype, copy=False)
        offset += a.size
    out: dict[str, Any] = tree_map_with_path(lambda path, _: pieces[path], like)
    return out


def allreduce_sum(tree: Mapping[str, Any], comm: Comm) -> dict[str, Any]:
    """The leafwise sum of ``tree`` over all ranks: one fused ``Allreduce``, a new tree.

    Every rank must pass a tree of the same paths and shapes. Leaves on a device are
    packed there and the buffer goes through the host (one download and one upload), so
    any MPI works, CUDA-aware or not; the sum comes back on the device.
    """
    paths, buf = _pack(tree)
    total = np.empty_like(buf)
    comm.Allreduce(buf, total)  # mpi4py's default op: MPI.SUM
    return _unpack(paths, total, tree)


def allreduce_mean(tree: Mapping[str, Any], comm: Comm) -> dict[str, Any]:
    """The leafwise mean of ``tree`` over all ranks (e.g. batch-norm running statistics)."""
    size = comm.Get_size()
    total: dict[str, Any] = tree_map(lambda a: a / size, allreduce_sum(tree, comm))
    return total


def broadcast(tree: Mapping[str, Any], comm: Comm, root: int = 0) -> dict[str, Any]:
    """``root``'s ``tree`` on every rank (one fused ``Bcast``), as a new tree (through the
    host for leaves on a device, as ``allreduce_sum``)."""
    paths, buf = _pack(tree)
    comm.Bcast(buf, root=root)
    return _unpack(paths, buf, tree)


def _rank_generator(rng: Any, rank: int) -> Any:
    """A generator for this rank's layers (dropout), derived from the shared one.

    One draw from the shared ``rng`` per step (the same on every rank, so the ranks'
    shared generators stay equal) seeds a stream of this rank's own, of the same library
    as ``rng`` (NumPy's, or a device generator for device arrays).
    """
    if rng is None:
        return None
    seed = np.random.SeedSequence([int(rng.integers(2**63)), rank])
    if isinstance(rng, np.random.Generator):
        return np.random.default_rng(seed)
    library = sys.modules[type(rng).__module__.partition(".")[0]]
    return library.random.default_rng(seed)


def data_parallel_step(
    model: Layer,
    opt: Optimizer,
    comm: Comm,
    loss: LossPair = softmax_cross_entropy,
    *,
    random_layers: bool = True,
) -> Step:
    """``step(ts, x, y, ctx) -> (new_ts, loss)`` over a *global* batch shared by all ranks.

    Each rank computes the mean loss and gradient of its ``shard`` of ``(x, y)``; one fused
    allreduce sums ``count * gradient``, ``count * loss`` and the counts, so every rank
    gets the global batch's mean gradient and loss and applies the same update. Model
    state (batch-norm statistics) stays this rank's own. A non-finite loss on any rank
    raises ``NonFiniteLossError`` on every rank together, leaving ``ts`` untouched.

    ``random_layers``: whether the model draws from ``ctx.rng`` (dropout); each rank then
    has a generator of its own, seeded by one draw from ``ctx.rng`` per step. ``False``
    never touches ``ctx.rng``: data order and augmentation are then one process's.
    """
    grad_fn = loss_and_grad(model, loss)
    rank, size = comm.Get_rank(), comm.Get_size()

    def step(ts: TrainState, x: Array, y: Array, ctx: Context) -> tuple[TrainState, float]:
        part = shard(len(x), rank, size)
        xs, ys = x[part], y[part]
        count = len(xs)
        own_rng = _rank_generator(ctx.rng, rank) if random_layers else None
        local_ctx = Context(train=ctx.train, rng=own_rng)
        value: Any = 0.0
        grads, new_state = ts.params, ts.state  # a rank with no samples adds zeros
        if count:
            value, grads, new_state = grad_fn(ts.params, ts.state, xs, ys, local_ctx)
        flat = flatten_dict(grads)
        xp = namespace(*flat.values())
        dtype = np.result_type(*(g.dtype for g in flat.values()))  # the scalars ride along
        weighted = {
            "grads": {k: xp.multiply(g, count, dtype=dtype) for k, g in flat.items()},
            "loss": xp.full((1,), count, dtype=dtype) * value,
            "count": xp.full((1,), count, dtype=dtype),
        }
        total = allreduce_sum(weighted, comm)
        n = float(total["count"][0])
        lv = float(total["loss"][0]) / n
        mean_grads = unflatten_dict(
            {k: xp.divide(g, n, dtype=g.dtype) for k, g in flatten_dict(total["grads"]).items()}
        )
        return update(opt, ts, lv, mean_grads, new_state)

    return step


def evaluate_sharded(
    model: Layer,
    params: Params,
    state: State,
    x: Array,
    y: Array,
    comm: Comm,
    loss: LossPair = softmax_cross_entropy,
    batch_size: int = 500,
) -> tuple[float, float]:
    """``fcnn.evaluate`` with each rank predicting its ``shard`` of ``x``; counts summed.

    The accuracy is exactly the one-process accuracy; the mean loss equals it up to
    rounding.
    """
    part = shard(len(x), comm.Get_rank(), comm.Get_size())
    xs, ys = x[part], y[part]
    sums = np.zeros(3)  # loss * count, correct, count
    if len(xs):
        logits = predict(model, params, state, xs, batch_size)
        value, _ = loss.fwd(logits, ys)
        xp = namespace(logits, ys)
        correct = int(xp.sum(xp.argmax(logits, axis=1) == ys))
        sums = np.array([float(value) * len(xs), correct, len(xs)], dtype=np.float64)
    total = allreduce_sum({"sums": sums}, comm)["sums"]
    return float(total[0] / total[2]), float(total[1] / total[2])


def check_same_everywhere(text: str, comm: Comm) -> list[int]:
    """The ranks whose ``text`` differs from rank 0's (empty when all agree).

    Compares fixed-size digests with one ``Allgather`` (``differing_parts``), so ``text``
    may be long.
    """
    return list(differing_parts({"text": text}, comm))


def sync_train_state(ts: TrainState, comm: Comm) -> TrainState:
    """Rank 0's params and optimizer state on every rank, with the ranks' model state
    (batch-norm running statistics, each rank's own during an epoch) averaged."""
    state = allreduce_mean(ts.state, comm) if ts.state else ts.state
    shared = broadcast({"params": ts.params, "opt_state": ts.opt_state}, comm)
    return TrainState(shared["params"], state, shared["opt_state"])


BLAS_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def set_blas_threads(ranks: int) -> str:
    """Give this rank's BLAS cores / ``ranks`` threads (threadpoolctl), unless one of
    ``BLAS_THREAD_VARS`` is set; returns what was chosen, in words."""
    set_by = [v for v in BLAS_THREAD_VARS if os.environ.get(v)]
    if set_by:
        return f"BLAS threads per rank from {set_by[0]}={os.environ[set_by[0]]}"
    n = max(1, len(os.sched_getaffinity(0)) // ranks)
    try:
        from threadpoolctl import threadpool_limits  # type: ignore[import-untyped,unused-ignore]
    except ImportError:
        return 'BLAS threads left as they were (pip install "fcnn[mpi]" adds threadpoolctl)'
    threadpool_limits(n, user_api="blas")
    return (
        f"{n} BLAS thread{'s' if n > 1 else ''} per rank (cores / ranks; OMP_NUM_THREADS overrides)"
    )


# How long a failing rank waits, after flushing, before ending the job: the launcher
# forwards each rank's output asynchronously and drops what is in flight at the abort.
OUTPUT_GRACE_S = 0.5


def abort(comm: Comm, code: int) -> None:
    """Flush this rank's output, give the launcher a moment to forward it, then end every
    rank with exit status ``code`` (``MPI_Abort``)."""
    sys.stdout.flush()
    sys.stderr.flush()
    time.sleep(OUTPUT_GRACE_S)
    comm.Abort(code)


@contextmanager
def abort_on_failure(comm: Comm | None) -> Iterator[None]:
    """End the whole job when this rank fails, so no other rank waits in a collective.

    Inside the block, an exception or a non-zero ``SystemExit`` on any rank prints
    that rank's message to stderr and calls ``comm.Abort`` with the exit status
    (1 for an exception, 130 for Ctrl-C). Without a communicator (or with one rank)
    it does nothing.
    """
    if comm is None or comm.Get_size() == 1:
        yield
        return
    rank = comm.Get_rank()
    try:
        yield
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
        if code:
            abort(comm, code)
        raise
    except KeyboardInterrupt:
        print(f"rank {rank}: interrupted", file=sys.stderr, flush=True)
        abort(comm, 130)
        raise
    except BaseException:
        print(f"rank {rank}: {traceback.format_exc()}", file=sys.stderr, flush=True)
        abort(comm, 1)
        raise


# --- collectives that never wait forever ------------------------------------------------------

TIMEOUT_VAR = "FCNN_MPI_TIMEOUT"
DEFAULT_TIMEOUT_S = 60.0
# A collective may wait this many times the longest time between two collectives so far.
SLOW_FACTOR = 10.0
# How long a rank that stopped waiting gives the others to say that they are waiting too.
ANSWER_S = 1.0
# A rank waiting for the others looks at the collective without pause for this long, only
# offering its core to other processes between looks (on a busy machine a pause, even of
# microseconds, makes the next look come milliseconds later; not yielding starves a rank
# that shares the core), then with pauses of a tenth of the wait so far, at most MAX_PAUSE_S.
SPIN_S = 0.05
MAX_PAUSE_S = 0.01
_yield_core: Callable[[], None] = getattr(os, "sched_yield", lambda: time.sleep(0))
_KINDS = ("allreduce", "bcast", "allgather", "barrier")
_PING, _PONG = 7301, 7302  # point-to-point tags: "where are you?", "waiting in a collective"


def mpi_timeout(environ: Mapping[str, str]) -> float:
    """``FCNN_MPI_TIMEOUT``'s seconds (``DEFAULT_TIMEOUT_S`` when unset; 0: wait forever);
    ``ValueError`` for anything but a number >= 0."""
    text = environ.get(TIMEOUT_VAR, "").strip()
    if not text:
        return DEFAULT_TIMEOUT_S
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds >= 0):
        raise ValueError(
            f"{TIMEOUT_VAR} must be a number of seconds >= 0 (0: wait forever), got {text!r}"
        )
    return seconds


def wait_limit(timeout: float, slowest: float, factor: float = SLOW_FACTOR) -> float | None:
    """How long a collective may wait for the other ranks: ``factor`` times the slowest
    step seen so far (``slowest`` seconds), and never less than ``timeout``; ``None``
    (forever) when ``timeout`` is 0."""
    return None if timeout == 0 else max(timeout, factor * slowest)


def _where(row: Array) -> str:
    """``"allreduce #12 (8426 values)"`` from a collective's ``[number, kind, size]``."""
    number, kind, size = (int(v) for v in row)
    return f"{_KINDS[kind]} #{number} ({size} values)"


class WatchedComm:
    """An mpi4py communicator (the ``Comm`` protocol) whose collectives never wait forever.

    Before each collective the ranks say where they are: a nonblocking ``Iallgather`` of
    ``[number, kind, size]``, polled until every rank has arrived (for ``SPIN_S`` without
    pause, yielding the core between looks; then with pauses of a tenth of the wait so far,
    at most ``MAX_PAUSE_S``). Then:

    - ranks that entered different collectives raise ``RanksOutOfStepError`` on every rank
      instead of hanging in mismatched collectives;
    - otherwise the collective itself runs, at full speed, every rank being there.

    A wait longer than ``wait_limit(timeout, slowest)`` ends the job: the rank asks every
    other rank where it is (ranks waiting in a collective answer at once), the lowest
    rank that is waiting names those that did not answer in one line, and ``MPI_Abort``
    ends every rank with status 1. ``slowest`` is the longest time between the ends of two
    collectives so far (the start-up before the first is left out), so the limit follows
    the job's own pace. The timing is state, hence a class: the communicator is the one
    mutable thing a run holds, and only ``join_ranks`` makes one.
    """

    def __init__(self, comm: Any, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        self._comm = comm
        self.timeout = timeout
        self._count = 0  # collectives entered
        self._slowest = 0.0
        self._last = time.monotonic()  # when the last collective ended (or we started)

    def Get_rank(self) -> int:
        return int(self._comm.Get_rank())

    def Get_size(self) -> int:
        return int(self._comm.Get_size())

    def Abort(self, errorcode: int = 0) -> None:
        self._comm.Abort(errorcode)

    def Allreduce(self, sendbuf: Any, recvbuf: Any) -> None:
        self._meet("allreduce", np.size(sendbuf))
        self._comm.Allreduce(sendbuf, recvbuf)
        self._left()

    def Bcast(self, buf: Any, root: int = 0) -> None:
        self._meet("bcast", np.size(buf))
        self._comm.Bcast(buf, root=root)
        self._left()

    def Allgather(self, sendbuf: Any, recvbuf: Any) -> None:
        self._meet("allgather", np.size(sendbuf))
        self._comm.Allgather(sendbuf, recvbuf)
        self._left()

    def Barrier(self) -> None:
        self._meet("barrier", 0)
        self._comm.Barrier()
        self._left()

    def _meet(self, kind: str, size: int) -> None:
        """Wait (within the limit) until every rank has entered collective number
        ``self._count``; ``RanksOutOfStepError`` when some entered another one."""
        self._count += 1
        mine = np.array([self._count, _KINDS.index(kind), size], dtype=np.int64)
        every = np.empty((self.Get_size(), 3), dtype=np.int64)
        arrived = time.monotonic()
        limit = wait_limit(self.timeout, max(self._slowest, arrived - self._last))
        request = self._comm.Iallgather(mine, every)
        while not request.Test():
            waited = time.monotonic() - arrived
            if waited < SPIN_S:
                _yield_core()
                continue
            self._answer_pings()
            if limit is not None and waited > limit:
                self._give_up(_where(mine), waited)
            time.sleep(min(MAX_PAUSE_S, waited / 10))
        differ = [r for r in range(len(every)) if not np.array_equal(every[r], every[0])]
        if differ:
            others = ", ".join(f"rank {r} at {_where(every[r])}" for r in differ)
            raise RanksOutOfStepError(
                f"the ranks are out of step: rank 0 at {_where(every[0])}, {others} "
                "(a bug in the program the ranks run)"
            )

    def _left(self) -> None:
        now = time.monotonic()
        if self._count > 1:
            self._slowest = max(self._slowest, now - self._last)
        self._last = now

    def _answer_pings(self) -> None:
        """Tell each rank that asked where this one is: waiting in a collective."""
        from mpi4py import MPI

        status = MPI.Status()
        asked = np.empty(1, dtype=np.int64)
        while self._comm.Iprobe(MPI.ANY_SOURCE, _PING, status):
            source = status.Get_source()
            self._comm.Recv(asked, source, _PING)
            self._comm.Send(np.array([self._count], dtype=np.int64), source, _PONG)

    def _give_up(self, where: str, waited: float) -> None:
        """Ask the other ranks where they are, have the lowest waiting rank name the silent
        ones, and end the job."""
        rank, size = self.Get_rank(), self.Get_size()
        others = [r for r in range(size) if r != rank]
        asks = [self._comm.Isend(np.array([rank], dtype=np.int64), r, _PING) for r in others]
        replies = {r: np.empty(1, dtype=np.int64) for r in others}
        pending = {r: self._comm.Irecv(replies[r], r, _PONG) for r in others}
        answered: list[int] = []
        deadline = time.monotonic() + ANSWER_S
        while pending and time.monotonic() < deadline:
            self._answer_pings()
            answered += [r for r, req in pending.items() if req.Test()]
            pending = {r: req for r, req in pending.items() if r not in answered}
            time.sleep(MAX_PAUSE_S)
        if min([rank, *answered]) == rank:  # the lowest rank still waiting says it once
            print(f"error: {self._silence(where, waited, sorted(pending))}", file=sys.stderr)
        else:
            time.sleep(ANSWER_S + 2 * OUTPUT_GRACE_S)  # that rank's abort ends this one
        del asks  # the asks stay posted until here
        abort(self._comm, 1)

    def _silence(self, where: str, waited: float, silent: list[int]) -> str:
        """The one line that ends a job whose ranks stopped answering."""
        limit = (
            f"the larger of {TIMEOUT_VAR}={self.timeout:g} s and {SLOW_FACTOR:g} x the slowest "
            f"step so far, {self._slowest:.2g} s"
        )
        names = ", ".join(map(str, silent))
        what = {
            0: "every rank answers, yet the collective did not complete",
            1: f"rank {names} has not arrived and does not answer (stopped, hung or dead?)",
        }.get(len(silent), f"ranks {names} have not arrived and do not answer (stopped, hung?)")
        return (
            f"rank {self.Get_rank()} waited {waited:.0f} s at {where}: {what}; ending the job "
            f"({limit})"
        )


# --- a job's ranks, as a training program sees them ------------------------------------------


@dataclass(frozen=True)
class Ranks:
    """The MPI ranks training together (``comm`` is None in a plain one-process run).

    Every rank trains on its slice of each global batch; only rank 0 prints and writes.
    ``threads`` says in words how many BLAS threads each rank has.
    """

    comm: Comm | None = None
    rank: int = 0
    size: int = 1
    threads: str = ""

    @property
    def root(self) -> bool:
        return self.rank == 0

    @property
    def summary(self) -> str:
        """How the job shares the work, in words, for a run's header; ``""`` in one process."""
        if self.comm is None:
            return ""
        return (
            f"data-parallel on {self.size} MPI ranks, each on 1/{self.size} of every batch; "
            f"{self.threads}"
        )

    @property
    def prefix(self) -> str:
        """``"rank 1: "`` before this rank's own error messages under MPI, else ``""``."""
        return "" if self.comm is None else f"rank {self.rank}: "


def join_ranks() -> Ranks:
    """This process's place among the ranks ``mpiexec`` started, if any, with its BLAS
    threads set to cores / ranks (unless the environment says otherwise) and collectives
    that never wait forever (``WatchedComm``, limited by ``FCNN_MPI_TIMEOUT``).
    ``MissingMPIError`` when started by mpiexec without mpi4py, ``MPISetupError`` for a
    malformed ``FCNN_MPI_TIMEOUT``."""
    comm = world()
    if comm is None:
        return Ranks()
    try:
        timeout = mpi_timeout(os.environ)
    except ValueError as err:
        raise MPISetupError(str(err), root=comm.Get_rank() == 0) from None
    watched = WatchedComm(comm, timeout)
    return Ranks(watched, comm.Get_rank(), comm.Get_size(), set_blas_threads(comm.Get_size()))


def training_step(
    ranks: Ranks,
    model: Layer,
    opt: Optimizer,
    loss: LossPair = softmax_cross_entropy,
    *,
    random_layers: bool = True,
) -> Step:
    """``fcnn.make_step`` in one process; ``data_parallel_step`` over the ranks otherwise
    (``random_layers``: whether the model has dropout, see there)."""
    if ranks.comm is None:
        return make_step(model, opt, loss)
    return data_parallel_step(model, opt, ranks.comm, loss, random_layers=random_layers)


def evaluate_on(
    ranks: Ranks, model: Layer, params: Params, state: State, x: Array, y: Array
) -> tuple[float, float]:
    """Test ``(mean loss, accuracy)``: ``fcnn.evaluate``, sharded over the ranks under MPI."""
    if ranks.comm is None:
        return evaluate(model, params, state, x, y)
    return evaluate_sharded(model, params, state, x, y, ranks.comm)


def sync(ranks: Ranks, ts: TrainState) -> TrainState:
    """At the end of an epoch: ``sync_train_state`` under MPI; ``ts`` itself in one process."""
    return ts if ranks.comm is None else sync_train_state(ts, ranks.comm)


def wait_for_root(ranks: Ranks) -> None:
    """Every rank waits here for the others (after rank 0 wrote a file everyone relies on)."""
    if ranks.comm is not None:
        ranks.comm.Barrier()


def drop_last_batch(n: int, batch_size: int, ranks: int, batch_norm: bool) -> bool:
    """Whether to skip an epoch's short last batch of ``n`` samples over ``ranks`` ranks.

    Batch norm cannot normalise one image: a last batch of one image is skipped (for
    every model, as always), and with batch norm also one that would leave some rank's
    slice with a single image."""
    rest = n % batch_size
    if rest == 0 or n == 1:
        return False
    if rest == 1:
        return True
    sizes = {len(range(n)[shard(rest, r, ranks)]) for r in range(ranks)}
    return batch_norm and 1 in sizes


def fingerprint(settings: Mapping[str, Any], arrays: Sequence[Array]) -> str:
    """A digest of what the ranks must share: JSON-able ``settings`` and ``arrays`` (their
    shapes, dtypes and bytes)."""
    h = hashlib.blake2b(json.dumps(settings, sort_keys=True).encode())
    for a in arrays:
        h.update(repr((a.shape, a.dtype.str)).encode())
        h.update(np.ascontiguousarray(a).data)
    return h.hexdigest()


class EveryRankError(Exception):
    """A failure raised at the same point on every rank (ranks that disagree, a non-finite
    loss): ``on_every_rank`` has rank 0 alone report it, and every rank exits 1."""


class RanksDisagreeError(EveryRankError):
    """The ranks were started with different settings or data; raised on every rank."""


class RanksOutOfStepError(EveryRankError):
    """The ranks entered different collectives (``WatchedComm``): a bug in the program they
    run, said instead of hanging; raised on every rank."""


def differing_parts(digests: Mapping[str, str], comm: Comm) -> dict[int, list[str]]:
    """For each rank whose ``digests`` (a text per named part, e.g. ``fingerprint``s)
    differ from rank 0's, the names of the parts that differ; empty when all agree.
    One ``Allgather`` of fixed-size digests."""
    names = list(digests)
    mine = b"".join(hashlib.sha256(digests[k].encode()).digest() for k in names)
    every = np.empty((comm.Get_size(), len(mine)), dtype=np.uint8)
    comm.Allgather(np.frombuffer(mine, dtype=np.uint8), every)
    per_part = every.reshape(len(every), len(names), -1)
    differ = {
        r: [k for i, k in enumerate(names) if not np.array_equal(per_part[r, i], per_part[0, i])]
        for r in range(len(every))
    }
    return {r: parts for r, parts in differ.items() if parts}


def _ranks_named(ranks: Sequence[int]) -> str:
    """``"rank 1"``, ``"ranks 1, 3"``."""
    return f"rank{'s' * (len(ranks) > 1)} {', '.join(map(str, ranks))}"


def _listed(words: Sequence[str]) -> str:
    """``"a"``, ``"a and b"``, ``"a, b and c"``."""
    return " and ".join([", ".join(words[:-1]), words[-1]] if len(words) > 1 else words)


def agree(ranks: Ranks, digests: Mapping[str, str], ts: TrainState) -> TrainState:
    """Refuse ranks whose ``digests`` (a ``fingerprint`` per named part of what they were
    started with: ``{"settings": ..., "data": ...}``) differ from rank 0's, on every rank
    and before training, naming the ranks and the parts; then every rank starts from
    rank 0's ``ts``."""
    if ranks.comm is None:
        return ts
    groups: dict[tuple[str, ...], list[int]] = {}
    for rank, parts in differing_parts(digests, ranks.comm).items():
        groups.setdefault(tuple(parts), []).append(rank)
    if groups:
        said = "; ".join(
            f"{_ranks_named(who)} started with other {_listed(parts)} than rank 0"
            for parts, who in groups.items()
        )
        raise RanksDisagreeError(f"{said}; start every rank with the same command")
    return sync_train_state(ts, ranks.comm)


def agree_on(ranks: Ranks, setting: str, problem: str | None) -> None:
    """Under MPI, before any other collective: ``EveryRankError`` on every rank unless every
    rank was given the same ``setting`` (a flag and its value, ``"--device gpu"``) and none
    has a ``problem`` with it (one line, ``None`` for none); rank 0 says which. So a setting
    one rank cannot use ends every rank at once, with one line. Nothing in one process."""
    if ranks.comm is None:
        return
    differ = check_same_everywhere(f"{setting}\n{problem or ''}", ranks.comm)
    others = _ranks_named(differ)
    if problem is not None and not differ:  # the same on every rank
        raise EveryRankError(problem)
    if problem is not None:
        raise EveryRankError(f"rank 0: {problem} (not so on {others})")
    if differ:
        raise RanksDisagreeError(
            f"{others} cannot use {setting} as rank 0 does, or started with another; start "
            "every rank with the same command, on machines alike"
        )


# How long a rank that ends on Ctrl-C waits before ending the job: rank 0, interrupted
# too, normally says where the run can resume and ends the job first.
INTERRUPT_GRACE_S = 1.0


def on_every_rank(body: Callable[[Ranks], int]) -> int:
    """Run ``body(ranks)`` on this process under the job's abort policy; its exit status.

    ``body`` reports a user's error itself and returns non-zero (1, or 130 for Ctrl-C):
    under MPI that rank then ends every rank with its status, so none waits in a
    collective. An ``EveryRankError`` is said once, by rank 0, and every rank returns 1.
    Any other exception keeps its traceback and ends the job (``abort_on_failure``).
    Started by mpiexec without mpi4py: one line and 1.
    """
    try:
        ranks = join_ranks()
    except (MissingMPIError, MPISetupError) as err:
        if getattr(err, "root", True):
            print(f"error: {err}", file=sys.stderr, flush=True)
        return 1
    with abort_on_failure(ranks.comm):
        try:
            code = body(ranks)
        except EveryRankError as err:
            if ranks.root:
                print(f"error: {err}", file=sys.stderr, flush=True)
            return 1
        if code and ranks.comm is not None and ranks.size > 1:
            if code == 130 and not ranks.root:
                time.sleep(INTERRUPT_GRACE_S)
                print(f"{ranks.prefix}interrupted", file=sys.stderr, flush=True)
            abort(ranks.comm, code)
    return code
