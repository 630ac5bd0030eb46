"""Gradient transformations as pure ``(init, update)`` pairs over trees.

An optimizer is two functions and holds no arrays itself::

    opt = adam(1e-3)
    opt_state = opt.init(params)                               # a tree of arrays
    updates, opt_state = opt.update(grads, opt_state, params)  # new trees, nothing mutated
    params = apply_updates(params, updates)                    # params + updates

Gradient clipping is a transformation without state, so it is one function:
``grads, norm = clip_by_global_norm(grads, max_norm)`` before ``opt.update``.

``opt_state`` is a dict of arrays only (the step count is a 0-d int64 array), so
``flatten_dict`` / ``unflatten_dict`` save and restore it as an ``.npz``. The
step count ``t`` is the number of updates already taken (0 before the first).

The formulas follow PyTorch (``torch.optim.SGD``, ``Adam``, ``AdamW``), with
``lr_t = lr(t)`` when ``lr`` is a schedule. dtypes are preserved: float32
params and grads give float32 updates and float32 moment buffers.

Every leaf's update is one ``fused`` function of its arrays (one kernel per leaf on a
GPU, the same NumPy expressions on the host), computed with the leaves' own library.
The step count and the learning rate stay on the host: the schedule is a Python
function of the count (a count on a device is read once, then kept on the host).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from .ops.xp import fused
from .tree import global_norm, tree_map, tree_map_with_path, zeros_like

__all__ = [
    "Optimizer",
    "Schedule",
    "adam",
    "adamw",
    "apply_updates",
    "clip_by_global_norm",
    "constant",
    "default_decay_mask",
    "sgd",
]

Tree = Any
OptState = dict[str, Any]
Schedule = Callable[[int], float]
"""A learning rate as a function of the 0-based count of updates already taken."""

DecayMask = Callable[[str], bool]


class Optimizer(NamedTuple):
    """A gradient transformation: ``init(params) -> state``,
    ``update(grads, state, params) -> (updates, new_state)``."""

    init: Callable[[Tree], OptState]
    update: Callable[[Tree, OptState, Tree], tuple[Tree, OptState]]


@fused
def _add(xp: Any, p: Any, u: Any) -> Any:
    return (p + u).astype(p.dtype, copy=False)


def apply_updates(params: Tree, updates: Tree) -> Tree:
    """``p + u`` for every leaf, in each param's dtype (a new tree)."""
    return tree_map(_add, params, updates)


def clip_by_global_norm(grads: Any, max_norm: float) -> tuple[Any, float]:
    """Scale every leaf of ``grads`` by ``min(1, max_norm / global_norm(grads))``.

    Returns ``(clipped, norm)`` where ``norm`` is the global norm before clipping
    (sqrt of the sum of squares of every leaf, accumulated in float64). Leaves keep
    their dtypes; nothing is modified in place. A tree whose norm is within
    ``max_norm`` comes back as equal (new) arrays.
    """
    limit = _check_real("max_norm", max_norm, positive=True)
    norm = global_norm(grads)
    if not math.isfinite(norm):
        raise FloatingPointError(f"clip_by_global_norm: the gradient norm is {norm}")
    scale = min(1.0, limit / norm) if norm > 0 else 1.0

    return tree_map(lambda g: _scaled(g, scale), grads), norm


@fused
def _scaled(xp: Any, g: Any, scale: float) -> Any:
    return (g * scale).astype(g.dtype, copy=False)


def constant(lr: float) -> Schedule:
    """The schedule ``t -> lr``."""
    value = _check_real("lr", lr)

    def schedule(step: int) -> float:
        return value

    return schedule


def default_decay_mask(path: str) -> bool:
    """Decay only weights: leaves whose last path component is ``"w"`` (not biases)."""
    return path.rsplit("/", 1)[-1] == "w"


# --- validation and small helpers ---------------------------------------------------------


def _check_real(name: str, value: Any, *, positive: bool = False) -> float:
    """``value`` as a float; ``ValueError`` unless it is a finite real ``>= 0`` (``> 0``)."""
    number = float(value) if isinstance(value, numbers.Real) else math.nan
    if not (math.isfinite(number) and (number > 0 if positive else number >= 0)):
        bound = "> 0" if positive else ">= 0"
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")
    return number


def _check_unit(name: str, value: float) -> None:
    if not (isinstance(value, numbers.Real) and 0.0 <= value < 1.0):
        raise ValueError(f"{name} must be in [0, 1), got {value!r}")


def _as_schedule(lr: float | Schedule) -> Schedule:
    """A callable as it is; a number as ``constant(lr)``."""
    if callable(lr):
        return lr
    return constant(lr)


