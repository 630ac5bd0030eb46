"""Export a model to ONNX: ``to_onnx`` and ``python -m fcnn.export CHECKPOINT``.

Needs the ``onnx`` package (``pip install "fcnn[onnx]"``, which also installs
onnxruntime to run the result). The graph is built from the layers' ``spec``
dicts and the params/state trees, one standard ONNX operator per layer::

    Conv2d      -> Conv                 pads [top, left, bottom, right], OIHW weights as is,
                                        dilations, group; padding="same" as explicit pads
    ConvTranspose2d -> ConvTranspose    pads, output_padding; (C_in, C_out, KH, KW) weights
    Relu        -> Relu
    LeakyRelu   -> LeakyRelu            alpha = slope
    Gelu        -> Mul, Erf, Add, Mul   x * (1 + erf(x / sqrt(2))) / 2; the tanh form with
                                        Tanh (ONNX's own Gelu needs opset 20)
    Sigmoid     -> Sigmoid
    Tanh        -> Tanh
    MaxPool2d   -> MaxPool              padded cells never win (fcnn pads with -inf)
    AvgPool2d   -> AveragePool          count_include_pad=1 (fcnn divides by KH * KW)
    Flatten     -> Flatten              axis=1, C order like fcnn
    Dense       -> Gemm                 y = x @ w + b with w: (D_in, D_out), transB=0
    BatchNorm2d -> BatchNormalization   eval mode: running mean/var from ``state``, epsilon=eps
    BatchNorm1d -> BatchNormalization   on (N, C) inputs
    GlobalAvgPool2d -> GlobalAveragePool, Flatten   (N, C, 1, 1) -> (N, C)
    Dropout, SpatialDropout2d           omitted (identity at inference)
    Sequential  -> its children in order; names nest like params ("block1/conv2")
    Residual    -> the block's and the shortcut's nodes on the same input, then Add
                   (the identity shortcut: the input itself)
    Concat      -> every branch's nodes on the same input, then Concat along the axis

The graph has one input ``"input"`` of shape ``(N, C, H, W)`` float32 with a
dynamic batch dimension ``N`` and one output ``"logits"`` ``(N, K)`` (or
``"probabilities"`` with ``softmax=True``). Weights are stored as float32.

**Normalisation.** By default the input is what the network itself sees: images
already normalised with the training statistics, ``(x - mean) / std`` with
``meta["normalization"]`` of the checkpoint. Pass ``normalization=(mean, std)``
to bake that step into the graph as a leading ``Sub``/``Div`` pair; the input is
then raw ``[0, 1]`` images, exactly what ``Trained.predict_proba`` takes. The
command line does that by default (``--no-normalization`` turns it off).

The opset is explicit (``OPSET``, 17 by default) and the model's IR version is
the lowest that opset needs (8 for opset 17), so any recent onnxruntime loads
it. The written model passes ``onnx.checker.check_model(..., full_check=True)``.
A layer that cannot be exported raises ``ExportError`` naming its path and type.

    to_onnx(model, params, state, (1, 28, 28), "model.onnx")
    python -m fcnn.export runs/model.npz -o model.onnx --verify
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

try:
    import onnx
    from onnx import TensorProto, helper, numpy_helper
except ImportError as _err:  # pragma: no cover - exercised only without the extra
    _NEEDS = 'ONNX export needs the onnx package: pip install "fcnn[onnx]"'
    if __name__ == "__main__":  # python -m fcnn.export: the line alone, no traceback
        print(f"error: {_NEEDS}", file=sys.stderr)
        sys.exit(1)
    raise ImportError(_NEEDS) from _err

from .atomic import atomic_write
from .cli import (
    add_checkpoint,
    add_overwrite,
    add_trust_code,
    check_new_file,
    checkpoint_path,
    run_main,
)
from .io import fcnn_version
from .layers.base import Array, Layer, Params, State
from .model import predict
from .ops.shapes import same_padding
from .paths import PathError, check_readable_file, check_writable_file

__all__ = [
    "EXPORTABLE",
    "INPUT_NAME",
    "OPSET",
    "ExportError",
    "build_onnx",
    "main",
    "run_onnx",
    "to_onnx",
]

OPSET = 17
MIN_OPSET = 15  # BatchNormalization's current form (training_mode attribute, typed stats)
INPUT_NAME = "input"
BATCH_DIM = "N"

Nodes = list[onnx.NodeProto]
Inits = list[onnx.TensorProto]
# A converter: (spec, params, state, input name, layer path) -> (nodes, initializers, output name)
Converter = Callable[[Mapping[str, Any], Params, State, str, str], tuple[Nodes, Inits, str]]


class ExportError(ValueError):
    """A model, its params or its options cannot be written as ONNX."""


# --- helpers -----------------------------------------------------------------------------


def _leaf(tree: Mapping[str, Any], key: str, what: str, path: str) -> NDArray[np.float32]:
    """``tree[key]`` as a float32 array, or an ``ExportError`` naming the layer."""
    if not isinstance(tree, Mapping) or key not in tree:
        have = sorted(tree) if isinstance(tree, Mapping) else type(tree).__name__
        raise ExportError(f"{path}: {what} has no {key!r} (has {have})")
    return np.asarray(tree[key], dtype=np.float32)


def _init(name: str, array: ArrayLike) -> onnx.TensorProto:
    return numpy_helper.from_array(np.ascontiguousarray(np.asarray(array, dtype=np.float32)), name)


def _pads(spec: Mapping[str, Any]) -> list[int]:
    """fcnn's ``[[top, bottom], [left, right]]`` as ONNX's ``[top, left, bottom, right]``."""
    (top, bottom), (left, right) = spec["padding"]
    return [int(top), int(left), int(bottom), int(right)]


def _ints(value: Any) -> list[int]:
    return [int(v) for v in value]


# --- one converter per layer type ----------------------------------------------------------


def _conv2d(
    spec: Mapping[str, Any], params: Params, state: State, x: str, path: str
) -> tuple[Nodes, Inits, str]:
    w, b = _leaf(params, "w", "params", path), _leaf(params, "b", "params", path)
    dilation = _ints(spec.get("dilation", [1, 1]))  # 0.2.0 specs have neither
    node = helper.make_node(
        "Conv",
        [x, f"{path}/w", f"{path}/b"],
        [path],
        name=path,
        kernel_shape=list(w.shape[2:]),
        strides=_ints(spec["stride"]),
        pads=_conv_pads(spec, w.shape[2], w.shape[3], dilation),
        dilations=dilation,
        group=int(spec.get("groups", 1)),
    )
    return [node], [_init(f"{path}/w", w), _init(f"{path}/b", b)], path


def _conv_pads(spec: Mapping[str, Any], kh: int, kw: int, dilation: list[int]) -> list[int]:
    """Conv2d's pads; ``padding="same"`` resolved for the kernel as fcnn's forward does."""
    if spec["padding"] != "same":
        return _pads(spec)
    (top, bottom), (left, right) = same_padding(kh, kw, (dilation[0], dilation[1]))
    return [top, left, bottom, right]


def _conv_transpose2d(
    spec: Mapping[str, Any], params: Params, state: State, x: str, path: str
) -> tuple[Nodes, Inits, str]:
    w, b = _leaf(params, "w", "params", path), _leaf(params, "b", "params", path)
    node = helper.make_node(
        "ConvTranspose",
        [x, f"{path}/w", f"{path}/b"],
        [path],
        name=path,
        kernel_shape=list(w.shape[2:]),
        strides=_ints(spec["stride"]),
        pads=_pads(spec),
        output_padding=_ints(spec["output_padding"]),
        dilations=[1, 1],
        group=1,
    )
    return [node], [_init(f"{path}/w", w), _init(f"{path}/b", b)], path


def _leaky_relu(
    spec: Mapping[str, Any], params: Params, state: State, x: str, path: str
) -> tuple[Nodes, Inits, str]:
    node = helper.make_node("LeakyRelu", [x], [path], name=path, alpha=float(spec["slope"]))
    return [node], [], path


_GELU_CONSTANTS = {
    "one": 1.0,
    "half": 0.5,
    "inv_sqrt2": 1.0 / math.sqrt(2.0),
    "sqrt_2_over_pi": math.sqrt(2.0 / math.pi),
    "cubic": 0.044715,
}


def _gelu(
    spec: Mapping[str, Any], params: Params, state: State, x: str, path: str
) -> tuple[Nodes, Inits, str]:
    """``x * g`` with the gate ``g = (1 + erf(x / sqrt(2))) / 2`` (exact) or ``(1 +
    tanh(sqrt(2/pi) * x * (1 + 0.044715 x^2))) / 2`` (tanh), from primitive operators."""

    def op(kind: str, inputs: list[str], out: str) -> onnx.NodeProto:
        return helper.make_node(kind, inputs, [f"{path}/{out}"], name=f"{path}/{out}")

    c = {k: f"{path}/{k}" for k in _GELU_CONSTANTS}
    if spec["approximate"] == "none":
        nodes = [op("Mul", [x, c["inv_sqrt2"]], "scaled"), op("Erf", [f"{path}/scaled"], "s")]
    elif spec["approximate"] == "tanh":
        nodes = [
            op("Mul", [x, x], "x2"),
            op("Mul", [f"{path}/x2", c["cubic"]], "cx2"),
            op("Add", [f"{path}/cx2", c["one"]], "poly"),
            op("Mul", [f"{path}/poly", x], "cubic_x"),
            op("Mul", [f"{path}/cubic_x", c["sqrt_2_over_pi"]], "u"),
            op("Tanh", [f"{path}/u"], "s"),
        ]
    else:
        raise ValueError(f"approximate must be 'none' or 'tanh', got {spec['approximate']!r}")
    nodes += [
        op("Add", [f"{path}/s", c["one"]], "s_plus_1"),
        op("Mul", [f"{path}/s_plus_1", c["half"]], "gate"),
        helper.make_node("Mul", [x, f"{path}/gate"], [path], name=path),
    ]
    used = {name for node in nodes for name in node.input}
    inits = [_init(c[k], np.float32(v)) for k, v in _GELU_CONSTANTS.items() if c[k] in used]
    return nodes, inits, path


def _dense(
    spec: Mapping[str, Any], params: Params, state: State, x: str, path: str
) -> tuple[Nodes, Inits, str]:
    w, b = _leaf(params, "w", "params", path), _leaf(params, "b", "params", path)
    node = helper.make_node(
        "Gemm", [x, f"{path}/w", f"{path}/b"], [path], name=path, transA=0, transB=0
    )
    return [node], [_init(f"{path}/w", w), _init(f"{path}/b", b)], path


def _pool(op: str, **extra: Any) -> Converter:
    def convert(
        spec: Mapping[str, Any], params: Params, state: State, x: str, path: str
    ) -> tuple[Nodes, Inits, str]:
        node = helper.make_node(
            op,
            [x],
            [path],
            name=path,
            kernel_shape=_ints(spec["window"]),
            strides=_ints(spec["stride"]),
            pads=_pads(spec),
            ceil_mode=0,
            **extra,
        )
        return [node], [], path

    return convert


def _simple(op: str, **attrs: Any) -> Converter:
    def convert(
        spec: Mapping[str, Any], params: Params, state: State, x: str, path: str
    ) -> tuple[Nodes, Inits, str]:
        return [helper.make_node(op, [x], [path], name=path, **attrs)], [], path

    return convert


def _batch_norm(
    spec: Mapping[str, Any], params: Params, state: State, x: str, path: str
) -> tuple[Nodes, Inits, str]:
    names = [f"{path}/gamma", f"{path}/beta", f"{path}/mean", f"{path}/var"]
    arrays = [
        _leaf(params, "gamma", "params", path),
        _leaf(params, "beta", "params", path),
        _leaf(state, "mean", "state", path),
        _leaf(state, "var", "state", path),
    ]
    node = helper.make_node(
        "BatchNormalization",
        [x, *names],
        [path],
        name=path,
        epsilon=float(spec["eps"]),
        # Unused in eval mode. ONNX weighs the running value by momentum, fcnn (like
        # PyTorch) the batch statistic, hence 1 - m.
        momentum=1.0 - float(spec["momentum"]),
        training_mode=0,
    )
    return [node], [_init(n, a) for n, a in zip(names, arrays, strict=True)], path


def _identity(
    spec: Mapping[str, Any], params: Params, state: State, x: str, path: str
) -> tuple[Nodes, Inits, str]:
    return [], [], x


def _global_avg_pool(
    spec: Mapping[str, Any], params: Params, state: State, x: str, path: str
) -> tuple[Nodes, Inits, str]:
    pooled = f"{path}/pooled"  # (N, C, 1, 1); fcnn's output has no trailing 1x1
    return (
        [
            helper.make_node("GlobalAveragePool", [x], [pooled], name=pooled),
            helper.make_node("Flatten", [pooled], [path], name=path, axis=1),
        ],
        [],
        path,
    )


_CONVERTERS: dict[str, Converter] = {
    "Conv2d": _conv2d,
    "Relu": _simple("Relu"),
    "MaxPool2d": _pool("MaxPool"),
    "AvgPool2d": _pool("AveragePool", count_include_pad=1),
    "Flatten": _simple("Flatten", axis=1),
    "Dense": _dense,
    "BatchNorm2d": _batch_norm,
    "BatchNorm1d": _batch_norm,
    "Dropout": _identity,
    "SpatialDropout2d": _identity,
    "GlobalAvgPool2d": _global_avg_pool,
    "ConvTranspose2d": _conv_transpose2d,
    "LeakyRelu": _leaky_relu,
    "Gelu": _gelu,
    "Sigmoid": _simple("Sigmoid"),
    "Tanh": _simple("Tanh"),
}

EXPORTABLE: tuple[str, ...] = ("Sequential", *_CONVERTERS, "Residual", "Concat")


def _subtree(tree: Any, key: str) -> Any:
    return tree.get(key, {}) if isinstance(tree, Mapping) else {}


def _paths(
    children: Sequence[tuple[str, Any]], params: Params, state: State, x: str, path: str
) -> tuple[Nodes, Inits, list[str]]:
    """Each ``(key, spec)`` child converted on the same input ``x``: its nodes, its
    initializers and the name of each child's output, in order."""
    nodes: Nodes = []
    inits: Inits = []
    outs: list[str] = []
    for key, child in children:
        sub = f"{path}/{key}" if path else key
        n, i, out = _convert(child, _subtree(params, key), _subtree(state, key), x, sub)
        nodes += n
        inits += i
        outs.append(out)
    return nodes, inits, outs


