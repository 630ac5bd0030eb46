"""The embedded digits sample, its deterministic rebuild, the Dataset record and normalisation.

The rebuild test reads ../shared/data/mnist (next to the repository) and is skipped
when it is absent.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from helpers import SHARED_MNIST, needs_shared_mnist
from numpy.typing import NDArray

from fcnn.data.dataset import Dataset, channel_stats, normalize, uint8_to_unit
from fcnn.data.digits import (
    DIGITS_SAMPLE_SEED,
    build_digits_sample,
    load_digits_sample,
    stratified_indices,
)

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "src" / "fcnn" / "data" / "digits_sample.npz"


# --- the shipped sample -----------------------------------------------------------------


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_digits_sample()


def test_shapes_dtypes_and_range(digits: Dataset) -> None:
    assert digits.name == "digits" and digits.classes == tuple("0123456789")
    assert digits.x_train.shape == (10000, 1, 28, 28) and digits.x_test.shape == (2000, 1, 28, 28)
    assert digits.x_train.dtype == np.float32 and digits.x_test.dtype == np.float32
    assert digits.y_train.dtype == np.int64 and digits.y_test.dtype == np.int64
    assert digits.input_shape == (1, 28, 28)
    for x in (digits.x_train, digits.x_test):
        assert float(x.min()) == 0.0 and float(x.max()) == 1.0
        assert x.flags.c_contiguous and x.flags.writeable


def test_class_balance(digits: Dataset) -> None:
    assert np.bincount(digits.y_train, minlength=10).tolist() == [1000] * 10
    assert np.bincount(digits.y_test, minlength=10).tolist() == [200] * 10


def test_file_is_small_and_holds_no_objects() -> None:
    assert SHIPPED.stat().st_size < 3_000_000
    with np.load(SHIPPED, allow_pickle=False) as npz:
        assert sorted(npz.files) == sorted(
            ["x_train", "y_train", "x_test", "y_test", "train_indices", "test_indices"]
        )
        for k in npz.files:
            assert npz[k].dtype in (np.uint8, np.uint16)
        # the indices are distinct, sorted rows of MNIST
        for k, n in (("train_indices", 60000), ("test_indices", 10000)):
            idx = npz[k].astype(np.int64)
            assert np.all(np.diff(idx) > 0) and idx[-1] < n


def _load_script() -> ModuleType:
    path = REPO / "scripts" / "build_digits_sample.py"
    spec = importlib.util.spec_from_file_location("build_digits_sample", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("build_digits_sample", module)
    spec.loader.exec_module(module)
    return module


@needs_shared_mnist
def test_rebuild_is_identical(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    script = _load_script()
    out = tmp_path / "rebuilt.npz"
    assert script.main(["--data-dir", str(SHARED_MNIST), "--out", str(out)]) == 0
    assert "bytes" in capsys.readouterr().out
    with np.load(out, allow_pickle=False) as a, np.load(SHIPPED, allow_pickle=False) as b:
        assert sorted(a.files) == sorted(b.files)
        for k in a.files:
            assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
            assert a[k].tobytes() == b[k].tobytes(), k
    assert [p.name for p in tmp_path.iterdir()] == ["rebuilt.npz"]  # no temporary left


# --- the sampling ------------------------------------------------------------------------


def test_stratified_indices() -> None:
    labels = np.repeat(np.arange(4), [5, 1, 7, 3])
    np.random.default_rng(0).shuffle(labels)
    idx = stratified_indices(labels, 3, 5, np.random.default_rng(1))
    assert np.bincount(labels[idx], minlength=5).tolist() == [3, 1, 3, 3, 0]  # all of a small class
    assert np.all(np.diff(idx) > 0)
    again = stratified_indices(labels, 3, 5, np.random.default_rng(1))
    np.testing.assert_array_equal(idx, again)
    other = stratified_indices(labels, 3, 5, np.random.default_rng(2))
    assert not np.array_equal(idx, other)
    with pytest.raises(ValueError, match="per_class"):
        stratified_indices(labels, -1, 5, np.random.default_rng(0))


def test_build_digits_sample_small(rng: np.random.Generator) -> None:
    y = (np.arange(300) % 10).astype(np.uint8)
    x = rng.integers(0, 256, size=(300, 28, 28), dtype=np.uint8)
    s = build_digits_sample(x, y, x[:100], y[:100], train_per_class=5, test_per_class=2)
    assert s["x_train"].shape == (50, 28, 28) and s["x_test"].shape == (20, 28, 28)
    np.testing.assert_array_equal(s["x_train"], x[s["train_indices"].astype(np.int64)])
    again = build_digits_sample(x, y, x[:100], y[:100], train_per_class=5, test_per_class=2)
    assert all(np.array_equal(s[k], again[k]) for k in s)
    with pytest.raises(ValueError, match="x_train must be uint8"):
        build_digits_sample(x.astype(np.float32), y, x, y)
    assert DIGITS_SAMPLE_SEED == 20261122  # the documented seed of the shipped file


# --- Dataset ----------------------------------------------------------------------------


def _ds(**over: Any) -> Dataset:
    kw: dict[str, Any] = {
        "x_train": np.zeros((4, 1, 2, 2), np.float32),
        "y_train": np.array([0, 1, 0, 1]),
        "x_test": np.zeros((2, 1, 2, 2), np.float32),
        "y_test": np.array([1, 0]),
        "classes": ("a", "b"),
        "name": "toy",
    }
    kw.update(over)
    return Dataset(**kw)


def test_dataset_validation() -> None:
    assert _ds().input_shape == (1, 2, 2)
    with pytest.raises(ValueError, match=r"'toy': y_train must be \(4,\)"):
        _ds(y_train=np.array([0, 1, 0]))
    with pytest.raises(ValueError, match=r"y_test must lie in \[0, 2\), got values in \[0, 2\]"):
        _ds(y_test=np.array([2, 0]))
    with pytest.raises(ValueError, match=r"x_train must be \(N, C, H, W\)"):
        _ds(x_train=np.zeros((4, 2, 2), np.float32))
    with pytest.raises(ValueError, match="differ in shape"):
        _ds(x_test=np.zeros((2, 1, 3, 3), np.float32))


# --- uint8_to_unit ---------------------------------------------------------------------------


def test_uint8_to_unit_maps_0_to_255_onto_0_to_1() -> None:
    pixels = np.arange(256, dtype=np.uint8).reshape(2, 8, 16)
    pixels.flags.writeable = False
    x = uint8_to_unit(pixels)
    assert x.dtype == np.float32 and x.shape == (2, 8, 16)
    assert x.flat[0] == 0.0 and x.flat[255] == 1.0 and x.flat[51] == np.float32(0.2)
    np.testing.assert_array_equal(x * np.float32(255.0), np.arange(256).reshape(2, 8, 16))


@pytest.mark.parametrize("bad", [np.zeros(3, np.uint16), np.zeros(3, np.float32), [0, 255]])
def test_uint8_to_unit_refuses_anything_but_uint8(bad: Any) -> None:
    with pytest.raises(TypeError, match="expected a uint8 array"):
        uint8_to_unit(bad)


def test_digits_sample_images_are_uint8_to_unit_of_their_bytes() -> None:
    ds = load_digits_sample()
    raw = np.round(ds.x_train * 255).astype(np.uint8)
    np.testing.assert_array_equal(ds.x_train, uint8_to_unit(raw))


# --- channel_stats / normalize -----------------------------------------------------------


def test_channel_stats_and_normalize(rng: np.random.Generator) -> None:
    scale = np.array([2.0, 0.5, 1.0])[None, :, None, None]
    x = (rng.standard_normal((50, 3, 4, 5)) * scale + 3).astype(np.float32)
    x.flags.writeable = False  # read-only inputs work
    mean, std = channel_stats(x)
    assert mean.shape == (3,) and std.shape == (3,)
    assert mean.dtype == np.float32 and std.dtype == np.float32
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(mean, x64.mean(axis=(0, 2, 3)), rtol=1e-6)
    np.testing.assert_allclose(std, x64.std(axis=(0, 2, 3)), rtol=1e-6)
    z = normalize(x, mean, std)
    assert z.dtype == np.float32 and z.shape == x.shape
    np.testing.assert_allclose(z.mean(axis=(0, 2, 3), dtype=np.float64), 0, atol=1e-5)
    np.testing.assert_allclose(z.std(axis=(0, 2, 3), dtype=np.float64), 1, rtol=1e-5)
    # float64 stays float64; the statistics are cast to x's dtype
    assert normalize(x64, mean, std).dtype == np.float64


def test_constant_channel_gets_unit_std() -> None:
    x = np.zeros((3, 2, 2, 2), np.float32)
    x[:, 1] = 0.5
    x[0, 0, 0, 0] = 1.0
    mean, std = channel_stats(x)
    assert std[1] == 1.0 and mean[1] == 0.5
    assert np.all(np.isfinite(normalize(x, mean, std)))


@pytest.mark.parametrize(
    ("x", "mean", "std", "match"),
    [
        (np.zeros((2, 3, 4, 4), np.uint8), np.zeros(3), np.ones(3), "floating-point"),
        (np.zeros(3, np.float32), np.zeros(3), np.ones(3), r"\(N, C, \.\.\.\)"),
        (
            np.zeros((2, 3, 4, 4), np.float32),
            np.zeros(2),
            np.ones(3),
            r"mean must have shape \(3,\)",
        ),
        (np.zeros((2, 3, 4, 4), np.float32), np.zeros(3), np.ones((3, 1)), "std must have shape"),
        (np.zeros((2, 3, 4, 4), np.float32), np.zeros(3), np.array([1, 0, 1.0]), "std must be > 0"),
        (np.zeros((2, 3, 4, 4), np.float32), np.full(3, np.nan), np.ones(3), "non-finite"),
    ],
)
def test_normalize_refuses(
    x: NDArray[Any], mean: NDArray[Any], std: NDArray[Any], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        normalize(x, mean, std)


def test_channel_stats_refuses() -> None:
    with pytest.raises(ValueError, match="floating-point"):
        channel_stats(np.zeros((2, 1, 2, 2), np.int64))
    with pytest.raises(ValueError, match="empty"):
        channel_stats(np.zeros((0, 1, 2, 2), np.float32))
