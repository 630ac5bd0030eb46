"""Trees: mapping, structure errors, leaf order, flatten/unflatten, zeros_like, global_norm."""

from __future__ import annotations

import copy
import math
from typing import Any, NamedTuple

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fcnn.tree import (
    TreeMismatchError,
    flatten_dict,
    global_norm,
    tree_leaves,
    tree_map,
    tree_map_with_path,
    tree_paths,
    unflatten_dict,
    zeros_like,
)


def sample_tree(rng: np.random.Generator) -> dict[str, Any]:
    return {
        "conv1": {"w": rng.standard_normal((2, 1, 3, 3)), "b": rng.standard_normal(2)},
        "blocks": [
            {"w": rng.standard_normal((3, 2)).astype(np.float32)},
            (rng.standard_normal(4), np.asarray(2.5)),
        ],
        "scale": np.asarray(rng.standard_normal()),
    }


PATHS = ["conv1/w", "conv1/b", "blocks/0/w", "blocks/1/0", "blocks/1/1", "scale"]


# --- tree_map -----------------------------------------------------------------------------


def test_tree_map_single_tree_keeps_structure_and_types(rng: np.random.Generator) -> None:
    t = sample_tree(rng)
    out = tree_map(lambda a: a * 2, t)
    assert isinstance(out, dict) and list(out) == list(t)
    assert isinstance(out["blocks"], list) and isinstance(out["blocks"][1], tuple)
    for a, b in zip(tree_leaves(out), tree_leaves(t), strict=True):
        np.testing.assert_array_equal(a, b * 2)


def test_tree_map_several_trees(rng: np.random.Generator) -> None:
    a, b, c = sample_tree(rng), sample_tree(rng), sample_tree(rng)
    out = tree_map(lambda x, y, z: x * y - z, a, b, c)
    for o, x, y, z in zip(*(tree_leaves(t) for t in (out, a, b, c)), strict=True):
        np.testing.assert_array_equal(o, x * y - z)


def test_tree_map_with_path_sees_joined_paths(rng: np.random.Generator) -> None:
    t = sample_tree(rng)
    out = tree_map_with_path(lambda path, leaf: path, t)
    assert tree_leaves(out) == PATHS


def test_tree_map_does_not_mutate_inputs(rng: np.random.Generator) -> None:
    a, b = sample_tree(rng), sample_tree(rng)
    before = copy.deepcopy((a, b))
    out = tree_map(lambda x, y: x + y, a, b)
    for x, y in zip(tree_leaves((a, b)), tree_leaves(before), strict=True):
        np.testing.assert_array_equal(x, y)
    assert out is not a and out["conv1"] is not a["conv1"] and out["blocks"] is not a["blocks"]
    assert list(a) == list(before[0]) and len(a["blocks"]) == 2


def test_tree_map_on_a_bare_leaf() -> None:
    assert tree_map(lambda x, y: x + y, 2, 3) == 5
    assert tree_paths(np.ones(3)) == [""]


@pytest.mark.parametrize(
    ("other", "path"),
    [
        ({"a": {"w": 1}, "b": [1, 2]}, "<root>"),  # missing key "c"
        ({"a": {"w": 1, "x": 2}, "b": [1, 2], "c": 3}, "a"),  # extra key
        ({"a": {"v": 1}, "b": [1, 2], "c": 3}, "a"),  # different key
        ({"a": {"w": 1}, "b": [1, 2, 3], "c": 3}, "b"),  # longer list
        ({"a": {"w": 1}, "b": (1, 2), "c": 3}, "b"),  # tuple vs list
        ({"a": {"w": 1}, "b": [1, [2]], "c": 3}, "b/1"),  # leaf vs node
        ({"a": 1, "b": [1, 2], "c": 3}, "a"),  # node vs leaf
        ({"a": {"w": 1}, "b": [1, 2], "c": {"z": 3}}, "c"),  # leaf vs dict
    ],
)
def test_mismatched_structures_raise_naming_the_path(other: Any, path: str) -> None:
    tree = {"a": {"w": 1}, "b": [1, 2], "c": 3}
    with pytest.raises(TreeMismatchError, match=f"'{path}'" if path != "<root>" else path):
        tree_map(lambda x, y: x, tree, other)
    # Symmetric: the order of the trees does not matter for detection.
    with pytest.raises(TreeMismatchError):
        tree_map(lambda x, y: x, other, tree)


def test_mismatch_is_a_value_error_and_describes_both_sides() -> None:
    with pytest.raises(ValueError, match=r"list of length 2 vs list of length 3"):
        tree_map(lambda x, y: x, [1, 2], [1, 2, 3])
    with pytest.raises(TreeMismatchError, match=r"\['a', 'b'\] vs dict with keys \['a'\]"):
        tree_map(lambda x, y: x, {"x": {"a": 1, "b": 2}}, {"x": {"a": 1}})


# --- leaves and paths ---------------------------------------------------------------------


def test_tree_leaves_and_paths_order(rng: np.random.Generator) -> None:
    t = sample_tree(rng)
    assert tree_paths(t) == PATHS
    leaves = tree_leaves(t)
    expected = [
        t["conv1"]["w"],
        t["conv1"]["b"],
        t["blocks"][0]["w"],
        t["blocks"][1][0],
        t["blocks"][1][1],
        t["scale"],
    ]
    assert len(leaves) == len(expected)
    assert all(a is b for a, b in zip(leaves, expected, strict=True))