def _residual(
    spec: Mapping[str, Any], params: Params, state: State, x: str, path: str
) -> tuple[Nodes, Inits, str]:
    """``Add(block(x), shortcut(x))``; the identity shortcut is ``x`` itself."""
    children = [("block", spec["block"])]
    if spec["shortcut"] is not None:
        children.append(("shortcut", spec["shortcut"]))
    nodes, inits, outs = _paths(children, params, state, x, path)
    where = path or "model"
    add = helper.make_node("Add", [outs[0], outs[1] if len(outs) > 1 else x], [where], name=where)
    return [*nodes, add], inits, where


def _concat(
    spec: Mapping[str, Any], params: Params, state: State, x: str, path: str
) -> tuple[Nodes, Inits, str]:
    """``Concat(branch_1(x), ..., axis)``."""
    children = [(str(child["name"]), child) for child in spec["branches"]]
    nodes, inits, outs = _paths(children, params, state, x, path)
    where = path or "model"
    join = helper.make_node("Concat", outs, [where], name=where, axis=int(spec["axis"]))
    return [*nodes, join], inits, where


_COMBINATORS: dict[str, Converter] = {"Residual": _residual, "Concat": _concat}


def _convert(
    spec: Mapping[str, Any], params: Params, state: State, x: str, path: str
) -> tuple[Nodes, Inits, str]:
    """Nodes and initializers computing ``spec``'s layer on the tensor named ``x``."""
    kind = spec.get("type") if isinstance(spec, Mapping) else None
    where = path or "model"
    if kind == "Sequential":
        nodes: Nodes = []
        inits: Inits = []
        for child in spec["layers"]:
            name = str(child["name"])
            sub = f"{path}/{name}" if path else name
            n, i, x = _convert(child, _subtree(params, name), _subtree(state, name), x, sub)
            nodes += n
            inits += i
        return nodes, inits, x
    if kind in _COMBINATORS:
        try:
            return _COMBINATORS[kind](spec, params, state, x, path)
        except (KeyError, TypeError, ValueError) as err:
            if isinstance(err, ExportError):
                raise
            raise ExportError(f"{where}: malformed {kind} spec ({err!r})") from err
    if not isinstance(kind, str) or kind not in _CONVERTERS:
        what = f"a {kind!r} layer" if isinstance(kind, str) else "a layer without a spec type"
        raise ExportError(
            f"{where}: cannot export {what} to ONNX; exportable layer types: "
            f"{', '.join(EXPORTABLE)}"
        )
    try:
        return _CONVERTERS[kind](spec, params, state, x, where)
    except (KeyError, TypeError, ValueError) as err:
        if isinstance(err, ExportError):
            raise
        raise ExportError(f"{where}: malformed {kind} spec {dict(spec)!r} ({err!r})") from err


