"""from_spec: every model rebuilds from its spec (registry, nested blocks, fcnn 0.2.0's
checkpoints), user layers only with trust, and clear errors for the rest (issue 23)."""

from __future__ import annotations

import inspect
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import same_tree
from hypothesis import given
from hypothesis import strategies as st

import fcnn
from fcnn import Layer
from fcnn.gradcheck import check_layer
from fcnn.io import load_checkpoint, read_checkpoint_header
from fcnn.models import MODELS, build_model
from fcnn.specs import LAYERS, SPEC_VERSION, CodeNotTrustedError, SpecError, dump_spec, from_spec
from fcnn.tree import flatten_dict

FIXTURES = Path(__file__).parent / "fixtures"


def shapes(tree: Any) -> dict[str, tuple[int, ...]]:
    return {k: v.shape for k, v in flatten_dict(tree).items()}


def assert_rebuilds(model: Layer, in_shape: tuple[int, ...], **kwargs: Any) -> Layer:
    """The property: the JSON of ``dump_spec(model)`` rebuilds a model with the same spec,
    the same params and state paths and shapes, and (with the same params) the same outputs."""
    stored = json.loads(json.dumps(dump_spec(model)))
    again = from_spec(stored, **kwargs)
    assert again.spec == model.spec
    assert dump_spec(again) == stored
    p1, s1, out1 = fcnn.init(model, np.random.default_rng(0), in_shape, np.float64)
    p2, s2, out2 = fcnn.init(again, np.random.default_rng(0), in_shape, np.float64)
    assert out1 == out2
    assert list(shapes(p1).items()) == list(shapes(p2).items())
    assert list(shapes(s1).items()) == list(shapes(s2).items())
    assert same_tree(p1, p2)  # the same draws in the same order
    x = np.random.default_rng(1).standard_normal((2, *in_shape))
    np.testing.assert_array_equal(fcnn.predict(model, p1, s1, x), fcnn.predict(again, p1, s1, x))
    return again


def _in_shape(name: str) -> tuple[int, ...]:
    return (3, 32, 32) if name in ("cifar", "resnet") else (1, 28, 28)


