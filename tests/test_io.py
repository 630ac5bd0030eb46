"""Checkpoints: round trips, atomic writes, tampered files, tree checks, generator state."""

from __future__ import annotations

import errno
import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from measure import peak_growth

import fcnn
import fcnn.io as fio
from fcnn.io import (
    Checkpoint,
    CheckpointError,
    check_params_match,
    generator_state,
    load_checkpoint,
    restore_generator,
    save_checkpoint,
)
from fcnn.layers.conv import Conv2d
from fcnn.model import init, sequential
from fcnn.optim import apply_updates, sgd
from fcnn.tree import flatten_dict, tree_map, zeros_like

# --- helpers -------------------------------------------------------------------------------


def _tree_structure(tree: Any) -> Any:
    """The nested-dict skeleton with (shape, dtype) leaves, key order included."""
    if isinstance(tree, dict):
        return [(k, _tree_structure(v)) for k, v in tree.items()]
    return (type(tree).__name__, tree.shape, str(tree.dtype))


def _assert_trees_equal(a: Any, b: Any) -> None:
    assert _tree_structure(a) == _tree_structure(b)
    tree_map(lambda x, y: np.testing.assert_array_equal(x, y, strict=True), a, b)


def _hand_trees(rng: np.random.Generator) -> tuple[Any, Any, Any]:
    params = {
        "conv1": {
            "w": rng.standard_normal((4, 1, 3, 3)).astype(np.float32),
            "b": np.zeros(4, np.float32),
        },
        "block1": {"dense1": {"w": rng.standard_normal((5, 3)), "b": np.arange(3.0)}},
        "scale": np.asarray(2.5, dtype=np.float64),  # 0-d
    }
    state = {
        "bn1": {"mean": rng.standard_normal(4), "count": np.asarray(7, np.int64)},
        "empty": {},
        "deep": {"er": {}},
    }
    opt_state = {
        "step": np.asarray(3, dtype=np.int64),
        "velocity": {},
        "mu": zeros_like(params),
        "ids": np.arange(5, dtype=np.int64),
    }
    return params, state, opt_state


def _save_raw(path: Path, **members: Any) -> None:
    """An .npz with exactly these members, written by plain np.savez."""
    with open(path, "wb") as f:
        np.savez(f, **members)


def _header(meta: Any) -> np.ndarray[Any, Any]:
    return np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)


def _good_header(**overrides: Any) -> dict[str, Any]:
    header: dict[str, Any] = {
        "format": "fcnn-checkpoint",
        "format_version": 1,
        "fcnn_version": "0.1.0",
        "trees": {"params": {"w": None}, "state": {}, "opt_state": None},
        "meta": {},
    }
    header.update(overrides)
    return header


# --- round trips ---------------------------------------------------------------------------


def test_round_trip_hand_built_trees(tmp_path: Path, rng: np.random.Generator) -> None:
    params, state, opt_state = _hand_trees(rng)
    meta = {
        "model": {"type": "Sequential", "layers": [{"name": "conv1", "type": "Conv2d"}]},
        "normalisation": {"mean": [0.1307], "std": [0.3081]},
        "epoch": 4,
        "dataset": "mnist",
        "flags": [True, None, "ü", 1.5, 2**70],
    }
    path = tmp_path / "ckpt.npz"
    save_checkpoint(path, params=params, state=state, opt_state=opt_state, meta=meta)
    ckpt = load_checkpoint(path)
    assert isinstance(ckpt, Checkpoint)
    _assert_trees_equal(ckpt.params, params)
    _assert_trees_equal(ckpt.state, state)
    _assert_trees_equal(ckpt.opt_state, opt_state)
    assert ckpt.opt_state is not None and ckpt.opt_state["velocity"] == {}
    assert ckpt.state["deep"] == {"er": {}}
    assert ckpt.params["scale"].shape == ()
    assert ckpt.meta == meta
    assert ckpt.fcnn_version == fcnn.__version__


