"""One training run: its typed config, what it builds, its record, saving and resuming.

    config = resolve_config({"dataset": "mnist", "recipe": "fast"}, None)  # flags > recipe > preset
    model, desc = build_model(config, num_classes=10)   # the registry's, or --model module:function
    opt = make_optimizer(config, make_schedule(config, total_steps))
    loss = training_loss(config)                  # label-smoothed when the config says so
    record = RunRecord.from_meta(header.meta)     # a checkpoint's metadata, typed and checked
    run, progress = set_up(given_flags, Options(save="m.npz"), Ranks())   # before epoch 1

``RunConfig`` holds a run's settings; each field declares its default, its check and its
flag's help once (``fcnn.cli.add_flags`` makes the flags from them), and the same checks
refuse a bad flag and a tampered checkpoint. ``RunRecord`` is the one owner of a
checkpoint's metadata: train.py writes it (``to_meta``) and every reader (resuming,
``fcnn.models.load_trained`` and through it inference_example.py, ``fcnn.visualize``,
``fcnn.export`` and the server) reads it through ``from_meta``, which checks each field.
``set_up`` does everything before the first epoch and fails early, so that train.py's
loop only trains, evaluates, logs and saves (``save``). MPI stays in ``fcnn.parallel``:
this module holds a ``Ranks`` record, never a communicator.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import functools
import io
import json
import math
import os
import re
import socket
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeGuard

import numpy as np

from .atomic import atomic_write
from .cli import TRUST_CODE_HELP, CliError, check_new_file, flag_name
from .data import DATASETS, channel_stats, data_home, limit_train, load_dataset, normalize
from .data.augment import Augment, compose, random_flip, shift_augment
from .data.dataset import Dataset
from .io import (
    CheckpointError,
    CheckpointHeader,
    check_finite,
    generator_state,
    load_checkpoint,
    read_checkpoint_header,
    restore_generator,
    save_checkpoint,
)
from .layers.base import Array, Layer
from .layers.conv import _IMPLS as IMPLS
from .losses import Loss, label_smoothing, softmax_cross_entropy
from .model import init
from .models import MODELS, UntrustedCodeError, build_and_describe, model_from_description
from .ops.xp import DeviceUnavailableError, array_library, is_numpy
from .optim import Optimizer, Schedule, adam, adamw, constant, sgd
from .parallel import (
    Ranks,
    agree,
    agree_on,
    drop_last_batch,
    fingerprint,
    training_step,
    wait_for_root,
)
from .paths import PathError, check_writable_file
from .plots import figure_class, image_format, plot_history
from .schedules import cosine_decay, one_cycle
from .specs import SpecError, check_rebuildable, dump_spec, import_function, where_raised
from .training import Step, TrainState
from .tree import to_device, to_host, tree_leaves

try:
    import fcntl  # the claim on a checkpoint path (claim_path)

    _HAVE_FLOCK = True
except ImportError:  # Windows: the claim is then the marker's exclusive creation
    _HAVE_FLOCK = False

__all__ = [
    "DEFAULT_LR",
    "DEVICES",
    "IMAGE_SHAPES",
    "IMPLS",
    "METRICS",
    "OPTIMIZERS",
    "PRESETS",
    "RECIPES",
    "SCHEDULES",
    "Claim",
    "Data",
    "Options",
    "Outputs",
    "Progress",
    "Run",
    "RunConfig",
    "RunRecord",
    "check_setting",
    "claim_path",
    "claim_run_folder",
    "claimed",
    "load_data",
    "load_test_set",
    "make_optimizer",
    "make_schedule",
    "read_resume",
    "release",
    "resolve_config",
    "save",
    "set_up",
    "training_loss",
    "write_metrics",
]

OPTIMIZERS = ("sgd", "adam", "adamw")
DEVICES = ("cpu", "gpu")  # fcnn.array_library's names
SCHEDULES = ("constant", "cosine", "onecycle")
DEFAULT_LR = {"sgd": 0.05, "adam": 1e-3, "adamw": 1e-3}

# What each dataset changes in the defaults (a flag still wins over these).
PRESETS: dict[str, dict[str, Any]] = {
    "digits-sample": {"augment": 2},
    "mnist": {"epochs": 12, "augment": 2},
    "lines": {"model": "small", "optimizer": "sgd", "epochs": 3},
    "cifar10": {"epochs": 20, "augment": 4, "flip": 0.5},
}

# Each dataset's image shape (C, H, W), known before its data is loaded or downloaded.
IMAGE_SHAPES: dict[str, tuple[int, int, int]] = {
    "digits-sample": (1, 28, 28),
    "mnist": (1, 28, 28),
    "lines": (1, 28, 28),
    "cifar10": (3, 32, 32),
}

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


# --- the run's settings: one typed record, checked by one set of rules for flags and files --


Check = Callable[[str, Any], None]


def _int_at_least(low: int) -> Check:
    def check(name: str, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{flag_name(name)} must be an integer, got {value!r}")
        if value < low:
            raise ValueError(f"{flag_name(name)} must be >= {low}, got {value}")

    return check


def _number(name: str, value: Any) -> float:
    if not _is_number(value):
        raise ValueError(f"{flag_name(name)} must be a number, got {value!r}")
    return float(value)


def _finite_non_negative(name: str, value: Any) -> None:
    if not (math.isfinite(_number(name, value)) and value >= 0):
        raise ValueError(f"{flag_name(name)} must be a finite number >= 0, got {value}")


def _fraction(name: str, value: Any) -> None:
    if not 0 <= _number(name, value) <= 1:  # NaN fails the comparison too
        raise ValueError(f"{flag_name(name)} must be a number in [0, 1], got {value}")


def _one_of(choices: Sequence[str]) -> Check:
    def check(name: str, value: Any) -> None:
        if value not in choices:
            raise ValueError(f"{flag_name(name)} must be one of {list(choices)}, got {value!r}")

    return check


def _optional(check: Check) -> Check:
    def check_optional(name: str, value: Any) -> None:
        if value is not None:
            check(name, value)

    return check_optional


_OWN_MODEL = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")
_ARG_NAME = re.compile(r"[A-Za-z_]\w*")


def _model_name(name: str, value: Any) -> None:
    """A registry name or a user's ``module:function``."""
    if value in MODELS:
        return
    if not isinstance(value, str) or not _OWN_MODEL.fullmatch(value):
        raise ValueError(
            f"{flag_name(name)} must be one of {sorted(MODELS)} or MODULE:FUNCTION, got {value!r}"
        )


def _model_args(name: str, value: Any) -> None:
    """Keyword arguments: identifiers mapped to JSON scalars."""
    if not isinstance(value, Mapping) or not value:
        raise ValueError(f"--model-arg must be KEY=VALUE pairs, got {value!r}")
    for key, v in value.items():
        if not isinstance(key, str) or not _ARG_NAME.fullmatch(key):
            raise ValueError(f"--model-arg: {key!r} is not a Python argument name")
        if v is not None and not isinstance(v, bool | int | float | str):
            raise ValueError(f"--model-arg {key}: a number, string, true/false or null, got {v!r}")


