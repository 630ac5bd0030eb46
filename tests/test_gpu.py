"""fcnn on a GPU (issue 22): every pair, loss, optimizer and a whole training step on CuPy
arrays gives NumPy's results, in float32 and float64.

Run with ``pytest -m gpu`` on a machine with CuPy (``pip install 'fcnn[gpu-cuda12]'`` or
``'fcnn[gpu-cuda13]'``) and a CUDA GPU; everywhere else these tests skip. On the CPU,
tests/test_namespace.py proves the same code paths on a test double.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pair_cases import CASES, RANDOM_CASES, assert_same, run_case

import fcnn
from fcnn.data.augment import random_shift
from fcnn.io import load_checkpoint, save_checkpoint
from fcnn.models import build_model
from fcnn.ops.xp import FUSE_FALLBACKS, DeviceUnavailableError

pytestmark = pytest.mark.gpu


# FCNN_GPU_TESTS_ON=foreign runs these tests on the CPU's test double instead (a dry run
# of the tests themselves, for machines without a GPU; it proves nothing about CuPy).
STAND_IN = os.environ.get("FCNN_GPU_TESTS_ON") == "foreign"


@pytest.fixture(scope="module")
def cp() -> Any:
    if STAND_IN:
        import foreign

        return foreign
    try:
        return fcnn.array_library("gpu")
    except DeviceUnavailableError as err:
        pytest.skip(str(err))


@contextlib.contextmanager
def no_sync(cp: Any) -> Iterator[None]:
    """CuPy's own guard against device synchronisation (``cupyx.allow_synchronize``)."""
    if STAND_IN:
        with cp.strict():
            yield
        return
    import cupyx  # type: ignore[import-not-found,unused-ignore]

    with cupyx.allow_synchronize(False):
        yield


def device_leaves(tree: Any, cp: Any) -> list[str]:
    """Paths of ``tree``'s leaves that are not CuPy arrays (should be none)."""
    flat = fcnn.flatten_dict(tree) if isinstance(tree, dict) else {"": tree}
    return [k for k, v in flat.items() if not isinstance(v, cp.ndarray)]


