"""The embedded digits: a fixed, class-balanced sample of MNIST shipped with the package.

Data: the MNIST database of handwritten digits by Y. LeCun, C. Cortes and
C. J. C. Burges, licensed CC BY-SA 3.0; this sample is a subset of it under the
same licence.

``load_digits_sample()`` needs no file and no network and returns a ``Dataset``::

    x_train: (10000, 1, 28, 28) float32 in [0, 1]    y_train: (10000,) int64, 1000 per digit
    x_test:  (2000, 1, 28, 28)  float32 in [0, 1]    y_test:  (2000,)  int64, 200 per digit

How the sample was built (``scripts/build_digits_sample.py``, from the four
original IDX files, with ``build_digits_sample`` below and ``seed = DIGITS_SAMPLE_SEED``):

- one ``rng = np.random.default_rng(seed)`` serves the training split, then the test split;
- for each digit ``c = 0, ..., 9`` in turn, the split's indices of class ``c`` (ascending)
  get one key each from ``rng.random(n_c)``, and the ``k`` indices with the smallest keys
  are kept (``np.argsort(keys, kind="stable")[:k]``); ``k`` is 1000 for training and 200
  for test, or all of a class that has fewer (never the case for MNIST, whose smallest
  classes have 5421 and 892 images);
- the kept indices are sorted, so the sample keeps MNIST's own order.

File ``fcnn/data/digits_sample.npz`` (``np.savez_compressed``, no pickled objects):
``x_train (10000, 28, 28)``, ``y_train (10000,)``, ``x_test (2000, 28, 28)``,
``y_test (2000,)``, all uint8, and ``train_indices (10000,)``, ``test_indices (2000,)``
(uint16): the chosen rows of the MNIST training and test files.
"""

from __future__ import annotations

import io
from importlib import resources
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .dataset import Dataset, uint8_to_unit

__all__ = [
    "DIGITS_CLASSES",
    "DIGITS_SAMPLE_FILE",
    "DIGITS_SAMPLE_SEED",
    "DIGITS_TEST_PER_CLASS",
    "DIGITS_TRAIN_PER_CLASS",
    "build_digits_sample",
    "load_digits_sample",
    "stratified_indices",
]

DIGITS_CLASSES = tuple(str(d) for d in range(10))
DIGITS_SAMPLE_FILE = "digits_sample.npz"
DIGITS_SAMPLE_SEED = 20261122
DIGITS_TRAIN_PER_CLASS = 1000
DIGITS_TEST_PER_CLASS = 200

_SHAPES = {
    "x_train": (DIGITS_TRAIN_PER_CLASS * 10, 28, 28),
    "y_train": (DIGITS_TRAIN_PER_CLASS * 10,),
    "x_test": (DIGITS_TEST_PER_CLASS * 10, 28, 28),
    "y_test": (DIGITS_TEST_PER_CLASS * 10,),
}


def stratified_indices(
    labels: NDArray[np.integer[Any]], per_class: int, num_classes: int, rng: np.random.Generator
) -> NDArray[np.int64]:
    """Sorted indices into ``labels: (N,)``: ``per_class`` of each class (all of a smaller one).

    For each class ``c = 0, ..., num_classes - 1`` in turn, draws ``rng.random(n_c)``
    keys for the class's indices (ascending) and keeps those with the ``per_class``
    smallest keys. Advances ``rng``.
    """
    if labels.ndim != 1:
        raise ValueError(f"stratified_indices: labels must be (N,), got shape {labels.shape}")
    if per_class < 0:
        raise ValueError(f"stratified_indices: per_class must be >= 0, got {per_class}")
    chosen = []
    for c in range(num_classes):
        pool = np.flatnonzero(labels == c)
        keys = rng.random(pool.size)
        chosen.append(pool[np.argsort(keys, kind="stable")[:per_class]])
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def build_digits_sample(
    x_train: NDArray[np.uint8],
    y_train: NDArray[np.uint8],
    x_test: NDArray[np.uint8],
    y_test: NDArray[np.uint8],
    seed: int = DIGITS_SAMPLE_SEED,
    train_per_class: int = DIGITS_TRAIN_PER_CLASS,
    test_per_class: int = DIGITS_TEST_PER_CLASS,
) -> dict[str, NDArray[Any]]:
    """The arrays of ``digits_sample.npz`` from MNIST's uint8 arrays (see the module docstring).

    ``x_*: (N, 28, 28)`` uint8, ``y_*: (N,)`` uint8 (as ``fcnn.data.mnist.load_mnist_uint8``
    gives them). Pure: same inputs and seed, same arrays.
    """
    for name, arr in (
        ("x_train", x_train),
        ("y_train", y_train),
        ("x_test", x_test),
        ("y_test", y_test),
    ):
        if arr.dtype != np.uint8:
            raise ValueError(f"build_digits_sample: {name} must be uint8, got {arr.dtype}")
    rng = np.random.default_rng(seed)
    train_idx = stratified_indices(y_train, train_per_class, 10, rng)
    test_idx = stratified_indices(y_test, test_per_class, 10, rng)
    return {
        "x_train": x_train[train_idx],
        "y_train": y_train[train_idx],
        "x_test": x_test[test_idx],
        "y_test": y_test[test_idx],
        "train_indices": train_idx.astype(np.uint16),
        "test_indices": test_idx.astype(np.uint16),
    }


def load_digits_sample() -> Dataset:
    """The embedded sample as a ``Dataset`` named ``"digits"`` (shapes in the module docstring).

    Reads ``fcnn/data/digits_sample.npz`` from the installed package with
    ``allow_pickle=False``. Raises ``FileNotFoundError`` when the package was
    installed without it, ``ValueError`` when its content is not as documented.
    """
    resource = resources.files(__package__ or "fcnn.data").joinpath(DIGITS_SAMPLE_FILE)
    where = f"fcnn/data/{DIGITS_SAMPLE_FILE}"
    try:
        raw = resource.read_bytes()
    except FileNotFoundError as e:
        raise FileNotFoundError(
            f'{where} is missing from the installed package (is "data/*.npz" in the '
            "package-data of pyproject.toml?)"
        ) from e
    with np.load(io.BytesIO(raw), allow_pickle=False) as npz:
        arrays = {}
        for key, shape in _SHAPES.items():
            if key not in npz.files:
                raise ValueError(f"{where}: missing array {key!r} (has {sorted(npz.files)})")
            arr = npz[key]
            if arr.dtype != np.uint8 or arr.shape != shape:
                raise ValueError(
                    f"{where}: {key} must be uint8 {shape}, got {arr.dtype} {arr.shape}"
                )
            arrays[key] = arr
    return Dataset(
        x_train=uint8_to_unit(arrays["x_train"])[:, None],
        y_train=arrays["y_train"].astype(np.int64),
        x_test=uint8_to_unit(arrays["x_test"])[:, None],
        y_test=arrays["y_test"].astype(np.int64),
        classes=DIGITS_CLASSES,
        name="digits",
    )