def parse_model_arg(text: str) -> tuple[str, Any]:
    """``--model-arg``'s ``KEY=VALUE``: ``("width", 32)`` from ``"width=32"``; the value is a
    JSON scalar (number, ``true``, ``false``, ``null``, a quoted string) or else the text as
    it is. ``ValueError`` without ``=``, or for a key that is not an argument name."""
    key, sep, raw = text.partition("=")
    if not sep or not _ARG_NAME.fullmatch(key):
        raise ValueError(f"--model-arg must be KEY=VALUE with KEY an argument name, got {text!r}")
    try:
        value = json.loads(raw)
    except ValueError:
        return key, raw
    scalar = value is None or isinstance(value, bool | int | float | str)
    finite = not isinstance(value, float) or math.isfinite(value)
    return key, value if scalar and finite else raw


def _setting(
    default: Any,
    help: str,
    check: Check | None = None,
    *,
    choices: Sequence[str] = (),
    metavar: str | None = None,
    new: bool = False,
    flag: str | None = None,
) -> Any:
    """A ``RunConfig`` field: its default, its check (``choices``: one of them; a ``None``
    default: also ``None``) and its flag's help (``fcnn.cli.add_flags``). ``new``: added
    since fcnn 0.2.0, stored only when it is not the default (``RunConfig.as_dict``)."""
    check = _one_of(choices) if choices else check
    if check is None:
        raise TypeError("_setting: give a check or choices")
    meta: dict[str, Any] = {"check": _optional(check) if default is None else check, "help": help}
    if new:
        meta["new"] = True
    if flag:
        meta["flag"] = flag  # its flag's name, when not --field-name
    if choices:
        meta["choices"] = list(choices)
    if metavar:
        meta["metavar"] = metavar
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class RunConfig:
    """The hyperparameters a run is made of, checked on construction.

    Saved in every checkpoint (``as_dict``); on ``--resume`` they come back from it
    through the same checks (``from_saved``), and a flag that contradicts them is an
    error. ``lr`` is always a number here: not given, it is ``DEFAULT_LR[optimizer]``.
    """

    dataset: str = _setting(
        DATASETS[0], "what to train on (digits-sample: offline)", choices=DATASETS
    )
    model: str = _setting(
        "default",
        f"a model of fcnn.models ({', '.join(sorted(MODELS))}; lines: small), or your own as "
        "MODULE:FUNCTION: FUNCTION(num_classes, **model args) returning a fcnn Layer, imported "
        "from MODULE.py in the current folder or on the Python path (docs/own_model.md)",
        _model_name,
        metavar="NAME",
    )
    model_args: dict[str, Any] | None = _setting(  # noqa: RUF009 (a field(), not a dict)
        None,
        "a keyword argument for your own --model MODULE:FUNCTION, e.g. width=32 (repeat it for "
        "more; values are read as JSON numbers, true/false/null or quoted strings, else kept "
        "as text)",
        _model_args,
        metavar="KEY=VALUE",
        new=True,
        flag="--model-arg",
    )
    epochs: int = _setting(
        10, "total epochs, counting resumed ones (mnist 12, lines 3, cifar10 20)", _int_at_least(1)
    )
    optimizer: str = _setting("adam", "the optimizer (lines: sgd)", choices=OPTIMIZERS)
    lr: float = _setting(
        DEFAULT_LR["adam"],
        "peak learning rate (default 1e-3 for adam/adamw, 0.05 for sgd)",
        _finite_non_negative,
    )
    momentum: float = _setting(0.9, "sgd only (Nesterov off)", _finite_non_negative)
    weight_decay: float = _setting(
        0.0, "L2 for sgd/adam, decoupled for adamw; weights only", _finite_non_negative
    )
    schedule: str = _setting(
        "cosine",
        "the learning rate over all epochs; onecycle: linearly up to --lr in the first "
        "quarter of the steps, then down to 0",
        choices=SCHEDULES,
    )
    batch_size: int = _setting(64, "images per step", _int_at_least(1))
    seed: int = _setting(0, "seeds data order, init and subsets", _int_at_least(0))
    limit_train: int | None = _setting(
        None, "train on a random N-sample subset", _int_at_least(1), metavar="N"
    )
    impl: str = _setting("im2col", "convolution implementation", choices=IMPLS)
    augment: int = _setting(
        0,
        "shift training images by up to PIXELS each way, the border filled with the "
        "normalised black: a random crop of the image padded by PIXELS (digits-sample, "
        "mnist: 2; cifar10: 4)",
        _int_at_least(0),
        metavar="PIXELS",
    )
    flip: float = _setting(
        0.0,
        "mirror each training image left to right with probability P (cifar10: 0.5; not for "
        "digits, whose mirror images are not digits)",
        _fraction,
        metavar="P",
        new=True,
    )
    label_smoothing: float = _setting(
        0.0, "train against (1 - EPS) * one-hot + EPS / classes", _fraction, metavar="EPS"
    )
    recipe: str | None = _setting(
        None,
        "a tuned set of settings that other flags override; fast: model fast, adam lr 4e-3 "
        "onecycle, batch 128, 3 epochs, shifts of 1 pixel, label smoothing 0.1 (about 99.1%% "
        "on mnist)",
        choices=sorted(RECIPES),
    )

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            f.metadata["check"](f.name, getattr(self, f.name))
        if self.model_args is not None and self.model in MODELS:
            raise ValueError(
                f"--model-arg is for a model of your own (--model MODULE:FUNCTION); "
                f"{self.model!r} of fcnn.models takes none"
            )
        _, h, w = IMAGE_SHAPES[self.dataset]
        if self.augment >= min(h, w):  # a shift as wide as the image leaves nothing of it
            raise ValueError(
                f"--augment must be < {min(h, w)} for {self.dataset} ({h}x{w} images), "
                f"got {self.augment}"
            )

    def as_dict(self) -> dict[str, Any]:
        """The settings as JSON values. A setting added since fcnn 0.2.0 is left out while
        it has its default, so a run that uses none of them is stored as 0.2.0 stored it."""
        return {
            k: v
            for k, v in dataclasses.asdict(self).items()
            if not (_FIELDS[k].metadata.get("new") and v == _FIELDS[k].default)
        }

    @property
    def own_model(self) -> bool:
        """Whether ``model`` is a user's ``module:function`` rather than a registry name."""
        return self.model not in MODELS

    @classmethod
    def from_saved(cls, saved: Mapping[str, Any]) -> RunConfig:
        """The config a checkpoint stored; keys added since then keep their defaults.

        ``ValueError`` naming the key for an unknown key or a value the flag would refuse.
        """
        unknown = sorted(set(saved) - set(_FIELDS))
        if unknown:
            raise ValueError(f"unknown settings {unknown}")
        return cls(**saved)


_FIELDS = {f.name: f for f in dataclasses.fields(RunConfig)}


