"""Training-step benchmark: fcnn's models vs the same architecture in PyTorch eager, on the CPU.

Usage::

    python benchmarks/train_bench.py                     # small + default, batch 64 and 128
    python benchmarks/train_bench.py --quick             # CI: few steps, one round, no epoch
    python benchmarks/train_bench.py --json out.json --rounds 5
    python benchmarks/train_bench.py --device gpu --profile   # fcnn on CuPy beside PyTorch
                                                              # on the GPU (gpu_bench.py)

What it does, in order:

1. Tunes glibc's allocator (``_common.tune_allocator``) here and in every worker,
   PyTorch's included, and prints the environment: NumPy, BLAS, PyTorch, CPUs.
2. Checks that the PyTorch network really is fcnn's: it is built from the fcnn
   model's own spec (``torch_model``), loaded with fcnn's initial weights, and
   both must give the same loss and gradients in float64 (exit 1 if not).
3. Times whole training steps -- forward, softmax cross-entropy, backward and an
   SGD update (momentum 0.9) -- of ``fcnn.make_step`` at each batch size, float32,
   and the PyTorch model in eager mode with its default NCHW layout and with
   ``channels_last``, each in a fresh subprocess after warm-up. Every configuration
   runs once per round, the rounds interleaved; the table shows the fastest
   round's median step (a machine shared with other work only ever slows a run), and
   the targets add the ratio within each round, whose spread shows the noise.
4. Measures the memory of one fcnn step in an untimed run: the tracemalloc peak
   (NumPy reports its buffers to it) and the worker's peak RSS (``ru_maxrss``).
5. Unless ``--quick``/``--no-epoch``: trains the default model for one epoch of
   60,000 random 28x28 images at batch 64 with ``fcnn.train_epoch`` (shuffling and
   batching included) and reports its wall time next to the estimate from steps.

Exit codes: 0 ok, 1 mismatch or a failed worker, 2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import sys
import time
import tracemalloc
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from _common import (
    cpu_count,
    environment_report,
    format_environment,
    import_torch,
    load_average,
    markdown_table,
    run_worker,
    summarize_ms,
    tune_allocator,
    write_json_atomic,
)

import fcnn
from fcnn.layers.base import Context
from fcnn.models import build_model
from fcnn.training import Step

SCRIPT = Path(__file__).resolve()
MODELS = ("small", "default")
BATCHES = (64, 128)
IMPLS = ("fcnn", "torch", "torch-cl")  # torch-cl: channels_last memory format
INPUT_SHAPE = (1, 28, 28)
NUM_CLASSES = 10
LR = 0.01
MOMENTUM = 0.9
EPOCH_SIZE = 60_000
EPOCH_MODEL = "default"
EPOCH_BATCH = 64
SEED = 20261122
CHECK_BATCH = 4
CHECK_RTOL = 1e-8


def plan(models: Sequence[str], batches: Sequence[int], torch: bool) -> list[dict[str, Any]]:
    """The ``{"model", "batch", "impl"}`` configurations of one round, in order."""
    impls = IMPLS if torch else ("fcnn",)
    return [{"model": m, "batch": b, "impl": i} for m in models for b in batches for i in impls]

    # ----------------------------------------------------------------------------- PyTorch


def torch_model(torch: Any, spec: dict[str, Any], in_shape: Sequence[int]) -> Any:
    """The ``torch.nn.Sequential`` equivalent of an fcnn ``Sequential`` spec.

    Built layer by layer from ``build_model(...).spec``, so the two cannot drift
    apart; shapes are inferred from ``in_shape`` (C, H, W). Raises ``ValueError`` for
    a layer type or an asymmetric padding PyTorch's modules cannot express.
    """
    nn = torch.nn
    c, h, w = (int(d) for d in in_shape)
    flat: int | None = None
    layers = []
    for layer in spec["layers"]:
        kind = layer["type"]
        if kind in ("Conv2d", "MaxPool2d"):
            (kh, kw) = layer["kernel_size"] if kind == "Conv2d" else layer["window"]
            (sh, sw), ((pt, pb), (pl, pr)) = layer["stride"], layer["padding"]
            if pt != pb or pl != pr:
                raise ValueError(f"torch_model: asymmetric padding in {layer}")
            if kind == "Conv2d":
                f = layer["out_channels"]
                layers.append(nn.Conv2d(c, f, (kh, kw), (sh, sw), (pt, pl)))
                c = f
            else:
                layers.append(nn.MaxPool2d((kh, kw), (sh, sw), (pt, pl)))
            h, w = (h + 2 * pt - kh) // sh + 1, (w + 2 * pl - kw) // sw + 1
        elif kind == "Relu":
            layers.append(nn.ReLU())
        elif kind == "Flatten":
            layers.append(nn.Flatten())
            flat = c * h * w
        elif kind == "Dense":
            if flat is None:
                raise ValueError("torch_model: Dense before Flatten")
            layers.append(nn.Linear(flat, layer["out_features"]))
            flat = layer["out_features"]
        else:
            raise ValueError(f"torch_model: no PyTorch equivalent for {kind}")
    return nn.Sequential(*layers)


def load_fcnn_params(torch: Any, module: Any, spec: dict[str, Any], params: dict[str, Any]) -> None:
    """Copy fcnn's params into ``torch_model``'s modules (Dense ``w`` is transposed)."""
    with_params = [layer for layer in spec["layers"] if layer["type"] in ("Conv2d", "Dense")]
    modules = [m for m in module if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)]
    with torch.no_grad():
        for layer, m in zip(with_params, modules, strict=True):
            p = params[layer["name"]]
            w = p["w"].T if layer["type"] == "Dense" else p["w"]
            m.weight.copy_(torch.from_numpy(np.ascontiguousarray(w)))
            m.bias.copy_(torch.from_numpy(p["b"]))


def check_equivalence(
    models: Sequence[str], torch: Any, batch: int = CHECK_BATCH, rtol: float = CHECK_RTOL
) -> list[str]:
    """Loss and every gradient of fcnn vs ``torch_model`` with the same weights, float64.

    Returns one line per mismatch (empty when all agree within ``rtol``, relative
    to each reference's largest entry).
    """
    failures: list[str] = []
    for name in models:
        model = build_model(name, NUM_CLASSES)
        rng = np.random.default_rng(SEED)
        params, state, _ = fcnn.init(model, rng, INPUT_SHAPE, np.float64)
        x = rng.standard_normal((batch, *INPUT_SHAPE))
        y = rng.integers(0, NUM_CLASSES, batch)
        loss, grads, _ = fcnn.loss_and_grad(model, fcnn.softmax_cross_entropy)(
            params, state, x, y, Context(train=True, rng=rng)
        )
        tm = torch_model(torch, dict(model.spec), INPUT_SHAPE).double()
        load_fcnn_params(torch, tm, dict(model.spec), params)
        tloss = torch.nn.functional.cross_entropy(tm(torch.from_numpy(x)), torch.from_numpy(y))
        tloss.backward()
        pairs = [("loss", np.asarray(loss), tloss.detach().numpy())]
        named = [layer for layer in model.spec["layers"] if layer["type"] in ("Conv2d", "Dense")]
        modules = [m for m in tm if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)]
        for layer, m in zip(named, modules, strict=True):
            g = grads[layer["name"]]
            dw = g["w"].T if layer["type"] == "Dense" else g["w"]
            pairs.append((f"{layer['name']}/w", dw, m.weight.grad.numpy()))
            pairs.append((f"{layer['name']}/b", g["b"], m.bias.grad.numpy()))
        for key, got, want in pairs:
            scale = max(float(np.max(np.abs(want))), np.finfo(np.float64).tiny)
            err = float(np.max(np.abs(got - want))) / scale if got.shape == want.shape else math.inf
            if not err <= rtol:
                failures.append(f"{name}: {key} differs from PyTorch: relative error {err:.3g}")
    return failures


# ----------------------------------------------------------------------------- workers


def _max_rss_mb() -> float:
    """This process's peak resident set size in MB.

    ``VmHWM`` from ``/proc/self/status`` where there is one: unlike ``ru_maxrss``, which
    Linux carries over from the parent across ``fork``/``exec``, it counts this
    program only. Elsewhere ``ru_maxrss`` (KiB on Linux, bytes on macOS).
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024 / 1e6
    except OSError:
        pass
    scale = 1.0 if sys.platform == "darwin" else 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 1e6


def _setup(
    model_name: str, n: int, seed: int = SEED
) -> tuple[Step, fcnn.TrainState, np.ndarray, np.ndarray, np.random.Generator]:
    """``(step, train_state, x, y, rng)`` for ``n`` random images, all from one seed.

    ``step``: ``fcnn.make_step`` with SGD (``LR``, ``MOMENTUM``); ``x: (n, 1, 28, 28)``
    float32, ``y: (n,)`` labels; ``rng`` has drawn the initial weights, then x, then y.
    """
    model = build_model(model_name, NUM_CLASSES)
    rng = np.random.default_rng(seed)
    params, state, _ = fcnn.init(model, rng, INPUT_SHAPE, np.float32)
    opt = fcnn.sgd(LR, momentum=MOMENTUM)
    step = fcnn.make_step(model, opt)
    x = rng.standard_normal((n, *INPUT_SHAPE), dtype=np.float32)
    y = rng.integers(0, NUM_CLASSES, n)
    return step, fcnn.TrainState(params, state, opt.init(params)), x, y, rng


def _fcnn_step(model_name: str, batch: int, seed: int = SEED) -> tuple[Any, Any]:
    """``(step, state)``: a zero-argument training step on one fixed random batch."""
    step, ts0, x, y, rng = _setup(model_name, batch, seed)
    ctx = Context(train=True, rng=rng)
    ts = [ts0]

    def run() -> float:
        ts[0], loss = step(ts[0], x, y, ctx)
        return loss

    return run, ts


def _torch_step(torch: Any, model_name: str, batch: int, channels_last: bool) -> Any:
    """A zero-argument PyTorch training step (same network, loss and optimizer)."""
    torch.manual_seed(SEED)
    spec = dict(build_model(model_name, NUM_CLASSES).spec)
    module = torch_model(torch, spec, INPUT_SHAPE)
    rng = np.random.default_rng(SEED)
    x = torch.from_numpy(rng.standard_normal((batch, *INPUT_SHAPE), dtype=np.float32))
    y = torch.from_numpy(rng.integers(0, NUM_CLASSES, batch))
    if channels_last:
        module = module.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.SGD(module.parameters(), lr=LR, momentum=MOMENTUM)
    loss_fn = torch.nn.CrossEntropyLoss()

    def run() -> float:
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(module(x), y)
        loss.backward()
        opt.step()
        return float(loss.detach())

    return run


def bench_step(spec: dict[str, Any]) -> dict[str, Any]:
    """Time one ``{"model", "batch", "impl", "steps", "warmup"}`` configuration here."""
    model_name, batch, impl = spec["model"], int(spec["batch"]), spec["impl"]
    threads: int | None = None
    torch_info: str | None = None
    rss_before = _max_rss_mb()
    if impl == "fcnn":
        run, _ = _fcnn_step(model_name, batch)
    else:
        torch = import_torch()
        if torch is None:
            raise RuntimeError("torch is not importable")
        torch.set_num_threads(int(spec.get("threads") or cpu_count()))
        threads = int(torch.get_num_threads())
        torch_info = f"{torch.__version__}, mkldnn {torch.backends.mkldnn.is_available()}"
        run = _torch_step(torch, model_name, batch, impl == "torch-cl")
    for _ in range(int(spec["warmup"])):
        run()
    times: list[float] = []
    loss = math.nan
    for _ in range(int(spec["steps"])):
        t0 = time.perf_counter()
        loss = run()
        times.append(time.perf_counter() - t0)
    stats = summarize_ms(times)
    result: dict[str, Any] = {
        "model": model_name,
        "batch": batch,
        "impl": impl,
        "dtype": "float32",
        "steps": int(spec["steps"]),
        "warmup": int(spec["warmup"]),
        "step": stats,
        "step_ms": stats["median_ms"],
        "samples_per_s": batch / (stats["median_ms"] * 1e-3),
        "final_loss": loss,
        "threads": threads,
        "torch": torch_info,
        "max_rss_mb": _max_rss_mb(),
        "rss_before_mb": rss_before,
        "step_peak_mb": None,
        "loadavg_after": load_average(),
    }
    if impl == "fcnn":
        # Untimed: tracemalloc slows allocation. The peak of one step above what
        # was allocated before it (params, data, optimizer state).
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            run()
            result["step_peak_mb"] = (tracemalloc.get_traced_memory()[1] - base) / 1e6
        finally:
            tracemalloc.stop()
    return result


def bench_epoch(spec: dict[str, Any]) -> dict[str, Any]:
    """Wall time of one ``fcnn.train_epoch`` over ``size`` random images (shuffled)."""
    model_name, batch, size = spec["model"], int(spec["batch"]), int(spec["size"])
    step, ts, x, y, rng = _setup(model_name, size)
    t0 = time.perf_counter()
    ts, loss = fcnn.train_epoch(step, ts, x, y, batch, rng)
    seconds = time.perf_counter() - t0
    return {
        "model": model_name,
        "batch": batch,
        "size": size,
        "seconds": seconds,
        "samples_per_s": size / seconds,
        "mean_loss": loss,
        "max_rss_mb": _max_rss_mb(),
    }


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one worker spec (``{"kind": "step" | "epoch", ...}``) and return its result."""
    if spec["kind"] == "epoch":
        return bench_epoch(spec)
    return bench_step(spec)


# ----------------------------------------------------------------------------- the report


def best_of_rounds(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (model, batch, impl): the run with the fastest median step, with all medians."""
    groups: dict[tuple[str, int, str], list[dict[str, Any]]] = {}
    for r in runs:
        groups.setdefault((r["model"], r["batch"], r["impl"]), []).append(r)
    best = []
    for group in groups.values():
        pick = dict(min(group, key=lambda r: float(r["step_ms"])))
        pick["rounds_step_ms"] = [float(r["step_ms"]) for r in group]
        best.append(pick)
    return best


def add_ratios(results: list[dict[str, Any]]) -> None:
    """fcnn's samples/s over PyTorch's (NCHW and channels_last), on fcnn's rows, in place.

    Also ``<key>_per_round``: the ratio within each round (PyTorch's step time over
    fcnn's, from ``rounds_step_ms``). A round's runs follow each other within seconds,
    so their spread shows how far one run's ratio can be trusted.
    """
    by = {(r["model"], r["batch"], r["impl"]): r for r in results}
    for r in results:
        for key, impl in (("ratio_vs_torch", "torch"), ("ratio_vs_torch_cl", "torch-cl")):
            other = by.get((r["model"], r["batch"], impl))
            if r["impl"] != "fcnn" or other is None:
                r[key], r[f"{key}_per_round"] = None, None
                continue
            r[key] = float(r["samples_per_s"]) / float(other["samples_per_s"])
            pairs = zip(other["rounds_step_ms"], r["rounds_step_ms"], strict=False)
            r[f"{key}_per_round"] = [theirs / mine for theirs, mine in pairs]


def _field(r: dict[str, Any] | None, key: str) -> float | None:
    """``r[key]`` as a float, or None when the row or the value is missing."""
    v = None if r is None else r.get(key)
    return None if v is None else float(v)


def _fmt(v: float | None, digits: int = 2) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def results_table(results: Sequence[dict[str, Any]]) -> str:
    """One row per (model, batch): throughputs, ratios, fcnn step time and memory."""
    rows = []
    keys = list(dict.fromkeys((r["model"], r["batch"]) for r in results))
    by = {(r["model"], r["batch"], r["impl"]): r for r in results}
    for model, batch in keys:
        f = by.get((model, batch, "fcnn"))
        t, cl = by.get((model, batch, "torch")), by.get((model, batch, "torch-cl"))
        rows.append(
            [
                model,
                str(batch),
                _fmt(_field(f, "samples_per_s"), 0),
                _fmt(_field(t, "samples_per_s"), 0),
                _fmt(_field(cl, "samples_per_s"), 0),
                _fmt(_field(f, "ratio_vs_torch")),
                _fmt(_field(f, "ratio_vs_torch_cl")),
                _fmt(_field(f, "step_ms")),
                _fmt(_field(f, "step_peak_mb"), 1),
                _fmt(_field(f, "max_rss_mb"), 0),
            ]
        )
    headers = [
        "model",
        "batch",
        "fcnn samples/s",
        "torch NCHW samples/s",
        "torch channels_last samples/s",
        "fcnn / torch",
        "fcnn / torch CL",
        "fcnn step ms",
        "fcnn step peak MB",
        "fcnn max RSS MB",
    ]
    return markdown_table(headers, rows)


def targets(results: Sequence[dict[str, Any]], epoch: dict[str, Any] | None) -> list[str]:
    """The issue's targets, each with the measured number and met / not met (and per round)."""
    lines = []
    by = {(r["model"], r["batch"], r["impl"]): r for r in results}
    for batch in BATCHES:
        f = by.get(("small", batch, "fcnn"))
        for key, layout, goal in (
            ("ratio_vs_torch", "NCHW", 1.0),
            ("ratio_vs_torch_cl", "channels_last", 0.7),
        ):
            if f is None or f.get(key) is None:
                continue
            rounds = f.get(f"{key}_per_round") or []
            spread = f"; per round {', '.join(f'{v:.2f}' for v in rounds)}" if rounds else ""
            lines.append(
                f"small net, batch {batch}: fcnn / torch {layout} = {f[key]:.2f} "
                f"(>= {goal}): {'met' if f[key] >= goal else 'NOT met'}{spread}"
            )
    d = by.get((EPOCH_MODEL, EPOCH_BATCH, "fcnn"))
    if d is not None:
        est = EPOCH_SIZE / d["samples_per_s"]
        lines.append(
            f"default model, {EPOCH_SIZE:,} images at batch {EPOCH_BATCH}: "
            f"{est:.1f} s estimated from the step time"
            + (f", {epoch['seconds']:.1f} s measured with train_epoch" if epoch else "")
            + f" (< 30 s): {'met' if (epoch['seconds'] if epoch else est) < 30 else 'NOT met'}"
        )
    m = by.get(("default", 128, "fcnn"))
    if m is not None and m["step_peak_mb"] is not None:
        lines.append(
            f"default model, batch 128: step peak {m['step_peak_mb']:.0f} MB (tracemalloc), "
            f"process peak RSS {m['max_rss_mb']:.0f} MB (< 1000 MB): "
            f"{'met' if max(m['step_peak_mb'], m['max_rss_mb']) < 1000 else 'NOT met'}"
        )
    return lines


# ----------------------------------------------------------------------------- entry point


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Benchmark fcnn training steps against PyTorch eager on the CPU.",
        epilog="Allocator: tuned with mallopt on glibc in every worker, PyTorch's too; the env "
        "alternative is MALLOC_MMAP_THRESHOLD_=1073741824 MALLOC_TRIM_THRESHOLD_=1073741824.",
    )
    p.add_argument("--quick", action="store_true", help="CI: 3 steps, 1 warm-up, 1 round")
    p.add_argument(
        "--device",
        choices=("cpu", "gpu"),
        default="cpu",
        help="gpu: the fast model's step with fcnn on CuPy beside PyTorch eager on the same "
        "GPU and fcnn on the CPU (benchmarks/gpu_bench.py; --models, --rounds do not apply)",
    )
    p.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    p.add_argument(
        "--batches", nargs="+", type=int, default=None, help="default 64 128 (gpu: 128 512 2048)"
    )
    p.add_argument("--steps", type=int, default=None, help="timed steps (default 30; quick 3)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up steps (default 5; quick 1)")
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 3)")
    p.add_argument("--no-torch", action="store_true", help="leave PyTorch out even if importable")
    p.add_argument("--no-epoch", action="store_true", help="skip the one-epoch run")
    p.add_argument("--json", metavar="PATH", help="write every result and the environment here")
    p.add_argument("--markdown", metavar="PATH", help="gpu: also write the report here")
    p.add_argument("--profile", action="store_true", help="gpu: where a step's time goes")
    p.add_argument("--no-cpu", action="store_true", help="gpu: no fcnn on the CPU (first batch)")
    p.add_argument("--worker", metavar="SPEC", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    for name in ("steps", "rounds"):
        v = getattr(args, name)
        if v is not None and v < 1:
            p.error(f"--{name} must be >= 1")
    if args.warmup is not None and args.warmup < 0:
        p.error("--warmup must be >= 0")
    if args.batches is not None and any(b < 1 for b in args.batches):
        p.error("--batches must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.device == "gpu" and args.worker is None:
        import gpu_bench

        return gpu_bench.main(args)
    if args.worker is not None:
        tuning = tune_allocator()
        result = worker(json.loads(args.worker))
        result["allocator"] = tuning.detail
        print(json.dumps(result))
        return 0
    allocator = tune_allocator()
    steps = args.steps or (3 if args.quick else 30)
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 5)
    rounds = args.rounds or (1 if args.quick else 3)
    torch = None if args.no_torch else import_torch()
    threads = cpu_count()
    env = environment_report(
        allocator=allocator.detail + " (in every worker, PyTorch's included)",
        torch=(
            f"{torch.__version__}, set_num_threads({threads}), "
            f"mkldnn {torch.backends.mkldnn.is_available()}"
            if torch
            else "not importable"
        ),
    )
    print("## Environment\n")
    print(format_environment(env))

    if torch is not None:
        failures = check_equivalence(args.models, torch)
        print(f"\n## Same network (float64, batch {CHECK_BATCH}, fcnn's weights in PyTorch)\n")
        if failures:
            print("FAILED:\n" + "\n".join(f"- {f}" for f in failures))
            return 1
        print(f"loss and all gradients agree within {CHECK_RTOL:g} for {', '.join(args.models)}")

    configs = plan(args.models, args.batches or list(BATCHES), torch is not None)
    runs: list[dict[str, Any]] = []
    epoch: dict[str, Any] | None = None
    try:
        for k in range(rounds):
            for cfg in configs:
                print(f"round {k + 1}/{rounds}: {cfg} ...", file=sys.stderr, flush=True)
                spec = {"kind": "step", **cfg, "steps": steps, "warmup": warmup}
                spec["threads"] = threads
                runs.append(run_worker(SCRIPT, spec))
        if not (args.quick or args.no_epoch):
            print("one epoch ...", file=sys.stderr, flush=True)
            epoch_spec = {
                "kind": "epoch",
                "model": EPOCH_MODEL,
                "batch": EPOCH_BATCH,
                "size": EPOCH_SIZE,
            }
            epoch = run_worker(SCRIPT, epoch_spec, timeout=1800)
    except RuntimeError as err:
        print(f"train_bench: {err}", file=sys.stderr)
        return 1
    results = best_of_rounds(runs)
    add_ratios(results)

    print(
        f"\n## Training step (forward, loss, backward, SGD momentum {MOMENTUM}), float32, "
        f"median of {steps} steps (warm-up {warmup}), best of {rounds} round(s)\n"
    )
    print(results_table(results))
    print(
        "\nratios: fcnn samples/s over PyTorch's (> 1: fcnn faster); step peak: tracemalloc "
        "peak of one step above what existed before it; max RSS: the fcnn worker's peak."
    )
    print(f"load average (1, 5, 15 min) before: {env['loadavg']}, after: {load_average()}")
    if epoch is not None:
        print(
            f"\none epoch of {epoch['size']:,} images ({epoch['model']} model, batch "
            f"{epoch['batch']}, fcnn.train_epoch): {epoch['seconds']:.1f} s "
            f"({epoch['samples_per_s']:.0f} samples/s)"
        )
    lines = targets(results, epoch)
    if lines:
        print("\n## Targets\n")
        print("\n".join(f"- {line}" for line in lines))

    if args.json:
        write_json_atomic(
            args.json,
            {
                "environment": env,
                "quick": args.quick,
                "steps": steps,
                "warmup": warmup,
                "rounds": rounds,
                "results": results,
                "runs": runs,
                "epoch": epoch,
                "targets": lines,
            },
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