def test_leaf_order_is_dict_insertion_order_not_sorted() -> None:
    t = {"z": 1, "a": {"y": 2, "b": 3}}
    assert tree_leaves(t) == [1, 2, 3]
    assert tree_paths(t) == ["z", "a/y", "a/b"]
    assert tree_leaves({}) == [] and tree_leaves({"a": {}, "b": []}) == []


# --- flatten / unflatten ------------------------------------------------------------------


def test_flatten_unflatten_round_trip(rng: np.random.Generator) -> None:
    t = {"conv1": {"w": rng.standard_normal(3), "b": np.zeros(1)}, "dense": {"w": np.ones(2)}}
    flat = flatten_dict(t)
    assert list(flat) == ["conv1/w", "conv1/b", "dense/w"]
    assert flat["conv1/w"] is t["conv1"]["w"]
    back = unflatten_dict(flat)
    assert tree_paths(back) == tree_paths(t)
    assert all(a is b for a, b in zip(tree_leaves(back), tree_leaves(t), strict=True))


def test_flatten_drops_empty_subdicts_and_names_sequence_indices() -> None:
    assert flatten_dict({"relu": {}, "a": {"b": 1}}) == {"a/b": 1}
    assert flatten_dict({"x": [1, (2, 3)]}) == {"x/0": 1, "x/1/0": 2, "x/1/1": 3}


def test_flatten_rejects_two_leaves_with_one_path() -> None:
    with pytest.raises(TreeMismatchError, match="a/b"):
        flatten_dict({"a/b": 1, "a": {"b": 2}})


@pytest.mark.parametrize(
    ("flat", "word"),
    [
        ({"a": 1, "a/b": 2}, "'a' is both a leaf and a node"),
        ({"a/b": 2, "a": 1}, "'a' is both a leaf and a node"),
        ({"a/b/c": 1, "a/b": 2}, "'a/b' is both a leaf and a node"),
        ({"a//b": 1}, "empty key"),
        ({"/a": 1}, "empty key"),
        ({"a/": 1}, "empty key"),
        ({"": 1}, "empty key"),
    ],
)
def test_unflatten_errors(flat: dict[str, Any], word: str) -> None:
    with pytest.raises(ValueError, match=word):
        unflatten_dict(flat)


_keys = st.text(alphabet="abcxyz_0123456789", min_size=1, max_size=4)
_nested = st.recursive(
    st.integers(-5, 5).map(lambda i: np.full((2,), i, dtype=np.int64)),
    lambda children: st.dictionaries(_keys, children, min_size=1, max_size=4),
    max_leaves=20,
)


@given(st.dictionaries(_keys, _nested, max_size=4))
def test_flatten_unflatten_round_trip_property(tree: dict[str, Any]) -> None:
    flat = flatten_dict(tree)
    assert all("/" in k or k in tree for k in flat)
    back = unflatten_dict(flat)
    assert tree_paths(back) == tree_paths(tree)
    for a, b in zip(tree_leaves(back), tree_leaves(tree), strict=True):
        assert a is b
    assert flatten_dict(back) == flat


# --- zeros_like, global_norm --------------------------------------------------------------


def test_zeros_like_keeps_shapes_and_dtypes(rng: np.random.Generator) -> None:
    t = sample_tree(rng)
    t["ints"] = np.arange(3, dtype=np.int32)
    z = zeros_like(t)
    assert tree_paths(z) == tree_paths(t)
    for a, b in zip(tree_leaves(z), tree_leaves(t), strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype
        assert not np.any(a)
        assert not np.shares_memory(a, b)
    assert z["blocks"][0]["w"].dtype == np.float32


def test_global_norm_matches_hand_computation() -> None:
    t = {"a": np.array([3.0, 4.0], np.float32), "b": [np.array([[1.0, 2.0]]), np.asarray(-2.0)]}
    assert global_norm(t) == pytest.approx(math.sqrt(9 + 16 + 1 + 4 + 4), rel=1e-15)
    assert global_norm({}) == 0.0
    assert isinstance(global_norm(t), float)


def test_global_norm_accumulates_in_float64(rng: np.random.Generator) -> None:
    # float32 squares of 1e20 overflow; the norm must not.
    t = {"w": np.full(4, 1e20, np.float32), "b": rng.standard_normal(3).astype(np.float32)}
    expected = math.sqrt(
        4 * float(np.float32(1e20)) ** 2 + sum(float(x) ** 2 for x in t["b"].astype(np.float64))
    )
    assert global_norm(t) == pytest.approx(expected, rel=1e-12)


class _Pair(NamedTuple):
    a: Any
    b: Any


def test_regression_tree_map_rebuilt_namedtuples_with_one_argument() -> None:
    tree = _Pair(np.ones(2), {"c": np.zeros(1)})
    out = tree_map(lambda v: v + 1, tree)
    assert isinstance(out, _Pair)
    np.testing.assert_array_equal(out.a, [2.0, 2.0])
    np.testing.assert_array_equal(out.b["c"], [1.0])