def check_setting(name: str, value: Any) -> None:
    """``ValueError`` (naming the flag) unless ``value`` is allowed for setting ``name``."""
    _FIELDS[name].metadata["check"](name, value)


def resolve_config(given: Mapping[str, Any], saved: RunConfig | None) -> RunConfig:
    """The run's settings from the flags ``given`` (setting name -> value): flags over the
    recipe over the dataset's preset over the defaults; or the checkpoint's on resume,
    where only ``epochs`` may change (a run can be extended), else ``CliError``."""
    if saved is None:
        preset = PRESETS[given.get("dataset", RunConfig.dataset)]
        recipe = RECIPES[given["recipe"]] if given.get("recipe") else {}
        settings = {**preset, **recipe, **given}
        if "impl" in given and settings.get("model", RunConfig.model) not in MODELS:
            raise CliError(
                "--impl chooses the convolutions of fcnn's registry models; give your own "
                "model's function what it takes with --model-arg"
            )
        if "lr" not in settings:
            settings["lr"] = DEFAULT_LR[settings.get("optimizer", RunConfig.optimizer)]
        try:
            return RunConfig(**settings)
        except ValueError as err:  # settings that do not go together (each one was checked)
            raise CliError(str(err)) from None
    for name, value in given.items():
        if name != "epochs" and value != getattr(saved, name):
            raise CliError(
                f"{_FIELDS[name].metadata.get('flag', flag_name(name))} {value} contradicts "
                "the checkpoint being resumed "
                f"({getattr(saved, name)}); leave it out to continue the same run"
            )
    return dataclasses.replace(saved, epochs=given.get("epochs", saved.epochs))


# --- what a config builds ------------------------------------------------------------------


def make_schedule(config: RunConfig, total_steps: int) -> Schedule:
    """The learning rate per step: cosine from ``lr`` to 0 over the run, one cycle (up to
    ``lr`` in the first quarter, then down to 0), or constant."""
    if config.schedule == "cosine":
        return cosine_decay(config.lr, max(total_steps, 1))
    if config.schedule == "onecycle":
        return one_cycle(config.lr, max(total_steps, 1), warmup_fraction=0.25)
    return constant(config.lr)


def make_optimizer(config: RunConfig, schedule: Schedule) -> Optimizer:
    """The optimizer the config names, following ``schedule``."""
    if config.optimizer == "sgd":
        return sgd(schedule, momentum=config.momentum, weight_decay=config.weight_decay)
    if config.optimizer == "adam":
        return adam(schedule, weight_decay=config.weight_decay)
    return adamw(schedule, weight_decay=config.weight_decay)


def make_augment(config: RunConfig, mean: Array, std: Array) -> Augment | None:
    """The training images' augmentation, ``augment(x, rng) -> x`` for ``fcnn.train_epoch``
    on images normalised with ``mean, std: (C,)``: shifts of up to ``config.augment`` pixels
    (a random crop of the image padded by that many pixels) whose border is the normalised
    black, by construction (``shift_augment``), then left-right mirroring with probability
    ``config.flip``; ``None`` for neither."""
    steps: list[Augment] = []
    if config.augment:
        steps.append(shift_augment(config.augment, mean, std))
    if config.flip:
        steps.append(functools.partial(random_flip, p=config.flip))
    return compose(*steps) if steps else None


def training_loss(config: RunConfig) -> Loss:
    """Softmax cross-entropy, label-smoothed when the config says so (test loss: plain)."""
    if config.label_smoothing:
        return label_smoothing(config.label_smoothing)
    return softmax_cross_entropy


def has_layer(spec: Mapping[str, Any], kind: str) -> bool:
    """Whether a model ``spec`` (see ``Layer.spec``) holds, at any depth (a Sequential's
    layers, a Residual's block and shortcut, a Concat's branches), a layer whose type
    names ``kind`` (``"BatchNorm"`` finds BatchNorm1d and BatchNorm2d, ``"Dropout"`` finds
    Dropout and SpatialDropout2d)."""
    children = [*spec.get("layers", []), *spec.get("branches", [])]
    children += [c for c in (spec.get("block"), spec.get("shortcut")) if c is not None]
    return kind in str(spec.get("type", "")) or any(has_layer(c, kind) for c in children)


# --- the run record: the one owner of a checkpoint's metadata ------------------------------

# Keys every trained-model checkpoint has, and those a resumable one has besides.
_TRAINED_KEYS = ("model", "input_shape", "classes", "normalization")
_RESUME_KEYS = ("config", "epoch", "rng")


def _shape3(value: Any) -> tuple[int, int, int]:
    ints = isinstance(value, list) and all(type(v) is int and v >= 1 for v in value)
    if not ints or len(value) != 3:
        raise ValueError(f"input_shape must be a list of 3 positive ints, got {value!r}")
    return (value[0], value[1], value[2])


def _statistics(norm: Any, channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``normalization``'s ``(mean, std)``: ``channels`` numbers each, finite in float32 (the
    dtype images are normalised in), stds > 0, and pixels in [0, 1] normalised to finite
    values; ``ValueError`` naming the array and the entry."""
    if not isinstance(norm, Mapping) or not {"mean", "std"} <= set(norm):
        raise ValueError(f"normalization must be an object with mean and std, got {norm!r}")
    stats = {}
    for key in ("mean", "std"):
        value = norm[key]
        numbers = isinstance(value, list) and all(_is_number(v) for v in value)
        if not numbers or len(value) != channels:
            raise ValueError(
                f"normalization {key} must be a list of {plural(channels, 'number')} (one per "
                f"channel of input_shape), got {value!r}"
            )
        with np.errstate(over="ignore"):  # a float64 past float32's range becomes inf: refused
            stats[key] = np.asarray(value, dtype=np.float64).astype(np.float32)
    mean, std = stats["mean"], stats["std"]
    with np.errstate(all="ignore"):
        low, high = (0 - mean) / std, (1 - mean) / std  # where pixels 0 and 1 go
    for c in range(channels):
        if not np.isfinite(mean[c]):
            raise ValueError(
                f"normalization mean[{c}] must be a finite number (in float32), got "
                f"{norm['mean'][c]!r}"
            )
        if not (np.isfinite(std[c]) and std[c] > 0):
            raise ValueError(
                f"normalization std[{c}] must be a finite number > 0 (in float32), got "
                f"{norm['std'][c]!r}"
            )
        if not (np.isfinite(low[c]) and np.isfinite(high[c])):
            raise ValueError(
                f"normalization std[{c}] {norm['std'][c]!r} is too small for mean[{c}] "
                f"{norm['mean'][c]!r}: normalised pixels overflow float32"
            )
    return tuple(float(v) for v in norm["mean"]), tuple(float(v) for v in norm["std"])


def plural(n: int, noun: str) -> str:
    """``1 epoch``, ``3 epochs``."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _is_number(value: Any) -> TypeGuard[int | float]:
    """A JSON number: an int or a float, not a bool."""
    return isinstance(value, int | float) and not isinstance(value, bool)


