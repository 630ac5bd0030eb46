"""The composer: ``sequential`` threads layers into one ``Layer``, ``residual`` adds a
block's output to its input, ``concat`` joins branches; ``init``, ``forward``,
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

``residual(block, shortcut=None)`` is ``y = block(x) + shortcut(x)`` (the identity by
default); its params key as ``{"block": ..., "shortcut": ...}``. ``concat(*branches,
axis=1)`` runs every branch on the same input and joins their outputs along ``axis``
(channels); its params key by branch name, as ``sequential``'s. Both backwards sum the
gradients of the paths that share the input (docs/residual.md). Every container checks
each child's ``dx`` against that child's input (shape and dtype) right after its
backward, so a wrong ``dx`` is blamed on the layer that returned it.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, Protocol

import numpy as np
from numpy.typing import DTypeLike

from .layers.base import (
    Array,
    Context,
    Layer,
    Params,
    Shape,
    State,
    keep_shape_init,
    reraise_with_path,
)
from .ops.xp import namespace

__all__ = [
    "ConcatCache",
    "LossPair",
    "ResidualCache",
    "SequentialCache",
    "backward",
    "concat",
    "forward",
    "init",
    "loss_and_grad",
    "named_children",
    "param_grads",
    "predict",
    "residual",
    "sequential",
]

# What a child's forward saw, so its backward's dx can be checked against it: (shape, dtype).
Seen = tuple[tuple[int, ...], Any]


class SequentialCache(NamedTuple):
    """The children's caches in forward order, with their names and the (shape, dtype) of
    each child's input."""

    names: tuple[str, ...]
    caches: tuple[Any, ...]
    inputs: tuple[Seen, ...] = ()


def _check_dx(dx: Any, seen: Seen) -> None:
    """A child's backward must return dx shaped and typed like the input its forward saw.

    Shape and dtype only (two comparisons per layer and step), so a wrong dx is named
    where it is made instead of in the layer before, which would receive it as its dy.
    """
    shape, dtype = seen
    if getattr(dx, "shape", None) == shape and getattr(dx, "dtype", None) == dtype:
        return
    if not hasattr(dx, "shape") or not hasattr(dx, "dtype"):
        raise TypeError(f"backward returned dx of type {type(dx).__name__}, not an array")
    what = "shape" if dx.shape != shape else "dtype"
    got, want = (tuple(dx.shape), shape) if what == "shape" else (dx.dtype, dtype)
    err = ValueError if what == "shape" else TypeError
    raise err(
        f"backward returned dx of {what} {got} for an input x of {what} {want}; "
        "a bwd must return dx with x's shape and dtype"
    )


def _child_names(layers: tuple[Layer, ...], op: str = "sequential") -> tuple[str, ...]:
    counts: Counter[str] = Counter()
    names: list[str] = []
    for layer in layers:
        if layer.name is None:
            counts[layer.kind] += 1
            name = f"{layer.kind}{counts[layer.kind]}"
        else:
            name = layer.name
        if not name or "/" in name:
            raise ValueError(f"{op}: layer name must be non-empty without '/', got {name!r}")
        if name in names:
            raise ValueError(
                f"{op}: duplicate layer name {name!r} (names so far: {names}); "
                "give the layers distinct name= arguments"
            )
        names.append(name)
    return tuple(names)


def _not_a_layer(i: int, arg: Any, op: str = "sequential") -> str:
    """The message for a non-``Layer`` argument of a container: says how to make one."""
    what = f"{op}: argument {i} is a {type(arg).__name__}, not a Layer"
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


def _check_layers(layers: tuple[Any, ...], op: str) -> None:
    for i, layer in enumerate(layers):
        if not isinstance(layer, Layer):
            raise TypeError(_not_a_layer(i, layer, op))


def _check_keys(tree: Any, names: tuple[str, ...], what: str, op: str = "sequential") -> None:
    if not isinstance(tree, Mapping):
        raise TypeError(f"{op}: {what} must be a dict, got {type(tree).__name__}")
    extra = sorted(set(tree) - set(names))
    if extra:
        raise ValueError(f"{op}: unexpected {what} keys {extra}; layers are {list(names)}")


def _init_child(
    name: str, layer: Layer, rng: np.random.Generator, shape: Shape, dtype: DTypeLike
) -> tuple[Params, State, Shape]:
    """``layer.init`` with its errors re-raised under ``name``."""
    try:
        return layer.init(rng, shape, dtype)
    except (ValueError, TypeError) as err:
        reraise_with_path(name, err)


