"""Optimizers: hand-computed formulas, convergence, dtypes, purity, state round trip, PyTorch."""

from __future__ import annotations

import copy
import io
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from fcnn.optim import (
    Optimizer,
    adam,
    adamw,
    apply_updates,
    clip_by_global_norm,
    constant,
    default_decay_mask,
    sgd,
)
from fcnn.tree import (
    TreeMismatchError,
    flatten_dict,
    global_norm,
    tree_leaves,
    tree_map,
    tree_paths,
    unflatten_dict,
)

Tree = Any
Flat = dict[str, np.ndarray]

# --- helpers ------------------------------------------------------------------------------


def make_params(rng: np.random.Generator, dtype: Any = np.float64) -> Tree:
    """Nested dicts with "w" and "b" leaves at two depths, including a 0-d bias."""
    params = {
        "block": {"conv": {"w": rng.standard_normal((2, 3)), "b": rng.standard_normal(2)}},
        "head": {"w": rng.standard_normal(3), "b": np.asarray(rng.standard_normal())},
    }
    return tree_map(lambda a: a.astype(dtype), params)


def grad_sequence(rng: np.random.Generator, params: Tree, steps: int) -> list[Tree]:
    return [
        tree_map(lambda p: rng.standard_normal(p.shape).astype(p.dtype), params)
        for _ in range(steps)
    ]


def run(opt: Optimizer, params: Tree, grads_seq: list[Tree]) -> list[Tree]:
    """Params after each step (the first entry is the starting point)."""
    state = opt.init(params)
    out = [params]
    for g in grads_seq:
        updates, state = opt.update(g, state, params)
        params = apply_updates(params, updates)
        out.append(params)
    return out


def hand_run(
    params: Tree,
    grads_seq: list[Tree],
    leaf_step: Callable[[str, np.ndarray, np.ndarray, dict[str, Any], int], np.ndarray],
) -> list[Flat]:
    """Run a per-leaf update rule ``leaf_step(path, p, g, slots, t) -> update`` by hand."""
    flat = {k: v.astype(np.float64) for k, v in flatten_dict(params).items()}
    slots: dict[str, dict[str, Any]] = {k: {} for k in flat}
    out = [dict(flat)]
    for t, grads in enumerate(grads_seq):
        g_flat = flatten_dict(grads)
        flat = {k: flat[k] + leaf_step(k, flat[k], g_flat[k], slots[k], t) for k in flat}
        out.append(dict(flat))
    return out


def assert_trajectories_close(got: list[Tree], want: list[Flat], rtol: float = 1e-12) -> None:
    assert len(got) == len(want)
    for step, (g, w) in enumerate(zip(got, want, strict=True)):
        fg = flatten_dict(g)
        assert list(fg) == list(w)
        for k in w:
            np.testing.assert_allclose(fg[k], w[k], rtol=rtol, atol=1e-14, err_msg=f"{k} @ {step}")


LR, MOM, WD = 0.1, 0.9, 0.05
B1, B2, EPS = 0.8, 0.95, 1e-8  # non-default betas so that mixing them up shows


def is_w(path: str) -> bool:
    return path.split("/")[-1] == "w"


# --- hand-computed formulas ---------------------------------------------------------------


def test_plain_sgd_equals_the_tree_map_formula_exactly(rng: np.random.Generator) -> None:
    for dtype in (np.float32, np.float64):
        params = make_params(rng, dtype)
        grads_seq = grad_sequence(rng, params, 3)
        opt = sgd(LR)
        state = opt.init(params)
        for g in grads_seq:
            updates, state = opt.update(g, state, params)
            new = apply_updates(params, updates)
            want = tree_map(lambda p, gi: p - LR * gi, params, g)
            for a, b in zip(tree_leaves(new), tree_leaves(want), strict=True):
                assert a.dtype == b.dtype == dtype
                np.testing.assert_array_equal(a, b)
            params = new