# What each JSON type is called in messages.
_JSON_WORDS: dict[type, str] = {
    str: "a string",
    int: "an integer",
    Mapping: "an object",
    list: "a list",
}


def _optional_of(meta: Mapping[str, Any], key: str, kind: type) -> Any:
    """``meta[key]`` if a ``kind`` (not a bool), ``None`` if absent; else ``ValueError``."""
    value = meta.get(key)
    if value is not None and (isinstance(value, bool) or not isinstance(value, kind)):
        raise ValueError(f"{key} must be {_JSON_WORDS[kind]}, got {value!r}")
    return value


@dataclass(frozen=True)
class RunRecord:
    """What a checkpoint says about its model and its run, typed; its metadata's one owner.

    ``model``: the stored model: ``name`` (a label: the registry name, ``module:function``
    or ``save_trained``'s), ``num_classes``, ``impl`` (registry models) and ``spec``, from
    which every reader rebuilds it (``fcnn.models.model_from_description``);
    ``input_shape``: per sample ``(C, H, W)``; ``classes[k]`` names output ``k``; ``mean``,
    ``std``: the per-channel normalisation ``(C,)`` training used; ``dataset``: its name;
    ``data_dir``: the folder its files were read from (``None`` for embedded or generated
    data); ``config``: the run's settings; ``epoch``: epochs done; ``rng``: the training
    generator's state; ``history``: one metrics row per epoch. The last four are ``None`` /
    empty in a checkpoint written by other means than train.py (``fcnn.save_trained``: it
    then loads but cannot resume).
    """

    model: Mapping[str, Any]
    input_shape: tuple[int, int, int]
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    dataset: str | None = None
    data_dir: str | None = None
    config: RunConfig | None = None
    epoch: int | None = None
    rng: Mapping[str, Any] | None = None
    history: tuple[Mapping[str, Any], ...] = ()

    def to_meta(self) -> dict[str, Any]:
        """The checkpoint's ``meta`` (the keys of fcnn 0.2.0, and ``data_dir``); fields that
        are ``None`` are left out."""
        meta = {
            "model": dict(self.model),
            "input_shape": list(self.input_shape),
            "classes": list(self.classes),
            "dataset": self.dataset,
            "data_dir": self.data_dir,
            "normalization": {"mean": list(self.mean), "std": list(self.std)},
            "config": None if self.config is None else self.config.as_dict(),
            "epoch": self.epoch,
            "rng": None if self.rng is None else dict(self.rng),
            "history": [dict(row) for row in self.history],
        }
        return {k: v for k, v in meta.items() if v is not None}

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any], *, resume: bool = False) -> RunRecord:
        """The record a checkpoint's ``meta`` holds; ``ValueError`` naming the field that is
        missing or malformed, each checked as its flag would be. ``resume``: also require
        what resuming needs (config, epoch, rng, a history of one row per epoch) and a
        config and generator state this version can read (otherwise, for inference, which
        needs neither, they are left out). The fields must fit together (``_check_fits``)."""
        required = _TRAINED_KEYS + (_RESUME_KEYS if resume else ())
        missing = [key for key in required if meta.get(key) is None]
        if missing:
            raise ValueError(f"missing {missing}")
        if not isinstance(meta["model"], Mapping):
            raise ValueError(f"model must be an object, got {meta['model']!r}")
        shape = _shape3(meta["input_shape"])
        classes = meta["classes"]
        if not (isinstance(classes, list) and classes and all(type(c) is str for c in classes)):
            raise ValueError(f"classes must be a non-empty list of strings, got {classes!r}")
        mean, std = _statistics(meta["normalization"], shape[0])
        config = _optional_of(meta, "config", Mapping)
        epoch = _optional_of(meta, "epoch", int)
        if epoch is not None and epoch < 0:
            raise ValueError(f"epoch must be an integer >= 0, got {epoch}")
        record = cls(
            model=dict(meta["model"]),
            input_shape=shape,
            classes=tuple(classes),
            mean=mean,
            std=std,
            dataset=_optional_of(meta, "dataset", str),
            data_dir=_optional_of(meta, "data_dir", str),
            config=None if config is None else _stored_config(config, resume),
            epoch=epoch,
            rng=_stored_rng(_optional_of(meta, "rng", Mapping), resume),
            history=_history(_optional_of(meta, "history", list) or []),
        )
        _check_fits(record, resume)
        return record

    def normalization(self) -> tuple[Array, Array]:
        """``(mean, std)`` as float32 arrays ``(C,)``."""
        return np.asarray(self.mean, np.float32), np.asarray(self.std, np.float32)

    @property
    def test_accuracy(self) -> float | None:
        """The last epoch's test accuracy in [0, 1], or ``None`` without one."""
        acc = self.history[-1].get("test_acc") if self.history else None
        if _is_number(acc) and 0.0 <= acc <= 1.0:
            return float(acc)
        return None


# The metrics train.py writes for every epoch: a history row, a line of the metrics file.
METRICS = (
    "epoch",
    "train_loss",
    "test_loss",
    "test_acc",
    "lr",
    "train_seconds",
    "samples_per_second",
)


def _history(rows: list[Any]) -> tuple[dict[str, Any], ...]:
    """The history's rows: objects of finite numbers (one per epoch, for a resumable run:
    ``_check_fits``)."""
    for i, row in enumerate(rows, 1):
        finite = isinstance(row, Mapping) and all(
            _is_number(v) and math.isfinite(v) for v in row.values()
        )
        if not finite:
            raise ValueError(f"history row {i} must be an object of finite numbers, got {row!r}")
    return tuple(dict(row) for row in rows)


def _stored_rng(state: Mapping[str, Any] | None, resume: bool) -> dict[str, Any] | None:
    """The training generator's stored state, if ``restore_generator`` can restore it; one
    it cannot refuses a resume but is left out for inference, which needs none of it."""
    if state is None:
        return None
    try:
        restore_generator(state)
    except ValueError as err:  # CheckpointError included
        if not resume:
            return None
        raise ValueError(f"rng is not a generator state: {err}") from None
    return dict(state)


def _check_fits(record: RunRecord, resume: bool) -> None:
    """``ValueError`` unless the record's fields fit together: its dataset is its config's;
    and for a resumable record, its ``input_shape`` is its dataset's images', its epoch is
    within the run's epochs and its history has one row of ``METRICS`` per epoch done, in
    order. (For inference a model may take other inputs than its dataset's: reading that
    dataset's test set says so, ``load_test_set``.)"""
    config, epoch, shape = record.config, record.epoch, record.input_shape
    if config is not None and record.dataset != config.dataset:
        raise ValueError(f"dataset {record.dataset!r} is not its config's {config.dataset!r}")
    if not resume:
        return
    if config is None or epoch is None:  # from_meta refuses such a record first
        raise ValueError("missing config or epoch")
    if shape != IMAGE_SHAPES[config.dataset]:
        raise ValueError(
            f"input_shape {list(shape)} is not the shape of {config.dataset} images, "
            f"{list(IMAGE_SHAPES[config.dataset])}"
        )
    if epoch > config.epochs:
        raise ValueError(f"epoch {epoch} is past the run's {plural(config.epochs, 'epoch')}")
    if len(record.history) != epoch:
        rows = plural(len(record.history), "row")
        raise ValueError(f"history has {rows} for {plural(epoch, 'epoch')} done")
    for i, row in enumerate(record.history, 1):
        if sorted(row) != sorted(METRICS) or row["epoch"] != i or type(row["epoch"]) is not int:
            raise ValueError(f"history row {i} must hold {list(METRICS)} for epoch {i}, got {row}")


