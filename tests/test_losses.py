"""Softmax cross-entropy (plain and label-smoothed) and MSE: gradient checks, stability,
hand examples, dtypes, errors."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from helpers import read_only_view

from fcnn.gradcheck import check_loss
from fcnn.losses import (
    Loss,
    label_smoothing,
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


# --- label smoothing --------------------------------------------------------------------


def reference_smoothed_sce(logits: Arr, labels: Arr, eps: float) -> float:
    """Mean of ``-sum_k q_k log p_k`` with ``q = (1 - eps) * onehot + eps / K``, Python floats."""
    losses = []
    for row, label in zip(logits.tolist(), labels.tolist(), strict=True):
        m = max(row)
        lse = m + math.log(math.fsum(math.exp(v - m) for v in row))
        k = len(row)
        q = [eps / k + (1.0 - eps) * (j == label) for j in range(k)]
        losses.append(math.fsum(-qj * (v - lse) for qj, v in zip(q, row, strict=True)))
    return math.fsum(losses) / len(losses)


@pytest.mark.parametrize("eps", [0.1, 0.5, 1.0])
@pytest.mark.parametrize(("n", "k"), [(4, 3), (1, 5), (6, 1), (3, 10)])
def test_smoothed_sce_gradcheck(rng: np.random.Generator, n: int, k: int, eps: float) -> None:
    logits = rng.standard_normal((n, k)) * 3
    labels = rng.integers(0, k, n)
    smoothed = label_smoothing(eps)
    report = check_loss(smoothed.fwd, smoothed.bwd, logits, labels, rng=rng)  # random dloss
    assert report.ok(1e-6), report


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3, 1.0])
def test_smoothed_sce_matches_reference_and_its_gradient_is_softmax_minus_q(
    rng: np.random.Generator, eps: float
) -> None:
    logits = rng.standard_normal((7, 5)) * 4
    labels = rng.integers(0, 5, 7)
    loss, cache = softmax_cross_entropy_fwd(logits, labels, smoothing=eps)
    assert float(loss) == pytest.approx(reference_smoothed_sce(logits, labels, eps), rel=1e-13)
    q = (1 - eps) * np.eye(5)[labels] + eps / 5
    np.testing.assert_allclose(softmax_cross_entropy_bwd(cache, 2.0), 2 * (softmax(logits) - q) / 7)
    np.testing.assert_allclose(softmax_cross_entropy_bwd(cache).sum(axis=1), 0, atol=1e-15)


def test_zero_smoothing_is_bit_identical_to_the_plain_loss(rng: np.random.Generator) -> None:
    logits = rng.standard_normal((9, 4)).astype(np.float32)
    labels = rng.integers(0, 4, 9)
    plain, pcache = softmax_cross_entropy_fwd(logits, labels)
    zero, zcache = label_smoothing(0.0).fwd(logits, labels)
    assert plain.tobytes() == zero.tobytes()
    a, b = softmax_cross_entropy_bwd(pcache, 0.7), softmax_cross_entropy_bwd(zcache, 0.7)
    assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_smoothed_sce_keeps_dtype_and_is_stable(rng: np.random.Generator, dtype: Any) -> None:
    logits = (rng.choice([-1e4, 1e4], size=(6, 4)) + rng.standard_normal((6, 4))).astype(dtype)
    labels = np.array([2, 0, 1, 3, 0, 1])
    loss, cache = label_smoothing(0.1).fwd(logits, labels)
    dlogits = label_smoothing(0.1).bwd(cache, np.float32(1))
    assert loss.dtype == dtype and dlogits.dtype == dtype and loss.shape == ()
    assert np.isfinite(loss) and np.all(np.isfinite(dlogits))
    ref = reference_smoothed_sce(logits.astype(np.float64), labels, 0.1)
    assert float(loss) == pytest.approx(ref, rel=1e-12 if dtype == np.float64 else 1e-6)


def test_smoothed_sce_leaves_its_inputs_alone(rng: np.random.Generator) -> None:
    values = rng.standard_normal((4, 3))
    logits = read_only_view(values)
    labels = np.array([0, 2, 1, 2])
    labels.flags.writeable = False
    _, cache = softmax_cross_entropy_fwd(logits, labels, smoothing=0.2)
    softmax_cross_entropy_bwd(cache, 1.0)
    np.testing.assert_array_equal(logits, values)


@pytest.mark.parametrize("eps", [-0.1, 1.5, math.nan, math.inf, True, "0.1", None, np.ones(1)])
def test_smoothing_rejects_values_outside_0_1(rng: np.random.Generator, eps: Any) -> None:
    logits, labels = rng.standard_normal((2, 3)), np.array([0, 2])
    with pytest.raises(ValueError, match=r"^softmax_cross_entropy: smoothing must be a number in"):
        softmax_cross_entropy_fwd(logits, labels, smoothing=eps)
    with pytest.raises(ValueError, match=r"^label_smoothing: smoothing must be a number in \["):
        label_smoothing(eps)


def test_smoothed_sce_still_checks_logits_and_labels(rng: np.random.Generator) -> None:
    with pytest.raises(ValueError, match=r"^softmax_cross_entropy: labels must be in \[0, K\)"):
        label_smoothing(0.1).fwd(rng.standard_normal((2, 3)), np.array([0, 3]))
    with pytest.raises(TypeError, match=r"^softmax_cross_entropy: logits must have a floating"):
        label_smoothing(0.1).fwd(np.ones((2, 3), dtype=np.int64), np.array([0, 1]))


def test_label_smoothing_trains_through_make_step(rng: np.random.Generator) -> None:
    import fcnn

    model = fcnn.sequential(fcnn.Flatten(), fcnn.Dense(3))
    params, state, _ = fcnn.init(model, rng, (4,))
    opt = fcnn.sgd(0.5)
    step = fcnn.make_step(model, opt, loss=label_smoothing(0.2))
    ts = fcnn.TrainState(params, state, opt.init(params))
    x = rng.standard_normal((12, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 1)
    ctx = fcnn.Context(train=True, rng=rng)
    first = step(ts, x, y, ctx)[1]
    for _ in range(30):
        ts, last = step(ts, x, y, ctx)
    assert last < first and ts.params["dense1"]["w"].dtype == np.float32


def test_smoothed_sce_matches_torch(rng: np.random.Generator) -> None:
    torch = pytest.importorskip("torch")
    logits = rng.standard_normal((6, 4)) * 5
    labels = rng.integers(0, 4, 6)
    loss, cache = softmax_cross_entropy_fwd(logits, labels, smoothing=0.15)
    t = torch.tensor(logits, requires_grad=True)
    tl = torch.nn.functional.cross_entropy(t, torch.tensor(labels), label_smoothing=0.15)
    tl.backward()
    assert float(loss) == pytest.approx(float(tl.detach()), rel=1e-12)
    np.testing.assert_allclose(softmax_cross_entropy_bwd(cache, 1.0), t.grad.numpy(), atol=1e-14)
