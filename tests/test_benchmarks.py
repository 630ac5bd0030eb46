"""benchmarks/: conv_bench (agreement, FLOPs, plan, quick run) and train_bench (same network, rows).

No timing assertions: machines are noisy. Only the structure of the results is checked.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import _common
import conv_bench
import numpy as np
import pytest
import train_bench
from helpers import run_in_session

import fcnn
import fcnn.layers.conv as conv_layer

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"

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
    # issue 23: a depthwise and a dilated case, in the quick grid too
    depthwise = conv_bench.CASES_BY_NAME["depthwise-3x3"]
    assert depthwise.groups == depthwise.x_shape[1] == depthwise.filters
    assert conv_bench.CASES_BY_NAME["dilated-3x3"].dilation == (2, 2)
    assert {"depthwise-3x3", "dilated-3x3"} <= set(conv_bench.QUICK_CASES)


def test_grouped_and_dilated_cases_count_and_label_their_work() -> None:
    depthwise = conv_bench.CASES_BY_NAME["depthwise-3x3"]
    assert depthwise.out_hw() == (14, 14)
    assert conv_bench.case_flops(depthwise)[0] == 2 * 64 * 32 * 14 * 14 * 1 * 3 * 3
    assert depthwise.label().endswith("s1 p1 g32")
    dilated = conv_bench.CASES_BY_NAME["dilated-3x3"]
    assert dilated.out_hw() == (28, 28)  # 28 + 2*2 - (2*(3 - 1) + 1) + 1
    assert dilated.label().endswith("p2 d2")
    params, x, dy = conv_bench.make_inputs(depthwise.with_batch(2), np.float32)
    assert params["w"].shape == (32, 1, 3, 3) and x.shape == dy.shape == (2, 32, 14, 14)


def test_plan_quick_limits_naive_and_full_labels_a_smaller_batch() -> None:
    quick = conv_bench.plan(quick=True)
    assert {c.name for c, _ in quick} == set(conv_bench.QUICK_CASES)
    assert {c.name for c, impl in quick if impl == "naive"} == set(conv_bench.QUICK_NAIVE)
    full = conv_bench.plan(quick=False, naive_batch=16, torch=True)
    plain = [c for c in conv_bench.CASES if c.dilation == (1, 1) and c.groups == 1]
    assert len(full) == len(plain) * 4 + (len(conv_bench.CASES) - len(plain)) * 3
    assert not [c for c, impl in full if impl == "strided" and c not in plain]
    assert all(c.batch == 16 for c, impl in full if impl == "naive")
    assert all(c.batch == 64 for c, impl in full if impl != "naive")


def test_agreement_passes_for_the_library() -> None:
    cases = [SMALL, conv_bench.CASES_BY_NAME["stride-3-ragged"]]
    result = conv_bench.check_agreement(cases, batch=2)
    assert result.ok, result.failures
    assert len(result.errors) == 2 * 2 * 4  # cases x (im2col, strided) x (y, dx, dw, db)
    assert max(result.errors.values()) <= conv_bench.RTOL


def test_agreement_on_grouped_and_dilated_cases_leaves_strided_out() -> None:
    cases = [
        conv_bench.Case("g", (2, 4, 6, 5), 6, (3, 2), (2, 1), (1, 0), (1, 2), 2),
        conv_bench.Case("dw", (2, 3, 5, 5), 3, (3, 3), (1, 1), (2, 2), (2, 2), 3),
    ]
    result = conv_bench.check_agreement(cases, batch=2)
    assert result.ok, result.failures
    assert sorted(result.errors) == sorted(
        f"{c}/im2col/{k}" for c in ("g", "dw") for k in ("y", "dx", "dw", "db")
    )


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


# In a fresh process (mallopt is process-wide): how many bytes a 64 MiB malloc gets
# from mmap, glibc's mallinfo().hblkhd, before and after tune_allocator.
_TUNE_CHECK = """
import ctypes, json, platform
import _common

def mmapped_by_malloc(n):
    return None

