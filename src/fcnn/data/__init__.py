"""Datasets and batching.

Every loader returns a :class:`Dataset` of float32 images in ``(N, C, H, W)``
scaled to ``[0, 1]`` and int64 labels; normalisation is a separate step
(:func:`channel_stats`, :func:`normalize`) so its statistics can be stored
with the model. Every function that draws random numbers takes an explicit
generator or seed.
"""

from .batches import iterate_batches
from .cifar10 import CIFAR10_CLASSES, load_cifar10
from .dataset import Dataset, channel_stats, normalize, uint8_to_unit
from .digits import DIGITS_CLASSES, load_digits_sample
from .download import DATA_DIR_ENV, DatasetNotFoundError, data_home
from .images import load_image
from .lines import LINES_CLASSES, make_lines
from .mnist import MNIST_CLASSES, load_mnist
from .registry import DATASETS, limit_train, load_dataset

__all__ = [
    "CIFAR10_CLASSES",
    "DATASETS",
    "DATA_DIR_ENV",
    "DIGITS_CLASSES",
    "LINES_CLASSES",
    "MNIST_CLASSES",
    "Dataset",
    "DatasetNotFoundError",
    "channel_stats",
    "data_home",
    "iterate_batches",
    "limit_train",
    "load_cifar10",
    "load_dataset",
    "load_digits_sample",
    "load_image",
    "load_mnist",
    "make_lines",
    "normalize",
    "uint8_to_unit",
]
