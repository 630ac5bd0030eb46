"""The composer: ``sequential`` threads layers into one ``Layer``; ``init``, ``forward``,
``backward`` and ``loss_and_grad`` run any ``Layer``.

Every layer has one internal shape (see ``fcnn.layers.base``)::

    params, state, out_shape = layer.init(rng, in_shape, dtype)   # per-sample shapes
    y, cache, state = layer.apply(params, state, x, ctx)
    dx, grads = layer.backward(cache, dy)

``sequential`` returns a ``Layer`` too, so blocks nest. Its params and state are
dicts keyed by child name, holding only the children that have any::

    model = sequential(Conv2d(8, 3), Relu(), MaxPool2d(2), Flatten(), Dense(10))
    params, state, out_shape = init(model, rng, (1, 28, 28))
    # params == {"conv1": {"w": (8, 1, 3, 3), "b": (8,)}, "dense1": {"w": (1352, 10), "b": (10,)}}

Unnamed children are named ``<kind><k>`` in order (``conv1``, ``relu1``, ``conv2``,
``block1``); a duplicate name raises. Errors raised inside a child are re-raised
with its path: ``block1/conv2: conv2d: x has 3 channels but w expects 1``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, Protocol

import numpy as np
from numpy.typing import DTypeLike

from .layers.base import Array, Context, Layer, Params, Shape, State, reraise_with_path
from .ops.xp import namespace

__all__ = [
    "LossPair",
    "SequentialCache",
    "backward",
    "forward",
    "init",
    "loss_and_grad",
    "param_grads",
    "predict",
    "sequential",
]


class SequentialCache(NamedTuple):
    """The children's caches in forward order, with their names."""

    names: tuple[str, ...]
    caches: tuple[Any, ...]


def _child_names(layers: tuple[Layer, ...]) -> tuple[str, ...]:
    counts: Counter[str] = Counter()
    names: list[str] = []
    for layer in layers:
        if layer.name is None:
            counts[layer.kind] += 1
            name = f"{layer.kind}{counts[layer.kind]}"
        else:
            name = layer.name
        if not name or "/" in name:
            raise ValueError(f"sequential: layer name must be non-empty without '/', got {name!r}")
        if name in names:
            raise ValueError(
                f"sequential: duplicate layer name {name!r} (names so far: {names}); "
                "give the layers distinct name= arguments"
            )
        names.append(name)
    return tuple(names)


def _not_a_layer(i: int, arg: Any) -> str:
    """The message for a non-``Layer`` argument of ``sequential``: says how to make one."""
    what = f"sequential: argument {i} is a {type(arg).__name__}, not a Layer"
    how = "wrap your own pair with fcnn.layer(fwd, bwd, cfg, init=...) (see its docstring)"
    if isinstance(arg, tuple | list):
        return f"{what}; to use a (fwd, bwd) pair, {how}"
    if callable(arg):
        fn = getattr(arg, "__name__", "a function")
        return (
            f"{what}; {fn} is a function: for a library op use its layer constructor "
            f"(Conv2d(...), not conv2d_fwd); for your own pair, {how}"
        )
    return f"{what}; build layers with the constructors (Conv2d, Relu, ...) or fcnn.layer(fwd, bwd)"


def _check_keys(tree: Any, names: tuple[str, ...], what: str) -> None:
    if not isinstance(tree, Mapping):
        raise TypeError(f"sequential: {what} must be a dict, got {type(tree).__name__}")
    extra = sorted(set(tree) - set(names))
    if extra:
        raise ValueError(f"sequential: unexpected {what} keys {extra}; layers are {list(names)}")


