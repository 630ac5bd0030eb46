"""Time to 99% test accuracy: train.py's ``--recipe fast`` in fcnn and in PyTorch eager.

    python benchmarks/time_to_accuracy.py --data-dir ../shared/data            # seeds 0 1 2
    python benchmarks/time_to_accuracy.py --data-dir ../shared/data --plot docs/time_to_accuracy.png
    python benchmarks/time_to_accuracy.py --data-dir ../shared/data --device gpu --cpu-too

Both libraries train the same model (``fcnn.models.fast_cnn``; PyTorch starts from
fcnn's initial weights), with the same recipe (``fcnn.run.RECIPES["fast"]``: Adam, the
one-cycle learning rate per update, label smoothing, batch size, epochs) on the same
batches: one NumPy generator per seed shuffles and shifts the images exactly as
``train.py`` does, and PyTorch gets those very arrays. Each test-set evaluation runs
after each epoch and counts in the time. PyTorch runs at its default threads, once in
NCHW (contiguous) and once channels-last; its faster run is the one compared.

Every (library, seed, format) runs in a fresh process (``_common.run_worker``) and is
timed from that process's first line, before NumPy, fcnn or PyTorch are imported: the
imports, data loading and model building count for both alike, as for ``python
train.py ...`` from start to exit. The time to accuracy is the time at the end of the
first epoch whose test accuracy reaches the target. The ratio is fcnn's time divided by
PyTorch's for the same seed; the summary gives medians over seeds. The load average
is printed before and after: other work on the machine slows both.

``--device gpu``: fcnn runs on CuPy (docs/gpu.md): the data uploaded once, the batches
shuffled from the same generator and cut, shifted and trained on the GPU by
``fcnn.train_epoch`` (its shifts drawn from a device generator, so they differ from the
host's), evaluated there. PyTorch runs on the same GPU (CUDA), fed the host's batches as
above; ``--cpu-too`` adds fcnn on the CPU per seed.
"""

from __future__ import annotations

import time

_START = time.perf_counter()  # the worker's clock starts before any heavy import

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
from collections.abc import Mapping, Sequence  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

TARGET = 0.99
FORMATS = ("contiguous", "channels_last")


# --- one training run, in a worker process --------------------------------------------


def load(spec: Mapping[str, Any]) -> tuple[Any, Any]:
    """train.py's config for the recipe and its normalised data (fcnn.run, train.py's code)."""
    from fcnn.run import load_data, resolve_config

    given = {"dataset": spec["dataset"], "recipe": "fast", "seed": int(spec["seed"])}
    if spec.get("limit_train"):
        given["limit_train"] = int(spec["limit_train"])
    if spec.get("epochs"):
        given["epochs"] = int(spec["epochs"])
    config = resolve_config(given, None)
    data = load_data(config, spec.get("data_dir"), None)
    if spec.get("limit_test"):
        n = int(spec["limit_test"])
        data = dataclasses.replace(data, x_test=data.x_test[:n], y_test=data.y_test[:n])
    return config, data


def batches(config: Any, data: Any, rng: Any) -> Any:
    """One epoch's ``(x, y)`` batches exactly as ``fcnn.train_epoch`` in train.py draws them."""
    from fcnn.data.augment import shift_augment
    from fcnn.data.batches import iterate_batches
    from fcnn.parallel import drop_last_batch

    augment = shift_augment(config.augment, data.mean, data.std) if config.augment else None
    n = len(data.x_train)
    drop_last = drop_last_batch(n, config.batch_size, 1, batch_norm=True)
    for idx in iterate_batches(n, config.batch_size, rng, drop_last):
        xb = data.x_train[idx]
        yield (xb if augment is None else augment(xb, rng)), data.y_train[idx]


def steps_per_epoch(config: Any, data: Any) -> int:
    from fcnn.parallel import drop_last_batch

    n, batch = len(data.x_train), int(config.batch_size)
    drop = drop_last_batch(n, batch, 1, batch_norm=True)
    return n // batch if drop else -(-n // batch)


