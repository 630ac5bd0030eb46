"""Data-parallel scaling benchmark: fcnn's training step on 1 and 2 MPI ranks vs PyTorch.

Usage::

    python benchmarks/mpi_bench.py                  # small + default, batch 64 and 128, 3 rounds
    python benchmarks/mpi_bench.py --ranks 1 2 4 --rounds 5 --json out.json
    python benchmarks/mpi_bench.py --quick          # what the tests run: few steps, one round

For every round, each configuration runs in fresh processes, the rounds interleaved:
``mpiexec -n R python mpi_bench.py --worker SPEC`` times ``fcnn.parallel.data_parallel_step``
(forward, loss, backward, one fused allreduce, SGD with momentum; float32) on R ranks, each
rank on 1/R of every global batch with cores / R BLAS threads, and PyTorch eager trains the
same network (built from fcnn's spec by ``train_bench.torch_model``) with as many threads as
there are cores, in NCHW and channels-last layouts. Rank 0 also times each ``Allreduce``.

The report gives samples/s of the fastest round, the allreduce time per step, and for each
target the median of the per-round ratios with their spread: a shared machine makes single
runs noisy, and ratios within one round cancel most of it.

Exit codes: 0 ok (targets are reported, not enforced), 1 a failed worker, 2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from _common import (
    cpu_count,
    environment_report,
    format_environment,
    import_torch,
    markdown_table,
    run_worker,
    summarize_ms,
    tune_allocator,
    write_json_atomic,
)
from train_bench import INPUT_SHAPE, LR, MOMENTUM, NUM_CLASSES, SEED

import fcnn
from fcnn.models import build_model
from fcnn.parallel import data_parallel_step, world

SCRIPT = Path(__file__).resolve()
TRAIN_BENCH = SCRIPT.with_name("train_bench.py")
MODELS = ("small", "default")
BATCHES = (64, 128)
# The targets: (model, batch, numerator ranks, denominator, minimum ratio)
TARGETS = (
    ("small", 128, 2, "fcnn x1", 1.5),
    ("small", 128, 2, "torch-cl", 1.0),
    ("default", 64, 2, "torch", 1.0),
    ("default", 128, 2, "torch", 1.0),
)


class TimedComm:
    """A communicator that times every ``Allreduce`` it passes on."""

    def __init__(self, comm: Any) -> None:
        self.comm = comm
        self.seconds: list[float] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.comm, name)

    def Allreduce(self, sendbuf: Any, recvbuf: Any) -> None:
        t0 = time.perf_counter()
        self.comm.Allreduce(sendbuf, recvbuf)
        self.seconds.append(time.perf_counter() - t0)


def bench_ranks(spec: dict[str, Any]) -> dict[str, Any] | None:
    """On every rank: time ``steps`` data-parallel steps; rank 0 returns the result."""
    comm = world()
    if comm is None:
        raise RuntimeError("the ranks worker must be started by mpiexec")
    size, rank = comm.Get_size(), comm.Get_rank()
    threads = max(1, cpu_count() // size)
    from threadpoolctl import threadpool_limits  # type: ignore[import-untyped,unused-ignore]

    threadpool_limits(threads, user_api="blas")
    model_name, batch = spec["model"], int(spec["batch"])
    model = build_model(model_name, NUM_CLASSES)
    rng = np.random.default_rng(SEED)  # the same weights and batch on every rank
    params, state, _ = fcnn.init(model, rng, INPUT_SHAPE, np.float32)
    opt = fcnn.sgd(LR, momentum=MOMENTUM)
    timed = TimedComm(comm)
    step = data_parallel_step(model, opt, timed, random_layers=False)
    x = rng.standard_normal((batch, *INPUT_SHAPE), dtype=np.float32)
    y = rng.integers(0, NUM_CLASSES, batch)
    ts = fcnn.TrainState(params, state, opt.init(params))
    ctx = fcnn.Context(train=True, rng=rng)
    for _ in range(int(spec["warmup"])):
        ts, _ = step(ts, x, y, ctx)
    timed.seconds.clear()
    times: list[float] = []
    for _ in range(int(spec["steps"])):
        t0 = time.perf_counter()
        ts, _ = step(ts, x, y, ctx)
        times.append(time.perf_counter() - t0)
    if rank != 0:
        return None
    stats = summarize_ms(times)
    return {
        "model": model_name,
        "batch": batch,
        "impl": f"fcnn x{size}",
        "ranks": size,
        "blas_threads": threads,
        "step_ms": stats["median_ms"],
        "samples_per_s": batch / (stats["median_ms"] * 1e-3),
        "allreduce_ms": summarize_ms(timed.seconds)["median_ms"],
        "allreduce_bytes": gradient_bytes(model_name),
    }


ALLREDUCE_SIZES = (1 << 10, 1 << 14, 1 << 17, 1 << 19, 1 << 21)  # bytes of float32 buffers


def bench_allreduce(spec: dict[str, Any]) -> dict[str, Any] | None:
    """On every rank: median time of ``Allreduce`` over float32 buffers of ``sizes`` bytes."""
    comm = world()
    if comm is None:
        raise RuntimeError("the allreduce worker must be started by mpiexec")
    out: dict[str, float] = {}
    for nbytes in spec["sizes"]:
        buf = np.ones(nbytes // 4, np.float32)
        total = np.empty_like(buf)
        times = []
        for i in range(int(spec["repeats"]) + 5):
            comm.Barrier()  # time the reduction, not the wait for a late rank
            t0 = time.perf_counter()
            comm.Allreduce(buf, total)
            if i >= 5:
                times.append(time.perf_counter() - t0)
        out[str(nbytes)] = statistics.median(times) * 1e3
    if comm.Get_rank() != 0:
        return None
    return {"kind": "allreduce", "ranks": comm.Get_size(), "ms": out}


def fit_latency_bandwidth(ms_by_bytes: dict[str, float]) -> tuple[float, float]:
    """``(alpha_ms, bytes_per_ms)`` of ``t = alpha + n / bandwidth``, least squares."""
    n = np.array([float(k) for k in ms_by_bytes])
    t = np.array(list(ms_by_bytes.values()))
    slope, alpha = np.polyfit(n, t, 1)
    return float(alpha), float(1.0 / slope)


def gradient_bytes(model_name: str) -> int:
    """Bytes of a model's float32 gradient plus the step's loss and count."""
    model = build_model(model_name, NUM_CLASSES)
    params, _, _ = fcnn.init(model, np.random.default_rng(0), INPUT_SHAPE)
    return sum(np.asarray(v).nbytes for v in fcnn.tree_leaves(params)) + 8


def allreduce_report(result: dict[str, Any], models: Sequence[str]) -> str:
    """Measured times; latency and bandwidth fitted to the generic sizes alone; and for
    each model's gradient, the fit's prediction next to the measurement of that size."""
    ms = result["ms"]
    alpha, bw = fit_latency_bandwidth({k: v for k, v in ms.items() if int(k) in ALLREDUCE_SIZES})
    lines = [f"Allreduce on {result['ranks']} ranks (median of repeats, after a barrier):"]
    lines += [f"  {int(k):>9,} bytes: {v:.4f} ms" for k, v in ms.items()]
    lines.append(
        f"  fit t = alpha + bytes / B over the {len(ALLREDUCE_SIZES)} generic sizes: "
        f"alpha = {alpha * 1e3:.1f} us, B = {bw / 1e6:.2f} GB/s"
    )
    for name in models:
        nbytes = gradient_bytes(name)
        lines.append(
            f"  {name} model gradient, {nbytes:,} bytes: measured {ms[str(nbytes)]:.4f} ms, "
            f"fit predicts {alpha + nbytes / bw:.4f} ms"
        )
    return "\n".join(lines)


def mpiexec() -> str:
    found = shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or shutil.which(
        "mpiexec"
    )
    if found is None:
        raise RuntimeError('mpiexec not found: pip install "fcnn[mpi]"')
    return found


def run_ranks(spec: dict[str, Any], ranks: int, timeout: float = 600.0) -> dict[str, Any]:
    """``mpiexec -n ranks python mpi_bench.py --worker SPEC``; rank 0's JSON result."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    return run_worker(SCRIPT, spec, timeout, launcher=[mpiexec(), "-n", str(ranks)], env=env)


