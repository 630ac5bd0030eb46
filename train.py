"""Train a CNN with fcnn.

    python train.py                                   # embedded digits, offline, about a minute
    python train.py --dataset mnist --epochs 12       # full MNIST (downloaded once)
    python train.py --dataset lines                   # synthetic lines, small model, sgd, 1 s
    python train.py --save runs/model.npz --metrics runs/metrics.csv --plot runs/curves.png
    python train.py --resume runs/model.npz               # continue exactly where it stopped
    python train.py --resume runs/model.npz --epochs 20   # extend to 20 (lr schedule recomputed)

Exit status: 0 on success, 1 when the loss becomes NaN/inf or data or a checkpoint
cannot be read (one clear message, no traceback), 2 for bad flags, 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

import fcnn
from fcnn.atomic import atomic_write
from fcnn.data import DATASETS, DatasetNotFoundError, channel_stats, limit_train, load_dataset
from fcnn.data import normalize as normalize_images
from fcnn.data.augment import random_shift
from fcnn.io import (
    Checkpoint,
    CheckpointError,
    check_params_match,
    generator_state,
    load_checkpoint,
    restore_generator,
    save_checkpoint,
)
from fcnn.models import MODELS, build_and_describe, check_same_model
from fcnn.optim import Schedule
from fcnn.plots import MissingExtraError, figure_class, plot_history
from fcnn.runtime import tune_allocator

# The hyperparameters a run is made of. They are saved in every checkpoint; on
# --resume they come from the checkpoint, and a flag that contradicts it is an error.
DEFAULTS: dict[str, Any] = {
    "dataset": DATASETS[0],
    "model": "default",
    "epochs": 10,
    "optimizer": "adam",
    "lr": None,  # per optimizer: see DEFAULT_LR
    "momentum": 0.9,
    "weight_decay": 0.0,
    "schedule": "cosine",
    "batch_size": 64,
    "seed": 0,
    "limit_train": None,
    "impl": "im2col",
    "augment": 0,
}
DEFAULT_LR = {"sgd": 0.05, "adam": 1e-3, "adamw": 1e-3}
# What each dataset changes in the defaults (a flag still wins over these).
PRESETS: dict[str, dict[str, Any]] = {
    "digits-sample": {"augment": 2},
    "mnist": {"epochs": 12, "augment": 2},
    "lines": {"model": "small", "optimizer": "sgd", "epochs": 3},
    "cifar10": {"epochs": 20},
}
EXIT_FAILED, EXIT_INTERRUPTED = 1, 130


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = p.add_argument
    # Every default is None here so that --resume can tell a given flag from a default.
    add("--dataset", choices=DATASETS, help=f"default {DEFAULTS['dataset']} (embedded, offline)")
    add("--model", choices=sorted(MODELS), help="default: default (lines: small)")
    add(
        "--epochs",
        type=int,
        help="total epochs, counting resumed ones (default 10; mnist 12, lines 3, cifar10 20)",
    )
    add("--batch-size", type=int, help="default 64")
    add("--optimizer", choices=["sgd", "adam", "adamw"], help="default adam (lines: sgd)")
    add("--lr", type=float, help="peak learning rate (default 1e-3 for adam/adamw, 0.05 for sgd)")
    add("--momentum", type=float, help="sgd only (Nesterov off), default 0.9")
    add("--weight-decay", type=float, help="L2 for sgd/adam, decoupled for adamw; weights only")
    add("--schedule", choices=["constant", "cosine"], help="default cosine over all epochs")
    add("--seed", type=int, help="seeds data order, init and subsets (default 0)")
    add(
        "--data-dir",
        metavar="DIR",
        help="mnist (cifar10) files are looked for in DIR/mnist (DIR/cifar10), then in DIR, "
        "and downloaded into DIR/mnist (DIR/cifar10)",
    )
    add("--limit-train", type=int, metavar="N", help="train on a random N-sample subset")
    add("--impl", choices=["naive", "im2col", "strided"], help="convolution implementation")
    add(
        "--augment",
        type=int,
        metavar="PIXELS",
        help="shift training images by up to PIXELS each way (default 2 for digits, else 0)",
    )
    add("--save", metavar="PATH", help="checkpoint written after every epoch (atomically)")
    add(
        "--resume",
        metavar="PATH",
        help="continue a run from its checkpoint (exactly, unless --epochs changes the total: "
        "the cosine schedule is then recomputed over the new total)",
    )
    add("--metrics", metavar="PATH", help="per-epoch metrics: .csv, else JSON lines")
    add("--plot", metavar="PATH", help="PNG of loss and accuracy curves (needs matplotlib)")
    add("--quiet", action="store_true", help="no progress bar and no per-epoch lines")
    args = p.parse_args(argv)
    if args.augment is not None and args.augment < 0:
        p.error(f"--augment must be >= 0, got {args.augment}")
    for name in ("epochs", "batch_size", "limit_train"):
        value = getattr(args, name)
        if value is not None and value < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    for name in ("lr", "momentum", "weight_decay"):
        value = getattr(args, name)
        if value is not None and not (math.isfinite(value) and value >= 0):
            p.error(f"--{name.replace('_', '-')} must be a finite number >= 0, got {value}")
    return args


def resolve_config(args: argparse.Namespace, saved: dict[str, Any] | None) -> dict[str, Any]:
    """The run's hyperparameters: flags over defaults, or the checkpoint's on resume."""
    if saved is None:
        defaults = {**DEFAULTS, **PRESETS[args.dataset or DEFAULTS["dataset"]]}
        config = {
            k: (v if getattr(args, k) is None else getattr(args, k)) for k, v in defaults.items()
        }
        if config["lr"] is None:
            config["lr"] = DEFAULT_LR[config["optimizer"]]
        return config
    config = {**DEFAULTS, **saved}  # keys added since the checkpoint keep their defaults
    for key in DEFAULTS:
        given = getattr(args, key)
        if key == "epochs":
            config["epochs"] = given or saved["epochs"]  # a resumed run may be extended
            continue
        if given is not None and given != saved.get(key):
            flag = "--" + key.replace("_", "-")
            raise CheckpointError(
                f"{flag} {given} contradicts the checkpoint being resumed ({saved.get(key)}); "
                f"leave it out to continue the same run"
            )
    return config


def make_schedule(config: dict[str, Any], total_steps: int) -> Schedule:
    """The learning rate per step: cosine from ``lr`` to 0 over the run, or constant."""
    lr = float(config["lr"])
    if config["schedule"] == "cosine":
        return fcnn.cosine_decay(lr, max(total_steps, 1))
    return fcnn.constant(lr)


def make_optimizer(config: dict[str, Any], schedule: Schedule) -> fcnn.Optimizer:
    """The optimizer the config names, following ``schedule``."""
    wd = float(config["weight_decay"])
    if config["optimizer"] == "sgd":
        return fcnn.sgd(schedule, momentum=float(config["momentum"]), weight_decay=wd)
    if config["optimizer"] == "adam":
        return fcnn.adam(schedule, weight_decay=wd)
    return fcnn.adamw(schedule, weight_decay=wd)


def write_metrics(path: str, history: list[dict[str, Any]]) -> None:
    """Rewrite the whole metrics file (CSV for ``.csv``, else JSON lines) atomically."""
    buf = io.StringIO()
    if path.endswith(".csv"):
        writer = csv.DictWriter(buf, fieldnames=list(history[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(history)
    else:
        buf.writelines(json.dumps(row) + "\n" for row in history)
    with atomic_write(path, "w") as f:
        f.write(buf.getvalue())


def progress_bar(total: int, desc: str, quiet: bool) -> Any:
    """A tqdm bar that stays silent when stderr is not a terminal; None without tqdm."""
    if quiet:
        return None
    try:
        from tqdm import tqdm  # type: ignore[import-untyped]
    except ImportError:
        return None
    return tqdm(total=total, desc=desc, unit="batch", leave=False, disable=None)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    tune_allocator()  # keep freed temporaries in the heap: see fcnn/runtime.py
    say: Callable[[str], None] = (lambda _: None) if args.quiet else print
    try:
        return run(args, say)
    except (UsageError, DatasetNotFoundError, CheckpointError, MissingExtraError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:  # before training started; run() handles it during training
        print("\ninterrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


class UsageError(Exception):
    """Something the user can fix (bad data files, an unwritable path): one line, exit 1."""


def check_writable(path: str | None) -> None:
    """Create ``path``'s folder and prove a file can be written there, before any training."""
    if not path:
        return
    if os.path.isdir(path):  # the probe beside it would succeed; the real write would not
        raise UsageError(f"cannot write {path}: it is a directory; give a file path")
    probe = f"{path}.{os.getpid()}.probe"
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(probe, "w", encoding="utf-8"):
            pass
        os.unlink(probe)
    except OSError as err:
        raise UsageError(f"cannot write {path}: {err.strerror or err}") from None


