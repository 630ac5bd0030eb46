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

A global batch of B samples is split into ``size`` contiguous slices whose sizes
differ by at most one (``shard``), so a short last batch needs no special case
and no rank ever skips a collective. The layers know nothing of this module;
mpi4py is imported only by ``world`` (``pip install "fcnn[mpi]"``), and the other
functions take any object with mpi4py's buffer methods (``Allreduce``,
``Bcast``, ``Allgather``, ``Barrier``, ``Abort``, ``Get_rank``, ``Get_size``).
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
import traceback
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Protocol

import numpy as np

from .layers.base import Array, Context, Layer, Params, State
from .losses import softmax_cross_entropy
from .model import LossPair, loss_and_grad, predict
from .ops.xp import is_numpy, namespace, to_device, to_host
from .optim import Optimizer
from .training import Step, TrainState, update
from .tree import flatten_dict, tree_map, tree_map_with_path, unflatten_dict

__all__ = [
    "MPI_ENV_VARS",
    "Comm",
    "abort",
    "abort_on_failure",
    "allreduce_mean",
    "allreduce_sum",
    "broadcast",
    "check_same_everywhere",
    "data_parallel_step",
    "evaluate_sharded",
    "set_blas_threads",
    "shard",
    "sync_train_state",
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


def _pack(tree: Mapping[str, Any]) -> tuple[list[str], Array]:
    """The leaves of ``tree``, flattened in sorted path order, as one contiguous buffer
    of the leaves' library (on their device)."""
    flat = flatten_dict(tree)
    paths = sorted(flat)
    xp = namespace(*flat.values())
    leaves = [np.asarray(flat[p]) if is_numpy(xp) else flat[p] for p in paths]
    dtype = np.result_type(*(a.dtype for a in leaves)) if leaves else np.float32
    buf = xp.empty(sum(a.size for a in leaves), dtype=dtype)
    offset = 0
    for a in leaves:
        buf[offset : offset + a.size] = a.reshape(-1)
        offset += a.size
    return paths, buf


def _unpack(paths: list[str], buf: Array, like: Mapping[str, Any]) -> dict[str, Any]:
    """A new tree of ``like``'s structure (empty dicts kept) whose leaves are read from
    ``buf`` in ``paths`` order, each with its ``like`` leaf's shape and dtype."""
    flat = flatten_dict(like)
    pieces: dict[str, Any] = {}
    offset = 0
    for p in paths:
        a = flat[p]
        pieces[p] = buf[offset : offset + a.size].reshape(a.shape).astype(a.dtype, copy=False)
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

    ``random_layers``: whether the model draws from ``ctx.rng`` (dropout). Each rank
    then draws from a generator of its own, seeded by one draw from the shared
    ``ctx.rng`` per step. Pass ``False`` for a model without such layers: ``ctx.rng``
    is then never touched, so data order and augmentation are exactly those of one
    process.
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
