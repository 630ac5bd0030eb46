"""benchmarks/time_to_accuracy.py on tiny data: its bookkeeping, and that PyTorch trains the
very model, weights and batches fcnn does (the real run is not a test)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import time_to_accuracy as tta

import fcnn
from fcnn.models import build_model

TINY = {"dataset": "digits-sample", "data_dir": None, "seed": 0, "epochs": 2}
TINY |= {"limit_train": 256, "limit_test": 200}


def rows(start: float, *points: tuple[float, float]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [{"epoch": 0, "seconds": start}]
    out += [{"epoch": i, "seconds": t, "test_acc": a} for i, (t, a) in enumerate(points, 1)]
    return out


def test_time_to_is_the_first_epoch_at_the_target_since_start_or_training() -> None:
    r = rows(2.0, (5.0, 0.98), (8.0, 0.991), (11.0, 0.985))
    assert tta.time_to(r, 0.99, "start") == 8.0
    assert tta.time_to(r, 0.99, "training") == 6.0
    assert tta.time_to(r, 0.995, "start") is None


def test_summary_takes_the_faster_torch_format_and_medians_over_seeds() -> None:
    runs = []
    for seed, (mine, nchw, last) in enumerate(
        [(10.0, 20.0, 16.0), (12.0, 18.0, 30.0), (9.0, 9.0, 9.0)]
    ):
        runs += [
            {"lib": "fcnn", "seed": seed, "rows": rows(1.0, (mine, 0.992))},
            {"lib": "torch", "format": "contiguous", "seed": seed, "rows": rows(3.0, (nchw, 0.99))},
            {
                "lib": "torch",
                "format": "channels_last",
                "seed": seed,
                "rows": rows(3.0, (last, 0.995)),
            },
        ]
    runs[-1]["rows"] = rows(3.0, (9.0, 0.5))  # seed 2 channels-last missed: NCHW counts
    s = tta.summarize(runs, 0.99, "start")
    assert [r["torch"] for r in s["seeds"]] == [16.0, 18.0, 9.0]
    assert [r["ratio"] for r in s["seeds"]] == pytest.approx([10 / 16, 12 / 18, 1.0])
    assert s["median_fcnn"] == 10.0 and s["median_torch"] == 16.0
    assert s["median_ratio"] == pytest.approx(12 / 18)
    text = tta.table(s)
    assert "| 2 | 9.0 s (99.20%) | 9.0 s (99.00%) | missed (50.00%) | 1.00 |" in text
    t = tta.summarize(runs, 0.99, "training")
    assert t["seeds"][0]["fcnn"] == 9.0 and t["seeds"][0]["torch"] == 13.0


def test_fcnn_worker_is_train_py_recipe_run() -> None:
    """The worker's fcnn run gives what train.py gives for the same settings."""
    from fcnn import train
    from fcnn.parallel import Ranks
    from fcnn.run import Options, Progress, set_up

    out = tta.worker({**TINY, "lib": "fcnn"})
    accs = [r["test_acc"] for r in out["rows"][1:]]
    given = {"recipe": "fast", "limit_train": 256, "epochs": 2}
    run, progress = set_up(given, Options(no_save=True, quiet=True), Ranks())
    data = dataclasses.replace(run.data, x_test=run.data.x_test[:200], y_test=run.data.y_test[:200])
    run = dataclasses.replace(run, data=data)
    d = run.data
    for epoch in (1, 2):  # train.train_epochs's loop, without the saving
        ts, _ = fcnn.train_epoch(
            run.step, progress.ts, d.x_train, d.y_train, run.config.batch_size, progress.rng,
            None, run.augment, run.drop_last,
        )  # fmt: skip
        row = train.epoch_row(run, epoch, 0.0, 1.0, train.evaluate(run, ts, epoch))
        progress = Progress(ts, progress.rng, epoch, (*progress.history, row), None)
    assert accs == [row["test_acc"] for row in progress.history]


def test_torch_model_holds_fcnns_weights_and_trains_alike(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    model = build_model("fast", 10)
    params, state, _ = fcnn.init(model, np.random.default_rng(3), (1, 28, 28))
    # Batch norm's own values, negative scales included, so that its place relative to
    # the max pool matters (with gamma = 1 and fresh statistics the two orders agree).
    g = np.random.default_rng(5)
    for name in state:
        c = state[name]["mean"].shape
        params[name] = {
            "gamma": g.uniform(-2, 2, c).astype(np.float32),
            "beta": g.standard_normal(c).astype(np.float32),
        }
        state[name] = {
            "mean": g.standard_normal(c).astype(np.float32),
            "var": g.uniform(0.5, 2, c).astype(np.float32),
        }
    x = np.random.default_rng(4).standard_normal((8, 1, 28, 28)).astype(np.float32)
    mine = fcnn.predict(model, params, state, x)
    theirs = tta.torch_model(torch, params, state).eval()(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(theirs, mine, atol=1e-4)
    a, b = (
        tta.worker({**TINY, "lib": "fcnn"}),
        tta.worker({**TINY, "lib": "torch", "format": "channels_last"}),
    )
    assert abs(a["rows"][-1]["test_acc"] - b["rows"][-1]["test_acc"]) < 0.05
    assert b["threads"] >= 1


def test_plot_writes_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    runs = [
        {"lib": "fcnn", "seed": 0, "rows": rows(1.0, (3.0, 0.97), (5.0, 0.991))},
        {"lib": "torch", "format": "contiguous", "seed": 0, "rows": rows(2.0, (4.0, 0.99))},
    ]
    path = tmp_path / "tta.png"
    tta.plot(runs, 0.99, str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
