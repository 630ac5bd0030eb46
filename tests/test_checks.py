"""The declared checks (fcnn.layers._checks), the one layer protocol and the derived specs."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from fcnn import (
    BatchNorm2d,
    BatchNormCfg,
    Context,
    Conv2d,
    Dropout,
    batch_norm2d_fwd,
    pair_layer,
)
from fcnn.layers._checks import RNG, TRAIN, Signature
from fcnn.layers.base import to_spec
from fcnn.models import build_model

_SIG = Signature(
    "toy",
    x="(N, C, L)",
    y="(N, F, L)",
    params={"w": "(F, C)", "b": "(F,)"},
    words={"C": "channel"},
    extras={"train": TRAIN, "rng": RNG},
)


def _toy(**kw: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "params": {"w": np.ones((4, 3)), "b": np.zeros(4)},
        "x": np.ones((2, 3, 5)),
        "cfg": None,
        "train": False,
        "rng": None,
    }
    return {**args, **kw}


def _check(**kw: Any) -> tuple[Any, ...]:
    a = _toy(**kw)
    return _SIG.check(a["params"], a["x"], a["cfg"], train=a["train"], rng=a["rng"])


@pytest.mark.parametrize(
    ("kw", "err", "match"),
    [
        ({"cfg": 3}, TypeError, r"^toy: takes no cfg, got int$"),
        ({"train": 1}, TypeError, r"^toy: train must be a bool, got int$"),
        ({"rng": 7}, TypeError, r"^toy: rng must be a numpy.random.Generator, got int$"),
        ({"params": []}, TypeError, r"^toy: params must be a dict, got list$"),
        ({"params": {"w": np.ones((4, 3))}}, ValueError, r"missing \['b'\]\)$"),
        ({"x": [1.0]}, TypeError, r"^toy: x must be an array, got list$"),
        ({"x": np.ones((2, 3, 5), int)}, TypeError, r"^toy: x must have a floating dtype, got int"),
        (
            {"x": np.ones((2, 3, 5), np.float32)},
            TypeError,
            r"^toy: dtypes must match, but x is float32, w is float64, b is float64$",
        ),
        (
            {"x": np.ones((2, 3))},
            ValueError,
            r"^toy: x must have rank 3 \(N, C, L\), got shape \(2, 3\)$",
        ),
        ({"x": np.ones((2, 1, 5))}, ValueError, r"^toy: x has 1 channel \(C\) but w expects 3$"),
        (
            {"params": {"w": np.ones((4, 3)), "b": np.zeros((4, 1))}},
            ValueError,
            r"^toy: b must have shape \(F,\) = \(4,\), got \(4, 1\)$",
        ),
    ],
)
def test_signature_writes_each_message(kw: dict[str, Any], err: type, match: str) -> None:
    with pytest.raises(err, match=match):
        _check(**kw)


def test_signature_returns_the_params_in_declared_order() -> None:
    w, b = _check()
    assert w.shape == (4, 3) and b.shape == (4,)


def test_check_dy_builds_y_from_the_declared_layouts() -> None:
    x, w = np.ones((2, 3, 5)), np.ones((4, 3))
    _SIG.check_dy(np.ones((2, 4, 5)), x=x, w=w)  # (N, F, L) from x's N, L and w's F
    with pytest.raises(ValueError, match=r"^toy: dy must have the shape of y \(2, 4, 5\)"):
        _SIG.check_dy(np.ones((2, 3, 5)), x=x, w=w)
    with pytest.raises(TypeError, match=r"^toy: dtypes must match, but y is float64, dy is f"):
        _SIG.check_dy(np.ones((2, 4, 5), np.float32), x=x, w=w)


def test_open_layouts_take_any_further_axes() -> None:
    sig = Signature("any", x="(N, D, ...)")
    sig.check({}, np.ones((2, 3)), None)
    sig.check({}, np.ones((2, 3, 4, 5)), None)
    with pytest.raises(ValueError, match=r"^any: x must have rank >= 2 \(N, D, ...\), got shape"):
        sig.check({}, np.ones(2), None)
    sig.check_dy(np.ones((2, 3, 4)), x=np.ones((2, 3, 4)))
    with pytest.raises(ValueError, match=r"dy must have the shape of y \(2, 3, 4\), got \(2, 3\)"):
        sig.check_dy(np.ones((2, 3)), x=np.ones((2, 3, 4)))
    assert sig.check_init((3, 4), np.float32) == (3, 4)
    with pytest.raises(ValueError, match=r"^any: input shape must be \(D, ...\) \(no batch axis\)"):
        sig.check_init((), np.float32)


def test_batch_norm_state_leaves_by_the_cache() -> None:
    """batch_norm2d_fwd(params, x, cfg, *, state, train) -> (y, cache); cache.state is new."""
    rng = np.random.default_rng(0)
    params = {"gamma": np.ones(3), "beta": np.zeros(3)}
    state = {"mean": np.zeros(3), "var": np.ones(3)}
    x = rng.standard_normal((4, 3, 2, 2)) + 1.0
    out = batch_norm2d_fwd(params, x, BatchNormCfg(momentum=1.0), state=state, train=True)
    assert len(out) == 2
    np.testing.assert_allclose(out[1].state["mean"], x.mean(axis=(0, 2, 3)))
    _, cache = batch_norm2d_fwd(params, x, BatchNormCfg(), state=state, train=False)
    assert cache.state is state
    # The Layer wrapper hands the same state on, through pair_layer like every layer.
    layer = BatchNorm2d(momentum=1.0)
    _, _, new_state = layer.apply(params, state, x, Context(train=True))
    np.testing.assert_allclose(new_state["mean"], x.mean(axis=(0, 2, 3)))


def test_pair_layer_passes_only_the_declared_extras() -> None:
    seen: list[dict[str, Any]] = []

    def fwd(params: Any, x: Any, cfg: Any, *, train: bool) -> tuple[Any, Any]:
        seen.append({"train": train})
        return x, None

    layer = pair_layer("t", fwd, lambda c, dy: (dy, {}), None, None, {})  # type: ignore[arg-type]
    _, _, state = layer.apply({}, {}, np.ones(2), Context(train=True, rng=np.random.default_rng()))
    assert seen == [{"train": True}] and state == {}


def test_no_layer_file_builds_its_own_apply() -> None:
    for layer in (Dropout(0.5), BatchNorm2d(), Conv2d(2, 3)):
        assert layer.apply.__qualname__ == "pair_layer.<locals>.apply"


def test_spec_is_derived_from_the_cfg() -> None:
    assert to_spec("T", None, a=(1, (2, 3))) == {"type": "T", "a": [1, [2, 3]]}


def test_registry_spec_json_is_pinned() -> None:
    """Checkpoints store this JSON: the derived spec must stay byte-for-byte the same."""
    got = json.dumps(build_model("small", 10).spec)
    assert got == (
        '{"type": "Sequential", "layers": [{"name": "conv1", "type": "Conv2d", "out_channels": '
        '8, "kernel_size": [3, 3], "stride": [1, 1], "padding": [[1, 1], [1, 1]], "impl": '
        '"im2col"}, {"name": "relu1", "type": "Relu"}, {"name": "maxpool1", "type": "MaxPool2d", '
        '"window": [2, 2], "stride": [2, 2], "padding": [[0, 0], [0, 0]]}, {"name": "conv2", '
        '"type": "Conv2d", "out_channels": 16, "kernel_size": [3, 3], "stride": [1, 1], '
        '"padding": [[1, 1], [1, 1]], "impl": "im2col"}, {"name": "relu2", "type": "Relu"}, '
        '{"name": "maxpool2", "type": "MaxPool2d", "window": [2, 2], "stride": [2, 2], '
        '"padding": [[0, 0], [0, 0]]}, {"name": "flatten1", "type": "Flatten"}, {"name": '
        '"dense1", "type": "Dense", "out_features": 10}]}'
    )