def _stored_config(saved: Mapping[str, Any], resume: bool) -> RunConfig | None:
    """The stored config; one this version cannot read (a newer version's settings, say)
    refuses a resume but is left out for inference, which needs none of it."""
    try:
        return RunConfig.from_saved(saved)
    except (TypeError, ValueError) as err:
        if not resume:
            return None
        raise ValueError(f"its stored config: {err}") from None


# --- data ----------------------------------------------------------------------------------

# The datasets read from files in a folder (--data-dir); the others are embedded or generated.
_FILE_DATASETS = ("mnist", "cifar10")


@dataclass(frozen=True)
class Data:
    """The dataset, normalised with the per-channel ``mean`` and ``std`` of its training images."""

    name: str
    classes: tuple[str, ...]
    x_train: Array
    y_train: Array
    x_test: Array
    y_test: Array
    mean: Array
    std: Array
    folder: str | None  # where its files were read from; None for embedded or generated data


def load_data(config: RunConfig, data_dir: str | None, stats: tuple[Array, Array] | None) -> Data:
    """The dataset ``config`` names, normalised with its own statistics (or ``stats``, a
    resumed run's); ``CliError`` for a bad folder or a corrupt file."""
    if data_dir and os.path.exists(data_dir) and not os.path.isdir(data_dir):
        raise CliError(f"--data-dir {data_dir} is a file; give the folder that holds the data")
    try:
        ds = load_dataset(config.dataset, data_dir, seed=config.seed)
    except ValueError as err:  # a corrupt or truncated file; missing ones are DatasetNotFoundError
        raise CliError(str(err)) from None
    ds = limit_train(ds, config.limit_train, config.seed)
    mean, std = channel_stats(ds.x_train) if stats is None else stats
    folder = os.path.abspath(data_home(data_dir)) if config.dataset in _FILE_DATASETS else None
    return Data(
        name=ds.name,
        classes=tuple(ds.classes),
        x_train=normalize(ds.x_train, mean, std),
        y_train=ds.y_train,
        x_test=normalize(ds.x_test, mean, std),
        y_test=ds.y_test,
        mean=mean,
        std=std,
        folder=folder,
    )


def load_test_set(record: RunRecord, data_dir: str | None = None, seed: int = 0) -> Dataset:
    """The dataset a trained model's ``record`` names, raw (in [0, 1]), read from
    ``data_dir`` or else the folder the run recorded; generated data (lines) with the run's
    seed, else ``seed``. ``CliError`` when it cannot be loaded or its images do not fit."""
    if record.dataset is None:
        raise CliError(
            "the checkpoint does not name its dataset (fcnn.save_trained records it with "
            "dataset=...)"
        )
    seed = record.config.seed if record.config is not None else seed
    try:
        ds = load_dataset(record.dataset, data_dir or record.data_dir, seed=seed)
    except (OSError, ValueError) as err:
        raise CliError(f"cannot load the {record.dataset!r} test set: {err}") from None
    if ds.input_shape != record.input_shape:
        raise CliError(
            f"the {record.dataset} images are {ds.input_shape}; the checkpoint wants "
            f"{record.input_shape}"
        )
    return ds


# --- where a run writes --------------------------------------------------------------------

RUNS_FOLDER = "runs"
CHECKPOINT_FILE = "model.npz"
METRICS_FILE = "metrics.csv"


def _flag(help: str, **more: Any) -> Any:
    return field(default=None, metadata={"help": help, **more})


@dataclass(frozen=True)
class Options:
    """train.py's flags that are not the run's settings: where it reads, writes and runs
    (``device``: a checkpoint resumes on either, so it is no setting of the run)."""

    data_dir: str | None = _flag(
        "mnist (cifar10) files are looked for in DIR/mnist (DIR/cifar10), then in DIR, and "
        "downloaded into DIR/mnist (DIR/cifar10); on --resume, by default the folder the "
        "run recorded",
        metavar="DIR",
    )
    save: str | None = _flag(
        f"the checkpoint, written after every epoch (atomically); default "
        f"{RUNS_FOLDER}/DATASET-N/{CHECKPOINT_FILE}, a new numbered folder for every run",
        metavar="PATH",
    )
    no_save: bool = field(default=False, metadata={"help": "write no checkpoint"})
    overwrite: bool = field(
        default=False,
        metadata={"help": "let --save, --metrics and --plot replace existing files"},
    )
    resume: str | None = _flag(
        "continue a run from its checkpoint (exactly, unless --epochs changes the total: "
        "the schedule is then recomputed over the new total)",
        metavar="PATH",
    )
    metrics: str | None = _flag(
        f"per-epoch metrics: .csv, else JSON lines (default {METRICS_FILE} beside a "
        "default checkpoint)",
        metavar="PATH",
    )
    plot: str | None = _flag("PNG of loss and accuracy curves (needs matplotlib)", metavar="PATH")
    quiet: bool = field(default=False, metadata={"help": "no progress bar, no per-epoch lines"})
    device: str = field(
        default="cpu",
        metadata={
            "help": "where to train and evaluate: gpu needs CuPy and a CUDA GPU (pip install "
            "'fcnn[gpu-cuda12]' or 'fcnn[gpu-cuda13]'); the data and the model are uploaded "
            "once, checkpoints hold NumPy arrays, so a run resumes on either device",
            "choices": list(DEVICES),
        },
    )
    trust_code: bool = field(default=False, metadata={"help": TRUST_CODE_HELP})

    def __post_init__(self) -> None:
        if self.no_save and self.save:
            raise ValueError("give --save PATH or --no-save, not both")
        if self.device not in DEVICES:
            raise ValueError(f"--device must be one of {list(DEVICES)}, got {self.device!r}")


@dataclass(frozen=True)
class Outputs:
    """Where the run writes: a checkpoint after every epoch, metrics, a plot (each optional)."""

    save: str | None
    metrics: str | None
    plot: str | None


