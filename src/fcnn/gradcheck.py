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
inputs at once (three forward passes) instead of every element.

Kinks. Where the checked function is not differentiable (ReLU at exactly 0, ties
in max pooling: flat image backgrounds are full of both) a finite difference is
meaningless: it averages the slopes on either side, while the backward pass
rightly returns one of them. An entry is *at a kink* when its one-sided slopes
``(L(t + e) - L(t)) / e`` and ``(L(t) - L(t - e)) / e`` differ by more than
``KINK_TOL`` of the leaf's gradient scale and still do at a ten times larger step
(smooth curvature grows with the step and rounding noise shrinks; a kink stays).
Such entries are left out of the error and counted in ``report.excluded``; the
report's text says so. A wrong backward still fails on every other entry. To
check every entry, evaluate at points off the kinks (e.g. add small noise to
``x``; nonzero biases).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .layers.base import Context, Layer
from .tree import flatten_dict, tree_map, unflatten_dict

__all__ = [
    "KINK_TOL",
    "GradcheckReport",
    "check_layer",
    "check_loss",
    "check_pair",
    "numerical_grad",
    "relative_error",
]

Array = np.ndarray[Any, Any]

KINK_TOL = 1e-5
"""One-sided slopes differing by more than this fraction of a leaf's gradient scale: a kink."""

_KINK_WHY = "not differentiable there: e.g. ReLU at 0, ties in max pooling"


def relative_error(analytic: Any, numeric: Any) -> float:
    """``max|a - n| / max(max|a|, max|n|)``; 0 when both are exactly zero."""
    a = np.asarray(analytic, dtype=np.float64)
    n = np.asarray(numeric, dtype=np.float64)
    if a.shape != n.shape:
        raise ValueError(f"relative_error: shapes differ, {a.shape} vs {n.shape}")
    scale = _scale(a, n)
    diff = float(np.max(np.abs(a - n), initial=0.0))
    return 0.0 if scale == 0.0 else diff / scale


def _scale(analytic: Any, numeric: Any) -> float:
    """A gradient's scale: ``max(max|analytic|, max|numeric|)`` (0 for empty arrays)."""
    return max(
        float(np.max(np.abs(analytic), initial=0.0)), float(np.max(np.abs(numeric), initial=0.0))
    )


@dataclass(frozen=True)
class GradcheckReport:
    """Relative error per checked input: ``{"x": 3e-10, "w": 1e-9, "conv1/b": ...}``.

    ``excluded`` counts, per input, the entries left out because the function has a
    kink there (see the module docstring); ``sizes`` holds each input's entry count.
    An input whose entries were all excluded has no error.
    """

    errors: dict[str, float]
    excluded: dict[str, int] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)

    def max_error(self) -> float:
        """The largest error; NaN (a NaN or infinite gradient) wins over any number."""
        values = list(self.errors.values())
        if any(math.isnan(v) for v in values):
            return math.nan
        return max(values, default=0.0)

    def ok(self, tol: float = 1e-6) -> bool:
        """Every error is finite and at most ``tol``, and something was checked."""
        if not self.errors and self.excluded:
            return False
        return all(math.isfinite(v) and v <= tol for v in self.errors.values())

    def __str__(self) -> str:
        rows = ", ".join(f"{k}: {v:.2e}" for k, v in self.errors.items())
        text = f"GradcheckReport(max {self.max_error():.2e}; {rows}"
        if self.excluded:
            counts = ", ".join(
                f"{k} {n} of {self.sizes.get(k, '?')}" for k, n in self.excluded.items()
            )
            text += f"; excluded at kinks ({_KINK_WHY}): {counts}"
        return text + ")"


def numerical_grad(f: Callable[[Array], float], x: Array, eps: float = 1e-6) -> Array:
    """Central-difference gradient of a scalar function ``f`` at ``x`` (float64).

    ``f`` receives a private float64 copy that is perturbed in place and
    restored; the caller's ``x`` is never written.
    """
    return _differences(f, x, eps)[0]


def _differences(
    f: Callable[[Array], float],
    x: Array,
    eps: float,
    base: float | None = None,
    where: Array | None = None,
) -> tuple[Array, Array]:
    """Central differences of ``f`` at ``x``, and the gap between its one-sided slopes.

    x: any shape -> two float64 arrays of x's shape: ``(f(t+e) - f(t-e)) / 2e`` and,
    given ``base = f(x)``, ``|f(t+e) - 2 f(t) + f(t-e)| / e`` (else zeros), at the
    flat indices ``where`` (all by default; zeros elsewhere).
    """
    # C order, whatever x's layout: reshape(-1) must be a view for the writes to land.
    work = np.array(x, dtype=np.float64, order="C", copy=True)
    grad = np.zeros_like(work, order="C")
    gap = np.zeros_like(work, order="C")
    flat, gflat, kflat = work.reshape(-1), grad.reshape(-1), gap.reshape(-1)
    for i in range(flat.size) if where is None else where:
        orig = flat[i]
        flat[i] = orig + eps
        plus = f(work)
        flat[i] = orig - eps
        minus = f(work)
        flat[i] = orig
        gflat[i] = (plus - minus) / (2.0 * eps)
        if base is not None:
            kflat[i] = abs(plus - 2.0 * base + minus) / eps
    return grad, gap


