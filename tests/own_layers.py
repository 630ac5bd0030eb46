"""A layer of a user's own, rebuildable from its spec: used by tests/test_specs.py.

``gate`` is the tutorial's channel gate, ``y = x * sigmoid(a[c])``, with a ``scale`` option
so that the spec has an argument to record.
"""

from __future__ import annotations

from typing import Any

import numpy as np

import fcnn

Arr = np.ndarray[Any, Any]


def gate_fwd(params: dict[str, Any], x: Arr, cfg: float) -> tuple[Arr, Any]:
    g = cfg / (1 + np.exp(-params["a"]))  # (C,)
    return x * g[None, :, None, None], (x, g, cfg)


def gate_bwd(cache: Any, dy: Arr) -> tuple[Arr, dict[str, Any]]:
    x, g, scale = cache
    da = np.sum(dy * x, axis=(0, 2, 3)) * g * (1 - g / scale)
    return dy * g[None, :, None, None], {"a": da}


def gate_init(rng: np.random.Generator, in_shape: Any, dtype: Any) -> Any:
    return {"a": rng.standard_normal(in_shape[0]).astype(dtype)}, {}, tuple(in_shape)


@fcnn.rebuildable
def gate(scale: float = 1.0, widths: tuple[int, ...] = (1, 2)) -> fcnn.Layer:
    """A channel gate; ``widths`` is unused, there to show a tuple argument stored as a list."""
    return fcnn.layer(gate_fwd, gate_bwd, scale, init=gate_init)
