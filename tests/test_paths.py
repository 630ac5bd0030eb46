"""One shared check for "a file to read / to write" (fcnn.paths), and the command lines
that use it before any work; image formats from the extension (issue 13)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
from helpers import run_without

import fcnn.models
from fcnn.export import main as export_main
from fcnn.paths import PathError, check_readable_file, check_writable_file
from fcnn.plots import image_format, plot_history

ROOT = Path(__file__).resolve().parents[1]
HISTORY = [{"epoch": 1, "train_loss": 1.0, "test_loss": 0.9, "test_acc": 0.5}]


def test_check_readable_file(tmp_path: Path) -> None:
    f = tmp_path / "m.npz"
    f.write_bytes(b"x")
    check_readable_file(f, "checkpoint")
    with pytest.raises(
        PathError, match=f"^cannot read checkpoint {re.escape(str(tmp_path))}: it is a directory; "
    ):
        check_readable_file(tmp_path, "checkpoint")
    with pytest.raises(
        PathError, match=f"^cannot read {re.escape(str(tmp_path / 'no'))}: no such file$"
    ):
        check_readable_file(tmp_path / "no")


def test_check_writable_file(tmp_path: Path) -> None:
    check_writable_file(tmp_path / "new.onnx")
    with pytest.raises(
        PathError, match=f"^cannot write {re.escape(str(tmp_path))}: it is a directory; give a"
    ):
        check_writable_file(tmp_path)
    deep = tmp_path / "a" / "b" / "m.npz"
    with pytest.raises(PathError, match=r"the folder .*b does not exist$"):
        check_writable_file(deep)
    check_writable_file(deep, make_folder=True)
    assert deep.parent.is_dir() and list(deep.parent.iterdir()) == []  # no probe left
    (tmp_path / "afile").write_text("")
    with pytest.raises(PathError, match=r"^cannot write .*afile/m\.npz: "):
        check_writable_file(tmp_path / "afile" / "m.npz", make_folder=True)
    assert sorted(os.listdir(tmp_path)) == ["a", "afile"]  # nothing else written


def test_regression_export_directory_where_a_file_is_expected(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def no_work(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the checkpoint was read")

    monkeypatch.setattr(fcnn.models, "load_trained", no_work)
    assert export_main([str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err == f"error: cannot read checkpoint {tmp_path}: it is a directory; give a file path\n"
    ckpt = tmp_path / "m.npz"
    ckpt.write_bytes(b"")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    assert export_main([str(ckpt), "-o", str(out_dir)]) == 1
    err = capsys.readouterr().err
    assert err == f"error: cannot write {out_dir}: it is a directory; give a file path\n"


def test_regression_export_without_onnx_printed_a_traceback(tmp_path: Path) -> None:
    """python -m fcnn.export without the onnx extra: the install line alone, exit 1."""
    proc = run_without("onnx", tmp_path, "-m", "fcnn.export", "m.npz")
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr == 'error: ONNX export needs the onnx package: pip install "fcnn[onnx]"\n'
    # Imported as a library it still raises ImportError with the same line.
    lib = run_without("onnx", tmp_path, "-c", "import fcnn.export")
    assert lib.returncode == 1 and "ImportError: ONNX export needs the onnx package" in lib.stderr


@pytest.mark.parametrize(
    ("name", "magic"),
    [
        ("c.png", b"\x89PNG"),
        ("c.jpg", b"\xff\xd8\xff"),
        ("c.JPEG", b"\xff\xd8\xff"),
        ("c.pdf", b"%PDF"),
        ("c.svg", b"<?xml"),
    ],
)
def test_regression_plot_jpg_held_png_bytes(tmp_path: Path, name: str, magic: bytes) -> None:
    pytest.importorskip("matplotlib")
    plot_history(HISTORY, tmp_path / name)
    assert (tmp_path / name).read_bytes().startswith(magic)


@pytest.mark.parametrize("name", ["curves.xyz", "curves", "curves.png.bak"])
def test_unknown_image_extension_is_refused_before_drawing(tmp_path: Path, name: str) -> None:
    with pytest.raises(PathError, match=r"names no image format .*use one of \.png, \.jpg"):
        image_format(tmp_path / name)
    with pytest.raises(ValueError, match="cannot write"):
        plot_history(HISTORY, tmp_path / name)
    assert list(tmp_path.iterdir()) == []
    assert image_format("x.JPG") == "jpeg" and image_format("x.png") == "png"
