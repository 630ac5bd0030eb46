"""The model registry's batch-norm models: architecture, counts, gradients through the whole
model, and train.py training, saving, loading and resuming them exactly."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import fake_cifar10, interrupt_at_epoch, same_tree, without_timing
from measure import peak_growth

import fcnn
from fcnn import train
from fcnn.gradcheck import check_layer
from fcnn.io import load_checkpoint
from fcnn.models import MODELS, build_model, describe_model, load_trained, model_from_description

Arr = np.ndarray[Any, Any]


def types(spec: Any) -> list[Any]:
    """The layer types of a Sequential spec, nested blocks as lists."""
    return [types(e) if e["type"] == "Sequential" else e["type"] for e in spec["layers"]]


def count(tree: Any) -> int:
    return sum(a.size for a in fcnn.tree_leaves(tree))


# --- the registry -------------------------------------------------------------------------


def test_registry_has_the_new_models_and_keeps_the_old() -> None:
    assert {"small", "default", "bn", "cifar"} <= set(MODELS)
    params, _, _ = fcnn.init(build_model("default", 10), np.random.default_rng(0), (1, 28, 28))
    assert count(params) == 421_642
    params, _, _ = fcnn.init(build_model("small", 10), np.random.default_rng(0), (1, 28, 28))
    assert count(params) == 9_098


def test_bn_architecture() -> None:
    model = build_model("bn", 10)
    conv_bn = ["Conv2d", "BatchNorm2d", "Relu", "MaxPool2d"]
    head = ["Flatten", "Dense", "BatchNorm1d", "Relu", "Dropout", "Dense"]
    assert types(model.spec) == conv_bn * 2 + head
    params, state, out = fcnn.init(model, np.random.default_rng(0), (1, 28, 28))
    assert out == (10,) and count(params) == 422_090 and count(state) == 448
    assert params["conv1"]["w"].shape == (32, 1, 3, 3) and params["dense1"]["w"].shape == (
        3136,
        128,
    )
    assert set(state) == {"bn1", "bn2", "bn3"} and state["bn2"]["var"].shape == (64,)
    assert [layer.spec.get("rate") for layer in model.children if layer.kind == "dropout"] == [0.4]


def test_cifar_architecture() -> None:
    model = build_model("cifar", 10)
    block = ["Conv2d", "BatchNorm2d", "Relu"] * 2 + ["MaxPool2d"]
    assert types(model.spec) == [block, block, block, "Flatten", "Dropout", "Dense"]
    params, state, out = fcnn.init(model, np.random.default_rng(0), (3, 32, 32))
    assert out == (10,) and count(params) == 308_394 and count(state) == 896
    assert params["block3"]["conv2"]["w"].shape == (128, 128, 3, 3)
    assert params["dense1"]["w"].shape == (128 * 4 * 4, 10)
    assert set(state["block1"]) == {"bn1", "bn2"}


@pytest.mark.parametrize("name", ["bn", "cifar"])
def test_description_round_trips(name: str) -> None:
    desc = describe_model(name, 7, "strided")
    assert json.loads(json.dumps(desc)) == desc
    assert model_from_description(desc).spec == build_model(name, 7, "strided").spec
    assert desc["spec"]["layers"][0]["layers" if name == "cifar" else "impl"] is not None


@pytest.mark.parametrize(("name", "shape"), [("bn", (1, 28, 28)), ("cifar", (3, 32, 32))])
def test_forward_train_and_eval(name: str, shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(0)
    model = build_model(name, 10)
    params, state, _ = fcnn.init(model, rng, shape)
    x = rng.standard_normal((3, *shape)).astype(np.float32)
    y, _, s_train = fcnn.forward(model, params, state, x, fcnn.Context(train=True, rng=rng))
    assert y.shape == (3, 10) and y.dtype == np.float32
    assert not same_tree(s_train, state)  # the running statistics moved
    assert all(a.dtype == np.float32 for a in fcnn.tree_leaves(s_train))
    e1, _, s_eval = fcnn.forward(model, params, state, x)
    e2 = fcnn.predict(model, params, state, x, batch_size=1)
    assert same_tree(s_eval, state)
    np.testing.assert_allclose(e1, e2, rtol=1e-5, atol=1e-5)  # eval: batch size does not matter


@pytest.mark.parametrize(("name", "shape"), [("bn", (1, 8, 8)), ("cifar", (3, 8, 8))])
def test_whole_model_gradient_in_train_mode(name: str, shape: tuple[int, ...]) -> None:
    """Directional check (float64, random dy, dropout masks fixed by check_layer)."""
    rng = np.random.default_rng(1)
    model = build_model(name, 3)
    params, state, _ = fcnn.init(model, rng, shape, np.float64)
    x = rng.standard_normal((6, *shape))
    ctx = fcnn.Context(train=True, rng=np.random.default_rng(2))
    for _ in range(3):
        report = check_layer(model, params, state, x, ctx, rng=rng, directional=True)
        assert report.ok(1e-6), report


# --- train.py with the batch-norm model ---------------------------------------------------

BN = [
    "--model",
    "bn",
    "--dataset",
    "lines",
    "--limit-train",
    "128",
    "--batch-size",
    "32",
    "--quiet",
]


@pytest.mark.parametrize("optimizer", ["sgd", pytest.param("adamw", marks=pytest.mark.slow)])
def test_bn_model_trains_saves_loads_and_resumes_exactly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, optimizer: str
) -> None:
    whole, part = tmp_path / "whole.npz", tmp_path / "part.npz"
    common = (*BN, "--optimizer", optimizer, "--weight-decay", "1e-3", "--epochs", "2")
    assert train.main([*common, "--save", str(whole)]) == 0
    with monkeypatch.context() as m:
        interrupt_at_epoch(m, 2)
        assert train.main([*common, "--save", str(part)]) == 130
    assert load_checkpoint(part).meta["epoch"] == 1
    assert train.main(["--resume", str(part), "--quiet"]) == 0
    cw, cp = load_checkpoint(whole), load_checkpoint(part)
    assert cp.meta["epoch"] == 2
    assert same_tree(cw.params, cp.params)
    assert same_tree(cw.state, cp.state)  # running statistics, bit for bit
    assert cw.opt_state is not None and cp.opt_state is not None
    assert same_tree(cw.opt_state, cp.opt_state)
    assert without_timing(cw.meta["history"]) == without_timing(cp.meta["history"])

    history = cw.meta["history"]
    assert history[-1]["train_loss"] < 0.5 * history[0]["train_loss"]  # it learns
    assert history[-1]["test_acc"] > 0.6  # two classes
    assert set(cw.state) == {"bn1", "bn2", "bn3"}
    initial = {"mean": 0.0, "var": 1.0}
    for path, value in fcnn.flatten_dict(cw.state).items():
        assert not np.allclose(value, initial[path.rsplit("/", 1)[-1]]), path

    trained = load_trained(whole)
    x = np.random.default_rng(0).uniform(0, 1, (5, 1, 28, 28)).astype(np.float32)
    p1, p2 = trained.predict_proba(x), trained.predict_proba(x[:2], batch_size=1)
    np.testing.assert_allclose(p1.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(p1[:2], p2, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(p1, trained.predict_proba(x))  # eval is deterministic


def test_bn_model_dropout_seed_matters(tmp_path: Path) -> None:
    """Same seed, same run (masks included); another seed, another run."""
    paths = [tmp_path / f"{i}.npz" for i in range(3)]
    for path, seed in zip(paths, ["1", "1", "2"], strict=True):
        argv = [*BN, "--limit-train", "64", "--epochs", "1", "--seed", seed, "--save", str(path)]
        assert train.main(argv) == 0
    a, b, c = (load_checkpoint(p) for p in paths)
    assert same_tree(a.params, b.params) and same_tree(a.state, b.state)
    assert not same_tree(a.params, c.params)


def test_cifar_model_runs_on_a_small_local_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_cifar10(tmp_path, monkeypatch)
    ckpt = tmp_path / "c.npz"
    argv = ["--dataset", "cifar10", "--data-dir", str(tmp_path), "--model", "cifar"]
    assert (
        train.main([*argv, "--epochs", "1", "--batch-size", "16", "--quiet", "--save", str(ckpt)])
        == 0
    )
    trained = load_trained(ckpt)
    assert trained.input_shape == (3, 32, 32) and set(trained.state) == {
        "block1",
        "block2",
        "block3",
    }


def test_regression_load_trained_on_an_impossible_input_shape_was_a_value_error(
    tmp_path: Any,
) -> None:
    from fcnn.io import CheckpointError, save_checkpoint

    model = build_model("small", 10)
    params, state, _ = fcnn.init(model, np.random.default_rng(0), (1, 28, 28))
    meta = {
        "model": describe_model("small", 10),
        "input_shape": [1, 2, 2],
        "classes": [str(i) for i in range(10)],
        "normalization": {"mean": [0.1], "std": [0.3]},
    }
    path = tmp_path / "odd.npz"
    save_checkpoint(path, params=params, state=state, meta=meta)
    with pytest.raises(CheckpointError, match=r"does not fit input_shape \(1, 2, 2\)"):
        load_trained(path)


def _rgb_trained(mean: Arr, std: Arr) -> Any:
    from fcnn.models import Trained

    model = build_model("small", 4)
    params, state, _ = fcnn.init(model, np.random.default_rng(3), (3, 12, 12))
    classes = ("a", "b", "c", "d")
    return Trained(model, params, state, (3, 12, 12), classes, mean, std, {})


def test_predict_proba_normalizes_each_channel_with_fcnn_data_normalize() -> None:
    mean = np.array([0.2, 0.5, 0.7], np.float32)
    std = np.array([0.1, 0.3, 2.0], np.float32)
    trained = _rgb_trained(mean, std)
    x = np.random.default_rng(5).uniform(0, 1, (4, 3, 12, 12)).astype(np.float32)
    logits = fcnn.predict(
        trained.model, trained.params, trained.state, fcnn.data.normalize(x, mean, std)
    )
    np.testing.assert_array_equal(trained.predict_proba(x), fcnn.softmax(logits))


def test_regression_predict_proba_divided_by_a_zero_std_silently() -> None:
    trained = _rgb_trained(np.zeros(3, np.float32), np.array([1.0, 0.0, 1.0], np.float32))
    with pytest.raises(ValueError, match="std must be > 0"):
        trained.predict_proba(np.zeros((1, 3, 12, 12), np.float32))


def _small_checkpoint(path: Path, desc: dict[str, Any] | None = None) -> Any:
    """A checkpoint of the registry's "small" (10 classes, 28×28) at ``path``, its model
    stored as ``desc`` (default: ``describe_model``'s); returns its params."""
    from fcnn.io import save_checkpoint

    model = build_model("small", 10)
    params, state, _ = fcnn.init(model, np.random.default_rng(0), (1, 28, 28))
    meta = {
        "model": desc or describe_model("small", 10),
        "input_shape": [1, 28, 28],
        "classes": [str(i) for i in range(10)],
        "normalization": {"mean": [0.1], "std": [0.3]},
    }
    save_checkpoint(path, params=params, state=state, meta=meta)
    return params


def test_a_registry_model_edited_after_saving_still_loads_as_saved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 23: load_trained rebuilds the stored spec; the registry name is a label."""
    path = tmp_path / "m.npz"
    params = _small_checkpoint(path)
    saved = build_model("small", 10)
    x = np.random.default_rng(1).random((2, 1, 28, 28), dtype=np.float32)
    before = load_trained(path).predict_proba(x)
    edited = fcnn.models.ModelInfo(
        lambda k, impl: fcnn.sequential(fcnn.Conv2d(12, 5), fcnn.Flatten(), fcnn.Dense(k)), "new"
    )
    monkeypatch.setitem(MODELS, "small", edited)
    assert build_model("small", 10).spec != saved.spec  # the registry now builds another model
    trained = load_trained(path)
    assert trained.model.spec == saved.spec
    assert same_tree(trained.params, params)
    np.testing.assert_array_equal(trained.predict_proba(x), before)


def test_load_trained_names_a_stored_spec_it_cannot_rebuild(tmp_path: Path) -> None:
    from fcnn.io import CheckpointError

    desc = json.loads(json.dumps(describe_model("small", 10)))
    desc["spec"]["layers"][4]["type"] = "Swish"  # same params, a layer this fcnn lacks
    path = tmp_path / "bad.npz"
    _small_checkpoint(path, desc)
    with pytest.raises(CheckpointError) as info:
        load_trained(path)
    message = str(info.value)
    assert message.startswith(
        f"{path}: its model cannot be rebuilt: from_spec: relu2: unknown layer type 'Swish'"
    )
    assert "\n" not in message


def test_a_stored_model_is_its_spec_the_other_keys_are_labels(tmp_path: Path) -> None:
    """Issue 21 refused a description without ``impl``; now only ``spec`` is needed."""
    from fcnn.io import CheckpointError

    desc = describe_model("small", 10)
    no_impl = {k: v for k, v in desc.items() if k != "impl"}
    assert model_from_description(no_impl).spec == build_model("small", 10).spec
    _small_checkpoint(tmp_path / "labels.npz", {"spec": desc["spec"], "name": "renamed"})
    assert load_trained(tmp_path / "labels.npz").model.spec == build_model("small", 10).spec
    no_spec = {k: v for k, v in desc.items() if k != "spec"}
    with pytest.raises(ValueError, match=r"^model description lacks \['spec'\]$"):
        model_from_description(no_spec)
    _small_checkpoint(tmp_path / "no-spec.npz", no_spec)
    with pytest.raises(CheckpointError, match=r"no-spec.npz: model description lacks"):
        load_trained(tmp_path / "no-spec.npz")


def test_the_stored_spec_carries_its_format_version() -> None:
    desc = describe_model("resnet", 10)
    assert desc["spec"]["spec_version"] == fcnn.SPEC_VERSION
    assert model_from_description(desc).spec == build_model("resnet", 10).spec


def _trained_meta(name: str, input_shape: tuple[int, int, int]) -> dict[str, Any]:
    return {
        "model": describe_model(name, 10),
        "input_shape": list(input_shape),
        "classes": [str(i) for i in range(10)],
        "normalization": {"mean": [0.1], "std": [0.3]},
    }


def _growth_of_refused_load_trained(path: Path) -> int:
    """Bytes a fresh process's peak memory grows by while load_trained refuses ``path``."""
    setup = "from fcnn.io import CheckpointError\nfrom fcnn.models import load_trained\n"
    action = f"try:\n    load_trained({str(path)!r})\nexcept CheckpointError:\n    pass"
    return peak_growth(setup, action)


def test_regression_a_stored_input_shape_of_1000x1000_ran_init_to_gigabytes(
    tmp_path: Path,
) -> None:
    """Issue 15: a 28×28 checkpoint whose meta says input_shape [1, 1000, 1000] made
    load_trained run init, drawing a (4000000, 128) dense weight (5.9 GB of peak memory)
    before the params were compared. The shapes now come from a pass that draws and
    allocates no weight (``param_shapes``), and the file is refused by comparing them."""
    from fcnn.io import CheckpointError, save_checkpoint

    model = build_model("default", 10)
    params, state, _ = fcnn.init(model, np.random.default_rng(0), (1, 28, 28))
    path = tmp_path / "big.npz"
    save_checkpoint(
        path, params=params, state=state, meta=_trained_meta("default", (1, 1000, 1000))
    )
    with pytest.raises(
        CheckpointError,
        match=r"dense1/w: shape \(4000000, 128\) in the model, \(3136, 128\) in the file",
    ):
        load_trained(path)
    grown = _growth_of_refused_load_trained(path)
    assert grown < 32 * 2**20, f"peak grew by {grown / 2**20:.0f} MiB"


def test_param_shapes_are_inits_shapes_without_drawing_a_number() -> None:
    """load_trained needs the params' shapes only: the model's own init runs on abstract
    draws, so every shape and dtype is init's, no generator is touched and no weight made."""
    from fcnn.models import ShapeDtype, param_shapes

    for name, shape in [("default", (1, 28, 28)), ("bn", (1, 28, 28)), ("cifar", (3, 32, 32))]:
        model = build_model(name, 10)
        like, state_like, out = param_shapes(model, shape)
        params, state, out_init = fcnn.init(model, np.random.default_rng(0), shape)
        assert out == out_init == (10,)
        for tree, real in ((like, params), (state_like, state)):
            flat, want = fcnn.flatten_dict(tree), fcnn.flatten_dict(real)
            assert flat.keys() == want.keys()
            for key, leaf in flat.items():
                assert (leaf.shape, leaf.dtype) == (want[key].shape, want[key].dtype), key
        weights = [v for k, v in fcnn.flatten_dict(like).items() if k.endswith("/w")]
        assert weights and all(isinstance(w, ShapeDtype) for w in weights)
    huge, _, _ = param_shapes(build_model("default", 10), (1, 10_000, 10_000))
    assert huge["dense1"]["w"].shape == (64 * 2500 * 2500, 128)  # 2e11 values, none made
    with pytest.raises(ValueError, match="kernel"):
        param_shapes(build_model("default", 10), (1, 2, 2))


def test_regression_load_trained_inflated_a_deflate_bomb_before_comparing_shapes(
    tmp_path: Path,
) -> None:
    """Issue 15: load_trained read (and inflated) every member before comparing shapes. A
    conv weight declared as 64 Mi float32 zeros, deflated to well under 1 MB, is now
    refused from its .npy header: the loading process barely grows."""
    import zipfile

    from fcnn.io import CheckpointError, save_checkpoint

    model = build_model("small", 10)
    params, state, _ = fcnn.init(model, np.random.default_rng(0), (1, 28, 28))
    good, path = tmp_path / "good.npz", tmp_path / "bomb.npz"
    save_checkpoint(good, params=params, state=state, meta=_trained_meta("small", (1, 28, 28)))
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            if info.filename != "params/conv1/w.npy":
                dst.writestr(info.filename, src.read(info))
                continue
            with dst.open(info.filename, "w", force_zip64=True) as f:
                np.lib.format.write_array_header_1_0(
                    f, {"descr": "<f4", "fortran_order": False, "shape": (64 * 2**20,)}
                )
                for _ in range(64):
                    f.write(bytes(4 * 2**20))
    assert path.stat().st_size < 2**20
    with pytest.raises(CheckpointError, match=r"conv1/w: shape \(8, 1, 3, 3\) in the model"):
        load_trained(path)
    grown = _growth_of_refused_load_trained(path)
    assert grown < 16 * 2**20, f"peak grew by {grown / 2**20:.0f} MiB"


# --- resnet: a small ResNet, on CIFAR-shaped synthetic data (issue 23) ----------------------


def test_resnet_architecture() -> None:
    model = build_model("resnet", 10)
    spec = model.spec
    assert [e["type"] for e in spec["layers"]] == ["Sequential"] * 4 + ["GlobalAvgPool2d", "Dense"]
    assert types(spec["layers"][0]) == ["Conv2d", "BatchNorm2d", "Relu"]
    for i, width in enumerate((16, 32, 64)):
        stage = spec["layers"][i + 1]
        assert stage["name"] == f"stage{i + 1}" and types(stage) == ["Residual", "Relu"]
        res = stage["layers"][0]
        assert types(res["block"]) == ["Conv2d", "BatchNorm2d", "Relu", "Conv2d", "BatchNorm2d"]
        assert res["block"]["layers"][0]["out_channels"] == width
        assert res["block"]["layers"][0]["stride"] == [1 + (i > 0)] * 2
        if i == 0:
            assert res["shortcut"] is None  # 16 -> 16 channels, same size: the identity
        else:
            assert types(res["shortcut"]) == ["Conv2d", "BatchNorm2d"]
            assert res["shortcut"]["layers"][0]["kernel_size"] == [1, 1]
    params, state, out = fcnn.init(model, np.random.default_rng(0), (3, 32, 32))
    assert out == (10,) and count(params) == 78_378 and count(state) == 672
    assert params["stage2"]["residual1"]["shortcut"]["conv1"]["w"].shape == (32, 16, 1, 1)
    assert params["dense1"]["w"].shape == (64, 10)  # after the global pool: any image size
    _, _, out28 = fcnn.init(model, np.random.default_rng(0), (1, 28, 28))
    assert out28 == (10,)


def test_resnet_forward_train_and_eval() -> None:
    rng = np.random.default_rng(0)
    model = build_model("resnet", 10)
    params, state, _ = fcnn.init(model, rng, (3, 32, 32))
    x = rng.standard_normal((4, 3, 32, 32)).astype(np.float32)
    y, _, s_train = fcnn.forward(model, params, state, x, fcnn.Context(train=True, rng=rng))
    assert y.shape == (4, 10) and y.dtype == np.float32
    assert fcnn.tree_paths(s_train) == fcnn.tree_paths(state) and not same_tree(s_train, state)
    e1, _, s_eval = fcnn.forward(model, params, s_train, x)
    assert same_tree(s_eval, s_train)
    np.testing.assert_allclose(e1, fcnn.predict(model, params, s_train, x, batch_size=1), atol=1e-5)


@pytest.mark.parametrize("train_mode", [False, True])
def test_resnet_whole_model_gradient(train_mode: bool) -> None:
    """Directional checks (float64, random dy). Seed 2: with seed 1 a batch-norm output
    sits 9e-7 from its ReLU's kink, which a step of eps = 1e-6 crosses."""
    rng = np.random.default_rng(2)
    model = build_model("resnet", 3)
    params, state, _ = fcnn.init(model, rng, (3, 8, 8), np.float64)
    x = rng.standard_normal((4, 3, 8, 8))
    ctx = fcnn.Context(train=train_mode, rng=np.random.default_rng(2))
    for _ in range(3):
        report = check_layer(model, params, state, x, ctx, rng=rng, directional=True)
        assert report.ok(1e-6) and "direction" in report.errors, report


def _stripes(n: int, rng: np.random.Generator) -> tuple[Arr, Arr]:
    """CIFAR-shaped (N, 3, 32, 32) images in [0, 1] of 4 classes that crops and flips keep:
    horizontal or vertical stripes (random period and phase) in the red or the blue channel,
    on noise."""
    y = rng.integers(0, 4, n)
    x = rng.normal(0.5, 0.15, (n, 3, 32, 32)).astype(np.float32)
    r = np.arange(32)
    for i in range(n):
        wave = (np.sin(2 * np.pi * (r + rng.integers(6)) / rng.integers(4, 7)) > 0) * 0.4
        x[i, 0 if y[i] < 2 else 2] += wave[:, None] if y[i] % 2 == 0 else wave[None, :]
    return np.clip(x, 0, 1), y


def test_resnet_learns_cifar_shaped_data_with_crops_and_flips() -> None:
    """CIFAR-10 cannot be downloaded here: synthetic CIFAR-shaped classes instead."""
    from fcnn.data.augment import cifar_augment

    rng = np.random.default_rng(0)
    (x_tr, y_tr), (x_te, y_te) = _stripes(384, rng), _stripes(128, rng)
    mean, std = fcnn.data.channel_stats(x_tr)
    x_tr, x_te = fcnn.data.normalize(x_tr, mean, std), fcnn.data.normalize(x_te, mean, std)
    model = build_model("resnet", 4)
    params, state, _ = fcnn.init(model, np.random.default_rng(1), (3, 32, 32))
    opt = fcnn.adam(3e-3)
    ts = fcnn.TrainState(params, state, opt.init(params))
    augment = cifar_augment(4, fill=-mean / std)  # pads with the normalised black
    g = np.random.default_rng(2)
    losses = []
    for _ in range(2):
        ts, metrics = fcnn.train_epoch(
            fcnn.make_step(model, opt), ts, x_tr, y_tr, 32, g, augment=augment
        )
        losses.append(metrics)
    accuracy = np.mean(fcnn.predict(model, ts.params, ts.state, x_te).argmax(1) == y_te)
    assert accuracy > 0.6, (accuracy, losses)  # chance is 0.25


def test_resnet_trains_saves_and_loads_with_train_py(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_cifar10(tmp_path, monkeypatch)
    ckpt = tmp_path / "r.npz"
    argv = ["--dataset", "cifar10", "--data-dir", str(tmp_path), "--model", "resnet"]
    assert (
        train.main([*argv, "--epochs", "1", "--batch-size", "16", "--quiet", "--save", str(ckpt)])
        == 0
    )
    trained = load_trained(ckpt)
    assert trained.input_shape == (3, 32, 32)
    assert set(trained.state) == {"stem", "stage1", "stage2", "stage3"}
    assert "shortcut" in trained.state["stage3"]["residual1"]
    probs = trained.predict_proba(np.random.default_rng(0).random((2, 3, 32, 32), np.float32))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("name", ["v0.2.0-lines-small.npz", "v0.2.0-digits-fast.npz"])
def test_load_trained_reads_a_checkpoint_of_fcnn_0_2_0(name: str) -> None:
    path = Path(__file__).parent / "fixtures" / name
    trained = load_trained(path)
    record = trained.record
    assert record is not None and record.epoch == 1 and record.config is not None
    assert record.test_accuracy == trained.meta["history"][-1]["test_acc"]
    assert trained.classes == tuple(trained.meta["classes"])
    x = np.random.default_rng(0).uniform(0, 1, (3, *trained.input_shape)).astype(np.float32)
    np.testing.assert_allclose(trained.predict_proba(x).sum(axis=1), 1.0, rtol=1e-5)
