"""``summary(model, input_shape)``: a table of every layer's path, type, output shape and
parameter count (exposed as ``fcnn.summary``)::

    print(fcnn.summary(build_model("bn", 10), (1, 28, 28)))

    | path     | layer       | output shape | params |
    |----------|-------------|--------------|-------:|
    | input    |             | (1, 28, 28)  |        |
    | conv1    | Conv2d      | (32, 28, 28) |    320 |
    | bn1      | BatchNorm2d | (32, 28, 28) |     64 |
    ...

Shapes are per sample (no batch axis), as ``fcnn.init`` takes them. Containers
are walked, so nested layers show their full path (``block1/conv2``); leaf layers
get rows, so the column sums to the total. A ``residual`` or ``concat`` lists its
paths' layers (``stage2/residual1/block/conv1``, ``.../shortcut/conv1``, each from the
container's input) and then one row of its own for the sum or the join, with the
output shape::

    | stage1/residual1/block/bn2 | BatchNorm2d            | (16, 32, 32) |  32 |
    | stage1/residual1           | Residual: block + x    | (16, 32, 32) |   0 |
    | stage1/relu1               | Relu                   | (16, 32, 32) |   0 |

Parameters are counted from ``layer.init`` (nothing is run on data); state
(batch-norm running statistics) is counted separately in the totals.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from .layers.base import Layer, Shape, reraise_with_path
from .model import named_children
from .tree import tree_leaves

__all__ = ["summary"]


class _Row(NamedTuple):
    path: str
    type: str
    shape: Shape
    params: int
    state: int


def _size(tree: Any) -> int:
    return sum(int(np.size(leaf)) for leaf in tree_leaves(tree))


def _join_type(layer: Layer) -> str:
    """The ``layer`` column of a residual's or a concat's own row."""
    spec = layer.spec
    if spec.get("type") == "Residual":
        return "Residual: block + " + ("x" if spec.get("shortcut") is None else "shortcut")
    return f"Concat: axis {spec.get('axis')}"


def _walk(
    layer: Layer, path: str, rng: np.random.Generator, shape: Shape, rows: list[_Row]
) -> Shape:
    """Append a row per leaf under ``layer`` (and per sum or join) and return its output shape."""
    children = named_children(layer)
    if not children:
        params, state, out = layer.init(rng, shape, np.float32)
        kind = str(layer.spec.get("type", layer.kind))
        rows.append(_Row(path, kind, tuple(out), _size(params), _size(state)))
        return tuple(out)
    chain = layer.spec.get("type") == "Sequential"
    out = shape
    for name, child in children:
        try:  # a chain feeds each child the last output; the other containers, their input
            out = _walk(
                child, f"{path}/{name}" if path else name, rng, out if chain else shape, rows
            )
        except (ValueError, TypeError) as err:
            reraise_with_path(name, err)
    if chain:
        return out
    out = tuple(layer.init(rng, shape, np.float32)[2])  # the sum's or the join's shape
    rows.append(_Row(path or layer.name or layer.kind, _join_type(layer), out, 0, 0))
    return out


def _fmt_shape(shape: Shape) -> str:
    return "(" + ", ".join(map(str, shape)) + ("," if len(shape) == 1 else "") + ")"


def summary(model: Layer, input_shape: Sequence[int]) -> str:
    """A Markdown table of ``model`` for per-sample inputs ``input_shape`` (e.g. (1, 28, 28)).

    One row per leaf layer: path (``block1/conv2``), layer type (the spec's
    ``type``), output shape per sample and parameter count; then the totals
    (parameters, state values, output shape). Raises ``TypeError`` for a
    non-``Layer`` model and ``ValueError`` (with the layer's path) when the
    shape does not fit the model.
    """
    if not isinstance(model, Layer):
        raise TypeError(f"summary: model must be a Layer, got {type(model).__name__}")
    try:
        shape = tuple(int(d) for d in input_shape)
    except (TypeError, ValueError) as err:
        raise TypeError(
            f"summary: input_shape must be a sequence of ints, got {input_shape!r}"
        ) from err
    if not shape or any(d < 1 for d in shape):
        raise ValueError(f"summary: input_shape must be non-empty with sizes >= 1, got {shape}")
    rows: list[_Row] = []
    root = "" if named_children(model) else (model.name or model.kind)
    out = _walk(model, root, np.random.default_rng(0), shape, rows)

    header = ("path", "layer", "output shape", "params")
    table = [("input", "", _fmt_shape(shape), "")]
    table += [(r.path, r.type, _fmt_shape(r.shape), f"{r.params:,}") for r in rows]
    widths = [max(len(line[i]) for line in (header, *table)) for i in range(4)]

    def line(cells: Sequence[str]) -> str:
        padded = [c.ljust(w) for c, w in zip(cells[:3], widths, strict=False)]
        return "| " + " | ".join([*padded, cells[3].rjust(widths[3])]) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths[:3]) + "|" + "-" * (widths[3] + 1) + ":|"
    n_params = sum(r.params for r in rows)
    n_state = sum(r.state for r in rows)
    totals = (
        f"total: {n_params:,} params, {n_state:,} state values (running statistics); "
        f"{_fmt_shape(shape)} -> {_fmt_shape(out)} per sample"
    )
    return "\n".join([line(header), rule, *map(line, table), "", totals])
