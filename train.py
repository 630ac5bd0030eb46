"""Train a CNN with fcnn.

    python train.py                                   # embedded digits, offline, about a minute
    python train.py --dataset mnist --epochs 12       # full MNIST (downloaded once)
    python train.py --dataset lines                   # synthetic lines, small model, sgd, 1 s
    python train.py --dataset mnist --recipe fast     # 99% on MNIST in a few epochs (RECIPES)
    python train.py --save runs/model.npz --metrics runs/metrics.csv --plot runs/curves.png
    python train.py --resume runs/model.npz               # continue exactly where it stopped
    python train.py --resume runs/model.npz --epochs 20   # extend to 20 (lr schedule recomputed)

Exit status: 0 on success, 1 when the loss becomes NaN/inf or data or a checkpoint
cannot be read (one clear message, no traceback), 2 for bad flags, 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import hashlib
import io
import json
import math
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

import fcnn
from fcnn.atomic import atomic_write
from fcnn.data import DATASETS, DatasetNotFoundError, channel_stats, limit_train, load_dataset
from fcnn.data import normalize as normalize_images
from fcnn.data.augment import random_shift
from fcnn.io import (
    CheckpointError,
    CheckpointHeader,
    generator_state,
    load_checkpoint,
    read_checkpoint_header,
    restore_generator,
    save_checkpoint,
)
from fcnn.models import MODELS, build_and_describe, check_same_model
from fcnn.optim import Schedule
from fcnn.parallel import (
    Comm,
    MissingMPIError,
    abort,
    abort_on_failure,
    check_same_everywhere,
    data_parallel_step,
    evaluate_sharded,
    set_blas_threads,
    shard,
    sync_train_state,
    world,
)
from fcnn.paths import PathError, check_writable_file
from fcnn.plots import MissingExtraError, figure_class, image_format, plot_history
from fcnn.runtime import tune_allocator
from fcnn.training import Step

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "cosine", "onecycle")
IMPLS = ("naive", "im2col", "strided")
DEFAULT_LR = {"sgd": 0.05, "adam": 1e-3, "adamw": 1e-3}
EXIT_FAILED, EXIT_INTERRUPTED = 1, 130


# The run's configuration: one typed record, checked by one set of rules for flags and checkpoints


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def plural(n: int, noun: str) -> str:
    """``1 epoch``, ``2 epochs``."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _int_at_least(low: int) -> Callable[[str, Any], None]:
    def check(name: str, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{_flag(name)} must be an integer, got {value!r}")
        if value < low:
            raise ValueError(f"{_flag(name)} must be >= {low}, got {value}")

    return check


def _finite_non_negative(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{_flag(name)} must be a number, got {value!r}")
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{_flag(name)} must be a finite number >= 0, got {value}")


def _one_of(choices: Sequence[str]) -> Callable[[str, Any], None]:
    def check(name: str, value: Any) -> None:
        if value not in choices:
            raise ValueError(f"{_flag(name)} must be one of {list(choices)}, got {value!r}")

    return check


def _fraction(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{_flag(name)} must be a number, got {value!r}")
    if not 0 <= value <= 1:  # NaN fails the comparison too
        raise ValueError(f"{_flag(name)} must be a number in [0, 1], got {value}")


def _optional(check: Callable[[str, Any], None]) -> Callable[[str, Any], None]:
    def check_optional(name: str, value: Any) -> None:
        if value is not None:
            check(name, value)

    return check_optional


@dataclass(frozen=True)
class RunConfig:
    """The hyperparameters a run is made of, checked on construction.

    Saved in every checkpoint (``as_dict``); on ``--resume`` they come back from it
    through the same checks (``from_saved``), and a flag that contradicts them is an
    error. ``lr`` is always a number here: ``None`` on the command line means
    ``DEFAULT_LR[optimizer]``.
    """

    dataset: str = DATASETS[0]
    model: str = "default"
    epochs: int = 10
    optimizer: str = "adam"
    lr: float = DEFAULT_LR["adam"]
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "cosine"
    batch_size: int = 64
    seed: int = 0
    limit_train: int | None = None
    impl: str = "im2col"
    augment: int = 0
    label_smoothing: float = 0.0
    recipe: str | None = None  # the recipe whose settings this run started from, if any

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            check_setting(field.name, getattr(self, field.name))

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_saved(cls, saved: Mapping[str, Any]) -> RunConfig:
        """The config a checkpoint stored; keys added since then keep their defaults.

        ``ValueError`` naming the key for an unknown key or a value the flag would refuse.
        """
        unknown = sorted(set(saved) - set(SETTINGS))
        if unknown:
            raise ValueError(f"unknown settings {unknown}")
        return cls(**saved)


# Recipes: a whole run's settings tuned together, over the dataset's presets (flags win).
# "fast": the fewest seconds to 99% test accuracy on MNIST (benchmarks/time_to_accuracy.py).
RECIPES: dict[str, dict[str, Any]] = {
    "fast": {
        "model": "fast",
        "optimizer": "adam",
        "lr": 4e-3,
        "schedule": "onecycle",
        "batch_size": 128,
        "epochs": 3,
        "augment": 1,
        "label_smoothing": 0.1,
    },
}


# How each setting is checked; the messages name the flag, for the command line and checkpoints.
SETTINGS: dict[str, Callable[[str, Any], None]] = {
    "dataset": _one_of(DATASETS),
    "model": _one_of(sorted(MODELS)),
    "epochs": _int_at_least(1),
    "optimizer": _one_of(OPTIMIZERS),
    "lr": _finite_non_negative,
    "momentum": _finite_non_negative,
    "weight_decay": _finite_non_negative,
    "schedule": _one_of(SCHEDULES),
    "batch_size": _int_at_least(1),
    "seed": _int_at_least(0),
    "limit_train": _optional(_int_at_least(1)),
    "impl": _one_of(IMPLS),
    "augment": _int_at_least(0),
    "label_smoothing": _fraction,
    "recipe": _optional(_one_of(sorted(RECIPES))),
}


def check_setting(name: str, value: Any) -> None:
    """``ValueError`` (naming the flag) unless ``value`` is allowed for setting ``name``."""
    SETTINGS[name](name, value)


# What each dataset changes in the defaults (a flag still wins over these).
PRESETS: dict[str, dict[str, Any]] = {
    "digits-sample": {"augment": 2},
    "mnist": {"epochs": 12, "augment": 2},
    "lines": {"model": "small", "optimizer": "sgd", "epochs": 3},
    "cifar10": {"epochs": 20},
}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = p.add_argument
    # Every default is None here so that --resume can tell a given flag from a default.
    add("--dataset", choices=DATASETS, help=f"default {RunConfig.dataset} (embedded, offline)")
    add("--model", choices=sorted(MODELS), help="default: default (lines: small)")
    add(
        "--epochs",
        type=int,
        help="total epochs, counting resumed ones (default 10; mnist 12, lines 3, cifar10 20)",
    )
    add("--batch-size", type=int, help="default 64")
    add("--optimizer", choices=OPTIMIZERS, help="default adam (lines: sgd)")
    add("--lr", type=float, help="peak learning rate (default 1e-3 for adam/adamw, 0.05 for sgd)")
    add("--momentum", type=float, help="sgd only (Nesterov off), default 0.9")
    add("--weight-decay", type=float, help="L2 for sgd/adam, decoupled for adamw; weights only")
    add(
        "--schedule",
        choices=SCHEDULES,
        help="default cosine over all epochs; onecycle: linearly up to --lr in the first "
        "quarter of the steps, then down to 0",
    )
    add(
        "--label-smoothing",
        type=float,
        metavar="EPS",
        help="train against (1 - EPS) * one-hot + EPS / classes (default 0)",
    )
    add(
        "--recipe",
        choices=sorted(RECIPES),
        help="a tuned set of settings that other flags override; fast: model fast, adam lr "
        "4e-3 onecycle, batch 128, 3 epochs, shifts of 1 pixel, label smoothing 0.1 "
        "(about 99.1%% on mnist)",
    )
    add("--seed", type=int, help="seeds data order, init and subsets (default 0)")
    add(
        "--data-dir",
        metavar="DIR",
        help="mnist (cifar10) files are looked for in DIR/mnist (DIR/cifar10), then in DIR, "
        "and downloaded into DIR/mnist (DIR/cifar10)",
    )
    add("--limit-train", type=int, metavar="N", help="train on a random N-sample subset")
    add("--impl", choices=IMPLS, help="convolution implementation")
    add(
        "--augment",
        type=int,
        metavar="PIXELS",
        help="shift training images by up to PIXELS each way (default 2 for digits, else 0)",
    )
    add("--save", metavar="PATH", help="checkpoint written after every epoch (atomically)")
    add(
        "--overwrite",
        action="store_true",
        help="let --save replace an existing file that is not the checkpoint being resumed",
    )
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
    for name in SETTINGS:
        value = getattr(args, name)
        try:
            if value is not None:
                check_setting(name, value)
        except ValueError as err:
            p.error(str(err))
    return args


def resolve_config(args: argparse.Namespace, saved: RunConfig | None) -> RunConfig:
    """The run's settings: flags over the dataset's presets over the defaults, or the
    checkpoint's on resume (where only ``--epochs`` may change: a run can be extended)."""
    given = {name: getattr(args, name) for name in SETTINGS if getattr(args, name) is not None}
    if saved is None:
        preset = PRESETS[given.get("dataset", RunConfig.dataset)]
        recipe = RECIPES[given["recipe"]] if "recipe" in given else {}
        settings = {**preset, **recipe, **given}
        if "lr" not in settings:
            settings["lr"] = DEFAULT_LR[settings.get("optimizer", RunConfig.optimizer)]
        return RunConfig(**settings)
    for name, value in given.items():
        if name != "epochs" and value != getattr(saved, name):
            raise CheckpointError(
                f"{_flag(name)} {value} contradicts the checkpoint being resumed "
                f"({getattr(saved, name)}); leave it out to continue the same run"
            )
    return dataclasses.replace(saved, epochs=given.get("epochs", saved.epochs))


def make_schedule(config: RunConfig, total_steps: int) -> Schedule:
    """The learning rate per step: cosine from ``lr`` to 0 over the run, one cycle (up to
    ``lr`` in the first quarter, then down to 0), or constant."""
    if config.schedule == "cosine":
        return fcnn.cosine_decay(config.lr, max(total_steps, 1))
    if config.schedule == "onecycle":
        return fcnn.one_cycle(config.lr, max(total_steps, 1), warmup_fraction=0.25)
    return fcnn.constant(config.lr)


def training_loss(config: RunConfig) -> fcnn.Loss:
    """Softmax cross-entropy, label-smoothed when the config says so (test loss: plain)."""
    if config.label_smoothing:
        return fcnn.label_smoothing(config.label_smoothing)
    return fcnn.softmax_cross_entropy


def make_optimizer(config: RunConfig, schedule: Schedule) -> fcnn.Optimizer:
    """The optimizer the config names, following ``schedule``."""
    if config.optimizer == "sgd":
        return fcnn.sgd(schedule, momentum=config.momentum, weight_decay=config.weight_decay)
    if config.optimizer == "adam":
        return fcnn.adam(schedule, weight_decay=config.weight_decay)
    return fcnn.adamw(schedule, weight_decay=config.weight_decay)


# Setting up: the checkpoint to resume, the outputs, the data, the model and its training step


class UsageError(Exception):
    """Something the user can fix (bad data files, an unwritable path): one line, exit 1."""


@dataclass(frozen=True)
class Outputs:
    """Where the run writes: a checkpoint after every epoch, metrics, a plot (each optional)."""

    save: str | None
    metrics: str | None
    plot: str | None


@dataclass(frozen=True)
class Data:
    """The dataset, normalised with the per-channel ``mean`` and ``std`` of its training images."""

    name: str
    classes: tuple[str, ...]
    x_train: np.ndarray[Any, Any]
    y_train: np.ndarray[Any, Any]
    x_test: np.ndarray[Any, Any]
    y_test: np.ndarray[Any, Any]
    mean: np.ndarray[Any, Any]
    std: np.ndarray[Any, Any]


@dataclass(frozen=True)
class Ranks:
    """The MPI ranks training together (``comm`` is None in a plain one-process run).

    Every rank trains on its slice of each global batch; only rank 0 prints and writes.
    """

    comm: Comm | None = None
    rank: int = 0
    size: int = 1
    threads: str = ""  # the BLAS threads per rank, as said in the header

    @property
    def root(self) -> bool:
        return self.rank == 0


def join_ranks() -> Ranks:
    """This process's place among the ranks ``mpiexec`` started, if any, with its BLAS
    threads set to cores / ranks (unless the environment says otherwise)."""
    comm = world()
    if comm is None:
        return Ranks()
    return Ranks(comm, comm.Get_rank(), comm.Get_size(), set_blas_threads(comm.Get_size()))


class RanksDisagreeError(UsageError):
    """The ranks were started with different settings or data; raised on every rank."""


@dataclass(frozen=True)
class Run:
    """Everything fixed once the run is set up; epochs read it and never change it."""

    config: RunConfig
    outputs: Outputs
    data: Data
    model: fcnn.Layer
    step: Step
    schedule: Schedule
    steps_per_epoch: int
    drop_last: bool
    augment: Callable[[Any, np.random.Generator], Any] | None
    meta: dict[str, Any]  # stored with every checkpoint, besides the epoch, rng and history
    quiet: bool
    ranks: Ranks


@dataclass(frozen=True)
class Progress:
    """Where training stands after ``epoch`` epochs; ``rng`` shuffles and augments."""

    ts: fcnn.TrainState
    rng: np.random.Generator
    epoch: int
    history: tuple[dict[str, Any], ...]
    saved: str | None  # the last checkpoint written (or resumed from), for messages


def check_writable(path: str | None) -> None:
    """Create ``path``'s folder and prove a file can be written there, before any training."""
    if path:
        try:
            check_writable_file(path, make_folder=True)
        except PathError as err:
            raise UsageError(str(err)) from None


def check_not_another_run(path: str) -> None:
    """``UsageError`` when ``path`` exists: --save never silently replaces another run's file."""
    if os.path.isfile(path):
        raise UsageError(
            f"--save {path}: the file exists and is not the checkpoint being resumed; "
            f"continue that run with --resume {path}, choose another path, or pass "
            "--overwrite to replace it"
        )


def has_layer(spec: Mapping[str, Any], kind: str) -> bool:
    """Whether a model ``spec`` (see ``Layer.spec``) holds, at any depth, a layer whose
    type names ``kind`` (``"BatchNorm"`` finds BatchNorm1d and BatchNorm2d, ``"Dropout"``
    finds Dropout and SpatialDropout2d)."""
    children = spec.get("layers", [])
    return kind in str(spec.get("type", "")) or any(has_layer(c, kind) for c in children)


def read_resume(path: str) -> tuple[CheckpointHeader, RunConfig]:
    """A checkpoint written by train.py and its training config, or ``CheckpointError``."""
    header = read_checkpoint_header(path)  # no array is read before the model is known
    meta = header.meta
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
    if not any(key.startswith("opt_state/") for key in header.members):
        raise CheckpointError(f"{path}: has no optimizer state to resume from")
    try:
        config = RunConfig.from_saved(meta["config"])
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: cannot resume: its stored config: {err}") from None
    return header, config


def resumed_model(
    path: str, ckpt: CheckpointHeader, config: RunConfig
) -> tuple[fcnn.Layer, dict[str, Any]]:
    """The model ``config`` names, with the checkpoint's number of classes, and its
    description; ``CheckpointError`` when the checkpoint's stored model is another one.

    Called before the dataset is loaded (or downloaded), so a checkpoint written by
    other model code is refused at once."""
    saved = ckpt.meta["model"]
    try:
        model, desc = build_and_describe(config.model, saved.get("num_classes"), config.impl)
        check_same_model(saved, desc)
    except ValueError as err:  # CheckpointError included; also a malformed num_classes
        raise CheckpointError(f"{path}: cannot resume: {err}") from None
    return model, desc


def load_data(config: RunConfig, data_dir: str | None, ckpt: CheckpointHeader | None) -> Data:
    """The dataset, normalised with its own statistics (or the resumed checkpoint's)."""
    if data_dir and os.path.exists(data_dir) and not os.path.isdir(data_dir):
        raise UsageError(f"--data-dir {data_dir} is a file; give the folder that holds the data")
    try:
        ds = load_dataset(config.dataset, data_dir, seed=config.seed)
    except ValueError as err:  # a corrupt or truncated file; missing ones are DatasetNotFoundError
        raise UsageError(str(err)) from None
    ds = limit_train(ds, config.limit_train, config.seed)
    if ckpt is None:
        mean, std = channel_stats(ds.x_train)
    else:
        mean = np.asarray(ckpt.meta["normalization"]["mean"], np.float32)
        std = np.asarray(ckpt.meta["normalization"]["std"], np.float32)
    return Data(
        name=ds.name,
        classes=tuple(ds.classes),
        x_train=normalize_images(ds.x_train, mean, std),
        y_train=ds.y_train,
        x_test=normalize_images(ds.x_test, mean, std),
        y_test=ds.y_test,
        mean=mean,
        std=std,
    )


def shifter(config: RunConfig, data: Data) -> Callable[[Any, np.random.Generator], Any] | None:
    """Random shifts of up to ``config.augment`` pixels, filling with a normalised zero pixel."""
    if not config.augment:
        return None
    background = normalize_images(np.zeros((1, len(data.mean)), np.float32), data.mean, data.std)[0]

    def augment(xb: Any, g: np.random.Generator) -> Any:
        return random_shift(xb, config.augment, g, fill=background)

    return augment


def set_up(
    args: argparse.Namespace, say: Callable[[str], None], ranks: Ranks
) -> tuple[Run, Progress]:
    """Everything before the first epoch, failing early: read the checkpoint to resume and
    check its model, prove the outputs writable, load the data, build and initialise the model
    (or take the checkpoint's weights), the optimizer and the step; under MPI, check that
    every rank was started alike and give them all rank 0's state."""
    ckpt, saved = read_resume(args.resume) if args.resume else (None, None)
    config = resolve_config(args, saved)
    built = None if ckpt is None else resumed_model(args.resume, ckpt, config)
    outputs = Outputs(save=args.save or args.resume, metrics=args.metrics, plot=args.plot)
    if ranks.root:  # the only rank that writes
        if outputs.save and outputs.save != args.resume and not args.overwrite:
            check_not_another_run(outputs.save)
        for path in (outputs.save, outputs.metrics, outputs.plot):
            check_writable(path)  # fail before training, not after the first epoch
        if outputs.plot:
            try:
                image_format(outputs.plot)  # an extension matplotlib writes, e.g. .png, .svg
            except PathError as err:
                raise UsageError(str(err)) from None
            figure_class()  # fail before training when matplotlib is missing

    data = load_data(config, args.data_dir, ckpt)
    init_rng, train_rng = np.random.default_rng(config.seed).spawn(2)
    in_shape = tuple(int(d) for d in data.x_train.shape[1:])
    if built is not None and built[1]["num_classes"] != len(data.classes):
        raise CheckpointError(
            f"{args.resume}: cannot resume: its model has {built[1]['num_classes']} classes, "
            f"{data.name} has {len(data.classes)}"
        )
    try:
        model, desc = built or build_and_describe(config.model, len(data.classes), config.impl)
        params, state, _ = fcnn.init(model, init_rng, in_shape)
    except ValueError as err:
        raise UsageError(f"model {config.model!r} on {data.name} {in_shape}: {err}") from None
    batch_norm = has_layer(model.spec, "BatchNorm")
    if batch_norm and config.batch_size < 2 * ranks.size:
        per = "batch" if ranks.size == 1 else f"rank's slice of a batch ({ranks.size} ranks)"
        raise UsageError(
            f"model {config.model!r} has batch norm, which cannot normalise one image per "
            f"{per}: use --batch-size {2 * ranks.size} or more"
        )
    n = len(data.x_train)
    drop_last = drop_last_batch(n, config.batch_size, ranks.size, batch_norm)
    steps_per_epoch = n // config.batch_size if drop_last else math.ceil(n / config.batch_size)
    schedule = make_schedule(config, config.epochs * steps_per_epoch)
    opt = make_optimizer(config, schedule)
    progress = Progress(fcnn.TrainState(params, state, opt.init(params)), train_rng, 0, (), None)
    if ckpt is not None:
        progress = resume_progress(args.resume, progress)
        say(f"resuming {args.resume} after epoch {progress.epoch}")
    if ranks.comm is not None:
        progress = agree(ranks.comm, config, data, progress)
    meta = {
        "model": desc,
        "input_shape": list(in_shape),
        "classes": list(data.classes),
        "dataset": config.dataset,
        "normalization": {"mean": data.mean.tolist(), "std": data.std.tolist()},
        "config": config.as_dict(),
    }
    run = Run(
        config=config,
        outputs=outputs,
        data=data,
        model=model,
        step=(
            fcnn.make_step(model, opt, training_loss(config))
            if ranks.comm is None
            else data_parallel_step(
                model,
                opt,
                ranks.comm,
                training_loss(config),
                random_layers=has_layer(model.spec, "Dropout"),
            )
        ),
        schedule=schedule,
        steps_per_epoch=steps_per_epoch,
        drop_last=drop_last,
        augment=shifter(config, data),
        meta=meta,
        quiet=args.quiet or not ranks.root,
        ranks=ranks,
    )
    return run, progress


def drop_last_batch(n: int, batch_size: int, ranks: int, batch_norm: bool) -> bool:
    """Whether to skip an epoch's short last batch.

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


def fingerprint(config: RunConfig, data: Data, progress: Progress) -> str:
    """A digest of everything the ranks must share: settings, data and the starting state."""
    h = hashlib.blake2b(json.dumps(config.as_dict(), sort_keys=True).encode())
    for a in (data.x_train, data.y_train, data.x_test, data.y_test, data.mean, data.std):
        h.update(repr((a.shape, a.dtype.str)).encode())
        h.update(np.ascontiguousarray(a).data)
    h.update(str(progress.epoch).encode())
    return h.hexdigest()


def agree(comm: Comm, config: RunConfig, data: Data, progress: Progress) -> Progress:
    """Refuse ranks started with other settings or data than rank 0 (on every rank, before
    training); then every rank starts from rank 0's weights and optimizer state."""
    differ = check_same_everywhere(fingerprint(config, data, progress), comm)
    if differ:
        raise RanksDisagreeError(
            f"rank{'s' * (len(differ) > 1)} {', '.join(map(str, differ))} started with other "
            "settings, data or checkpoint than rank 0; start every rank with the same command"
        )
    return dataclasses.replace(progress, ts=sync_train_state(progress.ts, comm))


def resume_progress(path: str, fresh: Progress) -> Progress:
    """The checkpoint's weights, optimizer state, generator and history. Its arrays are
    compared with what the model and optimizer build now (``fresh``) by their declared
    shapes before any is decompressed, so a file cannot inflate past the model's size."""
    ts = fresh.ts
    expected = {"params": ts.params, "state": ts.state, "opt_state": ts.opt_state}
    ckpt = load_checkpoint(path, expected=expected)
    epoch = int(ckpt.meta["epoch"])
    return Progress(
        ts=fcnn.TrainState(ckpt.params, ckpt.state, ckpt.opt_state),
        rng=restore_generator(ckpt.meta["rng"]),
        epoch=epoch,
        history=tuple(ckpt.meta.get("history", [])),
        saved=f"{path} (epoch {epoch})",
    )


def describe(run: Run, progress: Progress) -> str:
    """The run's header line: model, data, optimizer, batch and epochs."""
    c, d = run.config, run.data
    n = len(d.x_train)
    batch = str(c.batch_size)
    if c.batch_size > n:  # every batch is then the whole (shuffled) training set
        batch = f"{n} (the whole training set; --batch-size {c.batch_size} is larger)"
    n_params = sum(a.size for a in fcnn.tree_leaves(progress.ts.params))
    line = (
        f"{c.model} ({n_params:,} params) on {d.name}: {len(d.x_train):,} train / "
        f"{len(d.x_test):,} test images {tuple(d.x_train.shape[1:])}, {c.optimizer} lr "
        f"{c.lr:g} ({c.schedule}), batch {batch}, {plural(c.epochs, 'epoch')}"
    )
    extras = [f"label smoothing {c.label_smoothing:g}"] if c.label_smoothing else []
    extras += [f"shifts of up to {plural(c.augment, 'pixel')}"] if c.recipe and c.augment else []
    if c.recipe:
        line = f"recipe {c.recipe}: {line}"
    if extras:
        line = f"{line}, {', '.join(extras)}"
    r = run.ranks
    if r.comm is None:
        return line
    return (
        f"{line}\ndata-parallel on {r.size} MPI ranks, each on 1/{r.size} of every batch; "
        f"{r.threads}"
    )


# One epoch: train, evaluate, record, save


def progress_bar(total: int, desc: str, quiet: bool) -> Any:
    """A tqdm bar that stays silent when stderr is not a terminal; None without tqdm."""
    if quiet:
        return None
    try:
        from tqdm import tqdm  # type: ignore[import-untyped]
    except ImportError:
        return None
    return tqdm(total=total, desc=desc, unit="batch", leave=False, disable=None)


def train_one_epoch(
    run: Run, ts: fcnn.TrainState, rng: np.random.Generator, epoch: int
) -> tuple[fcnn.TrainState, float, float]:
    """One pass over the shuffled training set: ``(new state, mean loss, seconds)``.

    A non-finite loss raises ``NonFiniteLossError`` naming the epoch and batch."""
    bar = progress_bar(run.steps_per_epoch, f"epoch {epoch}/{run.config.epochs}", run.quiet)
    done = 0  # steps finished in this epoch

    def on_batch(i: int, loss: float) -> None:
        nonlocal done
        done = i + 1
        if bar is not None:
            bar.update(1)
            if i % 20 == 0:
                bar.set_postfix(loss=f"{loss:.4f}", refresh=False)

    t0 = time.perf_counter()
    try:
        ts, loss = fcnn.train_epoch(
            run.step,
            ts,
            run.data.x_train,
            run.data.y_train,
            run.config.batch_size,
            rng,
            on_batch,
            run.augment,
            run.drop_last,
        )
    except fcnn.NonFiniteLossError as err:
        raise fcnn.NonFiniteLossError(f"epoch {epoch}, batch {done + 1}: {err}") from None
    finally:
        if bar is not None:
            bar.close()
    return ts, loss, time.perf_counter() - t0


def evaluate(run: Run, ts: fcnn.TrainState, epoch: int) -> tuple[float, float]:
    """Test ``(loss, accuracy)``; ``NonFiniteLossError`` if the epoch broke the model."""
    d, comm = run.data, run.ranks.comm
    if comm is None:
        test_loss, test_acc = fcnn.evaluate(run.model, ts.params, ts.state, d.x_test, d.y_test)
    else:
        test_loss, test_acc = evaluate_sharded(
            run.model, ts.params, ts.state, d.x_test, d.y_test, comm
        )
    if not math.isfinite(test_loss):
        raise fcnn.NonFiniteLossError(
            f"epoch {epoch}: test loss is {test_loss} after the epoch's updates; stopping "
            "(try a smaller learning rate)"
        )
    return test_loss, test_acc


def epoch_row(
    run: Run, epoch: int, train_loss: float, seconds: float, test: tuple[float, float]
) -> dict[str, Any]:
    """One row of the metrics file."""
    n = len(run.data.x_train)
    return {
        "epoch": epoch,
        "train_loss": round(train_loss, 6),
        "test_loss": round(test[0], 6),
        "test_acc": round(test[1], 6),
        "lr": float(f"{run.schedule(epoch * run.steps_per_epoch - 1):.6g}"),  # the last step's
        "train_seconds": round(seconds, 2),
        "samples_per_second": round(n / seconds, 1),
    }


def epoch_line(run: Run, row: Mapping[str, Any]) -> str:
    return (
        f"epoch {row['epoch']}/{run.config.epochs}  train loss {row['train_loss']:.4f}  "
        f"test loss {row['test_loss']:.4f}  test acc {100 * row['test_acc']:.2f}%  "
        f"({row['train_seconds']:.1f}s, {row['samples_per_second']:.0f}/s)"
    )


def write_metrics(path: str, history: Sequence[Mapping[str, Any]]) -> None:
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


def save_checkpoint_of(run: Run, progress: Progress) -> Progress:
    """Write the checkpoint (atomically) when the run keeps one; note it in ``saved``."""
    path = run.outputs.save
    if not path:
        return progress
    meta = {
        **run.meta,
        "epoch": progress.epoch,
        "rng": generator_state(progress.rng),
        "history": list(progress.history),
    }
    ts = progress.ts
    if run.ranks.root:
        save_checkpoint(path, params=ts.params, state=ts.state, opt_state=ts.opt_state, meta=meta)
    if run.ranks.comm is not None:
        run.ranks.comm.Barrier()  # every rank knows the checkpoint is written before going on
    return dataclasses.replace(progress, saved=f"{path} (epoch {progress.epoch})")


def write_reports(run: Run, progress: Progress) -> None:
    """Rewrite the metrics file and the plot the run asked for, from the whole history."""
    history = list(progress.history)
    if not run.ranks.root:
        return
    if run.outputs.metrics:
        write_metrics(run.outputs.metrics, history)
    if run.outputs.plot:
        plot_history(history, run.outputs.plot, title=f"{run.config.model} on {run.data.name}")


def next_epoch(run: Run, progress: Progress, say: Callable[[str], None]) -> Progress:
    """Train one epoch and evaluate it; the new progress has its metrics row."""
    epoch = progress.epoch + 1
    ts, train_loss, seconds = train_one_epoch(run, progress.ts, progress.rng, epoch)
    if run.ranks.comm is not None:
        ts = sync_train_state(ts, run.ranks.comm)
    row = epoch_row(run, epoch, train_loss, seconds, evaluate(run, ts, epoch))
    say(epoch_line(run, row))
    return dataclasses.replace(progress, ts=ts, epoch=epoch, history=(*progress.history, row))


# The story: set up, then train, evaluate and save each epoch


def run_training(args: argparse.Namespace, say: Callable[[str], None], ranks: Ranks) -> int:
    run, progress = set_up(args, say, ranks)
    say(describe(run, progress))
    epochs = run.config.epochs
    if progress.epoch >= epochs:
        say(f"nothing to do: the checkpoint already has {progress.epoch} of {epochs} epochs")
        return 0
    try:
        while progress.epoch < epochs:
            progress = next_epoch(run, progress, say)
            progress = save_checkpoint_of(run, progress)
            write_reports(run, progress)
    except fcnn.NonFiniteLossError as err:
        kept = (
            f"the last good checkpoint is {progress.saved}"
            if progress.saved
            else "no checkpoint was saved"
        )
        if ranks.root:  # every rank stops here at the same step; one says so
            print(f"error: {err}; {kept}", file=sys.stderr, flush=True)
        raise FailedOnEveryRankError(EXIT_FAILED) from None
    except KeyboardInterrupt:
        if not ranks.root:
            time.sleep(1.0)  # rank 0, interrupted too, normally says it and ends the job first
        if progress.saved:
            kept = f"resume from {progress.saved}"
        elif run.outputs.save:
            kept = (
                f"no checkpoint was saved yet (the first goes to {run.outputs.save} after an epoch)"
            )
        else:
            kept = "no checkpoint was saved (use --save)"
        # progress.epoch is the last epoch finished (or being saved): the one under way is next
        print(f"\ninterrupted during epoch {progress.epoch + 1}; {kept}", file=sys.stderr)
        return EXIT_INTERRUPTED
    seconds = sum(r["train_seconds"] for r in progress.history)
    if not ranks.root:
        return 0
    print(
        f"done: test accuracy {100 * progress.history[-1]['test_acc']:.2f}% after "
        f"{plural(epochs, 'epoch')} ({seconds:.1f}s of training)"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    tune_allocator()  # keep freed temporaries in the heap: see fcnn/runtime.py
    try:
        ranks = join_ranks()
    except MissingMPIError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_FAILED
    with abort_on_failure(ranks.comm):  # one rank's exception ends every rank
        try:
            code = run_on_this_rank(args, ranks)
        except FailedOnEveryRankError as stop:
            return stop.code  # every rank ends here: none is left waiting in a collective
        if code and ranks.comm is not None and ranks.size > 1:
            abort(ranks.comm, code)  # this rank alone failed: end the others too
    return code


class FailedOnEveryRankError(Exception):
    """Every rank stopped at the same point, and rank 0 said why: exit with ``code``."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def run_on_this_rank(args: argparse.Namespace, ranks: Ranks) -> int:
    say: Callable[[str], None] = print if ranks.root and not args.quiet else (lambda _: None)
    try:
        return run_training(args, say, ranks)
    except RanksDisagreeError as err:  # raised on every rank: rank 0 says it
        if ranks.root:
            print(f"error: {err}", file=sys.stderr, flush=True)
        raise FailedOnEveryRankError(EXIT_FAILED) from None
    except (UsageError, DatasetNotFoundError, CheckpointError, MissingExtraError, OSError) as err:
        where = "" if ranks.comm is None else f"rank {ranks.rank}: "
        print(f"error: {where}{err}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:  # before training started; run_training handles it during training
        print("\ninterrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
