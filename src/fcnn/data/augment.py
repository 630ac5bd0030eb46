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

On a device the batch stays there: ``rng`` is a generator of x's library
(``fcnn.device_generator``), and the shift is one gather instead of the host's loop
over the distinct offsets (which would read the offsets on the host). For the same
offsets both give the same images.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ..ops.xp import is_numpy, namespace
from .dataset import normalize

__all__ = ["random_shift", "shift_augment"]


def random_shift(
    x: NDArray[Any],
    max_shift: int,
    rng: Any,
    fill: float | NDArray[Any] = 0.0,
) -> NDArray[Any]:
    """``x: (N, C, H, W)`` with each image translated by a random offset; a new array.

    ``rng``: a ``numpy.random.Generator`` for NumPy arrays, a generator of x's library
    for device arrays. ``fill``: a number or ``(C,)`` values (host or x's library).
    Raises ``ValueError`` for a non-4-D ``x``, ``max_shift`` outside ``[0, min(H, W))``
    or a ``fill`` that is neither a number nor ``(C,)``; ``TypeError`` for a generator
    of another library. ``max_shift == 0`` returns a copy and draws nothing.
    """
    if x.ndim != 4:
        raise ValueError(f"random_shift: x must be (N, C, H, W), got shape {x.shape}")
    if isinstance(max_shift, bool) or not isinstance(max_shift, int | np.integer):
        raise TypeError(f"random_shift: max_shift must be an int, got {max_shift!r}")
    n, c, h, w = x.shape
    if not 0 <= max_shift < min(h, w):
        raise ValueError(f"random_shift: max_shift must be in [0, {min(h, w)}), got {max_shift}")
    xp = namespace(x)
    fill_c = fill if hasattr(fill, "shape") else np.asarray(fill, dtype=x.dtype)
    if tuple(fill_c.shape) not in ((), (c,)):
        raise ValueError(f"random_shift: fill must be a number or ({c},), got {fill_c.shape}")
    if max_shift == 0:
        return x.copy()
    if is_numpy(xp) != isinstance(rng, np.random.Generator):
        raise TypeError(
            f"random_shift: x is a {xp.__name__} array but rng is a {type(rng).__module__} "
            "generator; use a generator of x's library (fcnn.device_generator)"
        )
    m = int(max_shift)
    offsets = rng.integers(-m, m + 1, size=(n, 2))
    padded = xp.empty((n, c, h + 2 * m, w + 2 * m), dtype=x.dtype)
    _fill(padded, fill_c, xp)
    padded[:, :, m : m + h, m : m + w] = x
    if not is_numpy(xp):
        return _gather_shifted(padded, offsets, m, h, w)
    out = np.empty_like(x)
    # One slice per distinct offset (at most (2m+1)^2 of them), never a loop over images.
    for dy, dx in np.unique(offsets, axis=0):
        rows = np.flatnonzero((offsets[:, 0] == dy) & (offsets[:, 1] == dx))
        top, left = m - int(dy), m - int(dx)
        out[rows] = padded[rows, :, top : top + h, left : left + w]
    return out


def _fill(padded: NDArray[Any], fill: Any, xp: Any) -> None:
    """Set every pixel of padded (N, C, Hp, Wp) to ``fill``: () or (C,) values, on the
    host or of padded's library."""
    if isinstance(fill, np.ndarray) and not is_numpy(xp):
        # Host values for a device batch: written as numbers (C small fills), no upload.
        if fill.ndim == 0:
            padded[...] = fill.item()
        for ch, value in enumerate(fill.tolist() if fill.ndim else []):
            padded[:, ch] = value
        return
    padded[...] = fill.astype(padded.dtype).reshape(-1, 1, 1) if fill.ndim else fill


def _gather_shifted(
    padded: NDArray[Any], offsets: NDArray[Any], m: int, h: int, w: int
) -> NDArray[Any]:
    """out[i, c, r, s] = padded[i, c, r + m - dy_i, s + m - dx_i]: padded (N, C, H+2m, W+2m),
    offsets (N, 2) of x's library -> (N, C, H, W), one gather."""
    xp = namespace(padded, offsets)
    n, c = padded.shape[0], padded.shape[1]
    rows = (m - offsets[:, 0])[:, None] + xp.arange(h)  # (N, H)
    cols = (m - offsets[:, 1])[:, None] + xp.arange(w)  # (N, W)
    images = xp.arange(n)[:, None, None, None]
    channels = xp.arange(c)[None, :, None, None]
    out: NDArray[Any] = padded[images, channels, rows[:, None, :, None], cols[:, None, None, :]]
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


