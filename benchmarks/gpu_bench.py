"""Training steps on a GPU: fcnn on CuPy beside PyTorch eager on the same GPU, and fcnn on the CPU.

Run through ``python benchmarks/train_bench.py --device gpu [--profile]`` (docs/gpu.md).

The step is the ``fast`` model's (``fcnn.models.fast_cnn``; PyTorch's is built from fcnn's
own initial weights by ``time_to_accuracy.torch_model``), with Adam and label smoothing
0.1, on one random float32 batch that lives on the device, as in
``../shared/measurements/gpu-step-profile.md``. fcnn runs in three variants:

- ``port``: every fused function unfused (``cupy.fuse`` hidden) and the loss read on
  the host after every step, as the NumPy-only fcnn 0.2.0 did with ``np`` swapped for CuPy;
- ``unfused``: as ``port``, without the per-step read;
- ``fused``: ``fcnn.make_step`` as it is (fused kernels, nothing read per step).

(No CUDA-graph variant: CuPy 14.2 refuses cuBLAS calls during stream capture, so a step
with a matrix product cannot be captured; docs/gpu.md.)

A step's time is the wall time of ``steps`` steps between two device synchronisations,
divided by ``steps`` (the throughput a training loop gets), after ``warmup`` steps; the
best of ``repeats`` such runs. PyTorch runs the same way, in NCHW and channels-last.
Every library runs in a fresh process per batch size, in the order of ``--batches``; fcnn
on the CPU runs at the first batch size only, after the GPU's. The report is written after
every worker, so a run cut short keeps what it measured. Ratios are fcnn's step time over
PyTorch's (the issue's targets: at most 2 at batch 128, 1.5 at batch 2048).
"""

from __future__ import annotations

import cProfile
import io
import json
import pstats
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

SCRIPT = Path(__file__).resolve()
BATCHES = (128, 512, 2048)
VARIANTS = ("port", "unfused", "fused")
TORCH_FORMATS = ("nchw", "channels_last")
SEED = 20261204
LR = 1e-3
SMOOTHING = 0.1