def _lr_at(schedule: Schedule, step: int) -> float:
    # A Python float, never an np.float64: float32 arrays times it stay float32.
    value = float(schedule(step))
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"lr schedule returned {value!r} at step {step}; expected a finite >= 0")
    return value


def _step_of(state: OptState) -> int:
    # A count uploaded with the rest of the state is read back once here; the new
    # count (``_step_array``) is a host array again.
    return int(state["step"])


def _step_array(t: int) -> Any:
    return np.asarray(t, dtype=np.int64)


def _with_l2(grads: Tree, params: Tree, weight_decay: float, decay_mask: DecayMask) -> Tree:
    """``g + weight_decay * p`` on the leaves the mask selects (coupled L2 decay)."""
    if weight_decay == 0.0:
        return grads

    def add(path: str, g: Any, p: Any) -> Any:
        return _l2(g, p, weight_decay) if decay_mask(path) else g

    return tree_map_with_path(add, grads, params)


@fused
def _l2(xp: Any, g: Any, p: Any, weight_decay: float) -> Any:
    return g + weight_decay * p


class _Several:
    """A leaf holding several results of one leaf's kernel (a tuple would be a tree node)."""

    __slots__ = ("values",)

    def __init__(self, values: tuple[Any, ...]) -> None:
        self.values = values


def _unzip(tree: Tree, n: int) -> list[Tree]:
    """A tree of ``_Several`` leaves of n values -> n trees of the same structure."""
    return [tree_map(lambda leaf, i=i: leaf.values[i], tree) for i in range(n)]


# --- optimizers --------------------------------------------------------------------------


def sgd(
    lr: float | Schedule,
    momentum: float = 0.0,
    nesterov: bool = False,
    weight_decay: float = 0.0,
    decay_mask: DecayMask = default_decay_mask,
) -> Optimizer:
    """Stochastic gradient descent with optional (Nesterov) momentum, as ``torch.optim.SGD``.

    For every leaf (``wd`` only where ``decay_mask(path)``)::

        g = grad + wd * p
        v = momentum * v + g                      (v starts at 0; only with momentum)
        d = g + momentum * v   if nesterov  else  v   (d = g without momentum)
        update = -lr_t * d

    State: ``{"step"}``, plus ``{"velocity"}`` (a tree like params) when momentum > 0.
    """
    schedule = _as_schedule(lr)
    _check_unit("momentum", momentum)
    _check_real("weight_decay", weight_decay)
    if nesterov and momentum <= 0.0:
        raise ValueError(f"nesterov=True requires momentum > 0, got momentum={momentum!r}")
    # Python floats, never NumPy scalars: float32 arrays times them stay float32.
    momentum, weight_decay = float(momentum), float(weight_decay)

    def init(params: Tree) -> OptState:
        state: OptState = {"step": _step_array(0)}
        if momentum > 0.0:
            state["velocity"] = zeros_like(params)
        return state

    def update(grads: Tree, state: OptState, params: Tree) -> tuple[Tree, OptState]:
        t = _step_of(state)
        lr_t = _lr_at(schedule, t)
        g = _with_l2(grads, params, weight_decay, decay_mask)
        if momentum == 0.0:
            updates = tree_map(lambda gi, p: _sgd_plain(gi, p, -lr_t), g, params)
            return updates, {"step": _step_array(t + 1)}
        kernel = _sgd_nesterov if nesterov else _sgd_momentum

        def leaf(gi: Any, v: Any, p: Any) -> _Several:
            return _Several(kernel(gi, v, p, momentum, -lr_t))

        updates, velocity = _unzip(tree_map(leaf, g, state.get("velocity", {}), params), 2)
        return updates, {"step": _step_array(t + 1), "velocity": velocity}

    return Optimizer(init, update)


# Each number a fused function uses comes in computed (``-lr``, ``1 - b1``): CuPy's fuse
# would compute arithmetic between two numbers in float16 (tests/foreign.py, WeakScalar).


@fused
def _sgd_plain(xp: Any, g: Any, p: Any, neg_lr: float) -> Any:
    return (neg_lr * g).astype(p.dtype, copy=False)


@fused
def _sgd_momentum(
    xp: Any, g: Any, v: Any, p: Any, momentum: float, neg_lr: float
) -> tuple[Any, Any]:
    """(update, new velocity) of one leaf."""
    v = (momentum * v + g).astype(v.dtype, copy=False)
    return (neg_lr * v).astype(p.dtype, copy=False), v


