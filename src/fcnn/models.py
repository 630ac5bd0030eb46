"""The model registry ``train.py --model`` uses, and trained models saved and loaded.

A checkpoint stores its model as a short JSON description (``{"name": "default",
"num_classes": 10, "impl": "im2col", "spec": ...}``) rather than code. Loading rebuilds
the model from the stored ``spec`` (every layer and its settings, ``fcnn.from_spec``),
not from the registry name, so a checkpoint loads as it was saved even after the
registry's model changed, and a model that is not in the registry at all (built by
``train.py --model module:function`` or in Python) loads the same way. A layer of a
user's own is rebuilt by importing its ``@fcnn.rebuildable`` builder, which happens only
with ``trust_code=True``. Every model takes images ``(N, C, H, W)`` and returns logits
``(N, K)``::

    model = build_model("default", num_classes=10)
    params, state, _ = fcnn.init(model, rng, (1, 28, 28))

``load_trained(path)`` reads a checkpoint written by ``train.py`` or ``save_trained`` and
returns a ``Trained`` record whose ``predict_proba`` normalises raw ``[0, 1]`` images with
the training statistics stored in the checkpoint, exactly as training did.
``save_trained(path, model, params, state, ...)`` writes a model built and trained in
Python as such a checkpoint. ``param_shapes(model, input_shape)`` gives the shapes
``init`` would, drawing nothing.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike

from .data import DATASETS, normalize
from .data.images import check_unit_images
from .io import (
    CheckpointError,
    check_finite,
    check_params_match,
    load_checkpoint,
    read_checkpoint_header,
    save_checkpoint,
)
from .layers.activation import Relu
from .layers.base import Array, Layer, Params, State
from .layers.conv import Conv2d
from .layers.dense import Dense
from .layers.dropout import Dropout
from .layers.norm import BatchNorm1d, BatchNorm2d
from .layers.pool import GlobalAvgPool2d, MaxPool2d
from .layers.shape import Flatten
from .losses import softmax
from .model import predict, residual, sequential
from .specs import CodeNotTrustedError, SpecError, check_rebuildable, dump_spec, from_spec
from .tree import tree_map

if TYPE_CHECKING:
    from .run import RunRecord

__all__ = [
    "MODELS",
    "ModelInfo",
    "ShapeDtype",
    "Trained",
    "UntrustedCodeError",
    "build_and_describe",
    "build_model",
    "describe_model",
    "load_trained",
    "model_from_description",
    "param_shapes",
    "resnet",
    "save_trained",
]


def small_cnn(num_classes: int, impl: str = "im2col") -> Layer:
    """conv 8 (3×3, pad 1) → relu → pool 2 → conv 16 → relu → pool 2 → dense K.

    The fast net: about 8k parameters at 28×28; 98-99% on MNIST in a few epochs.
    """
    return sequential(
        Conv2d(8, 3, padding=1, impl=impl),
        Relu(),
        MaxPool2d(2),
        Conv2d(16, 3, padding=1, impl=impl),
        Relu(),
        MaxPool2d(2),
        Flatten(),
        Dense(num_classes),
    )


def default_cnn(num_classes: int, impl: str = "im2col") -> Layer:
    """conv 32 (3×3, pad 1) → relu → pool 2 → conv 64 → relu → pool 2 → dense 128 → relu → dense K.

    The accurate default: about 420k parameters at 28×28.
    """
    return sequential(
        Conv2d(32, 3, padding=1, impl=impl),
        Relu(),
        MaxPool2d(2),
        Conv2d(64, 3, padding=1, impl=impl),
        Relu(),
        MaxPool2d(2),
        Flatten(),
        Dense(128),
        Relu(),
        Dense(num_classes),
    )


def bn_cnn(num_classes: int, impl: str = "im2col") -> Layer:
    """The default net with batch norm and dropout, for MNIST-sized inputs (1, 28, 28)::

        conv 32 (3×3, pad 1) → bn → relu → pool 2 → conv 64 (3×3, pad 1) → bn → relu → pool 2
        → flatten → dense 128 → bn → relu → dropout 0.4 → dense K

    About 422k parameters at 28×28 and the default's cost per sample. Dropout
    sits after the last batch norm only, so no batch norm sees dropped-out
    activations at train time and full ones at eval time.
    """
    return sequential(
        Conv2d(32, 3, padding=1, impl=impl),
        BatchNorm2d(),
        Relu(),
        MaxPool2d(2),
        Conv2d(64, 3, padding=1, impl=impl),
        BatchNorm2d(),
        Relu(),
        MaxPool2d(2),
        Flatten(),
        Dense(128),
        BatchNorm1d(),
        Relu(),
        Dropout(0.4),
        Dense(num_classes),
    )


FAST_WIDTHS = (16, 32, 64)
"""The channels of ``fast_cnn``'s three convolutions."""


