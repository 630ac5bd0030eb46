"""fcnn.summary: rows, paths of nested blocks, shapes, counts, totals and errors."""

from __future__ import annotations

import numpy as np
import pytest

import fcnn
from fcnn.models import build_model
from fcnn.tree import tree_leaves


def rows(table: str) -> dict[str, list[str]]:
    """The table's body as ``{path: [layer, output shape, params]}``."""
    out: dict[str, list[str]] = {}
    for line in table.splitlines()[2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        out[cells[0]] = cells[1:]
    return out


def n_params(model: fcnn.Layer, shape: tuple[int, ...]) -> tuple[int, int]:
    params, state, _ = fcnn.init(model, np.random.default_rng(0), shape)
    return sum(a.size for a in tree_leaves(params)), sum(a.size for a in tree_leaves(state))


def test_fcnn_summary_is_the_function() -> None:
    assert callable(fcnn.summary) and "summary" in fcnn.__all__


def test_bn_model_table() -> None:
    model = build_model("bn", 10)
    table = fcnn.summary(model, (1, 28, 28))
    body = rows(table)
    assert list(body)[:4] == ["input", "conv1", "bn1", "relu1"]
    assert body["input"] == ["", "(1, 28, 28)", ""]
    assert body["conv1"] == ["Conv2d", "(32, 28, 28)", "320"]
    assert body["bn1"] == ["BatchNorm2d", "(32, 28, 28)", "64"]
    assert body["maxpool2"] == ["MaxPool2d", "(64, 7, 7)", "0"]
    assert body["flatten1"] == ["Flatten", "(3136,)", "0"]
    assert body["dense1"] == ["Dense", "(128,)", "401,536"]
    assert body["bn3"] == ["BatchNorm1d", "(128,)", "256"]
    assert body["dropout1"] == ["Dropout", "(128,)", "0"]
    assert body["dense2"] == ["Dense", "(10,)", "1,290"]
    total, state = n_params(model, (1, 28, 28))
    assert sum(int(r[2].replace(",", "")) for r in body.values() if r[2]) == total
    assert f"total: {total:,} params, {state:,} state values" in table
    assert "-> (10,) per sample" in table


def test_nested_blocks_show_full_paths() -> None:
    model = build_model("cifar", 10)
    body = rows(fcnn.summary(model, (3, 32, 32)))
    assert body["block2/conv1"] == ["Conv2d", "(64, 16, 16)", "18,496"]
    assert body["block3/maxpool1"] == ["MaxPool2d", "(128, 4, 4)", "0"]
    assert "block1" not in body  # containers are walked, not listed
    total, _ = n_params(model, (3, 32, 32))
    assert sum(int(r[2].replace(",", "")) for r in body.values() if r[2]) == total


def test_table_is_aligned() -> None:
    table = fcnn.summary(build_model("small", 2), (1, 16, 16))
    lines = [line for line in table.splitlines() if line.startswith("|")]
    assert len({len(line) for line in lines}) == 1
    assert lines[0].split("|")[1:5] == [" path     ", " layer     ", " output shape ", " params "]
    assert lines[1].endswith(":|")  # params right-aligned


def test_a_single_layer() -> None:
    body = rows(fcnn.summary(fcnn.Conv2d(4, 3, name="stem"), (2, 5, 6)))
    assert body["stem"] == ["Conv2d", "(4, 3, 4)", "76"]
    body = rows(fcnn.summary(fcnn.BatchNorm1d(), (7,)))
    assert body["bn"] == ["BatchNorm1d", "(7,)", "14"]


def test_bad_shapes_name_the_layer() -> None:
    model = build_model("cifar", 10)
    with pytest.raises(ValueError, match=r"^block1/conv1: conv2d: input shape must be"):
        fcnn.summary(model, (32, 32))
    with pytest.raises(ValueError, match="sizes >= 1"):
        fcnn.summary(model, (3, 0, 32))
    with pytest.raises(TypeError, match="summary: model must be a Layer"):
        fcnn.summary(fcnn.conv2d_fwd, (1, 4, 4))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="input_shape must be a sequence of ints"):
        fcnn.summary(model, 3)  # type: ignore[arg-type]


# --- residual and concat blocks (issue 23) ------------------------------------------------


def test_resnet_lists_both_paths_and_the_sum() -> None:
    model = build_model("resnet", 10)
    table = fcnn.summary(model, (3, 32, 32))
    body = rows(table)
    paths = list(body)
    assert body["stage2/residual1/block/conv1"] == ["Conv2d", "(32, 16, 16)", "4,640"]
    assert body["stage2/residual1/shortcut/conv1"] == ["Conv2d", "(32, 16, 16)", "544"]
    assert body["stage2/residual1"] == ["Residual: block + shortcut", "(32, 16, 16)", "0"]
    assert body["stage1/residual1"] == ["Residual: block + x", "(16, 32, 32)", "0"]
    # the sum's row comes after both paths' layers and before the ReLU that follows it
    i = paths.index("stage2/residual1")
    assert paths[i - 1] == "stage2/residual1/shortcut/bn1" and paths[i + 1] == "stage2/relu1"
    assert body["globalpool1"] == ["GlobalAvgPool2d", "(64,)", "0"]
    total, state = n_params(model, (3, 32, 32))
    assert sum(int(r[2].replace(",", "")) for r in body.values() if r[2]) == total
    assert f"total: {total:,} params, {state:,} state values" in table


def test_concat_branches_each_start_from_the_input() -> None:
    model = fcnn.sequential(
        fcnn.concat(
            fcnn.Conv2d(2, 1),
            fcnn.sequential(fcnn.MaxPool2d(3, 1, 1), fcnn.Conv2d(4, 3, padding=1), name="pool"),
        ),
        fcnn.GlobalAvgPool2d(),
    )
    body = rows(fcnn.summary(model, (3, 6, 6)))
    assert list(body) == [
        "input",
        "concat1/conv1",
        "concat1/pool/maxpool1",
        "concat1/pool/conv1",
        "concat1",
        "globalpool1",
    ]
    assert body["concat1/pool/maxpool1"] == ["MaxPool2d", "(3, 6, 6)", "0"]  # from the input
    assert body["concat1"] == ["Concat: axis 1", "(6, 6, 6)", "0"]
    assert body["globalpool1"] == ["GlobalAvgPool2d", "(6,)", "0"]


def test_a_residual_alone_and_its_shape_error() -> None:
    body = rows(fcnn.summary(fcnn.residual(fcnn.Relu()), (3, 4, 4)))
    assert body["block"] == ["Relu", "(3, 4, 4)", "0"]
    assert body["residual"] == ["Residual: block + x", "(3, 4, 4)", "0"]
    model = fcnn.sequential(fcnn.residual(fcnn.Conv2d(5, 1), name="res"))
    with pytest.raises(ValueError, match=r"^res: residual: the block gives \(5, 4, 4\)"):
        fcnn.summary(model, (3, 4, 4))
