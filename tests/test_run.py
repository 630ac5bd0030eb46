"""fcnn.run as library code: the run record (the one reader and writer of checkpoint
metadata), checkpoints of fcnn 0.2.0, the run folder, outputs, metrics, the recorded data
folder, and shift_augment's border."""

from __future__ import annotations

import csv
import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import fake_cifar10

import fcnn
from fcnn.cli import CliError
from fcnn.data.augment import random_shift, shift_augment
from fcnn.io import check_finite, read_checkpoint_header
from fcnn.models import describe_model
from fcnn.run import (
    IMAGE_SHAPES,
    METRICS,
    Options,
    Outputs,
    RunConfig,
    RunRecord,
    check_outputs,
    claim_path,
    claim_run_folder,
    has_layer,
    load_test_set,
    read_resume,
    release,
    write_metrics,
)

FIXTURES = Path(__file__).parent / "fixtures"
OLD = sorted(FIXTURES.glob("v0.2.0-*.npz"))


def _row(epoch: int, test_acc: float) -> dict[str, Any]:
    """A history row as train.py writes it."""
    return {key: 0.5 for key in METRICS} | {"epoch": epoch, "test_acc": test_acc}


def _record(**changes: Any) -> RunRecord:
    base = RunRecord(
        model=describe_model("small", 2),
        input_shape=(1, 28, 28),
        classes=("vertical", "horizontal"),
        mean=(0.25,),
        std=(0.5,),
        dataset="lines",
        config=RunConfig(dataset="lines", model="small"),
        epoch=3,
        rng=dict(np.random.default_rng(0).bit_generator.state),
        history=(_row(1, 0.5), _row(2, 0.625), _row(3, 0.75)),
    )
    return RunRecord(**{**base.__dict__, **changes})


def test_the_record_round_trips_through_json_meta() -> None:
    record = _record(data_dir="/data")
    meta = json.loads(json.dumps(record.to_meta()))  # as a checkpoint stores it
    assert RunRecord.from_meta(meta, resume=True) == record
    assert record.test_accuracy == 0.75 and _record(history=()).test_accuracy is None
    bare = RunRecord(record.model, (1, 28, 28), ("a", "b"), (0.0,), (1.0,))
    assert set(bare.to_meta()) == {"model", "input_shape", "classes", "normalization", "history"}


@pytest.mark.parametrize("path", OLD, ids=lambda p: p.name)
def test_a_checkpoint_of_fcnn_0_2_0_reads_as_a_record_and_writes_back_the_same(path: Path) -> None:
    meta = read_checkpoint_header(path).meta
    record = RunRecord.from_meta(meta, resume=True)
    assert record.config is not None and record.epoch == 1 and record.data_dir is None
    assert record.to_meta() == meta  # no key of 0.2.0 lost or changed


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("input_shape", [1, 28], "input_shape must be a list of 3 positive ints"),
        ("input_shape", [1, 0, 28], "input_shape must be a list of 3 positive ints"),
        ("classes", [], "classes must be a non-empty list"),
        ("normalization", {"mean": [0.1, 0.2], "std": [1, 1]}, "mean must be a list of 1 number"),
        ("normalization", {"mean": [0.1], "std": [0.0]}, r"std\[0\] must be a finite number > 0"),
        ("normalization", {"mean": [0.1]}, "normalization must be an object with mean and std"),
        ("normalization", {"mean": {"a": 1}, "std": ["x"]}, "mean must be a list of 1 number"),
        ("model", "small", "model must be an object"),
        ("dataset", 3, "dataset must be a string, got 3"),
        ("epoch", -1, "epoch must be an integer >= 0, got -1"),
        ("epoch", True, "epoch must be an integer, got True"),
        ("history", [1, 2], "history row 1 must be an object of finite numbers, got 1"),
        ("rng", [1], r"rng must be an object, got \[1\]"),
        ("classes", ["a", 2], "classes must be a non-empty list of strings"),
        ("dataset", "mnist", "dataset 'mnist' is not its config's 'lines'"),
    ],
)
def test_from_meta_names_a_malformed_field(key: str, value: Any, message: str) -> None:
    meta = {**_record().to_meta(), key: value}
    with pytest.raises(ValueError, match=message):
        RunRecord.from_meta(meta)