if platform.libc_ver()[0] == "glibc":
    class MallInfo(ctypes.Structure):
        _fields_ = [(k, ctypes.c_int) for k in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd",
            "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
    libc = ctypes.CDLL(None)
    libc.mallinfo.restype = MallInfo
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]

    def mmapped_by_malloc(n):
        before = libc.mallinfo().hblkhd
        p = libc.malloc(n)
        grew = libc.mallinfo().hblkhd - before
        libc.free(p)
        return grew

before = mmapped_by_malloc(64 << 20)
t = _common.tune_allocator()
after = mmapped_by_malloc(64 << 20)
print(json.dumps({"applied": t.applied, "detail": t.detail, "before": before, "after": after}))
"""


def test_tune_allocator_keeps_large_blocks_in_the_heap_on_glibc() -> None:
    # Without the MALLOC_* variables a user may export (the documented alternative),
    # which would tune the child before tune_allocator does.
    env = {k: v for k, v in os.environ.items() if k not in _common.ALLOCATOR_ENV_VARS}
    proc = subprocess.run(
        [sys.executable, "-c", _TUNE_CHECK],
        cwd=BENCH,
        capture_output=True,
        text=True,
        check=True,
        env=env,
        timeout=60,
    )
    r = json.loads(proc.stdout)
    if platform.libc_ver()[0] != "glibc":  # told independently of tune_allocator's own test
        assert r["applied"] is False and r["detail"].startswith("skipped: ")
        return
    assert r["applied"] is True
    assert "M_MMAP_THRESHOLD=1073741824 (ok)" in r["detail"]
    assert "M_TRIM_THRESHOLD=1073741824 (ok)" in r["detail"]
    # glibc's default mmaps a 64 MiB block (its threshold tops out at 32 MiB); tuned, it
    # comes from the heap and is kept there for reuse.
    assert r["before"] >= 64 << 20
    assert r["after"] == 0


def test_a_failing_worker_raises_with_its_error() -> None:
    spec = {"kind": "conv", "case": {"name": "x"}, "impl": "im2col"}
    with pytest.raises(RuntimeError, match="worker"):
        _common.run_worker(BENCH / "conv_bench.py", spec, timeout=60)


def _run_conv_bench(tmp_path: Path, *flags: str) -> dict[str, Any]:
    """Run ``conv_bench.py --quick --json`` with ``flags`` in a subprocess; its JSON."""
    out = tmp_path / "conv.json"
    cmd = [sys.executable, str(BENCH / "conv_bench.py"), "--quick", "--json", str(out), *flags]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "| shape | impl | fwd ms | bwd ms" in proc.stdout
    data: dict[str, Any] = json.loads(out.read_text())
    return data


def _check_conv_json(data: dict[str, Any], torch: bool) -> None:
    expected = {(c.name, impl) for c, impl in conv_bench.plan(quick=True, torch=torch)}
    got = {(r["case"], r["impl"]) for r in data["results"]}
    assert got == expected
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


def test_quick_run_smoke_without_torch(tmp_path: Path) -> None:
    """The whole script, cheaply: one timed repeat, no warm-up, no PyTorch."""
    data = _run_conv_bench(tmp_path, "--no-torch", "--repeats", "1", "--warmup", "0")
    _check_conv_json(data, torch=False)
    assert data["repeats"] == 1 and data["warmup"] == 0
    assert all(r["repeats"] == 1 and r["warmup"] == 0 for r in data["results"])


@pytest.mark.slow
def test_quick_run_writes_every_impl_and_shape(tmp_path: Path) -> None:
    """CI's ``--quick`` as documented, PyTorch included where it imports."""
    data = _run_conv_bench(tmp_path)
    _check_conv_json(data, torch=_common.import_torch() is not None)


