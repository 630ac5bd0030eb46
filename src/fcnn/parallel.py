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
    "Comm",
    "EveryRankError",
    "MissingMPIError",
    "Ranks",
    "RanksDisagreeError",
    "abort",
    "abort_on_failure",
    "agree",
    "agree_on",
    "allreduce_mean",
    "allreduce_sum",
    "broadcast",
    "check_same_everywhere",
    "data_parallel_step",
    "drop_last_batch",
    "evaluate_on",
    "evaluate_sharded",
    "fingerprint",
    "join_ranks",
    "on_every_rank",
    "set_blas_threads",
    "shard",
    "sync",
    "sync_train_state",
    "training_step",
    "wait_for_root",
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
    host = to_host(buf)
    total = np.empty_like(host)
    comm.Allreduce(host, total)  # mpi4py's default op: MPI.SUM
    return _unpack(paths, to_device(total, namespace(buf)), tree)


def allreduce_mean(tree: Mapping[str, Any], comm: Comm) -> dict[str, Any]:
    """The leafwise mean of ``tree`` over all ranks (e.g. batch-norm running statistics)."""
    size = comm.Get_size()
    total: dict[str, Any] = tree_map(lambda a: a / size, allreduce_sum(tree, comm))
    return total


def broadcast(tree: Mapping[str, Any], comm: Comm, root: int = 0) -> dict[str, Any]:
    """``root``'s ``tree`` on every rank (one fused ``Bcast``), as a new tree (through the
    host for leaves on a device, as ``allreduce_sum``)."""
    paths, buf = _pack(tree)
    host = to_host(buf)
    comm.Bcast(host, root=root)
    return _unpack(paths, to_device(host, namespace(buf)), tree)


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

    Each rank computes the mean loss and gradient of its ``shard`` of ``(x, y)``; one
    fused allreduce sums ``count * gradient``, ``count * loss`` and the counts, so
    every rank gets the global batch's mean gradient and loss and applies the same
    update. Model state (batch-norm statistics) stays this rank's own. A non-finite
    loss on any rank makes the global loss non-finite: every rank then raises
    ``NonFiniteLossError`` together, leaving ``ts`` untouched.

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

    Compares fixed-size digests with one ``Allgather``, so ``text`` may be long.
    """
    digest = np.frombuffer(hashlib.sha256(text.encode()).digest(), dtype=np.uint8)
    every = np.empty((comm.Get_size(), digest.size), dtype=np.uint8)
    comm.Allgather(digest, every)
    return [r for r in range(len(every)) if not np.array_equal(every[r], every[0])]


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
    threads set to cores / ranks (unless the environment says otherwise).
    ``MissingMPIError`` when started by mpiexec without mpi4py."""
    comm = world()
    if comm is None:
        return Ranks()
    return Ranks(comm, comm.Get_rank(), comm.Get_size(), set_blas_threads(comm.Get_size()))


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


def agree(ranks: Ranks, digest: str, ts: TrainState) -> TrainState:
    """Refuse ranks whose ``digest`` (``fingerprint``) differs from rank 0's, on every rank
    and before training; then every rank starts from rank 0's ``ts``."""
    if ranks.comm is None:
        return ts
    differ = check_same_everywhere(digest, ranks.comm)
    if differ:
        raise RanksDisagreeError(
            f"rank{'s' * (len(differ) > 1)} {', '.join(map(str, differ))} started with other "
            "settings, data or checkpoint than rank 0; start every rank with the same command"
        )
    return sync_train_state(ts, ranks.comm)


def agree_on(ranks: Ranks, setting: str, problem: str | None) -> None:
    """Under MPI, before any other collective: ``EveryRankError`` on every rank unless every
    rank was given the same ``setting`` (a flag and its value, ``"--device gpu"``) and none
    has a ``problem`` with it (one line, ``None`` for none); rank 0 says which. So a setting
    one rank cannot use ends every rank at once, with one line. Nothing in one process."""
    if ranks.comm is None:
        return
    differ = check_same_everywhere(f"{setting}\n{problem or ''}", ranks.comm)
    others = f"rank{'s' * (len(differ) > 1)} {', '.join(map(str, differ))}"
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
    except MissingMPIError as err:
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