def test_resuming_needs_more_than_inference_and_a_config_it_can_read() -> None:
    meta = _record().to_meta()
    inference_only = {k: v for k, v in meta.items() if k not in ("config", "epoch", "rng")}
    assert RunRecord.from_meta(inference_only).config is None
    with pytest.raises(ValueError, match=r"missing \['config', 'epoch', 'rng'\]"):
        RunRecord.from_meta(inference_only, resume=True)
    newer = {**meta, "config": {**meta["config"], "device": "gpu"}}  # a later version's setting
    assert RunRecord.from_meta(newer).config is None  # inference needs none of it
    with pytest.raises(ValueError, match=r"its stored config: unknown settings \['device'\]"):
        RunRecord.from_meta(newer, resume=True)


def test_read_resume_says_what_a_checkpoint_lacks(tmp_path: Path) -> None:
    from fcnn.io import CheckpointError, save_checkpoint

    path = tmp_path / "no-opt.npz"
    save_checkpoint(path, params={"w": np.zeros(2)}, state={}, meta=_record().to_meta())
    with pytest.raises(CheckpointError, match="has no optimizer state to resume from"):
        read_resume(str(path))
    header, record = read_resume(str(OLD[0]))
    assert record.dataset == header.meta["dataset"]


def test_run_folders_are_numbered_and_never_shared(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    first, second = (claim_run_folder("mnist", str(root)) for _ in range(2))
    assert (Path(first).name, Path(second).name) == ("mnist-1", "mnist-2")
    (root / "mnist-4").mkdir()  # someone's own folder: the next number after the count
    assert Path(claim_run_folder("mnist", str(root))).name == "mnist-5"
    assert Path(claim_run_folder("lines", str(root))).name == "lines-1"
    (tmp_path / "afile").write_text("x")
    with pytest.raises(CliError, match="cannot make a run folder in"):
        claim_run_folder("mnist", str(tmp_path / "afile"))


def test_outputs_are_never_replaced_without_overwrite_except_a_resumed_runs_own(
    tmp_path: Path,
) -> None:
    metrics, ckpt = tmp_path / "m.csv", tmp_path / "m.npz"
    metrics.write_text("epoch\n")
    ckpt.write_bytes(b"")
    outputs = Outputs(str(ckpt), str(metrics), None)
    with pytest.raises(CliError, match=r"--save .*m.npz already exists; continue that run with"):
        check_outputs(outputs, Options())
    with pytest.raises(CliError, match=r"--metrics .*m.csv already exists; pass --overwrite"):
        check_outputs(Outputs(None, str(metrics), None), Options())
    check_outputs(outputs, Options(overwrite=True))
    check_outputs(outputs, Options(resume=str(ckpt)))  # the run being continued rewrites both
    with pytest.raises(CliError, match=r"--save .* already exists"):
        check_outputs(outputs, Options(resume=str(tmp_path / "other.npz")))
    with pytest.raises(ValueError, match="--save PATH or --no-save, not both"):
        Options(save="x.npz", no_save=True)


def test_metrics_are_csv_or_json_lines(tmp_path: Path) -> None:
    rows = [{"epoch": 1, "test_acc": 0.5}, {"epoch": 2, "test_acc": 0.75}]
    write_metrics(str(tmp_path / "m.csv"), rows)
    write_metrics(str(tmp_path / "m.jsonl"), rows)
    with (tmp_path / "m.csv").open() as f:
        assert [dict(r) for r in csv.DictReader(f)] == [
            {"epoch": "1", "test_acc": "0.5"},
            {"epoch": "2", "test_acc": "0.75"},
        ]
    lines = (tmp_path / "m.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == rows


def test_the_test_set_comes_from_the_recorded_folder_unless_one_is_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 21: visualize and inference_example --samples failed for an MNIST checkpoint
    because it did not remember where its data was."""
    fake_cifar10(tmp_path, monkeypatch)
    record = _record(
        input_shape=(3, 32, 32),
        mean=(0.5,) * 3,
        std=(0.25,) * 3,
        dataset="cifar10",
        data_dir=str(tmp_path),
        classes=tuple("abcdefghij"),
    )
    assert load_test_set(record).x_test.shape == (8, 3, 32, 32)
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setattr("fcnn.run.load_dataset", _no_download)
    with pytest.raises(CliError, match="cannot load the 'cifar10' test set"):
        load_test_set(record, str(empty))  # a folder given wins over the recorded one
    with pytest.raises(CliError, match=r"images are \(1, 28, 28\); the checkpoint wants"):
        load_test_set(_record(input_shape=(1, 8, 8)))
    with pytest.raises(CliError, match="does not name its dataset"):
        load_test_set(_record(dataset=None))


def _no_download(name: str, data_dir: Any = None, **kwargs: Any) -> Any:
    from fcnn.data.registry import load_dataset

    return load_dataset(name, data_dir, download=False, **kwargs)


def test_shift_augment_fills_with_the_normalised_background(rng: np.random.Generator) -> None:
    """train_epoch's docs once suggested random_shift as augment, whose fill=0.0 is the
    wrong border for normalised images: shift_augment's border is right by construction."""
    mean, std = np.array([0.1, 0.2, 0.3], np.float32), np.array([0.5, 0.25, 2.0], np.float32)
    x = np.full((16, 3, 6, 6), 7.0, np.float32)
    out = shift_augment(2, mean, std)(x, np.random.default_rng(1))
    border = -mean / std
    for c in range(3):
        assert set(np.unique(out[:, c])) <= {np.float32(7.0), np.float32(border[c])}
    assert (out != 7.0).any()  # some image moved
    same = random_shift(x, 2, np.random.default_rng(1), fill=border.astype(np.float32))
    np.testing.assert_array_equal(out, same)
    white = shift_augment(1, mean, std, background=1.0)(x, rng)
    assert np.float32((1.0 - mean[0]) / std[0]) in np.unique(white[:, 0])


def test_set_up_and_save_write_the_record_a_resume_reads_back(tmp_path: Path) -> None:
    """Library use, no command line: set_up, save after epoch 0, read it back."""
    from dataclasses import replace

    from fcnn.io import load_checkpoint
    from fcnn.parallel import Ranks
    from fcnn.run import save, set_up

    ckpt = tmp_path / "m.npz"
    given = {"dataset": "lines", "limit_train": 64, "epochs": 1}
    run, progress = set_up(given, Options(save=str(ckpt), quiet=True), Ranks())
    assert (run.config.model, run.config.optimizer) == ("small", "sgd")  # the lines preset
    saved = save(run, progress)
    assert saved.saved == f"{ckpt} (epoch 0)" and run.outputs.metrics is None
    _, record = read_resume(str(ckpt))
    assert record == replace(run.record, epoch=0, rng=record.rng)
    assert load_checkpoint(ckpt).meta == record.to_meta()
    with pytest.raises(CliError, match=r"--save .* already exists"):
        set_up(given, Options(save=str(ckpt)), Ranks())


# --- issue 24: every stored field checked as its flag is, in one line naming it -------------


@pytest.mark.parametrize(
    ("normalization", "message"),
    [
        (
            {"mean": [0.1], "std": [1e-300]},
            r"std\[0\] must be a finite number > 0 \(in float32\), got 1e-300",
        ),
        (
            {"mean": [1e300], "std": [1.0]},
            r"mean\[0\] must be a finite number \(in float32\), got 1e\+300",
        ),
        ({"mean": [0.5], "std": [1e-39]}, r"std\[0\] 1e-39 is too small for mean\[0\] 0.5"),
        ({"mean": [float("nan")], "std": [1.0]}, r"mean\[0\] must be a finite number"),
        ({"mean": [0.1], "std": [float("inf")]}, r"std\[0\] must be a finite number > 0"),
        ({"mean": "abc", "std": [1.0]}, "mean must be a list of 1 number"),
        ({"mean": [[0.1], [0.2, 0.3]], "std": [1.0]}, "mean must be a list of 1 number"),
        ({"mean": [0.1], "std": [True]}, "std must be a list of 1 number"),
    ],
)
def test_regression_normalization_that_float32_cannot_hold_was_a_traceback(
    normalization: dict[str, Any], message: str
) -> None:
    """A std of 1e-300 passed the float64 check, became 0 in float32, and --resume,
    inference_example and visualize ended in normalize's traceback."""
    meta = {**_record().to_meta(), "normalization": normalization}
    with pytest.raises(ValueError, match=message):
        RunRecord.from_meta(meta)


def test_a_wrong_channel_count_is_named_by_input_shape() -> None:
    """Three channels throughout (input_shape and normalization) on a lines checkpoint: the
    resume ended in normalize's traceback after the data was loaded."""
    meta = {
        **_record().to_meta(),
        "input_shape": [3, 28, 28],
        "normalization": {"mean": [0.1] * 3, "std": [0.3] * 3},
    }
    with pytest.raises(ValueError, match=r"input_shape \[3, 28, 28\] is not the shape of lines"):
        RunRecord.from_meta(meta, resume=True)
    # for inference a model may take other inputs (load_test_set says so if asked for samples)
    assert RunRecord.from_meta(meta).input_shape == (3, 28, 28)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"epoch": 11}, "epoch 11 is past the run's 10 epochs"),
        ({"history": [_row(1, 0.5), _row(2, 0.5)]}, "history has 2 rows for 3 epochs done"),
        ({"history": [_row(1, 0.5), _row(3, 0.5), _row(2, 0.5)]}, "history row 2 must hold"),
        ({"history": [_row(1, 0.5), _row(2, 0.5), {"epoch": 3}]}, "history row 3 must hold"),
        ({"history": [_row(1, 0.5), _row(2, 0.5), _row(3, float("nan"))]}, "history row 3 must be"),
        ({"rng": {"bit_generator": "PCG64", "state": {"state": "x", "inc": 1}}}, "rng is not a "),
        ({"rng": {"bit_generator": "Mersenne"}}, "rng is not a generator state"),
    ],
)
def test_regression_resume_trusted_the_stored_epoch_history_and_generator(
    change: dict[str, Any], message: str
) -> None:
    """Odd history rows ended --resume in a KeyError after training; a malformed generator
    state was found after the data was loaded; an epoch past the run's total was taken."""
    meta = {**_record().to_meta(), **change}
    with pytest.raises(ValueError, match=message):
        RunRecord.from_meta(meta, resume=True)
    if "rng" in change:  # inference needs no generator: left out, as an unreadable config is
        assert RunRecord.from_meta(meta).rng is None


