"""Datasets and batching. Every function that draws random numbers takes an explicit generator."""

from .batches import iterate_batches
from .lines import LINES_CLASSES, make_lines

__all__ = ["LINES_CLASSES", "iterate_batches", "make_lines"]
