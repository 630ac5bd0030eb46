"""inference_example.py in-process: image files, dataset samples, --show, and clean failures."""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import SHARED_MNIST, needs_shared_mnist, train_on_digits

import fcnn
import inference_example
from fcnn.data import load_digits_sample
from fcnn.data.images import load_image
from fcnn.io import save_checkpoint
from fcnn.models import build_model, describe_model, load_trained

# One output line: a name, then (class, percentage) pairs, then maybe the truth.
GUESS = re.compile(r"(\S+)\s+(\d+\.\d)%")


def _meta(
    name: str, classes: Sequence[str], input_shape: Sequence[int], dataset: str, mean: Any, std: Any
) -> dict[str, Any]:
    return {
        "model": describe_model(name, len(classes)),
        "input_shape": list(input_shape),
        "classes": list(classes),
        "dataset": dataset,
        "normalization": {"mean": [float(m) for m in mean], "std": [float(s) for s in std]},
        "epoch": 1,
        "config": {"ignored": True},  # keys the script does not know are ignored
    }


def _untrained(
    path: Path, classes: Sequence[str], input_shape: Sequence[int], dataset: str
) -> Path:
    """A checkpoint of a freshly initialised small model."""
    model = build_model("small", len(classes))
    params, state, _ = fcnn.init(model, np.random.default_rng(1), tuple(input_shape))
    c = input_shape[0]
    meta = _meta("small", classes, input_shape, dataset, [0.5] * c, [0.25] * c)
    save_checkpoint(path, params=params, state=state, meta=meta)
    return path