def _check_input_shape(input_shape: Sequence[int]) -> tuple[int, ...]:
    shape = tuple(input_shape)
    if not shape or not all(
        isinstance(d, int | np.integer) and not isinstance(d, bool) and d >= 1 for d in shape
    ):
        raise ExportError(
            f"input_shape must be the per-sample shape, e.g. (C, H, W), of positive ints; "
            f"got {shape!r}"
        )
    return tuple(int(d) for d in shape)


def _normalization_nodes(
    normalization: tuple[ArrayLike, ArrayLike], shape: tuple[int, ...]
) -> tuple[Nodes, Inits, str]:
    """``(x - mean) / std`` per channel (axis 1) as ``Sub`` and ``Div`` nodes."""
    mean = np.asarray(normalization[0], dtype=np.float32).reshape(-1)
    std = np.asarray(normalization[1], dtype=np.float32).reshape(-1)
    c = shape[0]
    if mean.shape != (c,) or std.shape != (c,):
        raise ExportError(
            f"normalization must be (mean, std) with {c} values each (one per channel), "
            f"got {mean.shape[0]} and {std.shape[0]}"
        )
    if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std)) and np.all(std > 0)):
        raise ExportError("normalization: means must be finite and stds finite and positive")
    bshape = (1, c) + (1,) * (len(shape) - 1)
    inits = [
        _init("normalization/mean", mean.reshape(bshape)),
        _init("normalization/std", std.reshape(bshape)),
    ]
    nodes = [
        helper.make_node(
            "Sub",
            [INPUT_NAME, "normalization/mean"],
            ["normalization/centred"],
            name="normalization/sub",
        ),
        helper.make_node(
            "Div",
            ["normalization/centred", "normalization/std"],
            ["normalization"],
            name="normalization/div",
        ),
    ]
    return nodes, inits, "normalization"