def _kept_shape_note(err: Exception, prev: tuple[str, Layer] | None, shape: Shape) -> Exception:
    """``err`` with a note when the layer before is a user's pair made without ``init=``.

    Its default init says the output keeps the input's shape; when the pair really
    changes it (a flatten of its own), the next layer's init fails and would seem to blame
    the wrong thing ("insert Flatten() before Dense").
    """
    if (
        prev is None
        or prev[1].init is not keep_shape_init
        or type(err) not in (ValueError, TypeError)
    ):
        return err
    note = (
        f" (note: {prev[0]} was made by fcnn.layer without init=, so its output is taken to "
        f"keep its input's shape {shape}; if its fwd changes the shape, give it an init)"
    )
    new = type(err)(f"{err}{note}")
    for attr in ("fcnn_path", "fcnn_msg"):
        if hasattr(err, attr):
            setattr(new, attr, getattr(err, attr) + (note if attr == "fcnn_msg" else ""))
    return new


def sequential(*layers: Layer, name: str | None = None) -> Layer:
    """Compose layers in order into one ``Layer`` (kind ``block``; blocks nest).

    Children without a ``name`` get ``<kind><k>``; duplicates raise ``ValueError``.
    """
    if not layers:
        raise ValueError("sequential: needs at least one layer")
    _check_layers(layers, "sequential")
    names = _child_names(layers)
    children = tuple(zip(names, layers, strict=True))

    def init_fn(
        rng: np.random.Generator, in_shape: Shape, dtype: DTypeLike
    ) -> tuple[Params, State, Shape]:
        params: Params = {}
        state: State = {}
        shape = tuple(in_shape)
        prev: tuple[str, Layer] | None = None
        for child_name, layer in children:
            try:
                p, s, shape = _init_child(child_name, layer, rng, shape, dtype)
            except (ValueError, TypeError) as err:
                raise _kept_shape_note(err, prev, shape) from err.__cause__
            if p:
                params[child_name] = p
            if s:
                state[child_name] = s
            prev = (child_name, layer)
        return params, state, shape

    def apply(params: Params, state: State, x: Array, ctx: Context) -> tuple[Array, Any, State]:
        _check_keys(params, names, "params")
        _check_keys(state, names, "state")
        caches: list[Any] = []
        inputs: list[Seen] = []
        new_state: State = {}
        for child_name, layer in children:
            inputs.append((x.shape, x.dtype))
            try:
                x, cache, s = layer.apply(
                    params.get(child_name, {}), state.get(child_name, {}), x, ctx
                )
            except (ValueError, TypeError) as err:
                reraise_with_path(child_name, err)
            caches.append(cache)
            if s:
                new_state[child_name] = s
        return x, SequentialCache(names, tuple(caches), tuple(inputs)), new_state

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
                    _check_dx(dy, cache.inputs[i])
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


# --- residual: y = block(x) + shortcut(x) ----------------------------------------------------


class ResidualCache(NamedTuple):
    """The block's and the shortcut's caches (``None`` for the identity) and the input's
    (shape, dtype)."""

    block: Any
    shortcut: Any
    x: Seen


def _same_shapes(op: str, what: str, shapes: Mapping[str, Shape]) -> None:
    """``ValueError`` naming each path's shape unless they are all equal."""
    if len(set(shapes.values())) > 1:
        got = ", ".join(f"{k} gives {v}" for k, v in shapes.items())
        raise ValueError(f"{op}: {what} must have one shape, but {got}")


