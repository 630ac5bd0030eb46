"""Data augmentation as pure functions of a batch and an explicit generator.

    x_aug = random_shift(x, max_shift=2, rng=rng)   # x: (N, C, H, W) -> (N, C, H, W), x's dtype
    augment = shift_augment(2, mean, std)           # augment(x, rng): for fcnn.train_epoch

Each image is translated by its own whole-pixel offset ``(dy, dx)``, drawn
uniformly from ``[-max_shift, max_shift]`` for each axis; pixels shifted in from
outside the frame are ``fill``: a number, or one value per channel ``(C,)`` (0 is
MNIST's background in ``[0, 1]``; after normalisation it is ``-mean / std``).
Nothing wraps around. ``shift_augment`` makes the ``augment(x, rng)`` that
``fcnn.train_epoch`` takes, for images normalised with ``(mean, std)``: its border is
the background pixel normalised the same way, so it is right by construction.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .dataset import normalize

__all__ = ["random_shift", "shift_augment"]


def random_shift(
    x: NDArray[Any],
    max_shift: int,
    rng: np.random.Generator,
    fill: float | NDArray[Any] = 0.0,
) -> NDArray[Any]:
    """``x: (N, C, H, W)`` with each image translated by a random offset; a new array.

    Raises ``ValueError`` for a non-4-D ``x``, ``max_shift`` outside ``[0, min(H, W))``
    or a ``fill`` that is neither a number nor ``(C,)``.
    ``max_shift == 0`` returns a copy and draws nothing.
    """
    if x.ndim != 4:
        raise ValueError(f"random_shift: x must be (N, C, H, W), got shape {x.shape}")
    if isinstance(max_shift, bool) or not isinstance(max_shift, int | np.integer):
        raise TypeError(f"random_shift: max_shift must be an int, got {max_shift!r}")
    n, _, h, w = x.shape
    if not 0 <= max_shift < min(h, w):
        raise ValueError(f"random_shift: max_shift must be in [0, {min(h, w)}), got {max_shift}")
    fill_c = np.asarray(fill, dtype=x.dtype)
    if fill_c.shape not in ((), (x.shape[1],)):
        raise ValueError(
            f"random_shift: fill must be a number or ({x.shape[1]},), got {fill_c.shape}"
        )
    if max_shift == 0:
        return x.copy()
    m = int(max_shift)
    offsets = rng.integers(-m, m + 1, size=(n, 2))
    padded = np.empty((n, x.shape[1], h + 2 * m, w + 2 * m), dtype=x.dtype)
    padded[...] = fill_c.reshape(-1, 1, 1) if fill_c.ndim else fill_c
    padded[:, :, m : m + h, m : m + w] = x
    out = np.empty_like(x)
    # One slice per distinct offset (at most (2m+1)^2 of them), never a loop over images.
    for dy, dx in np.unique(offsets, axis=0):
        rows = np.flatnonzero((offsets[:, 0] == dy) & (offsets[:, 1] == dx))
        top, left = m - int(dy), m - int(dx)
        out[rows] = padded[rows, :, top : top + h, left : left + w]
    return out


def shift_augment(
    max_shift: int, mean: ArrayLike, std: ArrayLike, background: float = 0.0
) -> Callable[[NDArray[Any], np.random.Generator], NDArray[Any]]:
    """``augment(x, rng)`` for ``fcnn.train_epoch``: ``random_shift`` by up to ``max_shift``
    pixels of images ``x: (N, C, H, W)`` normalised with per-channel ``mean, std: (C,)``.

    Pixels shifted in are ``background`` (a raw intensity, 0 for MNIST's black) normalised
    like the images, ``(background - mean) / std`` per channel. ``ValueError`` for
    statistics ``fcnn.data.normalize`` refuses (not ``(C,)``, a non-positive ``std``).
    """
    mean_a = np.asarray(mean, dtype=np.float32)
    pixel = np.full((1, mean_a.size), background, dtype=np.float32)
    fill = normalize(pixel, mean_a, np.asarray(std, dtype=np.float32))[0]

    def augment(x: NDArray[Any], rng: np.random.Generator) -> NDArray[Any]:
        return random_shift(x, max_shift, rng, fill=fill)

    return augment
