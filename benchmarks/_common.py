"""Helpers shared by the benchmarks: allocator tuning, environment report, timing, workers.

Nothing here runs on import. Each benchmark entry point calls ``tune_allocator()``
explicitly, first thing, in the parent and in every worker subprocess.

Why the allocator matters, and the environment variables that do the same without
code, is said once, in ``fcnn/runtime.py``'s docstring.

Timing: a fresh subprocess per configuration (``run_worker``), warm-up, medians,
and ratios only between numbers measured in one run.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fcnn.atomic import atomic_write
from fcnn.runtime import AllocatorTuning, tune_allocator

__all__ = [
    "THREAD_ENV_VARS",
    "AllocatorTuning",
    "cpu_count",
    "environment_report",
    "format_environment",
    "gemm_peak",
    "have_module",
    "import_torch",
    "load_average",
    "markdown_table",
    "openblas_runtime",
    "run_worker",
    "summarize_ms",
    "tune_allocator",
    "write_json_atomic",
]

THREAD_ENV_VARS = (
    "OPENBLAS_CORETYPE",
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)
ALLOCATOR_ENV_VARS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_ARENA_MAX")


def have_module(name: str) -> bool:
    """Whether ``name`` is installed (found without importing it)."""
    return importlib.util.find_spec(name) is not None


def import_torch() -> Any | None:
    """``torch`` when it imports cleanly, else ``None`` (never installed by us)."""
    if not have_module("torch"):
        return None
    try:
        return importlib.import_module("torch")
    except Exception:  # a broken install is "not available", not a crash
        return None


def cpu_count() -> int:
    """CPUs this process may run on (the affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (other work on the machine skews timings)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def openblas_runtime() -> dict[str, Any] | str:
    """The OpenBLAS NumPy loaded, asked directly: its core type, config and threads.

    The core type is the kernel set OpenBLAS picked for this CPU at run time (a CPU
    newer than the OpenBLAS release may get an older one: ``OPENBLAS_CORETYPE``
    overrides it). A string saying why when NumPy's BLAS is not a bundled OpenBLAS.
    """
    import ctypes
    import glob

    base = Path(np.__file__).resolve().parent
    paths = sorted(glob.glob(str(base.parent / "numpy.libs" / "*openblas*")))
    paths += sorted(glob.glob(str(base / ".dylibs" / "*openblas*")))
    for path in paths:
        try:
            lib = ctypes.CDLL(path)  # already loaded by NumPy: the same handle
        except OSError:
            continue
        names = (("scipy_openblas_", "64_"), ("scipy_openblas_", ""), ("openblas_", ""))
        for prefix, suffix in names:
            try:
                corename = getattr(lib, f"{prefix}get_corename{suffix}")
                config = getattr(lib, f"{prefix}get_config{suffix}")
                threads = getattr(lib, f"{prefix}get_num_threads{suffix}")
            except AttributeError:
                continue
            corename.restype = config.restype = ctypes.c_char_p
            threads.restype = ctypes.c_int
            return {
                "library": Path(path).name,
                "corename": corename().decode(),
                "config": config().decode(),
                "num_threads": int(threads()),
            }
    return "unavailable (no bundled OpenBLAS found)"


def _blas_info() -> dict[str, Any]:
    """NumPy's BLAS: the build config, the loaded OpenBLAS and threadpoolctl's view."""
    info: dict[str, Any] = {}
    try:
        cfg = np.show_config(mode="dicts")  # NumPy >= 1.26 returns, does not print
        blas = cfg["Build Dependencies"]["blas"]
        info["build"] = {k: blas.get(k) for k in ("name", "version", "openblas configuration")}
    except Exception as err:  # older NumPy, odd builds: report, never fail
        info["build"] = f"unavailable ({type(err).__name__})"
    try:
        info["openblas"] = openblas_runtime()
    except Exception as err:  # a diagnostic: report, never fail
        info["openblas"] = f"unavailable ({type(err).__name__})"
    try:
        from threadpoolctl import threadpool_info  # type: ignore[import-not-found,import-untyped,unused-ignore]

        info["threadpools"] = [
            {k: p.get(k) for k in ("internal_api", "version", "num_threads", "architecture")}
            for p in threadpool_info()
        ]
    except ImportError:
        info["threadpools"] = "threadpoolctl not installed"
    except Exception as err:
        info["threadpools"] = f"unavailable ({type(err).__name__})"
    return info


def environment_report(**extra: Any) -> dict[str, Any]:
    """NumPy/BLAS build, Python, CPUs, thread and allocator env vars, plus ``extra``."""
    report: dict[str, Any] = {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "numpy": np.__version__,
        "blas": _blas_info(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": cpu_count(),
        "thread_env": {k: os.environ.get(k) for k in THREAD_ENV_VARS},
        "allocator_env": {k: os.environ.get(k) for k in ALLOCATOR_ENV_VARS},
        "loadavg": load_average(),
    }
    report.update(extra)
    return report


def format_environment(report: dict[str, Any]) -> str:
    """The report as ``key: value`` lines (nested dicts as compact JSON)."""
    lines = []
    for key, value in report.items():
        shown = value if isinstance(value, str | int | float) else json.dumps(value)
        lines.append(f"- {key}: {shown}")
    return "\n".join(lines)


def summarize_ms(samples_s: Sequence[float]) -> dict[str, Any]:
    """Median / min / max in milliseconds, and the raw samples, from times in seconds."""
    ms = [s * 1e3 for s in samples_s]
    return {
        "median_ms": statistics.median(ms),
        "min_ms": min(ms),
        "max_ms": max(ms),
        "samples_ms": ms,
    }


def time_call(fn: Callable[[], Any]) -> tuple[Any, float]:
    """``(fn(), seconds)`` by ``time.perf_counter``."""
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def gemm_peak(n: int = 1024, repeats: int = 10, warmup: int = 3) -> dict[str, Any]:
    """The machine's float32 GEMM rate: median time of an ``(n, n) @ (n, n)`` matmul.

    Returns ``{"n", "median_ms", "gflops", ...}`` with ``gflops = 2 n^3 / median``.
    """
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    out = np.empty((n, n), dtype=np.float32)
    for _ in range(warmup):
        np.matmul(a, b, out=out)
    samples = [time_call(lambda: np.matmul(a, b, out=out))[1] for _ in range(max(1, repeats))]
    stats = summarize_ms(samples)
    stats["n"] = n
    stats["gflops"] = 2.0 * n**3 / (stats["median_ms"] * 1e-3) / 1e9
    return stats


def run_worker(
    script: Path,
    spec: dict[str, Any],
    timeout: float = 600.0,
    launcher: Sequence[str] = (),
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Run ``python script --worker JSON`` in a fresh process; return the JSON it prints last.

    A fresh interpreter per configuration keeps one configuration's allocator state
    from skewing the next. ``launcher`` goes before the interpreter (e.g. ``mpiexec -n
    2``). Raises ``RuntimeError`` with the worker's stderr on failure; at ``timeout`` the
    worker's whole session is killed (with a launcher: mpiexec and every rank).
    """
    cmd = [*launcher, sys.executable, str(script), "--worker", json.dumps(spec)]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        start_new_session=True,
    )  # fmt: skip
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:  # timed out, or interrupted
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    lines = [ln for ln in out.splitlines() if ln.strip()]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"worker {spec} failed (exit {proc.returncode}):\n{err.strip()[-4000:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def markdown_table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], text_columns: int = 2
) -> str:
    """A GitHub Markdown table; the first ``text_columns`` left-aligned, the rest right."""
    align = ["---" if i < text_columns else "---:" for i in range(len(headers))]
    out = ["| " + " | ".join(headers) + " |", "| " + " | ".join(align) + " |"]
    out += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(out)


def write_json_atomic(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as JSON to a temporary file next to ``path``, then rename it."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(target, "w") as fh:
        json.dump(obj, fh, indent=2)
        fh.write("\n")
