"""Datasets by name, as ``train.py --dataset`` and ``inference_example.py`` use them.

    ds = load_dataset("digits-sample")            # embedded, offline: 10,000 / 2,000 real digits
    ds = load_dataset("mnist", data_dir="data")   # 60,000 / 10,000, downloaded once if missing
    ds = load_dataset("lines", seed=0)            # generated: 2,000 / 500 lines
    ds = load_dataset("cifar10")                  # 50,000 / 10,000 colour images

Every dataset comes back as a ``Dataset`` of float32 images in ``[0, 1]`` (lines
are noisy and leave that range) with int64 labels; see ``fcnn.data.dataset``.
``limit_train(ds, n, seed)`` keeps a random subset of the
training split, the same one for the same seed.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np

from .cifar10 import load_cifar10
from .dataset import Dataset
from .digits import load_digits_sample
from .download import Progress
from .lines import LINES_CLASSES, make_lines
from .mnist import load_mnist

__all__ = ["DATASETS", "LINES_TEST_SIZE", "LINES_TRAIN_SIZE", "limit_train", "load_dataset"]

LINES_TRAIN_SIZE = 2000
LINES_TEST_SIZE = 500

DATASETS = ("digits-sample", "mnist", "lines", "cifar10")
"""The names ``load_dataset`` accepts; the first is the default of ``train.py``."""


def _lines(seed: int) -> Dataset:
    rng = np.random.default_rng(seed)
    x_train, y_train = make_lines(LINES_TRAIN_SIZE, rng)
    x_test, y_test = make_lines(LINES_TEST_SIZE, rng)
    return Dataset(x_train, y_train, x_test, y_test, LINES_CLASSES, "lines")


def load_dataset(
    name: str,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    download: bool = True,
    seed: int = 0,
    progress: Progress | None = None,
) -> Dataset:
    """The dataset called ``name`` (one of ``DATASETS``).

    ``data_dir`` and ``download`` apply to mnist and cifar10 (see ``load_mnist``);
    ``seed`` generates the lines set; ``progress(done, total)`` reports downloads.
    Raises ``ValueError`` for an unknown name and ``DatasetNotFoundError`` when
    files are missing and cannot be downloaded.
    """
    loaders: dict[str, Callable[[], Dataset]] = {
        "digits-sample": load_digits_sample,
        "mnist": lambda: load_mnist(data_dir, download, progress=progress),
        "lines": lambda: _lines(seed),
        "cifar10": lambda: load_cifar10(data_dir, download, progress=progress),
    }
    if name not in loaders:
        raise ValueError(f"unknown dataset {name!r}; choose one of {list(DATASETS)}")
    return loaders[name]()


def limit_train(ds: Dataset, n: int | None, seed: int) -> Dataset:
    """``ds`` with at most ``n`` training samples, a random subset drawn with ``seed``.

    ``None`` or ``n >= len(ds.x_train)`` returns ``ds`` itself; the test split is
    never cut. Raises ``ValueError`` for ``n < 1``.
    """
    if n is None or n >= len(ds.x_train):
        return ds
    if n < 1:
        raise ValueError(f"limit_train: n must be >= 1, got {n}")
    keep = np.sort(np.random.default_rng(seed).choice(len(ds.x_train), size=n, replace=False))
    return Dataset(
        ds.x_train[keep], ds.y_train[keep], ds.x_test, ds.y_test, ds.classes, ds.name
    )