def residual(block: Layer, shortcut: Layer | None = None, *, name: str | None = None) -> Layer:
    """``y = block(x) + shortcut(x)``, the identity shortcut when ``shortcut`` is ``None``.

    Per-sample shapes: both paths take x and must give the same shape (a 1x1 ``Conv2d``
    with the block's stride, or a pool, as the shortcut when the block changes it;
    ``init`` says which shapes differ). Params and state key as ``{"block": ...,
    "shortcut": ...}`` (those with any), whatever the children's own names; kind
    ``residual`` (automatic names ``residual1``, ...). Backward: ``dx = dx_block +
    dx_shortcut``, ``dx_shortcut = dy`` for the identity (docs/residual.md).
    """
    paths: tuple[tuple[str, Layer], ...] = (("block", block),)
    if shortcut is not None:
        paths += (("shortcut", shortcut),)
    _check_layers(tuple(layer for _, layer in paths), "residual")
    keys = ("block", "shortcut")

    def init_fn(
        rng: np.random.Generator, in_shape: Shape, dtype: DTypeLike
    ) -> tuple[Params, State, Shape]:
        params: Params = {}
        state: State = {}
        outs = {"shortcut": tuple(in_shape)}  # the identity's, unless a shortcut replaces it
        for key, layer in paths:
            p, s, outs[key] = _init_child(key, layer, rng, tuple(in_shape), dtype)
            params.update({key: p} if p else {})
            state.update({key: s} if s else {})
        if outs["block"] != outs["shortcut"]:
            hint = "" if shortcut is not None else "; give residual a shortcut= that matches"
            raise ValueError(
                f"residual: the block gives {outs['block']} but the shortcut gives "
                f"{outs['shortcut']} for input {tuple(in_shape)}; they are added, so their "
                f"shapes must be equal{hint} (a 1x1 Conv2d with the block's stride)"
            )
        return params, state, outs["block"]

    def apply(params: Params, state: State, x: Array, ctx: Context) -> tuple[Array, Any, State]:
        _check_keys(params, keys, "params", "residual")
        _check_keys(state, keys, "state", "residual")
        ys: dict[str, Array] = {"shortcut": x}
        caches: dict[str, Any] = {"shortcut": None}
        new_state: State = {}
        for key, layer in paths:
            try:
                ys[key], caches[key], s = layer.apply(
                    params.get(key, {}), state.get(key, {}), x, ctx
                )
            except (ValueError, TypeError) as err:
                reraise_with_path(key, err)
            new_state.update({key: s} if s else {})
        yb, ysc = ys["block"], ys["shortcut"]
        _same_shapes("residual", "the outputs", {"the block": yb.shape, "the shortcut": ysc.shape})
        if yb.dtype != ysc.dtype:
            raise TypeError(
                f"residual: the block gives {yb.dtype} but the shortcut gives {ysc.dtype}"
            )
        cache = ResidualCache(caches["block"], caches["shortcut"], (x.shape, x.dtype))
        return yb + ysc, cache, new_state

    def backward_fn(cache: ResidualCache, dy: Array) -> tuple[Array, Params]:
        grads: Params = {}
        dx_paths: list[Array] = [] if shortcut is not None else [dy]  # the identity's dx is dy
        for key, layer in paths:
            try:
                dx_k, g = layer.backward(getattr(cache, key), dy)
                _check_dx(dx_k, cache.x)
            except (ValueError, TypeError) as err:
                reraise_with_path(key, err)
            dx_paths.append(dx_k)
            grads.update({key: g} if g else {})
        dx: Array = dx_paths[0] + dx_paths[1]  # x feeds both paths: their gradients add
        return dx, grads

    def param_grads_fn(cache: ResidualCache, dy: Array) -> Params:
        grads: Params = {}
        for key, layer in paths:
            try:
                g = param_grads(layer, getattr(cache, key), dy)
            except (ValueError, TypeError) as err:
                reraise_with_path(key, err)
            grads.update({key: g} if g else {})
        return grads

    spec = {
        "type": "Residual",
        "block": dict(block.spec),
        "shortcut": None if shortcut is None else dict(shortcut.spec),
    }
    return Layer(
        kind="residual",
        init=init_fn,
        apply=apply,
        backward=backward_fn,
        spec=spec,
        name=name,
        children=tuple(layer for _, layer in paths),
        param_grads=param_grads_fn,
    )


# --- concat: branches on the same input, joined along an axis --------------------------------


class ConcatCache(NamedTuple):
    """The branches' caches, each branch's size along the axis, and the input's (shape, dtype)."""

    caches: tuple[Any, ...]
    sizes: tuple[int, ...]
    x: Seen


def _joined_shape(axis: int, outs: Mapping[str, Shape]) -> Shape:
    """The per-sample shape of branch outputs ``outs`` joined along batched axis ``axis``."""
    shapes = list(outs.values())
    if any(len(s) < axis for s in shapes):
        raise ValueError(f"concat: axis {axis} needs outputs of rank >= {axis}, but {dict(outs)}")
    rest = {k: s[: axis - 1] + s[axis:] for k, s in outs.items()}
    if len(set(rest.values())) > 1:
        got = ", ".join(f"{k} gives {s}" for k, s in outs.items())
        raise ValueError(f"concat: outputs may differ only along axis {axis}, but {got}")
    size = sum(s[axis - 1] for s in shapes)
    return (*shapes[0][: axis - 1], size, *shapes[0][axis:])


