"""Finite-difference gradient checks for pure pairs, losses and composed models.

The check turns any layer into a scalar function with a random upstream
gradient ``dy`` (never ``ones_like``, which hides transposition bugs)::

    L(params, x) = sum(fwd(params, x, cfg)[0] * dy)

and compares the analytic gradients from the backward pass with central
differences ``(L(t + eps) - L(t - eps)) / (2 eps)`` for every element of ``x``
and of every parameter leaf. Everything runs in float64.

The error of one leaf is normwise: ``max|analytic - numeric| / max(max|analytic|,
max|numeric|)``, which is robust to entries that are exactly zero. Use::

    report = check_pair(conv2d_fwd, conv2d_bwd, params, x, cfg, rng=rng)
    assert report.ok(1e-6), report

For large models, ``directional`` checks one random direction through all
inputs at once (two forward passes) instead of every element.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .layers.base import Context, Layer
from .tree import flatten_dict, tree_map, unflatten_dict

__all__ = [
    "GradcheckReport",
    "check_layer",
    "check_loss",
    "check_pair",
    "numerical_grad",
    "relative_error",
]

Array = np.ndarray[Any, Any]


def relative_error(analytic: Any, numeric: Any) -> float:
    """``max|a - n| / max(max|a|, max|n|)``; 0 when both are exactly zero."""
    a = np.asarray(analytic, dtype=np.float64)
    n = np.asarray(numeric, dtype=np.float64)
    if a.shape != n.shape:
        raise ValueError(f"relative_error: shapes differ, {a.shape} vs {n.shape}")
    scale = max(float(np.max(np.abs(a), initial=0.0)), float(np.max(np.abs(n), initial=0.0)))
    diff = float(np.max(np.abs(a - n), initial=0.0))
    return 0.0 if scale == 0.0 else diff / scale


@dataclass(frozen=True)
class GradcheckReport:
    """Relative error per checked input: ``{"x": 3e-10, "w": 1e-9, "conv1/b": ...}``."""

    errors: dict[str, float]

    def max_error(self) -> float:
        """The largest error; NaN (a NaN or infinite gradient) wins over any number."""
        values = list(self.errors.values())
        if any(math.isnan(v) for v in values):
            return math.nan
        return max(values, default=0.0)

    def ok(self, tol: float = 1e-6) -> bool:
        """Every error is finite and at most ``tol``."""
        return all(math.isfinite(v) and v <= tol for v in self.errors.values())

    def __str__(self) -> str:
        rows = ", ".join(f"{k}: {v:.2e}" for k, v in self.errors.items())
        return f"GradcheckReport(max {self.max_error():.2e}; {rows})"


def numerical_grad(f: Callable[[Array], float], x: Array, eps: float = 1e-6) -> Array:
    """Central-difference gradient of a scalar function ``f`` at ``x`` (float64).

    ``f`` receives a private float64 copy that is perturbed in place and
    restored; the caller's ``x`` is never written.
    """
    # C order, whatever x's layout: reshape(-1) must be a view for the writes to land.
    work = np.array(x, dtype=np.float64, order="C", copy=True)
    grad = np.zeros_like(work, order="C")
    flat, gflat = work.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        orig = flat[i]
        flat[i] = orig + eps
        plus = f(work)
        flat[i] = orig - eps
        minus = f(work)
        flat[i] = orig
        gflat[i] = (plus - minus) / (2.0 * eps)
    return grad


def _to64(tree: Any) -> Any:
    """Copy a tree, casting floating leaves to float64 (integer leaves such as counters stay)."""

    def cast(a: Any) -> Any:
        a = np.asarray(a)
        return a.astype(np.float64) if np.issubdtype(a.dtype, np.floating) else a.copy()

    return tree_map(cast, tree)


def _check_inputs(
    loss: Callable[[dict[str, Array]], float],
    inputs: dict[str, Array],
    analytic: dict[str, Array],
    eps: float,
    directional: bool,
    rng: np.random.Generator,
) -> GradcheckReport:
    """Compare ``analytic`` with finite differences of ``loss`` over the flat ``inputs``."""
    if set(analytic) != set(inputs):
        raise ValueError(
            f"gradcheck: backward returned gradients for {sorted(analytic)}, "
            f"expected {sorted(inputs)}"
        )
    for k, g in analytic.items():
        if np.shape(g) != np.shape(inputs[k]):
            raise ValueError(
                f"gradcheck: gradient {k!r} has shape {np.shape(g)}, expected {inputs[k].shape}"
            )
    if directional:
        v = {k: rng.standard_normal(a.shape) for k, a in inputs.items()}

        def along(t: float) -> float:
            return loss({k: a + t * v[k] for k, a in inputs.items()})

        numeric = (along(eps) - along(-eps)) / (2.0 * eps)
        exact = sum(float(np.vdot(np.asarray(analytic[k], np.float64), v[k])) for k in inputs)
        return GradcheckReport({"direction": relative_error(exact, numeric)})
    errors: dict[str, float] = {}
    for key in inputs:

        def loss_of_leaf(leaf: Array, key: str = key) -> float:
            return loss({**inputs, key: leaf})

        errors[key] = relative_error(analytic[key], numerical_grad(loss_of_leaf, inputs[key], eps))
    return GradcheckReport(errors)


def check_pair(
    fwd: Callable[..., tuple[Any, Any]],
    bwd: Callable[[Any, Any], tuple[Any, Any]],
    params: dict[str, Any],
    x: Any,
    cfg: Any = None,
    *,
    rng: np.random.Generator,
    eps: float = 1e-6,
    directional: bool = False,
) -> GradcheckReport:
    """Check ``dx`` and every param gradient of a pure pair against finite differences.

    ``params`` and ``x`` are copied to float64; ``dy`` is drawn from ``rng``.
    Report keys are ``"x"`` and the ``"/"``-joined param paths.
    """
    p64, x64 = _to64(params), np.array(x, dtype=np.float64, copy=True)
    y, cache = fwd(p64, x64, cfg)
    dy = rng.standard_normal(np.shape(y))
    dx, grads = bwd(cache, dy)

    def loss(flat: dict[str, Array]) -> float:
        rest = {k: v for k, v in flat.items() if k != "x"}
        out, _ = fwd(unflatten_dict(rest), flat["x"], cfg)
        return float(np.vdot(out, dy))

    inputs = {"x": x64, **flatten_dict(p64)}
    analytic = {"x": dx, **flatten_dict(grads)}
    return _check_inputs(loss, inputs, analytic, eps, directional, rng)


def check_loss(
    fwd: Callable[[Any, Any], tuple[Any, Any]],
    bwd: Callable[..., Any],
    logits: Any,
    labels: Any,
    *,
    rng: np.random.Generator,
    eps: float = 1e-6,
) -> GradcheckReport:
    """Check a loss pair ``fwd(logits, labels) -> (loss, cache)``, ``bwd(cache, dloss)``.

    The upstream gradient ``dloss`` is a random scalar, so scaling bugs show.
    """
    z = np.array(logits, dtype=np.float64, copy=True)
    _, cache = fwd(z, labels)
    dloss = float(rng.standard_normal())
    dz = bwd(cache, dloss)

    def loss(flat: dict[str, Array]) -> float:
        return dloss * float(fwd(flat["logits"], labels)[0])

    return _check_inputs(loss, {"logits": z}, {"logits": dz}, eps, False, rng)


def check_layer(
    layer: Layer,
    params: Any,
    state: Any,
    x: Any,
    ctx: Context | None = None,
    *,
    rng: np.random.Generator,
    eps: float = 1e-6,
    directional: bool = False,
) -> GradcheckReport:
    """Check a composed ``Layer`` (a whole model) end to end.

    Every evaluation sees the same randomness: ``ctx.rng`` is copied before each
    forward pass, so dropout masks do not change between the finite differences.
    """
    ctx = ctx or Context()
    p64, s64, x64 = _to64(params), _to64(state), np.array(x, dtype=np.float64, copy=True)

    def run(p: Any, xx: Array) -> tuple[Any, Any]:
        c = Context(train=ctx.train, rng=copy.deepcopy(ctx.rng))
        y, cache, _ = layer.apply(p, s64, xx, c)
        return y, cache

    y, cache = run(p64, x64)
    dy = rng.standard_normal(np.shape(y))
    dx, grads = layer.backward(cache, dy)

    def loss(flat: dict[str, Array]) -> float:
        rest = {k: v for k, v in flat.items() if k != "x"}
        return float(np.vdot(run(unflatten_dict(rest), flat["x"])[0], dy))

    inputs = {"x": x64, **flatten_dict(p64)}
    analytic = {"x": dx, **flatten_dict(grads)}
    return _check_inputs(loss, inputs, analytic, eps, directional, rng)