def _check_arguments(model: Any, input_shape: Sequence[int], opset: Any) -> tuple[int, ...]:
    """``build_onnx``'s model and opset checked; the per-sample input shape as ints."""
    if not isinstance(model, Layer):
        raise ExportError(f"model must be a fcnn Layer, got {type(model).__name__}")
    shape = _check_input_shape(input_shape)
    newest = onnx.defs.onnx_opset_version()
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= newest:
        raise ExportError(f"opset must be an int in [{MIN_OPSET}, {newest}], got {opset!r}")
    return shape


def _output_shape(
    model: Layer, params: Params, state: State, shape: tuple[int, ...]
) -> tuple[int, ...]:
    """The per-sample output shape, from fcnn run once on zeros ``(1, *shape)``; an
    ``ExportError`` when the params or state do not fit the model."""
    try:
        probe = np.zeros((1, *shape), dtype=np.float32)
        return tuple(int(d) for d in predict(model, params, state, probe).shape[1:])
    except (ValueError, TypeError) as err:
        raise ExportError(f"the params and state do not fit the model: {err}") from err


def _name_output(nodes: Nodes, out: str, softmax: bool) -> tuple[Nodes, str]:
    """``nodes`` (new list) whose result is named ``"logits"``, or ``"probabilities"``
    after an appended ``Softmax``; ``out`` names the network's result tensor."""
    out_name = "probabilities" if softmax else "logits"
    if softmax:
        tail = helper.make_node("Softmax", [out], [out_name], name="softmax", axis=-1)
        return [*nodes, tail], out_name
    if out == INPUT_NAME:
        return [*nodes, helper.make_node("Identity", [out], [out_name], name="output")], out_name
    # Rename the last node's output rather than adding an Identity (on a copy of it).
    last = onnx.NodeProto()
    last.CopyFrom(nodes[-1])
    last.output[list(last.output).index(out)] = out_name
    return [*nodes[:-1], last], out_name


