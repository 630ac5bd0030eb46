"""Trees of arrays: nested dicts, lists and tuples whose leaves are arrays.

Parameters, gradients, model state and optimizer state are all trees, so an
optimizer step is a ``tree_map`` over them. Paths join dict keys and sequence
indices with ``"/"``: ``{"conv1": {"w": w}}`` has one leaf at ``"conv1/w"``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "TreeMismatchError",
    "flatten_dict",
    "global_norm",
    "tree_leaves",
    "tree_map",
    "tree_map_with_path",
    "tree_paths",
    "unflatten_dict",
    "zeros_like",
]

Tree = Any
SEP = "/"


class TreeMismatchError(ValueError):
    """Two trees that should have the same structure do not."""


def _is_node(t: object) -> bool:
    return type(t) is dict or isinstance(t, Mapping | list | tuple)


def _join(prefix: str, key: object) -> str:
    return f"{prefix}{SEP}{key}" if prefix else str(key)


def _describe(t: object) -> str:
    if isinstance(t, Mapping):
        return f"dict with keys {sorted(map(str, t.keys()))}"
    if isinstance(t, list | tuple):
        return f"{type(t).__name__} of length {len(t)}"
    shape = getattr(t, "shape", None)
    return f"leaf {type(t).__name__}" + (f" of shape {shape}" if shape is not None else "")


def tree_map_with_path(f: Callable[..., Any], tree: Tree, *rest: Tree, _path: str = "") -> Tree:
    """Apply ``f(path, leaf, *other_leaves)`` to every leaf; return a new tree.

    ``rest`` trees must have exactly the structure of ``tree`` (same dict keys,
    same sequence lengths), otherwise ``TreeMismatchError`` names the first path
    where they differ.
    """
    if type(tree) is dict or isinstance(tree, Mapping):
        for other in rest:
            if not isinstance(other, Mapping) or set(other.keys()) != set(tree.keys()):
                raise TreeMismatchError(
                    f"tree structures differ at {_path or '<root>'!r}: "
                    f"{_describe(tree)} vs {_describe(other)}"
                )
        return {
            k: tree_map_with_path(f, tree[k], *(o[k] for o in rest), _path=_join(_path, k))
            for k in tree
        }
    if isinstance(tree, list | tuple):
        for other in rest:
            if type(other) is not type(tree) or len(other) != len(tree):
                raise TreeMismatchError(
                    f"tree structures differ at {_path or '<root>'!r}: "
                    f"{_describe(tree)} vs {_describe(other)}"
                )
        items = [
            tree_map_with_path(f, t, *(o[i] for o in rest), _path=_join(_path, i))
            for i, t in enumerate(tree)
        ]
        if hasattr(tree, "_fields"):  # a NamedTuple takes its fields as arguments
            return type(tree)(*items)
        return type(tree)(items)
    for other in rest:
        if _is_node(other):
            raise TreeMismatchError(
                f"tree structures differ at {_path or '<root>'!r}: "
                f"{_describe(tree)} vs {_describe(other)}"
            )
    return f(_path, tree, *rest)


def tree_map(f: Callable[..., Any], tree: Tree, *rest: Tree) -> Tree:
    """Apply ``f(leaf, *other_leaves)`` to every leaf of ``tree``; return a new tree.

    >>> tree_map(lambda p, g: p - 0.1 * g, params, grads)   # one SGD step

    Same rules and errors as ``tree_map_with_path``.
    """
    try:
        return _map_leaves(f, tree, rest)
    except TreeMismatchError:
        # Walk again with paths, only to name where the structures differ.
        tree_map_with_path(lambda *_: None, tree, *rest)
        raise


def _map_leaves(f: Callable[..., Any], tree: Tree, rest: Sequence[Tree]) -> Tree:
    """``tree_map`` without building paths (it runs several times per training step)."""
    if type(tree) is dict or isinstance(tree, Mapping):
        keys = tree.keys()
        if any(not isinstance(o, Mapping) or o.keys() != keys for o in rest):
            raise TreeMismatchError("tree structures differ")
        return {k: _map_leaves(f, tree[k], [o[k] for o in rest]) for k in tree}
    if isinstance(tree, list | tuple):
        if any(type(o) is not type(tree) or len(o) != len(tree) for o in rest):
            raise TreeMismatchError("tree structures differ")
        items = [_map_leaves(f, t, [o[i] for o in rest]) for i, t in enumerate(tree)]
        if hasattr(tree, "_fields"):  # a NamedTuple takes its fields as arguments
            return type(tree)(*items)
        return type(tree)(items)
    if any(_is_node(o) for o in rest):
        raise TreeMismatchError("tree structures differ")
    return f(tree, *rest)


def _walk(tree: Tree, path: str) -> Iterator[tuple[str, Any]]:
    if isinstance(tree, Mapping):
        for k in tree:
            yield from _walk(tree[k], _join(path, k))
    elif isinstance(tree, list | tuple):
        for i, t in enumerate(tree):
            yield from _walk(t, _join(path, i))
    else:
        yield path, tree


def tree_leaves(tree: Tree) -> list[Any]:
    """The leaves of ``tree`` in a fixed order (dict insertion order, depth first)."""
    return [leaf for _, leaf in _walk(tree, "")]


def tree_paths(tree: Tree) -> list[str]:
    """The ``"/"``-joined paths of the leaves, in the order of ``tree_leaves``."""
    return [p for p, _ in _walk(tree, "")]


def flatten_dict(tree: Tree) -> dict[str, Any]:
    """``{"conv1": {"w": w}}`` -> ``{"conv1/w": w}``. Empty sub-dicts vanish."""
    flat: dict[str, Any] = {}
    for path, leaf in _walk(tree, ""):
        if path in flat:
            raise TreeMismatchError(f"flatten_dict: two leaves share the path {path!r}")
        flat[path] = leaf
    return flat


def unflatten_dict(flat: Mapping[str, Any]) -> dict[str, Any]:
    """Inverse of ``flatten_dict`` for trees of dicts: ``{"a/b": x}`` -> ``{"a": {"b": x}}``."""
    out: dict[str, Any] = {}
    for path, leaf in flat.items():
        keys = path.split(SEP)
        if any(k == "" for k in keys):
            raise ValueError(f"unflatten_dict: empty key in path {path!r}")
        node = out
        for depth, k in enumerate(keys[:-1]):
            child = node.setdefault(k, {})
            if not isinstance(child, dict):
                raise ValueError(
                    f"unflatten_dict: {SEP.join(keys[: depth + 1])!r} is both a leaf and a node"
                )
            node = child
        if keys[-1] in node:
            raise ValueError(f"unflatten_dict: {path!r} is both a leaf and a node")
        node[keys[-1]] = leaf
    return out


def zeros_like(tree: Tree) -> Tree:
    """A tree of zero arrays with the shapes and dtypes of ``tree``'s leaves."""
    return tree_map(np.zeros_like, tree)


def global_norm(tree: Tree) -> float:
    """sqrt(sum of squares of every leaf), accumulated in float64."""
    total = 0.0
    for leaf in tree_leaves(tree):
        a = np.asarray(leaf, dtype=np.float64)
        total += float(np.vdot(a, a))
    return float(np.sqrt(total))
