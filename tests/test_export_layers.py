"""ONNX export of issue 23's layers: padding="same", dilation, groups, ConvTranspose2d,
LeakyRelu, Gelu (both forms), Sigmoid and Tanh agree with fcnn to 1e-5 under onnxruntime and
ONNX's reference evaluator; ``python -m fcnn.export --verify`` passes for a model using all of
them. Skipped without the ``onnx`` extra."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")

import fcnn  # noqa: E402
from fcnn.export import INPUT_NAME, ExportError, build_onnx, main  # noqa: E402
from fcnn.io import save_checkpoint  # noqa: E402
from fcnn.layers.base import Layer, pair_layer  # noqa: E402
from fcnn.models import MODELS, ModelInfo, describe_model  # noqa: E402

HAVE_ORT = importlib.util.find_spec("onnxruntime") is not None
TOL = {"rtol": 1e-5, "atol": 1e-5}


def _ort(model: Any, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.asarray(sess.run(None, {INPUT_NAME: x})[0])


def _reference(model: Any, x: np.ndarray) -> np.ndarray:
    from onnx.reference import ReferenceEvaluator

    return np.asarray(ReferenceEvaluator(model).run(None, {INPUT_NAME: x})[0])


RUNNERS: list[Any] = [
    pytest.param(
        _ort,
        id="onnxruntime",
        marks=pytest.mark.skipif(not HAVE_ORT, reason="onnxruntime is not installed"),
    ),
    pytest.param(_reference, id="reference"),
]


def every_new_layer(num_classes: int = 10, impl: str = "im2col") -> Layer:
    """A small classifier using every layer issue 23 adds, for (1, 12, 12) inputs."""
    return fcnn.sequential(
        fcnn.Conv2d(4, 3, padding="same", dilation=2, impl=impl),
        fcnn.Gelu(),
        fcnn.Conv2d(8, 3, padding=1, groups=4, impl=impl),  # depthwise, 2 filters per channel
        fcnn.LeakyRelu(0.1),
        fcnn.ConvTranspose2d(4, 3, stride=2, padding=1, output_padding=1),  # 12 -> 24
        fcnn.Gelu(approximate="tanh"),
        fcnn.Conv2d(4, (3, 2), stride=(3, 2), dilation=(2, 1), groups=2, impl=impl),
        fcnn.Sigmoid(),
        fcnn.Flatten(),
        fcnn.Dense(num_classes),
        fcnn.Tanh(),
    )


def _layers() -> list[Any]:
    """(name, model, per-sample input shape) for every new setting and layer type."""
    return [
        ("conv-same", fcnn.sequential(fcnn.Conv2d(3, (3, 5), padding="same")), (2, 7, 8)),
        (
            "conv-dilated-ragged",
            fcnn.sequential(fcnn.Conv2d(3, 3, stride=2, padding=((1, 0), (0, 2)), dilation=(2, 3))),
            (2, 11, 12),
        ),
        ("conv-groups", fcnn.sequential(fcnn.Conv2d(6, 3, padding=1, groups=3)), (3, 6, 5)),
        ("conv-depthwise", fcnn.sequential(fcnn.Conv2d(4, 3, groups=4)), (4, 6, 6)),
        (
            "conv-transpose",
            fcnn.sequential(fcnn.ConvTranspose2d(3, 4, stride=2, padding=1, output_padding=1)),
            (2, 5, 4),
        ),
        (
            "conv-transpose-asymmetric",
            fcnn.sequential(
                fcnn.ConvTranspose2d(2, (2, 3), stride=(3, 2), padding=((1, 0), (0, 2)))
            ),
            (3, 3, 4),
        ),
        ("leaky-relu", fcnn.sequential(fcnn.LeakyRelu(0.2)), (2, 5, 5)),
        ("gelu", fcnn.sequential(fcnn.Gelu()), (2, 5, 5)),
        ("gelu-tanh", fcnn.sequential(fcnn.Gelu("tanh")), (2, 5, 5)),
        ("sigmoid", fcnn.sequential(fcnn.Sigmoid()), (2, 5, 5)),
        ("tanh", fcnn.sequential(fcnn.Tanh()), (2, 5, 5)),
        ("all", every_new_layer(), (1, 12, 12)),
    ]


@pytest.mark.parametrize("runner", RUNNERS)
@pytest.mark.parametrize(("name", "model", "in_shape"), _layers())
def test_every_new_layer_matches_fcnn(
    name: str, model: Layer, in_shape: tuple[int, ...], runner: Any
) -> None:
    rng = np.random.default_rng(0)
    params, state, _ = fcnn.init(model, rng, in_shape)
    params = fcnn.tree_map(lambda p: p + 0.1 * rng.standard_normal(p.shape).astype(p.dtype), params)
    proto = build_onnx(model, params, state, in_shape)
    onnx.checker.check_model(proto, full_check=True)
    for n in (3, 1):  # the batch dimension is dynamic
        x = (2 * rng.standard_normal((n, *in_shape))).astype(np.float32)
        np.testing.assert_allclose(runner(proto, x), fcnn.predict(model, params, state, x), **TOL)


def _attrs(node: Any) -> dict[str, Any]:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def test_graph_attributes() -> None:
    model = fcnn.sequential(
        fcnn.Conv2d(4, (3, 5), padding="same", dilation=(1, 2), groups=2),
        fcnn.ConvTranspose2d(2, 3, stride=2, padding=((1, 0), (2, 1)), output_padding=(1, 0)),
        fcnn.LeakyRelu(0.3),
    )
    params, state, _ = fcnn.init(model, np.random.default_rng(0), (2, 6, 7))
    nodes = build_onnx(model, params, state, (2, 6, 7)).graph.node
    conv, up, leaky = (_attrs(n) for n in nodes)
    assert conv["pads"] == [1, 4, 1, 4] and conv["dilations"] == [1, 2] and conv["group"] == 2
    assert up["pads"] == [1, 2, 0, 1] and up["output_padding"] == [1, 0]
    assert up["strides"] == [2, 2] and up["kernel_shape"] == [3, 3]
    assert leaky["alpha"] == pytest.approx(0.3)
    assert [n.op_type for n in nodes] == ["Conv", "ConvTranspose", "LeakyRelu"]


def test_gelu_is_built_from_operators_every_opset_has() -> None:
    model = fcnn.sequential(fcnn.Gelu(), fcnn.Gelu("tanh"))
    proto = build_onnx(model, {}, {}, (3,), opset=15)
    ops = [n.op_type for n in proto.graph.node]
    assert "Gelu" not in ops and ops.count("Erf") == 1 and ops.count("Tanh") == 1
    x = np.linspace(-6, 6, 30, dtype=np.float32).reshape(10, 3)
    runner = _ort if HAVE_ORT else _reference
    np.testing.assert_allclose(runner(proto, x), fcnn.predict(model, {}, {}, x), **TOL)


def test_a_malformed_gelu_spec_is_named() -> None:
    def init(rng: Any, in_shape: Any, dtype: Any) -> Any:
        return {}, {}, tuple(in_shape)

    odd = pair_layer(
        "gelu",
        lambda params, x, cfg: (x, None),
        lambda cache, dy: (dy, {}),
        None,
        init,
        {"type": "Gelu", "approximate": "sigmoid"},
    )
    with pytest.raises(ExportError, match=r"gelu1: malformed Gelu spec .*'none' or 'tanh'"):
        build_onnx(fcnn.sequential(odd), {}, {}, (3,))


def test_cli_verify_passes_for_a_model_using_every_new_layer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(MODELS, "every-new-layer", ModelInfo(every_new_layer, "issue 23"))
    model = every_new_layer(10)
    params, state, _ = fcnn.init(model, np.random.default_rng(1), (1, 12, 12))
    meta = {
        "model": describe_model("every-new-layer", 10),
        "input_shape": [1, 12, 12],
        "classes": [str(i) for i in range(10)],
        "dataset": "test",
        "normalization": {"mean": [0.2], "std": [0.3]},
        "epoch": 1,
    }
    path = tmp_path / "all.npz"
    save_checkpoint(path, params=params, state=state, meta=meta)
    assert main([str(path), "--verify"]) == 0
    assert "(ok)" in capsys.readouterr().out
    assert (
        main([str(path), "-o", str(tmp_path / "bare.onnx"), "--no-normalization", "--verify"]) == 0
    )
