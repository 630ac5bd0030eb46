"""Declared input checks shared by the layers (docs/architecture.md#checks).

Each op states its inputs once, in the shape notation of its docstring, and one
checker enforces them and writes every message::

    _SIG = Signature("dense", x="(N, D_in)", y="(N, D_out)",
                     params={"w": "(D_in, D_out)", "b": "(D_out,)"}, words={"D_in": "feature"})
    w, b = _SIG.check(params, x, cfg)             # in dense_fwd
    _SIG.check_dy(dy, x=cache.x, w=cache.w)       # in dense_bwd: dy must be (N, D_out)

The rules: ``params`` (and ``state``, where declared) is a dict with exactly the
declared keys; ``cfg`` has the declared type (``None``: the op takes none);
keyword extras (``train``, ``rng``) have their declared types; every array is a
floating array, all of one dtype (no silent promotion); each has its declared
rank (``"(N, ...)"``: at least the named axes); and every dimension name means
one size across the arrays (params bind first, then ``x``, then the state), so a
mismatch names the dimension: ``conv2d: x has 3 channels (C) but w expects 1``.
Every error is a ``ValueError``/``TypeError`` that starts with the op's name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..ops.xp import namespace

__all__ = [
    "RNG",
    "TRAIN",
    "Extra",
    "Signature",
    "check_float",
    "positive_int",
    "prefixed",
]


@dataclass(frozen=True)
class Extra:
    """A keyword argument beyond ``(params, x, cfg)``: the types it may have, and their words.

    ``also``: a test for values of other types that are welcome too.
    """

    types: tuple[type, ...]
    what: str
    also: Callable[[Any], bool] | None = None

    def accepts(self, value: Any) -> bool:
        return isinstance(value, self.types) or (self.also is not None and self.also(value))


def _device_generator(value: Any) -> bool:
    """A device library's generator (``cupy.random.Generator``): draws with ``random``."""
    return callable(getattr(value, "random", None)) and callable(getattr(value, "integers", None))


TRAIN = Extra((bool, np.bool_), "a bool")
RNG = Extra(
    (np.random.Generator, type(None)),
    "a numpy.random.Generator",
    _device_generator,
)


def _parse(layout: str) -> tuple[tuple[str, ...], bool]:
    """The axis names of a layout before a trailing ``...``, and whether it is there.

    ``"(N, C, H, W)"`` -> ``(("N", "C", "H", "W"), False)``; ``"(N, ...)"`` -> ``(("N",), True)``.
    """
    names = tuple(part.strip() for part in layout.strip()[1:-1].split(",") if part.strip())
    if names and names[-1] == "...":
        return names[:-1], True
    return names, False


def _plural(word: str, n: int) -> str:
    return word if n == 1 else word + "s"


