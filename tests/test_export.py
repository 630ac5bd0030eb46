"""ONNX export: every exportable layer and every registered model agrees with fcnn to 1e-5.

Each graph is checked with ``onnx.checker`` and run with onnxruntime and with ONNX's
reference evaluator (whichever are installed). Skipped without the ``onnx`` extra.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import DigitsRun, train_on_digits

onnx = pytest.importorskip("onnx")

import fcnn  # noqa: E402
from fcnn.export import (  # noqa: E402
    INPUT_NAME,
    OPSET,
    ExportError,
    build_onnx,
    main,
    run_onnx,
    to_onnx,
)
from fcnn.io import save_checkpoint  # noqa: E402
from fcnn.layers.base import Layer, pair_layer  # noqa: E402
from fcnn.models import MODELS, build_model, describe_model, load_trained  # noqa: E402

HAVE_ORT = importlib.util.find_spec("onnxruntime") is not None
TOL = {"rtol": 1e-5, "atol": 1e-5}


def _reference(model: Any, x: np.ndarray) -> np.ndarray:
    from onnx.reference import ReferenceEvaluator

    return np.asarray(ReferenceEvaluator(model).run(None, {INPUT_NAME: x})[0])


def _ort(model: Any, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.asarray(sess.run(None, {INPUT_NAME: x})[0])


RUNNERS: list[Any] = [
    pytest.param(
        _ort,
        id="onnxruntime",
        marks=pytest.mark.skipif(not HAVE_ORT, reason="onnxruntime is not installed"),
    ),
    pytest.param(_reference, id="reference"),
]


def _bn_state(state: Any, rng: np.random.Generator) -> Any:
    """``state`` with random running statistics, so batch norm is not the identity."""

    def fill(tree: Any) -> Any:
        out: dict[str, Any] = {}
        for k, v in tree.items():
            if isinstance(v, dict):
                out[k] = fill(v)
            elif k == "mean":
                out[k] = rng.normal(0, 0.5, v.shape).astype(v.dtype)
            elif k == "var":
                out[k] = rng.uniform(0.5, 2.0, v.shape).astype(v.dtype)
            else:
                out[k] = v
        return out

    return fill(state)


def _bn_params(params: Any, rng: np.random.Generator) -> Any:
    """``params`` with random gamma and beta."""
    return fcnn.tree_map_with_path(
        lambda path, v: (
            rng.normal(1.0 if path.endswith("gamma") else 0.0, 0.3, v.shape).astype(v.dtype)
            if path.endswith(("gamma", "beta"))
            else v
        ),
        params,
    )


def _setup(
    model: Layer, in_shape: tuple[int, ...], seed: int = 0
) -> tuple[dict[str, Any], dict[str, Any]]:
    rng = np.random.default_rng(seed)
    params, state, _ = fcnn.init(model, rng, in_shape)
    return _bn_params(params, rng), _bn_state(state, rng)


def _check_agrees(
    model: Layer,
    in_shape: tuple[int, ...],
    runner: Callable[[Any, np.ndarray], np.ndarray],
    tmp_path: Path,
    batch_sizes: tuple[int, ...] = (3, 1),
) -> None:
    params, state = _setup(model, in_shape)
    path = tmp_path / "model.onnx"
    to_onnx(model, params, state, in_shape, path)
    loaded = onnx.load(str(path))
    onnx.checker.check_model(loaded, full_check=True)
    rng = np.random.default_rng(1)
    for n in batch_sizes:  # the batch dimension is dynamic
        x = rng.standard_normal((n, *in_shape)).astype(np.float32)
        want = fcnn.predict(model, params, state, x)
        got = runner(loaded, x)
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, **TOL)


def _layers() -> list[Any]:
    """(name, model, per-sample input shape) for every exportable layer type."""
    cases: list[Any] = [
        ("conv", fcnn.sequential(fcnn.Conv2d(4, 3)), (2, 7, 6)),
        (
            "conv-asymmetric",
            fcnn.sequential(fcnn.Conv2d(3, (3, 2), stride=(2, 1), padding=((1, 0), (0, 2)))),
            (2, 9, 8),
        ),
        ("conv-nondivisible-stride", fcnn.sequential(fcnn.Conv2d(2, 3, stride=2)), (1, 8, 10)),
        ("relu", fcnn.sequential(fcnn.Relu()), (2, 5, 5)),
        ("maxpool", fcnn.sequential(fcnn.MaxPool2d(2)), (3, 8, 8)),
        (
            "maxpool-padded-overlap",
            fcnn.sequential(fcnn.MaxPool2d((3, 2), stride=(2, 1), padding=((1, 0), (1, 1)))),
            (2, 9, 7),
        ),
        ("avgpool", fcnn.sequential(fcnn.AvgPool2d(2)), (3, 8, 8)),
        (
            "avgpool-padded",  # count_include_pad: fcnn divides by KH * KW
            fcnn.sequential(fcnn.AvgPool2d(3, stride=2, padding=((1, 0), (1, 1)))),
            (2, 9, 8),
        ),
        ("flatten-dense", fcnn.sequential(fcnn.Flatten(), fcnn.Dense(5)), (2, 3, 4)),
        (
            "nested",
            fcnn.sequential(
                fcnn.sequential(fcnn.Conv2d(3, 3, padding=1), fcnn.Relu(), name="block1"),
                fcnn.sequential(fcnn.AvgPool2d(2), name="block2"),
                fcnn.Flatten(),
                fcnn.Dense(4, name="head"),
            ),
            (1, 6, 6),
        ),
        ("batchnorm2d", fcnn.sequential(fcnn.BatchNorm2d(eps=1e-3)), (3, 4, 5)),
        (
            "batchnorm1d",
            fcnn.sequential(fcnn.Flatten(), fcnn.Dense(6), fcnn.BatchNorm1d(momentum=0.2)),
            (2, 3, 3),
        ),
        (
            "dropout",
            fcnn.sequential(
                fcnn.SpatialDropout2d(0.3), fcnn.Conv2d(2, 3), fcnn.Flatten(), fcnn.Dropout(0.5)
            ),
            (2, 5, 5),
        ),
        ("dropout-only", fcnn.sequential(fcnn.Dropout(0.5)), (4,)),
        *_block_cases(),
    ]
    return cases


def _block_cases() -> list[Any]:
    """Residual (Add), Concat and GlobalAvgPool2d, alone and nested (issue 23)."""
    conv_bn = fcnn.sequential(fcnn.Conv2d(3, 3, padding=1), fcnn.BatchNorm2d(), fcnn.Relu())
    return [
        ("residual-identity", fcnn.residual(conv_bn), (3, 5, 6)),
        (
            "residual-projection",
            fcnn.sequential(
                fcnn.residual(fcnn.Conv2d(4, 3, stride=2, padding=1), fcnn.Conv2d(4, 1, stride=2)),
                fcnn.Relu(),
            ),
            (2, 7, 6),
        ),
        ("residual-of-dropout", fcnn.residual(fcnn.Dropout(0.5)), (2, 3, 3)),
        (
            "concat",
            fcnn.concat(fcnn.Conv2d(2, 1), fcnn.Relu(), fcnn.AvgPool2d(3, 1, 1), fcnn.Dropout(0.2)),
            (3, 4, 5),
        ),
        (
            "concat-flat",
            fcnn.sequential(fcnn.Flatten(), fcnn.concat(fcnn.Dense(3), fcnn.Dense(2))),
            (2, 2, 2),
        ),
        ("global-avg-pool", fcnn.sequential(fcnn.GlobalAvgPool2d(), fcnn.Dense(3)), (4, 5, 3)),
        (
            "nested-blocks",
            fcnn.sequential(
                fcnn.concat(fcnn.residual(conv_bn), fcnn.sequential(fcnn.Conv2d(2, 1), name="b")),
                fcnn.residual(fcnn.concat(fcnn.Conv2d(2, 3, padding=1), fcnn.Conv2d(3, 1))),
                fcnn.GlobalAvgPool2d(),
                fcnn.Dense(2, name="head"),
            ),
            (3, 6, 6),
        ),
    ]


@pytest.mark.parametrize("runner", RUNNERS)
@pytest.mark.parametrize(("name", "model", "in_shape"), _layers())
def test_every_layer_matches_fcnn(
    name: str, model: Layer, in_shape: tuple[int, ...], runner: Any, tmp_path: Path
) -> None:
    _check_agrees(model, in_shape, runner, tmp_path)


def _model_shape(name: str) -> tuple[int, int, int]:
    return (3, 32, 32) if name in ("cifar", "resnet") else (1, 28, 28)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_registered_model_matches_fcnn(name: str, tmp_path: Path) -> None:
    runner = _ort if HAVE_ORT else _reference
    _check_agrees(build_model(name, 10), _model_shape(name), runner, tmp_path, (4,))


def _train_default(steps: int) -> DigitsRun:
    """The default model after ``steps`` Adam steps of 32 embedded digits: model, params,
    state and the training mean and std (a ``DigitsRun``)."""
    return train_on_digits("default", 32 * steps, epochs=1, lr=2e-3, seed=3)


def test_trained_default_model_matches_fcnn(tmp_path: Path) -> None:
    model, params, state, mean, std = _train_default(steps=4)
    path = tmp_path / "default.onnx"
    to_onnx(model, params, state, (1, 28, 28), path)
    ds = fcnn.data.load_digits_sample()
    x = fcnn.data.normalize(ds.x_test[:16], mean, std)
    want = fcnn.predict(model, params, state, x)
    np.testing.assert_allclose(run_onnx(str(path), x), want, **TOL)
    if HAVE_ORT:  # and the reference evaluator on a few, it is slow on a 420k-param net
        np.testing.assert_allclose(_reference(onnx.load(str(path)), x[:2]), want[:2], **TOL)


@pytest.mark.slow
def test_trained_default_model_longer(tmp_path: Path) -> None:
    model, params, state, mean, std = _train_default(steps=150)
    path = tmp_path / "default.onnx"
    to_onnx(model, params, state, (1, 28, 28), path, normalization=(mean, std), softmax=True)
    ds = fcnn.data.load_digits_sample()
    x = ds.x_test[:256]
    want = fcnn.softmax(fcnn.predict(model, params, state, fcnn.data.normalize(x, mean, std)))
    got = run_onnx(str(path), x)
    np.testing.assert_allclose(got, want, **TOL)
    assert float(np.mean(got.argmax(1) == ds.y_test[:256])) > 0.8


# --- graph form ----------------------------------------------------------------------------


def test_explicit_opset_ir_version_and_dynamic_batch() -> None:
    model = build_model("small", 10)
    params, state = _setup(model, (1, 28, 28))
    proto = build_onnx(model, params, state, (1, 28, 28))
    assert [(o.domain, o.version) for o in proto.opset_import] == [("", OPSET)]
    assert proto.ir_version == 8
    assert proto.producer_name == "fcnn" and proto.producer_version == fcnn.__version__
    (inp,) = proto.graph.input
    dims = inp.type.tensor_type.shape.dim
    assert inp.name == INPUT_NAME and dims[0].dim_param == "N"
    assert [d.dim_value for d in dims[1:]] == [1, 28, 28]
    (out,) = proto.graph.output
    assert out.name == "logits"
    assert [d.dim_value for d in out.type.tensor_type.shape.dim[1:]] == [10]
    ops = [n.op_type for n in proto.graph.node]
    assert ops == ["Conv", "Relu", "MaxPool", "Conv", "Relu", "MaxPool", "Flatten", "Gemm"]
    names = {i.name for i in proto.graph.initializer}
    assert names == {"conv1/w", "conv1/b", "conv2/w", "conv2/b", "dense1/w", "dense1/b"}


def test_batchnorm_is_eval_mode_and_dropout_is_omitted() -> None:
    model = build_model("bn", 10)
    params, state = _setup(model, (1, 28, 28))
    proto = build_onnx(model, params, state, (1, 28, 28))
    ops = [n.op_type for n in proto.graph.node]
    assert "Dropout" not in ops and ops.count("BatchNormalization") == 3
    for node in proto.graph.node:
        if node.op_type == "BatchNormalization":
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            assert attrs["training_mode"] == 0
            assert attrs["epsilon"] == pytest.approx(1e-5)
            assert attrs["momentum"] == pytest.approx(0.9)  # ONNX weighs the running value
            assert len(node.output) == 1


def test_batchnorm_momentum_is_read_from_the_spec() -> None:
    """Export reads the stored momentum; a spec without one is malformed, not defaulted."""
    model = fcnn.sequential(fcnn.Flatten(), fcnn.BatchNorm1d(momentum=0.25))
    params, state = _setup(model, (4,))
    proto = build_onnx(model, params, state, (4,))
    (node,) = [n for n in proto.graph.node if n.op_type == "BatchNormalization"]
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    assert attrs["momentum"] == pytest.approx(0.75)
    no_momentum = fcnn.sequential(_weird_layer({"type": "BatchNorm1d", "eps": 1e-5}))
    with pytest.raises(ExportError, match=r"weird1: malformed BatchNorm1d spec .*'momentum'"):
        build_onnx(no_momentum, {"weird1": params["bn1"]}, {"weird1": state["bn1"]}, (4,))


def test_opset_can_be_chosen(tmp_path: Path) -> None:
    model = fcnn.sequential(fcnn.Conv2d(2, 3), fcnn.Relu(), fcnn.Flatten(), fcnn.Dense(3))
    params, state = _setup(model, (1, 6, 6))
    proto = build_onnx(model, params, state, (1, 6, 6), opset=15)
    assert proto.opset_import[0].version == 15
    x = np.random.default_rng(0).standard_normal((2, 1, 6, 6)).astype(np.float32)
    np.testing.assert_allclose(run_onnx(proto, x), fcnn.predict(model, params, state, x), **TOL)


def test_normalization_and_softmax_in_the_graph() -> None:
    model = build_model("small", 3)
    params, state = _setup(model, (3, 12, 12))
    mean, std = np.array([0.2, 0.5, 0.7]), np.array([0.3, 0.25, 0.1])
    proto = build_onnx(model, params, state, (3, 12, 12), normalization=(mean, std), softmax=True)
    assert [n.op_type for n in proto.graph.node][:2] == ["Sub", "Div"]
    assert proto.graph.output[0].name == "probabilities"
    x = np.random.default_rng(2).random((5, 3, 12, 12), dtype=np.float32)
    xn = ((x - mean[:, None, None]) / std[:, None, None]).astype(np.float32)
    want = fcnn.softmax(fcnn.predict(model, params, state, xn))
    got = run_onnx(proto, x)
    np.testing.assert_allclose(got, want, **TOL)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-5)


# --- errors --------------------------------------------------------------------------------


def _weird_layer(spec: dict[str, Any]) -> Layer:
    """A parameter-free identity layer with the given spec."""

    def init(rng: Any, in_shape: Any, dtype: Any) -> Any:
        return {}, {}, tuple(in_shape)

    def fwd(params: Any, x: Any, cfg: Any) -> Any:
        return x, None

    return pair_layer("weird", fwd, lambda cache, dy: (dy, {}), None, init, spec)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"type": "Swish"}, "block1/weird1: cannot export a 'Swish' layer to ONNX"),
        ({}, "block1/weird1: cannot export a layer without a spec type"),
    ],
)
def test_unexportable_layer_is_named(spec: dict[str, Any], message: str) -> None:
    model = fcnn.sequential(
        fcnn.sequential(fcnn.Relu(), _weird_layer(spec), name="block1"), fcnn.Flatten()
    )
    with pytest.raises(ExportError, match="exportable layer types: Sequential, Conv2d") as info:
        build_onnx(model, {}, {}, (2, 3, 3))
    assert message in str(info.value)


def test_params_that_do_not_fit_are_refused() -> None:
    model = fcnn.sequential(fcnn.Conv2d(2, 3), fcnn.Flatten(), fcnn.Dense(3))
    params, state = _setup(model, (1, 6, 6))
    with pytest.raises(ExportError, match="conv1: params has no 'w'"):
        build_onnx(model, {**params, "conv1": {"b": params["conv1"]["b"]}}, state, (1, 6, 6))
    with pytest.raises(ExportError, match=r"do not fit the model.*dense1"):
        build_onnx(model, params, state, (1, 7, 7))  # dense1/w expects 16 features


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"opset": 9}, "opset must be an int in"),
        ({"opset": 10_000}, "opset must be an int in"),
        ({"normalization": ([0.5, 0.5], [1.0, 1.0])}, "one per channel"),
        ({"normalization": ([0.5], [0.0])}, "positive"),
    ],
)
def test_bad_options(kwargs: dict[str, Any], message: str) -> None:
    model = fcnn.sequential(fcnn.Flatten(), fcnn.Dense(2))
    params, state = _setup(model, (1, 2, 2))
    with pytest.raises(ExportError, match=message):
        build_onnx(model, params, state, (1, 2, 2), **kwargs)


def test_bad_input_shape() -> None:
    model = fcnn.sequential(fcnn.Flatten(), fcnn.Dense(2))
    with pytest.raises(ExportError, match="input_shape"):
        build_onnx(model, {}, {}, (1, 0, 2))


def test_write_is_atomic_and_leaves_no_temporary(tmp_path: Path) -> None:
    model = fcnn.sequential(fcnn.Flatten(), fcnn.Dense(2))
    params, state = _setup(model, (1, 2, 2))
    path = tmp_path / "m.onnx"
    path.write_bytes(b"old")
    to_onnx(model, params, state, (1, 2, 2), path)
    assert os.listdir(tmp_path) == ["m.onnx"]
    onnx.checker.check_model(onnx.load(str(path)))
    with pytest.raises(OSError):
        to_onnx(model, params, state, (1, 2, 2), tmp_path / "missing" / "m.onnx")


# --- command line --------------------------------------------------------------------------


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    model = build_model("small", 10)
    params, state = _setup(model, (1, 28, 28))
    meta = {
        "model": describe_model("small", 10),
        "input_shape": [1, 28, 28],
        "classes": [str(i) for i in range(10)],
        "dataset": "digits-sample",
        "normalization": {"mean": [0.13], "std": [0.31]},
        "epoch": 1,
    }
    path = tmp_path / "small.npz"
    save_checkpoint(path, params=params, state=state, meta=meta)
    return path


def test_cli_converts_a_checkpoint(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([str(checkpoint), "--verify", "--softmax"]) == 0
    out = capsys.readouterr().out
    assert "wrote" in out and "raw [0, 1] images" in out and "(ok)" in out
    onnx_path = checkpoint.with_suffix(".onnx")
    proto = onnx.load(str(onnx_path))
    onnx.checker.check_model(proto, full_check=True)
    props = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(props["classes"]) == [str(i) for i in range(10)]
    assert json.loads(props["normalization_in_graph"]) is True
    trained = load_trained(checkpoint)
    x = np.random.default_rng(5).random((6, 1, 28, 28), dtype=np.float32)
    np.testing.assert_allclose(run_onnx(proto, x), trained.predict_proba(x), **TOL)


def test_cli_without_normalization(checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "bare.onnx"
    assert main([str(checkpoint), "-o", str(out), "--no-normalization", "--verify"]) == 0
    proto = onnx.load(str(out))
    assert proto.graph.node[0].op_type == "Conv"
    assert (
        json.loads({p.key: p.value for p in proto.metadata_props}["normalization_in_graph"])
        is False
    )


def test_cli_bad_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    assert main([str(bad)]) == 1
    assert capsys.readouterr().err.startswith("error: ")
    assert main([str(tmp_path / "missing.npz")]) == 1
    assert not (tmp_path / "bad.onnx").exists()


def test_import_fcnn_needs_neither_onnx_nor_fastapi() -> None:
    code = (
        "import sys, fcnn, fcnn.models, fcnn.data, fcnn.io\n"
        "bad = [m for m in ('onnx', 'onnxruntime', 'fastapi', 'uvicorn') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# --- residual, concat and global pooling in the graph (issue 23) ----------------------------


def test_resnet_graph_adds_the_paths_and_pools_globally() -> None:
    model = build_model("resnet", 10)
    params, state = _setup(model, (3, 32, 32))
    proto = build_onnx(model, params, state, (3, 32, 32))
    nodes = {n.name: n for n in proto.graph.node}
    add = nodes["stage2/residual1"]
    assert add.op_type == "Add"
    assert list(add.input) == ["stage2/residual1/block/bn2", "stage2/residual1/shortcut/bn1"]
    ident = nodes["stage1/residual1"]  # the identity shortcut adds the block's input itself
    assert ident.op_type == "Add" and ident.input[1] == "stem/relu1"
    ops = [n.op_type for n in proto.graph.node]
    assert ops[-3:] == ["GlobalAveragePool", "Flatten", "Gemm"] and ops.count("Add") == 3


def test_concat_graph_joins_along_the_axis() -> None:
    model = fcnn.concat(fcnn.Conv2d(2, 1), fcnn.Relu(name="r"), axis=1)
    params, state = _setup(model, (3, 4, 4))
    proto = build_onnx(model, params, state, (3, 4, 4))
    (join,) = [n for n in proto.graph.node if n.op_type == "Concat"]
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in join.attribute}
    assert attrs == {"axis": 1} and list(join.input) == ["conv1", "r"]
    assert proto.graph.output[0].name == "logits"


def test_unexportable_layer_inside_a_block_is_named() -> None:
    model = fcnn.sequential(
        fcnn.residual(fcnn.sequential(fcnn.Relu(), _weird_layer({"type": "Swish"}))), fcnn.Flatten()
    )
    with pytest.raises(ExportError, match=r"^residual1/block/weird1: cannot export a 'Swish'"):
        build_onnx(model, {}, {}, (2, 3, 3))


def test_cli_verifies_a_trained_resnet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """train.py --model resnet on a small local CIFAR-10, then python -m fcnn.export --verify."""
    from helpers import fake_cifar10

    import train

    fake_cifar10(tmp_path, monkeypatch)
    ckpt = tmp_path / "resnet.npz"
    argv = ["--dataset", "cifar10", "--data-dir", str(tmp_path), "--model", "resnet"]
    assert (
        train.main([*argv, "--epochs", "1", "--batch-size", "16", "--quiet", "--save", str(ckpt)])
        == 0
    )
    capsys.readouterr()
    assert main([str(ckpt), "--verify"]) == 0
    out = capsys.readouterr().out
    assert "(ok)" in out and "output 'logits' (N, 10)" in out
    proto = onnx.load(str(ckpt.with_suffix(".onnx")))
    assert {"Add", "GlobalAveragePool"} <= {n.op_type for n in proto.graph.node}


# --- issue 21: -o never replaces a file silently; the shared checkpoint argument; 0.2.0 ----


def test_cli_refuses_to_replace_a_file_without_overwrite(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "m.onnx"
    out.write_bytes(b"mine")
    assert main(["--checkpoint", str(checkpoint), "-o", str(out)]) == 1
    assert capsys.readouterr().err == (
        f"error: -o {out} already exists; pass --overwrite to replace it\n"
    )
    assert out.read_bytes() == b"mine"
    assert main([str(checkpoint), "-o", str(out), "--overwrite"]) == 0
    onnx.checker.check_model(onnx.load(str(out)), full_check=True)


@pytest.mark.parametrize("name", ["v0.2.0-lines-small.npz", "v0.2.0-digits-fast.npz"])
def test_cli_exports_a_checkpoint_of_fcnn_0_2_0(name: str, tmp_path: Path) -> None:
    fixture = Path(__file__).parent / "fixtures" / name
    out = tmp_path / "old.onnx"
    assert main([str(fixture), "-o", str(out), "--verify"]) == 0
    props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert json.loads(props["dataset"]) == load_trained(fixture).record.dataset  # type: ignore[union-attr]
