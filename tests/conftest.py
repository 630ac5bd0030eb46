"""Shared test setup: a deterministic hypothesis profile and seeded generators."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

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