def test_sgd_momentum_matches_hand_formula(rng: np.random.Generator) -> None:
    params = make_params(rng)
    grads_seq = grad_sequence(rng, params, 4)

    def rule(path: str, p: np.ndarray, g: np.ndarray, s: dict[str, Any], t: int) -> Any:
        s["v"] = MOM * s.get("v", 0.0) + g
        return -LR * s["v"]

    assert_trajectories_close(
        run(sgd(LR, momentum=MOM), params, grads_seq), hand_run(params, grads_seq, rule)
    )


def test_sgd_nesterov_matches_hand_formula(rng: np.random.Generator) -> None:
    params = make_params(rng)
    grads_seq = grad_sequence(rng, params, 4)

    def rule(path: str, p: np.ndarray, g: np.ndarray, s: dict[str, Any], t: int) -> Any:
        s["v"] = MOM * s.get("v", 0.0) + g
        return -LR * (g + MOM * s["v"])

    got = run(sgd(LR, momentum=MOM, nesterov=True), params, grads_seq)
    assert_trajectories_close(got, hand_run(params, grads_seq, rule))
    # And it is not plain momentum.
    plain = run(sgd(LR, momentum=MOM), params, grads_seq)
    assert not np.allclose(flatten_dict(got[-1])["head/w"], flatten_dict(plain[-1])["head/w"])


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_weight_decay_default_mask_skips_biases(
    rng: np.random.Generator, nesterov: bool
) -> None:
    params = make_params(rng)
    grads_seq = grad_sequence(rng, params, 3)

    def rule(path: str, p: np.ndarray, g: np.ndarray, s: dict[str, Any], t: int) -> Any:
        g = g + WD * p if is_w(path) else g
        s["v"] = MOM * s.get("v", 0.0) + g
        return -LR * (g + MOM * s["v"] if nesterov else s["v"])

    opt = sgd(LR, momentum=MOM, nesterov=nesterov, weight_decay=WD)
    assert_trajectories_close(run(opt, params, grads_seq), hand_run(params, grads_seq, rule))


def test_sgd_weight_decay_with_zero_grads_shrinks_only_weights(rng: np.random.Generator) -> None:
    params = make_params(rng)
    zero = tree_map(np.zeros_like, params)
    opt = sgd(LR, weight_decay=WD)
    updates, _ = opt.update(zero, opt.init(params), params)
    fu, fp = flatten_dict(updates), flatten_dict(params)
    for k in fp:
        want = -LR * WD * fp[k] if k.endswith("/w") else np.zeros_like(fp[k])
        np.testing.assert_allclose(fu[k], want, rtol=1e-15, err_msg=k)
    assert any(np.any(fu[k] != 0) for k in fu)


def test_sgd_custom_decay_mask(rng: np.random.Generator) -> None:
    params = make_params(rng)
    grads_seq = grad_sequence(rng, params, 3)
    seen: list[str] = []

    def mask(path: str) -> bool:
        seen.append(path)
        return path.startswith("block/")  # decays block/conv/b, not head/w

    def rule(path: str, p: np.ndarray, g: np.ndarray, s: dict[str, Any], t: int) -> Any:
        return -LR * (g + WD * p if path.startswith("block/") else g)

    got = run(sgd(LR, weight_decay=WD, decay_mask=mask), params, grads_seq)
    assert_trajectories_close(got, hand_run(params, grads_seq, rule))
    assert set(seen) == set(tree_paths(params))


def adam_rule(lr: float, wd: float, decoupled: bool) -> Callable[..., np.ndarray]:
    def rule(path: str, p: np.ndarray, g: np.ndarray, s: dict[str, Any], t: int) -> Any:
        if not decoupled and is_w(path):
            g = g + wd * p
        s["m"] = B1 * s.get("m", 0.0) + (1 - B1) * g
        s["v"] = B2 * s.get("v", 0.0) + (1 - B2) * g**2
        mhat = s["m"] / (1 - B1 ** (t + 1))
        vhat = s["v"] / (1 - B2 ** (t + 1))
        d = mhat / (np.sqrt(vhat) + EPS)
        if decoupled and is_w(path):
            d = d + wd * p
        return -lr * d

    return rule


