"""``python train.py --device gpu`` (issue 22), proved on the CPU.

The whole command line runs on ``foreign`` (tests/foreign.py), a strict test double of a
device array library, standing in for CuPy: ``fcnn.run``'s ``array_library`` is patched so
that ``"gpu"`` gives the double. On it: the data and the train state are uploaded once, a
step and the augmentation never touch the host, the losses come back every
``check_every`` steps, checkpoints hold NumPy arrays equal to the device's state, and a run
resumes on the other device. Without CuPy, ``--device gpu`` is one line and exit 1.
The same run on a real GPU is in tests/test_gpu.py (``-m gpu``); under MPI in
tests/test_parallel.py.
"""

from __future__ import annotations

import math
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import foreign
import numpy as np
import pytest

import fcnn
import fcnn.run
import fcnn.train
from fcnn.data.augment import random_flip
from fcnn.io import generator_state, load_checkpoint, restore_generator
from fcnn.parallel import sync_train_state
from fcnn.run import Progress, Run
from fcnn.training import CHECK_EVERY

ROOT = Path(__file__).resolve().parents[1]
# The fast recipe's model (batch norm), shifts and flips on 480 digits in batches of 8: 60
# steps an epoch, so the losses are read twice (after step 50 and at the end).
RUN = ["--recipe", "fast", "--limit-train", "480", "--batch-size", "8", "--flip", "0.5"]
RUN += ["--schedule", "constant", "--quiet"]  # constant: 1 epoch + 1 resumed == 2 epochs
STEPS = 480 // 8


@pytest.fixture
def gpu_is_the_double(monkeypatch: pytest.MonkeyPatch) -> None:
    """``--device gpu`` gives the test double's namespace instead of CuPy."""
    real = fcnn.run.array_library
    monkeypatch.setattr(
        fcnn.run, "array_library", lambda device: foreign if device == "gpu" else real(device)
    )


def arrays(ts: fcnn.TrainState) -> dict[str, Any]:
    """A train state's leaves by path (``params/conv1/w``, ``opt_state/step``, ...)."""
    return fcnn.flatten_dict({"params": ts.params, "state": ts.state, "opt_state": ts.opt_state})


def assert_identical(host: dict[str, Any], other: dict[str, Any]) -> None:
    """The same paths, and every array of the same dtype, shape and bits."""
    assert host.keys() == other.keys()
    for k, v in host.items():
        assert type(v) is np.ndarray and type(other[k]) is np.ndarray, k
        assert v.dtype == other[k].dtype and np.array_equal(v, other[k]), k


def spy(monkeypatch: pytest.MonkeyPatch, name: str) -> list[Any]:
    """Record what ``fcnn.train.<name>`` (set_up or save) is given or gives, in order."""
    real = getattr(fcnn.train, name)
    seen: list[Any] = []

    def set_up(*args: Any) -> tuple[Run, Progress]:
        run, progress = real(*args)
        seen.append(progress.ts)
        return run, progress

    def save(run: Run, progress: Progress) -> Progress:
        seen.append(progress.ts)
        return real(run, progress)  # type: ignore[no-any-return]

    monkeypatch.setattr(fcnn.train, name, {"set_up": set_up, "save": save}[name])
    return seen


def on_device(ts: fcnn.TrainState) -> list[str]:
    """The paths of ``ts``'s leaves that are not on the double (should be the step count)."""
    return [k for k, v in arrays(ts).items() if not isinstance(v, foreign.ForeignArray)]


@pytest.mark.usefixtures("gpu_is_the_double")
def test_a_device_checkpoint_holds_the_devices_state_and_resumes_on_the_cpu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ckpt = str(tmp_path / "gpu.npz")
    saves = spy(monkeypatch, "save")
    assert fcnn.train.main([*RUN, "--epochs", "1", "--device", "gpu", "--save", ckpt]) == 0
    (device_ts,) = saves
    assert on_device(device_ts) == ["opt_state/step"]  # trained on the device
    file = load_checkpoint(ckpt)
    assert_identical(arrays(fcnn.to_host(device_ts)), arrays(fcnn.TrainState(*file[:3])))
    starts = spy(monkeypatch, "set_up")  # --device cpu, the default: NumPy itself
    assert fcnn.train.main(["--resume", ckpt, "--epochs", "2", "--quiet"]) == 0
    assert_identical(arrays(starts[0]), arrays(fcnn.TrainState(*file[:3])))
    assert load_checkpoint(ckpt).meta["epoch"] == 2


