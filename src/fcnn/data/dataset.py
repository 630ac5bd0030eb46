"""The ``Dataset`` record and per-channel normalisation.

A dataset is a train and a test split of images in the library's layout::

    x_train: (N_train, C, H, W) float32 in [0, 1]     y_train: (N_train,) int64 in [0, K)
    x_test:  (N_test,  C, H, W) float32 in [0, 1]     y_test:  (N_test,)  int64 in [0, K)
    classes: K class names, classes[label] names a label

Inputs are normalised with statistics computed on the training split only
(``channel_stats``), and the same ``(mean, std)`` is applied to every split and
stored with the model, so that inference normalises exactly as training did::

    mean, std = channel_stats(ds.x_train)              # (C,), (C,)
    x = normalize(ds.x_train, mean, std)               # (x - mean[c]) / std[c], dtype kept
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["Dataset", "channel_stats", "normalize", "uint8_to_unit"]


@dataclass(frozen=True, eq=False)
class Dataset:
    """A named train/test split; see the module docstring for shapes and dtypes.

    The record only holds arrays; nothing in the library mutates them. Construction
    checks that images and labels agree in length and that labels lie in
    ``[0, len(classes))``, and raises ``ValueError`` naming the dataset otherwise.
    """

    x_train: NDArray[np.floating[Any]]
    y_train: NDArray[np.int64]
    x_test: NDArray[np.floating[Any]]
    y_test: NDArray[np.int64]
    classes: tuple[str, ...]
    name: str

    def __post_init__(self) -> None:
        splits = (("train", self.x_train, self.y_train), ("test", self.x_test, self.y_test))
        for split, x, y in splits:
            if x.ndim != 4:
                raise ValueError(
                    f"Dataset {self.name!r}: x_{split} must be (N, C, H, W), got shape {x.shape}"
                )
            if y.ndim != 1 or y.shape[0] != x.shape[0]:
                raise ValueError(
                    f"Dataset {self.name!r}: y_{split} must be ({x.shape[0]},) to match "
                    f"x_{split}, got shape {y.shape}"
                )
            if y.size and (int(y.min()) < 0 or int(y.max()) >= len(self.classes)):
                raise ValueError(
                    f"Dataset {self.name!r}: y_{split} must lie in [0, {len(self.classes)}), "
                    f"got values in [{int(y.min())}, {int(y.max())}]"
                )
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise ValueError(
                f"Dataset {self.name!r}: train and test images differ in shape: "
                f"{self.x_train.shape[1:]} vs {self.x_test.shape[1:]}"
            )

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image."""
        c, h, w = self.x_train.shape[1:]
        return (int(c), int(h), int(w))


def uint8_to_unit(pixels: NDArray[np.uint8]) -> NDArray[np.float32]:
    """8-bit ``pixels`` (any shape) as float32 in [0, 1]: ``pixels / 255``, a new array.

    How every loader (and the image decoder) turns stored bytes into the library's
    images. Raises ``TypeError`` when ``pixels`` is not a uint8 array.
    """
    if not isinstance(pixels, np.ndarray) or pixels.dtype != np.uint8:
        got = pixels.dtype if isinstance(pixels, np.ndarray) else type(pixels).__name__
        raise TypeError(f"uint8_to_unit: expected a uint8 array, got {got}")
    return pixels.astype(np.float32) / np.float32(255.0)


def channel_stats(
    x_train: NDArray[np.floating[Any]],
) -> tuple[NDArray[np.floating[Any]], NDArray[np.floating[Any]]]:
    """Per-channel mean and standard deviation of ``x_train: (N, C, ...)``.

    Returns ``mean: (C,)`` and ``std: (C,)`` in ``x_train``'s dtype, accumulated in
    float64 (a float32 sum over 47 million pixels would lose digits). A constant
    channel gets ``std = 1`` (it is then only centred, never divided by zero), as
    scikit-learn's ``StandardScaler`` does.
    """
    _check_float_images("channel_stats", x_train)
    if x_train.shape[0] == 0:
        raise ValueError("channel_stats: x_train is empty (N = 0); nothing to compute from")
    axes = (0, *range(2, x_train.ndim))
    mean = x_train.mean(axis=axes, dtype=np.float64)
    var = x_train.var(axis=axes, dtype=np.float64)
    std = np.sqrt(var)
    std = np.where(std > 0, std, 1.0)
    return mean.astype(x_train.dtype), std.astype(x_train.dtype)


def normalize(
    x: NDArray[np.floating[Any]],
    mean: NDArray[np.floating[Any]],
    std: NDArray[np.floating[Any]],
) -> NDArray[np.floating[Any]]:
    """``(x - mean[c]) / std[c]`` for ``x: (N, C, ...)``, ``mean, std: (C,)``; a new array.

    The result has ``x``'s dtype (the statistics are cast to it), so float32 stays
    float32. Raises ``ValueError`` when ``x`` is not floating point, when the
    statistics are not ``(C,)``, or when ``std`` has a non-positive or non-finite entry.
    """
    _check_float_images("normalize", x)
    c = x.shape[1]
    mean_a, std_a = np.asarray(mean), np.asarray(std)
    for label, stat in (("mean", mean_a), ("std", std_a)):
        if stat.shape != (c,):
            raise ValueError(
                f"normalize: {label} must have shape ({c},) for x of shape {x.shape}, "
                f"got {stat.shape}"
            )
        if not np.all(np.isfinite(stat)):
            raise ValueError(f"normalize: {label} has non-finite entries: {stat}")
    if not np.all(std_a > 0):
        raise ValueError(f"normalize: std must be > 0 in every channel, got {std_a}")
    bshape = (1, c) + (1,) * (x.ndim - 2)
    m = mean_a.astype(x.dtype).reshape(bshape)
    s = std_a.astype(x.dtype).reshape(bshape)
    return (x - m) / s


def _check_float_images(where: str, x: NDArray[Any]) -> None:
    if not isinstance(x, np.ndarray) or not np.issubdtype(x.dtype, np.floating):
        got = x.dtype if isinstance(x, np.ndarray) else type(x).__name__
        raise ValueError(f"{where}: expected a floating-point array, got {got}")
    if x.ndim < 2:
        raise ValueError(f"{where}: expected x of shape (N, C, ...), got shape {x.shape}")