@pytest.mark.parametrize("wd", [0.0, WD])
def test_adam_matches_hand_formula(rng: np.random.Generator, wd: float) -> None:
    params = make_params(rng)
    grads_seq = grad_sequence(rng, params, 5)
    opt = adam(0.01, b1=B1, b2=B2, eps=EPS, weight_decay=wd)
    assert_trajectories_close(
        run(opt, params, grads_seq), hand_run(params, grads_seq, adam_rule(0.01, wd, False))
    )


def test_adamw_matches_hand_formula(rng: np.random.Generator) -> None:
    params = make_params(rng)
    grads_seq = grad_sequence(rng, params, 5)
    opt = adamw(0.01, b1=B1, b2=B2, eps=EPS, weight_decay=WD)
    assert_trajectories_close(
        run(opt, params, grads_seq), hand_run(params, grads_seq, adam_rule(0.01, WD, True))
    )
    # Decoupled decay is not Adam's coupled L2.
    coupled = run(adam(0.01, b1=B1, b2=B2, eps=EPS, weight_decay=WD), params, grads_seq)
    ours = run(opt, params, grads_seq)
    assert not np.allclose(flatten_dict(ours[-1])["head/w"], flatten_dict(coupled[-1])["head/w"])


def test_adam_first_step_is_lr_times_sign(rng: np.random.Generator) -> None:
    # Bias correction makes the first step mhat / sqrt(vhat) = g / |g|.
    params = make_params(rng)
    g = grad_sequence(rng, params, 1)[0]
    opt = adam(0.01, b1=B1, b2=B2, eps=1e-12)
    updates, state = opt.update(g, opt.init(params), params)
    for u, gi in zip(tree_leaves(updates), tree_leaves(g), strict=True):
        np.testing.assert_allclose(u, -0.01 * np.sign(gi), rtol=1e-9)
    assert state["step"].shape == () and state["step"].dtype == np.int64 and int(state["step"]) == 1


def test_adamw_zero_grads_decay_only_weights(rng: np.random.Generator) -> None:
    params = make_params(rng)
    zero = tree_map(np.zeros_like, params)
    opt = adamw(0.01, weight_decay=WD)
    updates, _ = opt.update(zero, opt.init(params), params)
    fu, fp = flatten_dict(updates), flatten_dict(params)
    for k in fp:
        want = -0.01 * WD * fp[k] if k.endswith("/w") else np.zeros_like(fp[k])
        np.testing.assert_allclose(fu[k], want, rtol=1e-15, err_msg=k)


# --- schedules ----------------------------------------------------------------------------

OPTIMIZERS: dict[str, Callable[..., Optimizer]] = {
    "sgd": lambda lr, **kw: sgd(lr, **kw),
    "momentum": lambda lr, **kw: sgd(lr, momentum=MOM, **kw),
    "nesterov": lambda lr, **kw: sgd(lr, momentum=MOM, nesterov=True, **kw),
    "adam": lambda lr, **kw: adam(lr, **kw),
    "adamw": lambda lr, **kw: adamw(lr, **kw),
}


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_schedule_receives_the_count_of_updates_taken(rng: np.random.Generator, name: str) -> None:
    calls: list[int] = []

    def schedule(step: int) -> float:
        calls.append(step)
        return 0.01 / (1 + step)

    params = make_params(rng)
    run(OPTIMIZERS[name](schedule), params, grad_sequence(rng, params, 4))
    assert calls == [0, 1, 2, 3]


def test_schedule_value_scales_the_update(rng: np.random.Generator) -> None:
    params = make_params(rng)
    grads_seq = grad_sequence(rng, params, 3)

    def rule(path: str, p: np.ndarray, g: np.ndarray, s: dict[str, Any], t: int) -> Any:
        return -0.1 * (t + 1) * g

    got = run(sgd(lambda t: 0.1 * (t + 1)), params, grads_seq)
    assert_trajectories_close(got, hand_run(params, grads_seq, rule))


def test_constant_schedule() -> None:
    s = constant(0.25)
    assert [s(0), s(1), s(100)] == [0.25, 0.25, 0.25]
    with pytest.raises(ValueError, match="lr"):
        constant(-0.1)