def _checked_model(
    graph: onnx.GraphProto, opset: int, normalized: bool, metadata: Mapping[str, str] | None
) -> onnx.ModelProto:
    """``graph`` as a model of ``opset`` with fcnn's producer, doc string and ``metadata``,
    passed through ``onnx.checker`` (an ``ExportError`` when it fails)."""
    opset_imports = [helper.make_opsetid("", opset)]
    onnx_model = helper.make_model(
        graph,
        opset_imports=opset_imports,
        ir_version=helper.find_min_ir_version_for(opset_imports),
        producer_name="fcnn",
        producer_version=fcnn_version(),
        doc_string=(
            "input: raw [0, 1] images, normalised inside the graph"
            if normalized
            else "input: images normalised with the training statistics, (x - mean) / std"
        ),
    )
    if metadata:
        helper.set_model_props(onnx_model, {str(k): str(v) for k, v in metadata.items()})
    try:
        onnx.checker.check_model(onnx_model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as err:
        raise ExportError(f"the exported graph does not pass the ONNX checker: {err}") from err
    return onnx_model


# --- public ------------------------------------------------------------------------------


def build_onnx(
    model: Layer,
    params: Params,
    state: State,
    input_shape: Sequence[int],
    *,
    normalization: tuple[ArrayLike, ArrayLike] | None = None,
    softmax: bool = False,
    opset: int = OPSET,
    metadata: Mapping[str, str] | None = None,
    graph_name: str = "fcnn",
) -> onnx.ModelProto:
    """The ONNX model of ``model`` with ``params``/``state``, checked, not written.

    ``input_shape``: per sample, e.g. ``(1, 28, 28)``; the graph input is
    ``(N, *input_shape)`` float32 with a dynamic ``N``. ``normalization=(mean, std)``
    (one value per channel) prepends ``(x - mean) / std``; ``softmax=True`` appends
    a ``Softmax`` (output ``"probabilities"`` instead of ``"logits"``). ``metadata``
    is stored as the model's ``metadata_props``. Raises ``ExportError`` for a layer
    that cannot be exported, params that do not fit the model (checked by running
    fcnn once on zeros) or an opset outside ``[MIN_OPSET, onnx's newest]``.
    """
    shape = _check_arguments(model, input_shape, opset)
    # Refuse unexportable layers before running anything, then let fcnn itself check
    # that params and state fit the model (its errors name the layer) and give the
    # output shape.
    nodes, inits, x = (
        ([], [], INPUT_NAME)
        if normalization is None
        else _normalization_nodes(normalization, shape)
    )
    layer_nodes, layer_inits, out = _convert(model.spec, params, state, x, "")
    out_shape = _output_shape(model, params, state, shape)
    nodes, out_name = _name_output([*nodes, *layer_nodes], out, softmax)
    graph = helper.make_graph(
        nodes,
        graph_name,
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [BATCH_DIM, *shape])],
        [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, [BATCH_DIM, *out_shape])],
        [*inits, *layer_inits],
    )
    return _checked_model(graph, opset, normalization is not None, metadata)