def fast_cnn(num_classes: int, impl: str = "im2col") -> Layer:
    """Three conv-pool-bn-relu stages and one dense layer, for ``train.py --recipe fast``::

        [conv 16 (3×3, pad 1) → pool 2 → bn → relu]      28×28 → 14×14
        [conv 32 (3×3, pad 1) → pool 2 → bn → relu]      14×14 → 7×7
        [conv 64 (3×3, pad 1) → pool 2 → bn → relu]      7×7 → 3×3
        → flatten → dense K

    About 29k parameters at (1, 28, 28), under half the default's multiply-adds per
    sample. Each pool comes right after its convolution, so batch norm and ReLU see a
    quarter of the values (ReLU and max pooling commute exactly; batch norm after the
    pool is a different model, which trained as well or better in our runs). Layers are
    not nested, so params key as ``conv2/w``.
    """
    layers: list[Layer] = []
    for width in FAST_WIDTHS:
        layers += [Conv2d(width, 3, padding=1, impl=impl), MaxPool2d(2), BatchNorm2d(), Relu()]
    return sequential(*layers, Flatten(), Dense(num_classes))


def cifar_cnn(num_classes: int, impl: str = "im2col") -> Layer:
    """Three blocks of two conv-bn-relu layers and a 2×2 max pool, for (3, 32, 32) inputs::

        block1: [conv 32 → bn → relu] ×2 → pool 2       32×32 → 16×16
        block2: [conv 64 → bn → relu] ×2 → pool 2       16×16 → 8×8
        block3: [conv 128 → bn → relu] ×2 → pool 2      8×8 → 4×4
        → flatten → dropout 0.5 → dense K

    All convolutions 3×3 with padding 1; params key as ``block2/conv1/w``. About
    308k parameters at 32×32; roughly nine times the default's multiply-adds per sample.
    """

    def block(channels: int, name: str) -> Layer:
        return sequential(
            Conv2d(channels, 3, padding=1, impl=impl),
            BatchNorm2d(),
            Relu(),
            Conv2d(channels, 3, padding=1, impl=impl),
            BatchNorm2d(),
            Relu(),
            MaxPool2d(2),
            name=name,
        )

    return sequential(
        block(32, "block1"),
        block(64, "block2"),
        block(128, "block3"),
        Flatten(),
        Dropout(0.5),
        Dense(num_classes),
    )


RESNET_WIDTHS = (16, 32, 64)
"""The channels of ``resnet``'s three residual stages."""


def _resnet_stage(width: int, stride: int, project: bool, impl: str, name: str) -> Layer:
    """One basic residual block and the ReLU after its sum::

    block:    conv width (3×3, stride, pad 1) → bn → relu → conv width (3×3, pad 1) → bn
    shortcut: the identity, or (``project``) conv width (1×1, stride) → bn
    y = relu(block(x) + shortcut(x))
    """
    block = sequential(
        Conv2d(width, 3, stride=stride, padding=1, impl=impl),
        BatchNorm2d(),
        Relu(),
        Conv2d(width, 3, padding=1, impl=impl),
        BatchNorm2d(),
    )
    shortcut = (
        sequential(Conv2d(width, 1, stride=stride, impl=impl), BatchNorm2d()) if project else None
    )
    return sequential(residual(block, shortcut), Relu(), name=name)