def claim_run_folder(dataset: str, root: str = RUNS_FOLDER) -> str:
    """A new folder ``root/DATASET-N`` (the first free ``N`` from 1), created here, so that
    no run ever writes into another's; ``CliError`` when ``root`` cannot hold it."""
    try:
        os.makedirs(root, exist_ok=True)
        n = 1 + sum(1 for name in os.listdir(root) if name.startswith(f"{dataset}-"))
        while True:
            folder = os.path.join(root, f"{dataset}-{n}")
            try:
                os.mkdir(folder)  # atomic: two runs never claim the same folder
                return folder
            except FileExistsError:
                n += 1
    except OSError as err:
        raise CliError(f"cannot make a run folder in {root}: {err.strerror or err}") from None


# --- one run at a time writes a checkpoint --------------------------------------------------


@dataclass(frozen=True)
class Claim:
    """A run's hold on the checkpoint it writes (``claim_path``): ``marker`` is the file
    ``.NAME.lock`` beside it, and ``fd`` the open file that holds the lock on it."""

    path: str
    marker: str
    fd: int


def claim_path(path: str, flag: str = "--save") -> Claim:
    """Make sure no other run writes ``path`` while this one does: create (or reuse) the
    marker ``.NAME.lock`` beside it and lock it exclusively (``flock``) until ``release``.
    The operating system drops the lock when a process ends, however it ends, so a marker
    that a killed run left blocks nothing. Taken before any work; ``CliError`` naming the
    run that holds it (``flag``: the option that named ``path``, for the message).
    Without ``fcntl`` (Windows) the claim is the marker's exclusive creation, and a killed
    run's marker must be removed by hand: the message says so."""
    try:
        check_writable_file(path, make_folder=True)
    except PathError as err:
        raise CliError(str(err)) from None
    marker = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.lock")
    fd, holder = _lock_marker(marker)
    if fd is None:
        stale = "" if _HAVE_FLOCK else f"; if no run is writing it, remove {marker}"
        raise CliError(
            f"{flag} {path} is being written by another run ({holder or 'pid unknown'}); wait "
            f"for it to finish, or choose another path{stale}"
        )
    os.ftruncate(fd, 0)
    os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
    return Claim(path, marker, fd)


def _lock_marker(marker: str) -> tuple[int | None, str]:
    """``(fd, "")``: the marker file, open and locked by this process; or ``(None, who)``:
    another run holds it, and what its marker says about that run."""
    while True:
        try:
            flags = os.O_RDWR | os.O_CREAT | (0 if _HAVE_FLOCK else os.O_EXCL)
            fd = os.open(marker, flags, 0o644)
        except FileExistsError:  # no flock: the marker itself is the claim
            with open(marker, "rb") as f:
                return None, f.read(200).decode(errors="replace").strip()
        if not _HAVE_FLOCK:
            return fd, ""
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # BlockingIOError: another open file holds the lock
            holder = os.read(fd, 200).decode(errors="replace").strip()
            os.close(fd)
            return None, holder
        with contextlib.suppress(FileNotFoundError):
            if os.path.samestat(os.fstat(fd), os.stat(marker)):
                return fd, ""
        os.close(fd)  # a run that finished removed this marker since we opened it: again


def release(claim: Claim | None) -> None:
    """Let ``claim`` go: remove its marker, then unlock (closing the file)."""
    if claim is None:
        return
    with contextlib.suppress(OSError):
        os.unlink(claim.marker)
    os.close(claim.fd)


@contextlib.contextmanager
def claimed(options: Options, ranks: Ranks) -> Iterator[Claim | None]:
    """Hold the checkpoint this run writes (``--save``, or the one it resumes) for the
    run's life: rank 0 claims it (``claim_path``) before any work and lets it go however
    the run ends. A new run folder needs no claim: it is this run's alone
    (``claim_run_folder``)."""
    path = None if options.no_save or not ranks.root else options.save or options.resume
    claim = None if path is None else claim_path(path, "--save" if options.save else "--resume")
    try:
        yield claim
    finally:
        release(claim)


def check_outputs(outputs: Outputs, options: Options) -> None:
    """Before any training: every output can be written, none replaces a file without
    ``--overwrite`` (on ``--resume``, the run's own checkpoint, metrics and plot may be
    rewritten), and ``--plot`` can be drawn."""
    named = (("--save", outputs.save), ("--metrics", outputs.metrics), ("--plot", outputs.plot))
    for flag, path in named:
        if path is None:
            continue
        try:
            check_writable_file(path, make_folder=True)
        except PathError as err:
            raise CliError(str(err)) from None
        own = options.resume is not None and (flag != "--save" or path == options.resume)
        if not own:
            hint = f"continue that run with --resume {path}, choose another path"
            check_new_file(path, options.overwrite, flag, hint if flag == "--save" else "")
    if outputs.plot:
        try:
            image_format(outputs.plot)  # an extension matplotlib writes, e.g. .png, .svg
        except PathError as err:
            raise CliError(str(err)) from None
        figure_class()  # MissingExtraError before training when matplotlib is missing


def _outputs(options: Options, dataset: str, ranks: Ranks) -> Outputs:
    """The run's outputs; without ``--save`` (or ``--no-save``) a new run folder, claimed by
    rank 0 alone (the others only need to know that rank 0 saves). A resumed run folder's
    checkpoint keeps its metrics file up to date."""
    save = options.save or options.resume
    if save or options.no_save:
        metrics = options.metrics
        if (
            metrics is None
            and options.resume
            and os.path.basename(options.resume) == CHECKPOINT_FILE
        ):
            beside = os.path.join(os.path.dirname(options.resume), METRICS_FILE)
            metrics = beside if os.path.isfile(beside) else None
        return Outputs(None if options.no_save else save, metrics, options.plot)
    folder = claim_run_folder(dataset) if ranks.root else os.path.join(RUNS_FOLDER, dataset)
    metrics = options.metrics or os.path.join(folder, METRICS_FILE)
    return Outputs(os.path.join(folder, CHECKPOINT_FILE), metrics, options.plot)


# --- checkpoints: resuming, saving, metrics ------------------------------------------------


def read_resume(path: str) -> tuple[CheckpointHeader, RunRecord]:
    """A checkpoint written by train.py and its record, or ``CheckpointError``."""
    header = read_checkpoint_header(path)  # no array is read before the model is known
    try:
        record = RunRecord.from_meta(header.meta, resume=True)
    except ValueError as err:
        raise CheckpointError(
            f"{path}: cannot resume: {err}; only train.py's checkpoints resume (one written by "
            "fcnn.save_trained holds no run to continue: train your own model with train.py "
            "--model MODULE:FUNCTION)"
        ) from None
    if not any(key.startswith("opt_state/") for key in header.members):
        raise CheckpointError(f"{path}: has no optimizer state to resume from")
    return header, record


