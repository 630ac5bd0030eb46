"""The array library an array belongs to, and the few things that cross between libraries.

A pair computes with the library of its input (docs/gpu.md): NumPy in, NumPy out; CuPy
in, CuPy out. Kernels ask for the namespace once, from their array arguments, and then
read as NumPy code does (CuPy mirrors NumPy's API)::

    xp = namespace(x, w)        # numpy, or cupy when x and w are CuPy arrays
    y = xp.maximum(x, 0)

There is no global switch and no hidden copy between libraries: arrays of two
libraries in one call raise ``TypeError``. Moving arrays is always explicit::

    cp = array_library("gpu")          # cupy, or DeviceUnavailableError naming the extra
    xd = to_device(x, cp)              # one upload
    x = to_host(xd)                    # one download (waits for the device)

How a library is recognised: NumPy arrays and scalars are NumPy's; an array of a module
whose top-level package is ``cupy`` is CuPy's (CuPy's arrays name no namespace of their
own); any other array names its namespace through the array API's ``__array_namespace__``
(the tests' foreign double does, so the CPU suite proves the kernels never reach for
NumPy). The NumPy API is what the layers are written against, which CuPy mirrors; the
array API standard's namespaces (``array_api_compat``) differ from it (no ``out=``,
``concat`` for ``concatenate``, ...), so this helper returns the library module itself.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np

__all__ = [
    "FUSE_FALLBACKS",
    "DeviceUnavailableError",
    "array_library",
    "device_generator",
    "fused",
    "is_numpy",
    "namespace",
    "to_device",
    "to_host",
]

# What ``array_library("gpu")`` tells a user without CuPy (one line).
GPU_EXTRA = (
    "the GPU needs CuPy and a CUDA GPU: pip install 'fcnn[gpu-cuda12]' (CUDA 12) "
    "or 'fcnn[gpu-cuda13]' (CUDA 13)"
)


class DeviceUnavailableError(RuntimeError):
    """A device was asked for, but its library or the device itself is not here."""


def _library_of(a: Any) -> Any:
    """The namespace of ``a``'s array library, or ``None`` for Python numbers (any library)."""
    if isinstance(a, np.ndarray | np.generic):
        return np
    if isinstance(a, bool | int | float | complex) or a is None:
        return None
    top = type(a).__module__.partition(".")[0]  # cupy._core.core.ndarray -> cupy
    if top == "cupy":
        return sys.modules["cupy"]
    get = getattr(a, "__array_namespace__", None)
    if get is None:
        raise TypeError(f"not an array: {type(a).__module__}.{type(a).__qualname__}")
    return get()


_NUMBERS = frozenset({bool, int, float, complex, type(None)})


def namespace(*arrays: Any) -> Any:
    """The module to compute ``arrays`` with: ``numpy`` for NumPy arrays, ``cupy`` for
    CuPy arrays; ``numpy`` when every argument is a Python number or ``None``.

    Raises ``TypeError`` when the arrays come from two libraries.
    """
    found: Any = None
    for a in arrays:
        kind = type(a)
        if kind is np.ndarray:  # the common case first: kernels call this every time
            lib: Any = np
        elif kind in _NUMBERS:
            continue
        else:
            lib = _library_of(a)
        if lib is found:
            continue
        if found is not None:
            raise TypeError(
                f"arrays from two libraries in one call: {found.__name__} and {lib.__name__}; "
                "move them to one device first (fcnn.to_device / fcnn.to_host)"
            )
        found = lib
    return np if found is None else found


def is_numpy(xp: Any) -> bool:
    """Whether ``xp`` is NumPy itself (the host path; anything else is a device path)."""
    return xp is np


def to_host(a: Any) -> Any:
    """``a`` as a NumPy array: itself when it is one, else one copy from its device.

    Waits for the device's pending work on ``a``. Python numbers and ``None`` pass through.
    """
    if a is None or isinstance(a, np.ndarray | bool | int | float | complex):
        return a
    if isinstance(a, np.generic):
        return np.asarray(a)
    xp = namespace(a)
    return xp.asnumpy(a)