def test_a_stored_config_is_checked_as_the_flags_are_also_for_settings_that_must_fit() -> None:
    """--augment 28 on lines (28x28 images) ended in random_shift's traceback after the data
    was loaded; now the flags (exit 2) and a stored config (resume) refuse it up front."""
    with pytest.raises(ValueError, match=r"--augment must be < 28 for lines \(28x28 images\)"):
        RunConfig(dataset="lines", augment=28)
    assert RunConfig(dataset="cifar10", augment=31).augment == 31
    meta = _record().to_meta()
    meta = {**meta, "config": {**meta["config"], "augment": 28}}
    with pytest.raises(ValueError, match="its stored config: --augment must be < 28"):
        RunRecord.from_meta(meta, resume=True)


def test_image_shapes_are_the_datasets_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """IMAGE_SHAPES checks settings before any data is loaded: it must say what loading says."""
    from fcnn.data import DATASETS, load_dataset

    fake_cifar10(tmp_path, monkeypatch)
    assert set(IMAGE_SHAPES) == set(DATASETS)
    for name in ("lines", "digits-sample", "cifar10"):
        assert load_dataset(name, tmp_path, download=False).input_shape == IMAGE_SHAPES[name]
    assert IMAGE_SHAPES["mnist"] == IMAGE_SHAPES["digits-sample"]  # the sample is MNIST's