@dataclass(frozen=True)
class Signature:
    """What an op's forward takes, declared once; ``check``/``check_dy``/``check_init`` enforce it.

    ``x``/``y``: layouts with the batch axis (``y`` defaults to ``x``); ``params``/``state``:
    key -> layout; ``cfg``: the cfg type or ``None``; ``extras``: keyword -> ``Extra``;
    ``words``: dimension -> singular noun for messages; ``at_least_one``: dimensions
    that may not be 0; ``rank_hint``: appended when an input has more axes than declared.
    """

    op: str
    x: str
    params: Mapping[str, str] = field(default_factory=dict)
    y: str | None = None
    cfg: type | None = None
    state: Mapping[str, str] | None = None
    extras: Mapping[str, Extra] = field(default_factory=dict)
    words: Mapping[str, str] = field(default_factory=dict)
    at_least_one: tuple[str, ...] = ()
    rank_hint: str = ""

    def __post_init__(self) -> None:
        layouts = {"x": self.x, "y": self.y or self.x, **self.params}
        layouts.update({f"state {k}": v for k, v in (self.state or {}).items()})
        object.__setattr__(self, "_layouts", {k: (v, *_parse(v)) for k, v in layouts.items()})

    def check(self, params: Any, x: Any, cfg: Any, **extras: Any) -> tuple[Any, ...]:
        """Validate a forward's arguments; return the param arrays in declared order."""
        op = self.op
        if self.cfg is None and cfg is not None:
            raise TypeError(f"{op}: takes no cfg, got {type(cfg).__name__}")
        if self.cfg is not None and not isinstance(cfg, self.cfg):
            raise TypeError(f"{op}: cfg must be a {self.cfg.__name__}, got {type(cfg).__name__}")
        for key, extra in self.extras.items():
            if not extra.accepts(extras[key]):
                raise TypeError(
                    f"{op}: {key} must be {extra.what}, got {type(extras[key]).__name__}"
                )
        _check_keys(params, self.params, op, "params")
        arrays = [(k, params[k]) for k in self.params]
        arrays.append(("x", x))
        if self.state is not None:
            state = extras["state"]
            _check_keys(state, self.state, op, "state")
            arrays += [(f"state {k}", state[k]) for k in self.state]
        for name, a in arrays:
            check_float(a, op, name)
        _check_one_library(arrays, op)
        if any(a.dtype != x.dtype for _, a in arrays):
            got = [f"{k.replace(' ', '_')} is {a.dtype}" for k, a in arrays if k != "x"]
            raise TypeError(f"{op}: dtypes must match, but {', '.join([f'x is {x.dtype}', *got])}")
        self._bind(arrays)
        return tuple(params[k] for k in self.params)

    def _bind(self, arrays: Iterable[tuple[str, Any]]) -> dict[str, Any]:
        """Check ranks and that each dimension name has one size; return the sizes."""
        op, dims, owner = self.op, dict[str, Any](), dict[str, str]()
        for name, a in arrays:
            layout, names, open_ = self._layouts[name]  # type: ignore[attr-defined]
            shape = tuple(a.shape)
            if names and not open_ and all(d in dims for d in names):  # b, gamma, state
                expected = tuple(dims[d] for d in names)
                if shape != expected:
                    raise ValueError(
                        f"{op}: {name} must have shape {layout} = {expected}, got {shape}"
                    )
                continue
            if len(shape) < len(names) or (len(shape) > len(names) and not open_):
                at = ">= " if open_ else ""
                hint = f"; {self.rank_hint}" if self.rank_hint and len(shape) > len(names) else ""
                want = f"rank {at}{len(names)} {layout}"
                raise ValueError(f"{op}: {name} must have {want}, got shape {shape}{hint}")
            for d in self.at_least_one:
                if d in names and shape[names.index(d)] < 1:
                    raise ValueError(
                        f"{op}: {name} must have at least 1 {self.words.get(d, d)}, "
                        f"got shape {shape}"
                    )
            for d, n in zip(names, shape, strict=False):
                if d in dims and dims[d] != n:
                    word = self.words.get(d)
                    has = f"{n} {_plural(word, n)} ({d})" if word else f"{d} = {n}"
                    raise ValueError(f"{op}: {name} has {has} but {owner[d]} expects {dims[d]}")
                dims.setdefault(d, n)
                owner.setdefault(d, name)
            if open_:
                dims["..."] = shape[len(names) :]
        return dims

    def check_dy(self, dy: Any, **known: Any) -> None:
        """A backward's ``dy``: a float array of y's declared shape and dtype.

        ``known`` names cached arrays (or shape tuples) by their declared names
        (``x``, a param key, or ``y``); their sizes give y's shape, the first array's
        dtype gives y's dtype.
        """
        op = self.op
        check_float(dy, op, "dy")
        dims: dict[str, Any] = {}
        dtype = None
        for name, v in known.items():
            _, names, open_ = self._layouts[name]  # type: ignore[attr-defined]
            shape = tuple(v) if isinstance(v, tuple) else tuple(v.shape)
            dims.update(zip(names, shape, strict=False))
            if open_:
                dims["..."] = shape[len(names) :]
            if dtype is None and not isinstance(v, tuple):
                dtype = v.dtype
        _, out, out_open = self._layouts["y"]  # type: ignore[attr-defined]
        y_shape = tuple(dims[d] for d in out) + (dims["..."] if out_open else ())
        if tuple(dy.shape) != y_shape:
            raise ValueError(f"{op}: dy must have the shape of y {y_shape}, got {tuple(dy.shape)}")
        if dy.dtype != dtype:
            raise TypeError(
                f"{op}: dtypes must match, but y is {np.dtype(dtype)}, dy is {dy.dtype}"
            )

    def kept_shape_init(
        self, rng: np.random.Generator, in_shape: Iterable[Any], dtype: Any
    ) -> tuple[dict[str, Any], dict[str, Any], tuple[int, ...]]:
        """The init of a layer without params or state whose output keeps its input's
        shape (elementwise layers, dropout): ``({}, {}, check_init(in_shape, dtype))``.
        Pass the bound method as the layer's ``init``."""
        return {}, {}, self.check_init(in_shape, dtype)

    def check_init(self, in_shape: Iterable[Any], dtype: Any) -> tuple[int, ...]:
        """A layer's ``init``: the per-sample shape (x's layout without N, sizes >= 1) and a
        floating dtype. Returns the shape as a tuple of ints."""
        _, names, open_ = self._layouts["x"]  # type: ignore[attr-defined]
        per_sample = "(" + ", ".join([*names[1:], *(["..."] if open_ else [])])
        per_sample += ",)" if len(names) == 2 and not open_ else ")"
        shape = tuple(int(d) for d in in_shape)
        rank = len(names) - 1
        if (len(shape) < rank or (len(shape) > rank and not open_)) or min(shape, default=1) < 1:
            hint = f"; {self.rank_hint}" if self.rank_hint and len(shape) > rank else ""
            raise ValueError(
                f"{self.op}: input shape must be {per_sample} (no batch axis), got {shape}{hint}"
            )
        if not np.issubdtype(np.dtype(dtype), np.floating):
            raise TypeError(f"{self.op}: dtype must be a floating dtype, got {np.dtype(dtype)}")
        return shape