def _resumed_model(
    path: str, record: RunRecord, trust_code: bool
) -> tuple[Layer, Mapping[str, Any]]:
    """The checkpoint's model rebuilt from its stored spec, as it was saved (whatever the
    registry or the user's function builds now), and its description as stored;
    ``CheckpointError`` when it cannot be rebuilt (``UntrustedCodeError`` when it needs a
    user's code imported and ``trust_code`` is false).

    Called before the dataset is loaded (or downloaded), so a checkpoint that cannot be
    resumed is refused at once."""
    k = record.model.get("num_classes")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise CheckpointError(
            f"{path}: cannot resume: num_classes must be a positive int, got {k!r}"
        )
    try:
        return model_from_description(record.model, trust_code=trust_code), record.model
    except UntrustedCodeError as err:
        raise UntrustedCodeError(f"{path}: cannot resume: {err}", err.builder) from None
    except ValueError as err:
        raise CheckpointError(f"{path}: cannot resume: {err}") from None


def build_model(config: RunConfig, num_classes: int) -> tuple[Layer, dict[str, Any]]:
    """The model ``config`` names, with ``num_classes`` outputs, and the description a
    checkpoint stores for it (``name``, ``num_classes``, ``impl`` for a registry model,
    ``spec`` by ``fcnn.dump_spec``).

    ``config.model`` is a registry name (``fcnn.models.build_model``) or a user's
    ``module:function``, imported from the current folder or the Python path and called as
    ``function(num_classes, **config.model_args)``; it must return a ``Layer`` that
    ``fcnn.from_spec`` can rebuild in another program (``fcnn.specs.check_rebuildable``),
    so that its checkpoints load. ``CliError`` with one line for anything that fails.
    """
    if not config.own_model:
        try:
            return build_and_describe(config.model, num_classes, config.impl)
        except ValueError as err:
            raise CliError(f"model {config.model!r}: {err}") from None
    model = _call_own_model(config.model, num_classes, config.model_args or {})
    try:
        check_rebuildable(model)
    except SpecError as err:
        raise CliError(
            f"--model {config.model}: its checkpoints could not be loaded: {err} "
            "(docs/own_model.md)"
        ) from None
    desc = {"name": config.model, "num_classes": num_classes, "spec": dump_spec(model)}
    return model, desc


def _call_own_model(path: str, num_classes: int, kwargs: Mapping[str, Any]) -> Layer:
    """``function(num_classes, **kwargs)`` for ``path`` = ``module:function``: a ``Layer``,
    or ``CliError`` saying what went wrong (not found, raised, returned something else)."""
    try:
        function = import_function(path)
    except ValueError as err:
        raise CliError(f"--model {path}: {err}") from None
    call = ", ".join([str(num_classes), *(f"{k}={v!r}" for k, v in kwargs.items())])
    try:
        model = function(num_classes, **kwargs)
    except Exception as err:  # the user's code: one line with what it raised and where
        raise CliError(
            f"--model {path}: {path}({call}) raised {type(err).__name__}: {err}{where_raised(err)}"
        ) from None
    if not isinstance(model, Layer):
        raise CliError(
            f"--model {path}: {path}({call}) returned a {type(model).__name__}, not a fcnn "
            "Layer (build one with fcnn.sequential(...))"
        )
    return model


@dataclass(frozen=True)
class Progress:
    """Where training stands after ``epoch`` epochs; ``rng`` shuffles and augments."""

    ts: TrainState
    rng: np.random.Generator
    epoch: int
    history: tuple[dict[str, Any], ...]
    saved: str | None  # the last checkpoint written (or resumed from), for messages