def test_schedule_returning_a_negative_lr_raises(rng: np.random.Generator) -> None:
    params = make_params(rng)
    opt = sgd(lambda t: 0.1 - 0.1 * t)
    g = grad_sequence(rng, params, 1)[0]
    _, state = opt.update(g, opt.init(params), params)
    _, state = opt.update(g, state, params)  # lr 0 is fine
    with pytest.raises(ValueError, match=r"-0\.1 at step 2"):
        opt.update(g, state, params)


# --- convergence --------------------------------------------------------------------------


def quadratic(rng: np.random.Generator) -> tuple[Tree, Tree, Tree]:
    """0.5 * sum(curv * (p - target)**2) with positive diagonal curv, on a nested tree."""
    params = make_params(rng)
    curv = tree_map(lambda p: rng.uniform(0.5, 2.0, p.shape), params)
    target = tree_map(lambda p: rng.standard_normal(p.shape), params)
    return params, curv, target


def minimise(opt: Optimizer, params: Tree, curv: Tree, target: Tree, steps: int) -> Tree:
    state = opt.init(params)
    for _ in range(steps):
        grads = tree_map(lambda a, p, t: a * (p - t), curv, params, target)
        updates, state = opt.update(grads, state, params)
        params = apply_updates(params, updates)
    return params


CONVERGING: dict[str, Callable[[], Optimizer]] = {
    "sgd": lambda: sgd(0.3),
    "momentum": lambda: sgd(0.05, momentum=0.9),
    "nesterov": lambda: sgd(0.05, momentum=0.9, nesterov=True),
    "adam": lambda: adam(0.05),
    "adamw-no-decay": lambda: adamw(0.05, weight_decay=0.0),
}


@pytest.mark.parametrize("name", list(CONVERGING))
def test_converges_on_a_quadratic(rng: np.random.Generator, name: str) -> None:
    params, curv, target = quadratic(rng)
    start = max(
        float(np.max(np.abs(p - t)))
        for p, t in zip(tree_leaves(params), tree_leaves(target), strict=True)
    )
    assert start > 0.1
    final = minimise(CONVERGING[name](), params, curv, target, 1500)
    for k, (p, t) in zip(
        tree_paths(final), zip(tree_leaves(final), tree_leaves(target), strict=True), strict=True
    ):
        np.testing.assert_allclose(p, t, atol=1e-3, rtol=0, err_msg=f"{name} {k}")


@pytest.mark.parametrize(
    "make",
    [lambda: sgd(0.3, weight_decay=WD), lambda: adam(0.05, weight_decay=WD)],
    ids=["sgd", "adam"],
)
def test_l2_decay_converges_to_the_regularised_minimum(
    rng: np.random.Generator, make: Callable[[], Optimizer]
) -> None:
    # argmin 0.5 curv (p - t)^2 + 0.5 wd p^2 = curv t / (curv + wd) for weights; t for biases.
    params, curv, target = quadratic(rng)
    final = minimise(make(), params, curv, target, 1500)
    for k, p, a, t in zip(
        tree_paths(final), tree_leaves(final), tree_leaves(curv), tree_leaves(target), strict=True
    ):
        want = a * t / (a + WD) if k.endswith("/w") else t
        np.testing.assert_allclose(p, want, atol=1e-3, rtol=0, err_msg=k)


# --- dtypes, purity, state ----------------------------------------------------------------

ALL: dict[str, Callable[[], Optimizer]] = {
    "sgd": lambda: sgd(0.1),
    "sgd-decay": lambda: sgd(np.float64(0.1), weight_decay=np.float64(WD)),
    "momentum": lambda: sgd(0.1, momentum=np.float64(0.9), weight_decay=WD),
    "nesterov": lambda: sgd(lambda t: np.float64(0.1), momentum=0.9, nesterov=True),
    "adam": lambda: adam(np.float64(0.01), b1=np.float64(0.9), weight_decay=WD),
    "adamw": lambda: adamw(lambda t: np.float64(0.01), b2=np.float64(0.99), eps=np.float64(1e-8)),
}