def to_onnx(
    model: Layer,
    params: Params,
    state: State,
    input_shape: Sequence[int],
    path: str | os.PathLike[str],
    *,
    normalization: tuple[ArrayLike, ArrayLike] | None = None,
    softmax: bool = False,
    opset: int = OPSET,
    metadata: Mapping[str, str] | None = None,
) -> onnx.ModelProto:
    """Write ``model`` with ``params``/``state`` to ``path`` as an ONNX file; return the model.

    See ``build_onnx`` for the options and errors. The file is written atomically
    (a temporary name in the same folder, then a rename).
    """
    onnx_model = build_onnx(
        model,
        params,
        state,
        input_shape,
        normalization=normalization,
        softmax=softmax,
        opset=opset,
        metadata=metadata,
    )
    with atomic_write(path, "wb") as f:
        f.write(onnx_model.SerializeToString())
    return onnx_model


def run_onnx(model: onnx.ModelProto | str | os.PathLike[str], x: Array) -> Array:
    """Run an exported model on ``x: (N, *input_shape)`` float32; returns its only output.

    Uses onnxruntime (CPU) when it is installed, else ONNX's reference evaluator.
    """
    proto = model if isinstance(model, onnx.ModelProto) else onnx.load(os.fspath(model))
    feed = {proto.graph.input[0].name: np.ascontiguousarray(x, dtype=np.float32)}
    try:
        ort: Any = importlib.import_module("onnxruntime")
    except ImportError:
        from onnx.reference import ReferenceEvaluator

        outputs: Any = ReferenceEvaluator(proto).run(None, feed)
        out: Array = np.asarray(outputs[0])
        return out
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    result: Array = np.asarray(session.run(None, feed)[0])
    return result


