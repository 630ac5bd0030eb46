"""``foreign``: a test double of a device array library, NumPy's arithmetic behind a type
NumPy does not know (tests/test_namespace.py; docs/gpu.md).

CI has no GPU, so the suite proves on the CPU that the library never mixes libraries:
every pair, loss, optimizer and training step is run on ``ForeignArray`` inputs and must
give ``ForeignArray`` outputs equal to NumPy's. The double is stricter than CuPy:

- An array of the double names its namespace (``__array_namespace__``), which is this
  module; ``foreign.zeros``, ``foreign.maximum``, ... forward to NumPy's and wrap the result.
- A NumPy array anywhere in a foreign computation raises ``ForeignMixError``: as an
  operand (``f + n``, ``n + f``), an index, a value to set, an argument of a ``foreign``
  function, or a NumPy function applied to a foreign array (``np.sum(f)``). So a
  ``np.zeros`` left in a kernel makes the kernel fail, whichever way it is combined.
- Implicit conversions to NumPy raise (as in CuPy); ``asnumpy``/``get`` are explicit.
- Inside ``strict()``, every host round trip raises ``HostSyncError``: a value read on
  the host (``bool``, ``float``, ``int``, ``item``, formatting, ``asnumpy``, a boolean
  mask as an index, whose count CuPy reads on the host) and an array made from host data
  (``asarray`` of a NumPy array, a list or a number). A training
  step runs under ``strict()`` in the tests: it neither waits on the device nor uploads.

``calls`` counts the operations that would each launch at least one kernel on a GPU
(every function that returns an array, every operator, reduction and copy); the
benchmarks' "kernels per step" comes from it.
"""

from __future__ import annotations

import contextlib
import operator
import sys
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

Arr = np.ndarray[Any, Any]


class ForeignMixError(TypeError):
    """A NumPy array met a foreign one."""


class HostSyncError(RuntimeError):
    """A host round trip inside ``strict()``."""


_strict = [False]
calls = [0]  # array-producing operations since the last reset (a proxy for kernel launches)
transfers = [0]  # host round trips since the last reset


def reset_counts() -> None:
    calls[0] = 0
    transfers[0] = 0


@contextlib.contextmanager
def strict() -> Iterator[None]:
    """Make every host round trip raise ``HostSyncError`` inside the block."""
    old = _strict[0]
    _strict[0] = True
    try:
        yield
    finally:
        _strict[0] = old


def _host(what: str) -> None:
    transfers[0] += 1
    if _strict[0]:
        raise HostSyncError(f"foreign: {what} is a host round trip (inside strict())")


def _unwrap(v: Any, where: str) -> Any:
    """Foreign arrays to their NumPy buffers, recursively; NumPy arrays raise."""
    if isinstance(v, ForeignArray):
        return v._a
    if isinstance(v, np.ndarray):
        raise ForeignMixError(
            f"foreign: a numpy array (shape {v.shape}, {v.dtype}) in {where}; "
            "make it with the input's namespace"
        )
    if isinstance(v, list | tuple):
        return type(v)(_unwrap(e, where) for e in v)
    if isinstance(v, dict):
        return {k: _unwrap(e, where) for k, e in v.items()}
    if isinstance(v, WeakScalar):
        return v.value
    return v


def _wrap(v: Any, inputs: tuple[Any, ...] = ()) -> Any:
    """NumPy results as foreign arrays (a NumPy scalar result becomes 0-d, as in CuPy).

    Counts a result that is new memory (not a view, not one of ``inputs`` handed back).
    """
    if isinstance(v, np.ndarray):
        if v.base is None and not any(v is a for a in inputs):
            calls[0] += 1
        return ForeignArray(v)
    if isinstance(v, np.generic):
        calls[0] += 1
        return ForeignArray(np.asarray(v))
    if isinstance(v, tuple):
        return tuple(_wrap(e, inputs) for e in v)
    if isinstance(v, list):
        return [_wrap(e, inputs) for e in v]
    return v


