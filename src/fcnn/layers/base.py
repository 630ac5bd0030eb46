"""The layer protocol shared by every layer and by the composer
(docs/architecture.md#layer-protocol).

A *pure pair* is the public form of a layer::

    y, cache = <op>_fwd(params, x, cfg, **extras)
    dx, grads = <op>_bwd(cache, dy)            # grads has exactly the keys of params

``extras`` are keyword-only and declared by the pairs that need them: ``train``
(bool: batch norm, dropout), ``rng`` (a ``numpy.random.Generator``: dropout) and
``state`` (batch norm's running statistics, a dict of arrays). A pair never
returns more than ``(y, cache)``: new state leaves by one route, the cache's
``state`` field (``cache.state``), read by the ``Layer`` wrapper below.

A ``Layer`` record is the composer's form. It gives every layer one internal
shape, whatever it needs (state, randomness, a train flag)::

    params, state, out_shape = layer.init(rng, in_shape, dtype)     # shapes without batch
    y, cache, state = layer.apply(params, state, x, ctx)
    dx, grads = layer.backward(cache, dy)

``pair_layer`` wraps any pair into that shape, passing ``ctx.train``, ``ctx.rng``
and the layer's state only to pairs that declare those keywords, so the composer
never has a second implementation of any layer. ``layer`` is the same wrapper
for a user's own pair, with defaults for everything but the pair itself::

    model = fcnn.sequential(fcnn.Dense(16), fcnn.layer(my_fwd, my_bwd), fcnn.Dense(10))

``rebuildable`` marks a function that builds such a layer, so that a model containing
it can be rebuilt from its spec (``fcnn.from_spec``, checkpoints): the spec then
records the function's import path and arguments, and rebuilding imports it only when
the caller trusts the code (docs/architecture.md#specs).
"""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, is_dataclass, replace
from typing import Any, NoReturn

import numpy as np
from numpy.typing import DTypeLike, NDArray

__all__ = [
    "ApplyFn",
    "Array",
    "BackwardFn",
    "Context",
    "InitFn",
    "Layer",
    "ParamGradsFn",
    "Params",
    "Shape",
    "State",
    "keep_shape_init",
    "layer",
    "pair_layer",
    "rebuildable",
    "reraise_with_path",
    "to_spec",
]

Array = NDArray[Any]
Params = dict[str, Any]
State = dict[str, Any]
Shape = tuple[int, ...]

InitFn = Callable[[np.random.Generator, Shape, DTypeLike], tuple[Params, State, Shape]]
ApplyFn = Callable[[Params, State, Array, "Context"], tuple[Array, Any, State]]
BackwardFn = Callable[[Any, Array], tuple[Array, Params]]
ParamGradsFn = Callable[[Any, Array], Params]


@dataclass(frozen=True)
class Context:
    """What a forward pass may depend on besides params, state and input.

    ``train`` switches batch norm and dropout to their training behaviour;
    ``rng`` is the only source of randomness a layer may use (never NumPy's
    global state): a ``numpy.random.Generator`` for NumPy arrays, a generator of the
    arrays' own library on a device (``fcnn.device_generator``). Layers that need
    ``rng`` in training raise if it is ``None``.
    """

    train: bool = False
    rng: np.random.Generator | Any | None = None


@dataclass(frozen=True)
class Layer:
    """A layer as the composer sees it: three functions and a description.

    ``kind`` is the stem of auto-generated names (``conv`` -> ``conv1``);
    ``spec`` is a JSON-able description of the constructor call (stored with
    checkpoints, read by exporters); ``children`` is non-empty for containers.
    ``param_grads(cache, dy) -> grads``, when given, equals ``backward(cache, dy)[1]``
    but skips ``dx``: the composer uses it for a model's first layer, whose input
    needs no gradient. A ``Layer`` holds no arrays and never changes.
    """

    kind: str
    init: InitFn
    apply: ApplyFn
    backward: BackwardFn
    spec: Mapping[str, Any] = field(default_factory=dict)
    name: str | None = None
    children: tuple[Layer, ...] = ()
    param_grads: ParamGradsFn | None = None


def pair_layer(
    kind: str,
    fwd: Callable[..., tuple[Array, Any]],
    bwd: BackwardFn,
    cfg: Any,
    init: InitFn,
    spec: Mapping[str, Any],
    name: str | None = None,
    param_grads: ParamGradsFn | None = None,
) -> Layer:
    """Wrap a pure pair ``fwd(params, x, cfg, **extras)`` / ``bwd(cache, dy)`` as a ``Layer``.

    Every argument explicit (the library's constructors use it); for your own pair,
    ``layer(fwd, bwd)`` fills in defaults.

    Of ``train``, ``rng`` and ``state``, ``fwd`` gets the keywords it declares (from
    ``ctx`` and the layer's state); a pair that takes ``state`` returns the new one as
    ``cache.state``. ``param_grads(cache, dy)``: optional, ``bwd(cache, dy)[1]``
    without computing ``dx``.
    """
    declared = inspect.signature(fwd).parameters
    wants_train, wants_rng, wants_state = (
        "train" in declared,
        "rng" in declared,
        "state" in declared,
    )

    def apply(params: Params, state: State, x: Array, ctx: Context) -> tuple[Array, Any, State]:
        extras: dict[str, Any] = {}
        if wants_train:
            extras["train"] = bool(ctx.train)
        if wants_rng:
            extras["rng"] = ctx.rng
        if wants_state:
            extras["state"] = state
        y, cache = fwd(params, x, cfg, **extras)
        return y, cache, cache.state if wants_state else state

    return Layer(
        kind=kind,
        init=init,
        apply=apply,
        backward=bwd,
        spec=dict(spec),
        name=name,
        param_grads=param_grads,
    )


