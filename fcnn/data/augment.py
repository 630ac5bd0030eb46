"""Data augmentation as pure functions of a batch and an explicit generator.

    x_aug = random_shift(x, max_shift=2, rng=rng)   # x: (N, C, H, W) -> (N, C, H, W), x's dtype

Each image is translated by its own whole-pixel offset ``(dy, dx)``, drawn
uniformly from ``[-max_shift, max_shift]`` for each axis; pixels shifted in from
outside the frame are ``fill``: a number, or one value per channel ``(C,)`` (0 is
MNIST's background in ``[0, 1]``; after normalisation it is ``-mean / std``).
Nothing wraps around.

On a device the batch stays there: ``rng`` is a generator of x's library
(``fcnn.device_generator``), and the shift is one gather instead of the host's loop
over the distinct offsets (which would read the offsets on the host). For the same
offsets both give the same images.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..ops.xp import is_numpy, namespace

__all__ = ["random_shift"]


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