def resnet(num_classes: int, impl: str = "im2col") -> Layer:
    """A small ResNet (8 weight layers) for CIFAR-sized inputs (3, 32, 32), any size >= 4::

        stem:   conv 16 (3×3, pad 1) → bn → relu                        32×32
        stage1: residual block 16, identity shortcut → relu             32×32
        stage2: residual block 32 (stride 2), 1×1 conv shortcut → relu  16×16
        stage3: residual block 64 (stride 2), 1×1 conv shortcut → relu  8×8
        → global average pool → dense K

    Each residual block is conv-bn-relu-conv-bn added to its shortcut (a 1×1 conv with
    bn where the stage halves the map and doubles the channels), then a ReLU. Params key
    as ``stage2/residual1/block/conv1/w`` and ``stage2/residual1/shortcut/conv1/w``.
    About 78k parameters; a third of ``cifar``'s multiply-adds per sample at 32×32.
    """
    stages = [
        _resnet_stage(width, 1 if i == 0 else 2, i > 0, impl, f"stage{i + 1}")
        for i, width in enumerate(RESNET_WIDTHS)
    ]
    stem = sequential(
        Conv2d(RESNET_WIDTHS[0], 3, padding=1, impl=impl), BatchNorm2d(), Relu(), name="stem"
    )
    return sequential(stem, *stages, GlobalAvgPool2d(), Dense(num_classes))


@dataclass(frozen=True)
class ModelInfo:
    """A registry entry: the builder ``build(num_classes, impl)`` and a one-line summary."""

    build: Callable[[int, str], Layer]
    summary: str


MODELS: dict[str, ModelInfo] = {
    "small": ModelInfo(small_cnn, "conv8-pool-conv16-pool-dense: fast, ~8k params"),
    "default": ModelInfo(default_cnn, "conv32-pool-conv64-pool-dense128-dense: accurate"),
    "bn": ModelInfo(bn_cnn, "the default with batch norm and dropout: most accurate on MNIST"),
    "cifar": ModelInfo(cifar_cnn, "3 stages of 2 conv-bn-relu blocks (32-64-128): for CIFAR-10"),
    "fast": ModelInfo(fast_cnn, "3 conv-pool-bn-relu stages (16-32-64), dense: ~29k params"),
    "resnet": ModelInfo(resnet, "ResNet-8: 3 residual stages (16-32-64), global pool: ~78k params"),
}