def test_round_trip_model_and_momentum_optimizer(tmp_path: Path) -> None:
    model = sequential(Conv2d(3, 3, name="first"), Conv2d(2, 3, stride=2, padding=1))
    params, state, _ = init(model, np.random.default_rng(0), (1, 9, 9))
    opt = sgd(0.1, momentum=0.9)
    opt_state = opt.init(params)
    grads = tree_map(lambda p: np.ones_like(p), params)
    updates, opt_state = opt.update(grads, opt_state, params)
    params = apply_updates(params, updates)
    assert state == {}

    path = tmp_path / "model.npz"
    save_checkpoint(
        path, params=params, state=state, opt_state=opt_state, meta={"model": model.spec}
    )
    ckpt = load_checkpoint(path)
    _assert_trees_equal(ckpt.params, params)
    assert ckpt.state == {}
    _assert_trees_equal(ckpt.opt_state, opt_state)
    assert ckpt.opt_state is not None and ckpt.opt_state["step"].dtype == np.int64
    assert ckpt.meta["model"] == json.loads(json.dumps(model.spec))
    # The spec rebuilds the same shapes: the loaded params fit freshly init-ed ones.
    fresh, _, _ = init(model, np.random.default_rng(1), (1, 9, 9))
    check_params_match(fresh, ckpt.params)
    check_params_match(zeros_like(opt_state), ckpt.opt_state, what="optimizer state")


def test_empty_optimizer_velocity_and_none(tmp_path: Path) -> None:
    params = {"w": np.ones((2, 2), np.float32)}
    path = tmp_path / "a.npz"
    save_checkpoint(
        path, params=params, state={}, opt_state={"step": np.asarray(0), "velocity": {}}
    )
    assert load_checkpoint(path).opt_state == {"step": 0, "velocity": {}}
    save_checkpoint(path, params=params, state={})
    ckpt = load_checkpoint(path)
    assert ckpt.opt_state is None and ckpt.meta == {}
    save_checkpoint(path, params={}, state={}, opt_state={})
    ckpt = load_checkpoint(path)
    assert (ckpt.params, ckpt.state, ckpt.opt_state) == ({}, {}, {})


def test_file_layout(tmp_path: Path) -> None:
    params, state, opt_state = _hand_trees(np.random.default_rng(0))
    path = tmp_path / "c.npz"
    save_checkpoint(path, params=params, state=state, opt_state=opt_state, meta={"epoch": 1})
    with np.load(path, allow_pickle=False) as z:
        names = set(z.files)
        raw = z["__meta__"]
    expected = {f"params/{k}" for k in flatten_dict(params)}
    expected |= {f"state/{k}" for k in flatten_dict(state)}
    expected |= {f"opt_state/{k}" for k in flatten_dict(opt_state)}
    assert names == expected | {"__meta__"}
    assert raw.dtype == np.uint8 and raw.ndim == 1
    header = json.loads(raw.tobytes().decode())
    assert header["format"] == "fcnn-checkpoint" and header["format_version"] == 1
    assert header["meta"] == {"epoch": 1}
    assert header["trees"]["state"]["empty"] == {}
    with zipfile.ZipFile(path) as zf:  # uncompressed, as documented
        assert {i.compress_type for i in zf.infolist()} == {zipfile.ZIP_STORED}


