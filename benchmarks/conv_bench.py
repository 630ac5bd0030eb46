"""Convolution benchmark: naive vs im2col vs strided, through the public conv2d pair.

The grid holds plain convolutions and two of issue 23's settings: a depthwise case
(``groups == C``) and a dilated one (dilation 2); the strided kernel takes neither, so
those rows have naive, im2col and PyTorch only.

Usage::

    python benchmarks/conv_bench.py                      # full grid, Markdown table on stdout
    python benchmarks/conv_bench.py --quick              # CI: few repeats, smallest shapes
    python benchmarks/conv_bench.py --json out.json --plot out.png --repeats 21

What it does, in order:

1. Tunes glibc's allocator (``_common.tune_allocator``; the env-var alternative is
   ``MALLOC_MMAP_THRESHOLD_=1073741824 MALLOC_TRIM_THRESHOLD_=1073741824``) and prints
   the environment: NumPy, BLAS, Python, CPUs, thread variables.
2. Checks that every implementation agrees with the naive reference in float64
   (a batch of 4 of every shape; y, dx, dw, db within 1e-8 relative to the largest
   reference entry) and exits 1 if one does not. PyTorch joins the check when importable.
3. Times each (shape, impl) in a fresh subprocess (``--worker``, JSON over stdout):
   float32, ``conv2d_fwd`` and ``conv2d_bwd`` timed separately inside one
   fwd-then-bwd loop, after warm-up; medians are reported. ``x`` is C-ordered NCHW
   (as at a network's input, so im2col's move to its batch-last layout is timed);
   ``dy`` comes in y's memory layout, as a network's next layer hands it back.
   Forward extra memory is the tracemalloc peak of one untimed forward (the cache
   included) minus the output.
4. Measures the float32 GEMM rate (median time of a 1024^3 matmul) in its own
   subprocess before and after the convolutions, keeps the faster, and reports
   im2col's forward+backward rate on the (64, 32, 14, 14) case as a fraction of it.

FLOPs: forward ``2*N*F*OH*OW*(C/groups)*KH*KW``; backward twice that (dx and dw; db is
ignored).
"Ratio vs im2col" is the per-sample forward+backward time over im2col's (> 1: slower).
Exit codes: 0 ok, 1 disagreement or a failed worker, 2 bad usage or matplotlib missing
for ``--plot``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import tracemalloc
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from _common import (
    cpu_count,
    environment_report,
    format_environment,
    gemm_peak,
    have_module,
    import_torch,
    load_average,
    markdown_table,
    run_worker,
    summarize_ms,
    tune_allocator,
    write_json_atomic,
)

from fcnn.layers.conv import Conv2dCfg, conv2d_bwd, conv2d_fwd
from fcnn.ops.shapes import conv_out_size

SCRIPT = Path(__file__).resolve()
IMPLS = ("naive", "im2col", "strided")
REFERENCE = "naive"  # the agreement oracle
BASELINE = "im2col"  # the ratio column's denominator
TORCH = "torch"
RTOL = 1e-8
CHECK_BATCH = 4
GEMM_N = 1024
SEED = 20261122


@dataclass(frozen=True)
class Case:
    """One benchmark shape: ``x: (N, C, H, W)`` convolved with ``filters`` kernels."""

    name: str
    x_shape: tuple[int, int, int, int]
    filters: int
    kernel: tuple[int, int]
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1

    @property
    def batch(self) -> int:
        return self.x_shape[0]

    def with_batch(self, n: int) -> Case:
        return replace(self, x_shape=(n, *self.x_shape[1:]))

    def out_hw(self) -> tuple[int, int]:
        """``(OH, OW)`` through the library's one output-size formula."""
        (_, _, h, w), (kh, kw) = self.x_shape, self.kernel
        (ph, pw), (dh, dw) = self.padding, self.dilation
        oh = conv_out_size(h, kh, self.stride[0], ph, ph, "H", dh)
        ow = conv_out_size(w, kw, self.stride[1], pw, pw, "W", dw)
        return oh, ow

    def cfg(self, impl: str) -> Conv2dCfg:
        return Conv2dCfg(self.stride, self.padding, impl, self.dilation, self.groups)

    def runs(self, impl: str) -> bool:
        """Whether ``impl`` takes this case (the strided kernel: dilation 1, groups 1 only)."""
        return impl != "strided" or (self.dilation == (1, 1) and self.groups == 1)

    def label(self) -> str:
        n, c, h, w = self.x_shape
        (kh, kw), (sh, sw), (ph, pw) = self.kernel, self.stride, self.padding
        s = f"{sh}" if sh == sw else f"{sh}x{sw}"
        p = f"{ph}" if ph == pw else f"{ph}x{pw}"
        (dh, dw), g = self.dilation, self.groups
        extra = "" if (dh, dw) == (1, 1) else f" d{dh}" if dh == dw else f" d{dh}x{dw}"
        extra += f" g{g}" if g > 1 else ""
        return f"{self.name} ({n},{c},{h},{w}) -> {self.filters} {kh}x{kw} s{s} p{p}{extra}"


