"""Trees of arrays: nested dicts, lists and tuples whose leaves are arrays.

Parameters, gradients, model state and optimizer state are all trees, so an
optimizer step is a ``tree_map`` over them. Paths join dict keys and sequence
indices with ``"/"``: ``{"conv1": {"w": w}}`` has one leaf at ``"conv1/w"``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from .ops import xp as _xp

__all__ = [
    "TreeMismatchError",
    "flatten_dict",
    "global_norm",
    "to_device",
    "to_host",
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


def tree_map_with_path(f: Callable[..., Any], tree: Tree, *rest: Tree) -> Tree:
    """Apply ``f(path, leaf, *other_leaves)`` to every leaf; return a new tree.

    ``rest`` trees must have exactly the structure of ``tree`` (same dict keys,
    same sequence lengths), otherwise ``TreeMismatchError`` names the first path
    where they differ.
    """
    return _map(f, tree, rest, None, with_path=True)


def tree_map(f: Callable[..., Any], tree: Tree, *rest: Tree) -> Tree:
    """Apply ``f(leaf, *other_leaves)`` to every leaf of ``tree``; return a new tree.

    >>> tree_map(lambda p, g: p - 0.1 * g, params, grads)   # one SGD step

    Same rules and errors as ``tree_map_with_path``.
    """
    return _map(f, tree, rest, None, with_path=False)


# Where a node sits: ``None`` at the root, else ``(parent trail, key)``. A chain of
# pairs costs nothing to extend; it becomes a "a/b" string only when someone reads it
# (an error, or ``f`` of ``tree_map_with_path``), so plain tree_maps build no paths.
Trail = tuple[Any, object] | None


def _render(trail: Trail) -> str:
    keys: list[str] = []
    while trail is not None:
        trail, key = trail
        keys.append(str(key))
    return SEP.join(reversed(keys))


def _mismatch(trail: Trail, tree: Tree, other: Tree) -> TreeMismatchError:
    where = _render(trail) or "<root>"
    return TreeMismatchError(
        f"tree structures differ at {where!r}: {_describe(tree)} vs {_describe(other)}"
    )


def _map(
    f: Callable[..., Any], tree: Tree, rest: Sequence[Tree], trail: Trail, with_path: bool
) -> Tree:
    """The walk behind ``tree_map`` and ``tree_map_with_path``."""
    if type(tree) is dict or isinstance(tree, Mapping):
        keys = tree.keys()
        for other in rest:
            if not isinstance(other, Mapping) or other.keys() != keys:
                raise _mismatch(trail, tree, other)
        return {k: _map(f, tree[k], [o[k] for o in rest], (trail, k), with_path) for k in tree}
    if isinstance(tree, list | tuple):
        for other in rest:
            if type(other) is not type(tree) or len(other) != len(tree):
                raise _mismatch(trail, tree, other)
        items = [
            _map(f, t, [o[i] for o in rest], (trail, i), with_path) for i, t in enumerate(tree)
        ]
        if hasattr(tree, "_fields"):  # a NamedTuple takes its fields as arguments
            return type(tree)(*items)
        return type(tree)(items)
    for other in rest:
        if _is_node(other):
            raise _mismatch(trail, tree, other)
    return f(_render(trail), tree, *rest) if with_path else f(tree, *rest)


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
    """A tree of zero arrays with the shapes and dtypes of ``tree``'s leaves, each made
    by its leaf's array library (on its leaf's device)."""
    return tree_map(lambda a: _xp.namespace(a).zeros_like(a), tree)


def global_norm(tree: Tree) -> float:
    """sqrt(sum of squares of every leaf), accumulated in float64.

    Leaves on a device are summed there; reading the result waits for the device once.
    """
    leaves = tree_leaves(tree)
    xp = _xp.namespace(*leaves)
    total: Any = 0.0
    for leaf in leaves:
        a = np.asarray(leaf, dtype=np.float64) if _xp.is_numpy(xp) else leaf.astype(np.float64)
        total = total + xp.vdot(a, a)
    return float(xp.sqrt(total))


def to_host(tree: Tree) -> Tree:
    """The tree with every array leaf a NumPy array (copied from its device where it is on
    one; NumPy leaves are kept, not copied). Checkpoints are written from this."""
    return tree_map(_xp.to_host, tree)


def to_device(tree: Tree, xp: Any) -> Tree:
    """The tree with every array leaf an array of the library ``xp`` (``numpy``:
    ``to_host``; ``cupy``: one upload per NumPy leaf). ``xp`` comes from
    ``fcnn.array_library("gpu")`` or ``fcnn.namespace(x)``.

    0-d integer leaves stay on the host: they are counts the host reads every step (an
    optimizer's step count drives its learning-rate schedule), and reading one from a
    device would wait for it.
    """

    def move(a: Any) -> Any:
        if isinstance(a, np.ndarray) and a.ndim == 0 and a.dtype.kind in "iu":
            return a
        return _xp.to_device(a, xp)

    return tree_map(move, tree)