def build_model(name: str, num_classes: int, impl: str = "im2col") -> Layer:
    """The registered model ``name`` with ``num_classes`` outputs and convolution ``impl``.

    Raises ``ValueError`` listing the registered names when ``name`` is unknown.
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    return MODELS[name].build(num_classes, impl)


def build_and_describe(
    name: str, num_classes: int, impl: str = "im2col"
) -> tuple[Layer, dict[str, Any]]:
    """``build_model(name, num_classes, impl)`` and its ``describe_model`` description,
    building the model once."""
    model = build_model(name, num_classes, impl)
    desc = {"name": name, "num_classes": num_classes, "impl": impl, "spec": dump_spec(model)}
    return model, desc


def describe_model(name: str, num_classes: int, impl: str = "im2col") -> dict[str, Any]:
    """The JSON description a checkpoint stores for ``build_model(name, num_classes, impl)``."""
    return build_and_describe(name, num_classes, impl)[1]


_UNTRUSTED_HINT = "pass --trust-code (command line) or trust_code=True (Python)"


class UntrustedCodeError(CheckpointError):
    """A checkpoint whose model holds a layer of a user's own, loaded without trust: its
    ``@fcnn.rebuildable`` builder would be imported and run. ``builder``: the
    ``module:function`` it names."""

    def __init__(self, message: str, builder: str) -> None:
        super().__init__(message)
        self.builder = builder


def model_from_description(desc: Mapping[str, Any], *, trust_code: bool = False) -> Layer:
    """The model a checkpoint's description (``meta["model"]``) holds, rebuilt from its
    ``spec`` (``fcnn.from_spec``), as it was saved, whatever the registry builds now.

    A model made of fcnn's own layers needs no code; one with a layer of a user's own
    imports that layer's builder only with ``trust_code=True``, else
    ``UntrustedCodeError`` (one line naming the builder and what to pass). Raises
    ``ValueError`` for a description without a spec, or a spec that cannot be rebuilt.
    """
    if not isinstance(desc, Mapping):
        raise ValueError(f"model description must be an object, got {desc!r}")
    if "spec" not in desc:
        raise ValueError("model description lacks ['spec']")
    try:
        return from_spec(desc["spec"], trust_code=trust_code)
    except CodeNotTrustedError as err:
        raise UntrustedCodeError(
            f"its model's layer {err.where} is built by code, {err.builder}, which loading "
            f"would import and run; if you trust this checkpoint, {_UNTRUSTED_HINT}",
            err.builder,
        ) from None
    except SpecError as err:
        raise ValueError(f"its model cannot be rebuilt: {err}") from None


@dataclass(frozen=True, eq=False)
class Trained:
    """A trained classifier ready for inference.

    ``input_shape`` is per sample ``(C, H, W)``; ``mean``/``std`` are per channel
    ``(C,)``; ``classes[k]`` names output ``k``; ``meta`` is the checkpoint's metadata and
    ``record`` the same, typed and checked (``fcnn.run.RunRecord``: dataset, data folder,
    config, epoch, history, ``test_accuracy``); ``None`` for a model built by hand.
    """

    model: Layer
    params: Params
    state: State
    input_shape: tuple[int, int, int]
    classes: tuple[str, ...]
    mean: Array
    std: Array
    meta: Mapping[str, Any]
    record: RunRecord | None = None

    def predict_proba(self, x: Array, batch_size: int = 256) -> Array:
        """Class probabilities ``(N, K)`` float32 for raw images ``x: (N, C, H, W)`` in [0, 1].

        ``x`` is checked as the server checks its input (``fcnn.data.images.
        check_unit_images``, one implementation): float64 and other floating dtypes are
        converted to float32; ``ValueError`` for another shape, NaN or infinite values,
        or values outside [0, 1] (0-255 floats are told to divide by 255); ``TypeError``
        for integer dtypes (uint8 is pointed to ``fcnn.data.uint8_to_unit``).
        """
        x32 = check_unit_images(x, self.input_shape, "predict_proba")
        xn = normalize(x32, self.mean, self.std)
        logits = predict(self.model, self.params, self.state, xn, batch_size)
        probs: Array = softmax(logits)
        return probs


# --- the shapes of a model's params, without drawing or allocating them ---------------------


class ShapeDtype:
    """An array's shape and dtype without its values, like ``jax.ShapeDtypeStruct``.

    NumPy's ufuncs and arithmetic on it give another (broadcast shape, result dtype), and
    ``astype`` changes its dtype, so a layer's ``init`` that draws ``w = (rng.
    standard_normal(shape) * std).astype(dtype)`` runs on it unchanged (``param_shapes``).
    ``fcnn.io.load_checkpoint(expected=...)`` needs only ``.shape`` and ``.dtype``.
    """

    __slots__ = ("dtype", "shape")

    def __init__(self, shape: Any, dtype: Any) -> None:
        dims = () if shape is None else np.atleast_1d(np.asarray(shape, dtype=np.int64))
        self.shape: tuple[int, ...] = tuple(int(d) for d in dims)
        self.dtype: np.dtype[Any] = np.dtype(dtype)

    def __repr__(self) -> str:
        return f"ShapeDtype({self.shape}, {self.dtype})"

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def astype(self, dtype: Any, *args: Any, **kwargs: Any) -> ShapeDtype:
        return ShapeDtype(self.shape, dtype)

    def __array_ufunc__(self, ufunc: Any, method: str, *inputs: Any, **kwargs: Any) -> Any:
        if method != "__call__" or ufunc.nout != 1 or "out" in kwargs:
            return NotImplemented
        return _result(*inputs)

    def _arithmetic(self, other: Any) -> ShapeDtype:
        return _result(self, other)

    __add__ = __radd__ = __sub__ = __rsub__ = _arithmetic
    __mul__ = __rmul__ = __truediv__ = __rtruediv__ = _arithmetic

    def __neg__(self) -> ShapeDtype:
        return self


def _result(*inputs: Any) -> ShapeDtype:
    """The shape (broadcast) and dtype (NumPy's promotion) of an elementwise result."""
    shapes = [x.shape if isinstance(x, ShapeDtype) else np.shape(x) for x in inputs]
    dtypes = [x.dtype if isinstance(x, ShapeDtype) else x for x in inputs]
    return ShapeDtype(np.broadcast_shapes(*shapes), np.result_type(*dtypes))


class _ShapeDraws:
    """Where ``init`` expects a generator: each draw is a ``ShapeDtype`` of the size asked
    for. No number is drawn and no array of that size is made."""

    def standard_normal(self, size: Any = None, dtype: Any = np.float64, out: Any = None) -> Any:
        return ShapeDtype(size, dtype)

    def random(self, size: Any = None, dtype: Any = np.float64, out: Any = None) -> Any:
        return ShapeDtype(size, dtype)

    def normal(self, loc: Any = 0.0, scale: Any = 1.0, size: Any = None) -> Any:
        return ShapeDtype(size, np.float64)

    def uniform(self, low: Any = 0.0, high: Any = 1.0, size: Any = None) -> Any:
        return ShapeDtype(size, np.float64)

    def integers(self, low: Any, high: Any = None, size: Any = None, dtype: Any = np.int64) -> Any:
        return ShapeDtype(size, dtype)


def param_shapes(
    model: Layer, input_shape: tuple[int, ...], dtype: Any = np.float32
) -> tuple[Params, State, tuple[int, ...]]:
    """``fcnn.init``'s ``(params, state, output shape)`` for per-sample ``input_shape``,
    with every drawn array a ``ShapeDtype``: the model's own ``init`` runs, so every shape
    is inferred as training infers it, but no random number is drawn and no drawn array is
    allocated, however large the shapes. (Arrays an ``init`` fills without drawing, such
    as zero biases and batch-norm statistics, are made: they are sized by the layers'
    channels.) ``ValueError`` when ``input_shape`` does not fit the model.
    """
    draws: Any = _ShapeDraws()
    return model.init(draws, tuple(int(d) for d in input_shape), dtype)


_NOT_TRAINED_HINT = (
    "a model built in Python is saved for the tools with fcnn.save_trained(path, model, "
    "params, state, input_shape=..., classes=..., mean=..., std=...)"
)


def load_trained(path: str | os.PathLike[str], *, trust_code: bool = False) -> Trained:
    """Load a checkpoint written by ``train.py`` or ``save_trained`` for inference.

    Reads the run record (``fcnn.run.RunRecord.from_meta``), rebuilds the model from its
    stored spec (``model_from_description``; ``trust_code``: allow importing the builders
    of a user's own layers, which runs their code), and checks that the stored params
    have exactly the shapes that model has for the recorded input shape. Raises
    ``CheckpointError`` naming the file when anything is missing or inconsistent
    (``UntrustedCodeError``, one, when the model needs code and ``trust_code`` is false).
    Only the header and the arrays' declared shapes are read before everything is checked
    (``param_shapes`` draws nothing, so a recorded input shape the weights cannot fit
    allocates nothing); the arrays' data is read last.
    An array holding NaN or an infinity is refused (``fcnn.io.check_finite``).
    """
    from .run import RunRecord  # fcnn.run builds on this module's registry

    where = os.fspath(path)
    header = read_checkpoint_header(path)
    try:
        record = RunRecord.from_meta(header.meta)
    except (TypeError, ValueError) as err:
        hint = f"; {_NOT_TRAINED_HINT}" if "missing" in str(err) else ""
        raise CheckpointError(f"{where}: not a trained-model checkpoint ({err}){hint}") from err
    try:
        model = model_from_description(record.model, trust_code=trust_code)
    except UntrustedCodeError as err:
        raise UntrustedCodeError(f"{where}: {err}", err.builder) from None
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{where}: {err}") from err
    params_like, state_like = _shapes_for(model, record, where)
    # The shapes and dtypes are compared with the members' headers before any data is read.
    ckpt = load_checkpoint(path, expected={"params": params_like, "state": state_like})
    check_finite({"params": ckpt.params, "state": ckpt.state}, where)
    mean, std = record.normalization()
    return Trained(
        model,
        ckpt.params,
        ckpt.state,
        record.input_shape,
        record.classes,
        mean,
        std,
        ckpt.meta,
        record,
    )


def _shapes_for(model: Layer, record: RunRecord, where: str) -> tuple[Params, State]:
    """The params and state ``model`` has for the record's input shape, as ``ShapeDtype``
    leaves; ``CheckpointError`` when the shape does not fit or the outputs are not the
    record's classes."""
    try:
        params_like, state_like, out_shape = param_shapes(model, record.input_shape)
    except (ValueError, TypeError) as err:
        raise CheckpointError(
            f"{where}: the model does not fit input_shape {record.input_shape}: {err}"
        ) from err
    if out_shape != (len(record.classes),):
        raise CheckpointError(
            f"{where}: the model outputs {out_shape} but there are {len(record.classes)} classes"
        )
    return params_like, state_like


def save_trained(
    path: str | os.PathLike[str],
    model: Layer,
    params: Params,
    state: State,
    *,
    input_shape: Sequence[int],
    classes: Sequence[str],
    mean: ArrayLike,
    std: ArrayLike,
    name: str = "custom",
    dataset: str | None = None,
) -> None:
    """Save a model built and trained in Python as a checkpoint every tool reads
    (``load_trained``, inference_example.py, ``python -m fcnn.serve``, ``fcnn.export``,
    ``fcnn.visualize``), atomically.

    ``input_shape``: per sample ``(C, H, W)``; ``classes[k]``: the name of output ``k``;
    ``mean``, ``std``: the per-channel normalisation ``(C,)`` the model was trained with,
    ``(x - mean) / std`` of raw ``[0, 1]`` images (``0`` and ``1`` if it saw them raw);
    ``name``: a label; ``dataset``: the name of the fcnn dataset it was trained on, which
    ``fcnn.visualize`` and ``--samples`` need to find test images. Params and state are
    stored as float32, what the tools compute in. A checkpoint has no optimizer state or
    run settings, so train.py cannot resume it.

    Raises ``ValueError`` (nothing written) when the model cannot be rebuilt from its spec
    (a layer of your own needs an importable ``@fcnn.rebuildable`` builder), the params or
    state do not fit the model for ``input_shape``, the model does not output
    ``len(classes)`` values, or a field is malformed.
    """
    from .run import RunRecord

    if not isinstance(model, Layer):
        raise TypeError(f"save_trained: model must be a Layer, got {type(model).__name__}")
    if dataset is not None and dataset not in DATASETS:
        raise ValueError(f"save_trained: dataset must be one of {list(DATASETS)}, got {dataset!r}")
    try:
        check_rebuildable(model)
        meta = _trained_meta(model, input_shape, classes, mean, std, name, dataset)
        record = RunRecord.from_meta(json.loads(json.dumps(meta)))  # as load_trained reads it
    except (TypeError, ValueError) as err:  # SpecError included
        raise ValueError(f"save_trained: {err}") from err
    params32, state32 = tree_map(_float32, params), tree_map(_float32, state)
    params_like, state_like = _shapes_for(model, record, "save_trained")
    try:
        check_params_match(params_like, params32, "params")
        check_params_match(state_like, state32, "state")
    except CheckpointError as err:
        raise ValueError(f"save_trained: {err}") from None
    save_checkpoint(path, params=params32, state=state32, meta=record.to_meta())


def _float32(a: Array) -> Array:
    """A leaf as float32, on its own device (NumPy or CuPy)."""
    out: Array = a.astype(np.float32) if hasattr(a, "astype") else np.asarray(a, np.float32)
    return out


def _trained_meta(
    model: Layer,
    input_shape: Sequence[int],
    classes: Sequence[str],
    mean: ArrayLike,
    std: ArrayLike,
    name: str,
    dataset: str | None,
) -> dict[str, Any]:
    """The metadata ``save_trained`` writes, before ``RunRecord.from_meta`` checks it."""
    desc = {"name": name, "num_classes": len(classes), "spec": dump_spec(model)}
    return {
        "model": desc,
        "input_shape": [int(d) if isinstance(d, np.integer) else d for d in input_shape],
        "classes": [str(c) for c in classes],
        "normalization": {
            "mean": np.asarray(mean, np.float64).ravel().tolist(),
            "std": np.asarray(std, np.float64).ravel().tolist(),
        },
        **({"dataset": dataset} if dataset else {}),
    }