def tolerance(dtype: Any, name: str) -> float:
    if dtype == np.float64:
        return 1e-9
    return 1e-3 if name.startswith("model") else 2e-4


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", sorted(CASES))
def test_pair_on_the_gpu_gives_numpys_results(cp: Any, name: str, dtype: Any) -> None:
    want, got, host = run_case(CASES[name], dtype, cp)
    assert device_leaves(got, cp) == []
    tol = tolerance(dtype, name)
    assert_same(want, host, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", ["dropout", "spatial_dropout2d"])
def test_dropout_on_the_gpu_draws_its_mask_there(cp: Any, name: str, dtype: Any) -> None:
    """CuPy's generator draws other numbers than NumPy's: check what the mask must be."""
    _want, got, host = run_case(RANDOM_CASES[name], dtype, cp)
    assert device_leaves({k: v for k, v in got.items() if k != "grads"}, cp) == []
    mask = host["mask"]
    assert set(np.unique(mask).tolist()) <= {0.0, float(np.asarray(1 / 0.6, dtype))}
    assert 0 < np.count_nonzero(mask) < mask.size
    x = np.random.default_rng(0).standard_normal((4, 3, 5, 5)).astype(dtype)
    np.testing.assert_allclose(host["y"], x * mask, rtol=1e-6)
    assert host["y"].dtype == dtype and host["dx"].dtype == dtype


def test_a_model_with_dropout_trains_on_the_gpu(cp: Any) -> None:
    _want, got, host = run_case(RANDOM_CASES["model bn (batch norm, dropout)"], np.float32, cp)
    assert device_leaves(got["grads"], cp) == [] and device_leaves(got["state"], cp) == []
    assert all(np.all(np.isfinite(v)) for v in fcnn.tree_leaves(host))


@pytest.mark.parametrize("name", ["sgd momentum", "adam", "adamw"])
def test_optimizer_on_the_gpu_gives_numpys_updates(cp: Any, name: str) -> None:
    opt = {
        "sgd momentum": fcnn.sgd(0.1, momentum=0.9, nesterov=True, weight_decay=1e-3),
        "adam": fcnn.adam(1e-2, weight_decay=1e-3),
        "adamw": fcnn.adamw(fcnn.one_cycle(1e-2, 10)),
    }[name]
    rng = np.random.default_rng(2)
    params = {"a": {"w": rng.standard_normal((5, 4)), "b": rng.standard_normal(4)}}
    grads = [fcnn.tree_map(lambda p: rng.standard_normal(p.shape), params) for _ in range(3)]
    for dtype in (np.float64, np.float32):
        p32 = fcnn.tree_map(lambda a, d=dtype: a.astype(d), params)
        g32 = fcnn.tree_map(lambda a, d=dtype: a.astype(d), grads)

        def train(p: Any, gs: Any) -> Any:
            s = opt.init(p)
            for g in gs:
                u, s = opt.update(g, s, p)
                p = fcnn.apply_updates(p, u)
            return p, s

        want = train(p32, g32)
        got = train(*fcnn.to_device((p32, g32), cp))
        assert device_leaves(got[0], cp) == []
        tol = 1e-12 if dtype == np.float64 else 1e-5
        assert_same(want, fcnn.to_host(got), rtol=tol, atol=tol)


def _fast(dtype: Any = np.float32) -> tuple[Any, Any, Any, Any, Any]:
    model = build_model("fast", 10)
    rng = np.random.default_rng(7)
    params, state, _ = fcnn.init(model, rng, (1, 28, 28), dtype)
    opt = fcnn.sgd(fcnn.one_cycle(0.05, 20), momentum=0.9)
    ts = fcnn.TrainState(params, state, opt.init(params))
    x = rng.standard_normal((64, 1, 28, 28)).astype(dtype)
    y = rng.integers(0, 10, 64)
    return fcnn.make_step(model, opt, fcnn.label_smoothing(0.1)), ts, model, x, y


def test_a_training_step_on_the_gpu_gives_the_cpus_and_never_waits(cp: Any) -> None:
    step, ts, _model, x, y = _fast(np.float64)
    ctx = fcnn.Context(train=True)
    dev, xd, yd = fcnn.to_device((ts, x[:32], y[:32]), cp)
    want, want_loss = ts, []
    for _ in range(3):
        want, lv = step(want, x[:32], y[:32], ctx)
        want_loss.append(lv)
    step(dev, xd, yd, ctx)  # compile the kernels first (compiling may wait)
    with no_sync(cp):
        losses = []
        for _ in range(3):
            dev, lv = step(dev, xd, yd, ctx)
            losses.append(lv)
    assert isinstance(losses[0], cp.ndarray) and losses[0].shape == ()
    assert device_leaves(dev.params, cp) == [] and device_leaves(dev.state, cp) == []
    np.testing.assert_allclose([float(v) for v in losses], want_loss, rtol=1e-9)
    assert_same(want.params, fcnn.to_host(dev.params), rtol=1e-8, atol=1e-10)


def test_train_epoch_and_evaluate_on_device_batches(cp: Any) -> None:
    step, ts, model, x, y = _fast()
    dev, xd, yd = fcnn.to_device((ts, x, y), cp)
    seen: list[float] = []

    def augment(xb: Any, g: Any) -> Any:
        return random_shift(xb, 2, g, fill=np.asarray([-0.5], np.float32))

    dev, loss = fcnn.train_epoch(
        step,
        dev,
        xd,
        yd,
        16,
        np.random.default_rng(1),
        lambda i, v: seen.append(v),
        augment,
        check_every=3,
    )
    assert len(seen) == 4 and all(type(v) is float and math.isfinite(v) for v in seen)
    assert loss == pytest.approx(sum(seen) / 4)
    got = fcnn.evaluate(model, dev.params, dev.state, xd, yd, batch_size=24)
    want = fcnn.evaluate(model, *fcnn.to_host((dev.params, dev.state)), x, y, batch_size=24)
    assert got == pytest.approx(want, rel=1e-4)


def test_random_shift_on_the_gpu_moves_whole_images(cp: Any) -> None:
    x = np.random.default_rng(3).standard_normal((50, 2, 9, 8)).astype(np.float32)
    got = fcnn.to_host(random_shift(fcnn.to_device(x, cp), 2, cp.random.default_rng(4), fill=7.0))
    for i in range(len(x)):  # every image is its original shifted by some (dy, dx)
        fits = [
            (dy, dx)
            for dy in range(-2, 3)
            for dx in range(-2, 3)
            if np.array_equal(got[i], random_shift_one(x[i], dy, dx, 7.0))
        ]
        assert fits, i


def random_shift_one(img: Any, dy: int, dx: int, fill: float) -> Any:
    c, h, w = img.shape
    out = np.full((c, h + 4, w + 4), fill, img.dtype)
    out[:, 2 : 2 + h, 2 : 2 + w] = img
    return out[:, 2 - dy : 2 - dy + h, 2 - dx : 2 - dx + w]


def test_a_non_finite_loss_on_the_gpu_stops_the_epoch(cp: Any) -> None:
    step, ts, _model, x, y = _fast()
    x = x.copy()
    x[np.random.default_rng(1).permutation(64)[40]] = np.nan  # in the third batch of 16
    dev, xd, yd = fcnn.to_device((ts, x, y), cp)
    seen: list[int] = []
    with pytest.raises(fcnn.NonFiniteLossError, match=r"^training loss is nan; stopping"):
        fcnn.train_epoch(
            step,
            dev,
            xd,
            yd,
            16,
            np.random.default_rng(1),
            lambda i, v: seen.append(i),
            check_every=50,
        )
    assert seen == [0, 1]


def test_a_gpu_checkpoint_resumes_on_the_cpu_and_back_exactly(cp: Any, tmp_path: Path) -> None:
    step, ts, _model, x, y = _fast()
    ctx = fcnn.Context(train=True)
    dev, _ = step(fcnn.to_device(ts, cp), *fcnn.to_device((x[:16], y[:16]), cp), ctx)
    host = fcnn.to_host(dev)
    save_checkpoint(
        tmp_path / "gpu.npz", params=host.params, state=host.state, opt_state=host.opt_state
    )
    ck = load_checkpoint(tmp_path / "gpu.npz")
    for saved, back in ((host.params, ck.params), (host.state, ck.state)):
        again = fcnn.to_host(fcnn.to_device(back, cp))
        for k, v in fcnn.flatten_dict(saved).items():
            w = fcnn.flatten_dict(again)[k]
            assert v.dtype == w.dtype and np.array_equal(v, w), k
    cpu, _ = step(fcnn.TrainState(ck.params, ck.state, ck.opt_state), x[16:32], y[16:32], ctx)
    gpu, _ = step(dev, *fcnn.to_device((x[16:32], y[16:32]), cp), ctx)
    assert_same(cpu.params, fcnn.to_host(gpu.params), rtol=1e-3, atol=1e-5)


def test_train_py_on_the_gpu_saves_numpy_arrays_that_resume_on_either_device(
    cp: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``python train.py --device gpu`` (the fast recipe: batch norm, shifts, and flips) on
    1,024 digits; its checkpoint resumes on the CPU, and that one on the GPU again."""
    import fcnn.run
    import fcnn.train

    if STAND_IN:
        monkeypatch.setattr(fcnn.run, "array_library", lambda d: cp if d == "gpu" else np)
    monkeypatch.setattr(fcnn.train, "tune_allocator", lambda: None)  # not in pytest's process
    ckpt = str(tmp_path / "gpu.npz")
    run = ["--recipe", "fast", "--limit-train", "1024", "--flip", "0.5", "--quiet"]
    assert fcnn.train.main([*run, "--epochs", "1", "--device", "gpu", "--save", ckpt]) == 0
    first = load_checkpoint(ckpt)
    assert all(type(v) is np.ndarray for v in fcnn.tree_leaves([first.params, first.opt_state]))
    assert math.isfinite(first.meta["history"][0]["train_loss"])
    assert fcnn.train.main(["--resume", ckpt, "--epochs", "2", "--quiet"]) == 0  # the CPU
    again = ["--resume", ckpt, "--epochs", "3", "--device", "gpu", "--quiet"]
    assert fcnn.train.main(again) == 0
    history = load_checkpoint(ckpt).meta["history"]
    assert [row["epoch"] for row in history] == [1, 2, 3]
    assert all(math.isfinite(row["test_loss"]) for row in history)


def test_zz_every_fused_function_was_fused(cp: Any) -> None:
    """Runs last: no function fell back to unfused CuPy operations in the tests above."""
    assert FUSE_FALLBACKS == []
