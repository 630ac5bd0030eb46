"""Every pair, loss and a whole model, as cases that run on any array library.

Shared by tests/test_namespace.py (on the foreign double, on the CPU) and
tests/test_gpu.py (on CuPy, on a GPU): each case builds its inputs on the host from a
seed, and ``run_case`` runs the forward, draws a random upstream gradient (never
``ones_like``) and runs the backward, once with NumPy and once with the other library,
and returns both results on the host.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

import fcnn
from fcnn.layers.activation import GeluCfg, LeakyReluCfg
from fcnn.layers.conv import Conv2dCfg, conv2d_bwd, conv2d_fwd, conv2d_param_grads
from fcnn.layers.conv_transpose import (
    ConvTranspose2dCfg,
    conv_transpose2d_bwd,
    conv_transpose2d_fwd,
)
from fcnn.layers.dense import dense_bwd, dense_fwd
from fcnn.layers.dropout import DropoutCfg, dropout_bwd, dropout_fwd, spatial_dropout2d_fwd
from fcnn.layers.norm import (
    BatchNormCfg,
    batch_norm1d_bwd,
    batch_norm1d_fwd,
    batch_norm2d_bwd,
    batch_norm2d_fwd,
)
from fcnn.layers.pool import (
    Pool2dCfg,
    avg_pool2d_bwd,
    avg_pool2d_fwd,
    max_pool2d_bwd,
    max_pool2d_fwd,
)
from fcnn.losses import (
    label_smoothing,
    mse,
    softmax,
    softmax_cross_entropy,
)
from fcnn.models import build_model

Arr = np.ndarray[Any, Any]
DyOf = Callable[[Any], Any]
Run = Callable[[Any, DyOf, Any], Any]  # (inputs on the device, dy_of, generator) -> outputs
Case = Callable[[np.random.Generator, Any], tuple[Any, Run]]


def _normal(rng: np.random.Generator, shape: tuple[int, ...], dtype: Any) -> Arr:
    return rng.standard_normal(shape).astype(dtype)


def conv(
    impl: str,
    stride: Any,
    padding: Any,
    shape: tuple[int, ...] = (2, 3, 7, 6),
    dilation: Any = 1,
    groups: int = 1,
    kernel: tuple[int, int] = (3, 2),
) -> Case:
    cfg = Conv2dCfg(stride, padding, impl, dilation=dilation, groups=groups)

    def build(rng: np.random.Generator, dtype: Any) -> tuple[Any, Run]:
        c, f = shape[1], 4 if groups == 1 else 2 * groups
        inputs = {
            "params": {
                "w": _normal(rng, (f, c // groups, *kernel), dtype),
                "b": _normal(rng, (f,), dtype),
            },
            "x": _normal(rng, shape, dtype),
        }

        def run(inp: Any, dy_of: DyOf, gen: Any) -> Any:
            y, cache = conv2d_fwd(inp["params"], inp["x"], cfg)
            dy = dy_of(y)
            dx, grads = conv2d_bwd(cache, dy)
            return {"y": y, "dx": dx, "grads": grads, "param_grads": conv2d_param_grads(cache, dy)}

        return inputs, run

    return build


def conv_transpose(impl: str, stride: Any, padding: Any, output_padding: Any) -> Case:
    cfg = ConvTranspose2dCfg(stride, padding, output_padding, impl)

    def build(rng: np.random.Generator, dtype: Any) -> tuple[Any, Run]:
        inputs = {
            "params": {"w": _normal(rng, (3, 2, 3, 2), dtype), "b": _normal(rng, (2,), dtype)},
            "x": _normal(rng, (2, 3, 5, 4), dtype),
        }

        def run(inp: Any, dy_of: DyOf, gen: Any) -> Any:
            y, cache = conv_transpose2d_fwd(inp["params"], inp["x"], cfg)
            dx, grads = conv_transpose2d_bwd(cache, dy_of(y))
            return {"y": y, "dx": dx, "grads": grads}

        return inputs, run

    return build


def dense(rng: np.random.Generator, dtype: Any) -> tuple[Any, Run]:
    inputs = {
        "params": {"w": _normal(rng, (5, 3), dtype), "b": _normal(rng, (3,), dtype)},
        "x": _normal(rng, (4, 5), dtype),
    }

    def run(inp: Any, dy_of: DyOf, gen: Any) -> Any:
        y, cache = dense_fwd(inp["params"], inp["x"])
        dx, grads = dense_bwd(cache, dy_of(y))
        return {"y": y, "dx": dx, "grads": grads}

    return inputs, run


def simple(fwd: Any, bwd: Any, shape: tuple[int, ...], cfg: Any = None) -> Case:
    """A pair without params or extras: ``fwd({}, x[, cfg])``, ``bwd(cache, dy)``."""

    def build(rng: np.random.Generator, dtype: Any) -> tuple[Any, Run]:
        inputs = {"x": _normal(rng, shape, dtype)}

        def run(inp: Any, dy_of: DyOf, gen: Any) -> Any:
            args = () if cfg is None else (cfg,)
            y, cache = fwd({}, inp["x"], *args)
            dx, grads = bwd(cache, dy_of(y))
            return {"y": y, "dx": dx, "grads": grads}

        return inputs, run

    return build


def pool(kind: str, window: Any, stride: Any, padding: Any, shape: tuple[int, ...]) -> Case:
    fwd, bwd = (
        (max_pool2d_fwd, max_pool2d_bwd) if kind == "max" else (avg_pool2d_fwd, avg_pool2d_bwd)
    )
    return simple(fwd, bwd, shape, Pool2dCfg(window, stride, padding))


def with_ties(shape: tuple[int, ...]) -> Case:
    """Max pooling over a map of many equal values and a NaN (ties go to the first maximum)."""

    def build(rng: np.random.Generator, dtype: Any) -> tuple[Any, Run]:
        x = rng.integers(0, 3, shape).astype(dtype)
        x[0, 0, 1, 1] = np.nan
        inputs = {"x": x}

        def run(inp: Any, dy_of: DyOf, gen: Any) -> Any:
            y, cache = max_pool2d_fwd({}, inp["x"], Pool2dCfg(2))
            dx, _ = max_pool2d_bwd(cache, dy_of(y))
            return {"y": y, "dx": dx}

        return inputs, run

    return build


def batch_norm(two_d: bool, train: bool) -> Case:
    fwd, bwd = (
        (batch_norm2d_fwd, batch_norm2d_bwd) if two_d else (batch_norm1d_fwd, batch_norm1d_bwd)
    )
    shape = (4, 3, 5, 4) if two_d else (6, 3)

    def build(rng: np.random.Generator, dtype: Any) -> tuple[Any, Run]:
        inputs = {
            "params": {"gamma": _normal(rng, (3,), dtype), "beta": _normal(rng, (3,), dtype)},
            "state": {"mean": _normal(rng, (3,), dtype), "var": rng.random(3).astype(dtype) + 0.5},
            "x": _normal(rng, shape, dtype) * 3 + 1,
        }

        def run(inp: Any, dy_of: DyOf, gen: Any) -> Any:
            y, cache = fwd(
                inp["params"], inp["x"], BatchNormCfg(0.2), state=inp["state"], train=train
            )
            dx, grads = bwd(cache, dy_of(y))
            return {"y": y, "dx": dx, "grads": grads, "state": cache.state}

        return inputs, run

    return build


def dropout(spatial: bool) -> Case:
    fwd = spatial_dropout2d_fwd if spatial else dropout_fwd

    def build(rng: np.random.Generator, dtype: Any) -> tuple[Any, Run]:
        inputs = {"x": _normal(rng, (4, 3, 5, 5), dtype)}

        def run(inp: Any, dy_of: DyOf, gen: Any) -> Any:
            y, cache = fwd({}, inp["x"], DropoutCfg(0.4), train=True, rng=gen)
            dx, grads = dropout_bwd(cache, dy_of(y))
            return {"y": y, "dx": dx, "grads": grads, "mask": cache.mask}

        return inputs, run

    return build


def loss(pair: Any, kind: str) -> Case:
    def build(rng: np.random.Generator, dtype: Any) -> tuple[Any, Run]:
        pred = _normal(rng, (6, 5), dtype) * 4
        target = rng.integers(0, 5, 6) if kind == "labels" else _normal(rng, (6, 5), dtype)
        inputs = {"pred": pred, "target": target}

        def run(inp: Any, dy_of: DyOf, gen: Any) -> Any:
            value, cache = pair.fwd(inp["pred"], inp["target"])
            out = {"loss": value, "dpred": pair.bwd(cache, 1.0), "dpred2": pair.bwd(cache, 0.5)}
            if kind == "labels":
                out["softmax"] = softmax(inp["pred"])
            return out

        return inputs, run

    return build


def model_grads(name: str) -> Case:
    """loss_and_grad of a registry model (train mode) and its eval-mode predictions."""
    return layer_grads(build_model(name, 10))


def layer_grads(model: fcnn.Layer) -> Case:
    """loss_and_grad of ``model`` (train mode) on (8, 1, 28, 28) images and 10 classes,
    and its eval-mode predictions."""

    def build(rng: np.random.Generator, dtype: Any) -> tuple[Any, Run]:
        params, state, _ = fcnn.init(model, rng, (1, 28, 28), dtype)
        inputs = {
            "params": params,
            "state": state,
            "x": _normal(rng, (8, 1, 28, 28), dtype),
            "y": rng.integers(0, 10, 8),
        }

        def run(inp: Any, dy_of: DyOf, gen: Any) -> Any:
            grad_fn = fcnn.loss_and_grad(model, label_smoothing(0.1))
            ctx = fcnn.Context(train=True, rng=gen)
            value, grads, new_state = grad_fn(inp["params"], inp["state"], inp["x"], inp["y"], ctx)
            logits = fcnn.predict(model, inp["params"], new_state, inp["x"], batch_size=3)
            return {"loss": value, "grads": grads, "state": new_state, "logits": logits}

        return inputs, run

    return build


CASES: dict[str, Case] = {
    "conv2d im2col": conv("im2col", 1, 1),
    "conv2d im2col strided asymmetric": conv("im2col", (2, 3), ((1, 0), (2, 1))),
    "conv2d im2col no padding": conv("im2col", 2, 0, (3, 2, 8, 9)),
    "conv2d naive": conv("naive", (2, 1), 1),
    "conv2d strided": conv("strided", (2, 3), ((1, 0), (2, 1))),
    "dense": dense,
    "relu": simple(fcnn.relu_fwd, fcnn.relu_bwd, (3, 2, 5, 4)),
    "flatten": simple(fcnn.flatten_fwd, fcnn.flatten_bwd, (3, 2, 5, 4)),
    "max_pool2d 2x2": pool("max", 2, None, 0, (2, 3, 6, 8)),
    "max_pool2d 2x2 untiled": pool("max", 2, None, 0, (2, 3, 7, 5)),
    "max_pool2d 3x3 overlapping padded": pool("max", 3, 2, 1, (2, 3, 7, 6)),
    "max_pool2d ties and NaN": with_ties((2, 2, 6, 6)),
    "avg_pool2d 2x2": pool("avg", 2, None, 0, (2, 3, 6, 8)),
    "avg_pool2d 3x3 overlapping padded": pool("avg", 3, 2, 1, (2, 3, 7, 6)),
    "batch_norm2d train": batch_norm(True, True),
    "batch_norm2d eval": batch_norm(True, False),
    "batch_norm1d train": batch_norm(False, True),
    "batch_norm1d eval": batch_norm(False, False),
    "softmax_cross_entropy": loss(softmax_cross_entropy, "labels"),
    "label_smoothing": loss(label_smoothing(0.1), "labels"),
    "mse": loss(mse, "values"),
    "model fast": model_grads("fast"),
    "model default": model_grads("default"),
    # issue 23's layers and blocks
    "conv2d im2col dilated grouped": conv("im2col", 1, 2, (2, 4, 8, 7), dilation=2, groups=2),
    "conv2d im2col depthwise same": conv(
        "im2col", 1, "same", (2, 3, 6, 5), groups=3, kernel=(3, 3)
    ),
    "conv2d naive dilated grouped": conv(
        "naive", (2, 1), 1, (2, 4, 8, 7), dilation=(1, 2), groups=2
    ),
    "conv_transpose2d im2col": conv_transpose("im2col", 2, 1, 1),
    "conv_transpose2d naive": conv_transpose("naive", (2, 3), 0, (1, 0)),
    "leaky_relu": simple(fcnn.leaky_relu_fwd, fcnn.leaky_relu_bwd, (3, 2, 5, 4), LeakyReluCfg(0.1)),
    "gelu exact": simple(fcnn.gelu_fwd, fcnn.gelu_bwd, (3, 2, 5, 4), GeluCfg("none")),
    "gelu tanh": simple(fcnn.gelu_fwd, fcnn.gelu_bwd, (3, 2, 5, 4), GeluCfg("tanh")),
    "sigmoid": simple(fcnn.sigmoid_fwd, fcnn.sigmoid_bwd, (3, 2, 5, 4)),
    "tanh": simple(fcnn.tanh_fwd, fcnn.tanh_bwd, (3, 2, 5, 4)),
    "global_avg_pool2d": simple(
        fcnn.global_avg_pool2d_fwd, fcnn.global_avg_pool2d_bwd, (3, 2, 5, 4)
    ),
    "model resnet (residual, global pooling)": model_grads("resnet"),
    "model concat": layer_grads(
        fcnn.sequential(
            fcnn.concat(fcnn.Conv2d(3, 3, padding=1), fcnn.MaxPool2d(3, 1, 1)),
            fcnn.Gelu(),
            fcnn.MaxPool2d(2),
            fcnn.Flatten(),
            fcnn.Dense(10),
        )
    ),
}
"""Cases whose results do not depend on random draws: the libraries must agree."""

RANDOM_CASES: dict[str, Case] = {
    "dropout": dropout(False),
    "spatial_dropout2d": dropout(True),
    "model bn (batch norm, dropout)": model_grads("bn"),
}
"""Cases that draw from the generator they are given."""


@contextlib.contextmanager
def _nothing() -> Iterator[None]:
    yield


def run_case(
    case: Case,
    dtype: Any,
    xp: Any,
    seed: int = 0,
    guard: Callable[[], Any] = _nothing,
) -> tuple[Any, Any, Any]:
    """``(NumPy's outputs, xp's outputs, xp's outputs copied to the host)`` of one case.

    The device run happens inside ``guard()`` (e.g. a context that forbids host round
    trips); its inputs and upstream gradients are uploaded before it. The generators:
    ``np.random.default_rng(seed)`` and ``xp.random.default_rng(seed)``.
    """
    inputs, run = case(np.random.default_rng(seed), dtype)
    dys: list[Arr] = []
    dy_rng = np.random.default_rng(seed + 1)

    def host_dy(y: Any) -> Any:
        dys.append(dy_rng.standard_normal(y.shape).astype(y.dtype))
        return dys[-1]

    want = run(inputs, host_dy, np.random.default_rng(seed))
    device_inputs = fcnn.to_device(inputs, xp)
    device_dys = iter(fcnn.to_device(dys, xp))
    gen = xp.random.default_rng(seed)
    with guard():
        got = run(device_inputs, lambda y: next(device_dys), gen)
    return want, got, fcnn.to_host(got)


def assert_same(want: Any, got: Any, rtol: float, atol: float) -> None:
    """Two host trees with the same paths, shapes and dtypes, and close values (NaN where
    the other has NaN)."""
    w, g = fcnn.flatten_dict(want), fcnn.flatten_dict(got)
    assert w.keys() == g.keys()
    for k in w:
        a, b = np.asarray(w[k]), np.asarray(g[k])
        assert a.shape == b.shape, (k, a.shape, b.shape)
        assert a.dtype == b.dtype, (k, a.dtype, b.dtype)
        np.testing.assert_allclose(b, a, rtol=rtol, atol=atol, err_msg=k)
