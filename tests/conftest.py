"""Shared test setup: the repository's scripts importable by name, a deterministic
hypothesis profile, seeded generators, and no process-wide allocator tuning from
``fcnn.train.main`` inside the test process."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

from fcnn.runtime import AllocatorTuning

ROOT = Path(__file__).resolve().parents[1]

# inference_example.py and benchmarks/*.py are scripts, not part of the package: their
# folders go on sys.path here, before pytest imports any test module, so tests can write
# ``import inference_example`` or ``import conv_bench``.
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))

import fcnn.train  # noqa: E402

# Derandomized: the same examples on every run and machine, no deadline (CI is noisy).
settings.register_profile(
    "fcnn",
    derandomize=True,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("fcnn")


@pytest.fixture
def rng() -> np.random.Generator:
    """A fresh generator with a fixed seed for every test."""
    return np.random.default_rng(20261122)


def _allocator_untouched(
    mmap_threshold: int = 1 << 30, trim_threshold: int = 1 << 30
) -> AllocatorTuning:
    return AllocatorTuning(False, "skipped: inside the test process (tests/conftest.py)")


@pytest.fixture(autouse=True)
def _no_allocator_tuning_from_train(monkeypatch: pytest.MonkeyPatch) -> None:
    """``fcnn.train.main`` calls ``tune_allocator`` (``mallopt``), which would change malloc
    for the rest of the pytest process: replace fcnn/train.py's reference with a no-op.

    ``fcnn.runtime.tune_allocator`` itself is left alone; tests/test_benchmarks.py
    checks it in a subprocess.
    """
    monkeypatch.setattr(fcnn.train, "tune_allocator", _allocator_untouched)


@pytest.fixture
def in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run the test in ``tmp_path``: a train.py run without --save writes its run folder
    (runs/DATASET-N) into the current folder, which must not be the repository."""
    monkeypatch.chdir(tmp_path)
    return tmp_path