CASES = (
    Case("mnist-3x3", (64, 1, 28, 28), 8, (3, 3), (1, 1), (1, 1)),
    Case("mnist-5x5", (64, 1, 28, 28), 8, (5, 5), (1, 1), (2, 2)),
    Case("deep-3x3", (64, 32, 14, 14), 64, (3, 3), (1, 1), (1, 1)),
    Case("cifar-5x5", (64, 3, 32, 32), 32, (5, 5), (1, 1), (2, 2)),
    Case("stride-2", (64, 16, 28, 28), 32, (3, 3), (2, 2), (1, 1)),
    # (27 - 4) % 3 == 2: the last two rows and columns are touched by no window.
    Case("stride-3-ragged", (64, 8, 27, 27), 16, (4, 4), (3, 3), (0, 0)),
    # issue 23: one 3x3 filter per channel (groups == C), and taps 2 apart (padding 2 keeps 28x28)
    Case("depthwise-3x3", (64, 32, 14, 14), 32, (3, 3), (1, 1), (1, 1), groups=32),
    Case("dilated-3x3", (64, 16, 28, 28), 16, (3, 3), (1, 1), (2, 2), dilation=(2, 2)),
)
CASES_BY_NAME = {c.name: c for c in CASES}
PEAK_CASE = "deep-3x3"  # the case whose im2col rate is compared with the GEMM peak
QUICK_CASES = ("mnist-3x3", "stride-3-ragged", "deep-3x3", "depthwise-3x3", "dilated-3x3")
QUICK_NAIVE = ("mnist-3x3", "stride-3-ragged")  # naive is slow: only the smallest in --quick


def conv_flops(n: int, c: int, f: int, oh: int, ow: int, kh: int, kw: int) -> tuple[int, int]:
    """``(forward, backward)`` FLOPs: ``2*N*F*OH*OW*C*KH*KW`` and twice that (dx and dw);
    ``c`` is the channels each filter sees (C/groups)."""
    fwd = 2 * n * f * oh * ow * c * kh * kw
    return fwd, 2 * fwd