def one_round(
    models: Sequence[str], batches: Sequence[int], ranks: Sequence[int], torch: bool, quick: bool
) -> list[dict[str, Any]]:
    steps, warmup = (5, 2) if quick else (40, 8)
    rows: list[dict[str, Any]] = []
    for model in models:
        for batch in batches:
            spec = {"model": model, "batch": batch, "steps": steps, "warmup": warmup}
            rows += [run_ranks(spec, r) for r in ranks]
            if torch:
                for impl in ("torch", "torch-cl"):
                    tspec = {**spec, "kind": "step", "impl": impl, "threads": cpu_count()}
                    rows.append(run_worker(TRAIN_BENCH, tspec))
    return rows


def ratios(
    rounds: Sequence[list[dict[str, Any]]], model: str, batch: int, num: str, den: str
) -> list[float]:
    """``num / den`` samples/s within each round."""
    out = []
    for rows in rounds:
        by = {r["impl"]: r for r in rows if r["model"] == model and r["batch"] == batch}
        if num in by and den in by:
            out.append(by[num]["samples_per_s"] / by[den]["samples_per_s"])
    return out


def _allreduce_ms(row: dict[str, Any]) -> str:
    return f"{row['allreduce_ms']:.3f}" if "allreduce_ms" in row else ""