def test_torch_workers_run_in_process() -> None:
    """The PyTorch side of both workers, cheaply (the subprocess runs above skip it)."""
    torch = pytest.importorskip("torch")
    threads = int(torch.get_num_threads())  # unchanged: the workers set it
    spec = {"kind": "conv", "case": asdict(SMALL), "impl": "torch", "repeats": 1, "warmup": 0}
    r = conv_bench.worker({**spec, "threads": threads})
    assert (r["case"], r["impl"], r["threads"], r["extra_mb"]) == ("small", "torch", threads, None)
    assert r["fwd_ms"] > 0 and r["bwd_ms"] > 0
    step = {"kind": "step", "model": "small", "batch": 4, "steps": 1, "warmup": 0}
    for impl in ("torch", "torch-cl"):
        r = train_bench.worker({**step, "impl": impl, "threads": threads})
        assert (r["impl"], r["threads"], r["step_peak_mb"]) == (impl, threads, None)
        assert r["step_ms"] > 0 and np.isfinite(r["final_loss"])


# --- benchmarks/train_bench.py ----------------------------------------------------------


def test_train_plan_covers_models_batches_and_impls() -> None:
    with_torch = train_bench.plan(["small", "default"], [64, 128], torch=True)
    assert len(with_torch) == 2 * 2 * 3
    assert {c["impl"] for c in with_torch} == {"fcnn", "torch", "torch-cl"}
    assert {c["impl"] for c in train_bench.plan(["small"], [64], torch=False)} == {"fcnn"}
    assert train_bench.BATCHES == (64, 128) and set(train_bench.MODELS) == {"small", "default"}


def test_torch_model_is_the_fcnn_network() -> None:
    torch = pytest.importorskip("torch")
    assert train_bench.check_equivalence(["small", "default"], torch) == []
    spec = dict(train_bench.build_model("default", 10).spec)
    module = train_bench.torch_model(torch, spec, (1, 28, 28))
    n_torch = sum(p.numel() for p in module.parameters())
    model = train_bench.build_model("default", 10)
    params, _, _ = fcnn.init(model, np.random.default_rng(0), (1, 28, 28))
    assert n_torch == sum(v.size for layer in params.values() for v in layer.values())


def test_equivalence_check_fails_for_a_different_network(monkeypatch: pytest.MonkeyPatch) -> None:
    torch = pytest.importorskip("torch")
    real = train_bench.torch_model

    def without_first_relu(*args: Any) -> Any:
        module = real(*args)
        module[1] = torch.nn.Identity()
        return module

    monkeypatch.setattr(train_bench, "torch_model", without_first_relu)
    failures = train_bench.check_equivalence(["small"], torch)
    assert failures and all(f.startswith("small: ") for f in failures)


def test_torch_model_rejects_what_torch_modules_cannot_express() -> None:
    torch = pytest.importorskip("torch")
    conv = {"type": "Conv2d", "out_channels": 2, "kernel_size": [3, 3], "stride": [1, 1]}
    asymmetric = {"layers": [{**conv, "padding": [[1, 0], [1, 1]]}]}
    with pytest.raises(ValueError, match="asymmetric padding"):
        train_bench.torch_model(torch, asymmetric, (1, 8, 8))
    with pytest.raises(ValueError, match="no PyTorch equivalent for BatchNorm2d"):
        train_bench.torch_model(torch, {"layers": [{"type": "BatchNorm2d"}]}, (1, 8, 8))