@pytest.mark.usefixtures("gpu_is_the_double")
def test_a_cpu_checkpoint_resumes_on_the_device_uploaded_exactly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ckpt = str(tmp_path / "cpu.npz")
    assert fcnn.train.main([*RUN, "--epochs", "1", "--save", ckpt]) == 0
    file = arrays(fcnn.TrainState(*load_checkpoint(ckpt)[:3]))
    starts, saves = spy(monkeypatch, "set_up"), spy(monkeypatch, "save")
    assert fcnn.train.main(["--resume", ckpt, "--epochs", "2", "--device", "gpu", "--quiet"]) == 0
    assert on_device(starts[0]) == ["opt_state/step"]  # uploaded once, at set-up
    assert_identical(arrays(fcnn.to_host(starts[0])), file)
    written = load_checkpoint(ckpt)
    assert written.meta["epoch"] == 2
    assert_identical(arrays(fcnn.to_host(saves[0])), arrays(fcnn.TrainState(*written[:3])))


@pytest.mark.usefixtures("gpu_is_the_double")
def test_a_resumed_device_run_draws_what_the_straight_run_draws(tmp_path: Path) -> None:
    """Regression: the device generator was seeded from ``rng.spawn``, which a generator
    restored from a checkpoint draws from fresh OS entropy, so a resumed device run shifted
    and flipped other images than the straight run (and differently every time)."""
    straight, resumed = str(tmp_path / "straight.npz"), str(tmp_path / "resumed.npz")
    gpu = [*RUN, "--device", "gpu"]
    assert fcnn.train.main([*gpu, "--epochs", "2", "--save", straight]) == 0
    assert fcnn.train.main([*gpu, "--epochs", "1", "--save", resumed]) == 0
    assert fcnn.train.main(["--resume", resumed, "--epochs", "2", "--device", "gpu"]) == 0
    a, b = load_checkpoint(straight), load_checkpoint(resumed)
    assert_identical(arrays(fcnn.TrainState(*a[:3])), arrays(fcnn.TrainState(*b[:3])))
    assert a.meta["history"][-1]["test_acc"] == b.meta["history"][-1]["test_acc"]


def test_the_device_generator_depends_on_the_generators_position_alone() -> None:
    rng = np.random.default_rng(5).spawn(2)[1]
    rng.permutation(7)
    again = restore_generator(generator_state(rng))
    draws = [fcnn.device_generator(foreign, g).random(4) for g in (rng, again, rng)]
    assert all(np.array_equal(fcnn.to_host(d), fcnn.to_host(draws[0])) for d in draws)
    rng.permutation(7)  # the next epoch's position: other draws
    later = fcnn.to_host(fcnn.device_generator(foreign, rng).random(4))
    assert not np.array_equal(later, fcnn.to_host(draws[0]))