def report(rounds: Sequence[list[dict[str, Any]]], ranks: Sequence[int]) -> str:
    best: dict[tuple[str, int, str], dict[str, Any]] = {}
    for rows in rounds:
        for r in rows:
            key = (r["model"], r["batch"], r["impl"])
            if key not in best or r["samples_per_s"] > best[key]["samples_per_s"]:
                best[key] = r
    table = markdown_table(
        ["model", "batch", "run", "samples/s", "allreduce ms/step"],
        [
            [m, str(b), impl, f"{r['samples_per_s']:,.0f}", _allreduce_ms(r)]
            for (m, b, impl), r in sorted(best.items())
        ],
    )
    lines = [table, "", "Ratios: median of the per-round ratios [min, max over rounds]"]
    top, base = f"fcnn x{max(ranks)}", f"fcnn x{min(ranks)}"
    wanted: list[tuple[str, int, str, str, float | None]]
    targets = [(m, b, f"fcnn x{n}", den, need) for m, b, n, den, need in TARGETS]
    wanted = [
        (m, b, top, base, None)
        for m, b in sorted({k[:2] for k in best})
        if not any(t[:4] == (m, b, top, base) for t in targets)  # said below with its target
    ]
    wanted += targets
    for model, batch, num, den, need in wanted:
        rs = ratios(rounds, model, batch, num, den)
        if not rs or num == den:
            continue
        med = statistics.median(rs)
        verdict = (
            "" if need is None else f" (target >= {need}: {'met' if med >= need else 'MISSED'})"
        )
        lines.append(
            f"  {model} batch {batch}: {num} / {den} = {med:.2f} "
            f"[{min(rs):.2f}, {max(rs):.2f}]{verdict}"
        )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    p.add_argument("--batches", nargs="+", type=int, default=list(BATCHES))
    p.add_argument("--ranks", nargs="+", type=int, default=[1, 2])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="few steps, one round (for tests)")
    p.add_argument("--no-torch", action="store_true", help="leave PyTorch out")
    p.add_argument("--json", metavar="PATH", help="write every round's rows as JSON")
    p.add_argument(
        "--allreduce",
        action="store_true",
        help="time Allreduce alone over a range of buffer sizes on the largest --ranks",
    )
    p.add_argument("--worker", metavar="SPEC", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if any(r < 1 for r in args.ranks) or args.rounds < 1 or any(b < 1 for b in args.batches):
        p.error("--ranks, --rounds and --batches must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    tune_allocator()
    if args.worker:
        spec = json.loads(args.worker)
        result = bench_allreduce(spec) if spec.get("kind") == "allreduce" else bench_ranks(spec)
        if result is not None:
            print(json.dumps(result), flush=True)
        return 0
    print(format_environment(environment_report()))
    if args.allreduce:
        sizes = [*ALLREDUCE_SIZES, *(gradient_bytes(name) for name in args.models)]
        spec = {
            "kind": "allreduce",
            "sizes": sorted(set(sizes)),
            "repeats": 5 if args.quick else 200,
        }
        try:
            result = run_ranks(spec, max(args.ranks))
        except (RuntimeError, subprocess.TimeoutExpired) as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        print(allreduce_report(result, args.models))
        if args.json:
            write_json_atomic(args.json, result)
        return 0
    torch = not args.no_torch and import_torch() is not None
    rounds = 1 if args.quick else args.rounds
    try:
        all_rows = [
            one_round(args.models, args.batches, args.ranks, torch, args.quick)
            for _ in range(rounds)
        ]
    except (RuntimeError, subprocess.TimeoutExpired) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(report(all_rows, args.ranks))
    if args.json:
        write_json_atomic(args.json, {"rounds": all_rows, "ranks": args.ranks})
    return 0


if __name__ == "__main__":
    sys.exit(main())
