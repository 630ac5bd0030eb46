"""Arrays on any device, proved on the CPU (issue 22): every pair, loss, optimizer and a
whole training step computes with the library of its input.

The inputs are arrays of ``foreign`` (tests/foreign.py), a test double of a device
library that fails whenever a NumPy array enters a foreign computation, and, inside
``foreign.strict()``, whenever a step reads a value on the host or uploads one. So a
``np.zeros`` left in a kernel, a hidden ``float(loss)`` or a per-step upload fails here,
without a GPU (the GPU tests proper are tests/test_gpu.py, ``-m gpu``).
"""

from __future__ import annotations

import inspect
import math
import sys
import textwrap
from pathlib import Path
from typing import Any

import foreign
import numpy as np
import pytest
from pair_cases import CASES, RANDOM_CASES, assert_same, run_case

import fcnn
import fcnn.ops.layout
import fcnn.ops.pool
from fcnn.data.augment import random_shift
from fcnn.io import load_checkpoint, save_checkpoint
from fcnn.layers.pool import Pool2dCfg, avg_pool2d_bwd, avg_pool2d_fwd
from fcnn.models import build_model
from fcnn.ops.xp import DeviceUnavailableError, array_library, device_generator, namespace

Arr = np.ndarray[Any, Any]


def foreign_leaves(tree: Any) -> list[str]:
    """The paths of ``tree``'s leaves that are not foreign arrays (should be none)."""
    flat = fcnn.flatten_dict(tree) if isinstance(tree, dict) else {"": tree}
    return [k for k, v in flat.items() if not isinstance(v, foreign.ForeignArray)]


# --- the helper itself ---------------------------------------------------------------------


def test_namespace_names_the_library_of_its_arrays() -> None:
    a = np.zeros(2)
    f = fcnn.to_device(a, foreign)
    assert namespace(a) is np and namespace(a, 1.0, None) is np and namespace() is np
    assert namespace(f) is foreign and namespace(f, 2, f) is foreign
    assert namespace(np.float32(1.0)) is np
    with pytest.raises(TypeError, match="two libraries in one call: foreign and numpy"):
        namespace(f, a)
    with pytest.raises(TypeError, match=r"not an array: builtins\.str"):
        namespace("x")


def test_to_device_and_to_host_move_trees_and_keep_what_is_already_there() -> None:
    tree = {"a": np.arange(3.0), "b": {"c": np.ones((2, 2), np.float32)}}
    dev = fcnn.to_device(tree, foreign)
    assert foreign_leaves(dev) == []
    assert fcnn.to_device(dev, foreign)["a"] is dev["a"]  # no second upload
    back = fcnn.to_host(dev)
    assert all(type(v) is np.ndarray for v in fcnn.tree_leaves(back))
    assert fcnn.to_host(tree)["a"] is tree["a"]  # no copy on the host
    np.testing.assert_array_equal(back["b"]["c"], tree["b"]["c"])
    assert back["b"]["c"].dtype == np.float32


def test_array_library_without_cupy_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "cupy", None)  # as if not installed
    assert array_library("cpu") is np
    with pytest.raises(DeviceUnavailableError) as err:
        array_library("gpu")
    message = str(err.value)
    assert "\n" not in message
    assert "pip install 'fcnn[gpu-cuda12]'" in message and "'fcnn[gpu-cuda13]'" in message
    with pytest.raises(ValueError, match="device must be 'cpu' or 'gpu', got 'tpu'"):
        array_library("tpu")


def test_device_generator_leaves_the_run_generator_stream_as_on_the_host() -> None:
    a, b = np.random.default_rng(3), np.random.default_rng(3)
    assert device_generator(np, a) is a
    dev = device_generator(foreign, b)
    assert isinstance(dev.random(2), foreign.ForeignArray)
    np.testing.assert_array_equal(a.permutation(10), b.permutation(10))


# --- every pair, loss and model on the double ------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", sorted(CASES) + sorted(RANDOM_CASES))
def test_pair_on_a_foreign_library_gives_numpys_results(name: str, dtype: Any) -> None:
    """Forward and backward with the double's arrays: every output is a foreign array, no
    host round trip happens inside, and the values are NumPy's (the device paths of the
    shims, ops.shims, sum in another order: hence a tolerance)."""
    case = {**CASES, **RANDOM_CASES}[name]
    want, got, host = run_case(case, dtype, foreign, guard=foreign.strict)
    assert foreign_leaves(got) == []
    tol = 1e-12 if dtype == np.float64 else 2e-5
    assert_same(want, host, rtol=tol, atol=tol)


