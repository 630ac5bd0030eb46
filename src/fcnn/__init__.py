"""fcnn: a convolutional neural network library in plain NumPy, written as pure functions.

Every layer is a pair of pure functions::

    y, cache = conv2d_fwd(params, x, cfg)
    dx, grads = conv2d_bwd(cache, dy)

and the composer (``sequential``, ``init``, ``forward``, ``backward``) threads
caches, model state and a :class:`Context` through a list of such layers.
Parameters are nested dicts of arrays, so training is a tree-map over params
and grads. Submodules: :mod:`fcnn.gradcheck` (finite-difference checks),
:mod:`fcnn.io` (checkpoints), :mod:`fcnn.data` (datasets and batching).
"""

from .layers.activation import (
    Gelu,
    GeluCache,
    GeluCfg,
    LeakyRelu,
    LeakyReluCache,
    LeakyReluCfg,
    Relu,
    ReluCache,
    Sigmoid,
    SigmoidCache,
    Tanh,
    TanhCache,
    gelu_bwd,
    gelu_fwd,
    leaky_relu_bwd,
    leaky_relu_fwd,
    relu_bwd,
    relu_fwd,
    sigmoid_bwd,
    sigmoid_fwd,
    tanh_bwd,
    tanh_fwd,
)
from .layers.base import Context, Layer, layer, pair_layer
from .layers.conv import Conv2d, Conv2dCache, Conv2dCfg, conv2d_bwd, conv2d_fwd
from .layers.conv_transpose import (
    ConvTranspose2d,
    ConvTranspose2dCache,
    ConvTranspose2dCfg,
    conv_transpose2d_bwd,
    conv_transpose2d_fwd,
)
from .layers.dense import Dense, DenseCache, dense_bwd, dense_fwd
from .layers.dropout import (
    Dropout,
    DropoutCache,
    DropoutCfg,
    SpatialDropout2d,
    dropout_bwd,
    dropout_fwd,
    spatial_dropout2d_fwd,
)
from .layers.norm import (
    BatchNorm1d,
    BatchNorm2d,
    BatchNormCache,
    BatchNormCfg,
    batch_norm1d_bwd,
    batch_norm1d_fwd,
    batch_norm2d_bwd,
    batch_norm2d_fwd,
)
from .layers.pool import (
    AvgPool2d,
    AvgPool2dCache,
    MaxPool2d,
    MaxPool2dCache,
    Pool2dCfg,
    avg_pool2d_bwd,
    avg_pool2d_fwd,
    max_pool2d_bwd,
    max_pool2d_fwd,
)
from .layers.shape import Flatten, FlattenCache, flatten_bwd, flatten_fwd
from .losses import (
    Loss,
    label_smoothing,
    log_softmax,
    mse,
    mse_bwd,
    mse_fwd,
    softmax,
    softmax_cross_entropy,
    softmax_cross_entropy_bwd,
    softmax_cross_entropy_fwd,
)
from .model import backward, forward, init, loss_and_grad, predict, sequential
from .ops.xp import DeviceUnavailableError, array_library, device_generator, namespace
from .optim import Optimizer, adam, adamw, apply_updates, clip_by_global_norm, constant, sgd
from .schedules import cosine_decay, linear_warmup, one_cycle, step_decay
from .summarize import summary
from .training import NonFiniteLossError, TrainState, evaluate, make_step, train_epoch
from .tree import (
    TreeMismatchError,
    flatten_dict,
    global_norm,
    to_device,
    to_host,
    tree_leaves,
    tree_map,
    tree_map_with_path,
    tree_paths,
    unflatten_dict,
    zeros_like,
)

# Issue 23: residual and concat blocks, global average pooling, models rebuilt from specs.
# isort: off
from .layers.base import rebuildable
from .layers.pool import (
    GlobalAvgPool2d,
    GlobalAvgPool2dCache,
    global_avg_pool2d_bwd,
    global_avg_pool2d_fwd,
)
from .model import concat, residual
from .specs import SPEC_VERSION, CodeNotTrustedError, SpecError, dump_spec, from_spec
from .models import load_trained, save_trained  # a model built in Python, for every tool