def keep_shape_init(
    rng: np.random.Generator, in_shape: Shape, dtype: DTypeLike
) -> tuple[Params, State, Shape]:
    """The init of a layer without parameters or state that keeps its input's shape.

    in_shape: the per-sample shape, e.g. (C, H, W) -> ``({}, {}, (C, H, W))``.
    """
    return {}, {}, tuple(in_shape)


def layer(
    fwd: Callable[..., tuple[Array, Any]],
    bwd: BackwardFn,
    cfg: Any = None,
    *,
    init: InitFn | None = None,
    name: str | None = None,
    kind: str | None = None,
    spec: Mapping[str, Any] | None = None,
    param_grads: ParamGradsFn | None = None,
) -> Layer:
    """Turn your own pure pair into a ``Layer`` that ``sequential`` composes.

    ``fwd(params, x, cfg) -> (y, cache)`` and ``bwd(cache, dy) -> (dx, grads)``
    (grads with exactly params' keys; ``{}`` without params), x: (N, ...) -> y: (N, ...).
    ``fwd`` may also declare the keywords ``train``, ``rng`` and ``state``
    (see this module's docstring); it gets those it declares. The rest is optional:

    - ``cfg``: passed unchanged to every ``fwd`` call (default ``None``).
    - ``init(rng, in_shape, dtype) -> (params, state, out_shape)``: makes the
      layer's initial params (arrays of ``dtype``, drawn only from ``rng``) and
      state for one sample of per-sample shape ``in_shape`` (no batch axis), and
      says the per-sample output shape, so that the next layer's sizes are inferred.
      Default ``keep_shape_init``: no params, no state, output shaped like the input
      (right for elementwise layers; give ``init`` for anything else).
    - ``kind``: the stem of the automatic name (``kind="gelu"`` -> ``gelu1``,
      the path in messages and in the params tree). Default: ``fwd``'s name
      without a trailing ``_fwd`` (``gelu_fwd`` -> ``gelu``), else ``"layer"``.
    - ``name``: this layer's own name in the model instead of the automatic one.
    - ``spec``: the JSON-able description stored in checkpoints (and compared when
      loading them) and read by exporters. Default ``{"type": kind}`` plus the fields
      of ``cfg`` when it is a dataclass. ONNX export knows only the library's types.
      To rebuild a model with this layer from its spec, build the layer in a function
      marked ``@fcnn.rebuildable`` (see ``rebuildable``).
    - ``param_grads(cache, dy) -> grads``: ``bwd(cache, dy)[1]`` without ``dx``.

    Without ``init``, ``fwd`` must return ``y`` shaped like ``x``; one that does not raises
    ``ValueError`` naming the layer and asking for an ``init``.
    Raises ``TypeError`` if ``fwd``, ``bwd`` or ``init`` is not callable.
    """
    for what, fn in (("fwd", fwd), ("bwd", bwd), ("init", init)):
        if (fn is not None or what != "init") and not callable(fn):
            raise TypeError(f"layer: {what} must be a function, got {type(fn).__name__}")
    kind = kind or _kind_of(fwd)
    if spec is None:
        spec = to_spec(kind, cfg if is_dataclass(cfg) and not isinstance(cfg, type) else None)
    if init is None:
        fwd = _shape_kept(fwd, kind)
    return pair_layer(kind, fwd, bwd, cfg, init or keep_shape_init, spec, name, param_grads)


def _shape_kept(fwd: Callable[..., tuple[Array, Any]], kind: str) -> Callable[..., Any]:
    """``fwd`` checked to keep x's shape: what the default ``keep_shape_init`` told the next
    layer. One tuple comparison per call; the keywords ``fwd`` declares stay visible to
    ``pair_layer`` (``functools.wraps`` keeps its signature)."""

    @functools.wraps(fwd)
    def checked(params: Params, x: Array, cfg: Any, **extras: Any) -> tuple[Array, Any]:
        y, cache = fwd(params, x, cfg, **extras)
        if getattr(y, "shape", None) != x.shape:
            got = getattr(y, "shape", type(y).__name__)
            raise ValueError(
                f"{kind}: fwd turned x of shape {tuple(x.shape)} into {got}, but the layer was "
                "made without init=, which says the shape is kept; give fcnn.layer an "
                "init(rng, in_shape, dtype) that returns the output shape"
            )
        return y, cache

    return checked


