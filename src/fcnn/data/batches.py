"""Mini-batch index iteration."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..ops.xp import to_device

__all__ = ["iterate_batches"]


def iterate_batches(
    n: int,
    batch_size: int,
    rng: np.random.Generator | None = None,
    drop_last: bool = False,
    *,
    xp: Any = np,
) -> Iterator[NDArray[Any]]:
    """Yield index arrays covering ``range(n)`` in batches of ``batch_size``.

    With ``rng`` the order is a fresh permutation drawn from it (shuffled);
    without, it is ``0, 1, ..., n-1``. The last batch is shorter unless
    ``drop_last``. With ``xp`` a device library (``cupy``), the order is drawn on the
    host all the same (the same order for the same generator) and uploaded once; the
    batches are slices of it on the device.
    """
    if n < 0:
        raise ValueError(f"iterate_batches: n must be >= 0, got {n}")
    if batch_size < 1:
        raise ValueError(f"iterate_batches: batch_size must be >= 1, got {batch_size}")
    order = to_device(rng.permutation(n) if rng is not None else np.arange(n), xp)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        yield order[start : start + batch_size]