@pytest.mark.parametrize("impl", ["im2col", "naive"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_registry_model_rebuilds_from_its_spec(name: str, impl: str) -> None:
    assert_rebuilds(build_model(name, 7, impl), _in_shape(name))


# --- random nested models: a property over many architectures ---------------------------------

C = 3  # every block below maps (C, H, W) to (C, H, W), so any nesting initialises


def _leaves() -> st.SearchStrategy[Layer]:
    return st.one_of(
        st.builds(lambda k: fcnn.Conv2d(C, k, padding=k // 2), st.sampled_from([1, 3])),
        st.just(0).map(lambda _: fcnn.Relu()),
        st.floats(0.05, 0.5).map(lambda m: fcnn.BatchNorm2d(momentum=m)),
        st.floats(0.0, 0.5).map(lambda r: fcnn.Dropout(r)),
        st.just(0).map(lambda _: fcnn.AvgPool2d(3, stride=1, padding=1)),
        st.just(0).map(lambda _: fcnn.MaxPool2d(3, stride=1, padding=1)),
    )


def _extend(blocks: st.SearchStrategy[Layer]) -> st.SearchStrategy[Layer]:
    many = st.lists(blocks, min_size=1, max_size=3)
    return st.one_of(
        many.map(lambda ls: fcnn.sequential(*ls)),
        st.tuples(blocks, st.none() | st.just(1)).map(
            lambda t: fcnn.residual(t[0], None if t[1] is None else fcnn.Conv2d(C, 1))
        ),
        many.map(lambda ls: fcnn.sequential(fcnn.concat(*ls), fcnn.Conv2d(C, 1))),
    )


NESTED = st.recursive(_leaves(), _extend, max_leaves=8).map(
    lambda block: fcnn.sequential(block, fcnn.GlobalAvgPool2d(), fcnn.Dense(2))
)


@given(NESTED)
def test_any_nesting_of_blocks_rebuilds_from_its_spec(model: Layer) -> None:
    assert_rebuilds(model, (C, 5, 4))


def test_named_layers_keep_their_names() -> None:
    model = fcnn.sequential(
        fcnn.Conv2d(2, 3, name="stem"),
        fcnn.concat(fcnn.Relu(name="left"), fcnn.residual(fcnn.Relu()), name="fork"),
        fcnn.sequential(fcnn.Flatten(), name="head"),
    )
    again = assert_rebuilds(model, (1, 5, 5))
    assert [e["name"] for e in again.spec["layers"]] == ["stem", "fork", "head"]
    assert [e["name"] for e in again.spec["layers"][1]["branches"]] == ["left", "residual1"]


# --- fcnn 0.2.0's checkpoints ------------------------------------------------------------------


def _holds(rebuilt: Any, stored: Any) -> bool:
    """Whether ``rebuilt`` has every field of ``stored`` with the same value, recursively
    (lists: the same length, element by element)."""
    if isinstance(stored, dict):
        return isinstance(rebuilt, dict) and all(
            k in rebuilt and _holds(rebuilt[k], v) for k, v in stored.items()
        )
    if isinstance(stored, list):
        return (
            isinstance(rebuilt, list)
            and len(rebuilt) == len(stored)
            and all(_holds(a, b) for a, b in zip(rebuilt, stored, strict=True))
        )
    return bool(rebuilt == stored)


@pytest.mark.parametrize("fixture", ["v0.2.0-lines-small.npz", "v0.2.0-digits-fast.npz"])
def test_0_2_0_checkpoints_rebuild_from_their_spec(fixture: str) -> None:
    header = read_checkpoint_header(FIXTURES / fixture)
    desc = header.meta["model"]
    assert "spec_version" not in desc["spec"]  # the 0.2.0 format has no version
    model = from_spec(desc["spec"])
    # as saved: every stored field is there with its value (a field a layer gained since,
    # such as a new Conv2d option, shows its default)
    assert _holds(model.spec, desc["spec"])
    assert model.spec == build_model(desc["name"], desc["num_classes"], desc["impl"]).spec
    in_shape = tuple(header.meta["input_shape"])
    params, state, out = fcnn.init(model, np.random.default_rng(0), in_shape)
    assert out == (desc["num_classes"],)
    ckpt = load_checkpoint(FIXTURES / fixture, expected={"params": params, "state": state})
    x = np.random.default_rng(0).standard_normal((3, *in_shape)).astype(np.float32)
    assert fcnn.predict(model, ckpt.params, ckpt.state, x).shape == (3, desc["num_classes"])


def test_a_registry_model_edited_later_does_not_orphan_a_checkpoint() -> None:
    """The spec alone rebuilds the model as it was saved, whatever the registry says now."""
    header = read_checkpoint_header(FIXTURES / "v0.2.0-lines-small.npz")
    saved = json.loads(json.dumps(header.meta["model"]["spec"]))
    saved["layers"][0]["out_channels"] = 12  # as if "small" had had 12 filters then
    saved["layers"][3]["out_channels"] = 5
    params, _, _ = fcnn.init(from_spec(saved), np.random.default_rng(0), (1, 16, 16))
    assert params["conv1"]["w"].shape == (12, 1, 3, 3)
    assert params["conv2"]["w"].shape == (5, 12, 3, 3)


def test_a_field_the_spec_lacks_takes_the_constructors_default() -> None:
    """So a spec written before a layer grew an option still loads."""
    model = from_spec(
        {
            "type": "Sequential",
            "layers": [{"name": "c", "type": "Conv2d", "out_channels": 2, "kernel_size": 3}],
        }
    )
    assert model.spec["layers"][0] == fcnn.sequential(fcnn.Conv2d(2, 3, name="c")).spec["layers"][0]


# --- versions ------------------------------------------------------------------------------------


def test_dump_spec_records_the_format_version_at_the_top() -> None:
    model = build_model("small", 3)
    stored = dump_spec(model)
    assert next(iter(stored)) == "spec_version" and stored["spec_version"] == SPEC_VERSION == 2
    assert {k: v for k, v in stored.items() if k != "spec_version"} == model.spec
    assert from_spec({**model.spec, "spec_version": 1}).spec == model.spec


@pytest.mark.parametrize(
    ("version", "message"),
    [
        (
            3,
            r"^from_spec: the spec has format version 3, newer than this fcnn reads \(2\); upgrade",
        ),
        (0, r"^from_spec: spec_version must be an int >= 1, got 0$"),
        ("2", r"^from_spec: spec_version must be an int >= 1, got '2'$"),
    ],
)
def test_versions_this_fcnn_cannot_read_are_refused(version: Any, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        from_spec({**build_model("small", 3).spec, "spec_version": version})


# --- a user's own layer: rebuilt by its builder, imported only with trust -----------------------


def test_own_layer_spec_records_its_builder_and_arguments() -> None:
    own_layers = pytest.importorskip("own_layers")
    layer = own_layers.gate(scale=2.0, widths=(3, 4))
    assert dict(layer.spec) == {
        "type": "gate",
        "builder": "own_layers:gate",
        "scale": 2.0,
        "widths": [3, 4],
    }
    assert dict(own_layers.gate().spec)["scale"] == 1.0  # defaults are recorded too
    model = fcnn.sequential(fcnn.Conv2d(3, 1), layer, fcnn.Flatten())
    again = assert_rebuilds(model, (2, 3, 3), trust_code=True)
    rng = np.random.default_rng(0)
    params, state, _ = fcnn.init(again, rng, (2, 3, 3), np.float64)
    report = check_layer(again, params, state, rng.standard_normal((2, 2, 3, 3)), rng=rng)
    assert report.ok(1e-6), report


def test_own_layer_from_the_callers_constructors_needs_no_trust() -> None:
    own_layers = pytest.importorskip("own_layers")
    model = fcnn.sequential(own_layers.gate(0.5))
    again = from_spec(dump_spec(model), layers={"gate": own_layers.gate})
    assert again.spec == model.spec


GATE_MODULE = """
import fcnn
import numpy as np

@fcnn.rebuildable
def boost(factor: float = 2.0):
    return fcnn.layer(lambda p, x, c: (x * factor, None), lambda c, dy: (dy * factor, {}))
"""


def test_a_spec_never_imports_code_unless_trusted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "fcnn_spec_test_boost.py").write_text(GATE_MODULE)
    spec = {
        "spec_version": 2,
        "type": "Sequential",
        "layers": [
            {"name": "relu1", "type": "Relu"},
            {
                "name": "boost1",
                "type": "boost",
                "builder": "fcnn_spec_test_boost:boost",
                "factor": 3.0,
            },
        ],
    }
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "fcnn_spec_test_boost", raising=False)
    with pytest.raises(CodeNotTrustedError) as info:
        from_spec(spec)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(
        "from_spec: boost1: layer 'boost' is built by code, fcnn_spec_test_boost:boost, which "
        "loading would import and run"
    )
    assert "trust_code=True" in message and "--trust-code" in message
    assert info.value.builder == "fcnn_spec_test_boost:boost"
    assert "fcnn_spec_test_boost" not in sys.modules  # refused before anything was imported
    model = from_spec(spec, trust_code=True)
    assert "fcnn_spec_test_boost" in sys.modules
    assert dump_spec(model) == spec
    x = np.array([[1.0, -2.0]])
    np.testing.assert_array_equal(fcnn.predict(model, {}, {}, x), [[3.0, 0.0]])


@pytest.mark.parametrize(
    ("builder", "message"),
    [
        ("no_such_module_here:gate", r"cannot import no_such_module_here:gate \(no module named"),
        ("own_layers:no_such_function", "cannot import own_layers:no_such_function"),
        ("own_layers", r"builder must be 'module:function', got 'own_layers'"),
        ("own_layers:Arr", "cannot rebuild gate from"),
    ],
)
def test_a_builder_that_cannot_be_imported_or_called(builder: str, message: str) -> None:
    spec = {"type": "Sequential", "layers": [{"name": "g", "type": "gate", "builder": builder}]}
    with pytest.raises(SpecError, match=rf"^from_spec: g: {message}"):
        from_spec(spec, trust_code=True)


def test_rebuildable_refuses_what_it_could_not_rebuild() -> None:
    def local() -> Layer:
        return fcnn.Relu()

    with pytest.raises(
        TypeError, match=r"rebuildable: .*<locals>.local cannot be imported by path"
    ):
        fcnn.rebuildable(local)
    with pytest.raises(
        TypeError, match=r"rebuildable: test_specs:_takes_args takes \*sizes: name every"
    ):
        fcnn.rebuildable(_takes_args)
    own_layers = pytest.importorskip("own_layers")
    with pytest.raises(TypeError, match="rebuildable: own_layers:gate's arguments must be JSON"):
        own_layers.gate(scale=np.ones(2))
    with pytest.raises(TypeError, match=r"rebuildable: .*returned a int, not a Layer"):
        fcnn.rebuildable(_not_a_layer)()


def _takes_args(*sizes: int) -> Layer:
    return fcnn.Relu()


def _not_a_layer() -> Any:
    return 3


# --- malformed specs ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            {"type": "Sequential", "layers": [{"name": "act", "type": "Swish"}]},
            r"^from_spec: act: unknown layer type 'Swish'; fcnn's types are \['AvgPool2d', .*"
            r"marked @fcnn.rebuildable, or pass layers=\{'Swish': its constructor\}$",
        ),
        ({"layers": []}, r"^from_spec: model: a layer spec needs a 'type' string"),
        ({"type": "Sequential", "layers": []}, "model: Sequential needs a non-empty list 'layers'"),
        ({"type": "Sequential", "layers": [{"type": "Relu"}]}, "each of its layers needs a 'name'"),
        (
            {"type": "Sequential", "layers": [{"name": "d", "type": "Dense", "units": 3}]},
            r"^from_spec: d: cannot rebuild Dense from \{'units': 3\}: .*'units'",
        ),
        (
            {"type": "Sequential", "layers": [{"name": "d", "type": "Dense", "out_features": 0}]},
            r"^from_spec: d: cannot rebuild Dense .*dense: out_features must be >= 1",
        ),
        (
            {"type": "Residual", "block": {"type": "Sequential", "layers": [{"name": "x"}]}},
            r"^from_spec: block/x: a layer spec needs a 'type' string",
        ),
        (
            {"type": "Concat", "axis": 0, "branches": [{"name": "r", "type": "Relu"}]},
            r"^from_spec: model: concat: axis must be an int >= 1",
        ),
        (
            {"type": "Sequential", "layers": [{"name": "a", "type": "Relu"}] * 2},
            r"^from_spec: model: sequential: duplicate layer name 'a'",
        ),
        ([1, 2], r"^from_spec: a spec must be an object, got list"),
    ],
)
def test_malformed_specs_are_named(spec: Any, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        from_spec(spec)


def test_the_table_covers_every_layer_the_library_exports() -> None:
    """Every layer constructor fcnn exports (a CamelCase function) is in the table, and
    each rebuilds its own spec from exactly that spec's fields."""
    exported = {n for n in fcnn.__all__ if n[0].isupper() and inspect.isfunction(getattr(fcnn, n))}
    assert exported <= {ctor.__name__ for ctor in LAYERS.values()}, "add them to LAYERS"
    examples = {
        "Conv2d": fcnn.Conv2d(2, 3, stride=2, padding=((1, 0), (0, 1)), impl="naive"),
        "Dense": fcnn.Dense(2),
        "Relu": fcnn.Relu(),
        "MaxPool2d": fcnn.MaxPool2d(3, 2, 1),
        "AvgPool2d": fcnn.AvgPool2d(2),
        "GlobalAvgPool2d": fcnn.GlobalAvgPool2d(),
        "Flatten": fcnn.Flatten(),
        "BatchNorm2d": fcnn.BatchNorm2d(momentum=0.2, eps=1e-3),
        "BatchNorm1d": fcnn.BatchNorm1d(),
        "Dropout": fcnn.Dropout(0.1),
        "SpatialDropout2d": fcnn.SpatialDropout2d(0.1),
        "ConvTranspose2d": fcnn.ConvTranspose2d(3, 3, stride=2, padding=1, output_padding=1),
        "LeakyRelu": fcnn.LeakyRelu(0.2),
        "Gelu": fcnn.Gelu(approximate="tanh"),
        "Sigmoid": fcnn.Sigmoid(),
        "Tanh": fcnn.Tanh(),
    }
    examples["Conv2d dilated, grouped"] = fcnn.Conv2d(4, 3, padding="same", dilation=2, groups=2)
    assert set(examples) - {"Conv2d dilated, grouped"} == set(LAYERS) == set(LAYERS), (
        "give every table entry an example here"
    )
    for kind, layer in examples.items():
        assert kind.startswith(layer.spec["type"])
        kind = layer.spec["type"]
        fields = {k: v for k, v in layer.spec.items() if k != "type"}
        assert dict(LAYERS[kind](**fields).spec) == dict(layer.spec)