def _fcnn_setup(batch: int, cp: Any) -> tuple[Any, Any, Any, Any, Any]:
    """``(model, opt, host TrainState, x, y)``: the fast model and a random batch on ``cp``."""
    import fcnn
    from fcnn.models import build_model

    model = build_model("fast", 10)
    rng = np.random.default_rng(SEED)
    params, state, _ = fcnn.init(model, rng, (1, 28, 28), np.float32)
    opt = fcnn.adam(LR)
    ts = fcnn.TrainState(params, state, opt.init(params))
    x = rng.standard_normal((batch, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, batch)
    return model, opt, ts, *fcnn.to_device((x, y), cp)


def _timed(
    run: Callable[[], Any], sync: Callable[[], None], steps: int, warmup: int, repeats: int
) -> dict[str, Any]:
    """Best and median over ``repeats`` of (time of ``steps`` runs between syncs) / steps, ms."""
    for _ in range(warmup):
        run()
    sync()
    per_step = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(steps):
            run()
        sync()
        per_step.append((time.perf_counter() - t0) / steps * 1e3)
    return {"ms": min(per_step), "median_ms": statistics.median(per_step), "runs_ms": per_step}


def _variant_step(variant: str, model: Any, opt: Any, ts0: Any, x: Any, y: Any, cp: Any) -> Any:
    """A zero-argument training step of ``variant`` (its state kept between calls)."""
    import fcnn

    step = fcnn.make_step(model, opt, fcnn.label_smoothing(SMOOTHING))
    ctx = fcnn.Context(train=True)
    holder = [fcnn.to_device(ts0, cp)]

    def run() -> Any:
        holder[0], loss = step(holder[0], x, y, ctx)
        if variant == "port":
            float(loss)  # read on the host every step, as before
        return loss

    return run


def fcnn_gpu_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Every fcnn variant at one batch size on the GPU."""
    import fcnn
    from fcnn.ops.xp import FUSE_FALLBACKS

    cp = fcnn.array_library("gpu")
    fuse = cp.fuse
    model, opt, ts0, x, y = _fcnn_setup(int(spec["batch"]), cp)
    sync = cp.cuda.Device().synchronize
    out: dict[str, Any] = {"lib": "fcnn-gpu", "batch": spec["batch"], "variants": {}}
    for variant in spec["variants"]:
        cp.fuse = None if variant in ("port", "unfused") else fuse  # fcnn.ops.xp.fused asks
        try:
            run = _variant_step(variant, model, opt, ts0, x, y, cp)
            out["variants"][variant] = _timed(run, sync, spec["steps"], spec["warmup"], 3)
        except Exception as err:  # report and go on: one variant must not hide the others
            out["variants"][variant] = {"error": f"{type(err).__name__}: {err}"}
        finally:
            cp.fuse = fuse
    out["fuse_fallbacks"] = list(FUSE_FALLBACKS)
    out["versions"] = {
        "cupy": cp.__version__,
        "numpy": np.__version__,
        "device": cp.cuda.runtime.getDeviceProperties(0)["name"].decode(),
    }
    return out


def fcnn_cpu_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """fcnn's ``fused`` step on the CPU (NumPy), fewer steps: it is the slow one."""
    from fcnn.runtime import tune_allocator

    tune_allocator()
    model, opt, ts0, x, y = _fcnn_setup(int(spec["batch"]), np)
    run = _variant_step("fused", model, opt, ts0, x, y, np)
    result = _timed(run, lambda: None, max(2, spec["steps"] // 10), 2, 1)
    return {
        "lib": "fcnn-cpu",
        "batch": spec["batch"],
        "variants": {"fused": result},
        "threads_note": "NumPy's BLAS at its default threads",
    }


def torch_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """PyTorch eager, the same model, weights, loss and optimizer, NCHW and channels-last."""
    import time_to_accuracy
    import torch

    import fcnn

    out: dict[str, Any] = {
        "lib": "torch",
        "batch": spec["batch"],
        "variants": {},
        "versions": {"torch": torch.__version__, "cuda": torch.version.cuda},
    }
    _model, _opt, ts0, x_np, y_np = _fcnn_setup(int(spec["batch"]), np)
    for fmt in TORCH_FORMATS:
        memory = torch.channels_last if fmt == "channels_last" else torch.contiguous_format
        params, state = fcnn.to_host((ts0.params, ts0.state))
        module = time_to_accuracy.torch_model(torch, params, state).cuda()
        module = module.to(memory_format=memory).train()
        x = torch.from_numpy(x_np).cuda().contiguous(memory_format=memory)
        y = torch.from_numpy(y_np).cuda()
        opt = torch.optim.Adam(module.parameters(), lr=LR)
        loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=SMOOTHING)

        def run(
            module: Any = module, opt: Any = opt, x: Any = x, y: Any = y, loss_fn: Any = loss_fn
        ) -> Any:
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(module(x), y)
            loss.backward()
            opt.step()
            return loss

        out["variants"][fmt] = _timed(run, torch.cuda.synchronize, spec["steps"], spec["warmup"], 3)
    return out


def profile_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Where one step's time goes (each part synchronised on its own), unfused and fused,
    and the host's top functions over ``steps`` fused steps (cProfile)."""
    import fcnn

    cp = fcnn.array_library("gpu")
    fuse = cp.fuse
    sync = cp.cuda.Device().synchronize
    model, opt, ts0, x, y = _fcnn_setup(int(spec["batch"]), cp)
    out: dict[str, Any] = {"batch": spec["batch"], "parts_ms": {}}
    for variant in ("unfused", "fused"):
        cp.fuse = None if variant == "unfused" else fuse
        try:
            out["parts_ms"][variant] = _parts(model, opt, fcnn.to_device(ts0, cp), x, y, sync)
        finally:
            cp.fuse = fuse
    run = _variant_step("fused", model, opt, ts0, x, y, cp)
    for _ in range(10):
        run()
    sync()
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(spec["steps"]):
        run()
    sync()
    prof.disable()
    text = io.StringIO()
    pstats.Stats(prof, stream=text).sort_stats("tottime").print_stats(25)
    out["cprofile_fused"] = text.getvalue()
    return out


def _parts(model: Any, opt: Any, ts: Any, x: Any, y: Any, sync: Callable[[], None]) -> Any:
    """Median ms of the parts of one step, each run 30 times between synchronisations."""
    import fcnn

    loss = fcnn.label_smoothing(SMOOTHING)
    grad_fn = fcnn.loss_and_grad(model, loss)
    ctx = fcnn.Context(train=True)
    _, grads, _ = grad_fn(ts.params, ts.state, x, y, ctx)
    updates, _ = opt.update(grads, ts.opt_state, ts.params)
    step = fcnn.make_step(model, opt, loss)
    parts = {
        "forward": lambda: fcnn.forward(model, ts.params, ts.state, x, ctx),
        "forward + loss + backward": lambda: grad_fn(ts.params, ts.state, x, y, ctx),
        "optimizer update (opt.update)": lambda: opt.update(grads, ts.opt_state, ts.params),
        "apply_updates": lambda: fcnn.apply_updates(ts.params, updates),
        "whole step": lambda: step(ts, x, y, ctx),
    }
    return {name: _timed(fn, sync, 30, 5, 3)["median_ms"] for name, fn in parts.items()}


WORKERS = {
    "fcnn-gpu": fcnn_gpu_worker,
    "fcnn-cpu": fcnn_cpu_worker,
    "torch": torch_worker,
    "profile": profile_worker,
}


def plan(
    batches: Sequence[int], torch: bool, cpu: bool, steps: int, warmup: int
) -> list[dict[str, Any]]:
    """The worker specs of one run, in the order given: per batch size fcnn on the GPU and
    PyTorch; then fcnn on the CPU at the first batch size only (its slowest part)."""
    specs = []
    for b in batches:
        common = {"batch": b, "steps": steps, "warmup": warmup}
        specs.append({"kind": "fcnn-gpu", "variants": list(VARIANTS), **common})
        if torch:
            specs.append({"kind": "torch", **common})
    if cpu and batches:
        specs.append({"kind": "fcnn-cpu", "batch": batches[0], "steps": steps, "warmup": warmup})
    return specs


def _ms(results: Sequence[dict[str, Any]], lib: str, batch: int, variant: str) -> float | None:
    for r in results:
        if r["lib"] == lib and r["batch"] == batch:
            v = r["variants"].get(variant, {})
            return None if "ms" not in v else float(v["ms"])
    return None


def _f(v: float | None, digits: int = 2) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def table(results: Sequence[dict[str, Any]], batches: Sequence[int]) -> str:
    """One row per batch size: step times (ms) and fcnn / PyTorch time ratios."""
    from _common import markdown_table

    rows = []
    for b in sorted(batches):
        t = {fmt: _ms(results, "torch", b, fmt) for fmt in TORCH_FORMATS}
        best = min((v for v in t.values() if v is not None), default=None)
        mine = {v: _ms(results, "fcnn-gpu", b, v) for v in VARIANTS}
        ratio = {v: None if mine[v] is None or best is None else mine[v] / best for v in VARIANTS}
        rows.append(
            [
                str(b),
                *(_f(mine[v]) for v in VARIANTS),
                _f(t["nchw"]),
                _f(t["channels_last"]),
                _f(ratio["fused"]),
                _f(_ms(results, "fcnn-cpu", b, "fused"), 1),
            ]
        )
    headers = [
        "batch",
        *(f"fcnn {v} ms" for v in VARIANTS),
        "torch NCHW ms",
        "torch channels-last ms",
        "fused / faster torch",
        "fcnn CPU ms",
    ]
    return markdown_table(headers, rows, text_columns=1)


def targets(results: Sequence[dict[str, Any]]) -> list[str]:
    """The issue's targets against the faster PyTorch layout, met or not."""
    lines = []
    for batch, goal in ((128, 2.0), (2048, 1.5)):
        t = [_ms(results, "torch", batch, fmt) for fmt in TORCH_FORMATS]
        best = min((v for v in t if v is not None), default=None)
        mine = _ms(results, "fcnn-gpu", batch, "fused")
        if mine is None or best is None:
            continue
        r = mine / best
        lines.append(
            f"batch {batch}, fcnn fused: {mine:.2f} ms = {r:.2f} x PyTorch "
            f"eager's {best:.2f} ms (<= {goal}): {'met' if r <= goal else 'NOT met'}"
        )
    return lines


def profile_text(prof: dict[str, Any]) -> str:
    """The parts of a step, unfused beside fused, and the host's top functions."""
    from _common import markdown_table

    names = list(prof["parts_ms"]["fused"])
    rows = [
        [n, _f(prof["parts_ms"]["unfused"][n]), _f(prof["parts_ms"]["fused"][n])] for n in names
    ]
    head = f"## Where a step goes, batch {prof['batch']} (each part synchronised, median ms)\n\n"
    body = markdown_table(["part", "unfused", "fused"], rows, text_columns=1)
    return (
        head
        + body
        + "\n\n### cProfile of fused steps (host time)\n\n```\n"
        + prof["cprofile_fused"]
        + "```\n"
    )


def main(args: Any) -> int:
    """``train_bench.py --device gpu``: run the plan, print and write the report."""
    from _common import import_torch, run_worker, write_json_atomic

    import fcnn

    try:
        fcnn.array_library("gpu")
    except fcnn.DeviceUnavailableError as err:
        print(f"train_bench: {err}", file=sys.stderr)
        return 1
    batches = args.batches or list(BATCHES)
    torch = None if args.no_torch else import_torch()
    with_torch = torch is not None and bool(torch.cuda.is_available())
    steps, warmup = args.steps or (10 if args.quick else 50), args.warmup or 10
    results: list[dict[str, Any]] = []
    report = _report(results, batches, with_torch)
    specs = plan(batches, with_torch, not args.no_cpu, steps, warmup)
    if args.profile:
        specs.append({"kind": "profile", "batch": batches[0], "steps": 30})
    for i, spec in enumerate(specs):
        print(f"{spec['kind']} batch {spec['batch']} ...", file=sys.stderr, flush=True)
        try:
            results.append(run_worker(SCRIPT, spec, timeout=600))
        except RuntimeError as err:
            print(f"train_bench: {err}", file=sys.stderr)
            results.append(
                {"lib": spec["kind"], "batch": spec["batch"], "error": str(err), "variants": {}}
            )
        report = _report(results, batches, with_torch)
        done = f"{i + 1} of {len(specs)} workers"  # written after each: a cut run keeps its part
        if args.json:
            write_json_atomic(args.json, {"results": results, "report": report, "done": done})
        if args.markdown:
            Path(args.markdown).write_text(report)
    print(report)
    return 0 if all("error" not in r for r in results) else 1


def _report(results: list[dict[str, Any]], batches: Sequence[int], with_torch: bool) -> str:
    steps = [r for r in results if r["lib"] != "profile"]
    gpu = next((r for r in results if r["lib"] == "fcnn-gpu" and "versions" in r), None)
    torch = next((r for r in results if r["lib"] == "torch" and "versions" in r), None)
    lines = [
        "## fcnn on the GPU: training steps of the fast model (Adam, label smoothing 0.1, "
        "float32, one device-resident batch)",
        "",
    ]
    lines.append(
        f"- fcnn: {json.dumps(gpu['versions']) if gpu else 'n/a'}; "
        f"fused functions that fell back: {gpu['fuse_fallbacks'] if gpu else 'n/a'}"
    )
    lines.append(f"- PyTorch: {json.dumps(torch['versions']) if torch else 'not run'}")
    lines += ["", table(steps, batches), "", "## Targets", ""]
    lines += [f"- {t}" for t in targets(steps)] or ["- n/a (no PyTorch run)"]
    errors = [
        f"- {r['lib']} batch {r['batch']}: {r.get('error') or r['variants']}"
        for r in results
        if "error" in r or any("error" in v for v in r.get("variants", {}).values())
    ]
    if errors:
        lines += ["", "## Errors", "", *errors]
    prof = next((r for r in results if "parts_ms" in r), None)
    if prof is not None:
        lines += ["", profile_text(prof)]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        worker_spec = json.loads(sys.argv[2])
        result = WORKERS[worker_spec["kind"]](worker_spec)
        if worker_spec["kind"] == "profile":
            result["lib"] = "profile"
        print(json.dumps(result))
        sys.exit(0)
    sys.exit("run through benchmarks/train_bench.py --device gpu")