@pytest.fixture(scope="module")
def digits_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small model after two quick epochs on 1,000 embedded digits (about 87% right)."""
    run = train_on_digits("small", 1000, epochs=2, lr=3e-3, seed=7)
    ds = load_digits_sample()
    path = tmp_path_factory.mktemp("ckpt") / "digits.npz"
    meta = _meta("small", ds.classes, ds.input_shape, "digits-sample", run.mean, run.std)
    save_checkpoint(path, params=run.params, state=run.state, meta=meta)
    return path


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = inference_example.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _write_paper_digit(path: Path, digit: np.ndarray[Any, Any]) -> None:
    """The digit as dark ink on white paper, three times the size, as a PNG or JPEG."""
    from PIL import Image

    big = np.repeat(np.repeat(1.0 - digit, 3, axis=0), 3, axis=1)
    Image.fromarray(np.round(big * 255).astype(np.uint8)).save(path)


# --- image files --------------------------------------------------------------------------


def test_image_files_print_top_classes_matching_predict_proba(
    digits_ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("PIL")
    trained = load_trained(digits_ckpt)
    ds = load_digits_sample()
    probs = trained.predict_proba(ds.x_test[:50])
    # Two digits the model gets right with confidence, of different classes.
    confident = [i for i in range(50) if probs[i].max() > 0.9 and probs[i].argmax() == ds.y_test[i]]
    first = confident[0]
    second = next(i for i in confident if ds.y_test[i] != ds.y_test[first])
    paths = [tmp_path / "a.png", tmp_path / "b.jpg"]
    for path, i in zip(paths, (first, second), strict=True):
        _write_paper_digit(path, ds.x_test[i, 0])

    code, out, err = _run(capsys, "--checkpoint", str(digits_ckpt), *map(str, paths))
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert len(lines) == 2
    for line, path, i in zip(lines, paths, (first, second), strict=True):
        assert line.startswith(str(path))
        guesses = GUESS.findall(line[len(str(path)) :])
        assert len(guesses) == 3  # --top defaults to 3
        assert guesses[0][0] == ds.classes[ds.y_test[i]]
        expected = trained.predict_proba(load_image(path, trained.input_shape)[None])[0]
        best = np.argsort(-expected, kind="stable")[:3]
        assert [g[0] for g in guesses] == [trained.classes[j] for j in best]
        np.testing.assert_allclose([float(g[1]) for g in guesses], 100 * expected[best], atol=0.06)


def test_top_k_is_capped_at_the_number_of_classes(
    digits_ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("PIL")
    path = tmp_path / "d.png"
    _write_paper_digit(path, load_digits_sample().x_test[0, 0])
    for k, shown in (("1", 1), ("5", 5), ("50", 10)):
        code, out, _ = _run(capsys, "--checkpoint", str(digits_ckpt), "--top", k, str(path))
        assert code == 0
        assert len(GUESS.findall(out)) == shown


def test_colour_model_reads_rgb_images(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    Image = pytest.importorskip("PIL.Image")
    classes = [f"c{i}" for i in range(10)]
    ckpt = _untrained(tmp_path / "rgb.npz", classes, (3, 32, 32), "cifar10")
    pixels = np.random.default_rng(5).integers(0, 256, (48, 40, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "photo.png")
    code, out, err = _run(capsys, "--checkpoint", str(ckpt), str(tmp_path / "photo.png"))
    assert code == 0 and err == ""
    assert len(GUESS.findall(out)) == 3 and all(g[0] in classes for g in GUESS.findall(out))


# --- dataset samples ------------------------------------------------------------------------


def test_samples_from_the_embedded_digits_show_the_truth(
    digits_ckpt: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _run(capsys, "--checkpoint", str(digits_ckpt))
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert len(lines) == inference_example.DEFAULT_SAMPLES + 1
    ds = load_digits_sample()
    right = 0
    for line in lines[:-1]:
        m = re.match(r"test #(\d+)\s+(.*)\(true (\S+): (ok|WRONG)\)$", line)
        assert m is not None, line
        index, truth, verdict = int(m[1]), m[3], m[4]
        assert truth == ds.classes[ds.y_test[index]]
        top = GUESS.findall(m[2])
        assert len(top) == 3
        assert verdict == ("ok" if top[0][0] == truth else "WRONG")
        right += verdict == "ok"
    assert lines[-1] == f"{right}/{len(lines) - 1} correct"
    assert right >= 5  # the model is about 87% right

    # The seed picks the samples: the same seed, the same output; another, others.
    assert _run(capsys, "--checkpoint", str(digits_ckpt))[1] == out
    other = _run(capsys, "--checkpoint", str(digits_ckpt), "--seed", "1", "--samples", "3")[1]
    assert len(other.splitlines()) == 4 and other.splitlines()[0] != lines[0]


def test_samples_of_generated_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = _untrained(tmp_path / "lines.npz", ["vertical", "horizontal"], (1, 28, 28), "lines")
    code, out, err = _run(capsys, "--checkpoint", str(ckpt), "--samples", "5", "--top", "2")
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert len(lines) == 6 and lines[-1].endswith("/5 correct")
    assert all(re.search(r"\(true (vertical|horizontal): (ok|WRONG)\)$", ln) for ln in lines[:5])


@needs_shared_mnist
def test_samples_of_mnist_from_data_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = _untrained(tmp_path / "mnist.npz", [str(d) for d in range(10)], (1, 28, 28), "mnist")
    argv = ["--checkpoint", str(ckpt), "--samples", "2", "--data-dir", str(SHARED_MNIST)]
    code, out, err = _run(capsys, *argv)
    assert code == 0 and err == ""
    assert len(out.splitlines()) == 3


# --- --show ---------------------------------------------------------------------------------


def test_show_writes_a_png_grid(
    digits_ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("matplotlib")
    grid = tmp_path / "out" / "grid.png"
    grid.parent.mkdir()
    argv = ["--checkpoint", str(digits_ckpt), "--samples", "10", "--show", str(grid)]
    code, out, err = _run(capsys, *argv)
    assert code == 0 and err == ""
    assert out.splitlines()[-1] == f"saved {grid}"
    assert grid.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in grid.parent.iterdir()] == ["grid.png"]  # no temporary left
    pil = pytest.importorskip("PIL.Image")
    with pil.open(grid) as im:
        width, height = im.size
    assert width > height > 100  # two rows of eight


def test_show_into_a_missing_folder_fails_cleanly(
    digits_ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("matplotlib")
    target = tmp_path / "nowhere" / "grid.png"
    code, _, err = _run(capsys, "--checkpoint", str(digits_ckpt), "--show", str(target))
    assert code == 1
    # Issue 13: the shared path check's wording (fcnn.paths), before any work.
    assert err == f"error: cannot write {target}: the folder {target.parent} does not exist\n"


def test_show_without_matplotlib_says_how_to_install(
    digits_ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: Any
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    argv = ["--checkpoint", str(digits_ckpt), "--show", str(tmp_path / "g.png")]
    code, out, err = _run(capsys, *argv)
    assert code == 1 and out == ""
    assert err == 'error: --show needs matplotlib: pip install "fcnn[plot]"\n'


# --- failures ---------------------------------------------------------------------------------


def _one_error_line(err: str) -> str:
    assert err.startswith("error: ") and err.endswith("\n") and "Traceback" not in err
    return err


def test_missing_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(capsys, "--checkpoint", str(tmp_path / "none.npz"))
    assert code == 1 and out == ""
    missing = tmp_path / "none.npz"  # issue 13: the shared wording of fcnn.paths
    assert _one_error_line(err) == f"error: cannot read checkpoint {missing}: no such file\n"


def test_bad_checkpoints_exit_non_zero_with_a_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    not_zip = tmp_path / "text.npz"
    not_zip.write_text("not a checkpoint")
    code, out, err = _run(capsys, "--checkpoint", str(not_zip))
    assert code == 1 and out == ""
    assert "not a zip" in _one_error_line(err)

    no_meta = tmp_path / "bare.npz"
    save_checkpoint(no_meta, params={}, state={}, meta={"epoch": 1})
    code, out, err = _run(capsys, "--checkpoint", str(no_meta))
    assert code == 1 and out == ""
    assert "not a trained-model checkpoint" in _one_error_line(err)


def test_unknown_dataset_asks_for_image_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = _untrained(tmp_path / "odd.npz", ["a", "b"], (1, 28, 28), "somewhere-else")
    code, out, err = _run(capsys, "--checkpoint", str(ckpt))
    assert code == 1 and out == ""
    assert "'somewhere-else'" in _one_error_line(err)


def test_unreadable_images_exit_non_zero_with_a_message(
    digits_ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("PIL")
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    code, out, err = _run(capsys, "--checkpoint", str(digits_ckpt), str(text))
    assert code == 1 and out == ""
    assert "not a readable image" in _one_error_line(err)

    missing = tmp_path / "missing.png"
    code, out, err = _run(capsys, "--checkpoint", str(digits_ckpt), str(missing))
    assert code == 1 and out == ""
    assert (
        _one_error_line(err) == f"error: cannot read image '{missing}': No such file or directory\n"
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["a.png", "--samples", "3"],  # files or samples, not both
        ["--samples", "0"],
        ["--top", "0"],
        [],  # --checkpoint is required
    ],
)
def test_bad_command_lines_are_usage_errors(argv: list[str], tmp_path: Path) -> None:
    full = argv if argv == [] else ["--checkpoint", str(tmp_path / "x.npz"), *argv]
    with pytest.raises(SystemExit) as info:
        inference_example.parse_args(full)
    assert info.value.code == 2


# --- issue 13: the same path messages as everywhere, before any work; formats; hints ------


def test_regression_directory_where_a_file_is_expected_inference(
    digits_ckpt: Path, tmp_path: Path, monkeypatch: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    def no_work(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the checkpoint was read")

    monkeypatch.setattr(inference_example, "load_trained", no_work)
    code, out, err = _run(capsys, "--checkpoint", str(tmp_path))
    assert code == 1 and out == ""
    assert err == f"error: cannot read checkpoint {tmp_path}: it is a directory; give a file path\n"
    show = tmp_path / "grid.png"
    show.mkdir()
    code, out, err = _run(capsys, "--checkpoint", str(digits_ckpt), "--show", str(show))
    assert code == 1 and out == ""
    assert err == f"error: cannot write {show}: it is a directory; give a file path\n"


def test_regression_show_jpg_held_png_bytes(
    digits_ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("matplotlib")
    grid = tmp_path / "grid.jpg"
    code, _, _ = _run(
        capsys, "--checkpoint", str(digits_ckpt), "--samples", "2", "--show", str(grid)
    )
    assert code == 0 and grid.read_bytes()[:3] == b"\xff\xd8\xff"
    code, out, err = _run(capsys, "--checkpoint", str(digits_ckpt), "--show", str(tmp_path / "g.x"))
    assert code == 1 and out == "" and "names no image format" in err


def test_regression_offline_mnist_hint_named_train_py(
    tmp_path: Path, monkeypatch: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from functools import partial

    import fcnn.run
    from fcnn.data.registry import load_dataset

    ckpt = _untrained(tmp_path / "mnist.npz", [str(d) for d in range(10)], (1, 28, 28), "mnist")
    monkeypatch.setattr(fcnn.run, "load_dataset", partial(load_dataset, download=False))
    empty = tmp_path / "empty"
    empty.mkdir()
    code, out, err = _run(capsys, "--checkpoint", str(ckpt), "--data-dir", str(empty))
    assert code == 1 and out == ""
    assert "train.py" not in err and "--data-dir DIR option" in err


# --- issue 21: one command-line style, each bad file on its own line, the recorded data ----


def test_the_checkpoint_positional_or_as_a_flag_gives_the_same_output(
    digits_ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("PIL")
    paths = [tmp_path / "a.png", tmp_path / "b.png"]
    for path, digit in zip(paths, load_digits_sample().x_test[:2, 0], strict=True):
        _write_paper_digit(path, digit)
    images = list(map(str, paths))
    flag = _run(capsys, "--checkpoint", str(digits_ckpt), *images)
    positional = _run(capsys, str(digits_ckpt), *images)
    assert flag == positional and flag[0] == 0 and len(flag[1].splitlines()) == 2
    assert _run(capsys, str(digits_ckpt), "--samples", "2") == _run(
        capsys, "--checkpoint", str(digits_ckpt), "--samples", "2"
    )


def test_regression_the_first_unreadable_file_stopped_every_other(
    digits_ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """inference_example.py a.png blank.png notimg.png good.png stopped at the first bad
    file: each is now reported on its own line, the rest classified, and the status is 1."""
    pytest.importorskip("PIL")
    digits = load_digits_sample().x_test
    a, blank, notimg, good = (tmp_path / n for n in ("a.png", "blank.png", "notimg.png", "g.png"))
    _write_paper_digit(a, digits[0, 0])
    _write_paper_digit(blank, np.zeros((28, 28)))
    notimg.write_text("not an image")
    _write_paper_digit(good, digits[1, 0])
    missing = tmp_path / "missing.png"
    paths = [a, blank, notimg, missing, good]
    code, out, err = _run(capsys, str(digits_ckpt), *map(str, paths))
    assert code == 1
    errors = err.splitlines()
    assert len(errors) == 2 and all(line.startswith("error: ") for line in errors)
    assert "notimg.png" in errors[0] and "not a readable image" in errors[0]
    assert errors[1] == f"error: cannot read image '{missing}': No such file or directory"
    lines = out.splitlines()
    assert [line.split()[0] for line in lines] == [str(a), str(blank), str(good)]
    assert "not classified" in lines[1] and len(GUESS.findall(lines[2])) == 3


def test_show_replaces_a_file_only_with_overwrite(
    digits_ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("matplotlib")
    grid = tmp_path / "g.png"
    grid.write_bytes(b"mine")
    code, out, err = _run(capsys, str(digits_ckpt), "--samples", "2", "--show", str(grid))
    assert code == 1 and out == "" and grid.read_bytes() == b"mine"
    assert err == f"error: --show {grid} already exists; pass --overwrite to replace it\n"
    argv = (str(digits_ckpt), "--samples", "2", "--show", str(grid), "--overwrite")
    assert _run(capsys, *argv)[0] == 0 and grid.read_bytes()[:4] == b"\x89PNG"


def test_samples_come_from_the_data_folder_the_run_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 21: --samples failed for an MNIST checkpoint without --data-dir, because the
    checkpoint did not remember where its data was. (CIFAR-10: a small local copy.)"""
    from helpers import fake_cifar10

    from fcnn import train

    fake_cifar10(tmp_path, monkeypatch)
    ckpt = tmp_path / "c.npz"
    argv = ["--dataset", "cifar10", "--data-dir", str(tmp_path), "--model", "small", "--quiet"]
    assert train.main([*argv, "--epochs", "1", "--save", str(ckpt)]) == 0
    monkeypatch.setenv("FCNN_DATA_DIR", str(tmp_path / "elsewhere"))
    code, out, err = _run(capsys, str(ckpt), "--samples", "3")
    assert code == 0 and err == "" and out.endswith(" correct\n")
