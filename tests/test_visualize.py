"""fcnn.visualize: the arrays behind each picture, the pictures, and the command line."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import fcnn
from fcnn import visualize as vis
from fcnn.io import save_checkpoint
from fcnn.models import build_model, describe_model

pytest.importorskip("matplotlib")
Image = pytest.importorskip("PIL.Image")


def _small_model() -> fcnn.Layer:
    return fcnn.sequential(
        fcnn.Conv2d(3, 3, padding=1),
        fcnn.Relu(),
        fcnn.MaxPool2d(2),
        fcnn.sequential(fcnn.Conv2d(4, 3, padding=1), fcnn.Relu(), name="block"),
        fcnn.Flatten(),
        fcnn.Dense(5),
    )


def test_saliency_equals_finite_differences(rng: np.random.Generator) -> None:
    """d logits[n, t] / d x[n] from the library's backward matches central differences."""
    model = _small_model()
    params, state, _ = fcnn.init(model, rng, (1, 6, 6), np.float64)
    params = fcnn.tree_map(lambda p: p + 0.05 * rng.standard_normal(p.shape), params)  # off kinks
    x = rng.standard_normal((2, 1, 6, 6))
    target = np.array([3, 1])
    grad = vis.saliency(model, params, state, x, target)
    assert grad.shape == x.shape and grad.dtype == x.dtype

    def score(xs: Any, n: int) -> float:
        logits = fcnn.predict(model, params, state, xs)
        return float(logits[n, target[n]])

    eps = 1e-6
    numeric = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        plus, minus = x.copy(), x.copy()
        plus[idx] += eps
        minus[idx] -= eps
        numeric[idx] = (score(plus, idx[0]) - score(minus, idx[0])) / (2 * eps)
    assert np.abs(numeric).max() > 1e-3  # the check compares something
    np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-7)


def test_saliency_rejects_bad_targets(rng: np.random.Generator) -> None:
    model = _small_model()
    params, state, _ = fcnn.init(model, rng, (1, 6, 6))
    x = rng.standard_normal((2, 1, 6, 6)).astype(np.float32)
    with pytest.raises(ValueError, match="saliency: target"):
        vis.saliency(model, params, state, x, np.array([0, 5]))


def test_feature_maps_are_every_convolution_output(rng: np.random.Generator) -> None:
    model = _small_model()
    params, state, _ = fcnn.init(model, rng, (1, 6, 6))
    x = rng.standard_normal((2, 1, 6, 6)).astype(np.float32)
    assert vis.conv_layers(model) == ["conv1", "block/conv1"]
    maps = vis.feature_maps(model, params, state, x)
    assert [p for p, _ in maps] == ["conv1", "block/conv1"]
    assert [m.shape for _, m in maps] == [(2, 3, 6, 6), (2, 4, 3, 3)]
    first, _ = fcnn.conv2d_fwd(params["conv1"], x, fcnn.Conv2dCfg(padding=1))
    np.testing.assert_array_equal(maps[0][1], first)
    assert vis.first_conv_weights(model, params) is params["conv1"]["w"]


def test_feature_maps_walk_into_residual_and_concat_blocks(rng: np.random.Generator) -> None:
    """Issue 21/23: every path of a residual or a concat takes the block's input, and the
    block's own output feeds what follows."""
    conv = fcnn.Conv2dCfg(padding=1)
    model = fcnn.sequential(
        fcnn.Conv2d(2, 3, padding=1),
        fcnn.residual(
            fcnn.sequential(fcnn.Conv2d(2, 3, padding=1), fcnn.Relu()), fcnn.Conv2d(2, 1)
        ),
        fcnn.concat(fcnn.Conv2d(1, 3, padding=1), fcnn.Relu()),
        fcnn.Conv2d(3, 3, padding=1),
        fcnn.GlobalAvgPool2d(),
        fcnn.Dense(4),
    )
    params, state, _ = fcnn.init(model, rng, (1, 5, 5), np.float64)
    x = rng.standard_normal((2, 1, 5, 5))
    paths = ["conv1", "residual1/block/conv1", "residual1/shortcut", "concat1/conv1", "conv2"]
    assert vis.conv_layers(model) == paths
    maps = dict(vis.feature_maps(model, params, state, x))
    assert list(maps) == paths
    y1, _ = fcnn.conv2d_fwd(params["conv1"], x, conv)
    res = params["residual1"]
    yb, _ = fcnn.conv2d_fwd(res["block"]["conv1"], y1, conv)
    ys, _ = fcnn.conv2d_fwd(res["shortcut"], y1, fcnn.Conv2dCfg())
    np.testing.assert_allclose(maps["residual1/block/conv1"], yb)
    np.testing.assert_allclose(maps["residual1/shortcut"], ys)
    y2 = np.maximum(yb, 0) + ys
    yc, _ = fcnn.conv2d_fwd(params["concat1"]["conv1"], y2, conv)
    np.testing.assert_allclose(maps["concat1/conv1"], yc)
    last, _ = fcnn.conv2d_fwd(params["conv2"], np.concatenate([yc, np.maximum(y2, 0)], 1), conv)
    np.testing.assert_allclose(maps["conv2"], last)
    assert [p for p, _ in vis.feature_maps(*_resnet())] == vis.conv_layers(_resnet()[0])