def run_fcnn(spec: Mapping[str, Any]) -> list[dict[str, Any]]:
    """train.py's recipe run: ``[{"epoch": 0, "seconds"}, {"epoch": 1, "seconds",
    "test_acc"}, ...]``, row 0 when training starts, seconds since the process started."""
    import numpy as np

    import fcnn
    from fcnn.models import build_model
    from fcnn.run import make_optimizer, make_schedule, training_loss

    if spec.get("device") == "gpu":
        return run_fcnn_gpu(spec)
    config, data = load(spec)
    init_rng, rng = np.random.default_rng(config.seed).spawn(2)
    model = build_model(config.model, len(data.classes), config.impl)
    params, state, _ = fcnn.init(model, init_rng, tuple(data.x_train.shape[1:]))
    schedule = make_schedule(config, config.epochs * steps_per_epoch(config, data))
    opt = make_optimizer(config, schedule)
    step = fcnn.make_step(model, opt, training_loss(config))
    ts = fcnn.TrainState(params, state, opt.init(params))
    ctx = fcnn.Context(train=True, rng=rng)
    rows: list[dict[str, Any]] = [{"epoch": 0, "seconds": time.perf_counter() - _START}]
    for epoch in range(1, config.epochs + 1):
        for xb, yb in batches(config, data, rng):
            ts, _ = step(ts, xb, yb, ctx)
        _, acc = fcnn.evaluate(model, ts.params, ts.state, data.x_test, data.y_test)
        rows.append({"epoch": epoch, "seconds": time.perf_counter() - _START, "test_acc": acc})
    return rows


def run_fcnn_gpu(spec: Mapping[str, Any]) -> list[dict[str, Any]]:
    """``run_fcnn`` on the GPU: the same config, weights and batch order, device batches."""
    import numpy as np

    import fcnn
    from fcnn.models import build_model
    from fcnn.parallel import drop_last_batch
    from fcnn.run import make_augment, make_optimizer, make_schedule, training_loss

    xp = fcnn.array_library("gpu")
    config, data = load(spec)
    init_rng, rng = np.random.default_rng(config.seed).spawn(2)
    model = build_model(config.model, len(data.classes), config.impl)
    params, state, _ = fcnn.init(model, init_rng, tuple(data.x_train.shape[1:]))
    schedule = make_schedule(config, config.epochs * steps_per_epoch(config, data))
    opt = make_optimizer(config, schedule)
    step = fcnn.make_step(model, opt, training_loss(config))
    ts = fcnn.to_device(fcnn.TrainState(params, state, opt.init(params)), xp)
    x, y, x_test, y_test = fcnn.to_device(
        (data.x_train, data.y_train, data.x_test, data.y_test), xp
    )
    augment = make_augment(config, data.mean, data.std)
    drop_last = drop_last_batch(len(x), config.batch_size, 1, batch_norm=True)
    rows: list[dict[str, Any]] = [{"epoch": 0, "seconds": time.perf_counter() - _START}]
    for epoch in range(1, config.epochs + 1):
        ts, _ = fcnn.train_epoch(step, ts, x, y, config.batch_size, rng, None, augment, drop_last)
        _, acc = fcnn.evaluate(model, ts.params, ts.state, x_test, y_test)
        rows.append({"epoch": epoch, "seconds": time.perf_counter() - _START, "test_acc": acc})
    return rows


