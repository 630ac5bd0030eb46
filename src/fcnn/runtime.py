"""Process-level tuning for entry points (train.py, benchmarks, the server).

Nothing here runs on import: an entry point calls ``tune_allocator()`` explicitly,
first thing. Library functions never touch process state.

Why the allocator matters: glibc returns multi-megabyte blocks to the OS on every
``free``, so every training step page-faults its temporaries in again. Raising
the mmap and trim thresholds keeps freed memory in the heap for reuse, which is as
fast as a preallocated workspace while every function stays pure. The same effect
without code, for any NumPy program on glibc (both variables are needed)::

    MALLOC_MMAP_THRESHOLD_=1073741824 MALLOC_TRIM_THRESHOLD_=1073741824 python train.py
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["AllocatorTuning", "tune_allocator"]

# mallopt parameter numbers from glibc's <malloc.h>.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3


@dataclass(frozen=True)
class AllocatorTuning:
    """What ``tune_allocator`` did: ``applied`` and a one-line ``detail``."""

    applied: bool
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def tune_allocator(mmap_threshold: int = 1 << 30, trim_threshold: int = 1 << 30) -> AllocatorTuning:
    """Raise glibc's mmap and trim thresholds (``mallopt``) so freed arrays are reused.

    Call it explicitly from an entry point, never on import. Skipped (with the reason
    in the result) on platforms without glibc; never raises. Both values must fit a C
    ``int``. glibc may refuse a threshold (``mallopt`` returns 0): that is reported.
    """
    if not sys.platform.startswith("linux"):
        return AllocatorTuning(False, f"skipped: not glibc (platform {sys.platform})")
    try:
        glibc = os.confstr("CS_GNU_LIBC_VERSION")
    except (AttributeError, ValueError, OSError):
        glibc = None
    if not glibc:
        return AllocatorTuning(False, "skipped: the C library is not glibc")
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError) as err:
        return AllocatorTuning(False, f"skipped: no mallopt ({err})")
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok_mmap = mallopt(M_MMAP_THRESHOLD, mmap_threshold) == 1
    ok_trim = mallopt(M_TRIM_THRESHOLD, trim_threshold) == 1
    detail = (
        f"{glibc}: M_MMAP_THRESHOLD={mmap_threshold} ({'ok' if ok_mmap else 'refused'}), "
        f"M_TRIM_THRESHOLD={trim_threshold} ({'ok' if ok_trim else 'refused'})"
    )
    return AllocatorTuning(ok_mmap and ok_trim, detail)
