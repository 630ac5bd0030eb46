"""fcnn.parallel and ``mpiexec -n 2 python train.py``: sharding, the fused allreduce, equality
with one process, resume, and every fault ending the whole job (each run under a timeout)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import run_in_session, same_tree

import fcnn
import fcnn.run
from fcnn import train
from fcnn.io import load_checkpoint
from fcnn.models import build_model
from fcnn.parallel import (
    allreduce_mean,
    allreduce_sum,
    broadcast,
    drop_last_batch,
    mpi_timeout,
    shard,
    wait_limit,
    world,
)
from fcnn.tree import flatten_dict

ROOT = Path(__file__).resolve().parents[1]
MPIEXEC = shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or shutil.which("mpiexec")
try:
    import mpi4py  # noqa: F401

    HAVE_MPI4PY = True
except ImportError:
    HAVE_MPI4PY = False
needs_mpi = pytest.mark.skipif(
    not (HAVE_MPI4PY and MPIEXEC), reason='needs mpi4py and mpiexec: pip install "fcnn[mpi]"'
)
TIMEOUT = 120  # seconds for one mpiexec job; a hang fails the test instead of stalling CI
# Small and quick: 600 embedded digits, batch 64 (600 = 9 * 64 + 24: a short last batch).
QUICK = ["--model", "small", "--limit-train", "600", "--quiet"]


class SelfComm:
    """A one-rank stand-in with mpi4py's buffer methods, for the packing logic."""

    def Get_rank(self) -> int:
        return 0

    def Get_size(self) -> int:
        return 1

    def Allreduce(self, sendbuf: Any, recvbuf: Any) -> None:
        recvbuf[...] = sendbuf

    def Bcast(self, buf: Any, root: int = 0) -> None:
        pass


@pytest.mark.parametrize(("n", "size"), [(10, 4), (3, 4), (0, 2), (64, 2), (65, 3)])
def test_shard_covers_every_index_once_with_sizes_within_one(n: int, size: int) -> None:
    parts = [shard(n, r, size) for r in range(size)]
    covered = np.concatenate([np.arange(n)[p] for p in parts])
    np.testing.assert_array_equal(covered, np.arange(n))
    sizes = [len(range(n)[p]) for p in parts]
    assert max(sizes) - min(sizes) <= 1


def test_shard_refuses_a_rank_outside_the_world() -> None:
    with pytest.raises(ValueError, match=r"shard: rank must be in \[0, 2\), got 2"):
        shard(10, 2, 2)


def test_allreduce_and_broadcast_return_new_trees_of_the_same_shapes_and_dtypes(
    rng: np.random.Generator,
) -> None:
    tree = {
        "conv1": {"w": rng.standard_normal((2, 1, 3, 3)).astype(np.float32)},
        "dense1": {
            "w": rng.standard_normal((4, 3)).astype(np.float32),
            "b": np.zeros(3, np.float32),
        },
    }
    before = {k: v.copy() for k, v in flatten_dict(tree).items()}
    for out in (allreduce_sum(tree, SelfComm()), allreduce_mean(tree, SelfComm()),
                broadcast(tree, SelfComm())):  # fmt: skip
        assert same_tree(out, tree)
        for k, v in flatten_dict(out).items():
            assert v.dtype == np.float32 and v is not flatten_dict(tree)[k]
    for k, v in flatten_dict(tree).items():  # nothing written into the argument
        np.testing.assert_array_equal(v, before[k])


