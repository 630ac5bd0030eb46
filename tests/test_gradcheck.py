"""The gradient checker itself: it passes correct backward passes and catches wrong ones."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import pytest

from fcnn.gradcheck import (
    GradcheckReport,
    check_layer,
    check_loss,
    check_pair,
    numerical_grad,
    relative_error,
)
from fcnn.layers.base import Array, Layer, Params, Shape, State, pair_layer

# --- a small affine pair: y = x @ w + b, x: (N, D), w: (D, F), b: (F,) ------------------


class AffineCache(NamedTuple):
    x: Array
    w: Array


def affine_fwd(params: Params, x: Array, cfg: Any = None) -> tuple[Array, AffineCache]:
    return x @ params["w"] + params["b"], AffineCache(x, params["w"])


def affine_bwd(cache: AffineCache, dy: Array) -> tuple[Array, Params]:
    return dy @ cache.w.T, {"w": cache.x.T @ dy, "b": dy.sum(axis=0)}


def bwd_dw_doubled(cache: AffineCache, dy: Array) -> tuple[Array, Params]:
    dx, g = affine_bwd(cache, dy)
    return dx, {**g, "w": 2.0 * g["w"]}


def bwd_dw_transposed(cache: AffineCache, dy: Array) -> tuple[Array, Params]:
    # dy.T @ x has the shape of w only because w is square here: the classic silent bug.
    dx, g = affine_bwd(cache, dy)
    return dx, {**g, "w": dy.T @ cache.x}


def bwd_dx_ignores_dy(cache: AffineCache, dy: Array) -> tuple[Array, Params]:
    _, g = affine_bwd(cache, dy)
    return np.ones_like(dy) @ cache.w.T, g


def bwd_db_nan(cache: AffineCache, dy: Array) -> tuple[Array, Params]:
    dx, g = affine_bwd(cache, dy)
    return dx, {**g, "b": np.full_like(g["b"], np.nan)}


WRONG: dict[str, tuple[Callable[[AffineCache, Array], tuple[Array, Params]], str]] = {
    "dw doubled": (bwd_dw_doubled, "w"),
    "dw transposed": (bwd_dw_transposed, "w"),
    "dx ignores dy": (bwd_dx_ignores_dy, "x"),
}


def affine_inputs(rng: np.random.Generator, d: int = 4, f: int = 4) -> tuple[Params, Array]:
    params = {"w": rng.standard_normal((d, f)), "b": rng.standard_normal(f)}
    return params, rng.standard_normal((3, d))


# --- check_pair ---------------------------------------------------------------------------


def test_check_pair_passes_a_correct_pair(rng: np.random.Generator) -> None:
    params, x = affine_inputs(rng, 4, 3)
    report = check_pair(affine_fwd, affine_bwd, params, x, rng=rng)
    assert set(report.errors) == {"x", "w", "b"}
    assert report.ok(1e-6), report
    assert report.max_error() == max(report.errors.values())


@pytest.mark.parametrize("name", list(WRONG))
def test_check_pair_fails_a_wrong_backward_and_names_the_leaf(
    rng: np.random.Generator, name: str
) -> None:
    bwd, bad_leaf = WRONG[name]
    params, x = affine_inputs(rng)
    report = check_pair(affine_fwd, bwd, params, x, rng=rng)
    assert not report.ok(1e-6), report
    assert not report.ok(1e-2)
    assert report.errors[bad_leaf] > 1e-2
    for leaf, err in report.errors.items():
        if leaf != bad_leaf:
            assert err < 1e-6, (leaf, report)
    assert f"{bad_leaf}: " in str(report)


def test_check_pair_works_in_float64_from_float32_inputs(rng: np.random.Generator) -> None:
    params, x = affine_inputs(rng)
    seen: list[Any] = []

    def fwd(p: Params, xx: Array, cfg: Any) -> tuple[Array, AffineCache]:
        seen.append((p["w"].dtype, p["b"].dtype, xx.dtype))
        return affine_fwd(p, xx, cfg)

    p32 = {k: v.astype(np.float32) for k, v in params.items()}
    report = check_pair(fwd, affine_bwd, p32, x.astype(np.float32), rng=rng)
    assert report.ok(1e-6), report
    f64 = np.dtype(np.float64)
    assert set(seen) == {(f64, f64, f64)}


def test_check_pair_passes_cfg_and_leaves_inputs_alone(rng: np.random.Generator) -> None:
    params, x = affine_inputs(rng)
    for a in (*params.values(), x):
        a.setflags(write=False)
    before = {k: v.copy() for k, v in params.items()}, x.copy()

    def fwd(p: Params, xx: Array, cfg: float) -> tuple[Array, tuple[AffineCache, float]]:
        y, cache = affine_fwd(p, xx)
        return cfg * y, (cache, cfg)

    def bwd(cache: tuple[AffineCache, float], dy: Array) -> tuple[Array, Params]:
        return affine_bwd(cache[0], cache[1] * dy)

    assert check_pair(fwd, bwd, params, x, 3.0, rng=rng).ok(1e-6)

    def bwd_forgets_cfg(cache: tuple[AffineCache, float], dy: Array) -> tuple[Array, Params]:
        return affine_bwd(cache[0], dy)

    assert not check_pair(fwd, bwd_forgets_cfg, params, x, 3.0, rng=rng).ok(1e-2)
    for k, v in params.items():
        np.testing.assert_array_equal(v, before[0][k])
    np.testing.assert_array_equal(x, before[1])


def test_check_pair_reports_nested_param_paths(rng: np.random.Generator) -> None:
    params, x = affine_inputs(rng)
    nested = {"lin": params}

    def fwd(p: Params, xx: Array, cfg: Any) -> tuple[Array, AffineCache]:
        return affine_fwd(p["lin"], xx)

    def bwd(cache: AffineCache, dy: Array) -> tuple[Array, Params]:
        dx, g = bwd_dw_doubled(cache, dy)
        return dx, {"lin": g}

    report = check_pair(fwd, bwd, nested, x, rng=rng)
    assert set(report.errors) == {"x", "lin/w", "lin/b"}
    assert report.errors["lin/w"] > 1e-2 and report.errors["lin/b"] < 1e-6


def test_check_pair_rejects_missing_or_misshapen_gradients(rng: np.random.Generator) -> None:
    params, x = affine_inputs(rng, 4, 3)

    def bwd_missing(cache: AffineCache, dy: Array) -> tuple[Array, Params]:
        dx, g = affine_bwd(cache, dy)
        return dx, {"w": g["w"]}

    def bwd_shape(cache: AffineCache, dy: Array) -> tuple[Array, Params]:
        dx, g = affine_bwd(cache, dy)
        return dx, {**g, "w": g["w"].T}

    with pytest.raises(ValueError, match="'b'"):
        check_pair(affine_fwd, bwd_missing, params, x, rng=rng)
    with pytest.raises(ValueError, match=r"'w' has shape \(3, 4\)"):
        check_pair(affine_fwd, bwd_shape, params, x, rng=rng)


def test_regression_max_skipped_nan_so_nan_gradient_passed(rng: np.random.Generator) -> None:
    # Python's max() skips a NaN that follows a number, so ok() once passed NaN gradients.
    params, x = affine_inputs(rng)
    report = check_pair(affine_fwd, bwd_db_nan, params, x, rng=rng)
    assert not report.ok(1e-6), report
    assert math.isnan(report.max_error())
    assert not GradcheckReport({"x": 1e-9, "w": float("nan")}).ok()
    assert not GradcheckReport({"x": float("inf")}).ok()


# --- directional --------------------------------------------------------------------------


def test_directional_passes_correct_and_fails_wrong(rng: np.random.Generator) -> None:
    params, x = affine_inputs(rng)
    good = check_pair(affine_fwd, affine_bwd, params, x, rng=rng, directional=True)
    assert set(good.errors) == {"direction"}
    assert good.ok(1e-6), good
    for name, (bwd, _) in WRONG.items():
        bad = check_pair(affine_fwd, bwd, params, x, rng=rng, directional=True)
        assert bad.errors["direction"] > 1e-3, (name, bad)


# --- check_loss ---------------------------------------------------------------------------


class SqCache(NamedTuple):
    diff: Array


def sq_fwd(z: Array, target: Array) -> tuple[float, SqCache]:
    """0.5 * mean over rows of sum((z - target)**2)."""
    diff = z - target
    return 0.5 * float(np.sum(diff * diff)) / len(z), SqCache(diff)


def sq_bwd(cache: SqCache, dloss: float) -> Array:
    return dloss * cache.diff / len(cache.diff)


def test_check_loss_passes_a_correct_loss(rng: np.random.Generator) -> None:
    z, t = rng.standard_normal((5, 3)), rng.standard_normal((5, 3))
    report = check_loss(sq_fwd, sq_bwd, z, t, rng=rng)
    assert set(report.errors) == {"logits"}
    assert report.ok(1e-6), report


@pytest.mark.parametrize(
    "bwd",
    [
        lambda c, d: c.diff / len(c.diff),  # ignores the upstream gradient
        lambda c, d: d * c.diff,  # forgets the mean
        lambda c, d: -d * c.diff / len(c.diff),  # wrong sign
    ],
    ids=["ignores-dloss", "no-mean", "sign"],
)
def test_check_loss_fails_a_wrong_loss(
    rng: np.random.Generator, bwd: Callable[[SqCache, float], Array]
) -> None:
    z, t = rng.standard_normal((5, 3)), rng.standard_normal((5, 3))
    report = check_loss(sq_fwd, bwd, z, t, rng=rng)
    assert report.errors["logits"] > 1e-2, report


# --- numerical_grad -----------------------------------------------------------------------


def test_numerical_grad_matches_an_analytic_gradient(rng: np.random.Generator) -> None:
    c = rng.standard_normal((3, 4))
    m = rng.standard_normal((12, 12))
    x = rng.standard_normal((3, 4))

    def f(a: Array) -> float:
        v = a.reshape(-1)
        return float(np.sum(np.sin(a) * c) + 0.5 * v @ m @ v)

    analytic = np.cos(x) * c + (0.5 * (m + m.T) @ x.reshape(-1)).reshape(3, 4)
    num = numerical_grad(f, x)
    assert num.shape == x.shape and num.dtype == np.float64
    assert relative_error(analytic, num) < 1e-8
    np.testing.assert_allclose(num, analytic, rtol=1e-6, atol=1e-7)


def test_numerical_grad_does_not_mutate_its_input(rng: np.random.Generator) -> None:
    x = rng.standard_normal((2, 3)).astype(np.float32)
    before = x.copy()
    x.setflags(write=False)
    seen: list[tuple[Any, bool]] = []

    def f(a: Array) -> float:
        seen.append((a.dtype, np.shares_memory(a, x)))
        return float(np.sum(a**3))

    num = numerical_grad(f, x, eps=1e-5)
    np.testing.assert_array_equal(x, before)
    assert len(seen) == 2 * x.size
    assert set(seen) == {(np.dtype(np.float64), False)}
    np.testing.assert_allclose(num, 3 * before.astype(np.float64) ** 2, rtol=1e-6)


def test_numerical_grad_of_a_0d_input() -> None:
    num = numerical_grad(lambda a: float(a) ** 2, np.asarray(1.5))
    assert num.shape == ()
    assert num == pytest.approx(3.0, rel=1e-8)


# --- relative_error -----------------------------------------------------------------------


def test_relative_error_edge_cases() -> None:
    assert relative_error(np.zeros(3), np.zeros(3)) == 0.0
    assert relative_error(0.0, 0.0) == 0.0
    assert relative_error(np.zeros(0), np.zeros(0)) == 0.0
    assert relative_error(np.zeros(2), np.array([0.0, 1e-30])) == 1.0
    assert relative_error([1.0, 2.0], [1.0, 2.0]) == 0.0
    assert relative_error([1.0, 2.0], [1.0, 2.2]) == pytest.approx(0.2 / 2.2, rel=1e-12)
    assert relative_error(-4.0, 4.0) == pytest.approx(2.0)
    # Normwise: a tiny absolute error on a near-zero entry does not blow up.
    assert relative_error([1e-12, 10.0], [2e-12, 10.0]) < 1e-12
    # Symmetric in its arguments.
    assert relative_error([3.0, 1.0], [2.0, 1.0]) == relative_error([2.0, 1.0], [3.0, 1.0])
    with pytest.raises(ValueError, match=r"\(2,\) vs \(3,\)"):
        relative_error(np.zeros(2), np.zeros(3))


def test_report_ok_and_str() -> None:
    r = GradcheckReport({"x": 1e-9, "conv1/w": 3e-4})
    assert r.max_error() == 3e-4
    assert r.ok(1e-3) and not r.ok(1e-4)
    assert "conv1/w: 3.00e-04" in str(r)
    assert GradcheckReport({}).ok(0.0)


# --- check_layer --------------------------------------------------------------------------


def affine_init(
    rng: np.random.Generator, in_shape: Shape, dtype: Any
) -> tuple[Params, State, Shape]:
    w = rng.standard_normal((in_shape[-1], 4)).astype(dtype)
    return {"w": w, "b": np.zeros(4, dtype)}, {}, (4,)


def affine_layer(bwd: Callable[[AffineCache, Array], tuple[Array, Params]]) -> Layer:
    return pair_layer("affine", affine_fwd, bwd, None, affine_init, {"type": "Affine"})


def test_check_layer_passes_a_correct_layer(rng: np.random.Generator) -> None:
    layer = affine_layer(affine_bwd)
    params, state, out_shape = layer.init(rng, (4,), np.float32)
    assert out_shape == (4,)
    params = {**params, "b": rng.standard_normal(4).astype(np.float32)}
    x = rng.standard_normal((3, 4)).astype(np.float32)
    report = check_layer(layer, params, state, x, rng=rng)
    assert set(report.errors) == {"x", "w", "b"}
    assert report.ok(1e-6), report
    assert check_layer(layer, params, state, x, rng=rng, directional=True).ok(1e-6)


@pytest.mark.parametrize("name", list(WRONG))
def test_check_layer_fails_a_wrong_layer(rng: np.random.Generator, name: str) -> None:
    bwd, bad_leaf = WRONG[name]
    layer = affine_layer(bwd)
    params, state, _ = layer.init(rng, (4,), np.float64)
    x = rng.standard_normal((3, 4))
    report = check_layer(layer, params, state, x, rng=rng)
    assert report.errors[bad_leaf] > 1e-2, report
    assert not check_layer(layer, params, state, x, rng=rng, directional=True).ok(1e-3)


def test_regression_non_contiguous_input_gave_zero_gradients(rng: np.random.Generator) -> None:
    """numerical_grad copied x in its own memory order, so reshape(-1) was a copy and
    every perturbation was lost: all-zero gradients for transposed or batch-last inputs."""
    import fcnn

    x = rng.standard_normal((3, 4)).T  # Fortran order
    np.testing.assert_allclose(
        numerical_grad(lambda v: float(np.sum(v**3)), x), 3 * x**2, rtol=1e-6
    )
    # The convolution's own output is batch-last memory: check_pair on it must still pass.
    conv_params = {"w": rng.standard_normal((2, 1, 3, 3)), "b": np.zeros(2)}
    y, _ = fcnn.conv2d_fwd(conv_params, rng.standard_normal((2, 1, 6, 6)), fcnn.Conv2dCfg())
    assert not y.flags.c_contiguous
    report = check_pair(fcnn.relu_fwd, fcnn.relu_bwd, {}, y, None, rng=rng)
    assert report.ok(1e-6), report


# --- kinks: points where the checked function is not differentiable (issue 13) -------------


def abs_fwd(params: Params, x: Array, cfg: Any = None) -> tuple[Array, Array]:
    return np.abs(x), x


def abs_bwd(cache: Array, dy: Array) -> tuple[Array, Params]:
    return dy * np.sign(cache), {}


def two_digits_model(rng: np.random.Generator) -> tuple[Layer, Any, Any, Array]:
    """A Conv/ReLU/MaxPool model (zero biases) and two real digits (flat zero backgrounds)."""
    import fcnn

    model = fcnn.sequential(
        fcnn.Conv2d(2, 3, padding=1), fcnn.Relu(), fcnn.MaxPool2d(2), fcnn.Flatten(), fcnn.Dense(3)
    )
    params, state, _ = fcnn.init(model, rng, (1, 28, 28))
    x = fcnn.data.load_digits_sample().x_train[:2]
    return model, params, state, x


def test_regression_check_layer_misled_by_kinks_on_real_digits(rng: np.random.Generator) -> None:
    model, params, state, x = two_digits_model(rng)
    # What it reported before: a large error for the library's own correct layers.
    assert not check_layer(model, params, state, x, rng=rng, exclude_kinks=False).ok(1e-3)
    report = check_layer(model, params, state, x, rng=rng)
    assert report.ok(1e-6), report
    assert 0 < report.excluded["x"] < report.sizes["x"] == x.size
    assert report.errors["x"] < 1e-6 and report.errors["conv1/w"] < 1e-6
    assert "excluded at kinks" in str(report) and "ReLU at 0" in str(report)
    assert f"x {report.excluded['x']} of {x.size}" in str(report)


def test_kink_exclusion_still_fails_a_wrong_backward_on_real_digits(
    rng: np.random.Generator,
) -> None:
    import fcnn

    _, params, state, x = two_digits_model(rng)

    def leaky_relu_bwd(cache: Any, dy: Array) -> tuple[Array, Params]:  # wrong: 1.05, not 1
        return dy * (cache.y > 0) * 1.05, {}

    wrong = fcnn.sequential(
        fcnn.Conv2d(2, 3, padding=1),
        fcnn.layer(fcnn.relu_fwd, leaky_relu_bwd, kind="relu"),
        fcnn.MaxPool2d(2),
        fcnn.Flatten(),
        fcnn.Dense(3),
    )
    report = check_layer(wrong, params, state, x, rng=rng)
    assert not report.ok(1e-3) and report.errors["x"] > 1e-2, report


def test_kink_of_a_pair_is_counted_and_smooth_points_are_not(rng: np.random.Generator) -> None:
    x = np.array([[-1.5, 0.0, 0.7, 0.0, 2.0]])
    report = check_pair(abs_fwd, abs_bwd, {}, x, rng=rng)
    assert report.excluded == {"x": 2} and report.sizes == {"x": 5} and report.ok(1e-8)
    # Off the kinks nothing is excluded, even with curvature strong enough that the
    # one-sided slopes differ by more than KINK_TOL (sin(100 x): f'' / f' ~ 100).
    def wave_fwd(params: Params, x: Array, cfg: Any = None) -> tuple[Array, Array]:
        return np.sin(100.0 * x), x

    def wave_bwd(cache: Array, dy: Array) -> tuple[Array, Params]:
        return dy * 100.0 * np.cos(100.0 * cache), {}

    smooth = check_pair(wave_fwd, wave_bwd, {}, rng.standard_normal((3, 8)), rng=rng)
    assert smooth.excluded == {} and smooth.ok(1e-6), smooth


def test_directional_check_through_a_kink_does_not_pass(rng: np.random.Generator) -> None:
    report = check_pair(abs_fwd, abs_bwd, {}, np.zeros((1, 3)), rng=rng, directional=True)
    assert report.excluded == {"direction": 1} and not report.ok(1.0)
    assert "excluded at kinks" in str(report)
