"""Softmax cross-entropy and MSE: gradient checks, stability, hand examples, dtypes, errors."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from helpers import read_only_view

from fcnn.gradcheck import check_loss
from fcnn.losses import (
    Loss,
    log_softmax,
    mse,
    mse_bwd,
    mse_fwd,
    softmax,
    softmax_cross_entropy,
    softmax_cross_entropy_bwd,
    softmax_cross_entropy_fwd,
)

Arr = np.ndarray[Any, Any]


def reference_sce(logits: Arr, labels: Arr) -> float:
    """Mean cross-entropy row by row with Python floats: log-sum-exp around the row max."""
    losses = []
    for row, label in zip(logits.tolist(), labels.tolist(), strict=True):
        m = max(row)
        lse = m + math.log(math.fsum(math.exp(v - m) for v in row))
        losses.append(lse - row[label])
    return math.fsum(losses) / len(losses)


# --- softmax cross-entropy --------------------------------------------------------------


@pytest.mark.parametrize(("n", "k"), [(4, 3), (1, 5), (6, 1), (3, 10)])
def test_sce_gradcheck(rng: np.random.Generator, n: int, k: int) -> None:
    logits = rng.standard_normal((n, k)) * 3
    labels = rng.integers(0, k, n)
    report = check_loss(
        softmax_cross_entropy_fwd, softmax_cross_entropy_bwd, logits, labels, rng=rng
    )
    assert report.ok(1e-6), report


def test_sce_hand_example() -> None:
    logits = np.array([[1.0, 2.0, 3.0], [1.0, 1.0, 1.0], [0.0, -1.0, 2.0]])
    labels = np.array([2, 0, 1])
    loss, cache = softmax_cross_entropy_fwd(logits, labels)
    e = np.exp(logits)
    p = e / e.sum(axis=1, keepdims=True)
    expected = -(np.log(p[0, 2]) + np.log(p[1, 0]) + np.log(p[2, 1])) / 3
    assert loss.shape == () and float(loss) == pytest.approx(expected, rel=1e-14)
    assert float(loss) == pytest.approx((-math.log(p[0, 2]) + math.log(3) - math.log(p[2, 1])) / 3)
    dlogits = softmax_cross_entropy_bwd(cache, 1.0)
    onehot = np.eye(3)[labels]
    np.testing.assert_allclose(dlogits, (p - onehot) / 3, atol=1e-15)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sce_stable_for_huge_logits(rng: np.random.Generator, dtype: Any) -> None:
    logits = rng.choice([-1e4, 1e4], size=(6, 4)) + rng.standard_normal((6, 4))
    logits[0] = [1e4, 1e4, -1e4, 1e4]  # ties at the top
    logits[1] = [-1e4, -1e4, -1e4, -1e4]  # every logit hugely negative
    labels = np.array([2, 0, 1, 3, 0, 1])
    loss, cache = softmax_cross_entropy_fwd(logits.astype(dtype), labels)
    dlogits = softmax_cross_entropy_bwd(cache, 1.0)
    assert np.isfinite(loss) and np.all(np.isfinite(dlogits))
    assert loss.dtype == dtype and dlogits.dtype == dtype
    ref = reference_sce(logits.astype(dtype).astype(np.float64), labels)
    assert float(loss) == pytest.approx(ref, rel=1e-12 if dtype == np.float64 else 1e-6)
    np.testing.assert_allclose(dlogits.sum(axis=1), 0, atol=1e-7)


def test_sce_matches_reference_on_random_rows(rng: np.random.Generator) -> None:
    logits = rng.standard_normal((20, 7)) * 30
    labels = rng.integers(0, 7, 20)
    loss, _ = softmax_cross_entropy_fwd(logits, labels)
    assert float(loss) == pytest.approx(reference_sce(logits, labels), rel=1e-13)


def test_sce_gradient_rows_sum_to_zero_and_scale_with_dloss(rng: np.random.Generator) -> None:
    logits = rng.standard_normal((5, 4))
    _, cache = softmax_cross_entropy_fwd(logits, rng.integers(0, 4, 5))
    g1 = softmax_cross_entropy_bwd(cache)
    np.testing.assert_allclose(g1.sum(axis=1), 0, atol=1e-15)
    np.testing.assert_allclose(softmax_cross_entropy_bwd(cache, np.array(-2.5)), -2.5 * g1)
    np.testing.assert_array_equal(softmax_cross_entropy_bwd(cache, 1.0), g1)  # cache unchanged
    np.testing.assert_array_equal(softmax_cross_entropy_bwd(cache, np.float32(2)), 2 * g1)


class _ZeroDimWithoutKind:
    """A 0-d array-like whose dtype has no ``kind`` (as some foreign tensors)."""

    shape = ()
    dtype = "float32"


@pytest.mark.parametrize(
    "dloss", [np.ones(2), np.ones((1,)), "1", None, True, np.array("x"), _ZeroDimWithoutKind()]
)
def test_loss_backward_rejects_a_dloss_that_is_not_one_real_number(
    rng: np.random.Generator, dloss: Any
) -> None:
    _, sce_cache = softmax_cross_entropy_fwd(rng.standard_normal((3, 2)), np.array([0, 1, 1]))
    with pytest.raises(TypeError, match=r"^softmax_cross_entropy: dloss must be a real scalar"):
        softmax_cross_entropy_bwd(sce_cache, dloss)
    _, mse_cache = mse_fwd(np.ones((2, 2)), np.zeros((2, 2)))
    with pytest.raises(TypeError, match=r"^mse: dloss must be a real scalar"):
        mse_bwd(mse_cache, dloss)


@pytest.mark.parametrize("label_dtype", [np.int64, np.int32, np.uint8, np.int8])
def test_sce_float32_and_integer_label_dtypes(rng: np.random.Generator, label_dtype: Any) -> None:
    logits = rng.standard_normal((4, 3)).astype(np.float32)
    labels = np.array([0, 2, 1, 2], dtype=label_dtype)
    loss, cache = softmax_cross_entropy_fwd(logits, labels)
    dlogits = softmax_cross_entropy_bwd(cache, 1.0)
    assert loss.dtype == np.float32 and dlogits.dtype == np.float32 and loss.shape == ()
    ref = reference_sce(logits.astype(np.float64), labels.astype(np.int64))
    assert float(loss) == pytest.approx(ref, rel=1e-6)


def test_sce_read_only_non_contiguous(rng: np.random.Generator) -> None:
    values = rng.standard_normal((4, 3))
    logits = read_only_view(values)
    labels = np.array([0, 2, 1, 2, 9, 9])[:4]
    labels.flags.writeable = False
    loss, cache = softmax_cross_entropy_fwd(logits, labels)
    softmax_cross_entropy_bwd(cache, 1.0)
    np.testing.assert_array_equal(logits, values)
    assert float(loss) == pytest.approx(reference_sce(values, labels), rel=1e-14)


def test_softmax_helpers(rng: np.random.Generator) -> None:
    z = rng.standard_normal((3, 5)) * 10
    p = softmax(z)
    np.testing.assert_allclose(p.sum(axis=-1), 1, atol=1e-15)
    np.testing.assert_allclose(np.log(p), log_softmax(z), atol=1e-12)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    np.testing.assert_allclose(p, e / e.sum(axis=-1, keepdims=True), atol=1e-15)
    big = np.array([[1e4, -1e4, 0.0]], dtype=np.float32)
    assert softmax(big).dtype == np.float32
    np.testing.assert_array_equal(softmax(big), [[1.0, 0.0, 0.0]])
    assert np.all(np.isfinite(log_softmax(big)))


def test_sce_rejects(rng: np.random.Generator) -> None:
    op = "softmax_cross_entropy"
    logits = rng.standard_normal((4, 3))
    labels = np.array([0, 1, 2, 0])
    with pytest.raises(TypeError, match=rf"^{op}: labels must have an integer dtype, got float64"):
        softmax_cross_entropy_fwd(logits, labels.astype(np.float64))
    with pytest.raises(TypeError, match=rf"^{op}: labels must have an integer dtype, got bool"):
        softmax_cross_entropy_fwd(logits, labels.astype(bool))
    with pytest.raises(TypeError, match=rf"^{op}: labels must be an integer array, got list"):
        softmax_cross_entropy_fwd(logits, [0, 1, 2, 0])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=rf"^{op}: labels has 5 entries but logits has 4 rows"):
        softmax_cross_entropy_fwd(logits, np.array([0, 1, 2, 0, 1]))
    with pytest.raises(ValueError, match=rf"^{op}: labels must have rank 1 \(N,\)"):
        softmax_cross_entropy_fwd(logits, labels[:, None])
    with pytest.raises(ValueError, match=rf"^{op}: labels must be in \[0, K\) = \[0, 3\), got 3"):
        softmax_cross_entropy_fwd(logits, np.array([0, 3, 1, 0]))
    with pytest.raises(ValueError, match=rf"^{op}: labels must be in \[0, K\) = \[0, 3\), got -1"):
        softmax_cross_entropy_fwd(logits, np.array([0, 1, -1, 0]))
    with pytest.raises(
        ValueError, match=rf"^{op}: logits must have rank 2 \(N, K\), got shape \(3,\)"
    ):
        softmax_cross_entropy_fwd(logits[0], labels[:1])
    with pytest.raises(ValueError, match=rf"^{op}: logits must have rank 2"):
        softmax_cross_entropy_fwd(logits[None], labels)
    with pytest.raises(TypeError, match=rf"^{op}: logits must have a floating dtype, got int64"):
        softmax_cross_entropy_fwd(np.ones((4, 3), dtype=np.int64), labels)
    with pytest.raises(TypeError, match=rf"^{op}: logits must have a floating dtype, got object"):
        softmax_cross_entropy_fwd(logits.astype(object), labels)
    with pytest.raises(ValueError, match=rf"^{op}: logits must have N >= 1 rows"):
        softmax_cross_entropy_fwd(np.zeros((0, 3)), np.zeros(0, dtype=np.int64))


# --- mse --------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 2, 2), (5,)])
def test_mse_gradcheck(rng: np.random.Generator, shape: tuple[int, ...]) -> None:
    report = check_loss(
        mse_fwd, mse_bwd, rng.standard_normal(shape), rng.standard_normal(shape), rng=rng
    )
    assert report.ok(1e-6), report


def test_mse_values() -> None:
    pred = np.array([[1.0, 2.0], [3.0, 4.0]])
    target = np.array([[1.0, 0.0], [0.0, 4.0]])
    loss, cache = mse_fwd(pred, target)
    assert loss.shape == () and float(loss) == pytest.approx((4 + 9) / 4)
    np.testing.assert_allclose(mse_bwd(cache, 1.0), [[0.0, 1.0], [1.5, 0.0]])
    np.testing.assert_allclose(mse_bwd(cache, 2.0), [[0.0, 2.0], [3.0, 0.0]])


def test_mse_float32_read_only(rng: np.random.Generator) -> None:
    pv = rng.standard_normal((3, 4)).astype(np.float32)
    pred, target = read_only_view(pv), read_only_view(np.zeros((3, 4), np.float32))
    loss, cache = mse_fwd(pred, target)
    dpred = mse_bwd(cache, 1.0)
    assert loss.dtype == np.float32 and dpred.dtype == np.float32
    assert float(loss) == pytest.approx(float(np.mean(pv.astype(np.float64) ** 2)), rel=1e-6)
    np.testing.assert_array_equal(pred, pv)


def test_mse_rejects() -> None:
    with pytest.raises(ValueError, match=r"^mse: pred and target must have the same shape"):
        mse_fwd(np.ones((2, 3)), np.ones((3, 2)))
    with pytest.raises(TypeError, match=r"^mse: target must have a floating dtype, got int64"):
        mse_fwd(np.ones(3), np.ones(3, dtype=np.int64))
    with pytest.raises(TypeError, match=r"^mse: pred must have a floating dtype, got object"):
        mse_fwd(np.ones(3, dtype=object), np.ones(3))
    with pytest.raises(TypeError, match=r"^mse: dtypes must match"):
        mse_fwd(np.ones(3), np.ones(3, dtype=np.float32))
    with pytest.raises(ValueError, match=r"^mse: pred is empty"):
        mse_fwd(np.ones((0, 2)), np.ones((0, 2)))


def test_loss_pairs() -> None:
    assert isinstance(softmax_cross_entropy, Loss) and isinstance(mse, Loss)
    assert softmax_cross_entropy.fwd is softmax_cross_entropy_fwd
    assert softmax_cross_entropy.bwd is softmax_cross_entropy_bwd
    assert mse == (mse_fwd, mse_bwd)


def test_sce_matches_torch(rng: np.random.Generator) -> None:
    torch = pytest.importorskip("torch")
    logits = rng.standard_normal((6, 4)) * 5
    labels = rng.integers(0, 4, 6)
    loss, cache = softmax_cross_entropy_fwd(logits, labels)
    t = torch.tensor(logits, requires_grad=True)
    tl = torch.nn.functional.cross_entropy(t, torch.tensor(labels))
    tl.backward()
    assert float(loss) == pytest.approx(float(tl.detach()), rel=1e-12)
    np.testing.assert_allclose(softmax_cross_entropy_bwd(cache, 1.0), t.grad.numpy(), atol=1e-14)
