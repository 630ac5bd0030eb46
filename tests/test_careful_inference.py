"""Every door into a trained model checks its input the same way (issue 13): the Python
API ``Trained.predict_proba``, the server and ``inference_example.py`` share one
implementation of the pixel checks (``fcnn.data.images.check_unit_images``) and of
"this image is empty" (``is_empty_image``), and ``python -m fcnn.serve`` reports a
missing extra or a bad ``--checkpoint`` in one line."""

from __future__ import annotations

import importlib.util
import io
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import run_without

import fcnn
from fcnn.data.images import (
    EMPTY_IMAGE_HINT,
    EmptyImageError,
    check_not_empty,
    check_unit_images,
    is_empty_image,
    prepare_image,
)
from fcnn.models import Trained, build_model

ROOT = Path(__file__).resolve().parents[1]
SHAPE = (1, 12, 12)


def _trained() -> Trained:
    model = build_model("small", 3)
    params, state, _ = fcnn.init(model, np.random.default_rng(0), SHAPE)
    mean, std = np.array([0.2], np.float32), np.array([0.3], np.float32)
    return Trained(model, params, state, SHAPE, ("a", "b", "c"), mean, std, {})


def _images(dtype: Any = np.float32) -> np.ndarray:
    return np.random.default_rng(1).random((4, *SHAPE)).astype(dtype)


# --- Trained.predict_proba ------------------------------------------------------------------


def test_regression_predict_proba_accepted_0_255_floats_silently() -> None:
    x = _images() * 255.0
    with pytest.raises(
        ValueError,
        match=r"^predict_proba: pixel values must be raw intensities in "
        r"\[0, 1\] .*got values in \[.*\]; for 0-255 values divide by 255",
    ):
        _trained().predict_proba(x)


def test_regression_predict_proba_refused_float64_batches() -> None:
    trained = _trained()
    x32 = _images()
    p64 = trained.predict_proba(x32.astype(np.float64))  # NumPy's default dtype
    assert p64.dtype == np.float32
    np.testing.assert_array_equal(p64, trained.predict_proba(x32))


def test_regression_predict_proba_uint8_error_did_not_point_to_uint8_to_unit() -> None:
    x = (_images() * 255).astype(np.uint8)
    with pytest.raises(TypeError, match=r"^predict_proba: .*uint8.*fcnn\.data\.uint8_to_unit\(x\)"):
        _trained().predict_proba(x)
    # ... and what it points to works.
    assert _trained().predict_proba(fcnn.data.uint8_to_unit(x)).shape == (4, 3)


@pytest.mark.parametrize(
    ("x", "error", "words"),
    [
        (np.zeros((2, 1, 12, 11), np.float32), ValueError, r"shaped \(N, 1, 12, 12\), got .*11\)"),
        (np.zeros((1, 12, 12), np.float32), ValueError, r"got an array shaped \(1, 12, 12\)"),
        (np.zeros((2, *SHAPE), np.int64), TypeError, "floating dtype .*got int64"),
        (np.full((2, *SHAPE), np.nan, np.float32), ValueError, "NaN or infinite"),
        (np.full((2, *SHAPE), -0.5, np.float32), ValueError, r"got values in \[-0\.5, -0\.5\]$"),
    ],
)
def test_predict_proba_refuses_what_the_server_refuses(x: Any, error: Any, words: str) -> None:
    with pytest.raises(error, match=f"^predict_proba: .*{words}"):
        _trained().predict_proba(x)
    with pytest.raises(error, match=words) as direct:
        check_unit_images(x, SHAPE)
    assert not str(direct.value).startswith("predict_proba")  # the prefix is the caller's


def test_check_unit_images_keeps_float32_and_accepts_an_empty_batch() -> None:
    x = _images()
    assert check_unit_images(x, SHAPE) is x  # nothing copied, nothing written
    empty = check_unit_images(np.zeros((0, *SHAPE)), SHAPE)
    assert empty.shape == (0, *SHAPE) and empty.dtype == np.float32


# --- empty images ---------------------------------------------------------------------------


@pytest.mark.parametrize("value", [0.0, 0.5, 1.0])
def test_a_blank_image_is_empty_after_preparing(value: float) -> None:
    x = prepare_image(np.full((1, 40, 30), value, np.float32), (1, 28, 28))
    assert is_empty_image(x)
    with pytest.raises(EmptyImageError, match=f"^where: {EMPTY_IMAGE_HINT}$"):
        check_not_empty(x, "where")
    rgb = prepare_image(np.full((3, 40, 30), value, np.float32), (3, 32, 32))
    assert is_empty_image(rgb)


def test_a_drawn_digit_is_not_empty() -> None:
    ds = fcnn.data.load_digits_sample()
    for image in ds.x_test[:20]:
        assert not is_empty_image(prepare_image(image, (1, 28, 28)))
    stroke = np.ones((1, 50, 50), np.float32)
    stroke[0, 10:40, 24:26] = 0.0  # one thin dark line on white
    assert not is_empty_image(prepare_image(stroke, (1, 28, 28)))


needs_serve = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("fastapi", "PIL", "python_multipart"))
    or (importlib.util.find_spec("httpx2") is None and importlib.util.find_spec("httpx") is None),
    reason="needs the serve extra and httpx2 (pip install -e '.[dev]')",
)