@pytest.mark.parametrize("grad_dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", list(ALL))
def test_float32_params_stay_float32(
    rng: np.random.Generator, name: str, grad_dtype: type[np.floating[Any]]
) -> None:
    # NumPy scalars (np.float64 hyperparameters, schedules returning np.float64) included.
    # Float64 grads too: updates and buffers follow the params' dtype, so the state's
    # dtypes never drift.
    params = make_params(rng, np.float32)
    opt = ALL[name]()
    state = opt.init(params)
    for g in grad_sequence(rng, make_params(rng, grad_dtype), 2):
        assert all(a.dtype == grad_dtype for a in tree_leaves(g))
        updates, state = opt.update(g, state, params)
        params = apply_updates(params, updates)
        for leaf in tree_leaves(updates) + tree_leaves(params):
            assert leaf.dtype == np.float32
        for path, leaf in flatten_dict(state).items():
            assert leaf.dtype == (np.int64 if path == "step" else np.float32), path
    assert state["step"].shape == () and int(state["step"]) == 2


def test_apply_updates_keeps_param_dtype(rng: np.random.Generator) -> None:
    params: dict[str, Any] = {"a": np.ones(3, np.float32), "b": np.ones(2, np.float64)}
    updates = {"a": np.full(3, 0.5), "b": np.full(2, 0.25, np.float32)}
    new = apply_updates(params, updates)
    assert new["a"].dtype == np.float32 and new["b"].dtype == np.float64
    np.testing.assert_array_equal(new["a"], 1.5)
    np.testing.assert_array_equal(new["b"], 1.25)
    assert params["a"][0] == 1.0


def _readonly(tree: Tree) -> Tree:
    def freeze(a: np.ndarray) -> np.ndarray:
        a = a.copy()
        a.setflags(write=False)
        return a

    return tree_map(freeze, tree)


@pytest.mark.parametrize("name", list(ALL))
def test_inputs_are_not_mutated_and_read_only_inputs_work(
    rng: np.random.Generator, name: str
) -> None:
    opt = ALL[name]()
    params = _readonly(make_params(rng))
    grads = _readonly(grad_sequence(rng, params, 1)[0])
    # Take one step first so that the state holds non-zero buffers.
    _, state = opt.update(grads, opt.init(params), params)
    state = _readonly(state)
    before = copy.deepcopy((params, grads, state))
    updates, new_state = opt.update(grads, state, params)
    new_params = apply_updates(params, updates)
    for a, b in zip(tree_leaves((params, grads, state)), tree_leaves(before), strict=True):
        np.testing.assert_array_equal(a, b)
    assert int(state["step"]) == 1 and int(new_state["step"]) == 2
    # The new trees are new arrays, not views of the inputs.
    for a in tree_leaves((updates, new_state, new_params)):
        for b in tree_leaves((params, grads, state)):
            assert not np.shares_memory(a, b)