def _at_kinks(
    f: Callable[[Array], float], x: Array, eps: float, base: float, gap: Array, scale: float
) -> Array:
    """Boolean mask (x's shape) of the entries where ``f`` has a kink (module docstring).

    A slope gap above ``KINK_TOL * scale`` is a kink if it stays within a factor 3 at
    step ``10 eps``: curvature's gap grows tenfold and rounding noise's shrinks.
    """
    candidates = np.flatnonzero(gap > KINK_TOL * scale)
    mask = np.zeros(np.shape(x), dtype=bool)
    if candidates.size:
        _, wide = _differences(f, x, 10.0 * eps, base, candidates)
        ratio = wide.reshape(-1)[candidates] / gap.reshape(-1)[candidates]
        mask.reshape(-1)[candidates[(ratio > 1 / 3) & (ratio < 3)]] = True
    return mask


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
    kinks: bool = True,
) -> GradcheckReport:
    """Compare ``analytic`` with finite differences of ``loss`` over the flat ``inputs``.

    With ``kinks``, entries at a kink are left out and counted (module docstring).
    """
    _check_gradients(inputs, analytic)
    base = loss(inputs)
    if directional:
        return _check_direction(loss, inputs, analytic, eps, rng, kinks, base)
    return _check_entries(loss, inputs, analytic, eps, kinks, base)


def _check_gradients(inputs: dict[str, Array], analytic: dict[str, Array]) -> None:
    """``ValueError`` unless ``analytic`` has one gradient of each input's shape."""
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


def _check_direction(
    loss: Callable[[dict[str, Array]], float],
    inputs: dict[str, Array],
    analytic: dict[str, Array],
    eps: float,
    rng: np.random.Generator,
    kinks: bool,
    base: float,
) -> GradcheckReport:
    """``analytic`` against the finite difference along one random direction ``v`` through
    all inputs at once; ``base = loss(inputs)``."""
    v = {k: rng.standard_normal(a.shape) for k, a in inputs.items()}

    def along(t: Array) -> float:
        return loss({k: a + float(t[0]) * v[k] for k, a in inputs.items()})

    exact = sum(float(np.vdot(np.asarray(analytic[k], np.float64), v[k])) for k in inputs)
    numeric, gap = _differences(along, np.zeros(1), eps, base)
    if kinks and _at_kinks(along, np.zeros(1), eps, base, gap, _scale(exact, numeric[0]))[0]:
        return GradcheckReport({}, {"direction": 1}, {"direction": 1})
    return GradcheckReport({"direction": relative_error(exact, numeric[0])})


def _check_entries(
    loss: Callable[[dict[str, Array]], float],
    inputs: dict[str, Array],
    analytic: dict[str, Array],
    eps: float,
    kinks: bool,
    base: float,
) -> GradcheckReport:
    """``analytic`` against central differences at every entry of every input;
    ``base = loss(inputs)``."""
    errors: dict[str, float] = {}
    excluded: dict[str, int] = {}
    for key in inputs:

        def loss_of_leaf(leaf: Array, key: str = key) -> float:
            return loss({**inputs, key: leaf})

        a = np.asarray(analytic[key], dtype=np.float64)
        numeric, gap = _differences(loss_of_leaf, inputs[key], eps, base)
        keep = np.ones(a.shape, dtype=bool)
        if kinks:
            keep = ~_at_kinks(loss_of_leaf, inputs[key], eps, base, gap, _scale(a, numeric))
        if not keep.all():
            excluded[key] = int(keep.size - np.count_nonzero(keep))
        if keep.any() or keep.size == 0:
            errors[key] = relative_error(a[keep], numeric[keep])
    sizes = {k: int(np.size(inputs[k])) for k in inputs}
    return GradcheckReport(errors, excluded, sizes)


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
    exclude_kinks: bool = True,
) -> GradcheckReport:
    """Check ``dx`` and every param gradient of a pure pair against finite differences.

    ``params`` and ``x`` are copied to float64; ``dy`` is drawn from ``rng``.
    Report keys are ``"x"`` and the ``"/"``-joined param paths. Entries where the
    pair is not differentiable are excluded and counted in ``report.excluded``
    unless ``exclude_kinks=False`` (see the module docstring).
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
    return _check_inputs(loss, inputs, analytic, eps, directional, rng, exclude_kinks)


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
    exclude_kinks: bool = True,
) -> GradcheckReport:
    """Check a composed ``Layer`` (a whole model) end to end.

    Every evaluation sees the same randomness: ``ctx.rng`` is copied before each
    forward pass, so dropout masks do not change between the finite differences.
    Entries at a kink (ReLU at 0, max-pooling ties: common on real images with flat
    backgrounds) are excluded and counted in ``report.excluded``, and ``str(report)``
    says so, unless ``exclude_kinks=False`` (see the module docstring).
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
    return _check_inputs(loss, inputs, analytic, eps, directional, rng, exclude_kinks)
