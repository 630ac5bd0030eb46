"""Input validation shared by the layers. Every check raises (never asserts) and
names the op, what it expected and what it got."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

__all__ = [
    "check_dy",
    "check_float",
    "check_no_cfg",
    "check_params",
    "check_rank",
    "check_same_dtype",
    "check_shape_in",
]


def check_float(x: Any, op: str, name: str = "x") -> None:
    """``TypeError`` unless ``x`` is an array with a floating dtype."""
    if type(x) is np.ndarray and x.dtype.kind == "f":
        return  # the common case, without the generic dtype machinery
    dtype = getattr(x, "dtype", None)
    if dtype is None or not hasattr(x, "shape"):
        raise TypeError(f"{op}: {name} must be an array, got {type(x).__name__}")
    if not np.issubdtype(dtype, np.floating):
        raise TypeError(f"{op}: {name} must have a floating dtype, got {dtype}")


def check_dy(dy: Any, y_shape: tuple[int, ...], dtype: Any, op: str) -> None:
    """For a backward: ``dy`` must be a float array with y's shape and y's dtype."""
    check_float(dy, op, "dy")
    if tuple(dy.shape) != tuple(y_shape):
        raise ValueError(
            f"{op}: dy must have the shape of y {tuple(y_shape)}, got {tuple(dy.shape)}"
        )
    if dy.dtype != dtype:
        raise TypeError(f"{op}: dtypes must match, but y is {np.dtype(dtype)}, dy is {dy.dtype}")


def check_rank(x: Any, rank: int, layout: str, op: str, name: str = "x") -> None:
    """``ValueError`` unless ``x`` has ``rank`` dimensions (``layout`` like ``"(N, C, H, W)"``)."""
    if x.ndim != rank:
        raise ValueError(f"{op}: {name} must have rank {rank} {layout}, got shape {tuple(x.shape)}")


def check_same_dtype(op: str, **arrays: Any) -> None:
    """``TypeError`` when the named arrays have different dtypes (no silent promotion)."""
    dtypes = {k: v.dtype for k, v in arrays.items()}
    if len(set(dtypes.values())) > 1:
        got = ", ".join(f"{k} is {d}" for k, d in dtypes.items())
        raise TypeError(f"{op}: dtypes must match, but {got}")


def check_params(params: Any, keys: Iterable[str], op: str, what: str = "params") -> None:
    """``ValueError`` unless ``params`` (called ``what``) is a mapping with exactly ``keys``."""
    expected = set(keys)
    if not isinstance(params, Mapping):
        raise TypeError(f"{op}: {what} must be a dict, got {type(params).__name__}")
    got = set(params.keys())
    if got != expected:
        missing, extra = sorted(expected - got), sorted(got - expected)
        parts = [f"missing {missing}"] if missing else []
        parts += [f"unexpected {extra}"] if extra else []
        raise ValueError(
            f"{op}: {what} must have keys {sorted(expected)}, got {sorted(got)} "
            f"({', '.join(parts)})"
        )


def check_shape_in(shape: tuple[int, ...], rank: int, layout: str, op: str) -> None:
    """For ``init``: the per-sample input shape must have ``rank`` entries, all >= 1."""
    if len(shape) != rank or any(int(d) < 1 for d in shape):
        raise ValueError(f"{op}: input shape must be {layout} (no batch axis), got {shape}")


def check_no_cfg(params: Any, cfg: Any, op: str) -> None:
    """Layers without configuration take ``params == {}`` and ``cfg is None``."""
    check_params(params, (), op)
    if cfg is not None:
        raise TypeError(f"{op}: takes no cfg, got {type(cfg).__name__}")