def strictly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` run inside ``foreign.strict()``: any host round trip in it raises."""

    def call(*args: Any, **kwargs: Any) -> Any:
        with foreign.strict():
            return fn(*args, **kwargs)

    return call


@pytest.mark.usefixtures("gpu_is_the_double")
def test_a_device_run_reads_the_host_once_every_check_every_steps(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every step and every augmentation (shifts, flips) runs in strict mode; an epoch's
    only round trips are the batch order's upload and the losses' reads."""
    real_step, real_augment = fcnn.run.training_step, fcnn.run.make_augment
    monkeypatch.setattr(fcnn.run, "training_step", lambda *a, **k: strictly(real_step(*a, **k)))
    monkeypatch.setattr(fcnn.run, "make_augment", lambda *a: strictly(real_augment(*a)))
    real_epoch, epochs = fcnn.train_epoch, []

    def counted(*args: Any, **kwargs: Any) -> Any:
        before = foreign.transfers[0]
        out = real_epoch(*args, **kwargs)
        epochs.append(foreign.transfers[0] - before)
        return out

    monkeypatch.setattr(fcnn, "train_epoch", counted)
    assert fcnn.train.main([*RUN, "--epochs", "2", "--device", "gpu", "--no-save"]) == 0
    assert epochs == [1 + math.ceil(STEPS / CHECK_EVERY)] * 2 == [3, 3]


def test_random_flip_on_the_device_selects_without_waiting() -> None:
    """Regression: a boolean mask as an index made CuPy read its count on the host."""
    x = np.random.default_rng(1).standard_normal((9, 2, 3, 4)).astype(np.float32)
    want = random_flip(x, np.random.default_rng(4))
    xd = fcnn.to_device(x, foreign)
    with foreign.strict():  # the double's generator is NumPy's underneath: the same flips
        got = random_flip(xd, foreign.random.default_rng(4))
    assert isinstance(got, foreign.ForeignArray)
    np.testing.assert_array_equal(fcnn.to_host(got), want)


def test_the_double_counts_a_boolean_mask_index_as_a_host_round_trip() -> None:
    f = fcnn.to_device(np.arange(4.0), foreign)
    with foreign.strict(), pytest.raises(foreign.HostSyncError, match="boolean mask"):
        f[f > 1.0]
    with foreign.strict(), pytest.raises(foreign.HostSyncError, match="boolean mask"):
        f[f > 1.0] = 0.0
    with foreign.strict():
        f[1:3] = 0.0  # slices and integer arrays are not


def test_sync_train_state_on_device_arrays_keeps_the_step_count_on_the_host() -> None:
    """Regression: packing a tree with device leaves and the optimizer's host step count
    for MPI raised 'arrays from two libraries' at the end of every device epoch."""

    class OneRank:
        def Get_size(self) -> int:
            return 1

        def Allreduce(self, sendbuf: Any, recvbuf: Any) -> None:
            assert type(sendbuf) is np.ndarray  # MPI sees host buffers only
            recvbuf[...] = sendbuf

        def Bcast(self, buf: Any, root: int = 0) -> None:
            assert type(buf) is np.ndarray

    params = {"w": np.arange(6.0, dtype=np.float32).reshape(2, 3)}
    opt = fcnn.adam(1e-3)
    host = fcnn.TrainState(params, {"bn": {"mean": np.ones(2, np.float32)}}, opt.init(params))
    host = host._replace(opt_state={**host.opt_state, "step": np.asarray(7, np.int64)})
    out = sync_train_state(fcnn.to_device(host, foreign), OneRank())  # type: ignore[arg-type]
    assert on_device(out) == ["opt_state/step"]
    assert out.opt_state["step"].dtype == np.int64 and int(out.opt_state["step"]) == 7
    assert_identical(arrays(fcnn.to_host(out)), arrays(host))


def test_device_gpu_without_cupy_is_one_line_and_exit_1(tmp_path: Path) -> None:
    """Before anything else (no data is read): one line naming the extras, exit 1."""
    code = "import sys; sys.modules['cupy'] = None; import train; sys.exit(train.main())"
    argv = ["--dataset", "mnist", "--data-dir", str(tmp_path / "none"), "--device", "gpu"]
    done = subprocess.run(
        [sys.executable, "-c", code, *argv], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: --device gpu: the GPU needs CuPy and a CUDA GPU")
    assert "pip install 'fcnn[gpu-cuda12]'" in lines[0] and "'fcnn[gpu-cuda13]'" in lines[0]
    assert not (tmp_path / "none").exists()  # no download was tried


def test_device_is_a_run_option_checked_like_a_flag() -> None:
    assert fcnn.run.Options().device == "cpu"
    with pytest.raises(ValueError, match=r"--device must be one of \['cpu', 'gpu'\], got 'tpu'"):
        fcnn.run.Options(device="tpu")
    with pytest.raises(SystemExit) as err:
        fcnn.train.parse_args(["--device", "tpu"])
    assert err.value.code == 2