def _png(pixels: np.ndarray, mode: str) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels, mode).save(buf, "PNG")
    return buf.getvalue()


@needs_serve
@pytest.mark.parametrize(
    "png",
    [
        pytest.param(lambda: _png(np.full((64, 64), 255, np.uint8), "L"), id="white"),
        pytest.param(lambda: _png(np.full((64, 64), 0, np.uint8), "L"), id="black"),
        pytest.param(lambda: _png(np.full((64, 64), 128, np.uint8), "L"), id="gray"),
        pytest.param(lambda: _png(np.zeros((64, 64, 4), np.uint8), "RGBA"), id="transparent"),
    ],
)
def test_regression_a_blank_image_was_classified_with_a_confident_class(png: Any) -> None:
    from fastapi.testclient import TestClient

    from fcnn.serve import create_app

    trained = Trained(*_digits_model())
    with TestClient(create_app(trained)) as client:
        r = client.post("/predict", files={"file": ("blank.png", png(), "image/png")})
    assert r.status_code == 422
    assert r.json() == {"detail": EMPTY_IMAGE_HINT}


def _digits_model() -> tuple[Any, ...]:
    model = build_model("small", 10)
    params, state, _ = fcnn.init(model, np.random.default_rng(0), (1, 28, 28))
    mean, std = np.array([0.13], np.float32), np.array([0.31], np.float32)
    classes = tuple(str(d) for d in range(10))
    return model, params, state, (1, 28, 28), classes, mean, std, {}


@needs_serve
def test_a_transparent_canvas_with_dark_strokes_is_read_as_on_white() -> None:
    """What a browser canvas gives: dark strokes, every other pixel fully transparent."""
    from fastapi.testclient import TestClient

    from fcnn.serve import create_app

    ink = np.zeros((80, 80), bool)
    ink[15:65, 38:42] = True  # a "1"
    rgba = np.zeros((80, 80, 4), np.uint8)  # transparent black everywhere ...
    rgba[ink] = (20, 20, 20, 255)  # ... but the strokes
    gray = np.where(ink, 20, 255).astype(np.uint8)  # the same drawing on white
    trained = Trained(*_digits_model())
    with TestClient(create_app(trained)) as client:
        answers = [
            client.post("/predict", files={"file": ("d.png", data, "image/png")})
            for data in (_png(rgba, "RGBA"), _png(gray, "L"))
        ]
    assert [a.status_code for a in answers] == [200, 200]
    assert answers[0].json() == answers[1].json()


def test_regression_inference_example_gave_a_blank_image_a_class(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("PIL")
    sys.path.insert(0, str(ROOT))
    try:
        import inference_example
    finally:
        sys.path.remove(str(ROOT))
    from fcnn.io import save_checkpoint
    from fcnn.models import describe_model

    _model, params, state, shape, classes, mean, std, _ = _digits_model()
    ckpt = tmp_path / "m.npz"
    meta = {
        "model": describe_model("small", 10),
        "input_shape": list(shape),
        "classes": list(classes),
        "normalization": {"mean": mean.tolist(), "std": std.tolist()},
    }
    save_checkpoint(ckpt, params=params, state=state, meta=meta)
    blank, digit = tmp_path / "blank.png", tmp_path / "digit.png"
    blank.write_bytes(_png(np.full((40, 40), 255, np.uint8), "L"))
    strokes = np.full((40, 40), 255, np.uint8)
    strokes[8:32, 18:21] = 0
    digit.write_bytes(_png(strokes, "L"))
    assert inference_example.main(["--checkpoint", str(ckpt), str(blank), str(digit)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"{blank}  not classified: {EMPTY_IMAGE_HINT}"
    assert out[1].startswith(str(digit)) and "%" in out[1]


# --- python -m fcnn.serve -------------------------------------------------------------------


def test_regression_serve_without_fastapi_printed_a_traceback(tmp_path: Path) -> None:
    """python -m fcnn.serve without the serve extra: the install line alone, exit 1."""
    proc = run_without("fastapi", tmp_path, "-m", "fcnn.serve", "--checkpoint", "m.npz")
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr == (
        "error: the inference server needs FastAPI, fastapi-offline, python-multipart and "
        'Pillow (fastapi is missing): pip install "fcnn[serve]"\n'
    )
    lib = run_without("fastapi", tmp_path, "-c", "import fcnn.serve")
    assert lib.returncode == 1 and "ImportError: the inference server needs FastAPI" in lib.stderr


@pytest.mark.parametrize("kind", ["directory", "missing"])
def test_regression_serve_checkpoint_directory_got_no_clear_message(
    tmp_path: Path,
    kind: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    pytest.importorskip("fastapi")
    import fcnn.serve

    def no_work(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("work was done before the path was checked")

    monkeypatch.setattr(fcnn.serve, "create_app", no_work)
    path = tmp_path if kind == "directory" else tmp_path / "m.npz"
    assert fcnn.serve.main(["--checkpoint", str(path)]) == 1
    why = "it is a directory; give a file path" if kind == "directory" else "no such file"
    assert capsys.readouterr().err == f"error: cannot read checkpoint {path}: {why}\n"
