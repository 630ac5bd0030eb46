"""train.py (fcnn.train) end to end, in-process and small: every dataset, checkpoints, the
run folder, resume, guards. Every test runs in its tmp_path (runs/ is written there)."""

from __future__ import annotations

import csv
import json
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import (
    SHARED_MNIST,
    fake_cifar10,
    interrupt_at_epoch,
    needs_shared_mnist,
    same_tree,
    without_timing,
)

import fcnn
import fcnn.run
from fcnn import train
from fcnn.io import load_checkpoint, save_checkpoint
from fcnn.models import load_trained

pytestmark = pytest.mark.usefixtures("in_tmp_path")

FAST = ["--model", "small", "--limit-train", "256", "--batch-size", "64", "--quiet"]


def run(*argv: str) -> int:
    return train.main(list(argv))


def test_default_dataset_trains_and_writes_everything(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    ckpt, metrics, plot = tmp_path / "m.npz", tmp_path / "sub" / "m.csv", tmp_path / "c.png"
    code = run(
        *FAST,
        "--epochs",
        "2",
        "--save",
        str(ckpt),
        "--metrics",
        str(metrics),
        "--plot",
        str(plot),
        "--limit-train",
        "1024",
        "--batch-size",
        "32",
        "--lr",
        "0.003",
    )
    assert code == 0
    rows = list(csv.DictReader(metrics.open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert float(rows[1]["test_acc"]) > 0.5  # 10 classes: far above chance after 64 steps
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    trained = load_trained(ckpt)
    assert trained.meta["dataset"] == "digits-sample" and trained.meta["epoch"] == 2
    assert trained.meta["config"]["augment"] == 2  # the digits preset shifts images
    assert trained.classes == tuple("0123456789") and trained.input_shape == (1, 28, 28)
    probs = trained.predict_proba(np.zeros((3, 1, 28, 28), np.float32))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


def test_lines_jsonl_metrics(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    metrics = tmp_path / "m.jsonl"
    assert run("--dataset", "lines", *FAST, "--epochs", "2", "--metrics", str(metrics)) == 0
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert set(rows[0]) >= {"train_loss", "test_loss", "test_acc", "lr"}
    assert "done: test accuracy" in capsys.readouterr().out


@needs_shared_mnist
def test_mnist_from_data_dir(tmp_path: Path) -> None:
    ckpt = tmp_path / "m.npz"
    args = ("--dataset", "mnist", "--data-dir", str(SHARED_MNIST.parent), *FAST, "--epochs", "1")
    assert run(*args, "--save", str(ckpt)) == 0
    assert load_checkpoint(ckpt).meta["dataset"] == "mnist"


def test_cifar10_from_a_small_local_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_cifar10(tmp_path, monkeypatch)
    ckpt = tmp_path / "c.npz"
    code = run(
        "--dataset",
        "cifar10",
        "--data-dir",
        str(tmp_path),
        "--model",
        "small",
        "--epochs",
        "1",
        "--quiet",
        "--save",
        str(ckpt),
    )
    assert code == 0
    meta = load_checkpoint(ckpt).meta
    assert meta["input_shape"] == [3, 32, 32] and len(meta["normalization"]["mean"]) == 3
    assert (meta["config"]["augment"], meta["config"]["flip"]) == (4, 0.5)  # crops and flips


def test_same_seed_same_result(tmp_path: Path) -> None:
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    for path in (a, b):
        assert (
            run("--dataset", "lines", *FAST, "--epochs", "2", "--seed", "7", "--save", str(path))
            == 0
        )
    ca, cb = load_checkpoint(a), load_checkpoint(b)
    assert same_tree(ca.params, cb.params)
    assert without_timing(ca.meta["history"]) == without_timing(cb.meta["history"])
    c = tmp_path / "c.npz"
    assert run("--dataset", "lines", *FAST, "--epochs", "2", "--seed", "8", "--save", str(c)) == 0
    assert not same_tree(ca.params, load_checkpoint(c).params)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_resume_equals_uninterrupted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, optimizer: str
) -> None:
    whole, part = tmp_path / "whole.npz", tmp_path / "part.npz"
    common = ("--dataset", "lines", *FAST, "--optimizer", optimizer, "--epochs", "3")
    assert run(*common, "--save", str(whole)) == 0
    with monkeypatch.context() as m:
        interrupt_at_epoch(m, 2)
        assert run(*common, "--save", str(part)) == 130
    assert load_checkpoint(part).meta["epoch"] == 1
    assert run("--resume", str(part), "--quiet") == 0
    cw, cp = load_checkpoint(whole), load_checkpoint(part)
    assert cp.meta["epoch"] == 3
    assert same_tree(cw.params, cp.params)
    assert cw.opt_state is not None and cp.opt_state is not None
    assert same_tree(cw.opt_state, cp.opt_state)
    assert without_timing(cw.meta["history"]) == without_timing(cp.meta["history"])


def test_resume_refuses_a_contradicting_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = tmp_path / "m.npz"
    assert run("--dataset", "lines", *FAST, "--epochs", "1", "--save", str(ckpt)) == 0
    assert run("--resume", str(ckpt), "--epochs", "2", "--lr", "0.5") == 1
    assert "--lr 0.5 contradicts the checkpoint" in capsys.readouterr().err


def test_resume_refuses_a_file_that_is_not_a_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bogus = tmp_path / "bogus.npz"
    np.savez(bogus, x=np.zeros(3))
    assert run("--resume", str(bogus)) == 1
    err = capsys.readouterr().err
    assert err.startswith("error:") and "bogus.npz" in err and "Traceback" not in err


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning", "ignore:invalid:RuntimeWarning")
def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = tmp_path / "m.npz"
    assert run("--dataset", "lines", *FAST, "--epochs", "1", "--save", str(ckpt)) == 0
    before = ckpt.read_bytes()
    code = run(
        "--dataset",
        "lines",
        *FAST,
        "--optimizer",
        "sgd",
        "--lr",
        "1e12",
        "--epochs",
        "3",
        "--save",
        str(ckpt),
        "--overwrite",  # another run's file: replaced only when said so
    )
    assert code == 1
    err = capsys.readouterr().err
    assert "training loss is nan" in err or "training loss is inf" in err
    assert ckpt.read_bytes() == before


def test_ctrl_c_stops_cleanly_after_saving_finished_epochs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    interrupt_at_epoch(monkeypatch, 2)
    ckpt = tmp_path / "m.npz"
    assert run("--dataset", "lines", *FAST, "--epochs", "3", "--save", str(ckpt)) == 130
    assert "interrupted during epoch 2; resume from" in capsys.readouterr().err
    assert load_checkpoint(ckpt).meta["epoch"] == 1


@pytest.mark.parametrize(
    "argv",
    [
        ["--epochs", "0"],
        ["--batch-size", "-1"],
        ["--lr", "nan"],
        ["--dataset", "imagenet"],
        ["--model", "huge"],
        ["--limit-train", "0"],
        ["--augment", "-1"],
        ["--seed", "-1"],
        ["--dataset", "lines", "--augment", "28"],  # issue 24: a traceback after loading
        ["--augment", "28"],  # digits-sample, 28x28 too
        ["--dataset", "cifar10", "--augment", "32"],
    ],
)
def test_bad_flags_exit_2(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as info:
        train.parse_args(argv)
    assert info.value.code == 2


def test_plot_without_matplotlib_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # As if not installed: every matplotlib module, also those earlier tests imported.
    for name in ["matplotlib", *(m for m in sys.modules if m.startswith("matplotlib."))]:
        monkeypatch.setitem(sys.modules, name, None)
    code = run("--dataset", "lines", *FAST, "--epochs", "1", "--plot", str(tmp_path / "p.png"))
    assert code == 1
    assert 'pip install "fcnn[plot]"' in capsys.readouterr().err


def test_regression_plot_used_pyplot_and_switched_the_global_backend(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--plot draws on a bare Figure: pyplot is never imported, the backend never set."""
    matplotlib = pytest.importorskip("matplotlib")
    backend = matplotlib.rcParams._get_backend_or_none()
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)  # importing it now fails
    plot = tmp_path / "p.png"
    code = run("--dataset", "lines", *FAST, "--epochs", "1", "--plot", str(plot))
    assert code == 0
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert matplotlib.rcParams._get_backend_or_none() == backend


# --- regressions from review: every user error is one line and exit 1, never a traceback ----


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning", "ignore:invalid:RuntimeWarning")
def test_regression_nan_test_loss_after_the_last_step_was_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One step per epoch: the step's own loss is finite, the params it leaves are not.

    The message names the epoch, not a 'batch 2' after the epoch's only batch.
    """
    code = run(
        "--dataset", "lines", "--limit-train", "64", "--batch-size", "64", "--epochs", "3",
        "--optimizer", "sgd", "--lr", "1e6", "--quiet", "--save", str(tmp_path / "m.npz"),
    )  # fmt: skip
    assert code == 1
    err = capsys.readouterr().err
    assert re.match(r"error: epoch \d: test loss is (nan|inf) after the epoch's updates", err)
    assert "batch" not in err and err.count("\n") == 1


def test_regression_batch_norm_crashed_on_a_final_batch_of_one(tmp_path: Path) -> None:
    ckpt = tmp_path / "m.npz"
    code = run(
        "--dataset", "lines", "--model", "bn", "--limit-train", "65", "--batch-size", "64",
        "--epochs", "1", "--quiet", "--save", str(ckpt), "--metrics", str(tmp_path / "m.csv"),
    )  # fmt: skip
    assert code == 0
    assert load_checkpoint(ckpt).meta["epoch"] == 1


def test_regression_corrupt_data_file_was_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "mnist").mkdir()
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                 "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):  # fmt: skip
        (tmp_path / "mnist" / f"{name}.gz").write_bytes(b"\x1f\x8b\x08\x00 truncated")
    assert run("--dataset", "mnist", "--data-dir", str(tmp_path), "--quiet") == 1
    err = capsys.readouterr().err
    assert err.startswith("error:") and "train-images-idx3-ubyte.gz" in err


def test_unwritable_output_fails_before_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def no_training(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("training started")

    monkeypatch.setattr(fcnn, "train_epoch", no_training)
    (tmp_path / "afile").write_text("not a folder")
    target = tmp_path / "afile" / "m.npz"
    assert run("--dataset", "lines", *FAST, "--save", str(target)) == 1
    assert f"cannot write {target}" in capsys.readouterr().err


@pytest.mark.parametrize("flag", ["--save", "--metrics", "--plot"])
def test_regression_output_path_that_is_a_directory_failed_only_after_training(
    flag: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def no_training(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("training started")

    monkeypatch.setattr(fcnn, "train_epoch", no_training)
    target = tmp_path / "out"
    target.mkdir()
    assert run("--dataset", "lines", *FAST, flag, str(target)) == 1
    err = capsys.readouterr().err
    assert err == f"error: cannot write {target}: it is a directory; give a file path\n"
    assert list(target.iterdir()) == [] and list(tmp_path.iterdir()) == [target]  # no probe left


def test_regression_resume_then_save_elsewhere_named_a_missing_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    first, other = tmp_path / "first.npz", tmp_path / "other.npz"
    assert run("--dataset", "lines", *FAST, "--epochs", "1", "--save", str(first)) == 0
    interrupt_at_epoch(monkeypatch, 1)
    assert run("--resume", str(first), "--epochs", "2", "--save", str(other), "--quiet") == 130
    assert f"resume from {first} (epoch 1)" in capsys.readouterr().err
    assert not other.exists()


def _with_pooling_3x3(path: Path) -> None:
    """Rewrite the checkpoint at ``path`` as if its first pooling had been 3×3 (padding 1,
    stride 2): the same parameter shapes as the code's 2×2 pooling, another model."""
    ckpt = load_checkpoint(path)
    meta = json.loads(json.dumps(ckpt.meta))
    pool = meta["model"]["spec"]["layers"][2]
    assert pool["type"] == "MaxPool2d" and pool["window"] == [2, 2]
    pool["window"], pool["padding"] = [3, 3], [[1, 1], [1, 1]]
    save_checkpoint(path, params=ckpt.params, state=ckpt.state, opt_state=ckpt.opt_state, meta=meta)


def test_resume_rebuilds_the_stored_spec_not_what_the_registry_builds_now(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 23: the checkpoint's spec is the model. A registry entry edited since (here:
    'small' with 12 filters) and a stored spec that is not what the name builds (3×3
    pooling) both resume as saved; issue 21's refusal of such a checkpoint is gone."""
    import fcnn.models

    ckpt = tmp_path / "m.npz"
    assert run("--dataset", "lines", *FAST, "--epochs", "1", "--save", str(ckpt)) == 0
    _with_pooling_3x3(ckpt)
    saved_spec = load_checkpoint(ckpt).meta["model"]["spec"]
    edited = fcnn.models.ModelInfo(
        lambda k, impl: fcnn.sequential(fcnn.Conv2d(12, 3), fcnn.Flatten(), fcnn.Dense(k)), "new"
    )
    monkeypatch.setitem(fcnn.models.MODELS, "small", edited)
    assert run("--resume", str(ckpt), "--epochs", "2", "--quiet") == 0
    resumed = load_checkpoint(ckpt)
    assert resumed.meta["epoch"] == 2 and resumed.meta["model"]["spec"] == saved_spec
    assert resumed.params["conv1"]["w"].shape == (8, 1, 3, 3)  # the saved model's, not 12
    assert load_trained(ckpt).model.spec["layers"][2]["window"] == [3, 3]


def _with_unknown_layer(path: Path) -> None:
    """Rewrite the checkpoint at ``path`` with a layer type no fcnn has (a later version's,
    say): its spec cannot be rebuilt."""
    ckpt = load_checkpoint(path)
    meta = json.loads(json.dumps(ckpt.meta))
    meta["model"]["spec"]["layers"][1]["type"] = "Swish"
    save_checkpoint(path, params=ckpt.params, state=ckpt.state, opt_state=ckpt.opt_state, meta=meta)


def test_regression_resume_checked_the_stored_spec_after_loading_the_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = tmp_path / "m.npz"
    assert run("--dataset", "lines", *FAST, "--epochs", "1", "--save", str(ckpt)) == 0
    _with_unknown_layer(ckpt)

    def no_loading(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the dataset was loaded (or downloaded) before the spec check")

    monkeypatch.setattr(fcnn.run, "load_dataset", no_loading)
    monkeypatch.setattr(fcnn.run, "init", no_loading)
    assert run("--resume", str(ckpt), "--epochs", "2", "--quiet") == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {ckpt}: cannot resume: its model cannot be rebuilt: ")
    assert "relu1: unknown layer type 'Swish'" in err and err.count("\n") == 1
    assert load_checkpoint(ckpt).meta["epoch"] == 1  # untouched


def test_resume_refuses_a_checkpoint_with_another_number_of_classes_than_its_data(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from fcnn.models import describe_model

    ckpt = tmp_path / "m.npz"
    assert run("--dataset", "lines", *FAST, "--epochs", "1", "--save", str(ckpt)) == 0
    saved = load_checkpoint(ckpt)
    k = saved.meta["model"]["num_classes"]
    meta = {**saved.meta, "model": describe_model("small", k + 1)}
    save_checkpoint(
        ckpt, params=saved.params, state=saved.state, opt_state=saved.opt_state, meta=meta
    )
    assert run("--resume", str(ckpt), "--epochs", "2", "--quiet") == 1
    err = capsys.readouterr().err
    assert err == f"error: {ckpt}: cannot resume: its model has {k + 1} classes, lines has {k}\n"


def test_regression_train_built_each_model_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fcnn.models

    built: list[str] = []
    real = fcnn.models.build_model

    def counting_build(name: str, *args: Any) -> Any:
        built.append(name)
        return real(name, *args)

    monkeypatch.setattr(fcnn.models, "build_model", counting_build)
    ckpt = tmp_path / "m.npz"
    assert run("--dataset", "lines", *FAST, "--epochs", "1", "--save", str(ckpt)) == 0
    assert built == ["small"]
    assert run("--resume", str(ckpt), "--epochs", "2", "--quiet") == 0
    assert built == ["small"]  # the resumed run's model is rebuilt from its spec (issue 23)


def test_resume_refuses_a_checkpoint_without_training_metadata(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bare.npz"
    params = {"w": np.zeros(2, np.float32)}
    save_checkpoint(path, params=params, state={}, opt_state={}, meta={"config": {}})
    assert run("--resume", str(path)) == 1
    err = capsys.readouterr().err
    assert "cannot resume" in err and "'rng'" in err


def test_data_dir_that_is_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    afile = tmp_path / "data.txt"
    afile.write_text("x")
    assert run("--dataset", "mnist", "--data-dir", str(afile), "--quiet") == 1
    assert "is a file" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("batch_size", 0, "--batch-size must be >= 1, got 0"),
        ("epochs", -3, "--epochs must be >= 1, got -3"),
        ("optimizer", "rmsprop", "--optimizer must be one of"),
        ("lr", "fast", "--lr must be a number, got 'fast'"),
        ("limit_train", 1.5, "--limit-train must be an integer, got 1.5"),
        ("colour", "red", "unknown settings ['colour']"),
    ],
)
def test_resume_validates_the_stored_config_like_the_flags(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], key: str, value: Any, message: str
) -> None:
    """A tampered stored config is refused in one line, as the same flag would be (it once
    ended --resume in a ZeroDivisionError for batch_size 0)."""
    ckpt = tmp_path / "m.npz"
    assert run("--dataset", "lines", *FAST, "--epochs", "1", "--save", str(ckpt)) == 0
    good = load_checkpoint(ckpt)
    meta = {**good.meta, "config": {**good.meta["config"], key: value}}
    save_checkpoint(ckpt, params=good.params, state=good.state, opt_state=good.opt_state, meta=meta)
    capsys.readouterr()
    assert run("--resume", str(ckpt), "--epochs", "2", "--quiet") == 1
    err = capsys.readouterr().err
    assert err.startswith("error:") and "cannot resume" in err and message in err
    assert "Traceback" not in err and err.count("\n") == 1


def test_save_refuses_to_overwrite_another_runs_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--save once silently replaced the checkpoint of a different run."""
    ckpt = tmp_path / "m.npz"
    assert run("--dataset", "lines", *FAST, "--epochs", "1", "--save", str(ckpt)) == 0
    before = ckpt.read_bytes()
    capsys.readouterr()
    assert (
        run("--dataset", "lines", *FAST, "--epochs", "1", "--seed", "3", "--save", str(ckpt)) == 1
    )
    err = capsys.readouterr().err
    assert err.startswith("error:") and "--overwrite" in err and f"--resume {ckpt}" in err
    assert ckpt.read_bytes() == before
    # resuming it (it is this run's own) is fine, and so is saying --overwrite
    assert run("--resume", str(ckpt), "--epochs", "2", "--quiet") == 0
    args = ("--dataset", "lines", *FAST, "--epochs", "1", "--seed", "3")
    assert run(*args, "--save", str(ckpt), "--overwrite") == 0
    assert load_checkpoint(ckpt).meta["config"]["seed"] == 3


def test_ctrl_c_in_the_first_epoch_with_save_says_none_was_saved_yet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """It used to say "no checkpoint was saved (use --save)" when --save was given."""
    interrupt_at_epoch(monkeypatch, 1)
    ckpt = tmp_path / "m.npz"
    assert run("--dataset", "lines", *FAST, "--epochs", "2", "--save", str(ckpt)) == 130
    err = capsys.readouterr().err
    assert "no checkpoint was saved yet" in err and str(ckpt) in err and "use --save" not in err
    assert not ckpt.exists()


def test_batch_norm_with_batch_size_1_is_refused_up_front(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """--model bn --batch-size 1 ended in a traceback from inside batch norm."""
    argv = ("--model", "bn", "--limit-train", "64", "--batch-size", "1", "--quiet")
    assert run(*argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("error:") and "batch norm" in err and "--batch-size 2" in err
    assert "Traceback" not in err and err.count("\n") == 1


def test_batch_size_larger_than_the_training_set_is_reported(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The header used to report the flag's value while the batches were clamped."""
    argv = ("--dataset", "lines", "--model", "small", "--limit-train", "50", "--epochs", "1")
    assert run(*argv, "--batch-size", "64") == 0
    out = capsys.readouterr().out
    assert "batch 50 (the whole training set; --batch-size 64 is larger)" in out
    assert "1 epoch\n" in out and "after 1 epoch " in out and "1 epochs" not in out


def test_plot_writes_the_format_its_extension_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--plot x.jpg once wrote PNG bytes into a .jpg file; an unknown extension is refused
    before any training."""
    pytest.importorskip("matplotlib")
    jpg = tmp_path / "curves.jpg"
    assert run("--dataset", "lines", *FAST, "--epochs", "1", "--plot", str(jpg)) == 0
    assert jpg.read_bytes()[:3] == b"\xff\xd8\xff"  # JPEG, not PNG
    capsys.readouterr()
    bad = tmp_path / "curves.bmpx"
    assert run("--dataset", "lines", *FAST, "--epochs", "1", "--plot", str(bad)) == 1
    captured = capsys.readouterr()
    assert "'.bmpx' names no image format" in captured.err and "epoch 1" not in captured.out


def test_resume_refuses_a_deflate_bomb_before_inflating_it(tmp_path: Path) -> None:
    """Issue 15: --resume read every array of a 5.5 MB file (2.1 GB inflated) before
    comparing shapes. Now the header is read first and each member's declared shape is
    compared with the model's before any data is decompressed."""
    import zipfile

    from measure import peak_growth

    good, bomb = tmp_path / "good.npz", tmp_path / "bomb.npz"
    assert run("--dataset", "lines", *FAST, "--epochs", "1", "--save", str(good)) == 0
    values = 64 * 2**20  # 256 MiB of float32 zeros in place of conv1/w
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            if info.filename != "params/conv1/w.npy":
                dst.writestr(info.filename, src.read(info))
                continue
            with dst.open(info.filename, "w", force_zip64=True) as f:
                header = {"descr": "<f4", "fortran_order": False, "shape": (values,)}
                np.lib.format.write_array_header_1_0(f, header)
                for _ in range(values * 4 // (1 << 22)):
                    f.write(bytes(1 << 22))
    assert bomb.stat().st_size < 2 * 2**20
    setup = "import sys\nfrom fcnn import train\nsys.stderr = open('/dev/null', 'w')"
    action = f"code = train.main(['--resume', {str(bomb)!r}, '--quiet'])\nassert code == 1, code"
    grown = peak_growth(setup, action)
    assert grown < 64 * 2**20, f"peak grew by {grown / 2**20:.0f} MiB"


# --- issue 21: the run folder, the entry points, 0.2.0 checkpoints, the recorded data ----


def test_without_save_every_run_gets_a_new_numbered_folder_and_says_where(
    in_tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """python train.py trained for a minute and saved nothing; a second run must not
    destroy the first's."""
    argv = ("--dataset", "lines", *FAST, "--epochs", "1")
    assert run(*argv) == 0
    assert run(*argv, "--seed", "1") == 0
    out = capsys.readouterr().out
    first, second = in_tmp_path / "runs" / "lines-1", in_tmp_path / "runs" / "lines-2"
    for folder in (first, second):
        assert sorted(p.name for p in folder.iterdir()) == ["metrics.csv", "model.npz"]
        assert f"checkpoint {Path('runs') / folder.name / 'model.npz'}" in out
    assert load_checkpoint(first / "model.npz").meta["config"]["seed"] == 0
    assert load_checkpoint(second / "model.npz").meta["config"]["seed"] == 1
    # resuming a run folder's checkpoint keeps that folder's metrics up to date
    assert run("--resume", str(first / "model.npz"), "--epochs", "2", "--quiet") == 0
    assert [r["epoch"] for r in csv.DictReader((first / "metrics.csv").open())] == ["1", "2"]
    assert sorted(p.name for p in (in_tmp_path / "runs").iterdir()) == ["lines-1", "lines-2"]


def test_no_save_writes_nothing(in_tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run("--dataset", "lines", *FAST, "--epochs", "1", "--no-save") == 0
    assert list(in_tmp_path.iterdir()) == []
    assert "checkpoint" not in capsys.readouterr().out
    assert run("--no-save", "--save", "m.npz") == 1
    assert "give --save PATH or --no-save, not both" in capsys.readouterr().err


def test_metrics_and_plot_replace_a_file_only_with_overwrite_or_on_resume(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    metrics, ckpt = tmp_path / "m.csv", tmp_path / "m.npz"
    metrics.write_text("someone else's\n")
    argv = ("--dataset", "lines", *FAST, "--epochs", "1", "--save", str(ckpt))
    assert run(*argv, "--metrics", str(metrics)) == 1
    assert f"--metrics {metrics} already exists; pass --overwrite" in capsys.readouterr().err
    assert metrics.read_text() == "someone else's\n" and not ckpt.exists()
    assert run(*argv, "--metrics", str(metrics), "--overwrite") == 0
    assert run("--resume", str(ckpt), "--epochs", "2", "--metrics", str(metrics), "--quiet") == 0
    assert [r["epoch"] for r in csv.DictReader(metrics.open())] == ["1", "2"]


def test_python_m_fcnn_train_the_script_and_the_console_entry_are_one_main(
    tmp_path: Path,
) -> None:
    import importlib.metadata
    import subprocess
    import tomllib

    root = Path(__file__).resolve().parents[1]
    scripts = tomllib.loads((root / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["fcnn-train"] == "fcnn.train:main"
    entry = importlib.metadata.entry_points(group="console_scripts", name="fcnn-train")
    assert [e.load() for e in entry] == [train.main], "an old install: pip install -e . again"
    for argv in (["-m", "fcnn.train"], [str(root / "train.py")]):
        args = [*argv, "--dataset", "lines", "--epochs", "1", "--limit-train", "64", "--quiet"]
        done = subprocess.run(
            [sys.executable, *args], cwd=tmp_path, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        assert "done: test accuracy" in done.stdout and "runs/lines-" in done.stdout


@pytest.mark.parametrize("name", ["v0.2.0-lines-small.npz", "v0.2.0-digits-fast.npz"])
def test_a_checkpoint_written_by_0_2_0_resumes(name: str, tmp_path: Path) -> None:
    ckpt = tmp_path / name
    ckpt.write_bytes((Path(__file__).parent / "fixtures" / name).read_bytes())
    old = load_checkpoint(ckpt)
    assert run("--resume", str(ckpt), "--epochs", "2", "--quiet") == 0
    new = load_checkpoint(ckpt)
    assert new.meta["epoch"] == 2 and new.meta["history"][0] == old.meta["history"][0]
    assert new.meta["normalization"] == old.meta["normalization"]
    assert new.meta["config"] == {**old.meta["config"], "epochs": 2}


def test_the_data_folder_is_recorded_and_used_again_on_resume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_cifar10(tmp_path, monkeypatch)
    ckpt = tmp_path / "c.npz"
    argv = ("--dataset", "cifar10", "--model", "small", "--epochs", "1", "--quiet")
    assert run(*argv, "--data-dir", str(tmp_path), "--save", str(ckpt)) == 0
    assert load_checkpoint(ckpt).meta["data_dir"] == str(tmp_path)
    assert load_trained(ckpt).record.data_dir == str(tmp_path)  # type: ignore[union-attr]
    monkeypatch.setenv("FCNN_DATA_DIR", str(tmp_path / "elsewhere"))  # not where the data is
    assert run("--resume", str(ckpt), "--epochs", "2", "--quiet") == 0
    assert load_checkpoint(ckpt).meta["epoch"] == 2


# --- issue 24: hostile checkpoints and a checkpoint path two runs want ----------------------


def _tampered(path: Path, meta: Any = None, nan_at: str | None = None) -> None:
    """Rewrite the checkpoint at ``path`` with ``meta(old_meta)`` as its metadata and, with
    ``nan_at`` (a params path), a NaN in that array."""
    ckpt = load_checkpoint(path)
    params = fcnn.flatten_dict(ckpt.params)
    if nan_at is not None:
        params[nan_at] = params[nan_at].copy()
        params[nan_at].flat[0] = np.nan
    new_meta = meta(json.loads(json.dumps(ckpt.meta))) if meta else ckpt.meta
    save_checkpoint(
        path,
        params=fcnn.unflatten_dict(params),
        state=ckpt.state,
        opt_state=ckpt.opt_state,
        meta=new_meta,
    )


def _set(**fields: Any) -> Any:
    return lambda meta: {**meta, **fields}


HOSTILE = {
    "std-underflows-float32": (
        _set(normalization={"mean": [0.1], "std": [1e-300]}),
        r"normalization std\[0\] must be a finite number > 0 \(in float32\), got 1e-300",
    ),
    "three-channels": (
        _set(input_shape=[3, 28, 28], normalization={"mean": [0.1] * 3, "std": [0.3] * 3}),
        r"input_shape \[3, 28, 28\] is not the shape of lines images",
    ),
    "malformed-generator": (
        lambda m: {**m, "rng": {**m["rng"], "state": {"state": "x", "inc": 1}}},
        "rng is not a generator state",
    ),
    "odd-history-rows": (_set(history=[{"epoch": 1}]), "history row 1 must hold"),
    "epoch-minus-5": (_set(epoch=-5), "epoch must be an integer >= 0, got -5"),
    "epoch-past-the-run": (_set(epoch=7), "epoch 7 is past the run's 1 epoch"),
    "augment-past-the-image": (
        lambda m: {**m, "config": {**m["config"], "augment": 28}},
        "its stored config: --augment must be < 28",
    ),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_regression_resume_of_a_tampered_field_was_a_traceback_or_trained_on(
    case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 24: each ended --resume in a traceback (KeyError, normalize, random_shift, the
    generator after the data was loaded) or was taken (an epoch past the run's). Now one
    line names the field, before any data is loaded."""
    ckpt = tmp_path / "m.npz"
    assert run("--dataset", "lines", *FAST, "--epochs", "1", "--save", str(ckpt)) == 0
    change, message = HOSTILE[case]
    _tampered(ckpt, change)
    before = ckpt.read_bytes()

    def no_loading(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the dataset was loaded before the checkpoint was checked")

    monkeypatch.setattr(fcnn.run, "load_dataset", no_loading)
    capsys.readouterr()
    assert run("--resume", str(ckpt), "--epochs", "3", "--quiet") == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {ckpt}: cannot resume: ") and err.count("\n") == 1, err
    assert re.search(message, err), err
    assert ckpt.read_bytes() == before


def test_regression_nan_parameters_were_served_and_resumed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 24: NaN weights gave "probability": null from the server and "nan%" from
    inference_example; now load_trained (every reader) and --resume refuse them, naming
    the array."""
    import inference_example
    from fcnn.io import CheckpointError
    from fcnn.visualize import main as visualize

    ckpt = tmp_path / "m.npz"
    assert run("--dataset", "lines", *FAST, "--epochs", "1", "--save", str(ckpt)) == 0
    _tampered(ckpt, nan_at="dense1/b")
    what = "params/dense1/b holds 1 NaN or infinite value (of 2); the checkpoint cannot be used"
    with pytest.raises(CheckpointError, match=re.escape(f"{ckpt}: {what}")):
        load_trained(ckpt)
    capsys.readouterr()
    assert run("--resume", str(ckpt), "--epochs", "2", "--quiet") == 1
    assert capsys.readouterr().err == f"error: {ckpt}: cannot resume: {what}\n"
    assert inference_example.main([str(ckpt), "--samples", "2"]) == 1
    assert visualize([str(ckpt), "--out", str(tmp_path / "pictures")]) == 1
    assert capsys.readouterr().err == f"error: {ckpt}: {what}\n" * 2


def test_regression_two_runs_with_the_same_new_save_path_both_exited_0(tmp_path: Path) -> None:
    """Issue 24: started together, both trained and both exited 0, and the file held one
    run. Now the second to claim the path is refused at start (exit 1, in seconds) and the
    file holds the run that finished."""
    import subprocess
    import time

    root = Path(__file__).resolve().parents[1]

    def start(seed: int) -> subprocess.Popen[str]:
        argv = ["--dataset", "lines", "--epochs", "3", "--quiet", "--seed", str(seed)]
        return subprocess.Popen(
            [sys.executable, str(root / "train.py"), *argv, "--save", "s.npz"],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    t0 = time.monotonic()
    procs = [start(1), start(2)]
    ended = []
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        ended.append((proc.returncode, time.monotonic() - t0, err))
    codes = sorted(code for code, _, _ in ended)
    assert codes == [0, 1], ended
    winner = [code for code, _, _ in ended].index(0) + 1
    loser = ended[2 - winner]
    assert "error: --save s.npz is being written by another run (pid " in loser[2] or (
        "already exists" in loser[2]  # the winner had finished before the loser started
    ), loser
    assert load_checkpoint(tmp_path / "s.npz").meta["config"]["seed"] == winner
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.npz"]  # no marker left


def test_the_claim_refuses_a_second_run_before_any_work_and_ends_with_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Held while a run trains (here: a claim taken as another run would hold it), let go
    however the run ends: done, Ctrl-C, an error."""
    from fcnn.run import claim_path, release

    ckpt, marker = tmp_path / "m.npz", tmp_path / ".m.npz.lock"
    other = claim_path(str(ckpt))
    with monkeypatch.context() as m:
        m.setattr(fcnn.run, "load_dataset", lambda *a, **k: pytest.fail("data was loaded"))
        assert run("--dataset", "lines", *FAST, "--save", str(ckpt)) == 1
        assert "is being written by another run" in capsys.readouterr().err
        assert run("--resume", str(ckpt)) == 1  # resuming it too: it writes the same file
        assert "error: --resume " in capsys.readouterr().err
    release(other)
    with monkeypatch.context() as m:
        interrupt_at_epoch(m, 2)
        assert run("--dataset", "lines", *FAST, "--epochs", "3", "--save", str(ckpt)) == 130
    assert not marker.exists()
    assert run("--dataset", "lines", *FAST, "--epochs", "1", "--save", str(ckpt)) == 1  # exists
    assert not marker.exists()
    assert run("--resume", str(ckpt), "--epochs", "2", "--quiet") == 0
    assert not marker.exists() and load_checkpoint(ckpt).meta["epoch"] == 2


def test_resume_refuses_fewer_epochs_than_the_checkpoint_has_done(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--epochs 1 on a run that did 2 printed "done ... after 1 epoch" and wrote nothing."""
    ckpt = tmp_path / "m.npz"
    assert run("--dataset", "lines", *FAST, "--epochs", "2", "--save", str(ckpt)) == 0
    capsys.readouterr()
    assert run("--resume", str(ckpt), "--epochs", "1") == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: --epochs 1 is fewer than the 2 epochs {ckpt} has done; ")
    assert err.endswith("give --epochs 2 or more\n") and err.count("\n") == 1