@fused
def _sgd_nesterov(
    xp: Any, g: Any, v: Any, p: Any, momentum: float, neg_lr: float
) -> tuple[Any, Any]:
    """(update, new velocity) of one leaf, with Nesterov's look-ahead."""
    v = (momentum * v + g).astype(v.dtype, copy=False)
    return (neg_lr * (g + momentum * v)).astype(p.dtype, copy=False), v


def _adam_leaf_kernel(decay: bool) -> Any:
    """One leaf's Adam step as one fused function; ``decay``: add ``wd * p`` (AdamW)."""

    def adam_leaf(
        xp: Any,
        g: Any,
        m: Any,
        v: Any,
        p: Any,
        b1: float,
        one_b1: float,
        b2: float,
        one_b2: float,
        eps: float,
        c1: float,
        c2: float,
        neg_lr: float,
        wd: float,
    ) -> tuple[Any, Any, Any]:
        """(update, new m, new v) of one leaf; ``one_b1 = 1 - b1``, ``neg_lr = -lr``."""
        m = (b1 * m + one_b1 * g).astype(m.dtype, copy=False)
        v = (b2 * v + one_b2 * (g * g)).astype(v.dtype, copy=False)
        d = (m / c1) / (xp.sqrt(v / c2) + eps)
        if decay:
            d = d + wd * p
        return (neg_lr * d).astype(p.dtype, copy=False), m, v

    return fused(adam_leaf)


_ADAM_LEAF = {False: _adam_leaf_kernel(False), True: _adam_leaf_kernel(True)}


def _adam_like(
    lr: float | Schedule,
    b1: float,
    b2: float,
    eps: float,
    weight_decay: float,
    decay_mask: DecayMask,
    decoupled: bool,
) -> Optimizer:
    schedule = _as_schedule(lr)
    _check_unit("b1", b1)
    _check_unit("b2", b2)
    _check_real("eps", eps, positive=True)
    _check_real("weight_decay", weight_decay)
    b1, b2, eps, weight_decay = float(b1), float(b2), float(eps), float(weight_decay)

    def init(params: Tree) -> OptState:
        return {"step": _step_array(0), "mu": zeros_like(params), "nu": zeros_like(params)}

    def update(grads: Tree, state: OptState, params: Tree) -> tuple[Tree, OptState]:
        t = _step_of(state)
        lr_t = _lr_at(schedule, t)
        g = grads if decoupled else _with_l2(grads, params, weight_decay, decay_mask)
        # Bias corrections for the (t + 1)-th update, as Python floats.
        c1 = 1.0 - b1 ** (t + 1)
        c2 = 1.0 - b2 ** (t + 1)
        wd = weight_decay if decoupled else 0.0

        def leaf(path: str, gi: Any, m: Any, v: Any, p: Any) -> _Several:
            kernel = _ADAM_LEAF[wd != 0.0 and decay_mask(path)]
            numbers = (b1, 1.0 - b1, b2, 1.0 - b2, eps, c1, c2, -lr_t, wd)
            return _Several(kernel(gi, m, v, p, *numbers))

        per_leaf = tree_map_with_path(leaf, g, state.get("mu", {}), state.get("nu", {}), params)
        updates, mu, nu = _unzip(per_leaf, 3)
        return updates, {"step": _step_array(t + 1), "mu": mu, "nu": nu}

    return Optimizer(init, update)


def adam(
    lr: float | Schedule = 1e-3,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    decay_mask: DecayMask = default_decay_mask,
) -> Optimizer:
    """Adam with bias correction and coupled L2 decay, as ``torch.optim.Adam``.

    For every leaf, with ``t`` updates taken before this one (``wd`` only where
    ``decay_mask(path)``)::

        g = grad + wd * p
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g**2
        mhat = m / (1 - b1**(t + 1)),  vhat = v / (1 - b2**(t + 1))
        update = -lr_t * mhat / (sqrt(vhat) + eps)

    State: ``{"step", "mu", "nu"}`` (``mu``, ``nu`` trees like params).
    """
    return _adam_like(lr, b1, b2, eps, weight_decay, decay_mask, decoupled=False)


def adamw(
    lr: float | Schedule = 1e-3,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 1e-2,
    decay_mask: DecayMask = default_decay_mask,
) -> Optimizer:
    """Adam with decoupled weight decay, as ``torch.optim.AdamW``.

    Moments as in ``adam`` but from the raw gradient; then (``wd`` only where
    ``decay_mask(path)``)::

        update = -lr_t * (mhat / (sqrt(vhat) + eps) + wd * p)

    State: ``{"step", "mu", "nu"}``.
    """
    return _adam_like(lr, b1, b2, eps, weight_decay, decay_mask, decoupled=True)