def test_check_finite_names_the_first_array_with_nan_or_inf() -> None:
    from fcnn.io import CheckpointError

    good = {"conv1": {"w": np.ones((2, 2), np.float32)}, "step": np.array(3)}
    check_finite({"params": good, "state": {}, "opt_state": None}, "m.npz")
    bad = {"conv1": {"w": np.array([[1.0, np.nan], [np.inf, 1.0]], np.float32)}}
    with pytest.raises(CheckpointError, match=r"^m.npz: state/conv1/w holds 2 NaN or infinite"):
        check_finite({"params": good, "state": bad}, "m.npz")


# --- issue 24: one run at a time writes a checkpoint -----------------------------------------


def test_a_claimed_checkpoint_path_is_refused_to_a_second_run_until_released(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "sub" / "m.npz")
    first = claim_path(path)  # the folder is made, as --save makes it
    marker = tmp_path / "sub" / ".m.npz.lock"
    assert marker.read_text().startswith(f"pid {os.getpid()} on ")
    with pytest.raises(
        CliError,
        match=rf"--save {re.escape(path)} is being written by another run \(pid {os.getpid()} on ",
    ):
        claim_path(path)  # another open file, as another process would have
    release(first)
    assert not marker.exists()
    release(claim_path(path, "--resume"))