def torch_model(torch: Any, params: Mapping[str, Any], state: Mapping[str, Any]) -> Any:
    """``fast_cnn`` in PyTorch, holding fcnn's params and batch-norm state (copied); each
    stage's layers in the order of fcnn's own spec."""
    from fcnn.models import FAST_WIDTHS, build_model

    nn = torch.nn
    stage_order = [layer["type"] for layer in build_model("fast", 10).spec["layers"][:4]]
    layers: list[Any] = []
    c = 1
    for i, width in enumerate(FAST_WIDTHS, start=1):
        conv, bn = nn.Conv2d(c, width, 3, padding=1), nn.BatchNorm2d(width)
        with torch.no_grad():
            conv.weight.copy_(torch.from_numpy(params[f"conv{i}"]["w"]))
            conv.bias.copy_(torch.from_numpy(params[f"conv{i}"]["b"]))
            bn.weight.copy_(torch.from_numpy(params[f"bn{i}"]["gamma"]))
            bn.bias.copy_(torch.from_numpy(params[f"bn{i}"]["beta"]))
            bn.running_mean.copy_(torch.from_numpy(state[f"bn{i}"]["mean"]))
            bn.running_var.copy_(torch.from_numpy(state[f"bn{i}"]["var"]))
        stage = {"Conv2d": conv, "BatchNorm2d": bn, "MaxPool2d": nn.MaxPool2d(2), "Relu": nn.ReLU()}
        layers += [stage[kind] for kind in stage_order]
        c = width
    w, b = params["dense1"]["w"], params["dense1"]["b"]
    dense = nn.Linear(w.shape[0], w.shape[1])
    with torch.no_grad():
        dense.weight.copy_(torch.from_numpy(w.T.copy()))
        dense.bias.copy_(torch.from_numpy(b))
    return nn.Sequential(*layers, nn.Flatten(), dense)