def test_train_main_exits_nonzero_when_the_networks_differ(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("torch")
    monkeypatch.setattr(train_bench, "check_equivalence", lambda *a, **k: ["small: loss differs"])
    monkeypatch.setattr(
        train_bench, "tune_allocator", lambda: _common.AllocatorTuning(False, "test")
    )
    monkeypatch.setattr(train_bench, "run_worker", _no_worker)
    assert train_bench.main(["--quick", "--models", "small"]) == 1
    assert "FAILED" in capsys.readouterr().out


def _step_result(model: str, batch: int, impl: str, ms: float) -> dict[str, Any]:
    return {
        "model": model,
        "batch": batch,
        "impl": impl,
        "step_ms": ms,
        "samples_per_s": batch / (ms * 1e-3),
        "step_peak_mb": 10.0 if impl == "fcnn" else None,
        "max_rss_mb": 100.0,
    }


def test_best_of_rounds_ratios_table_and_targets() -> None:
    runs = [
        _step_result("small", 64, "fcnn", 4.0),
        _step_result("small", 64, "fcnn", 2.0),  # the faster round wins
        _step_result("small", 64, "torch", 3.0),
        _step_result("small", 64, "torch-cl", 1.0),
        _step_result("default", 64, "fcnn", 16.0),
    ]
    results = train_bench.best_of_rounds(runs)
    assert len(results) == 4
    fast = next(r for r in results if r["impl"] == "fcnn" and r["model"] == "small")
    assert fast["step_ms"] == 2.0 and fast["rounds_step_ms"] == [4.0, 2.0]
    train_bench.add_ratios(results)
    assert fast["ratio_vs_torch"] == pytest.approx(1.5)
    assert fast["ratio_vs_torch_cl"] == pytest.approx(0.5)
    assert all(r["ratio_vs_torch"] is None for r in results if r["impl"] != "fcnn")
    table = train_bench.results_table(results)
    assert "| small | 64 | 32000 | 21333 | 64000 | 1.50 | 0.50 |" in table
    assert "| default | 64 | 4000 | n/a | n/a | n/a | n/a |" in table
    lines = train_bench.targets(results, {"seconds": 12.5})
    # Round 1 paired fcnn's 4.0 ms with PyTorch's only round.
    assert "small net, batch 64: fcnn / torch NCHW = 1.50 (>= 1.0): met; per round 0.75" in lines
    assert (
        "small net, batch 64: fcnn / torch channels_last = 0.50 (>= 0.7): NOT met; per round 0.25"
        in lines
    )
    assert any("15.0 s estimated" in t and "12.5 s measured" in t and ": met" in t for t in lines)


def test_per_round_ratios_pair_the_runs_of_each_round_and_show_in_targets() -> None:
    runs = [
        _step_result("small", 64, "fcnn", 2.0),  # round 1
        _step_result("small", 64, "torch-cl", 1.0),
        _step_result("small", 64, "fcnn", 3.0),  # round 2
        _step_result("small", 64, "torch-cl", 2.0),
    ]
    results = train_bench.best_of_rounds(runs)
    train_bench.add_ratios(results)
    fcnn_row = next(r for r in results if r["impl"] == "fcnn")
    assert fcnn_row["ratio_vs_torch_cl_per_round"] == pytest.approx([0.5, 2 / 3])
    assert fcnn_row["ratio_vs_torch"] is None and fcnn_row["ratio_vs_torch_per_round"] is None
    lines = train_bench.targets(results, None)
    assert lines == [
        "small net, batch 64: fcnn / torch channels_last = 0.50 (>= 0.7): NOT met; "
        "per round 0.50, 0.67"
    ]


def test_epoch_worker_runs_train_epoch() -> None:
    out = train_bench.worker({"kind": "epoch", "model": "small", "batch": 32, "size": 80})
    assert out["size"] == 80 and out["seconds"] > 0 and np.isfinite(out["mean_loss"])
    assert out["max_rss_mb"] > 0


def _check_train_json(
    data: dict[str, Any], models: list[str], batches: list[int], torch: bool
) -> None:
    expected = {
        (c["model"], c["batch"], c["impl"]) for c in train_bench.plan(models, batches, torch)
    }
    got = {(r["model"], r["batch"], r["impl"]) for r in data["results"]}
    assert got == expected
    for r in data["results"]:
        assert r["samples_per_s"] > 0 and r["step_ms"] > 0 and np.isfinite(r["final_loss"])
        assert r["max_rss_mb"] > 0 and r["allocator"]
        if r["impl"] == "fcnn":
            assert r["step_peak_mb"] > 0
            assert (r["ratio_vs_torch"] is not None) == torch
    assert data["environment"]["numpy"] == np.__version__
    assert data["quick"] and data["epoch"] is None and data["targets"] is not None


def test_train_quick_run_smoke_without_torch(tmp_path: Path) -> None:
    """The whole script, cheaply: one model, one small batch, one step, no PyTorch."""
    out = tmp_path / "train.json"
    cmd = [sys.executable, str(BENCH / "train_bench.py"), "--quick", "--json", str(out)]
    cmd += ["--models", "small", "--batches", "16", "--no-torch", "--steps", "1", "--warmup", "0"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "| model | batch | fcnn samples/s |" in proc.stdout
    data = json.loads(out.read_text())
    _check_train_json(data, ["small"], [16], torch=False)
    assert (data["steps"], data["warmup"], data["rounds"]) == (1, 0, 1)


@pytest.mark.slow
def test_train_full_quick_run_writes_every_row(tmp_path: Path) -> None:
    """CI's ``--quick`` as documented: both models and batches, PyTorch where it imports."""
    out = tmp_path / "train.json"
    cmd = [sys.executable, str(BENCH / "train_bench.py"), "--quick", "--json", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "## Targets" in proc.stdout
    torch = _common.import_torch() is not None
    _check_train_json(json.loads(out.read_text()), ["small", "default"], [64, 128], torch)


def test_environment_reports_the_loaded_openblas_core(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")  # read by OpenBLAS at load only
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    report = _common.environment_report()
    assert report["thread_env"]["OPENBLAS_CORETYPE"] == "Haswell"
    assert report["thread_env"]["OMP_NUM_THREADS"] is None
    runtime = _common.openblas_runtime()
    assert report["blas"]["openblas"] == runtime
    build = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
    if build.get("name") != "scipy-openblas":  # not a NumPy wheel: may have no bundled OpenBLAS
        assert isinstance(runtime, dict) or runtime.startswith("unavailable")
        return
    # NumPy's wheels bundle scipy-openblas: the runtime query must find and ask it.
    assert isinstance(runtime, dict), runtime
    assert "openblas" in runtime["library"]
    assert runtime["config"].startswith(f"OpenBLAS {build['version']} ")  # the build's own
    assert runtime["corename"] and runtime["corename"] in runtime["config"]
    assert runtime["num_threads"] >= 1


def test_mpi_bench_report_takes_the_median_of_per_round_ratios() -> None:
    import mpi_bench

    def row(impl: str, sps: float) -> dict[str, Any]:
        return {"model": "small", "batch": 128, "impl": impl, "samples_per_s": sps}

    rounds = [
        [row("fcnn x1", 100.0), row("fcnn x2", 180.0), row("torch-cl", 200.0)],
        [row("fcnn x1", 50.0), row("fcnn x2", 60.0), row("torch-cl", 40.0)],
        [row("fcnn x1", 100.0), row("fcnn x2", 160.0), row("torch-cl", 150.0)],
    ]
    assert mpi_bench.ratios(rounds, "small", 128, "fcnn x2", "fcnn x1") == [1.8, 1.2, 1.6]
    text = mpi_bench.report(rounds, [1, 2])
    assert "fcnn x2 / fcnn x1 = 1.60 [1.20, 1.80] (target >= 1.5: met)" in text
    assert "fcnn x2 / torch-cl = 1.07 [0.90, 1.50] (target >= 1.0: met)" in text
    assert "| small | 128 | fcnn x2 | 180 |" in text  # the fastest round's row


@pytest.mark.slow
def test_mpi_bench_quick_run_on_two_ranks(tmp_path: Path) -> None:
    pytest.importorskip("mpi4py")
    out = tmp_path / "mpi.json"
    cmd = [sys.executable, str(BENCH / "mpi_bench.py"), "--quick", "--json", str(out)]
    cmd += ["--models", "small", "--batches", "32", "--no-torch"]
    proc = run_in_session(cmd, timeout=300)  # a timeout kills mpi_bench's mpiexec and ranks too
    assert proc.returncode == 0, proc.stderr
    assert "fcnn x2 / fcnn x1 = " in proc.stdout
    rows = json.loads(out.read_text())["rounds"][0]
    assert {r["impl"] for r in rows} == {"fcnn x1", "fcnn x2"}
    assert all(r["samples_per_s"] > 0 and r["allreduce_ms"] >= 0 for r in rows)


def test_mpi_bench_fits_latency_and_bandwidth() -> None:
    import mpi_bench

    ms = {str(n): 0.01 + n / 2e6 for n in (1024, 65536, 1 << 20)}  # 10 us + 2 GB/s
    alpha, bw = mpi_bench.fit_latency_bandwidth(ms)
    assert alpha == pytest.approx(0.01, rel=1e-6) and bw == pytest.approx(2e6, rel=1e-6)