def check_float(x: Any, op: str, name: str = "x") -> None:
    """``TypeError`` unless ``x`` is an array with a floating dtype."""
    if type(x) is np.ndarray and x.dtype.kind == "f":
        return  # the common case, without the generic dtype machinery
    dtype = getattr(x, "dtype", None)
    if dtype is None or not hasattr(x, "shape"):
        raise TypeError(f"{op}: {name} must be an array, got {type(x).__name__}")
    if not np.issubdtype(dtype, np.floating):
        raise TypeError(f"{op}: {name} must have a floating dtype, got {dtype}")


def _check_one_library(arrays: list[tuple[str, Any]], op: str) -> None:
    """``TypeError`` unless every array is of one library (NumPy, CuPy, ...)."""
    if all(type(a) is np.ndarray for _, a in arrays):
        return  # the common case on the host, without a namespace look-up
    try:
        namespace(*(a for _, a in arrays))
    except TypeError:
        libs = [f"{k.replace(' ', '_')} is {namespace(a).__name__}" for k, a in arrays]
        raise TypeError(
            f"{op}: arrays must be of one library, but {', '.join(libs)}; move them to one "
            "device first (fcnn.to_device / fcnn.to_host)"
        ) from None


def _check_keys(d: Any, keys: Iterable[str], op: str, what: str) -> None:
    """``what`` must be a dict with exactly ``keys``."""
    if not isinstance(d, Mapping):
        raise TypeError(f"{op}: {what} must be a dict, got {type(d).__name__}")
    expected, got = set(keys), set(d.keys())
    if got != expected:
        missing, extra = sorted(expected - got), sorted(got - expected)
        parts = [f"missing {missing}"] if missing else []
        parts += [f"unexpected {extra}"] if extra else []
        raise ValueError(
            f"{op}: {what} must have keys {sorted(expected)}, got {sorted(got)} "
            f"({', '.join(parts)})"
        )


def positive_int(v: Any, op: str, name: str) -> int:
    """A constructor's count (``out_features``, ``out_channels``): an int >= 1."""
    if isinstance(v, bool) or not isinstance(v, int | np.integer):
        raise TypeError(f"{op}: {name} must be an int, got {v!r}")
    if v < 1:
        raise ValueError(f"{op}: {name} must be >= 1, got {v!r}")
    return int(v)


@contextmanager
def prefixed(op: str) -> Iterator[None]:
    """Prefix ``op`` to a ``ValueError`` raised inside (a kernel's "no window fits")."""
    try:
        yield
    except ValueError as err:
        raise ValueError(f"{op}: {err}") from None