def concat(*branches: Layer, axis: int = 1, name: str | None = None) -> Layer:
    """Run every branch on the same input and join their outputs along ``axis``.

    ``axis`` counts the batch axis (``1``: channels of ``(N, C, H, W)``; axis 0 cannot be
    joined). Per-sample output shapes may differ only along that axis. Branches are
    named as ``sequential``'s children (``block1``, ``conv1``, ... or a ``name=``); params
    key by those names; kind ``concat``. Backward: each branch gets its slice of ``dy``
    and ``dx`` is the sum of the branches' (docs/residual.md).
    """
    if not branches:
        raise ValueError("concat: needs at least one branch")
    if isinstance(axis, bool) or not isinstance(axis, int) or axis < 1:
        raise ValueError(f"concat: axis must be an int >= 1 (axis 0 is the batch), got {axis!r}")
    _check_layers(branches, "concat")
    names = _child_names(branches, "concat")
    children = tuple(zip(names, branches, strict=True))

    def init_fn(
        rng: np.random.Generator, in_shape: Shape, dtype: DTypeLike
    ) -> tuple[Params, State, Shape]:
        params: Params = {}
        state: State = {}
        outs: dict[str, Shape] = {}
        for key, layer in children:
            p, s, outs[key] = _init_child(key, layer, rng, tuple(in_shape), dtype)
            params.update({key: p} if p else {})
            state.update({key: s} if s else {})
        return params, state, _joined_shape(axis, outs)

    def apply(params: Params, state: State, x: Array, ctx: Context) -> tuple[Array, Any, State]:
        _check_keys(params, names, "params", "concat")
        _check_keys(state, names, "state", "concat")
        ys: list[Array] = []
        caches: list[Any] = []
        new_state: State = {}
        for key, layer in children:
            try:
                y, c, s = layer.apply(params.get(key, {}), state.get(key, {}), x, ctx)
            except (ValueError, TypeError) as err:
                reraise_with_path(key, err)
            ys.append(y)
            caches.append(c)
            new_state.update({key: s} if s else {})
        _joined_shape(axis, {k: tuple(y.shape[1:]) for k, y in zip(names, ys, strict=True)})
        if len({y.dtype for y in ys}) > 1:
            got = ", ".join(f"{k} gives {y.dtype}" for k, y in zip(names, ys, strict=True))
            raise TypeError(f"concat: the branches' outputs must share one dtype, but {got}")
        sizes = tuple(int(y.shape[axis]) for y in ys)
        y_all = namespace(*ys).concatenate(ys, axis=axis)
        return y_all, ConcatCache(tuple(caches), sizes, (x.shape, x.dtype)), new_state

    def slices(cache: ConcatCache, dy: Array) -> list[Array]:
        """dy's part for each branch: its sizes along ``axis``, in order (views)."""
        bounds = [int(b) for b in np.cumsum((0, *cache.sizes))]
        lead = (slice(None),) * axis
        return [dy[(*lead, slice(a, b))] for a, b in itertools.pairwise(bounds)]

    def walk_back(cache: ConcatCache, dy: Array, need_dx: bool) -> tuple[list[Array], Params]:
        """Each branch's backward on its slice of dy: the branches' dx and the grads."""
        grads: Params = {}
        dxs: list[Array] = []
        for (key, layer), c, dy_k in zip(children, cache.caches, slices(cache, dy), strict=True):
            try:
                if need_dx:
                    dx_k, g = layer.backward(c, dy_k)
                    _check_dx(dx_k, cache.x)
                    dxs.append(dx_k)
                else:
                    g = param_grads(layer, c, dy_k)
            except (ValueError, TypeError) as err:
                reraise_with_path(key, err)
            grads.update({key: g} if g else {})
        return dxs, grads

    def backward_fn(cache: ConcatCache, dy: Array) -> tuple[Array, Params]:
        dxs, grads = walk_back(cache, dy, need_dx=True)
        if len(dxs) == 1:
            return dxs[0], grads
        dx: Array = dxs[0] + dxs[1]  # x feeds every branch: their gradients add
        for dx_k in dxs[2:]:
            dx += dx_k  # into our own new array
        return dx, grads

    def param_grads_fn(cache: ConcatCache, dy: Array) -> Params:
        return walk_back(cache, dy, need_dx=False)[1]

    spec = {
        "type": "Concat",
        "axis": axis,
        "branches": [{"name": n, **layer.spec} for n, layer in children],
    }
    return Layer(
        kind="concat",
        init=init_fn,
        apply=apply,
        backward=backward_fn,
        spec=spec,
        name=name,
        children=branches,
        param_grads=param_grads_fn,
    )


def named_children(layer: Layer) -> tuple[tuple[str, Layer], ...]:
    """A container's children with the names its params key them by; ``()`` for a leaf.

    ``sequential`` and ``concat``: the names in their spec; ``residual``: ``"block"`` and,
    when there is one, ``"shortcut"``. A layer of another kind is a leaf here.
    """
    kind = layer.spec.get("type")
    if kind == "Residual" and layer.children:
        return tuple(zip(("block", "shortcut"), layer.children, strict=False))
    entries = layer.spec.get({"Sequential": "layers", "Concat": "branches"}.get(str(kind), ""))
    if not isinstance(entries, list) or len(entries) != len(layer.children):
        return ()
    names = [e.get("name") if isinstance(e, Mapping) else None for e in entries]
    if not all(isinstance(n, str) for n in names):
        return ()
    return tuple(zip((str(n) for n in names), layer.children, strict=True))


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
