"""The array library an array belongs to: NumPy for NumPy arrays, CuPy for CuPy arrays.

A pair computes with the library of its input (docs/architecture.md#arrays-on-any-device):
NumPy in, NumPy out; CuPy in, CuPy out. Kernels ask for the namespace once, from their
array arguments, and then read as NumPy code does (CuPy mirrors NumPy's API)::

    xp = namespace(x, w)        # numpy, or cupy when x and w are CuPy arrays
    y = xp.maximum(x, 0)

There is no global switch and no hidden copy between libraries: arrays of two
libraries in one call raise ``TypeError``.
"""

from __future__ import annotations

import sys
from types import ModuleType
from typing import Any

import numpy as np

__all__ = ["namespace"]


def _library_of(a: Any) -> ModuleType | None:
    """The module of ``a``'s array library, or ``None`` for Python numbers (any library)."""
    if isinstance(a, np.ndarray | np.generic):
        return np
    if isinstance(a, bool | int | float | complex) or a is None:
        return None
    top = type(a).__module__.partition(".")[0]  # cupy._core.core.ndarray -> cupy
    module = sys.modules.get(top)
    if module is None:
        raise TypeError(f"not an array: {type(a).__module__}.{type(a).__qualname__}")
    return module


def namespace(*arrays: Any) -> Any:
    """The module to compute ``arrays`` with: ``numpy`` for NumPy arrays, ``cupy`` for
    CuPy arrays; ``numpy`` when every argument is a Python number or ``None``.

    Raises ``TypeError`` when the arrays come from two libraries.
    """
    found: ModuleType | None = None
    for a in arrays:
        lib = _library_of(a)
        if lib is None or lib is found:
            continue
        if found is not None:
            raise TypeError(
                f"arrays from two libraries in one call: {found.__name__} and {lib.__name__}; "
                "move them to one device first"
            )
        found = lib
    return np if found is None else found