def read_resume(path: str) -> tuple[Checkpoint, dict[str, Any]]:
    """A checkpoint written by train.py and its training config, or ``CheckpointError``."""
    ckpt = load_checkpoint(path)
    meta = ckpt.meta
    norm = meta.get("normalization")
    problems = [
        key
        for key, ok in (
            ("config", isinstance(meta.get("config"), dict)),
            ("model", isinstance(meta.get("model"), dict)),
            ("epoch", isinstance(meta.get("epoch"), int)),
            ("rng", isinstance(meta.get("rng"), dict)),
            ("normalization", isinstance(norm, dict) and {"mean", "std"} <= set(norm)),
            ("history", isinstance(meta.get("history", []), list)),
        )
        if not ok
    ]
    if problems:
        raise CheckpointError(
            f"{path}: cannot resume: missing or malformed {problems}; was it written by train.py?"
        )
    if ckpt.opt_state is None:
        raise CheckpointError(f"{path}: has no optimizer state to resume from")
    return ckpt, meta["config"]


def resumed_model(
    path: str, ckpt: Checkpoint, config: dict[str, Any]
) -> tuple[fcnn.Layer, dict[str, Any]]:
    """The model ``config`` names, with the checkpoint's number of classes, and its
    description; ``CheckpointError`` when the checkpoint's stored model is another one.

    Called before the dataset is loaded (or downloaded), so a checkpoint written by
    other model code is refused at once."""
    saved = ckpt.meta["model"]
    try:
        model, desc = build_and_describe(config["model"], saved.get("num_classes"), config["impl"])
        check_same_model(saved, desc)
    except ValueError as err:  # CheckpointError included; also a malformed num_classes
        raise CheckpointError(f"{path}: cannot resume: {err}") from None
    return model, desc