def run_torch(spec: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The same run in PyTorch eager (``spec["format"]``: contiguous or channels_last)."""
    import numpy as np
    import torch

    import fcnn
    from fcnn.models import build_model
    from fcnn.run import make_schedule

    config, data = load(spec)
    init_rng, rng = np.random.default_rng(config.seed).spawn(2)
    params, state, _ = fcnn.init(
        build_model(config.model, len(data.classes), config.impl),
        init_rng,
        tuple(data.x_train.shape[1:]),
    )
    fmt = torch.channels_last if spec["format"] == "channels_last" else torch.contiguous_format
    device = "cuda" if spec.get("device") == "gpu" else "cpu"
    model = torch_model(torch, params, state).to(device=device, memory_format=fmt)
    schedule = make_schedule(config, config.epochs * steps_per_epoch(config, data))
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    lr_at = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: schedule(t) / config.lr)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    x_test = torch.from_numpy(np.ascontiguousarray(data.x_test)).to(device)
    rows: list[dict[str, Any]] = [{"epoch": 0, "seconds": time.perf_counter() - _START}]
    for epoch in range(1, config.epochs + 1):
        model.train()
        for xb, yb in batches(config, data, rng):
            x = torch.from_numpy(xb).to(device).contiguous(memory_format=fmt)
            opt.zero_grad(set_to_none=True)
            loss_fn(model(x), torch.from_numpy(yb).long().to(device)).backward()
            opt.step()
            lr_at.step()
        model.eval()
        correct = 0
        with torch.no_grad():
            for i in range(0, len(x_test), 500):  # fcnn.evaluate's batch size
                logits = model(x_test[i : i + 500].contiguous(memory_format=fmt))
                guess = logits.argmax(1).cpu().numpy()
                correct += int((guess == data.y_test[i : i + 500]).sum())
        acc = correct / len(x_test)
        rows.append({"epoch": epoch, "seconds": time.perf_counter() - _START, "test_acc": acc})
    return rows


def worker(spec: Mapping[str, Any]) -> dict[str, Any]:
    from fcnn.runtime import tune_allocator

    tune_allocator()  # as train.py does, for both libraries
    rows = run_fcnn(spec) if spec["lib"].startswith("fcnn") else run_torch(spec)
    out: dict[str, Any] = {**spec, "rows": rows, "total_seconds": time.perf_counter() - _START}
    if spec["lib"] == "torch":
        import torch

        out["threads"] = torch.get_num_threads()
    return out


# --- the comparison ---------------------------------------------------------------------


def time_to(rows: Sequence[Mapping[str, Any]], target: float, since: str) -> float | None:
    """Seconds at the end of the first epoch whose test accuracy reaches ``target``, since
    the process started (``since="start"``) or since training started (``"training"``)."""
    zero = float(rows[0]["seconds"]) if since == "training" else 0.0
    hit = (float(r["seconds"]) for r in rows[1:] if r["test_acc"] >= target)
    return next((t - zero for t in hit), None)


def summarize(runs: Sequence[Mapping[str, Any]], target: float, since: str) -> dict[str, Any]:
    """Per seed: fcnn's time, each PyTorch format's, the faster PyTorch and the ratio
    (times as ``time_to(..., since)``); medians over the seeds that reached ``target``."""
    seeds = sorted({r["seed"] for r in runs})
    per_seed = []
    for seed in seeds:
        mine = {(r["lib"], r.get("format")): r for r in runs if r["seed"] == seed}
        row: dict[str, Any] = {
            "seed": seed,
            "fcnn": time_to(mine["fcnn", None]["rows"], target, since),
        }
        row["fcnn_acc"] = mine["fcnn", None]["rows"][-1]["test_acc"]
        if ("fcnn-cpu", None) in mine:  # --device gpu --cpu-too: fcnn on the CPU beside
            row["fcnn_cpu"] = time_to(mine["fcnn-cpu", None]["rows"], target, since)
        torch_times = {}
        for fmt in FORMATS:
            if ("torch", fmt) in mine:  # accuracy: the run's final epoch
                torch_times[fmt] = time_to(mine["torch", fmt]["rows"], target, since)
                row[f"torch_{fmt}"] = torch_times[fmt]
                row[f"torch_{fmt}_acc"] = mine["torch", fmt]["rows"][-1]["test_acc"]
        reached = [t for t in torch_times.values() if t is not None]
        row["torch"] = min(reached) if reached else None
        both = row["fcnn"] is not None and row["torch"] is not None
        row["ratio"] = row["fcnn"] / row["torch"] if both else None
        per_seed.append(row)
    summary: dict[str, Any] = {"target": target, "since": since, "seeds": per_seed}
    for key in ("fcnn", "torch", "ratio"):
        values = [r[key] for r in per_seed if r[key] is not None]
        summary[f"median_{key}"] = statistics.median(values) if values else None
        summary[f"missed_{key}"] = len(per_seed) - len(values)
    return summary


def since_words(since: str) -> str:
    if since == "start":
        return "the process started (imports and data loading included)"
    return "training started"


def _s(value: float | None) -> str:
    return "missed" if value is None else f"{value:.1f} s"


def table(summary: Mapping[str, Any]) -> str:
    """The per-seed Markdown table and the medians."""
    from _common import markdown_table

    rows = []
    for r in summary["seeds"]:
        ratio = "-" if r["ratio"] is None else f"{r['ratio']:.2f}"
        rows.append(
            [
                str(r["seed"]),
                f"{_s(r['fcnn'])} ({100 * r['fcnn_acc']:.2f}%)",
                *(
                    f"{_s(r.get(f'torch_{f}'))} ({100 * r.get(f'torch_{f}_acc', 0):.2f}%)"
                    if f"torch_{f}_acc" in r
                    else "-"
                    for f in FORMATS
                ),
                ratio,
            ]
        )
    med = summary
    ratio = "-" if med["median_ratio"] is None else f"{med['median_ratio']:.2f}"
    faster = f"{_s(med['median_torch'])} (faster format)"
    rows.append(["median", _s(med["median_fcnn"]), "", faster, ratio])
    headers = ["seed", "fcnn (final acc)", "PyTorch NCHW", "PyTorch channels-last"]
    headers.append("fcnn / faster PyTorch")
    if any("fcnn_cpu" in r for r in summary["seeds"]):
        headers.append("fcnn on the CPU")
        for row, r in zip(rows, [*summary["seeds"], {}], strict=True):
            row.append(_s(r["fcnn_cpu"]) if "fcnn_cpu" in r else "")
    return markdown_table(headers, rows, text_columns=1)


def plot(runs: Sequence[Mapping[str, Any]], target: float, path: str) -> None:
    """Test accuracy against seconds since process start, every run, into ``path``."""
    from fcnn.atomic import atomic_write
    from fcnn.plots import figure_class, image_format

    fig = figure_class()(figsize=(7, 4.2))
    ax = fig.add_subplot()
    colours = {
        ("fcnn-cpu", None): "C3",
        ("fcnn", None): "C0",
        ("torch", "contiguous"): "C1",
        ("torch", "channels_last"): "C2",
    }
    names = {
        ("fcnn-cpu", None): "fcnn on the CPU",
        ("fcnn", None): "fcnn",
        ("torch", "contiguous"): "PyTorch NCHW",
        ("torch", "channels_last"): "PyTorch channels-last",
    }
    seen = set()
    for r in runs:
        key = (r["lib"], r.get("format"))
        xs = [row["seconds"] for row in r["rows"][1:]]
        ys = [100 * row["test_acc"] for row in r["rows"][1:]]
        label = None if key in seen else names[key]
        seen.add(key)
        ax.plot(xs, ys, marker="o", color=colours[key], label=label, alpha=0.8)
    ax.axhline(100 * target, color="grey", linestyle="--", linewidth=1)
    ax.set_xlabel("seconds since the process started")
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(max(90.0, ax.get_ylim()[0]), 100)
    ax.set_xlim(left=0)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    ax.set_title("MNIST, train.py --recipe fast: each seed, one line per run")
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format=image_format(path))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", help="folder holding mnist/ (train.py's --data-dir)")
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, help="default: the recipe's")
    p.add_argument("--limit-train", type=int)
    p.add_argument("--limit-test", type=int)
    p.add_argument("--target", type=float, default=TARGET)
    p.add_argument("--formats", nargs="+", choices=FORMATS, default=list(FORMATS))
    p.add_argument("--no-torch", action="store_true", help="fcnn only")
    p.add_argument("--device", choices=("cpu", "gpu"), default="cpu", help="fcnn and PyTorch on")
    p.add_argument("--cpu-too", action="store_true", help="gpu: also fcnn on the CPU per seed")
    p.add_argument("--plot", help="PNG of test accuracy against seconds")
    p.add_argument("--json", help="write every run and the summary here")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0
    from _common import import_torch, load_average, run_worker

    if args.device == "gpu":
        import fcnn

        try:
            fcnn.array_library("gpu")
        except fcnn.DeviceUnavailableError as err:
            print(f"time_to_accuracy: {err}", file=sys.stderr)
            return 1
    base = {
        "device": args.device,
        "dataset": args.dataset,
        "data_dir": args.data_dir,
        "epochs": args.epochs,
        "limit_train": args.limit_train,
        "limit_test": args.limit_test,
    }
    with_torch = not args.no_torch and import_torch() is not None
    if not args.no_torch and not with_torch:
        print("PyTorch is not installed: fcnn only")
    print(f"load average before: {load_average()}", flush=True)
    runs = []
    for i, seed in enumerate(args.seeds):
        specs = [{**base, "lib": "fcnn", "seed": seed}]
        if args.device == "gpu" and args.cpu_too:
            specs.append({**base, "device": "cpu", "lib": "fcnn-cpu", "seed": seed})
        if with_torch:
            specs += [{**base, "lib": "torch", "seed": seed, "format": f} for f in args.formats]
        if i % 2:  # alternate which library goes first, so drifting load hits both
            specs.reverse()
        for spec in specs:
            try:
                result = run_worker(Path(__file__), spec, timeout=1800)
            except RuntimeError as err:  # what ran before is printed above
                print(f"time_to_accuracy: {err}", file=sys.stderr)
                return 1
            runs.append(result)
            name = result["lib"] + (f" {result['format']}" if result.get("format") else "")
            rows = result["rows"]
            accs = " ".join(f"{100 * r['test_acc']:.2f}%@{r['seconds']:.1f}s" for r in rows[1:])
            began = f"training from {rows[0]['seconds']:.1f}s"
            print(f"seed {seed} {name}: {began}, {accs}", flush=True)
    print(f"load average after: {load_average()}")
    summaries = {since: summarize(runs, args.target, since) for since in ("start", "training")}
    for since, summary in summaries.items():
        print(f"\nseconds to {100 * args.target:g}% test accuracy since {since_words(since)}:")
        print(table(summary))
    if args.json:
        from _common import write_json_atomic

        write_json_atomic(args.json, {"runs": runs, "summary": summaries})
    if args.plot:
        plot(runs, args.target, args.plot)
        print(f"plot: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