# isort: on


__version__ = "0.3.0"

__all__ = [
    "AvgPool2d",
    "AvgPool2dCache",
    "BatchNorm1d",
    "BatchNorm2d",
    "BatchNormCache",
    "BatchNormCfg",
    "Context",
    "Conv2d",
    "Conv2dCache",
    "Conv2dCfg",
    "Dense",
    "DenseCache",
    "DeviceUnavailableError",
    "Dropout",
    "DropoutCache",
    "DropoutCfg",
    "Flatten",
    "FlattenCache",
    "Layer",
    "Loss",
    "MaxPool2d",
    "MaxPool2dCache",
    "NonFiniteLossError",
    "Optimizer",
    "Pool2dCfg",
    "Relu",
    "ReluCache",
    "SpatialDropout2d",
    "TrainState",
    "TreeMismatchError",
    "__version__",
    "adam",
    "adamw",
    "apply_updates",
    "array_library",
    "avg_pool2d_bwd",
    "avg_pool2d_fwd",
    "backward",
    "batch_norm1d_bwd",
    "batch_norm1d_fwd",
    "batch_norm2d_bwd",
    "batch_norm2d_fwd",
    "clip_by_global_norm",
    "constant",
    "conv2d_bwd",
    "conv2d_fwd",
    "cosine_decay",
    "dense_bwd",
    "dense_fwd",
    "device_generator",
    "dropout_bwd",
    "dropout_fwd",
    "evaluate",
    "flatten_bwd",
    "flatten_dict",
    "flatten_fwd",
    "forward",
    "global_norm",
    "init",
    "label_smoothing",
    "layer",
    "linear_warmup",
    "log_softmax",
    "loss_and_grad",
    "make_step",
    "max_pool2d_bwd",
    "max_pool2d_fwd",
    "mse",
    "mse_bwd",
    "mse_fwd",
    "namespace",
    "one_cycle",
    "pair_layer",
    "predict",
    "relu_bwd",
    "relu_fwd",
    "sequential",
    "sgd",
    "softmax",
    "softmax_cross_entropy",
    "softmax_cross_entropy_bwd",
    "softmax_cross_entropy_fwd",
    "spatial_dropout2d_fwd",
    "step_decay",
    "summary",
    "to_device",
    "to_host",
    "train_epoch",
    "tree_leaves",
    "tree_map",
    "tree_map_with_path",
    "tree_paths",
    "unflatten_dict",
    "zeros_like",
]

__all__ += [  # issue 23: blocks, global pooling, specs
    "SPEC_VERSION",
    "CodeNotTrustedError",
    "GlobalAvgPool2d",
    "GlobalAvgPool2dCache",
    "SpecError",
    "concat",
    "dump_spec",
    "from_spec",
    "global_avg_pool2d_bwd",
    "global_avg_pool2d_fwd",
    "load_trained",
    "rebuildable",
    "residual",
    "save_trained",
]

# Issue 23's layers, in one block: more activations and the transposed convolution.
__all__ += [
    "ConvTranspose2d",
    "ConvTranspose2dCache",
    "ConvTranspose2dCfg",
    "Gelu",
    "GeluCache",
    "GeluCfg",
    "LeakyRelu",
    "LeakyReluCache",
    "LeakyReluCfg",
    "Sigmoid",
    "SigmoidCache",
    "Tanh",
    "TanhCache",
    "conv_transpose2d_bwd",
    "conv_transpose2d_fwd",
    "gelu_bwd",
    "gelu_fwd",
    "leaky_relu_bwd",
    "leaky_relu_fwd",
    "sigmoid_bwd",
    "sigmoid_fwd",
    "tanh_bwd",
    "tanh_fwd",
]