def test_the_double_is_strict_about_host_round_trips() -> None:
    f = fcnn.to_device(np.arange(4.0), foreign)
    with foreign.strict():
        assert isinstance(f.sum(), foreign.ForeignArray)
        for read in (float, bool, lambda v: f"{v:.2f}", lambda v: v.item()):
            with pytest.raises(foreign.HostSyncError):
                read(f.sum())
        with pytest.raises(foreign.HostSyncError, match="made from host data"):
            foreign.asarray([1.0])
    assert float(f.sum()) == 6.0  # outside strict() it is allowed


# --- a planted np.zeros fails --------------------------------------------------------------


def _with_numpy_planted(fn: Any, old: str, new: str) -> Any:
    """``fn`` recompiled from its source with ``old`` replaced by ``new`` (a kernel with a
    ``np.zeros`` left in it), in its own module's globals."""
    source = textwrap.dedent(inspect.getsource(fn))
    assert old in source
    scope = dict(fn.__globals__, np=np)
    exec(compile(source.replace(old, new), inspect.getfile(fn), "exec"), scope)
    return scope[fn.__name__]


def test_a_planted_np_zeros_in_a_kernel_fails_on_the_double(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    x = fcnn.to_device(np.random.default_rng(0).standard_normal((2, 3, 6, 6)), foreign)
    y, cache = avg_pool2d_fwd({}, x, Pool2dCfg(2))
    dy = foreign.ones(y.shape)
    avg_pool2d_bwd(cache, dy)  # the kernel as written: fine
    planted = _with_numpy_planted(fcnn.ops.pool.avg_pool2d_bwd, "namespace(dy).zeros(", "np.zeros(")
    monkeypatch.setattr(fcnn.ops.pool, "avg_pool2d_bwd", planted)
    with pytest.raises(foreign.ForeignMixError, match="numpy"):
        avg_pool2d_bwd(cache, dy)
    # On NumPy arrays the planted kernel still works: only the double can catch it.
    yh, ch = avg_pool2d_fwd({}, fcnn.to_host(x), Pool2dCfg(2))
    avg_pool2d_bwd(ch, np.ones(yh.shape))


@pytest.mark.parametrize(
    "module", [fcnn.ops.layout, fcnn.ops.pool, fcnn.ops.im2col, fcnn.ops.conv_im2col]
)
def test_a_kernel_module_computing_with_numpy_fails_on_the_double(
    module: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As if a whole kernel module had been written with ``np.`` instead of ``xp.``."""
    model = fcnn.sequential(fcnn.Conv2d(2, 3, padding=1), fcnn.MaxPool2d(2), fcnn.Flatten())
    params, state, _ = fcnn.init(model, np.random.default_rng(0), (1, 6, 6), np.float64)
    x = np.random.default_rng(1).standard_normal((2, 1, 6, 6))
    dev = fcnn.to_device({"params": params, "x": x}, foreign)

    def run(p: Any, xx: Any) -> None:
        y, cache, _ = fcnn.forward(model, p, state, xx)
        fcnn.backward(
            model, cache, foreign.ones(y.shape) if p is dev["params"] else np.ones(y.shape)
        )

    run(dev["params"], dev["x"])
    monkeypatch.setattr(module, "namespace", lambda *arrays: np)
    with pytest.raises(TypeError):  # ForeignMixError, or namespace's "two libraries"
        run(dev["params"], dev["x"])
    run(params, x)  # NumPy arrays: no difference


# --- optimizers, trees, the step and the loops -----------------------------------------------


def _tree(rng: np.random.Generator, dtype: Any) -> dict[str, Any]:
    return {
        "conv1": {"w": rng.standard_normal((3, 2, 2, 2)).astype(dtype), "b": np.zeros(3, dtype)},
        "dense1": {"w": rng.standard_normal((4, 2)).astype(dtype), "b": np.ones(2, dtype)},
    }


OPTIMIZERS = {
    "sgd": lambda: fcnn.sgd(0.1),
    "sgd momentum l2": lambda: fcnn.sgd(0.1, momentum=0.9, weight_decay=1e-2),
    "sgd nesterov": lambda: fcnn.sgd(fcnn.cosine_decay(0.1, 10), momentum=0.8, nesterov=True),
    "adam": lambda: fcnn.adam(1e-2, weight_decay=1e-3),
    "adamw": lambda: fcnn.adamw(fcnn.one_cycle(1e-2, 10)),
}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_optimizer_updates_on_the_double_are_numpys(name: str, dtype: Any) -> None:
    rng = np.random.default_rng(4)
    params = _tree(rng, dtype)
    grads = [_tree(rng, dtype) for _ in range(3)]
    opt = OPTIMIZERS[name]()

    def train(p: Any, gs: list[Any]) -> tuple[Any, Any]:
        s = opt.init(p)
        for g in gs:
            updates, s = opt.update(g, s, p)
            p = fcnn.apply_updates(p, updates)
        return p, s

    want = train(params, grads)
    dev_params, dev_grads = fcnn.to_device((params, grads), foreign)
    with foreign.strict():
        got = train(dev_params, dev_grads)
    assert foreign_leaves(got[0]) == []
    for key in ("mu", "nu", "velocity"):
        if key in got[1]:
            assert foreign_leaves(got[1][key]) == []
    assert got[1]["step"] == want[1]["step"] == 3  # the count stays on the host
    assert_same(want, fcnn.to_host(got), rtol=0, atol=0)  # the same expressions, in order


def test_tree_helpers_on_the_double() -> None:
    tree = _tree(np.random.default_rng(5), np.float32)
    dev = fcnn.to_device(tree, foreign)
    assert foreign_leaves(fcnn.zeros_like(dev)) == []
    assert fcnn.global_norm(dev) == pytest.approx(fcnn.global_norm(tree), rel=1e-12)
    clipped, norm = fcnn.clip_by_global_norm(dev, 0.5)
    assert norm == pytest.approx(fcnn.global_norm(tree), rel=1e-12)
    assert foreign_leaves(clipped) == []
    want, _ = fcnn.clip_by_global_norm(tree, 0.5)
    assert_same(want, fcnn.to_host(clipped), rtol=0, atol=0)


def _fast_setup(dtype: Any = np.float32) -> tuple[Any, Any, Any, Arr, Arr]:
    """The fast model with SGD: a convolution's bias before batch norm has a gradient of
    rounding noise only, which Adam would scale up to whole steps of either sign (Adam is
    compared leaf by leaf in test_optimizer_updates_on_the_double_are_numpys)."""
    model = build_model("fast", 10)
    rng = np.random.default_rng(7)
    params, state, _ = fcnn.init(model, rng, (1, 28, 28), dtype)
    opt = fcnn.sgd(fcnn.one_cycle(0.05, 20), momentum=0.9)
    ts = fcnn.TrainState(params, state, opt.init(params))
    x = rng.standard_normal((40, 1, 28, 28)).astype(dtype)
    y = rng.integers(0, 10, 40)
    return fcnn.make_step(model, opt, fcnn.label_smoothing(0.1)), ts, model, x, y


def test_a_training_step_on_the_double_neither_waits_nor_uploads() -> None:
    step, ts, _model, x, y = _fast_setup(np.float64)
    want_ts, want_loss = step(ts, x[:8], y[:8], fcnn.Context(train=True))
    assert isinstance(want_loss, float)
    dev_ts, xb, yb = fcnn.to_device((ts, x[:8], y[:8]), foreign)
    foreign.reset_counts()
    with foreign.strict():
        got_ts, got_loss = step(dev_ts, xb, yb, fcnn.Context(train=True))
        got_ts, _ = step(got_ts, xb, yb, fcnn.Context(train=True))
    assert foreign.transfers[0] == 0
    assert isinstance(got_loss, foreign.ForeignArray) and got_loss.shape == ()
    assert foreign_leaves(got_ts.params) == [] and foreign_leaves(got_ts.state) == []
    assert float(got_loss) == pytest.approx(want_loss, rel=1e-12)
    want_ts, _ = step(want_ts, x[:8], y[:8], fcnn.Context(train=True))
    assert_same(want_ts.params, fcnn.to_host(got_ts.params), rtol=1e-10, atol=1e-12)
    assert_same(want_ts.state, fcnn.to_host(got_ts.state), rtol=1e-10, atol=1e-12)


def test_train_epoch_on_device_batches_reads_the_losses_every_check() -> None:
    """Shuffled, cut and trained where the data is; the host sees the batch order once
    per epoch and the losses once every ``check_every`` steps, and ``on_batch`` gets each
    step's loss as a float, in order, as on the host."""
    step, ts, _model, x, y = _fast_setup()
    seen: list[tuple[int, float]] = []
    want_ts, want_loss = fcnn.train_epoch(
        step, ts, x, y, 8, np.random.default_rng(1), lambda i, v: seen.append((i, v))
    )
    dev_ts, xd, yd = fcnn.to_device((ts, x, y), foreign)
    got_seen: list[tuple[int, float]] = []
    foreign.reset_counts()
    got_ts, got_loss = fcnn.train_epoch(
        step,
        dev_ts,
        xd,
        yd,
        8,
        np.random.default_rng(1),
        lambda i, v: got_seen.append((i, v)),
        check_every=2,
    )
    # 5 steps: one upload (the order), reads after steps 2, 4 and at the end (5).
    assert foreign.transfers[0] == 1 + 3
    assert [i for i, _ in got_seen] == [0, 1, 2, 3, 4] == [i for i, _ in seen]
    assert all(type(v) is float for _, v in got_seen)
    np.testing.assert_allclose([v for _, v in got_seen], [v for _, v in seen], rtol=1e-4)
    assert got_loss == pytest.approx(want_loss, rel=1e-4)
    assert foreign_leaves(got_ts.params) == []
    assert_same(want_ts.params, fcnn.to_host(got_ts.params), rtol=1e-3, atol=1e-4)


def test_train_epoch_with_device_augmentation_draws_on_the_device() -> None:
    step, ts, model, x, y = _fast_setup()
    dev_ts, xd, yd = fcnn.to_device((ts, x, y), foreign)
    fill = np.asarray([-0.4], np.float32)  # a host fill value: written, never uploaded

    def augment(xb: Any, g: Any) -> Any:
        assert isinstance(g, foreign.Generator)
        return random_shift(xb, 2, g, fill=fill)

    foreign.reset_counts()
    got_ts, loss = fcnn.train_epoch(
        step,
        dev_ts,
        xd,
        yd,
        8,
        np.random.default_rng(2),
        augment=augment,
        drop_last=True,
        check_every=10,
    )
    assert foreign.transfers[0] == 1 + 1 and math.isfinite(loss)
    test_loss, acc = fcnn.evaluate(model, got_ts.params, got_ts.state, xd, yd, batch_size=16)
    want = fcnn.evaluate(model, *fcnn.to_host((got_ts.params, got_ts.state)), x, y, batch_size=16)
    assert (test_loss, acc) == pytest.approx(want, rel=1e-5)


def test_a_non_finite_loss_on_the_device_stops_the_epoch_at_its_batch() -> None:
    step, ts, _model, x, y = _fast_setup()
    x = x.copy()
    order = np.random.default_rng(1).permutation(len(x))  # train_epoch's order for seed 1
    x[order[20]] = np.nan  # in the third batch of 8
    dev_ts, xd, yd = fcnn.to_device((ts, x, y), foreign)
    seen: list[int] = []
    with pytest.raises(fcnn.NonFiniteLossError, match=r"^training loss is nan; stopping"):
        fcnn.train_epoch(
            step,
            dev_ts,
            xd,
            yd,
            8,
            np.random.default_rng(1),
            lambda i, v: seen.append(i),
            check_every=10,
        )
    assert seen == [0, 1]  # on_batch ran for the batches before the bad one


def test_random_shift_on_the_device_gives_the_hosts_images_for_the_same_draws() -> None:
    x = np.random.default_rng(3).standard_normal((9, 2, 6, 7)).astype(np.float32)
    fill = np.asarray([0.5, -1.0], np.float32)
    want = random_shift(x, 2, np.random.default_rng(8), fill=fill)
    # the double's generator is NumPy's underneath: the same offsets
    got = random_shift(fcnn.to_device(x, foreign), 2, foreign.random.default_rng(8), fill=fill)
    assert isinstance(got, foreign.ForeignArray)
    np.testing.assert_array_equal(fcnn.to_host(got), want)
    with pytest.raises(TypeError, match="rng is a numpy"):
        random_shift(fcnn.to_device(x, foreign), 2, np.random.default_rng(8))


def test_dropout_refuses_a_generator_of_another_library() -> None:
    x = fcnn.to_device(np.ones((2, 3)), foreign)
    with pytest.raises(TypeError, match="dropout: x is a foreign array but rng is a numpy"):
        fcnn.dropout_fwd({}, x, fcnn.DropoutCfg(0.5), train=True, rng=np.random.default_rng(0))


def test_a_layer_given_arrays_of_two_libraries_says_which() -> None:
    w = np.ones((2, 1, 3, 3))
    x = fcnn.to_device(np.ones((1, 1, 5, 5)), foreign)
    with pytest.raises(TypeError, match=r"conv2d: arrays must be of one library, but w is numpy"):
        fcnn.conv2d_fwd({"w": w, "b": np.zeros(2)}, x, fcnn.Conv2dCfg())


def test_a_checkpoint_round_trip_through_the_device_path_is_exact(tmp_path: Path) -> None:
    step, ts, _model, x, y = _fast_setup()
    dev_ts, xb, yb = fcnn.to_device((ts, x[:8], y[:8]), foreign)
    dev_ts, _ = step(dev_ts, xb, yb, fcnn.Context(train=True))
    host = fcnn.to_host(dev_ts)
    save_checkpoint(
        tmp_path / "c.npz", params=host.params, state=host.state, opt_state=host.opt_state
    )
    loaded = load_checkpoint(tmp_path / "c.npz")
    for saved, back in (
        (host.params, loaded.params),
        (host.state, loaded.state),
        (host.opt_state, loaded.opt_state),
    ):
        again = fcnn.to_host(fcnn.to_device(back, foreign))
        f1, f2 = fcnn.flatten_dict(saved), fcnn.flatten_dict(again)
        assert f1.keys() == f2.keys()
        for k in f1:
            assert f1[k].dtype == f2[k].dtype and np.array_equal(f1[k], f2[k]), k
    # and the CPU resumes from it: one more step on the host equals one on the device
    resumed = fcnn.TrainState(loaded.params, loaded.state, loaded.opt_state)
    want, _ = step(resumed, x[8:16], y[8:16], fcnn.Context(train=True))
    got, _ = step(dev_ts, *fcnn.to_device((x[8:16], y[8:16]), foreign), fcnn.Context(train=True))
    assert_same(want.params, fcnn.to_host(got.params), rtol=1e-4, atol=1e-5)


class _OneRank:
    """An MPI communicator of one rank (mpi4py's buffer methods on NumPy buffers)."""

    def Get_rank(self) -> int:
        return 0

    def Get_size(self) -> int:
        return 1

    def Allreduce(self, sendbuf: Any, recvbuf: Any) -> None:
        assert type(sendbuf) is np.ndarray and type(recvbuf) is np.ndarray  # host buffers
        recvbuf[...] = sendbuf

    def Bcast(self, buf: Any, root: int = 0) -> None:
        assert type(buf) is np.ndarray


def test_data_parallel_step_on_device_arrays_goes_through_the_host() -> None:
    """MPI gets host buffers whatever the arrays' library; the step's results stay on the
    device and equal make_step's."""
    from fcnn.parallel import broadcast, data_parallel_step

    _step, ts, model, x, y = _fast_setup(np.float64)
    opt = fcnn.sgd(fcnn.one_cycle(0.05, 20), momentum=0.9)
    want, want_loss = fcnn.make_step(model, opt)(ts, x[:8], y[:8], fcnn.Context(train=True))
    dp = data_parallel_step(model, opt, _OneRank(), random_layers=False)
    dev_ts, xb, yb = fcnn.to_device((ts, x[:8], y[:8]), foreign)
    got, loss = dp(dev_ts, xb, yb, fcnn.Context(train=True))
    assert loss == pytest.approx(want_loss, rel=1e-12)
    assert foreign_leaves(got.params) == []
    assert_same(want.params, fcnn.to_host(got.params), rtol=1e-10, atol=1e-12)
    shared = broadcast({"p": got.params}, _OneRank())
    assert foreign_leaves(shared["p"]) == []