# --- CIFAR-style augmentation: random crops of a padded image, horizontal flips ------------
#
# Every augment has the form ``augment(x, rng) -> x``: x: (N, C, H, W) in, a new array of
# the same shape and dtype out, every draw from the explicit generator ``rng``.

__all__ += ["Augment", "cifar_augment", "compose", "random_crop", "random_flip"]

Augment = Callable[[NDArray[Any], np.random.Generator], NDArray[Any]]


def random_crop(
    x: NDArray[Any],
    padding: int,
    rng: np.random.Generator,
    fill: float | NDArray[Any] = 0.0,
) -> NDArray[Any]:
    """``x: (N, C, H, W)`` with each image padded by ``padding`` pixels of ``fill`` on every
    side and an ``H x W`` window cut at a random place; a new array, x's dtype.

    The window's corner is uniform over the ``(2 * padding + 1)**2`` places, so this is
    ``random_shift`` by up to ``padding`` pixels (the same draws, the same images).
    Raises ``ValueError`` for a non-4-D ``x``, ``padding`` outside ``[0, min(H, W))`` or a
    ``fill`` that is neither a number nor ``(C,)``.
    """
    if x.ndim != 4:
        raise ValueError(f"random_crop: x must be (N, C, H, W), got shape {x.shape}")
    if isinstance(padding, bool) or not isinstance(padding, int | np.integer):
        raise TypeError(f"random_crop: padding must be an int, got {padding!r}")
    limit = min(x.shape[2], x.shape[3])
    if not 0 <= padding < limit:
        raise ValueError(f"random_crop: padding must be in [0, {limit}), got {padding}")
    return random_shift(x, int(padding), rng, fill)


def random_flip(x: NDArray[Any], rng: np.random.Generator, p: float = 0.5) -> NDArray[Any]:
    """``x: (N, C, H, W)`` with each image mirrored left to right with probability ``p``;
    a new array, x's dtype. Draws ``N`` uniforms from ``rng`` whatever ``p``.

    Raises ``ValueError`` for a non-4-D ``x`` or ``p`` outside ``[0, 1]``.
    """
    if x.ndim != 4:
        raise ValueError(f"random_flip: x must be (N, C, H, W), got shape {x.shape}")
    if isinstance(p, bool) or not isinstance(p, int | float) or not 0.0 <= p <= 1.0:
        raise ValueError(f"random_flip: p must be a probability in [0, 1], got {p!r}")
    flip: Any = rng.random(x.shape[0]) < p
    xp = namespace(x)
    if not is_numpy(xp):  # a mask's count would be read on the host: select instead
        out: NDArray[Any] = xp.where(flip[:, None, None, None], x[:, :, :, ::-1], x)
        return out
    out = x.copy()
    out[flip] = x[flip, :, :, ::-1]
    return out


def compose(*augments: Augment) -> Augment:
    """One augment that applies ``augments`` in order, all drawing from the same ``rng``."""
    for a in augments:
        if not callable(a):
            raise TypeError(f"compose: each augment must be a function, got {type(a).__name__}")

    def augment(x: NDArray[Any], rng: np.random.Generator) -> NDArray[Any]:
        for a in augments:
            x = a(x, rng)
        return x

    return augment


def cifar_augment(padding: int = 4, fill: float | NDArray[Any] = 0.0) -> Augment:
    """The usual CIFAR-10 augmentation as one ``augment(x, rng) -> x``: a random crop of
    the image padded by ``padding`` pixels of ``fill`` (for normalised images, the
    normalised black, ``-mean / std`` per channel), then a horizontal flip with
    probability 1/2."""

    def crop(x: NDArray[Any], rng: np.random.Generator) -> NDArray[Any]:
        return random_crop(x, padding, rng, fill)

    return compose(crop, random_flip)
