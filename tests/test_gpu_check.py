"""benchmarks/gpu_check.sh, the one GPU run, dry-run on the CPU: without CuPy every part
fails fast with one line, writes its file, and the summary says how each part ended."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import gpu_summary
import pytest

ROOT = Path(__file__).resolve().parents[1]
FILES = ["environment.txt", "train-cold.txt", "pytest-gpu.txt", "train-warm.txt"]
FILES += ["gpu-bench.txt", "tta-gpu.txt", "summary.md"]
NO_GPU = "the GPU needs CuPy and a CUDA GPU"


@pytest.mark.skipif(shutil.which("timeout") is None, reason="needs coreutils' timeout")
def test_gpu_check_without_cupy_fails_fast_and_writes_every_file(tmp_path: Path) -> None:
    hide = tmp_path / "hide"  # cupy and torch that cannot be imported, whatever is installed
    for name in ("cupy", "torch"):
        (hide / name).mkdir(parents=True)
        (hide / name / "__init__.py").write_text(f"raise ImportError('{name} hidden')\n")
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable, "PYTHONPATH": str(hide)}
    env["FCNN_DATA_DIR"] = str(ROOT / "tests" / "fixtures")  # no mnist/ in it
    done = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(FILES)
    summary = (out / "summary.md").read_text()
    assert "cupy: not usable: ImportError cupy hidden" in (out / "environment.txt").read_text()
    assert "skipped: no MNIST in" in (out / "train-cold.txt").read_text()
    assert f"train_bench: {NO_GPU}" in (out / "gpu-bench.txt").read_text()
    assert "exit status 1" in (out / "gpu-bench.txt").read_text()
    pytest_text = (out / "pytest-gpu.txt").read_text()
    assert pytest_text.count("exit status 0") == 2 and " skipped, " in pytest_text
    assert "failed" not in pytest_text
    for section in ("## train.py", "## pytest -m gpu", "## train_bench.py", "## time_to_acc"):
        assert section in summary


def test_the_summary_reads_a_stamped_train_run(tmp_path: Path) -> None:
    (tmp_path / "train-cold.txt").write_text(
        "# python train.py ... (cap 150 s); seconds since the process started\n"
        "       2.500 s  recipe fast: fast (29,290 params) on mnist: 60,000 train / ...\n"
        "       2.501 s  on the GPU: NVIDIA H200 (CuPy 14.2.0, device 0)\n"
        "       6.000 s  epoch 1/3  train loss 0.3  test loss 0.05  test acc 98.60%  (3.4s, 1/s)\n"
        "       8.250 s  epoch 2/3  train loss 0.2  test loss 0.03  test acc 99.05%  (2.2s, 1/s)\n"
        "      10.500 s  epoch 3/3  train loss 0.1  test loss 0.02  test acc 99.20%  (2.2s, 1/s)\n"
        "      10.700 s  exit status 0\n"
    )
    assert gpu_summary.main([str(tmp_path)]) == 0
    text = (tmp_path / "summary.md").read_text()
    assert "- exit 0" in text
    assert "- first line (set up: imports, data, model, upload) at 2.50 s" in text
    assert "- on the GPU: NVIDIA H200 (CuPy 14.2.0, device 0)" in text
    assert "- epoch 1/3: test acc 98.60% at 6.00 s since the process started" in text
    assert "- 99 % reached 8.25 s after the process started (target 10 s: met)" in text
    assert "- process start to exit: 10.70 s" in text
    assert text.count("not run") == 5  # environment, pytest, warm, bench, tta