def sequential(*layers: Layer, name: str | None = None) -> Layer:
    """Compose layers in order into one ``Layer`` (kind ``block``; blocks nest).

    Children without a ``name`` get ``<kind><k>``; duplicates raise ``ValueError``.
    """
    if not layers:
        raise ValueError("sequential: needs at least one layer")
    for i, layer in enumerate(layers):
        if not isinstance(layer, Layer):
            raise TypeError(_not_a_layer(i, layer))
    names = _child_names(layers)
    children = tuple(zip(names, layers, strict=True))

    def init_fn(
        rng: np.random.Generator, in_shape: Shape, dtype: DTypeLike
    ) -> tuple[Params, State, Shape]:
        params: Params = {}
        state: State = {}
        shape = tuple(in_shape)
        for child_name, layer in children:
            try:
                p, s, shape = layer.init(rng, shape, dtype)
            except (ValueError, TypeError) as err:
                reraise_with_path(child_name, err)
            if p:
                params[child_name] = p
            if s:
                state[child_name] = s
        return params, state, shape

    def apply(params: Params, state: State, x: Array, ctx: Context) -> tuple[Array, Any, State]:
        _check_keys(params, names, "params")
        _check_keys(state, names, "state")
        caches: list[Any] = []
        new_state: State = {}
        for child_name, layer in children:
            try:
                x, cache, s = layer.apply(
                    params.get(child_name, {}), state.get(child_name, {}), x, ctx
                )
            except (ValueError, TypeError) as err:
                reraise_with_path(child_name, err)
            caches.append(cache)
            if s:
                new_state[child_name] = s
        return x, SequentialCache(names, tuple(caches)), new_state

    def walk_back(cache: SequentialCache, dy: Array, need_dx: bool) -> tuple[Array, Params]:
        """Children in reverse; without ``need_dx`` the first child skips its ``dx``."""
        grads: Params = {}
        for i in reversed(range(len(children))):
            child_name, layer = children[i]
            try:
                if i == 0 and not need_dx:
                    g = param_grads(layer, cache.caches[0], dy)
                else:
                    dy, g = layer.backward(cache.caches[i], dy)
            except (ValueError, TypeError) as err:
                reraise_with_path(child_name, err)
            if g:
                grads[child_name] = g
        # Same key order as params (forward order), so trees print alike.
        return dy, {n: grads[n] for n in names if n in grads}

    def backward_fn(cache: SequentialCache, dy: Array) -> tuple[Array, Params]:
        return walk_back(cache, dy, need_dx=True)

    def param_grads_fn(cache: SequentialCache, dy: Array) -> Params:
        return walk_back(cache, dy, need_dx=False)[1]

    spec = {
        "type": "Sequential",
        "layers": [{"name": n, **layer.spec} for n, layer in children],
    }
    return Layer(
        kind="block",
        init=init_fn,
        apply=apply,
        backward=backward_fn,
        spec=spec,
        name=name,
        children=layers,
        param_grads=param_grads_fn,
    )


def init(
    model: Layer, rng: np.random.Generator, input_shape: Shape, dtype: DTypeLike = np.float32
) -> tuple[Params, State, Shape]:
    """Initialise ``model`` for inputs of per-sample shape ``input_shape`` (e.g. ``(1, 28, 28)``).

    Returns ``(params, state, output_shape)``; shapes are inferred through the
    network, so no flatten size is ever typed by hand. ``rng`` is the only
    source of randomness.
    """
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"init: rng must be a numpy.random.Generator, got {type(rng).__name__}")
    if np.dtype(dtype).kind != "f":
        raise TypeError(f"init: dtype must be a floating dtype, got {np.dtype(dtype)}")
    return model.init(rng, tuple(int(d) for d in input_shape), dtype)


def forward(
    model: Layer, params: Params, state: State, x: Array, ctx: Context | None = None
) -> tuple[Array, Any, State]:
    """``x: (N, *input_shape) -> (y, cache, new_state)``. ``ctx`` defaults to eval mode."""
    return model.apply(params, state, x, ctx if ctx is not None else Context())


def backward(model: Layer, cache: Any, dy: Array) -> tuple[Array, Params]:
    """``dy`` shaped like the forward output -> ``(dx, grads)``; grads is shaped like params."""
    return model.backward(cache, dy)


def param_grads(model: Layer, cache: Any, dy: Array) -> Params:
    """``backward(model, cache, dy)[1]``, skipping the gradient of the model's input.

    Training never needs ``dx`` of the input images; for a first convolution that
    saves a matrix product and a col2im.
    """
    if model.param_grads is not None:
        return model.param_grads(cache, dy)
    return model.backward(cache, dy)[1]


def predict(
    model: Layer, params: Params, state: State, x: Array, batch_size: int | None = None
) -> Array:
    """Eval-mode outputs for ``x: (N, ...)``, in chunks of ``batch_size`` to bound memory.

    The outputs are arrays of x's library (on x's device).
    """
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"predict: batch_size must be >= 1, got {batch_size}")
    n = x.shape[0]
    if n == 0:
        raise ValueError("predict: x has no samples")
    ctx = Context(train=False)
    step = n if batch_size is None else batch_size
    outs = [model.apply(params, state, x[i : i + step], ctx)[0] for i in range(0, n, step)]
    return outs[0] if len(outs) == 1 else namespace(*outs).concatenate(outs, axis=0)


class LossPair(Protocol):
    """Anything with ``fwd(y, target) -> (loss, cache)`` and ``bwd(cache, dloss) -> dy``."""

    @property
    def fwd(self) -> Callable[[Array, Array], tuple[Array, Any]]: ...

    @property
    def bwd(self) -> Callable[..., Array]: ...


def loss_and_grad(
    model: Layer, loss: LossPair
) -> Callable[[Params, State, Array, Array, Context | None], tuple[Array, Params, State]]:
    """Return ``f(params, state, x, target, ctx) -> (loss, grads, new_state)``.

    One forward pass, the loss, and one backward pass; ``grads`` has exactly
    the structure of ``params``.
    """

    def f(
        params: Params, state: State, x: Array, target: Array, ctx: Context | None = None
    ) -> tuple[Array, Params, State]:
        y, cache, new_state = forward(model, params, state, x, ctx)
        value, loss_cache = loss.fwd(y, target)
        grads = param_grads(model, cache, loss.bwd(loss_cache, 1.0))
        return value, grads, new_state

    return f
