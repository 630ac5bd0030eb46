"""ReLU and max pooling commute: pool-then-ReLU and ReLU-then-pool agree bit for bit.

Forward: ``max_w(max(x, 0)) == max(max_w(x), 0)`` because max is monotone, and both
orders compute it with the same exact ``np.maximum`` comparisons, NaN included.

Backward: both orders send each window's gradient to the first maximum of ``x`` in
row-major window order when that maximum is positive, and zero otherwise (ReLU and
pooling ties: the positive cells of ``relu(x)`` are those of ``x``, and every cell that
is not positive loses to a positive maximum). A window whose maximum is NaN gets zero
in both orders (ReLU's mask ``y > 0`` is false for NaN). A zero gradient is
``dy * 0``, which carries ``dy``'s sign in both orders, so for finite ``dy`` the bits
agree too, provided the windows are disjoint and unpadded (stride >= window, padding 0:
the registry's 2x2 pools). With overlapping or padded windows max pooling's backward
adds each window's share into a zero-filled buffer, and ``+0.0 + -0.0`` is ``+0.0``:
pool-then-ReLU adds ``-0.0`` terms and keeps ``+0.0``, while ReLU-then-pool adds a
nonzero ``dy`` and then multiplies by ReLU's mask, giving ``-0.0`` for a negative ``dy``.
The values are still equal (``-0.0 == 0.0``), so those layouts are tested for equal
values, with bits differing only in the sign of zeros.

Signed zeros in ``x`` do not break the forward bits: ``np.maximum`` returns its second
argument when the two compare equal, so ReLU (``maximum(x, +0.0)``) turns ``-0.0`` into
``+0.0``; a pool may output ``-0.0`` (window ``[-3, -0.0]``), but the ReLU after it makes
that ``+0.0`` too, the value the other order pools from ``[+0.0, +0.0]``.

``dy`` must be finite: ``inf * 0`` is NaN, and the orders multiply by their zero masks
at different points.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import fcnn
from fcnn.layers.activation import relu_bwd, relu_fwd
from fcnn.layers.pool import Pool2dCfg, max_pool2d_bwd, max_pool2d_fwd

Arr = np.ndarray[Any, Any]
DTYPES = [np.float32, np.float64]
DISJOINT = [Pool2dCfg(2), Pool2dCfg(3), Pool2dCfg((2, 3)), Pool2dCfg(2, (3, 2))]
OVERLAPPING_OR_PADDED = [Pool2dCfg(3, 2), Pool2dCfg(2, 1), Pool2dCfg(2, 2, 1)]


def bits(a: Arr) -> bytes:
    """The array's values as raw bytes in C order: equal bytes are equal bits, signs of
    zero and NaN payloads included."""
    return np.ascontiguousarray(a).tobytes()


def inputs(rng: np.random.Generator, dtype: Any, kind: str) -> Arr:
    """(3, 2, 7, 7) inputs: small integers (many ties, all-negative and all-zero windows,
    zeros of both signs), normal values, or normal values with a few NaNs."""
    shape = (3, 2, 7, 7)
    if kind == "ties":
        x = rng.integers(-2, 3, shape).astype(dtype)
        return np.where(rng.random(shape) < 0.5, x, -x)  # -x: half of the zeros become -0.0
    x = rng.standard_normal(shape).astype(dtype)
    if kind == "nan":
        x[0, 0, 1, 1] = x[2, 1, 4, 0] = np.nan
    return x


def both_orders(x: Arr, dy: Arr, cfg: Pool2dCfg) -> tuple[Arr, Arr, Arr, Arr]:
    """``(y, dx)`` of pool-then-ReLU and of ReLU-then-pool."""
    pooled, pool_cache = max_pool2d_fwd({}, x, cfg)
    y_a, relu_cache = relu_fwd({}, pooled)
    dx_a = max_pool2d_bwd(pool_cache, relu_bwd(relu_cache, dy)[0])[0]
    rectified, relu_cache = relu_fwd({}, x)
    y_b, pool_cache = max_pool2d_fwd({}, rectified, cfg)
    dx_b = relu_bwd(relu_cache, max_pool2d_bwd(pool_cache, dy)[0])[0]
    return y_a, dx_a, y_b, dx_b


@pytest.mark.parametrize("kind", ["ties", "normal", "nan"])
@pytest.mark.parametrize("cfg", DISJOINT, ids=str)
@pytest.mark.parametrize("dtype", DTYPES)
def test_pairs_commute_bit_for_bit_on_disjoint_windows(
    rng: np.random.Generator, dtype: Any, cfg: Pool2dCfg, kind: str
) -> None:
    for _ in range(20):
        x = inputs(rng, dtype, kind)
        out_shape = max_pool2d_fwd({}, x, cfg)[0].shape
        dy = rng.standard_normal(out_shape).astype(dtype)
        y_a, dx_a, y_b, dx_b = both_orders(x, dy, cfg)
        assert y_a.dtype == y_b.dtype == dx_a.dtype == dx_b.dtype == dtype
        assert bits(y_a) == bits(y_b)
        assert bits(dx_a) == bits(dx_b)


@pytest.mark.parametrize("dtype", DTYPES)
def test_ties_route_to_the_first_positive_maximum_in_both_orders(dtype: Any) -> None:
    x = np.array([[[[-1, 2], [2, 0]], [[0, -1], [0, -2]], [[-3, -1], [-2, -1]]]], dtype=dtype)
    dy = np.array([[[[5.0]], [[-7.0]], [[3.0]]]], dtype=dtype)
    y_a, dx_a, y_b, dx_b = both_orders(x, dy, Pool2dCfg(2))
    np.testing.assert_array_equal(y_a, [[[[2]], [[0]], [[0]]]])
    want = np.zeros_like(x)
    want[0, 0, 0, 1] = 5.0  # the first of the two 2s; windows with maximum <= 0 get nothing
    np.testing.assert_array_equal(dx_a, want)
    assert bits(y_a) == bits(y_b) and bits(dx_a) == bits(dx_b)
    assert np.signbit(dx_a[0, 1]).all()  # the zeros carry dy's sign, in both orders


@pytest.mark.parametrize("cfg", OVERLAPPING_OR_PADDED, ids=str)
@pytest.mark.parametrize("dtype", DTYPES)
def test_overlapping_or_padded_windows_agree_in_value_and_differ_only_in_zero_signs(
    rng: np.random.Generator, dtype: Any, cfg: Pool2dCfg
) -> None:
    for kind in ("ties", "normal", "nan"):
        x = inputs(rng, dtype, kind)
        dy = rng.standard_normal(max_pool2d_fwd({}, x, cfg)[0].shape).astype(dtype)
        y_a, dx_a, y_b, dx_b = both_orders(x, dy, cfg)
        assert bits(y_a) == bits(y_b)
        np.testing.assert_array_equal(dx_a, dx_b)  # -0.0 == 0.0
        differ = np.ascontiguousarray(dx_a).view(np.uint8) != np.ascontiguousarray(dx_b).view(
            np.uint8
        )
        assert np.all(dx_a.ravel()[differ.reshape(dx_a.size, -1).any(axis=1)] == 0)


def test_negative_zero_inputs_give_positive_zero_in_both_orders() -> None:
    x = np.array([[[[-3.0, -0.0], [-1.0, -2.0]]]])
    pooled = max_pool2d_fwd({}, x, Pool2dCfg(2))[0]
    assert np.signbit(pooled).all()  # the pool alone keeps -0.0 ...
    y_a, _, y_b, _ = both_orders(x, np.ones((1, 1, 1, 1)), Pool2dCfg(2))
    assert not np.signbit(y_a).any() and bits(y_a) == bits(y_b)  # ... ReLU makes it +0.0


def pool_and_relu(order: str) -> list[fcnn.Layer]:
    """A 2x2 max pool and a ReLU, in ``order``."""
    pair = [fcnn.MaxPool2d(2), fcnn.Relu()]
    return pair if order == "pool-first" else pair[::-1]


def conv_net(order: str) -> fcnn.Layer:
    """conv → bn → [pool, relu] → conv → [pool, relu] → flatten → dense, each pair in
    ``order``; the params have the same keys in both orders (pool and ReLU have none)."""
    return fcnn.sequential(
        fcnn.Conv2d(4, 3, padding=1),
        fcnn.BatchNorm2d(),
        *pool_and_relu(order),
        fcnn.Conv2d(6, 3, padding=1),
        *pool_and_relu(order),
        fcnn.Flatten(),
        fcnn.Dense(5),
    )


@pytest.mark.parametrize("dtype", DTYPES)
def test_models_in_either_order_give_identical_outputs_and_gradients(dtype: Any) -> None:
    """Training-mode forward and full backward of two models that differ only in the order
    of each max pool and its ReLU: the same output, input gradient, parameter gradients
    and batch-norm statistics, bit for bit."""
    rng = np.random.default_rng(7)
    pool_first, relu_first = conv_net("pool-first"), conv_net("relu-first")
    params, state, out = fcnn.init(pool_first, np.random.default_rng(1), (2, 12, 12), dtype)
    params_b, _, out_b = fcnn.init(relu_first, np.random.default_rng(1), (2, 12, 12), dtype)
    assert out == out_b and bits(fcnn.flatten_dict(params)["conv1/w"]) == bits(
        fcnn.flatten_dict(params_b)["conv1/w"]
    )
    x = rng.standard_normal((6, 2, 12, 12)).astype(dtype)
    dy = rng.standard_normal((6, *out)).astype(dtype)
    ctx = fcnn.Context(train=True, rng=rng)
    y_a, cache_a, new_a = fcnn.forward(pool_first, params, state, x, ctx)
    y_b, cache_b, new_b = fcnn.forward(relu_first, params, state, x, ctx)
    assert y_a.dtype == dtype and bits(y_a) == bits(y_b)
    dx_a, grads_a = fcnn.backward(pool_first, cache_a, dy)
    dx_b, grads_b = fcnn.backward(relu_first, cache_b, dy)
    assert dx_a.dtype == dtype and bits(dx_a) == bits(dx_b)
    for tree_a, tree_b in ((grads_a, grads_b), (new_a, new_b)):
        flat_a, flat_b = fcnn.flatten_dict(tree_a), fcnn.flatten_dict(tree_b)
        assert flat_a.keys() == flat_b.keys()
        assert all(bits(flat_a[k]) == bits(flat_b[k]) for k in flat_a)
    y_eval_a = fcnn.predict(pool_first, params, new_a, x)
    assert bits(y_eval_a) == bits(fcnn.predict(relu_first, params, new_b, x))