def case_flops(case: Case) -> tuple[int, int]:
    """``conv_flops`` of a case at its batch."""
    n, c, _, _ = case.x_shape
    return conv_flops(n, c // case.groups, case.filters, *case.out_hw(), *case.kernel)


def plan(
    quick: bool, naive_batch: int | None = None, torch: bool = False
) -> list[tuple[Case, str]]:
    """The ``(case, impl)`` pairs to time, in order; naive's batch capped at ``naive_batch``."""
    pairs: list[tuple[Case, str]] = []
    cases = [CASES_BY_NAME[n] for n in QUICK_CASES] if quick else list(CASES)
    for case in cases:
        for impl in (*IMPLS, TORCH) if torch else IMPLS:
            if not case.runs(impl):
                continue
            if impl == "naive":
                if quick and case.name not in QUICK_NAIVE:
                    continue
                if naive_batch is not None and naive_batch < case.batch:
                    pairs.append((case.with_batch(naive_batch), impl))
                    continue
            pairs.append((case, impl))
    return pairs


# ----------------------------------------------------------------------------- inputs, runs


def make_inputs(
    case: Case, dtype: Any, seed: int = SEED
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """``(params, x, dy)`` for a case: He-scaled weights, random bias and a random ``dy``."""
    rng = np.random.default_rng(seed)
    n, c, _, _ = case.x_shape
    c //= case.groups  # the channels each filter sees
    kh, kw = case.kernel
    x = rng.standard_normal(case.x_shape).astype(dtype)
    w = (rng.standard_normal((case.filters, c, kh, kw)) * np.sqrt(2.0 / (c * kh * kw))).astype(
        dtype
    )
    b = rng.standard_normal(case.filters).astype(dtype)
    dy = rng.standard_normal((n, case.filters, *case.out_hw())).astype(dtype)
    return {"w": w, "b": b}, x, dy


def _torch_pair(
    torch: Any, case: Case, params: dict[str, np.ndarray], x: np.ndarray, dy: np.ndarray
) -> tuple[Callable[[], Any], Callable[[Any], dict[str, np.ndarray]]]:
    """Forward / backward closures for ``torch.nn.functional.conv2d`` with autograd."""
    fn = torch.nn.functional.conv2d
    xt = torch.from_numpy(x).requires_grad_(True)
    wt = torch.from_numpy(params["w"]).requires_grad_(True)
    bt = torch.from_numpy(params["b"]).requires_grad_(True)
    dyt = torch.from_numpy(dy)

    def fwd() -> Any:
        return fn(
            xt,
            wt,
            bt,
            stride=case.stride,
            padding=case.padding,
            dilation=case.dilation,
            groups=case.groups,
        )

    def bwd(y: Any) -> dict[str, np.ndarray]:
        dx, dw, db = torch.autograd.grad(y, (xt, wt, bt), dyt)
        return {"y": y.detach().numpy(), "dx": dx.numpy(), "dw": dw.numpy(), "db": db.numpy()}

    return fwd, bwd


def _fcnn_pair(
    case: Case, impl: str, params: dict[str, np.ndarray], x: np.ndarray, dy: np.ndarray
) -> tuple[Callable[[], Any], Callable[[Any], dict[str, np.ndarray]]]:
    """Forward / backward closures through the public ``conv2d_fwd`` / ``conv2d_bwd``.

    ``dy`` is handed to backward in y's memory layout (batch-last for im2col), as the
    next layer of a network hands it back (``np.empty_like`` keeps the layout).
    """
    cfg = case.cfg(impl)
    dy_like = np.empty_like(conv2d_fwd(params, x, cfg)[0])
    dy_like[...] = dy

    def fwd() -> Any:
        return conv2d_fwd(params, x, cfg)

    def bwd(out: Any) -> dict[str, np.ndarray]:
        y, cache = out
        dx, grads = conv2d_bwd(cache, dy_like)
        return {"y": y, "dx": dx, "dw": grads["w"], "db": grads["b"]}

    return fwd, bwd


def run_once(case: Case, impl: str, dtype: Any, torch: Any | None = None) -> dict[str, np.ndarray]:
    """``{"y", "dx", "dw", "db"}`` of one forward and backward of ``impl`` on ``case``."""
    params, x, dy = make_inputs(case, dtype)
    if impl == TORCH:
        fwd, bwd = _torch_pair(torch, case, params, x, dy)
    else:
        fwd, bwd = _fcnn_pair(case, impl, params, x, dy)
    return bwd(fwd())


def rel_err(a: np.ndarray, ref: np.ndarray) -> float:
    """``max|a - ref| / max|ref|`` (inf on a shape mismatch, nan stays nan)."""
    if a.shape != ref.shape:
        return float("inf")
    scale = float(np.max(np.abs(ref))) if ref.size else 0.0
    diff = float(np.max(np.abs(a.astype(np.float64) - ref))) if ref.size else 0.0
    return diff / max(scale, np.finfo(np.float64).tiny)


@dataclass(frozen=True)
class Agreement:
    """``failures``: one line per mismatch; ``errors``: "case/impl/key" -> relative error."""

    failures: list[str]
    errors: dict[str, float]

    @property
    def ok(self) -> bool:
        return not self.failures


def check_agreement(
    cases: Sequence[Case],
    impls: Sequence[str] = IMPLS,
    batch: int = CHECK_BATCH,
    rtol: float = RTOL,
    torch: Any | None = None,
) -> Agreement:
    """Every impl against ``REFERENCE`` in float64 on ``batch`` samples of each case.

    y, dx, dw and db must agree within ``rtol`` relative to the reference's largest
    entry. An impl that raises is a failure too. Add ``"torch"`` to ``impls`` (with
    the ``torch`` module) to check PyTorch as well.
    """
    failures: list[str] = []
    errors: dict[str, float] = {}
    for full in cases:
        case = full.with_batch(min(batch, full.batch))
        ref = run_once(case, REFERENCE, np.float64)
        for impl in impls:
            if impl == REFERENCE or not case.runs(impl):
                continue
            try:
                out = run_once(case, impl, np.float64, torch)
            except Exception as exc:
                failures.append(f"{case.label()}: {impl} raised {type(exc).__name__}: {exc}")
                continue
            for key, want in ref.items():
                got = out[key]
                err = rel_err(got, want)
                errors[f"{case.name}/{impl}/{key}"] = err
                if not err <= rtol or got.dtype != want.dtype:
                    failures.append(
                        f"{case.label()}: {impl} {key} differs from {REFERENCE}: relative "
                        f"error {err:.3g} > {rtol:g} (dtype {got.dtype}, shape {got.shape})"
                    )
    return Agreement(failures, errors)


# ----------------------------------------------------------------------------- the worker


def _traced_extra(fn: Callable[[], Any], out_bytes: Callable[[Any], int]) -> tuple[Any, int]:
    """``(fn(), peak traced bytes during fn minus the bytes of what it returned)``."""
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        out = fn()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return out, peak - base - out_bytes(out)


def bench_conv(case: Case, impl: str, repeats: int, warmup: int, threads: int) -> dict[str, Any]:
    """Time ``impl`` on ``case`` (float32) in this process; measure its extra memory.

    Each repeat runs forward then backward, each timed on its own, results dropped
    before the next repeat as in a training step. Memory is measured afterwards in
    an untimed run under tracemalloc (NumPy reports its buffers to it; PyTorch does
    not, so torch gets ``None``).
    """
    params, x, dy = make_inputs(case, np.float32)
    torch = None
    if impl == TORCH:
        torch = import_torch()
        if torch is None:
            raise RuntimeError("torch is not importable")
        torch.set_num_threads(threads)
        fwd, bwd = _torch_pair(torch, case, params, x, dy)
    else:
        fwd, bwd = _fcnn_pair(case, impl, params, x, dy)
    for _ in range(warmup):
        bwd(fwd())
    fwd_s: list[float] = []
    bwd_s: list[float] = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fwd()
        t1 = time.perf_counter()
        grads = bwd(out)
        t2 = time.perf_counter()
        fwd_s.append(t1 - t0)
        bwd_s.append(t2 - t1)
        del out, grads
    fwd_extra: int | None = None
    bwd_extra: int | None = None
    if torch is None:
        out, fwd_extra = _traced_extra(fwd, lambda o: int(o[0].nbytes))
        _, bwd_extra = _traced_extra(
            lambda: bwd(out), lambda g: sum(int(g[k].nbytes) for k in ("dx", "dw", "db"))
        )
    fwd_flops, bwd_flops = case_flops(case)
    f, b = summarize_ms(fwd_s), summarize_ms(bwd_s)
    return {
        "case": case.name,
        "label": case.label(),
        "impl": impl,
        "batch": case.batch,
        "x_shape": list(case.x_shape),
        "filters": case.filters,
        "kernel": list(case.kernel),
        "stride": list(case.stride),
        "padding": list(case.padding),
        "dilation": list(case.dilation),
        "groups": case.groups,
        "dtype": "float32",
        "repeats": repeats,
        "warmup": warmup,
        "threads": threads if impl == TORCH else None,
        "fwd": f,
        "bwd": b,
        "fwd_ms": f["median_ms"],
        "bwd_ms": b["median_ms"],
        "fwd_flops": fwd_flops,
        "bwd_flops": bwd_flops,
        "fwd_gflops": fwd_flops / (f["median_ms"] * 1e-3) / 1e9,
        "bwd_gflops": bwd_flops / (b["median_ms"] * 1e-3) / 1e9,
        "extra_mb": None if fwd_extra is None else fwd_extra / 1e6,
        "bwd_extra_mb": None if bwd_extra is None else bwd_extra / 1e6,
        "loadavg_after": load_average(),
    }


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one worker spec (``{"kind": "conv" | "gemm", ...}``) and return its result."""
    if spec["kind"] == "gemm":
        return gemm_peak(spec["n"], repeats=spec["repeats"])
    c = spec["case"]
    case = Case(
        c["name"],
        tuple(c["x_shape"]),
        c["filters"],
        tuple(c["kernel"]),
        tuple(c["stride"]),
        tuple(c["padding"]),
        tuple(c["dilation"]),
        c["groups"],
    )
    return bench_conv(case, spec["impl"], spec["repeats"], spec["warmup"], spec["threads"])


# ----------------------------------------------------------------------------- the report


def add_ratios(results: list[dict[str, Any]]) -> None:
    """Per-sample forward+backward time over the baseline's (and torch's), in place."""

    def per_sample(r: dict[str, Any]) -> float:
        return float(r["fwd_ms"] + r["bwd_ms"]) / int(r["batch"])

    for key, impl in (("ratio_vs_im2col", BASELINE), ("ratio_vs_torch", TORCH)):
        base = {r["case"]: per_sample(r) for r in results if r["impl"] == impl}
        for r in results:
            r[key] = per_sample(r) / base[r["case"]] if r["case"] in base else None


def _fmt(v: float | None, digits: int = 2) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def results_table(results: Sequence[dict[str, Any]], torch: bool) -> str:
    """The Markdown table of ``results``; naive rows at a smaller batch say so."""
    headers = [
        "shape",
        "impl",
        "fwd ms",
        "bwd ms",
        "fwd GFLOP/s",
        "bwd GFLOP/s",
        "extra MB",
        "ratio vs im2col",
    ]
    if torch:
        headers.append("ratio vs torch")
    rows = []
    full_batch = {c.name: c.batch for c in CASES}
    for r in results:
        impl = r["impl"] + (" (ref)" if r["impl"] == TORCH else "")
        if r["batch"] != full_batch.get(r["case"], r["batch"]):
            impl += f" (N={r['batch']})"
        row = [
            CASES_BY_NAME[r["case"]].label(),
            impl,
            _fmt(r["fwd_ms"]),
            _fmt(r["bwd_ms"]),
            _fmt(r["fwd_gflops"], 1),
            _fmt(r["bwd_gflops"], 1),
            _fmt(r["extra_mb"], 1),
            _fmt(r["ratio_vs_im2col"]),
        ]
        if torch:
            row.append(_fmt(r["ratio_vs_torch"]))
        rows.append(row)
    return markdown_table(headers, rows)


def peak_fraction(results: Sequence[dict[str, Any]], gemm: dict[str, Any]) -> dict[str, Any] | None:
    """im2col's forward+backward GFLOP/s on ``PEAK_CASE`` and its fraction of the GEMM rate."""
    for r in results:
        if r["case"] == PEAK_CASE and r["impl"] == BASELINE:
            flops = r["fwd_flops"] + r["bwd_flops"]
            gflops = flops / ((r["fwd_ms"] + r["bwd_ms"]) * 1e-3) / 1e9
            return {
                "case": r["label"],
                "impl": BASELINE,
                "fwd_bwd_gflops": gflops,
                "gemm_gflops": gemm["gflops"],
                "fraction": gflops / gemm["gflops"],
            }
    return None


def plot(results: Sequence[dict[str, Any]], gemm: dict[str, Any], path: str) -> None:
    """Grouped bars: forward+backward GFLOP/s per case and impl, the GEMM rate as a line."""
    import matplotlib  # type: ignore[import-not-found, unused-ignore]

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # type: ignore[import-not-found, unused-ignore]

    cases = list(dict.fromkeys(r["case"] for r in results))
    impls = list(dict.fromkeys(r["impl"] for r in results))
    width = 0.8 / len(impls)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(cases)), 4.5))
    for k, impl in enumerate(impls):
        xs, ys = [], []
        for i, case in enumerate(cases):
            for r in results:
                if r["case"] == case and r["impl"] == impl:
                    xs.append(i + (k - (len(impls) - 1) / 2) * width)
                    flops = r["fwd_flops"] + r["bwd_flops"]
                    ys.append(flops / ((r["fwd_ms"] + r["bwd_ms"]) * 1e-3) / 1e9)
        ax.bar(xs, ys, width, label=impl)
    ax.axhline(
        gemm["gflops"], color="k", linestyle="--", linewidth=1, label=f"float32 GEMM {GEMM_N}^3"
    )
    ax.set_xticks(range(len(cases)), cases, rotation=20, ha="right")
    ax.set_ylabel("forward+backward GFLOP/s (float32)")
    ax.set_title("fcnn conv2d implementations")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ----------------------------------------------------------------------------- entry point


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Benchmark fcnn's conv2d implementations (naive, im2col, strided).",
        epilog="Allocator: tuned with mallopt on glibc; the env alternative is "
        "MALLOC_MMAP_THRESHOLD_=1073741824 MALLOC_TRIM_THRESHOLD_=1073741824.",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="CI mode: 3 repeats, 1 warm-up, the smallest shapes, naive on fewer",
    )
    p.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="timed repeats per configuration (default 15, 3 with --quick)",
    )
    p.add_argument(
        "--warmup", type=int, default=None, help="untimed warm-up runs (default 3, 1 with --quick)"
    )
    p.add_argument(
        "--naive-batch",
        type=int,
        default=None,
        help="run naive at this smaller batch (labelled in the table)",
    )
    p.add_argument("--no-torch", action="store_true", help="leave PyTorch out even if importable")
    p.add_argument("--json", metavar="PATH", help="write every result and the environment here")
    p.add_argument("--plot", metavar="PATH", help="bar chart (needs matplotlib)")
    p.add_argument("--worker", metavar="SPEC", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    for name in ("repeats", "warmup", "naive_batch"):
        v = getattr(args, name)
        if v is not None and v < (0 if name == "warmup" else 1):
            p.error(f"--{name.replace('_', '-')} must be >= {0 if name == 'warmup' else 1}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker is not None:
        tune_allocator()
        print(json.dumps(worker(json.loads(args.worker))))
        return 0
    if args.plot and not have_module("matplotlib"):
        print("conv_bench: --plot needs matplotlib (pip install matplotlib)", file=sys.stderr)
        return 2
    allocator = tune_allocator()
    repeats = args.repeats or (3 if args.quick else 15)
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 3)
    torch = None if args.no_torch else import_torch()
    threads = cpu_count()

    env = environment_report(
        allocator=allocator.detail,
        torch=(f"{torch.__version__}, set_num_threads({threads})" if torch else "not importable"),
    )
    print("## Environment\n")
    print(format_environment(env))

    pairs = plan(args.quick, args.naive_batch, torch is not None)
    cases = list(dict.fromkeys(c.name for c, _ in pairs))
    impls = (*IMPLS, TORCH) if torch is not None else IMPLS
    agreement = check_agreement([CASES_BY_NAME[n] for n in cases], impls, torch=torch)
    worst = max(agreement.errors.values(), default=0.0)
    print(f"\n## Agreement (float64, batch {CHECK_BATCH}, vs {REFERENCE})\n")
    if not agreement.ok:
        print("FAILED:\n" + "\n".join(f"- {f}" for f in agreement.failures))
        return 1
    print(
        f"all of {', '.join(impls)} agree on y/dx/dw/db (each on the cases it runs): max "
        f"relative error {worst:.2e} <= {RTOL:g}"
    )

    try:
        gemm_spec = {"kind": "gemm", "n": GEMM_N, "repeats": max(repeats, 10)}
        gemm_runs = [run_worker(SCRIPT, gemm_spec)]
        results = []
        for case, impl in pairs:
            print(f"timing {case.label()} {impl} ...", file=sys.stderr, flush=True)
            spec = {
                "kind": "conv",
                "case": asdict(case),
                "impl": impl,
                "repeats": repeats,
                "warmup": warmup,
                "threads": threads,
            }
            results.append(run_worker(SCRIPT, spec))
        gemm_runs.append(run_worker(SCRIPT, gemm_spec))
    except RuntimeError as err:
        print(f"conv_bench: {err}", file=sys.stderr)
        return 1
    add_ratios(results)
    # A peak is a peak: of the runs before and after the convolutions, keep the faster
    # (another process on a small machine easily halves one of them).
    gemm = dict(min(gemm_runs, key=lambda g: float(g["median_ms"])))
    gemm["runs_gflops"] = [g["gflops"] for g in gemm_runs]

    print(f"\n## float32 conv2d, median of {repeats} (warm-up {warmup}), fresh process each\n")
    print(results_table(results, torch is not None))
    print(
        "\nextra MB: tracemalloc peak of one forward (cache included) minus the output; "
        "ratio: per-sample fwd+bwd time over im2col's (> 1 is slower)."
    )
    print(f"load average (1, 5, 15 min) before: {env['loadavg']}, after: {load_average()}")
    frac = peak_fraction(results, gemm)
    print(
        f"\nfloat32 GEMM {GEMM_N}x{GEMM_N} @ {GEMM_N}x{GEMM_N}: median {gemm['median_ms']:.2f} "
        f"ms = {gemm['gflops']:.1f} GFLOP/s (the faster of the runs before and after the "
        f"convolutions: {', '.join(f'{g:.1f}' for g in gemm['runs_gflops'])} GFLOP/s)"
    )
    if frac is not None:
        print(
            f"im2col fwd+bwd on {frac['case']}: {frac['fwd_bwd_gflops']:.1f} GFLOP/s = "
            f"{100 * frac['fraction']:.0f}% of the GEMM rate"
        )

    if args.json:
        write_json_atomic(
            args.json,
            {
                "environment": env,
                "quick": args.quick,
                "repeats": repeats,
                "warmup": warmup,
                "agreement": {
                    "ok": True,
                    "rtol": RTOL,
                    "batch": CHECK_BATCH,
                    "errors": agreement.errors,
                },
                "gemm": gemm,
                "peak_fraction": frac,
                "results": results,
            },
        )
    if args.plot:
        plot(results, gemm, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