@pytest.mark.parametrize("name", list(ALL))
def test_state_round_trips_through_npz(rng: np.random.Generator, name: str) -> None:
    opt = ALL[name]()
    params = make_params(rng, np.float32)
    grads_seq = grad_sequence(rng, params, 3)
    state = opt.init(params)
    for g in grads_seq[:2]:
        updates, state = opt.update(g, state, params)
        params = apply_updates(params, updates)
    buf = io.BytesIO()
    np.savez(buf, **flatten_dict(state))
    buf.seek(0)
    with np.load(buf, allow_pickle=False) as f:
        restored = unflatten_dict({k: f[k] for k in f.files})
    assert set(tree_paths(restored)) == set(tree_paths(state))
    u1, s1 = opt.update(grads_seq[2], state, params)
    u2, s2 = opt.update(grads_seq[2], restored, params)
    for a, b in zip(tree_leaves(u1), tree_leaves(u2), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_equal(flatten_dict(s1), flatten_dict(s2))


def test_state_layout() -> None:
    params = {"dense": {"w": np.ones((2, 2)), "b": np.zeros(2)}}
    assert set(sgd(0.1).init(params)) == {"step"}
    assert set(sgd(0.1, momentum=0.5).init(params)) == {"step", "velocity"}
    for opt in (adam(), adamw()):
        state = opt.init(params)
        assert set(state) == {"step", "mu", "nu"}
        assert tree_paths(state["mu"]) == tree_paths(params)
        assert all(not np.any(a) for a in tree_leaves(state["nu"]))


def test_grads_that_do_not_match_params_raise(rng: np.random.Generator) -> None:
    params = make_params(rng)
    bad = copy.deepcopy(params)
    del bad["head"]["b"]
    for opt in (sgd(0.1), sgd(0.1, momentum=0.5), adam()):
        with pytest.raises(TreeMismatchError, match="head"):
            opt.update(bad, opt.init(params), params)


def test_default_decay_mask() -> None:
    assert default_decay_mask("w")
    assert default_decay_mask("block1/conv2/w")
    assert default_decay_mask("layers/0/w")
    for path in (
        "b",
        "conv1/b",
        "bn/gamma",
        "bn/beta",
        "w1",
        "w/b",
        "conv/weight",
        "conv/new",
        "w/",
    ):
        assert not default_decay_mask(path), path


@pytest.mark.parametrize(
    ("name", "shape", "weights"),
    [
        ("bn", (1, 28, 28), {"conv1/w", "conv2/w", "dense1/w", "dense2/w"}),
        (
            "cifar",
            (3, 32, 32),
            {f"block{i}/conv{j}/w" for i in (1, 2, 3) for j in (1, 2)} | {"dense1/w"},
        ),
    ],
)
def test_weight_decay_mask_skips_batch_norm_and_biases(
    rng: np.random.Generator, name: str, shape: tuple[int, ...], weights: set[str]
) -> None:
    """With zero gradients, weight decay moves exactly the conv and dense weights of a real
    model with batch norm: never a bias, gamma or beta (all made non-zero here)."""
    from fcnn.model import init
    from fcnn.models import build_model

    params, _, _ = init(build_model(name, 10), rng, shape, np.float64)
    params = tree_map(lambda a: rng.standard_normal(a.shape), params)
    paths = set(tree_paths(params))
    assert {p for p in paths if p.endswith(("/gamma", "/beta", "/b"))} == paths - weights
    assert {p for p in paths if default_decay_mask(p)} == weights
    zero = tree_map(np.zeros_like, params)
    for opt in (
        sgd(LR, weight_decay=WD),
        sgd(LR, momentum=MOM, nesterov=True, weight_decay=WD),
        adam(LR, weight_decay=WD),
        adamw(LR, weight_decay=WD),
    ):
        updates, _ = opt.update(zero, opt.init(params), params)
        moved = {k for k, u in flatten_dict(updates).items() if np.any(u != 0)}
        assert moved == weights


# --- bad arguments ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "word"),
    [
        (lambda: sgd(-0.1), "lr"),
        (lambda: sgd(float("nan")), "lr"),
        (lambda: sgd(0.1, momentum=-0.1), "momentum"),
        (lambda: sgd(0.1, momentum=1.0), "momentum"),
        (lambda: sgd(0.1, nesterov=True), "nesterov"),
        (lambda: sgd(0.1, weight_decay=-1e-4), "weight_decay"),
        (lambda: adam(-1e-3), "lr"),
        (lambda: adam(b1=1.0), "b1"),
        (lambda: adam(b1=-0.1), "b1"),
        (lambda: adam(b2=1.0), "b2"),
        (lambda: adam(b2=-0.5), "b2"),
        (lambda: adam(eps=0.0), "eps"),
        (lambda: adam(eps=-1e-8), "eps"),
        (lambda: adam(weight_decay=-0.1), "weight_decay"),
        (lambda: adamw(-1e-3), "lr"),
        (lambda: adamw(b1=1.5), "b1"),
        (lambda: adamw(b2=1.0), "b2"),
        (lambda: adamw(eps=0.0), "eps"),
        (lambda: adamw(weight_decay=-0.01), "weight_decay"),
    ],
)
def test_bad_arguments_raise(make: Callable[[], Optimizer], word: str) -> None:
    with pytest.raises(ValueError, match=word):
        make()