def to_device(a: Any, xp: Any) -> Any:
    """``a`` as an array of the library ``xp`` (one upload from the host; none when it is
    already one). NumPy arrays and scalars are copied; ``xp``'s own arrays are returned."""
    if a is None or (is_numpy(xp) and isinstance(a, np.ndarray)):
        return a
    if is_numpy(xp):
        return to_host(a)
    if namespace(a) is xp:
        return a
    return xp.asarray(to_host(a))


def array_library(device: str) -> ModuleType:
    """The array library of a device name: ``"cpu"`` -> numpy, ``"gpu"`` -> cupy.

    Raises ``DeviceUnavailableError`` (one line naming the extra to install) when CuPy
    is missing or finds no CUDA device, and ``ValueError`` for any other name.
    """
    if device == "cpu":
        return np
    if device != "gpu":
        raise ValueError(f"device must be 'cpu' or 'gpu', got {device!r}")
    try:
        import cupy  # type: ignore[import-not-found,unused-ignore]
    except ImportError as err:
        raise DeviceUnavailableError(f"{GPU_EXTRA} (import cupy: {err})") from None
    try:
        count = int(cupy.cuda.runtime.getDeviceCount())
    except Exception as err:  # CuPy raises its own CUDARuntimeError without a driver
        raise DeviceUnavailableError(f"{GPU_EXTRA} (CuPy finds no CUDA device: {err})") from None
    if count < 1:
        raise DeviceUnavailableError(f"{GPU_EXTRA} (CuPy finds no CUDA device)")
    module: ModuleType = cupy
    return module


def device_generator(xp: Any, rng: np.random.Generator) -> Any:
    """A generator of ``xp``'s arrays determined by the run's host generator ``rng``.

    NumPy: ``rng`` itself. Any other library: ``xp.random.default_rng(seed)`` with the seed
    a digest of ``rng``'s position (``rng.bit_generator.state``), so nothing is drawn from
    ``rng``: its stream, and with it the order of the batches, is what it would be on the
    host; and a generator restored from a checkpoint (``fcnn.io.restore_generator``), or
    the shared generator of every MPI rank, gives the same device draws as the original.
    """
    if is_numpy(xp):
        return rng
    return xp.random.default_rng(_position_seed(rng))


def _position_seed(rng: np.random.Generator) -> int:
    """A 63-bit seed that depends on ``rng``'s position alone (it draws nothing)."""
    state = json.dumps(rng.bit_generator.state, sort_keys=True, default=lambda a: a.tolist())
    digest = hashlib.blake2b(state.encode(), digest_size=8, person=b"fcnn-device").digest()
    return int.from_bytes(digest, "little") >> 1


FUSE_FALLBACKS: list[str] = []
"""The fused functions a library could not fuse (``"name: error"``), which run unfused
since; the GPU tests require it to stay empty."""


def fused(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn(xp, *args)`` as one call of its arrays: a single fused kernel where the library
    offers ``fuse`` (CuPy: ``cupy.fuse``), the plain function elsewhere (NumPy).

    ``fn`` may use elementwise operations (arithmetic, ufuncs, ``astype``, ``where``) and
    end in one reduction (``xp.sum(..., axis=...)``), and may return a tuple. Python
    numbers among ``args`` are kernel arguments, not constants; the kernel is compiled
    once per library and argument types. Should the library refuse to fuse ``fn`` (it
    raises while tracing), ``fn`` runs unfused from then on, and ``FUSE_FALLBACKS`` says so.
    """
    kernels: dict[int, Any] = {}  # per library: the fused kernel, or None if it refused

    def call(*args: Any) -> Any:
        xp = namespace(*args)
        make = None if xp is np else getattr(xp, "fuse", None)
        if make is None or kernels.get(id(xp), True) is None:
            return fn(xp, *args)
        if id(xp) not in kernels:

            def bound(*a: Any) -> Any:
                return fn(xp, *a)

            kernels[id(xp)] = make(kernel_name=fn.__name__)(bound)
        try:
            return kernels[id(xp)](*args)
        except Exception as err:  # not fusable: this library's tracer refused fn
            kernels[id(xp)] = None
            FUSE_FALLBACKS.append(f"{fn.__name__}: {type(err).__name__}: {err}")
            return fn(xp, *args)

    call.__name__ = fn.__name__
    call.__doc__ = fn.__doc__
    return call
