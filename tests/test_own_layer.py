"""A user's own pure pair becomes a layer in one call (``fcnn.layer``), issue 13."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import pytest

import fcnn
from fcnn.gradcheck import check_layer

Arr = np.ndarray[Any, Any]


class SquashCache(NamedTuple):
    y: Arr


def squash_fwd(params: dict[str, Any], x: Arr, cfg: None = None) -> tuple[Arr, SquashCache]:
    y = np.tanh(x)
    return y, SquashCache(y)


def squash_bwd(cache: SquashCache, dy: Arr) -> tuple[Arr, dict[str, Any]]:
    return dy * (1 - cache.y**2), {}


def test_own_pair_becomes_a_layer_in_one_call(rng: np.random.Generator) -> None:
    layer = fcnn.layer(squash_fwd, squash_bwd)
    assert layer.kind == "squash" and dict(layer.spec) == {"type": "squash"}
    model = fcnn.sequential(fcnn.Flatten(), fcnn.Dense(6), layer, fcnn.Dense(3))
    params, state, out_shape = fcnn.init(model, rng, (2, 2))
    assert out_shape == (3,) and set(params) == {"dense1", "dense2"}
    x = rng.standard_normal((4, 2, 2)).astype(np.float32)
    y, _, _ = fcnn.forward(model, params, state, x)
    np.testing.assert_allclose(
        y, np.tanh(x.reshape(4, 4) @ params["dense1"]["w"] + params["dense1"]["b"])
        @ params["dense2"]["w"] + params["dense2"]["b"],
        rtol=1e-5,
    )
    assert check_layer(model, params, state, x, rng=rng).ok(1e-6)


def test_own_layer_with_params_init_name_and_cfg(rng: np.random.Generator) -> None:
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class ScaleCfg:
        power: int = 2

    def scale_fwd(params: dict[str, Any], x: Arr, cfg: ScaleCfg) -> tuple[Arr, Any]:
        return params["a"] * x**cfg.power, (x, params["a"], cfg)

    def scale_bwd(cache: Any, dy: Arr) -> tuple[Arr, dict[str, Any]]:
        x, a, cfg = cache
        da = np.sum(dy * x**cfg.power, axis=0)
        return dy * a * cfg.power * x ** (cfg.power - 1), {"a": da}

    def scale_init(rng: np.random.Generator, in_shape: Any, dtype: Any) -> Any:
        return {"a": rng.standard_normal(in_shape).astype(dtype)}, {}, tuple(in_shape)

    layer = fcnn.layer(scale_fwd, scale_bwd, ScaleCfg(3), init=scale_init, name="sc")
    assert layer.name == "sc" and dict(layer.spec) == {"type": "scale", "power": 3}
    model = fcnn.sequential(layer, fcnn.Dense(2))
    params, state, _ = fcnn.init(model, rng, (5,))
    assert params["sc"]["a"].shape == (5,) and params["sc"]["a"].dtype == np.float32
    x = rng.standard_normal((3, 5)).astype(np.float32)
    assert check_layer(model, params, state, x, rng=rng).ok(1e-6)
    # A lambda has no usable name: the stem is "layer".
    assert fcnn.layer(lambda p, x, c: (x, None), lambda c, dy: (dy, {})).kind == "layer"


def test_own_layer_rejects_non_functions() -> None:
    with pytest.raises(TypeError, match="layer: bwd must be a function, got NoneType"):
        fcnn.layer(squash_fwd, None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="layer: init must be a function, got dict"):
        fcnn.layer(squash_fwd, squash_bwd, init={})  # type: ignore[arg-type]


def test_sequential_of_a_pair_names_the_wrapper() -> None:
    with pytest.raises(TypeError, match=r"argument 1 is a tuple.*fcnn\.layer\(fwd, bwd"):
        fcnn.sequential(fcnn.Relu(), (squash_fwd, squash_bwd))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"squash_fwd is a function.*fcnn\.layer\(fwd, bwd"):
        fcnn.sequential(squash_fwd)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"Conv2d\(\.\.\.\), not conv2d_fwd"):
        fcnn.sequential(fcnn.conv2d_fwd)  # type: ignore[arg-type]