def test_error_message_names_the_value() -> None:
    with pytest.raises(ValueError, match=r"momentum.*1\.5"):
        sgd(0.1, momentum=1.5)
    with pytest.raises(ValueError, match=r"eps.*-1"):
        adam(eps=-1.0)


# --- PyTorch, when it is installed --------------------------------------------------------


def _torch_compare(
    rng: np.random.Generator,
    ours: Optimizer,
    make_torch: Callable[[Any, list[Any], list[Any]], Any],
    steps: int = 5,
) -> None:
    torch = pytest.importorskip("torch")
    params = make_params(rng)
    grads_seq = grad_sequence(rng, params, steps)
    flat = flatten_dict(params)
    tparams = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in flat.items()}
    decayed = [t for k, t in tparams.items() if default_decay_mask(k)]
    others = [t for k, t in tparams.items() if not default_decay_mask(k)]
    topt = make_torch(torch, decayed, others)
    got = run(ours, params, grads_seq)
    for step, g in enumerate(grads_seq, start=1):
        fg = flatten_dict(g)
        for k, t in tparams.items():
            t.grad = torch.tensor(fg[k], dtype=torch.float64)
        topt.step()
        fo = flatten_dict(got[step])
        for k, t in tparams.items():
            np.testing.assert_allclose(
                fo[k], t.detach().numpy(), rtol=1e-10, atol=1e-12, err_msg=f"{k} @ {step}"
            )


def test_matches_torch_sgd_nesterov(rng: np.random.Generator) -> None:
    _torch_compare(
        rng,
        sgd(LR, momentum=MOM, nesterov=True, weight_decay=WD),
        lambda torch, d, o: torch.optim.SGD(
            [{"params": d, "weight_decay": WD}, {"params": o, "weight_decay": 0.0}],
            lr=LR,
            momentum=MOM,
            nesterov=True,
        ),
    )


@pytest.mark.parametrize(("make", "torch_name"), [(adam, "Adam"), (adamw, "AdamW")])
def test_matches_torch_adam_and_adamw(
    rng: np.random.Generator, make: Callable[..., Optimizer], torch_name: str
) -> None:
    _torch_compare(
        rng,
        make(0.01, b1=B1, b2=B2, eps=EPS, weight_decay=WD),
        lambda torch, d, o: getattr(torch.optim, torch_name)(
            [{"params": d, "weight_decay": WD}, {"params": o, "weight_decay": 0.0}],
            lr=0.01,
            betas=(B1, B2),
            eps=EPS,
        ),
    )


def test_clip_by_global_norm() -> None:
    grads: Tree = {"a": np.array([3.0], np.float32), "b": {"w": np.array([[4.0]], np.float32)}}
    frozen = tree_map(lambda g: g.copy(), grads)
    clipped, norm = clip_by_global_norm(grads, 1.0)
    assert norm == pytest.approx(5.0)
    np.testing.assert_allclose(clipped["a"], [0.6], rtol=1e-6)
    np.testing.assert_allclose(clipped["b"]["w"], [[0.8]], rtol=1e-6)
    assert clipped["a"].dtype == np.float32
    assert global_norm(clipped) == pytest.approx(1.0, rel=1e-6)
    # Inputs untouched; a tree within the limit is unchanged.
    np.testing.assert_array_equal(grads["a"], frozen["a"])
    same, _ = clip_by_global_norm(grads, 10.0)
    np.testing.assert_array_equal(same["b"]["w"], grads["b"]["w"])
    with pytest.raises(ValueError, match="max_norm"):
        clip_by_global_norm(grads, 0.0)
    with pytest.raises(FloatingPointError):
        clip_by_global_norm({"a": np.array([np.nan])}, 1.0)


def test_clip_by_global_norm_lives_with_the_optimizers() -> None:
    """Clipping is an optimizer-side transform: fcnn re-exports the one in fcnn.optim."""
    import fcnn
    import fcnn.schedules

    assert fcnn.clip_by_global_norm is clip_by_global_norm
    assert "clip_by_global_norm" not in fcnn.schedules.__all__