def test_a_marker_left_by_a_killed_run_blocks_nothing(tmp_path: Path) -> None:
    """kill -9 leaves the marker, but the lock ends with the process that held it."""
    import subprocess
    import sys

    path = tmp_path / "m.npz"
    hold = (
        "import sys, time\nfrom fcnn.run import claim_path\n"
        f"claim_path({str(path)!r})\nprint('held', flush=True)\ntime.sleep(600)"
    )
    proc = subprocess.Popen([sys.executable, "-c", hold], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "held\n"
        with pytest.raises(CliError, match=f"pid {proc.pid} on"):
            claim_path(str(path))
    finally:
        proc.kill()
        proc.wait()
    assert (tmp_path / ".m.npz.lock").exists()  # left behind by the killed run ...
    release(claim_path(str(path)))  # ... and taken over at once


def test_without_flock_the_claim_is_the_markers_exclusive_creation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where fcntl is missing (Windows), a killed run's marker has to be removed by hand:
    the message says which file."""
    monkeypatch.setattr("fcnn.run._HAVE_FLOCK", False)
    path = str(tmp_path / "m.npz")
    claim = claim_path(path)
    with pytest.raises(CliError, match=r"if no run is writing it, remove .*\.m\.npz\.lock$"):
        claim_path(path)
    release(claim)
    release(claim_path(path))


def test_run_folders_claimed_at_the_same_time_are_all_different(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    root = str(tmp_path / "runs")
    with ThreadPoolExecutor(8) as pool:
        folders = list(pool.map(lambda _: claim_run_folder("lines", root), range(16)))
    assert sorted(Path(f).name for f in folders) == sorted(f"lines-{n}" for n in range(1, 17))


def test_has_layer_sees_inside_residual_and_concat() -> None:
    # Regression: has_layer walked only a Sequential's layers, so batch norm or dropout
    # inside a residual block or a concat branch went unseen (a model with batch norm only
    # in its residual blocks then trained with --batch-size 1 instead of being refused).
    bn_in_block = fcnn.sequential(
        fcnn.Conv2d(4, 3, padding=1),
        fcnn.residual(fcnn.sequential(fcnn.Conv2d(4, 3, padding=1), fcnn.BatchNorm2d())),
    )
    bn_in_shortcut = fcnn.residual(
        fcnn.Conv2d(4, 1), fcnn.sequential(fcnn.Conv2d(4, 1), fcnn.BatchNorm2d())
    )
    dropout_in_branch = fcnn.concat(
        fcnn.sequential(fcnn.Conv2d(2, 1), fcnn.SpatialDropout2d(0.5)), fcnn.Conv2d(2, 1)
    )
    assert has_layer(bn_in_block.spec, "BatchNorm")
    assert has_layer(bn_in_shortcut.spec, "BatchNorm")
    assert has_layer(dropout_in_branch.spec, "Dropout")
    assert not has_layer(bn_in_block.spec, "Dropout")
    assert not has_layer(dropout_in_branch.spec, "BatchNorm")