def _flat(vs: Any) -> list[Any]:
    """The NumPy arrays among ``vs``, one level of lists and tuples deep."""
    out: list[Any] = []
    for v in vs:
        if isinstance(v, list | tuple):
            out += [e for e in v if isinstance(e, np.ndarray)]
        elif isinstance(v, np.ndarray):
            out.append(v)
    return out


def _forward(fn: Callable[..., Any], name: str) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        where = f"foreign.{name}"
        args, kwargs = _unwrap(args, where), _unwrap(kwargs, where)
        if "out" in kwargs:
            calls[0] += 1  # the result is the given buffer, written by one kernel
        return _wrap(fn(*args, **kwargs), (*_flat(args), *_flat(kwargs.values())))

    call.__name__ = name
    return call


def _check_mask(key: Any) -> None:
    """A boolean array as an index selects a number of elements only the device knows: CuPy
    reads that count on the host (a wait), so the double counts it as a round trip."""
    for k in key if isinstance(key, tuple) else (key,):
        if isinstance(k, ForeignArray) and k.dtype == np.bool_:
            _host("a boolean mask as an index (its count is read on the host)")


class ForeignArray:
    """A NumPy array in disguise; see the module docstring for what it refuses."""

    __slots__ = ("_a",)

    def __init__(self, a: Arr) -> None:
        assert isinstance(a, np.ndarray)
        self._a = a

    # --- what the array API says about an array
    def __array_namespace__(self, api_version: Any = None) -> Any:
        return sys.modules[__name__]

    # --- metadata (no device work)
    shape = property(lambda self: self._a.shape)
    ndim = property(lambda self: self._a.ndim)
    dtype = property(lambda self: self._a.dtype)
    size = property(lambda self: self._a.size)
    strides = property(lambda self: self._a.strides)
    itemsize = property(lambda self: self._a.itemsize)
    nbytes = property(lambda self: self._a.nbytes)
    flags = property(lambda self: self._a.flags)
    T = property(lambda self: _wrap(self._a.T))

    def __len__(self) -> int:
        return len(self._a)

    def __repr__(self) -> str:
        return f"foreign.ForeignArray(shape={self.shape}, dtype={self.dtype})"

    # --- NumPy must not take it in
    def __array__(self, *args: Any, **kwargs: Any) -> Any:
        raise ForeignMixError(
            "foreign: implicit conversion to a numpy array; use foreign.asnumpy (to_host)"
        )

    def __array_ufunc__(self, ufunc: Any, method: str, *inputs: Any, **kwargs: Any) -> Any:
        # A NumPy scalar on the left (np.float32(2) * f) is fine, as in CuPy; an array is not.
        scalars_only = all(
            isinstance(v, ForeignArray | np.generic | int | float | bool) for v in inputs
        )
        if method != "__call__" or kwargs or not scalars_only:
            raise ForeignMixError(
                f"foreign: numpy.{ufunc.__name__} called with a foreign array; "
                f"use xp.{ufunc.__name__} and no numpy arrays"
            )
        return _wrap(ufunc(*_unwrap(inputs, f"numpy.{ufunc.__name__}")))

    def __array_function__(self, func: Any, types: Any, args: Any, kwargs: Any) -> Any:
        raise ForeignMixError(
            f"foreign: numpy.{func.__name__} called on a foreign array; use xp.{func.__name__}"
        )

    # --- host round trips
    def __bool__(self) -> bool:
        _host("bool(array)")
        return bool(self._a)

    def __float__(self) -> float:
        _host("float(array)")
        return float(self._a)

    def __int__(self) -> int:
        _host("int(array)")
        return int(self._a)

    def __index__(self) -> int:
        _host("an array used as an int")
        return operator.index(self._a)

    def __format__(self, spec: str) -> str:
        _host("formatting an array")
        return format(self._a.item() if self._a.ndim == 0 else self._a, spec)

    def item(self) -> Any:
        _host("array.item()")
        return self._a.item()

    def tolist(self) -> Any:
        _host("array.tolist()")
        return self._a.tolist()

    def get(self) -> Arr:
        _host("array.get()")
        return self._a.copy()

    # --- indexing
    def __getitem__(self, key: Any) -> ForeignArray:
        _check_mask(key)
        return _wrap(self._a[_unwrap(key, "an index")])

    def __setitem__(self, key: Any, value: Any) -> None:
        _check_mask(key)
        calls[0] += 1
        self._a[_unwrap(key, "an index")] = _unwrap(value, "a value set into a foreign array")

    def __iter__(self) -> Iterator[ForeignArray]:
        return (_wrap(v) for v in self._a)

    # --- methods: forwarded, results wrapped
    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        attr = getattr(self._a, name)
        if not callable(attr):
            raise AttributeError(f"foreign: ForeignArray has no attribute {name!r}")
        return _forward(attr, f"ndarray.{name}")