def rebuildable(builder: Callable[..., Layer]) -> Callable[..., Layer]:
    """Mark ``builder``, a module-level function that returns a ``Layer``, as the way to
    rebuild that layer from a spec. Use it as a decorator::

        # mynets.py
        @fcnn.rebuildable
        def gate(channels: int = 3) -> fcnn.Layer:
            return fcnn.layer(gate_fwd, gate_bwd, init=gate_init)

    The layer ``gate(channels=4)`` returns gets the spec ``{"type": "gate", "builder":
    "mynets:gate", "channels": 4}``: the function's name, its import path and every
    argument (defaults filled in; ``name`` excluded, a container stores it). Arguments
    must be JSON values (numbers, strings, booleans, None, lists, dicts); tuples are
    stored as lists. ``fcnn.from_spec`` calls the function again with those arguments,
    importing it only when told to trust the code (``trust_code=True``), or calls the
    function you pass it (``layers={"gate": gate}``) without importing anything.

    Raises ``TypeError`` at decoration for a function defined inside another one (it
    could not be imported by path) or one taking ``*args``/``**kwargs``, and when called
    for arguments that are not JSON values or a result that is not a ``Layer``.
    """
    path = import_path(builder)
    sig = inspect.signature(builder)
    for p in sig.parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            star = "*" if p.kind == p.VAR_POSITIONAL else "**"
            raise TypeError(f"rebuildable: {path} takes {star}{p.name}: name every argument")

    @functools.wraps(builder)
    def build(*args: Any, **kwargs: Any) -> Layer:
        bound = sig.bind(*args, **kwargs)
        bound.apply_defaults()
        fields = {k: _jsonable(v) for k, v in bound.arguments.items() if k != "name"}
        try:
            stored = json.loads(json.dumps(fields))
        except (TypeError, ValueError) as err:
            raise TypeError(f"rebuildable: {path}'s arguments must be JSON values ({err})") from err
        if stored != fields:  # e.g. a dict with int keys, or NaN
            raise TypeError(f"rebuildable: {path}'s arguments do not survive JSON: {fields!r}")
        built = builder(*args, **kwargs)
        if not isinstance(built, Layer):
            raise TypeError(f"rebuildable: {path} returned a {type(built).__name__}, not a Layer")
        spec = {"type": builder.__name__, "builder": path, **fields}
        return replace(built, spec=spec)

    return build


def import_path(fn: Callable[..., Any]) -> str:
    """``"module:qualname"``, the path ``fcnn.from_spec`` imports ``fn`` by.

    Raises ``TypeError`` for a function that has no such path (a lambda, a function
    defined inside another).
    """
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", "")
    if not isinstance(module, str) or not qualname or "<" in qualname:
        raise TypeError(
            f"rebuildable: {qualname or repr(fn)} cannot be imported by path (module {module!r}); "
            "define it at the top level of a module"
        )
    return f"{module}:{qualname}"


def _kind_of(fwd: Callable[..., Any]) -> str:
    """``gelu_fwd`` -> ``gelu``; a lambda or an odd name -> ``layer``."""
    stem = getattr(fwd, "__name__", "")
    stem = stem.removesuffix("_fwd")
    return stem if stem.isidentifier() else "layer"


def reraise_with_path(name: str, err: Exception) -> NoReturn:
    """Re-raise a ``ValueError``/``TypeError`` with the layer's name prepended to its path.

    Nested containers call this at every level, so a message reads
    ``block1/conv2: conv2d: x has 3 channels but w expects 1``.
    """
    if type(err) not in (ValueError, TypeError):
        raise err
    path = getattr(err, "fcnn_path", None)
    msg = getattr(err, "fcnn_msg", str(err))
    new_path = f"{name}/{path}" if path else name
    new = type(err)(f"{new_path}: {msg}")
    new.fcnn_path = new_path  # type: ignore[attr-defined]
    new.fcnn_msg = msg  # type: ignore[attr-defined]
    raise new from err


def to_spec(type_name: str, cfg: Any = None, **args: Any) -> dict[str, Any]:
    """A layer's JSON description: its type, the constructor's own ``args``, then cfg's fields.

    Tuples become lists, so the spec equals its JSON round trip.
    """
    spec = {"type": type_name, **args}
    if cfg is not None:
        spec.update({f.name: getattr(cfg, f.name) for f in fields(cfg)})
    return {k: _jsonable(v) for k, v in spec.items()}


def _jsonable(v: Any) -> Any:
    """Tuples become lists, in lists and dicts too."""
    if isinstance(v, Mapping):
        return {k: _jsonable(e) for k, e in v.items()}
    return [_jsonable(e) for e in v] if isinstance(v, tuple | list) else v