def _resume_progress(path: str, record: RunRecord, fresh: Progress) -> Progress:
    """The checkpoint's weights, optimizer state, generator and history. Its arrays are
    compared with what the model and optimizer build now (``fresh``) by their declared
    shapes before any is decompressed, so a file cannot inflate past the model's size."""
    ts = fresh.ts
    expected = {"params": ts.params, "state": ts.state, "opt_state": ts.opt_state}
    ckpt = load_checkpoint(path, expected=expected)
    check_finite(
        {"params": ckpt.params, "state": ckpt.state, "opt_state": ckpt.opt_state},
        f"{path}: cannot resume",
    )
    if record.rng is None or record.epoch is None:  # read_resume refuses such a record
        raise CheckpointError(f"{path}: cannot resume: no epoch or generator state")
    return Progress(
        ts=TrainState(ckpt.params, ckpt.state, ckpt.opt_state),
        rng=restore_generator(record.rng),
        epoch=record.epoch,
        history=tuple(dict(row) for row in record.history),
        saved=f"{path} (epoch {record.epoch})",
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


# --- setting up: everything before the first epoch, failing early --------------------------


@dataclass(frozen=True)
class Run:
    """Everything fixed once the run is set up; epochs read it and never change it."""

    config: RunConfig
    outputs: Outputs
    data: Data
    model: Layer
    step: Step
    schedule: Schedule
    steps_per_epoch: int
    drop_last: bool
    augment: Augment | None
    record: RunRecord  # what every checkpoint says, besides its epoch, rng and history
    quiet: bool
    ranks: Ranks
    device: str = ""  # where it trains, in words; "" on the CPU


def save(run: Run, progress: Progress) -> Progress:
    """After an epoch: write the checkpoint (atomically, rank 0), then the metrics and the
    plot from the whole history; the new progress notes the checkpoint in ``saved``."""
    path, history = run.outputs.save, progress.history
    if run.ranks.root and path:
        record = dataclasses.replace(
            run.record, epoch=progress.epoch, rng=generator_state(progress.rng), history=history
        )
        ts = to_host(progress.ts)  # NumPy arrays, whichever device trained
        save_checkpoint(
            path, params=ts.params, state=ts.state, opt_state=ts.opt_state, meta=record.to_meta()
        )
    if path:
        wait_for_root(run.ranks)  # every rank knows the checkpoint is written before going on
    if run.ranks.root and run.outputs.metrics:
        write_metrics(run.outputs.metrics, history)
    if run.ranks.root and run.outputs.plot:
        plot_history(
            list(history), run.outputs.plot, title=f"{run.config.model} on {run.data.name}"
        )
    saved = f"{path} (epoch {progress.epoch})" if path else progress.saved
    return dataclasses.replace(progress, saved=saved)


def set_up(given: Mapping[str, Any], options: Options, ranks: Ranks) -> tuple[Run, Progress]:
    """Everything before the first epoch, failing early: find the device, read the
    checkpoint to resume and check its model, check the outputs, load the data, build and
    initialise the model (or take the checkpoint's weights), the optimizer and the step;
    under MPI, check that every rank was started alike and give them all rank 0's state;
    last, upload the data and the state to the device, once. ``given``: the settings the
    flags gave (name -> value)."""
    xp = _array_library(options.device, ranks)
    record = read_resume(options.resume)[1] if options.resume else None
    config = resolve_config(given, None if record is None else record.config)
    if record is not None and record.epoch is not None and config.epochs < record.epoch:
        raise CliError(
            f"--epochs {config.epochs} is fewer than the {record.epoch} epochs {options.resume} "
            f"has done; give --epochs {record.epoch} or more"
        )
    resume, trust = options.resume or "", options.trust_code
    built = None if record is None else _resumed_model(resume, record, trust)
    if ranks.root:  # the only rank that writes
        check_outputs(Outputs(options.save, options.metrics, options.plot), options)
    data = load_data(
        config,
        options.data_dir or (None if record is None else record.data_dir),
        None if record is None else record.normalization(),
    )
    model, desc = _model(config, data, built, options.resume)
    drop_last, steps_per_epoch = _batches(config, data, model, ranks)
    schedule = make_schedule(config, config.epochs * steps_per_epoch)
    opt = make_optimizer(config, schedule)
    progress = _first_progress(config, data, model, opt, options.resume, record)
    progress = _agree(ranks, config, data, options, progress)
    data, progress = _upload(xp, data, progress)
    dropout = has_layer(model.spec, "Dropout")
    run = Run(
        config=config,
        outputs=_outputs(options, config.dataset, ranks),
        data=data,
        model=model,
        step=training_step(ranks, model, opt, training_loss(config), random_layers=dropout),
        schedule=schedule,
        steps_per_epoch=steps_per_epoch,
        drop_last=drop_last,
        augment=make_augment(config, data.mean, data.std),
        record=_record(config, data, desc),
        quiet=options.quiet or not ranks.root,
        ranks=ranks,
        device=_device_words(xp),
    )
    return run, progress


def _array_library(device: str, ranks: Ranks) -> Any:
    """The array library of ``--device`` (``fcnn.array_library``: numpy or cupy), asked
    before anything else; ``CliError`` with one line naming the extra to install when it
    is not here. Under MPI every rank refuses together, with one line
    (``fcnn.parallel.agree_on``)."""
    try:
        xp, problem = array_library(device), None
    except DeviceUnavailableError as err:
        xp, problem = None, f"--device {device}: {err}"
    agree_on(ranks, f"--device {device}", problem)
    if problem is not None:
        raise CliError(problem)
    return xp


def _upload(xp: Any, data: Data, progress: Progress) -> tuple[Data, Progress]:
    """The training and test sets and the train state as arrays of ``xp``: one upload each,
    nothing for NumPy. The normalisation stays on the host (the augmentation's fill)."""
    if is_numpy(xp):
        return data, progress
    x_train, y_train, x_test, y_test = to_device(
        (data.x_train, data.y_train, data.x_test, data.y_test), xp
    )
    data = dataclasses.replace(data, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return data, dataclasses.replace(progress, ts=to_device(progress.ts, xp))


def _device_words(xp: Any) -> str:
    """Where a run trains, for its header: ``""`` on the CPU, else the device's name."""
    if is_numpy(xp):
        return ""
    cuda = getattr(xp, "cuda", None)
    if cuda is None:  # not CuPy (a test double)
        return f"on {xp.__name__} arrays"
    name = cuda.runtime.getDeviceProperties(cuda.Device().id)["name"]
    name = name.decode() if isinstance(name, bytes) else str(name)
    return f"on the GPU: {name} (CuPy {xp.__version__}, device {cuda.Device().id})"


def _model(
    config: RunConfig,
    data: Data,
    built: tuple[Layer, Mapping[str, Any]] | None,
    resume: str | None,
) -> tuple[Layer, Mapping[str, Any]]:
    """The resumed run's model (``built``), if its classes fit the data; else a new one."""
    if built is not None:
        k = built[1]["num_classes"]
        if k != len(data.classes):
            raise CheckpointError(
                f"{resume}: cannot resume: its model has {k} classes, "
                f"{data.name} has {len(data.classes)}"
            )
        return built
    return build_model(config, len(data.classes))


def _batches(config: RunConfig, data: Data, model: Layer, ranks: Ranks) -> tuple[bool, int]:
    """``(drop_last, steps_per_epoch)``; ``CliError`` when batch norm would see one image."""
    batch_norm = has_layer(model.spec, "BatchNorm")
    if batch_norm and config.batch_size < 2 * ranks.size:
        per = "batch" if ranks.size == 1 else f"rank's slice of a batch ({ranks.size} ranks)"
        raise CliError(
            f"model {config.model!r} has batch norm, which cannot normalise one image per "
            f"{per}: use --batch-size {2 * ranks.size} or more"
        )
    n = len(data.x_train)
    drop = drop_last_batch(n, config.batch_size, ranks.size, batch_norm)
    return drop, n // config.batch_size if drop else math.ceil(n / config.batch_size)


def _first_progress(
    config: RunConfig,
    data: Data,
    model: Layer,
    opt: Optimizer,
    resume: str | None,
    record: RunRecord | None,
) -> Progress:
    """The model initialised from the config's seed, or the resumed checkpoint's state."""
    init_rng, train_rng = np.random.default_rng(config.seed).spawn(2)
    in_shape = tuple(int(d) for d in data.x_train.shape[1:])
    try:
        params, state, _ = init(model, init_rng, in_shape)
    except ValueError as err:
        raise CliError(f"model {config.model!r} on {data.name} {in_shape}: {err}") from None
    fresh = Progress(TrainState(params, state, opt.init(params)), train_rng, 0, (), None)
    return fresh if resume is None or record is None else _resume_progress(resume, record, fresh)


def _agree(
    ranks: Ranks, config: RunConfig, data: Data, options: Options, progress: Progress
) -> Progress:
    """Under MPI: refuse ranks started with other settings, data, files or checkpoint than
    rank 0 (the files decide which collectives a rank takes part in: ``--no-save`` skips
    the barrier after each save), then start every rank from rank 0's state
    (``fcnn.parallel.agree``)."""
    files = {name: getattr(options, name) for name in _AGREED_OPTIONS}
    arrays = [data.x_train, data.y_train, data.x_test, data.y_test, data.mean, data.std]
    digests = {
        "settings": fingerprint({"config": config.as_dict()}, []),
        "data": fingerprint({}, arrays),
        f"files ({', '.join(flag_name(n) for n in _AGREED_OPTIONS)})": fingerprint(files, []),
    }
    if options.resume:  # where the run stands (else the seed, a setting, says it)
        resumed = (progress.epoch, generator_state(progress.rng), list(progress.history))
        digests["checkpoint"] = fingerprint({"resumed": resumed}, [])
    ts = agree(ranks, digests, progress.ts)
    return dataclasses.replace(progress, ts=ts)


# The flags every rank must be given alike: where the run writes, and what it resumes.
_AGREED_OPTIONS = ("save", "no_save", "metrics", "plot", "overwrite", "resume")


def _record(config: RunConfig, data: Data, desc: Mapping[str, Any]) -> RunRecord:
    """What every checkpoint of this run says, besides its epoch, rng and history."""
    c, h, w = (int(d) for d in data.x_train.shape[1:])
    return RunRecord(
        model=desc,
        input_shape=(c, h, w),
        classes=data.classes,
        mean=tuple(float(v) for v in data.mean),
        std=tuple(float(v) for v in data.std),
        dataset=config.dataset,
        data_dir=data.folder,
        config=config,
    )


def parameter_count(progress: Progress) -> int:
    """How many numbers the model's parameters hold."""
    return sum(int(a.size) for a in tree_leaves(progress.ts.params))
