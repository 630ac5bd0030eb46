"""A tiny synthetic dataset: vertical (label 0) versus horizontal (label 1) lines.

Each image is ``(1, size, size)`` with one bright bar of random position,
length and thickness, plus Gaussian noise. Generated from a seed, no files.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["LINES_CLASSES", "make_lines"]

LINES_CLASSES = ("vertical", "horizontal")


def make_lines(
    n: int, rng: np.random.Generator, size: int = 28, noise: float = 0.2
) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """``n`` images and labels: ``x: (n, 1, size, size)`` float32, ``y: (n,)`` int64 in {0, 1}.

    A bar is 1 or 2 pixels thick and at least half the image long.
    """
    if n < 0:
        raise ValueError(f"make_lines: n must be >= 0, got {n}")
    if size < 8:
        raise ValueError(f"make_lines: size must be >= 8, got {size}")
    if noise < 0:
        raise ValueError(f"make_lines: noise must be >= 0, got {noise}")
    labels = rng.integers(0, 2, size=n).astype(np.int64)
    images = (noise * rng.standard_normal((n, 1, size, size))).astype(np.float32)
    margin = 2
    for i in range(n):
        thick = int(rng.integers(1, 3))
        pos = int(rng.integers(margin, size - margin - thick + 1))
        length = int(rng.integers(size // 2, size - 2 * margin + 1))
        start = int(rng.integers(margin, size - margin - length + 1))
        bar: Any = (slice(start, start + length), slice(pos, pos + thick))
        if labels[i] == 1:  # horizontal: rows fixed, columns run
            bar = (bar[1], bar[0])
        images[i, 0][bar] += 1.0
    return images, labels