def _binary(name: str) -> Callable[..., Any]:
    op = getattr(operator, name)

    def method(self: ForeignArray, other: Any) -> Any:
        return _wrap(op(self._a, _unwrap(other, f"a '{name}' with a foreign array")))

    return method


def _reflected(name: str) -> Callable[..., Any]:
    op = getattr(operator, name)

    def method(self: ForeignArray, other: Any) -> Any:
        return _wrap(op(_unwrap(other, f"a '{name}' with a foreign array"), self._a))

    return method


def _inplace(name: str) -> Callable[..., Any]:
    op = getattr(operator, f"i{name}")

    def method(self: ForeignArray, other: Any) -> ForeignArray:
        calls[0] += 1
        result = op(self._a, _unwrap(other, f"an in-place '{name}' on a foreign array"))
        assert result is self._a  # NumPy's in-place operators write into the same buffer
        return self

    return method


for _name in ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "matmul"):
    setattr(ForeignArray, f"__{_name}__", _binary(_name))
    setattr(ForeignArray, f"__r{_name}__", _reflected(_name))
    if _name != "matmul":
        setattr(ForeignArray, f"__i{_name}__", _inplace(_name))
for _name, _op in (("and", "and_"), ("or", "or_"), ("xor", "xor")):
    setattr(ForeignArray, f"__{_name}__", _binary(_op))
    setattr(ForeignArray, f"__r{_name}__", _reflected(_op))
    setattr(ForeignArray, f"__i{_name}__", _inplace(_name))
for _name in ("lt", "le", "gt", "ge", "eq", "ne"):
    setattr(ForeignArray, f"__{_name}__", _binary(_name))
for _name in ("neg", "pos", "invert", "abs"):
    setattr(
        ForeignArray,
        f"__{_name}__",
        (lambda op: lambda self: _wrap(op(self._a)))(getattr(operator, _name)),
    )
ForeignArray.__hash__ = None  # type: ignore[assignment]


# --- the namespace ---------------------------------------------------------------------

ndarray = ForeignArray


def asarray(a: Any, dtype: Any = None, **kwargs: Any) -> ForeignArray:
    """Foreign arrays pass through (cast if asked); anything from the host is an upload."""
    if isinstance(a, ForeignArray):
        return _wrap(np.asarray(a._a, dtype=dtype, **kwargs)) if dtype is not None else a
    _host("an array made from host data (foreign.asarray)")
    return _wrap(np.array(a, dtype=dtype, **kwargs))


def array(a: Any, dtype: Any = None, copy: bool = True, **kwargs: Any) -> ForeignArray:
    if isinstance(a, ForeignArray):
        return _wrap(np.array(a._a, dtype=dtype, copy=copy, **kwargs))
    return asarray(a, dtype=dtype)


def asnumpy(a: Any) -> Arr:
    """The explicit download (``cupy.asnumpy``)."""
    if isinstance(a, np.ndarray):
        return a
    _host("foreign.asnumpy")
    out: Arr = _unwrap(a, "foreign.asnumpy").copy()
    return out