def test_path_without_npz_suffix_is_written_exactly(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint"
    save_checkpoint(str(path), params={"w": np.zeros(3)}, state={})
    assert sorted(os.listdir(tmp_path)) == ["checkpoint"]
    np.testing.assert_array_equal(load_checkpoint(path).params["w"], np.zeros(3))


def test_overwrite_replaces_and_keeps_permissions(tmp_path: Path) -> None:
    path = tmp_path / "c.npz"
    save_checkpoint(path, params={"w": np.zeros(3)}, state={})
    assert os.stat(path).st_mode & 0o777 == 0o644
    os.chmod(path, 0o600)
    save_checkpoint(path, params={"w": np.ones(2)}, state={})
    assert os.stat(path).st_mode & 0o777 == 0o600
    np.testing.assert_array_equal(load_checkpoint(path).params["w"], np.ones(2))
    assert os.listdir(tmp_path) == ["c.npz"]


# --- atomic writes -------------------------------------------------------------------------


def test_failed_write_keeps_old_checkpoint_and_leaves_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "c.npz"
    save_checkpoint(path, params={"w": np.arange(4.0)}, state={}, meta={"epoch": 1})
    before = path.read_bytes()

    def broken_savez(file: Any, *args: Any, **kwds: Any) -> None:
        file.write(b"PK\x03\x04 half a zip")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, params={"w": np.zeros(4)}, state={}, meta={"epoch": 2})
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["c.npz"]
    assert load_checkpoint(path).meta == {"epoch": 1}