def test_world_is_none_without_a_launcher(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK"):
        monkeypatch.delenv(var, raising=False)
    assert world() is None


@pytest.mark.parametrize(
    ("n", "batch", "ranks", "batch_norm", "expected"),
    [
        (129, 64, 1, False, True),  # one image left: skipped, as always
        (130, 64, 1, True, False),
        (130, 64, 2, False, False),  # 2 left: one per rank is fine without batch norm
        (130, 64, 2, True, True),  # ... but not with it
        (131, 64, 2, True, True),  # 3 left: slices of 2 and 1
        (132, 64, 2, True, False),  # 4 left: 2 and 2
        (128, 64, 2, True, False),  # no short batch
    ],
)
def test_drop_last_batch(n: int, batch: int, ranks: int, batch_norm: bool, expected: bool) -> None:
    assert drop_last_batch(n, batch, ranks, batch_norm) is expected


def run_job(
    cmd: list[str], env: dict[str, str] | None = None, cwd: Path = ROOT
) -> subprocess.CompletedProcess[str]:
    """Run an ``mpiexec`` command line in a session of its own; at TIMEOUT, or if the test
    stops, kill the whole session (mpiexec, its proxies and every rank) and fail."""
    return run_in_session(cmd, TIMEOUT, env, cwd)


def mpirun(
    *argv: str, n: int = 2, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``mpiexec -n N python train.py ARGV`` (or another script), killed at TIMEOUT."""
    return run_job([str(MPIEXEC), "-n", str(n), sys.executable, *argv], env)


@needs_mpi
def test_two_ranks_train_the_same_model_as_one_process(tmp_path: Path) -> None:
    """Same seed, data order and augmentation: after an epoch every leaf agrees with the
    one-process run to float32 rounding (relative to the leaf's largest entry)."""
    one, two = tmp_path / "one.npz", tmp_path / "two.npz"
    assert train.main([*QUICK, "--epochs", "1", "--save", str(one)]) == 0
    done = mpirun("train.py", *QUICK, "--epochs", "1", "--save", str(two))
    assert done.returncode == 0, done.stderr
    a, b = load_checkpoint(one), load_checkpoint(two)
    for path, leaf in flatten_dict(a.params).items():
        other = flatten_dict(b.params)[path]
        err = np.abs(leaf - other).max() / np.abs(leaf).max()
        assert err < 1e-5, (path, err)
    assert b.meta["config"] == a.meta["config"]
    acc = [c.meta["history"][-1]["test_acc"] for c in (a, b)]
    assert acc[0] == pytest.approx(acc[1], abs=2e-3)  # at most a test image or two flips
    assert done.stdout.count("done: test accuracy") == 1  # rank 0 alone prints


SHARDED_EVAL = """
import numpy as np, fcnn
from fcnn.models import build_model
from fcnn.parallel import evaluate_sharded, world
comm = world()
model = build_model("small", 10)
params, state, _ = fcnn.init(model, np.random.default_rng(0), (1, 28, 28))
rng = np.random.default_rng(1)
x = rng.standard_normal((101, 1, 28, 28)).astype(np.float32)
y = rng.integers(0, 10, 101)
loss, acc = evaluate_sharded(model, params, state, x, y, comm)
ref_loss, ref_acc = fcnn.evaluate(model, params, state, x, y)
assert acc == ref_acc, (acc, ref_acc)
assert abs(loss - ref_loss) <= 1e-6 * abs(ref_loss), (loss, ref_loss)
print("rank", comm.Get_rank(), "ok", acc)
"""


@needs_mpi
def test_sharded_evaluation_equals_one_process(tmp_path: Path) -> None:
    script = tmp_path / "eval.py"
    script.write_text(SHARDED_EVAL)
    done = mpirun(str(script), n=3)  # 101 images over 3 ranks: 34, 34, 33
    assert done.returncode == 0, done.stderr
    assert len(re.findall(r"\bok\b", done.stdout)) == 3  # ranks' lines may interleave


@needs_mpi
def test_resume_under_two_ranks_is_bit_identical_and_one_process_can_continue(
    tmp_path: Path,
) -> None:
    straight, resumed = tmp_path / "straight.npz", tmp_path / "resumed.npz"
    quick = (*QUICK, "--schedule", "constant")  # so 1 epoch + 1 resumed == 2 epochs
    assert mpirun("train.py", *quick, "--epochs", "2", "--save", str(straight)).returncode == 0
    assert mpirun("train.py", *quick, "--epochs", "1", "--save", str(resumed)).returncode == 0
    done = mpirun("train.py", "--resume", str(resumed), "--epochs", "2", "--quiet")
    assert done.returncode == 0, done.stderr
    a, b = load_checkpoint(straight), load_checkpoint(resumed)
    for path, leaf in flatten_dict(a.params).items():
        np.testing.assert_array_equal(leaf, flatten_dict(b.params)[path], err_msg=path)
    # the 2-rank checkpoint continues in one process
    assert train.main(["--resume", str(resumed), "--epochs", "3", "--quiet"]) == 0
    assert load_checkpoint(resumed).meta["epoch"] == 3


@needs_mpi
def test_batch_norm_trains_on_two_ranks_with_averaged_running_statistics(tmp_path: Path) -> None:
    ckpt = tmp_path / "bn.npz"
    args = ("--model", "bn", "--limit-train", "256", "--batch-size", "32", "--quiet")
    done = mpirun("train.py", *args, "--epochs", "1", "--save", str(ckpt))
    assert done.returncode == 0, done.stderr
    state = flatten_dict(load_checkpoint(ckpt).state)
    assert state and all(np.isfinite(v).all() for v in state.values())
    # a batch of 2 splits into slices of 1 image, which batch norm refuses: said up front
    done = mpirun("train.py", *args[:4], "--batch-size", "3", "--quiet", "--no-save")
    assert done.returncode == 1
    assert "use --batch-size 4 or more" in done.stderr and "Traceback" not in done.stderr


@needs_mpi
@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning", "ignore:invalid:RuntimeWarning")
def test_a_non_finite_loss_stops_every_rank_and_keeps_the_checkpoint(tmp_path: Path) -> None:
    ckpt = tmp_path / "m.npz"
    assert mpirun("train.py", *QUICK, "--epochs", "1", "--save", str(ckpt)).returncode == 0
    before = ckpt.read_bytes()
    bad = ("--optimizer", "sgd", "--lr", "1e12", "--epochs", "3", "--overwrite")
    done = mpirun("train.py", *QUICK, *bad, "--save", str(ckpt))
    assert done.returncode == 1
    assert done.stderr.count("training loss is") == 1, done.stderr  # said once, by rank 0
    assert ckpt.read_bytes() == before


RANK_1_FAILS = """
import sys
import fcnn
import fcnn.run
from fcnn import train
from fcnn.parallel import world
if world().Get_rank() == 1:
    def broken(*args, **kwargs):
        raise RuntimeError("rank 1 broke on purpose")
    fcnn.train_epoch = broken
sys.exit(train.main({argv!r}))
"""


@needs_mpi
def test_an_exception_on_one_rank_ends_the_whole_job_with_its_message(tmp_path: Path) -> None:
    script = tmp_path / "fail.py"
    argv = [*QUICK, "--epochs", "2", "--no-save"]
    script.write_text(RANK_1_FAILS.format(argv=argv))
    start = time.monotonic()
    done = mpirun(str(script))
    assert time.monotonic() - start < 60  # promptly: rank 0 is not left in the allreduce
    assert done.returncode == 1
    assert "rank 1 broke on purpose" in done.stderr


@needs_mpi
def test_ranks_started_with_different_flags_are_refused_before_training(tmp_path: Path) -> None:
    quick = [*QUICK, "--no-save"]
    cmd = [str(MPIEXEC), "-n", "1", sys.executable, "train.py", *quick, "--seed", "0"]
    cmd += [":", "-n", "1", sys.executable, "train.py", *quick, "--seed", "1"]
    done = run_job(cmd)
    assert done.returncode == 1
    assert "rank 1 started with other settings" in done.stderr
    assert done.stderr.count("started with other settings") == 1
    assert "epoch 1" not in done.stdout


@needs_mpi
def test_ctrl_c_stops_every_rank_with_the_resume_hint(tmp_path: Path) -> None:
    ckpt = tmp_path / "m.npz"
    args = ["--model", "small", "--limit-train", "3000", "--epochs", "50", "--save", str(ckpt)]
    proc = subprocess.Popen(
        [str(MPIEXEC), "-n", "2", sys.executable, "train.py", *args, "--quiet"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # SIGINT goes to mpiexec alone; a kill reaches every rank
    )
    try:
        deadline = time.monotonic() + TIMEOUT
        while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert ckpt.exists(), "no epoch finished in time"
        time.sleep(0.5)  # past the moment the first file appears and the ranks note it saved
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode == 130, err
    assert "interrupted during epoch" in err and f"resume from {ckpt}" in err
    saved = load_checkpoint(ckpt)
    assert 1 <= saved.meta["epoch"] < 50


def test_the_step_and_state_helpers_do_not_need_mpi_for_one_rank(rng: np.random.Generator) -> None:
    """data_parallel_step over a one-rank communicator is the plain step."""
    from fcnn.parallel import data_parallel_step

    model = build_model("small", 10)
    params, state, _ = fcnn.init(model, np.random.default_rng(0), (1, 28, 28))
    opt = fcnn.sgd(0.1, momentum=0.9)
    ts = fcnn.TrainState(params, state, opt.init(params))
    x = rng.standard_normal((8, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, 8)
    ctx = fcnn.Context(train=True, rng=np.random.default_rng(0))
    plain, lp = fcnn.make_step(model, opt)(ts, x, y, ctx)
    parallel, lq = data_parallel_step(model, opt, SelfComm(), random_layers=False)(ts, x, y, ctx)  # type: ignore[arg-type]
    assert lq == pytest.approx(lp, rel=1e-6)
    for path, leaf in flatten_dict(plain.params).items():
        np.testing.assert_allclose(flatten_dict(parallel.params)[path], leaf, rtol=1e-5, atol=1e-7)


def test_blas_threads_follow_the_environment_when_it_says(monkeypatch: pytest.MonkeyPatch) -> None:
    from fcnn.parallel import set_blas_threads

    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert set_blas_threads(2) == "BLAS threads per rank from OMP_NUM_THREADS=3"


def test_sync_train_state_averages_state_and_shares_params() -> None:
    from fcnn.parallel import sync_train_state

    ts = fcnn.TrainState({"w": np.ones(3, np.float32)}, {"bn": {"mean": np.zeros(2)}}, {})
    out = sync_train_state(ts, SelfComm())  # type: ignore[arg-type]
    assert same_tree(out.params, ts.params) and same_tree(out.state, ts.state)
    assert out.params["w"] is not ts.params["w"]


@needs_mpi
def test_the_header_says_how_many_ranks_and_blas_threads(tmp_path: Path) -> None:
    env = {k: "" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    argv = ("--dataset", "lines", "--epochs", "1", "--limit-train", "64", "--no-save")
    done = mpirun("train.py", *argv, env=env)
    assert done.returncode == 0, done.stderr
    assert "data-parallel on 2 MPI ranks" in done.stdout
    assert re.search(r"\d+ BLAS threads? per rank \(cores / ranks", done.stdout), done.stdout
    assert done.stdout.count("done: test accuracy") == 1


# --- --device gpu under MPI (issue 22): device gradients go through host buffers ------------

WITHOUT_CUPY = """
import sys
sys.modules["cupy"] = None  # as on a machine without CuPy, whatever this one has
from fcnn import train
sys.exit(train.main({argv!r}))
"""

ON_THE_DOUBLE = """
import sys
sys.path.insert(0, {tests!r})
import foreign
import fcnn.run
from fcnn import train
from fcnn.parallel import world
if world().Get_rank() in {ranks!r}:  # --device gpu gives the test double (tests/foreign.py)
    fcnn.run.array_library = lambda device: foreign if device == "gpu" else np_library(device)
np_library = fcnn.ops.xp.array_library
sys.modules["cupy"] = None
sys.exit(train.main({argv!r}))
"""


@needs_mpi
def test_two_ranks_without_cupy_refuse_device_gpu_together_in_one_line(tmp_path: Path) -> None:
    script = tmp_path / "nocupy.py"
    script.write_text(WITHOUT_CUPY.format(argv=[*QUICK, "--no-save", "--device", "gpu"]))
    start = time.monotonic()
    done = mpirun(str(script))
    assert time.monotonic() - start < 60  # promptly: no rank waits for another
    assert done.returncode == 1
    assert done.stderr.count("error:") == 1, done.stderr  # said once, by rank 0
    assert "--device gpu: the GPU needs CuPy" in done.stderr
    assert "fcnn[gpu-cuda12]" in done.stderr and "fcnn[gpu-cuda13]" in done.stderr
    assert "Traceback" not in done.stderr and "epoch" not in done.stdout


@needs_mpi
def test_a_rank_that_cannot_use_the_gpu_ends_every_rank_in_one_line(tmp_path: Path) -> None:
    """Rank 0 has a device (the double), rank 1 has none: refused before any data is read."""
    script = tmp_path / "half.py"
    argv = [*QUICK, "--no-save", "--device", "gpu"]
    script.write_text(ON_THE_DOUBLE.format(tests=str(ROOT / "tests"), ranks=[0], argv=argv))
    done = mpirun(str(script))
    assert done.returncode == 1
    assert done.stderr.count("error:") == 1, done.stderr
    assert "rank 1 cannot use --device gpu as rank 0 does" in done.stderr
    assert "Traceback" not in done.stderr and "epoch" not in done.stdout


@needs_mpi
def test_two_ranks_train_on_device_arrays_as_one_process_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--device gpu on the double: gradients, the weights and the optimizer state (its step
    count on the host) travel through host buffers (MPI is never handed a device array),
    every rank shifts the images alike (one device generator), and the result is the
    one-process device run's, to float32 rounding."""
    import foreign

    one, two = tmp_path / "one.npz", tmp_path / "two.npz"
    args = [*QUICK, "--epochs", "2", "--device", "gpu"]  # digits: shifts of up to 2 pixels
    script = tmp_path / "double.py"
    argv = [*args, "--save", str(two)]
    script.write_text(ON_THE_DOUBLE.format(tests=str(ROOT / "tests"), ranks=[0, 1], argv=argv))
    done = mpirun(str(script))
    assert done.returncode == 0, done.stderr
    monkeypatch.setattr(fcnn.run, "array_library", lambda device: foreign)
    assert train.main([*args, "--save", str(one)]) == 0
    a, b = load_checkpoint(one), load_checkpoint(two)
    for path, leaf in flatten_dict(a.params).items():
        err = np.abs(leaf - flatten_dict(b.params)[path]).max() / np.abs(leaf).max()
        assert err < 1e-5, (path, err)
    assert a.opt_state is not None and b.opt_state is not None
    assert int(a.opt_state["step"]) == int(b.opt_state["step"]) == 2 * 10  # 600 = 9 * 64 + 24
    assert b.meta["history"][-1]["test_acc"] == pytest.approx(
        a.meta["history"][-1]["test_acc"], abs=2e-3
    )


# --- issue 24: ranks that disagree or stop answering end the job, saying who ----------------


@needs_mpi
@pytest.mark.parametrize(
    ("rank0", "rank1"),
    [(["--save", "s.npz"], ["--no-save"]), (["--save", "a.npz"], ["--save", "b.npz"])],
)
def test_regression_ranks_that_disagreed_on_save_hung_after_epoch_1(
    tmp_path: Path, rank0: list[str], rank1: list[str]
) -> None:
    """Rank 0 saved and waited in the barrier after its checkpoint; rank 1, with --no-save,
    was already in the next step's allreduce: both spun at 100% CPU forever. The files
    flags are now part of what the ranks agree on before training."""
    common = [sys.executable, str(ROOT / "train.py"), "--dataset", "lines", "--quiet"]
    cmd = [str(MPIEXEC), "-n", "1", *common, *rank0, ":", "-n", "1", *common, *rank1]
    start = time.monotonic()
    done = run_job(cmd, cwd=tmp_path)
    took = time.monotonic() - start
    assert done.returncode == 1, done.stderr
    assert "rank 1 started with other files (--save, --no-save, --metrics" in done.stderr
    assert done.stderr.count("started with other") == 1 and "Traceback" not in done.stderr
    assert list(tmp_path.iterdir()) == []  # refused before anything was written
    assert took < 60, took  # at start-up (about 2 s here), not after an epoch


RANK_1_STOPS = """
import os, signal, sys, time
import fcnn
from fcnn import train
from fcnn.parallel import world
if world().Get_rank() == 1:
    real, calls = fcnn.train_epoch, []
    def stopping(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # in epoch 2: as kill -STOP would, between two collectives
            with open({stamp!r}, "w") as f:
                f.write(repr(time.time()))
            os.kill(os.getpid(), signal.SIGSTOP)
        return real(*args, **kwargs)
    fcnn.train_epoch = stopping
sys.exit(train.main({argv!r}))
"""


@needs_mpi
def test_regression_a_stopped_rank_hung_the_job_forever_without_a_word(tmp_path: Path) -> None:
    """Issue 24: with one rank stopped (SIGSTOP) the others waited in the allreduce forever
    (still there after 120 s, no message). Now a collective waits at most the larger of
    FCNN_MPI_TIMEOUT (here 3 s) and 10 x the slowest step so far, then the lowest waiting
    rank names the silent one and the job ends."""
    stamp, script = tmp_path / "stopped", tmp_path / "stop.py"
    argv = ["--dataset", "lines", "--epochs", "5", "--quiet", "--no-save"]
    script.write_text(RANK_1_STOPS.format(stamp=str(stamp), argv=argv))
    done = mpirun(str(script), env={"FCNN_MPI_TIMEOUT": "3"})
    ended = time.time()
    assert done.returncode == 1, done.stderr
    said = (
        r"error: rank 0 waited \d+ s at allreduce #\d+ \(\d+ values\): rank 1 has not arrived "
        r"and does not answer \(stopped, hung or dead\?\); ending the job \(the larger of "
        r"FCNN_MPI_TIMEOUT=3 s and 10 x the slowest step so far, [\d.e-]+ s\)\n"
    )
    found = re.search(said, done.stderr)
    assert found, done.stderr
    after = ended - float(stamp.read_text())
    # 3 s of waiting, 1 s for answers, 0.5 s for the message to leave; slack for a busy machine
    assert 3 <= after < 30, after


OUT_OF_STEP = """
import sys
import numpy as np
from fcnn.parallel import on_every_rank
def body(ranks):
    if ranks.rank == 0:
        ranks.comm.Barrier()
    else:
        ranks.comm.Allreduce(np.zeros(4), np.empty(4))
    return 0
sys.exit(on_every_rank(body))
"""


@needs_mpi
def test_ranks_in_different_collectives_are_told_not_left_hanging(tmp_path: Path) -> None:
    script = tmp_path / "out_of_step.py"
    script.write_text(OUT_OF_STEP)
    done = mpirun(str(script))
    assert done.returncode == 1, done.stderr
    said = "error: the ranks are out of step: rank 0 at barrier #1 (0 values), rank 1 at "
    assert done.stderr.count(said + "allreduce #1 (4 values)") == 1, done.stderr


@needs_mpi
def test_a_malformed_timeout_is_said_once(tmp_path: Path) -> None:
    done = mpirun("train.py", "--dataset", "lines", "--no-save", env={"FCNN_MPI_TIMEOUT": "soon"})
    assert done.returncode == 1
    assert done.stderr == (
        "error: FCNN_MPI_TIMEOUT must be a number of seconds >= 0 (0: wait forever), got 'soon'\n"
    )


def test_the_timeout_setting_and_the_limit_it_gives() -> None:
    assert mpi_timeout({}) == 60.0 and mpi_timeout({"FCNN_MPI_TIMEOUT": " 2.5 "}) == 2.5
    assert mpi_timeout({"FCNN_MPI_TIMEOUT": "0"}) == 0.0
    for bad in ("-1", "nan", "inf", "1 min"):
        with pytest.raises(ValueError, match="FCNN_MPI_TIMEOUT must be a number of seconds"):
            mpi_timeout({"FCNN_MPI_TIMEOUT": bad})
    assert wait_limit(60, 0.2) == 60  # fast steps: the floor
    assert wait_limit(60, 30) == 300  # slow steps: 10 x the slowest
    assert wait_limit(0, 30) is None  # 0: wait forever, as before
