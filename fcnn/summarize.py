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
(``sequential`` blocks) are walked, so nested layers show their full path
(``block1/conv2``); only leaf layers get rows, so the column sums to the total.
Parameters are counted from ``layer.init`` (nothing is run on data); state
(batch-norm running statistics) is counted separately in the totals.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from .layers.base import Layer, Shape, reraise_with_path
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


def _child_names(layer: Layer) -> list[str] | None:
    """The names a container gave its children (from its spec), or None for a leaf."""
    entries = layer.spec.get("layers") if layer.children else None
    if not isinstance(entries, list) or len(entries) != len(layer.children):
        return None
    names = [e.get("name") if isinstance(e, dict) else None for e in entries]
    return [n for n in names if isinstance(n, str)] if all(names) else None


def _walk(
    layer: Layer, path: str, rng: np.random.Generator, shape: Shape, rows: list[_Row]
) -> Shape:
    """Append a row per leaf under ``layer`` and return its output shape."""
    names = _child_names(layer)
    if names is None:
        params, state, out = layer.init(rng, shape, np.float32)
        kind = str(layer.spec.get("type", layer.kind))
        rows.append(_Row(path, kind, tuple(out), _size(params), _size(state)))
        return tuple(out)
    for name, child in zip(names, layer.children, strict=True):
        try:
            shape = _walk(child, f"{path}/{name}" if path else name, rng, shape, rows)
        except (ValueError, TypeError) as err:
            reraise_with_path(name, err)
    return shape


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
    root = (model.name or model.kind) if _child_names(model) is None else ""
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