def test_regression_a_full_disk_while_saving_did_not_say_the_checkpoint_was_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 24: the error named the file but not that the last checkpoint survived."""
    path = tmp_path / "c.npz"
    save_checkpoint(path, params={"w": np.arange(4.0)}, state={}, meta={"epoch": 1})
    before = path.read_bytes()

    def full_disk(file: Any, *args: Any, **kwds: Any) -> None:
        file.write(b"PK\x03\x04 half a zip")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(np, "savez", full_disk)
    with pytest.raises(OSError) as info:
        save_checkpoint(path, params={"w": np.zeros(4)}, state={}, meta={"epoch": 2})
    assert str(info.value) == (
        f"[Errno 28] No space left on device (the previous file is kept unchanged): '{path}'"
    )
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["c.npz"]
    with pytest.raises(OSError, match=r"\(nothing was written\): '.*new\.npz'"):
        save_checkpoint(tmp_path / "new.npz", params={}, state={})
    assert os.listdir(tmp_path) == ["c.npz"]


def test_failed_rename_leaves_no_temp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_replace(src: Any, dst: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path / "c.npz", params={"w": np.zeros(1)}, state={})
    assert os.listdir(tmp_path) == []


def test_invalid_input_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "c.npz"
    with pytest.raises(TypeError, match=r"meta\['norm'\]\['mean'\]\[0\].*numpy"):
        save_checkpoint(path, params={}, state={}, meta={"norm": {"mean": [np.float32(0.5)]}})
    with pytest.raises(TypeError, match=r"meta\['rng'\] is a builtins.object"):
        save_checkpoint(path, params={}, state={}, meta={"rng": object()})
    with pytest.raises(TypeError, match="keys must be str"):
        save_checkpoint(path, params={}, state={}, meta={"a": {1: 2}})
    with pytest.raises(ValueError, match=r"meta\['loss'\].*NaN"):
        save_checkpoint(path, params={}, state={}, meta={"loss": float("nan")})
    with pytest.raises(TypeError, match="params/conv1/w: leaves must be arrays"):
        save_checkpoint(path, params={"conv1": {"w": [1.0]}}, state={})
    with pytest.raises(TypeError, match="state/x: object arrays"):
        save_checkpoint(path, params={}, state={"x": np.array([None])})
    with pytest.raises(ValueError, match="without '/'"):
        save_checkpoint(path, params={"a/b": np.zeros(1)}, state={})
    with pytest.raises(TypeError, match="opt_state must be a dict"):
        save_checkpoint(path, params={}, state={}, opt_state=[np.zeros(1)])  # type: ignore[arg-type]
    assert os.listdir(tmp_path) == []


# --- refusing tampered files ---------------------------------------------------------------


def test_refuses_random_bytes(tmp_path: Path) -> None:
    path = tmp_path / "junk.npz"
    path.write_bytes(np.random.default_rng(0).bytes(256))
    with pytest.raises(CheckpointError, match=r"junk\.npz.*not a zip"):
        load_checkpoint(path)


def test_refuses_npy_file(tmp_path: Path) -> None:
    path = tmp_path / "a.npy"
    np.save(path, np.zeros(3))
    with pytest.raises(CheckpointError, match="not a zip"):
        load_checkpoint(path)


def test_missing_file_is_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "nope.npz")


def test_refuses_npz_without_meta(tmp_path: Path) -> None:
    path = tmp_path / "plain.npz"
    _save_raw(path, **{"params/w": np.zeros(2)})
    with pytest.raises(CheckpointError, match=r"plain\.npz.*no __meta__"):
        load_checkpoint(path)


def test_refuses_object_array_without_unpickling(tmp_path: Path) -> None:
    path = tmp_path / "obj.npz"
    obj = np.empty(1, dtype=object)
    obj[0] = {"evil": "payload"}
    with open(path, "wb") as f:
        np.savez(f, allow_pickle=True, **{"__meta__": _header(_good_header()), "params/w": obj})
    with pytest.raises(CheckpointError, match=r"obj\.npz.*'params/w'.*unpickling"):
        load_checkpoint(path)


@pytest.mark.parametrize(
    ("header", "match"),
    [
        (_good_header(format="not-fcnn"), "format marker 'not-fcnn'"),
        ({"some": "json"}, "format marker None"),
        ([1, 2], "format marker 'list'"),
        (_good_header(format_version=2), "format version 2.*reads format version 1"),
        (_good_header(format_version="1"), "unsupported format version '1'"),
        (_good_header(format_version=0), "unsupported format version 0"),
        (_good_header(fcnn_version=None), "fcnn_version"),
        (_good_header(meta=[1]), "'meta'"),
        (_good_header(trees={"params": {}}), "tree structures"),
        (_good_header(trees={"params": {"v": None}, "state": {}, "opt_state": None}), "missing"),
        (_good_header(trees={"params": {"w": 1}, "state": {}, "opt_state": None}), "malformed"),
    ],
)
def test_refuses_bad_headers(tmp_path: Path, header: Any, match: str) -> None:
    path = tmp_path / "bad.npz"
    _save_raw(path, **{"__meta__": _header(header), "params/w": np.zeros(2)})
    with pytest.raises(CheckpointError, match=r"bad\.npz") as info:
        load_checkpoint(path)
    assert info.match(match)


def test_refuses_malformed_json(tmp_path: Path) -> None:
    path = tmp_path / "bad.npz"
    _save_raw(path, __meta__=np.frombuffer(b'{"format": "fcnn-chec', dtype=np.uint8))
    with pytest.raises(CheckpointError, match=r"bad\.npz.*not valid UTF-8 JSON"):
        load_checkpoint(path)
    _save_raw(path, __meta__=np.frombuffer(b"\xff\xfe", dtype=np.uint8))
    with pytest.raises(CheckpointError, match="not valid UTF-8 JSON"):
        load_checkpoint(path)
    _save_raw(path, __meta__=np.zeros(3, dtype=np.int64))
    with pytest.raises(CheckpointError, match="not a uint8 byte array"):
        load_checkpoint(path)


def test_refuses_unknown_prefix(tmp_path: Path) -> None:
    path = tmp_path / "extra.npz"
    save_checkpoint(path, params={"w": np.zeros(2)}, state={})
    with np.load(path) as z:
        members = {k: z[k] for k in z.files}
    _save_raw(path, **members, **{"hooks/run": np.zeros(1), "params": np.zeros(1)})
    with pytest.raises(
        CheckpointError, match=r"extra\.npz.*unexpected entries \['hooks/run', 'params'\]"
    ):
        load_checkpoint(path)


def test_refuses_leaf_not_in_recorded_structure(tmp_path: Path) -> None:
    path = tmp_path / "c.npz"
    save_checkpoint(path, params={"w": np.zeros(2)}, state={})
    with np.load(path) as z:
        members = {k: z[k] for k in z.files}
    _save_raw(path, **members, **{"opt_state/step": np.asarray(1)})
    with pytest.raises(
        CheckpointError, match=r"opt_state entries.*unexpected \['opt_state/step'\]"
    ):
        load_checkpoint(path)


def test_refuses_non_npy_member(tmp_path: Path) -> None:
    path = tmp_path / "c.npz"
    save_checkpoint(path, params={"w": np.zeros(2)}, state={})
    with zipfile.ZipFile(path) as zf:
        members = {i.filename: zf.read(i) for i in zf.infolist()}
    members["params/w.npy"] = b"not an array"
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    with pytest.raises(CheckpointError, match=r"c\.npz.*'params/w' is not a \.npy array"):
        load_checkpoint(path)


def test_refuses_truncated_file(tmp_path: Path) -> None:
    path = tmp_path / "c.npz"
    save_checkpoint(path, params={"w": np.zeros(1000)}, state={})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"c\.npz.*not a zip"):
        load_checkpoint(path)


# --- check_params_match --------------------------------------------------------------------


def test_check_params_match_reports_every_problem() -> None:
    ref = {
        "conv1": {"w": np.zeros((8, 1, 3, 3), np.float32), "b": np.zeros(8, np.float32)},
        "conv2": {"w": np.zeros((4, 8, 3, 3), np.float32), "b": np.zeros(4, np.float32)},
        "bn": {"scale": np.zeros(4)},
    }
    loaded = {
        "conv1": {"w": np.zeros((8, 1, 5, 5), np.float32), "b": np.zeros(8, np.float64)},
        "conv3": {"w": np.zeros(1, np.float32)},
        "bn": np.zeros(4),
    }
    with pytest.raises(CheckpointError) as info:
        check_params_match(ref, loaded)
    msg = str(info.value)
    assert msg.startswith("params do not match the model")
    assert "missing in the file: conv2/w, conv2/b" in msg
    assert "not in the model: conv3/w" in msg
    assert "conv1/w: shape (8, 1, 3, 3) in the model, (8, 1, 5, 5) in the file" in msg
    assert "conv1/b: dtype float32 in the model, float64 in the file" in msg
    assert "bn: a dict in the model, an array in the file" in msg


def test_check_params_match_empty_dicts_and_ok() -> None:
    ref = {"step": np.asarray(0), "velocity": {}}
    check_params_match(ref, {"step": np.asarray(5), "velocity": {}}, what="optimizer state")
    with pytest.raises(
        CheckpointError, match=r"(?s)optimizer state do not match.*missing.*velocity/"
    ):
        check_params_match(ref, {"step": np.asarray(5)}, what="optimizer state")
    with pytest.raises(CheckpointError, match="not in the model: extra/"):
        check_params_match(ref, {**ref, "extra": {}})


def test_check_params_match_on_a_loaded_checkpoint(tmp_path: Path) -> None:
    small = sequential(Conv2d(8, 3, name="conv1"))
    big = sequential(Conv2d(8, 5, name="conv1"))
    params, state, _ = init(big, np.random.default_rng(0), (1, 12, 12))
    save_checkpoint(tmp_path / "c.npz", params=params, state=state, meta={"model": big.spec})
    ckpt = load_checkpoint(tmp_path / "c.npz")
    fresh, _, _ = init(small, np.random.default_rng(0), (1, 12, 12))
    with pytest.raises(
        CheckpointError, match=r"conv1/w: shape \(8, 1, 3, 3\) in the model, \(8, 1, 5, 5\)"
    ):
        check_params_match(fresh, ckpt.params)


# --- generator state -----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["PCG64", "PCG64DXSM", "Philox", "SFC64", "MT19937"])
def test_generator_state_round_trip_through_a_checkpoint(tmp_path: Path, name: str) -> None:
    bit_gen = getattr(np.random, name)(1234)
    rng = np.random.Generator(bit_gen)
    rng.standard_normal(7)
    rng.integers(0, 10, size=3, dtype=np.uint32)  # leaves a buffered half word
    save_checkpoint(tmp_path / "c.npz", params={}, state={}, meta={"rng": generator_state(rng)})
    restored = restore_generator(load_checkpoint(tmp_path / "c.npz").meta["rng"])
    assert type(restored.bit_generator).__name__ == name
    np.testing.assert_array_equal(restored.random(16), rng.random(16))
    np.testing.assert_array_equal(restored.integers(0, 1000, 16), rng.integers(0, 1000, 16))
    np.testing.assert_array_equal(restored.permutation(50), rng.permutation(50))


def test_generator_state_is_plain_json() -> None:
    state = generator_state(np.random.default_rng(5))
    assert json.loads(json.dumps(state)) == state
    assert state["bit_generator"] == "PCG64"
    assert state["state"]["state"] > 2**64  # a big int, kept exactly


def test_restore_generator_refuses_unknown_or_malformed() -> None:
    with pytest.raises(CheckpointError, match="unknown bit generator 'Xoshiro'"):
        restore_generator({"bit_generator": "Xoshiro", "state": {}})
    with pytest.raises(ValueError, match="unknown bit generator None"):
        restore_generator({})
    with pytest.raises(CheckpointError, match="malformed PCG64 state"):
        restore_generator({"bit_generator": "PCG64", "state": {"nope": 1}})
    with pytest.raises(TypeError, match="Generator"):
        generator_state(np.random.RandomState(0))  # type: ignore[arg-type]


def test_all_exports_exist() -> None:
    for name in fio.__all__:
        assert hasattr(fio, name), name


# --- hostile files: checked before anything is decompressed (issue 15) ----------------------


def _deflated_member(zf: zipfile.ZipFile, name: str, shape: tuple[int, ...]) -> None:
    """Add ``name`` to ``zf``: a ``.npy`` of float32 zeros, deflated, written in chunks."""
    with zf.open(name, "w", force_zip64=True) as f:
        np.lib.format.write_array_header_1_0(
            f, {"descr": "<f4", "fortran_order": False, "shape": shape}
        )
        chunk = bytes(1 << 22)
        for _ in range(int(np.prod(shape)) * 4 // len(chunk)):
            f.write(chunk)


def _bomb(tmp_path: Path, values: int) -> Path:
    """A valid checkpoint whose ``params/w`` (two values) is replaced by ``values`` float32
    zeros that deflate to about a thousandth of their size."""
    path = tmp_path / "bomb.npz"
    save_checkpoint(tmp_path / "good.npz", params={"w": np.zeros(2, np.float32)}, state={})
    with (
        zipfile.ZipFile(tmp_path / "good.npz") as src,
        zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as dst,
    ):
        for info in src.infolist():
            if info.filename == "params/w.npy":
                _deflated_member(dst, info.filename, (values,))
            else:
                dst.writestr(info.filename, src.read(info))
    return path


def test_regression_a_deflate_bomb_was_inflated_before_its_shape_was_checked(
    tmp_path: Path,
) -> None:
    """Issue 15: a 5.5 MB file inflated to 2.1 GB before the loader noticed its shapes
    were wrong. With ``expected=`` the declared shape is compared first: the 256 MB
    member is refused from its ``.npy`` header, and the loading process barely grows."""
    path = _bomb(tmp_path, 64 * 2**20)
    assert path.stat().st_size < 2 * 2**20
    with pytest.raises(CheckpointError, match=r"w: shape \(2,\) in the model, \(67108864,\)"):
        load_checkpoint(path, expected={"params": {"w": np.zeros(2, np.float32)}})
    setup = (
        "import numpy as np\nfrom fcnn.io import CheckpointError, load_checkpoint\n"
        f"path = {str(path)!r}\nlike = {{'params': {{'w': np.zeros(2, np.float32)}}}}\n"
    )
    action = "try:\n    load_checkpoint(path, expected=like)\nexcept CheckpointError:\n    pass"
    grown = peak_growth(setup, action)
    assert grown < 16 * 2**20, f"peak grew by {grown / 2**20:.0f} MiB"


def test_a_member_whose_declared_size_is_not_its_size_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.npz"
    save_checkpoint(path, params={"w": np.zeros(4)}, state={})
    with zipfile.ZipFile(path) as z:
        members = {i.filename: z.read(i) for i in z.infolist()}
    # The header claims 5 values, the data holds 4.
    members["params/w.npy"] = members["params/w.npy"].replace(b"(4,)", b"(5,)")
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    with pytest.raises(CheckpointError, match=r"'params/w' declares \(5,\) float64 \(40 bytes\)"):
        load_checkpoint(path)


def test_load_checkpoint_expected_checks_every_tree_it_names(tmp_path: Path) -> None:
    path = tmp_path / "c.npz"
    params, state, _ = _hand_trees(np.random.default_rng(0))
    save_checkpoint(path, params=params, state=state)
    ckpt = load_checkpoint(path, expected={"params": params, "state": state})
    _assert_trees_equal(ckpt.params, params)
    with pytest.raises(CheckpointError, match=r"c\.npz.*has no optimizer state saved"):
        load_checkpoint(path, expected={"opt_state": {}})
    with pytest.raises(CheckpointError, match=r"(?s)c\.npz.*state do not match.*bn1/mean"):
        load_checkpoint(path, expected={"state": {**state, "bn1": {"count": np.asarray(7)}}})
    with pytest.raises(ValueError, match=r"unknown trees \['model'\]"):
        load_checkpoint(path, expected={"model": params})


def test_read_checkpoint_header_reads_declared_shapes_only(tmp_path: Path) -> None:
    path = _bomb(tmp_path, 2**20)
    header = fio.read_checkpoint_header(path)
    assert header.meta == {} and header.fcnn_version == fcnn.__version__
    assert header.members["params/w"].shape == (2**20,)
    assert header.members["params/w"].dtype == np.float32
    assert header.members["params/w"].stored_bytes < 2**20


def _with_meta(tmp_path: Path, meta: bytes) -> Path:
    path = tmp_path / "m.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z, z.open("__meta__.npy", "w") as f:
        np.lib.format.write_array(f, np.frombuffer(meta, np.uint8))
    return path


@pytest.mark.parametrize(
    ("meta", "match"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "nested more than 64 levels"),
        (b"[" * (fio.MAX_META_DEPTH + 1) + b"]" * (fio.MAX_META_DEPTH + 1), "more than 64 levels"),
        (b'{"format": "\xff"}', "not valid UTF-8 JSON"),
        (b'{"a": 1' + b"0" * 5000 + b"}", "not valid UTF-8 JSON"),  # int over 4300 digits
    ],
)
def test_regression_an_unparsable_header_was_a_traceback(
    tmp_path: Path, meta: bytes, match: str
) -> None:
    """Issue 15: deep JSON ended every command line in a RecursionError. Any header that
    cannot be parsed is now the usual one-line CheckpointError naming the file."""
    path = _with_meta(tmp_path, meta)
    for read in (load_checkpoint, fio.read_checkpoint_header):
        with pytest.raises(CheckpointError, match=rf"m\.npz.*{match}"):
            read(path)


def test_regression_a_huge_header_was_read_before_it_was_checked(tmp_path: Path) -> None:
    """Issue 15: the header's size was unbounded; a 64 MB one (64 kB compressed) was
    read and decoded whole. Its declared size is now refused before its bytes are read."""
    path = _with_meta(tmp_path, b'{"format": "fcnn-checkpoint", "x": "' + b"x" * 2**26 + b'"}')
    with pytest.raises(
        CheckpointError, match=r"__meta__ holds 67108902 bytes; the limit is 8388608"
    ):
        load_checkpoint(path)
    setup = f"from fcnn.io import CheckpointError, load_checkpoint\npath = {str(path)!r}\n"
    action = "try:\n    load_checkpoint(path)\nexcept CheckpointError:\n    pass"
    grown = peak_growth(setup, action)
    assert grown < 16 * 2**20, f"peak grew by {grown / 2**20:.0f} MiB"
