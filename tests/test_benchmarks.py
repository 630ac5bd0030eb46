"""benchmarks/conv_bench.py: the agreement check, the FLOP formula, the plan and a quick run.

No timing assertions: machines are noisy. Only the structure of the results is checked.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import fcnn.layers.conv as conv_layer

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import _common  # noqa: E402
import conv_bench  # noqa: E402

SMALL = conv_bench.Case("small", (3, 2, 7, 6), 3, (3, 2), (2, 1), (1, 0))


def test_conv_flops_formula() -> None:
    assert conv_bench.conv_flops(1, 1, 1, 1, 1, 1, 1) == (2, 4)
    n, c, f, oh, ow, kh, kw = 2, 3, 5, 7, 11, 13, 17
    fwd, bwd = conv_bench.conv_flops(n, c, f, oh, ow, kh, kw)
    assert fwd == 2 * n * f * oh * ow * c * kh * kw
    assert bwd == 2 * fwd


def test_case_flops_uses_the_output_size_formula() -> None:
    deep = conv_bench.CASES_BY_NAME["deep-3x3"]
    assert deep.out_hw() == (14, 14)
    assert conv_bench.case_flops(deep)[0] == 2 * 64 * 64 * 14 * 14 * 32 * 3 * 3
    ragged = conv_bench.CASES_BY_NAME["stride-3-ragged"]
    assert ragged.out_hw() == (8, 8)  # (27 - 4) // 3 + 1, with 2 rows left untouched
    assert (27 - 4) % 3 != 0


def test_grid_covers_the_requested_shapes() -> None:
    shapes = {(c.x_shape, c.filters, c.kernel, c.stride) for c in conv_bench.CASES}
    assert ((64, 1, 28, 28), 8, (3, 3), (1, 1)) in shapes
    assert ((64, 1, 28, 28), 8, (5, 5), (1, 1)) in shapes
    assert ((64, 32, 14, 14), 64, (3, 3), (1, 1)) in shapes
    assert ((64, 3, 32, 32), 32, (5, 5), (1, 1)) in shapes
    assert any(c.stride == (2, 2) for c in conv_bench.CASES)
    assert any(
        (c.x_shape[2] + 2 * c.padding[0] - c.kernel[0]) % c.stride[0] for c in conv_bench.CASES
    )


def test_plan_quick_limits_naive_and_full_labels_a_smaller_batch() -> None:
    quick = conv_bench.plan(quick=True)
    assert {c.name for c, _ in quick} == set(conv_bench.QUICK_CASES)
    assert {c.name for c, impl in quick if impl == "naive"} == set(conv_bench.QUICK_NAIVE)
    full = conv_bench.plan(quick=False, naive_batch=16, torch=True)
    assert len(full) == len(conv_bench.CASES) * 4
    assert all(c.batch == 16 for c, impl in full if impl == "naive")
    assert all(c.batch == 64 for c, impl in full if impl != "naive")


def test_agreement_passes_for_the_library() -> None:
    cases = [SMALL, conv_bench.CASES_BY_NAME["stride-3-ragged"]]
    result = conv_bench.check_agreement(cases, batch=2)
    assert result.ok, result.failures
    assert len(result.errors) == 2 * 2 * 4  # cases x (im2col, strided) x (y, dx, dw, db)
    assert max(result.errors.values()) <= conv_bench.RTOL


def test_agreement_fails_when_a_forward_is_broken(monkeypatch: pytest.MonkeyPatch) -> None:
    real = conv_layer.conv2d_strided_fwd

    def broken(*args: Any) -> Any:
        y, saved = real(*args)
        return y * (1 + 1e-6), saved

    monkeypatch.setattr(conv_layer, "conv2d_strided_fwd", broken)
    result = conv_bench.check_agreement([SMALL])
    assert not result.ok
    assert any("strided y differs" in f for f in result.failures)
    assert not any("im2col" in f for f in result.failures)


def test_agreement_fails_when_a_backward_is_broken(monkeypatch: pytest.MonkeyPatch) -> None:
    real = conv_layer.conv2d_im2col_bwd

    def broken(*args: Any) -> Any:
        dx, dw, db = real(*args)
        return dx, dw.copy() * 0, db

    monkeypatch.setattr(conv_layer, "conv2d_im2col_bwd", broken)
    result = conv_bench.check_agreement([SMALL])
    assert [f for f in result.failures if "im2col" in f and " dw " in f]


def test_agreement_reports_an_impl_that_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: Any) -> Any:
        raise RuntimeError("kaput")

    monkeypatch.setattr(conv_layer, "conv2d_strided_bwd", boom)
    result = conv_bench.check_agreement([SMALL])
    assert any("strided raised RuntimeError: kaput" in f for f in result.failures)


def test_rel_err_catches_nan_and_shape_mismatch() -> None:
    ref = np.ones((2, 3))
    assert conv_bench.rel_err(ref, ref) == 0.0
    assert conv_bench.rel_err(np.ones((3, 2)), ref) == float("inf")
    bad = ref.copy()
    bad[0, 0] = np.nan
    assert not conv_bench.rel_err(bad, ref) <= 1.0


def test_main_exits_nonzero_when_an_impl_disagrees(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real = conv_layer.conv2d_strided_fwd
    monkeypatch.setattr(conv_layer, "conv2d_strided_fwd", lambda *a: (real(*a)[0] + 1, real(*a)[1]))
    monkeypatch.setattr(
        conv_bench, "tune_allocator", lambda: _common.AllocatorTuning(False, "test")
    )
    monkeypatch.setattr(conv_bench, "run_worker", _no_worker)
    assert conv_bench.main(["--quick", "--no-torch"]) == 1
    assert "FAILED" in capsys.readouterr().out


def _no_worker(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("no timing may start before the agreement check passes")


def test_plot_without_matplotlib_exits_2(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(conv_bench, "have_module", lambda name: name != "matplotlib")
    monkeypatch.setattr(conv_bench, "run_worker", _no_worker)
    assert conv_bench.main(["--quick", "--plot", str(tmp_path / "p.png")]) == 2
    assert "matplotlib" in capsys.readouterr().err


def test_ratios_are_per_sample_and_labelled() -> None:
    results: list[dict[str, Any]] = [
        {"case": "mnist-3x3", "impl": "im2col", "batch": 64, "fwd_ms": 1.0, "bwd_ms": 1.0},
        {"case": "mnist-3x3", "impl": "naive", "batch": 16, "fwd_ms": 2.0, "bwd_ms": 2.0},
    ]
    for r in results:
        r.update(fwd_gflops=1.0, bwd_gflops=1.0, extra_mb=None)
    conv_bench.add_ratios(results)
    assert results[0]["ratio_vs_im2col"] == 1.0
    assert results[1]["ratio_vs_im2col"] == pytest.approx(8.0)  # 4 ms / 16 vs 2 ms / 64
    assert results[1]["ratio_vs_torch"] is None
    table = conv_bench.results_table(results, torch=False)
    assert "naive (N=16)" in table and "n/a" in table


def test_tune_allocator_reports_and_never_raises() -> None:
    code = "import _common; t = _common.tune_allocator(); print(t.applied, t.detail)"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=BENCH, capture_output=True, text=True, check=True
    ).stdout
    applied, detail = out.split(" ", 1)
    glibc = sys.platform.startswith("linux") and "glibc" in detail
    assert applied == ("True" if glibc else "False")


def test_a_failing_worker_raises_with_its_error() -> None:
    spec = {"kind": "conv", "case": {"name": "x"}, "impl": "im2col"}
    with pytest.raises(RuntimeError, match="worker"):
        _common.run_worker(BENCH / "conv_bench.py", spec, timeout=60)


def test_quick_run_writes_every_impl_and_shape(tmp_path: Path) -> None:
    out = tmp_path / "tmp.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH / "conv_bench.py"), "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "| shape | impl | fwd ms | bwd ms" in proc.stdout
    data = json.loads(out.read_text())
    expected = {(c.name, impl) for c, impl in conv_bench.plan(quick=True, torch=False)}
    got = {(r["case"], r["impl"]) for r in data["results"]}
    assert expected <= got
    assert {impl for _, impl in got} >= {"naive", "im2col", "strided"}
    for r in data["results"]:
        assert r["fwd_ms"] > 0 and r["bwd_ms"] > 0
        assert r["fwd_gflops"] > 0 and r["bwd_gflops"] > 0
        if r["impl"] != "torch":
            assert r["extra_mb"] >= 0
    assert data["agreement"]["ok"]
    assert data["gemm"]["gflops"] > 0
    assert data["peak_fraction"]["fraction"] > 0
    assert data["environment"]["numpy"] == np.__version__