def _resnet() -> tuple[Any, ...]:
    model = build_model("resnet", 3)
    params, state, _ = fcnn.init(model, np.random.default_rng(0), (3, 8, 8))
    return model, params, state, np.zeros((1, 3, 8, 8), np.float32)


def test_confusion_matrix_counts_true_rows_predicted_columns() -> None:
    labels = np.array([0, 0, 1, 2, 2, 2])
    predicted = np.array([0, 1, 1, 2, 0, 2])
    cm = vis.confusion_matrix(labels, predicted, 3)
    assert cm.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]
    assert cm.dtype == np.int64


def test_confidently_wrong_orders_mistakes_by_confidence() -> None:
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.05, 0.95], [0.3, 0.7]])
    labels = np.array([0, 0, 1, 0, 1])
    # wrong: 1 (0.8), 2 (0.6), 3 (0.95); 4 is right
    assert vis.confidently_wrong(probs, labels, 5).tolist() == [3, 1, 2]
    assert vis.confidently_wrong(probs, labels, 2).tolist() == [3, 1]


@pytest.fixture(scope="module")
def untrained_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small model, freshly initialised, as a checkpoint of the embedded digits."""
    model = build_model("small", 10)
    params, state, _ = fcnn.init(model, np.random.default_rng(3), (1, 28, 28))
    meta = {
        "model": describe_model("small", 10),
        "input_shape": [1, 28, 28],
        "classes": [str(d) for d in range(10)],
        "dataset": "digits-sample",
        "normalization": {"mean": [0.13], "std": [0.3]},
        "epoch": 0,
    }
    path = tmp_path_factory.mktemp("vis") / "small.npz"
    save_checkpoint(path, params=params, state=state, meta=meta)
    return path


def _not_blank(path: Path) -> tuple[int, int]:
    with Image.open(path) as im:
        assert im.format == "PNG"
        pixels = np.asarray(im.convert("L"), dtype=np.float64)
        size: tuple[int, int] = im.size
    assert pixels.std() > 10, f"{path.name} looks blank"
    return size


def test_command_line_writes_every_picture(
    untrained_ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "pics"
    argv = [str(untrained_ckpt), "--out", str(out), "--limit-test", "200", "--saliency", "4"]
    assert vis.main(argv) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(out / name) for name in vis.PICTURES]
    assert sorted(p.name for p in out.iterdir()) == sorted(vis.PICTURES)  # no temporaries
    sizes = {name: _not_blank(out / name) for name in vis.PICTURES}
    dpi = 100
    assert sizes["filters.png"] == (round(1.1 * 8 * dpi), round((1.1 + 0.5) * dpi))  # 8 filters
    assert sizes["feature_maps.png"] == (round(1.2 * 8 * dpi), round(1.35 * 3 * dpi))  # 2 convs
    assert sizes["saliency.png"] == (round(1.7 * 4 * dpi), round(3.6 * dpi))
    assert sizes["confusion.png"] == (round(6.0 * dpi), round(6.0 * dpi))  # 10 classes
    assert sizes["wrong.png"] == (round(1.3 * 8 * dpi), round((1.5 * 2 + 0.4) * dpi))  # 16


def test_missing_matplotlib_is_one_line(
    untrained_ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: Any
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    assert vis.main([str(untrained_ckpt), "--out", str(tmp_path / "o")]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith('error: plotting needs matplotlib: pip install "fcnn[plot]"')
    assert err.count("\n") == 1 and err.endswith("\n")
    assert not (tmp_path / "o").exists()


def test_missing_checkpoint_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "none.npz"
    assert vis.main([str(missing), "--out", str(tmp_path / "o")]) == 1
    assert capsys.readouterr().err == f"error: cannot read checkpoint {missing}: no such file\n"


def test_bad_index_is_one_line(
    untrained_ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [str(untrained_ckpt), "--out", str(tmp_path / "o"), "--limit-test", "10"]
    assert vis.main([*argv, "--index", "10"]) == 1
    assert capsys.readouterr().err == "error: --index must be in [0, 10), got 10\n"


# --- issue 21: the shared command line; 0.2.0 checkpoints ----------------------------------

FIXTURES = Path(__file__).parent / "fixtures"


def test_pictures_are_replaced_only_with_overwrite_and_the_flag_form_works(
    untrained_ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "pics"
    out.mkdir()
    (out / "confusion.png").write_bytes(b"mine")
    argv = ["--checkpoint", str(untrained_ckpt), "--out", str(out), "--limit-test", "50"]
    assert vis.main(argv) == 1
    err = capsys.readouterr().err
    assert (
        err
        == f"error: --out {out / 'confusion.png'} already exists; pass --overwrite to replace it\n"
    )
    assert sorted(p.name for p in out.iterdir()) == ["confusion.png"]  # nothing drawn
    assert vis.main([*argv, "--overwrite"]) == 0
    assert (out / "confusion.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(SystemExit) as stop:  # no checkpoint: a usage error
        vis.main(["--out", str(out)])
    assert stop.value.code == 2


def test_a_checkpoint_of_fcnn_0_2_0_is_drawn(tmp_path: Path) -> None:
    ckpt = FIXTURES / "v0.2.0-digits-fast.npz"
    out = tmp_path / "pics"
    assert vis.main([str(ckpt), "--out", str(out), "--limit-test", "40", "--saliency", "2"]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(vis.PICTURES)