def run(args: argparse.Namespace, say: Callable[[str], None]) -> int:
    ckpt, saved = read_resume(args.resume) if args.resume else (None, None)
    config = resolve_config(args, saved)
    built = None if ckpt is None else resumed_model(args.resume, ckpt, config)
    epochs = int(config["epochs"])
    save_path = args.save or args.resume
    for path in (save_path, args.metrics, args.plot):
        check_writable(path)  # fail before training, not after the first epoch
    if args.plot:
        figure_class()  # fail before training when matplotlib is missing

    if args.data_dir and os.path.exists(args.data_dir) and not os.path.isdir(args.data_dir):
        raise UsageError(
            f"--data-dir {args.data_dir} is a file; give the folder that holds the data"
        )
    try:
        ds = load_dataset(config["dataset"], args.data_dir, seed=config["seed"])
    except ValueError as err:  # a corrupt or truncated file; missing ones are DatasetNotFoundError
        raise UsageError(str(err)) from None
    ds = limit_train(ds, config["limit_train"], config["seed"])
    rng = np.random.default_rng(config["seed"])
    init_rng, train_rng = rng.spawn(2)
    if ckpt is None:
        mean, std = channel_stats(ds.x_train)
    else:
        mean = np.asarray(ckpt.meta["normalization"]["mean"], np.float32)
        std = np.asarray(ckpt.meta["normalization"]["std"], np.float32)
    x_train = normalize_images(ds.x_train, mean, std)
    x_test = normalize_images(ds.x_test, mean, std)
    in_shape = tuple(int(d) for d in x_train.shape[1:])

    if built is not None and built[1]["num_classes"] != len(ds.classes):
        raise CheckpointError(
            f"{args.resume}: cannot resume: its model has {built[1]['num_classes']} classes, "
            f"{ds.name} has {len(ds.classes)}"
        )
    try:
        model, desc = built or build_and_describe(config["model"], len(ds.classes), config["impl"])
        params, state, _ = fcnn.init(model, init_rng, in_shape)
    except ValueError as err:
        raise UsageError(f"model {config['model']!r} on {ds.name} {in_shape}: {err}") from None
    # Batch norm cannot normalise a batch of one image: skip such a final batch.
    n, batch_size = len(x_train), int(config["batch_size"])
    drop_last = n % batch_size == 1 and n > 1
    steps_per_epoch = n // batch_size if drop_last else math.ceil(n / batch_size)
    schedule = make_schedule(config, epochs * steps_per_epoch)
    opt = make_optimizer(config, schedule)
    ts = fcnn.TrainState(params, state, opt.init(params))
    history: list[dict[str, Any]] = []
    start = 0
    if ckpt is not None:
        check_params_match(params, ckpt.params, "params")
        check_params_match(state, ckpt.state, "state")
        check_params_match(ts.opt_state, ckpt.opt_state, "optimizer state")
        ts = fcnn.TrainState(ckpt.params, ckpt.state, ckpt.opt_state)
        train_rng = restore_generator(ckpt.meta["rng"])
        history = list(ckpt.meta.get("history", []))
        start = int(ckpt.meta["epoch"])
        say(f"resuming {args.resume} after epoch {start}")
    n_params = sum(a.size for a in fcnn.tree_leaves(ts.params))
    say(
        f"{config['model']} ({n_params:,} params) on {ds.name}: {len(x_train):,} train / "
        f"{len(x_test):,} test images {in_shape}, {config['optimizer']} lr {config['lr']:g} "
        f"({config['schedule']}), batch {config['batch_size']}, {epochs} epochs"
    )
    if start >= epochs:
        say(f"nothing to do: the checkpoint already has {start} of {epochs} epochs")
        return 0

    step = fcnn.make_step(model, opt)
    augment = None
    if config["augment"]:
        # where a pixel of 0 lands after normalisation: the value shifted in at the edges
        background = normalize_images(np.zeros((1, len(mean)), np.float32), mean, std)[0]

        def augment(xb: Any, g: np.random.Generator) -> Any:
            return random_shift(xb, int(config["augment"]), g, fill=background)

    meta = {
        "model": desc,
        "input_shape": list(in_shape),
        "classes": list(ds.classes),
        "dataset": config["dataset"],
        "normalization": {"mean": mean.tolist(), "std": std.tolist()},
        "config": config,
    }
    last_saved = f"{args.resume} (epoch {start})" if args.resume else None
    epoch = start
    batch: int | None = 0  # the steps done in this epoch; None once it is being evaluated
    try:
        for epoch in range(start + 1, epochs + 1):
            batch = 0
            bar = progress_bar(steps_per_epoch, f"epoch {epoch}/{epochs}", args.quiet)

            def on_batch(i: int, loss: float, bar: Any = bar) -> None:
                nonlocal batch
                batch = i + 1
                if bar is not None:
                    bar.update(1)
                    if i % 20 == 0:
                        bar.set_postfix(loss=f"{loss:.4f}", refresh=False)

            t0 = time.perf_counter()
            try:
                ts, train_loss = fcnn.train_epoch(
                    step,
                    ts,
                    x_train,
                    ds.y_train,
                    config["batch_size"],
                    train_rng,
                    on_batch,
                    augment,
                    drop_last,
                )
            finally:
                if bar is not None:
                    bar.close()
            train_s = time.perf_counter() - t0
            batch = None
            test_loss, test_acc = fcnn.evaluate(model, ts.params, ts.state, x_test, ds.y_test)
            if not math.isfinite(test_loss):  # the epoch's last updates broke the model
                raise fcnn.NonFiniteLossError(
                    f"test loss is {test_loss} after the epoch's updates; stopping "
                    "(try a smaller learning rate)"
                )
            row = {
                "epoch": epoch,
                "train_loss": round(train_loss, 6),
                "test_loss": round(test_loss, 6),
                "test_acc": round(test_acc, 6),
                "lr": float(f"{schedule(epoch * steps_per_epoch - 1):.6g}"),  # the last step's
                "train_seconds": round(train_s, 2),
                "samples_per_second": round(len(x_train) / train_s, 1),
            }
            history.append(row)
            say(
                f"epoch {epoch}/{epochs}  train loss {train_loss:.4f}  test loss {test_loss:.4f}  "
                f"test acc {100 * test_acc:.2f}%  ({train_s:.1f}s, {len(x_train) / train_s:.0f}/s)"
            )
            if save_path:
                meta_now = {
                    **meta,
                    "epoch": epoch,
                    "rng": generator_state(train_rng),
                    "history": history,
                }
                save_checkpoint(
                    save_path,
                    params=ts.params,
                    state=ts.state,
                    opt_state=ts.opt_state,
                    meta=meta_now,
                )
                last_saved = f"{save_path} (epoch {epoch})"
            if args.metrics:
                write_metrics(args.metrics, history)
            if args.plot:
                plot_history(history, args.plot, title=f"{config['model']} on {ds.name}")
    except fcnn.NonFiniteLossError as err:
        kept = (
            f"the last good checkpoint is {last_saved}" if last_saved else "no checkpoint was saved"
        )
        where = f"epoch {epoch}" if batch is None else f"epoch {epoch}, batch {batch + 1}"
        print(f"error: {where}: {err}; {kept}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        kept = f"resume from {last_saved}" if last_saved else "no checkpoint was saved (use --save)"
        print(f"\ninterrupted during epoch {epoch}; {kept}", file=sys.stderr)
        return EXIT_INTERRUPTED
    final = history[-1]
    print(
        f"done: test accuracy {100 * final['test_acc']:.2f}% after {epochs} epochs "
        f"({sum(r['train_seconds'] for r in history):.1f}s of training)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