class WeakScalar:
    """A Python number passed to a fused function, typed as CuPy 14.2's ``fuse`` types it.

    With an array it is the number itself, as NumPy takes it. Between two numbers
    (``1.0 - b1``, ``-lr``) CuPy computes in float16: both are "weak" operands, and the
    smallest float routine wins (seen on an H200, 2026-12-04: Adam's updates and batch
    norm's running statistics off by 2e-4 in float64). So does this double, so that such
    arithmetic inside a fused function fails the CPU tests: compute it before the call.
    """

    __slots__ = ("value",)
    __array_ufunc__ = None  # NumPy hands ``array op WeakScalar`` back to the array's side

    def __init__(self, value: float) -> None:
        self.value = value

    def __float__(self) -> float:
        raise TypeError("foreign.fuse: a scalar argument cannot become a Python number")


def _weak_op(name: str, reflected: bool = False) -> Callable[..., Any]:
    op = getattr(operator, name)

    def method(self: WeakScalar, other: Any) -> Any:
        if isinstance(other, WeakScalar):
            other = other.value
        if not isinstance(other, int | float):
            return NotImplemented  # an array: its own operator takes the number
        a, b = (other, self.value) if reflected else (self.value, other)
        return WeakScalar(float(np.float16(op(a, b))))

    return method


for _name in ("add", "sub", "mul", "truediv", "pow"):
    setattr(WeakScalar, f"__{_name}__", _weak_op(_name))
    setattr(WeakScalar, f"__r{_name}__", _weak_op(_name, reflected=True))
WeakScalar.__neg__ = lambda self: WeakScalar(float(np.float16(-self.value)))  # type: ignore[attr-defined]


def fuse(fn: Any = None, *, kernel_name: str | None = None) -> Any:
    """``cupy.fuse``'s signature: the function runs on foreign arrays and counts as one
    operation in ``calls``, as its fused kernel would be one launch. Python numbers among
    the arguments arrive as ``WeakScalar``s, typed as CuPy's fuse types them."""
    if fn is None:
        return lambda f: fuse(f, kernel_name=kernel_name)

    def kernel(*args: Any) -> Any:
        before = calls[0]
        weak = (
            WeakScalar(a) if isinstance(a, int | float) and not isinstance(a, bool) else a
            for a in args
        )
        try:
            out = fn(*weak)
        finally:
            calls[0] = before + 1
        if isinstance(out, WeakScalar) or (
            isinstance(out, tuple) and any(isinstance(o, WeakScalar) for o in out)
        ):
            raise TypeError("foreign.fuse: a fused function returned a scalar, not an array")
        return out

    return kernel


class Generator:
    """``xp.random.Generator``: NumPy's draws, as foreign arrays."""

    def __init__(self, seed: Any) -> None:
        self._g = np.random.default_rng(seed)

    def __getattr__(self, name: str) -> Any:
        return _forward(getattr(self._g, name), f"random.Generator.{name}")


class _Random:
    Generator = Generator

    @staticmethod
    def default_rng(seed: Any = None) -> Generator:
        return Generator(seed)


random = _Random()


class _StrideTricks:
    as_strided = staticmethod(_forward(np.lib.stride_tricks.as_strided, "as_strided"))
    sliding_window_view = staticmethod(
        _forward(np.lib.stride_tricks.sliding_window_view, "sliding_window_view")
    )


class _Lib:
    stride_tricks = _StrideTricks()


lib = _Lib()

_PASS = (type, np.dtype, float, int, bool, type(None), type(np.newaxis))


def __getattr__(name: str) -> Any:
    """Everything else NumPy has: functions forwarded, dtypes and constants as they are."""
    if name.startswith("__"):
        raise AttributeError(name)
    attr = getattr(np, name)
    if isinstance(attr, _PASS):
        return attr
    if callable(attr):
        return _forward(attr, name)
    raise AttributeError(f"foreign has no {name!r}")
