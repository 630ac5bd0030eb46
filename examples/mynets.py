"""Your own model for fcnn: a layer pair, a residual block and two model functions.

Walked through in docs/own_model.md. Train one with train.py from this folder (or with
this folder on PYTHONPATH)::

    python -m fcnn.train --model mynets:resnet_small --model-arg width=16 --dataset cifar10
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

import fcnn

Array = NDArray[Any]


def gate_fwd(params: dict[str, Array], x: Array, cfg: None = None) -> tuple[Array, Any]:
    """y = x * sigmoid(a[c]): one learned number per channel. x, y: (N, C, H, W); a: (C,)."""
    g = 1 / (1 + np.exp(-params["a"]))
    return x * g[None, :, None, None], (x, g)


def gate_bwd(cache: Any, dy: Array) -> tuple[Array, dict[str, Array]]:
    """dx = dy * g[c];  da[c] = sum over n, h, w of dy * x * g[c] * (1 - g[c])."""
    x, g = cache
    da = np.sum(dy * x, axis=(0, 2, 3)) * g * (1 - g)
    return dy * g[None, :, None, None], {"a": da}


def gate_init(rng: np.random.Generator, in_shape: tuple[int, ...], dtype: Any) -> Any:
    """a = 0 (every gate half open); the shape (C, H, W) is kept."""
    return {"a": np.zeros(in_shape[0], dtype)}, {}, tuple(in_shape)


@fcnn.rebuildable
def gate() -> fcnn.Layer:
    """The pair as a layer. @fcnn.rebuildable stores "mynets:gate" in the model's spec, so
    a checkpoint can rebuild the layer (importing this file, when the loader trusts it)."""
    return fcnn.layer(gate_fwd, gate_bwd, init=gate_init)


def basic_block(width: int, stride: int = 1) -> fcnn.Layer:
    """relu(body(x) + shortcut(x)), body = conv-bn-relu-conv-bn (3x3, the first with
    ``stride``); the shortcut is the identity, or a strided 1x1 conv-bn where the block
    changes the shape."""
    body = fcnn.sequential(
        fcnn.Conv2d(width, 3, stride=stride, padding=1),
        fcnn.BatchNorm2d(),
        fcnn.Relu(),
        fcnn.Conv2d(width, 3, padding=1),
        fcnn.BatchNorm2d(),
    )
    shortcut = None
    if stride != 1:
        shortcut = fcnn.sequential(fcnn.Conv2d(width, 1, stride=stride), fcnn.BatchNorm2d())
    return fcnn.sequential(fcnn.residual(body, shortcut), fcnn.Relu())


def resnet_small(num_classes: int, width: int = 8) -> fcnn.Layer:
    """A stem, two residual blocks (``width``, then ``2 * width`` at half the size), global
    average pooling and a dense layer: any input of at least 2x2 pixels."""
    return fcnn.sequential(
        fcnn.Conv2d(width, 3, padding=1),
        fcnn.BatchNorm2d(),
        fcnn.Relu(),
        basic_block(width),
        basic_block(2 * width, stride=2),
        fcnn.GlobalAvgPool2d(),
        fcnn.Dense(num_classes),
    )


def gated_net(num_classes: int, width: int = 8) -> fcnn.Layer:
    """``resnet_small`` with a gate after the stem: a model with a layer of your own."""
    return fcnn.sequential(
        fcnn.Conv2d(width, 3, padding=1),
        fcnn.Relu(),
        gate(),
        basic_block(width),
        fcnn.GlobalAvgPool2d(),
        fcnn.Dense(num_classes),
    )
