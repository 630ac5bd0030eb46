"""Array-namespace dispatch.

Kernels never import NumPy's functions directly for computing: they ask the
inputs which namespace they belong to, ``xp = xp_of(x, w)``, and use only calls
NumPy and CuPy share. CPU users never see this; it lets the same code run on a
GPU when handed CuPy arrays.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

import numpy as np

__all__ = ["xp_of"]


def _is_cupy(a: Any) -> bool:
    return type(a).__module__.split(".", 1)[0] == "cupy"


def xp_of(*arrays: Any) -> ModuleType:
    """Return the array module (``numpy`` or ``cupy``) the given arrays live in.

    Non-array arguments (``None``, Python scalars) are ignored. Mixing CuPy and
    NumPy arrays raises a ``TypeError`` rather than copying silently.
    """
    if all(type(a) is np.ndarray for a in arrays):
        return np  # the common case, decided without looking at module names
    kinds = {_is_cupy(a) for a in arrays if a is not None and hasattr(a, "dtype")}
    if kinds == {True}:
        return importlib.import_module("cupy")
    if kinds == {True, False}:
        raise TypeError("xp_of: got a mix of CuPy and NumPy arrays; move them to one device")
    return np