# --- command line ------------------------------------------------------------------------


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m fcnn.export",
        description="Convert a checkpoint written by train.py or fcnn.save_trained to ONNX.",
    )
    add_checkpoint(p, "the .npz checkpoint written by train.py or fcnn.save_trained")
    p.add_argument(
        "-o", "--output", help="the .onnx file to write (default: the checkpoint's name + .onnx)"
    )
    add_overwrite(p)
    add_trust_code(p)
    p.add_argument(
        "--no-normalization",
        action="store_true",
        help="do not bake the training normalisation into the graph: its input is then "
        "(x - mean) / std with the checkpoint's statistics, not raw [0, 1] images",
    )
    p.add_argument("--softmax", action="store_true", help="output probabilities instead of logits")
    p.add_argument("--opset", type=int, default=OPSET, help=f"ONNX opset (default {OPSET})")
    p.add_argument(
        "--verify",
        action="store_true",
        help="run the exported model (onnxruntime, else ONNX's reference evaluator) on random "
        "inputs and compare with fcnn",
    )
    args = p.parse_args(argv)
    args.checkpoint = checkpoint_path(args, p)
    args.output = args.output or os.path.splitext(args.checkpoint)[0] + ".onnx"
    return args


def _export(args: argparse.Namespace) -> int:
    """Check the paths before any work, convert, say what was written, verify if asked."""
    from .models import load_trained

    check_readable_file(args.checkpoint, "checkpoint")
    check_writable_file(args.output)  # a directory where a file is expected, ...
    check_new_file(args.output, args.overwrite, "-o")
    trained = load_trained(args.checkpoint, trust_code=args.trust_code)
    norm = None if args.no_normalization else (trained.mean, trained.std)
    metadata = {
        "classes": json.dumps(list(trained.classes)),
        "input_shape": json.dumps(list(trained.input_shape)),
        "normalization": json.dumps({"mean": trained.mean.tolist(), "std": trained.std.tolist()}),
        "normalization_in_graph": json.dumps(norm is not None),
        "dataset": json.dumps(trained.record.dataset if trained.record else None),
        "model": json.dumps(trained.record.model if trained.record else None),
    }
    onnx_model = to_onnx(
        trained.model,
        trained.params,
        trained.state,
        trained.input_shape,
        args.output,
        normalization=norm,
        softmax=args.softmax,
        opset=args.opset,
        metadata=metadata,
    )
    print(
        f"wrote {args.output}: opset {args.opset}, IR version {onnx_model.ir_version}, "
        f"input {INPUT_NAME!r} (N, {', '.join(map(str, trained.input_shape))}) "
        f"{'raw [0, 1] images' if norm is not None else 'normalised images'}, "
        f"output {onnx_model.graph.output[0].name!r} (N, {len(trained.classes)})"
    )
    return _verify(trained, onnx_model, norm is not None, args.softmax) if args.verify else 0


def _verify(trained: Any, onnx_model: onnx.ModelProto, normalized: bool, softmax: bool) -> int:
    """Compare the exported model's probabilities with fcnn's on 8 random images."""
    from .data import normalize
    from .losses import softmax as softmax_fn

    x = np.random.default_rng(0).random((8, *trained.input_shape), dtype=np.float32)
    want = trained.predict_proba(x)
    xin = x if normalized else normalize(x, trained.mean, trained.std)
    got = run_onnx(onnx_model, xin.astype(np.float32))
    got = got if softmax else softmax_fn(got)
    diff = float(np.max(np.abs(got - want)))
    ok = diff <= 1e-5
    print(
        f"verify: max |probability difference| on 8 random images = {diff:.2e} "
        f"({'ok' if ok else 'MISMATCH'})"
    )
    return 0 if ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m fcnn.export CHECKPOINT [-o OUT] ...``; returns the exit status: 0, 1 with
    one line on stderr (also for an existing OUT without ``--overwrite``), 2 for bad flags."""
    from .io import CheckpointError

    args = _parse(argv)
    return run_main(lambda: _export(args), PathError, CheckpointError, ExportError, OSError)


if __name__ == "__main__":
    sys.exit(main())
