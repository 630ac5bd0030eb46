"""Your own model through every tool (issue 23): ``train.py --model module:function`` with
``--model-arg``, checkpoints rebuilt from their spec, user layers imported only with
``--trust-code`` / ``trust_code=True``, ``fcnn.save_trained`` for a model built in Python,
and the command lines reading what both write. Every test runs in its tmp_path, where the
user's module is written (train.py imports from the current folder)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_parallel import mpirun, needs_mpi

import fcnn
import fcnn.visualize
import inference_example
from fcnn import train
from fcnn.io import CheckpointError, load_checkpoint, save_checkpoint
from fcnn.models import UntrustedCodeError, load_trained
from fcnn.run import RunConfig, parse_model_arg
from fcnn.specs import SpecError, check_rebuildable, import_function

pytestmark = pytest.mark.usefixtures("in_tmp_path")

FAST = ["--dataset", "lines", "--limit-train", "64", "--batch-size", "32", "--quiet"]

# The user's module. Importing it leaves a mark beside it, so a test can tell whether a
# command imported (and so ran) it.
MYNETS = '''
from pathlib import Path

import numpy as np

import fcnn

Path(__file__).with_suffix(".imported").touch()


def gate_fwd(params, x, cfg=None):
    g = 1 / (1 + np.exp(-params["a"]))
    return x * g[None, :, None, None], (x, g)


def gate_bwd(cache, dy):
    x, g = cache
    return dy * g[None, :, None, None], {"a": np.sum(dy * x, axis=(0, 2, 3)) * g * (1 - g)}


def gate_init(rng, in_shape, dtype):
    return {"a": np.zeros(in_shape[0], dtype)}, {}, tuple(in_shape)


@fcnn.rebuildable
def gate():
    return fcnn.layer(gate_fwd, gate_bwd, init=gate_init)


def tiny(num_classes, width=4, gated=False):
    """conv, relu, [gate], a residual block, pool, dense."""
    head = [fcnn.Conv2d(width, 3, padding=1), fcnn.Relu(), *([gate()] if gated else [])]
    block = fcnn.residual(fcnn.sequential(fcnn.Conv2d(width, 3, padding=1), fcnn.Relu()))
    return fcnn.sequential(*head, block, fcnn.MaxPool2d(4), fcnn.Flatten(), fcnn.Dense(num_classes))


def not_a_model(num_classes):
    return [num_classes]


def raises(num_classes):
    return fcnn.Conv2d(-1, 3)


def unmarked(num_classes):
    own = fcnn.layer(gate_fwd, gate_bwd, init=gate_init)  # not built by a @rebuildable
    return fcnn.sequential(own, fcnn.Flatten(), fcnn.Dense(num_classes))


count = 3
'''


@pytest.fixture
def mynets(in_tmp_path: Path) -> Iterator[str]:
    """A fresh module name whose file is in the current folder; forgotten afterwards."""
    name = f"mynets_{in_tmp_path.name.replace('-', '_')}"
    (in_tmp_path / f"{name}.py").write_text(MYNETS)
    yield name
    sys.modules.pop(name, None)


def imported(name: str) -> bool:
    """Whether the module ``name`` was imported since its mark was last removed."""
    return Path(f"{name}.imported").exists()


def forget(name: str) -> None:
    """As if in a new process: the module not imported, its mark gone."""
    sys.modules.pop(name, None)
    Path(f"{name}.imported").unlink(missing_ok=True)


def run(*argv: str) -> int:
    return train.main(list(argv))


# --- train.py --model module:function -------------------------------------------------------


def test_own_model_trains_saves_loads_and_resumes_like_a_registry_model(
    mynets: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = tmp_path / "m.npz"
    argv = ("--model", f"{mynets}:tiny", "--model-arg", "width=6", "--save", str(ckpt))
    assert run(*FAST, *argv, "--epochs", "1") == 0
    saved = load_checkpoint(ckpt)
    assert saved.params["conv1"]["w"].shape == (6, 1, 3, 3)  # the --model-arg reached it
    assert saved.meta["config"]["model"] == f"{mynets}:tiny"
    assert saved.meta["config"]["model_args"] == {"width": 6}
    desc = saved.meta["model"]
    assert desc["name"] == f"{mynets}:tiny" and desc["num_classes"] == 2
    assert desc["spec"]["spec_version"] == fcnn.SPEC_VERSION
    forget(mynets)
    # fcnn's own layers only: loading imports nothing, whatever function made the model
    trained = load_trained(ckpt)
    assert not imported(mynets) and trained.model.spec["layers"][2]["type"] == "Residual"
    assert run("--resume", str(ckpt), "--model-arg", "width=8", "--epochs", "2") == 1
    assert capsys.readouterr().err.startswith(
        "error: --model-arg {'width': 8} contradicts the checkpoint being resumed ({'width': 6})"
    )
    assert run("--resume", str(ckpt), "--epochs", "2", "--quiet") == 0
    assert not imported(mynets)
    resumed = load_checkpoint(ckpt)
    assert resumed.meta["config"] == {**saved.meta["config"], "epochs": 2}


def test_own_layer_in_a_checkpoint_is_imported_only_with_trust(
    mynets: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("matplotlib")  # fcnn.visualize asks for it before anything else
    try:
        import fcnn.export as export
    except ImportError:  # no onnx
        export = None
    ckpt = tmp_path / "g.npz"
    argv = ("--model", f"{mynets}:tiny", "--model-arg", "gated=true", "--save", str(ckpt))
    assert run(*FAST, *argv, "--epochs", "1") == 0
    forget(mynets)
    with pytest.raises(UntrustedCodeError) as info:
        load_trained(ckpt)
    message = str(info.value)
    why = (
        f"its model's layer gate1 is built by code, {mynets}:gate, which loading would "
        "import and run; if you trust this checkpoint, pass --trust-code (command line) or "
        "trust_code=True (Python)"
    )
    assert message == f"{ckpt}: {why}"
    assert info.value.builder == f"{mynets}:gate" and not imported(mynets)
    capsys.readouterr()
    assert run("--resume", str(ckpt), "--epochs", "2", "--quiet") == 1
    assert capsys.readouterr().err == f"error: {ckpt}: cannot resume: {why}\n"
    assert inference_example.main([str(ckpt), "--samples", "2"]) == 1
    assert capsys.readouterr().err == f"error: {message}\n"
    assert fcnn.visualize.main([str(ckpt), "--out", str(tmp_path / "pics")]) == 1
    assert capsys.readouterr().err == f"error: {message}\n"
    assert not imported(mynets) and not (tmp_path / "pics").exists()
    trained = load_trained(ckpt, trust_code=True)
    assert imported(mynets) and set(trained.params["gate1"]) == {"a"}
    forget(mynets)
    assert inference_example.main([str(ckpt), "--samples", "2", "--trust-code"]) == 0
    assert imported(mynets)
    forget(mynets)
    pics = ["--out", str(tmp_path / "pics"), "--limit-test", "20", "--saliency", "2"]
    assert fcnn.visualize.main([str(ckpt), *pics, "--trust-code"]) == 0
    assert imported(mynets) and (tmp_path / "pics" / "feature_maps.png").is_file()
    forget(mynets)
    if export is not None:  # ONNX knows fcnn's layers only: the gate is named
        assert export.main([str(ckpt)]) == 1
        assert capsys.readouterr().err == f"error: {message}\n" and not imported(mynets)
        assert export.main([str(ckpt), "--trust-code"]) == 1
        assert "gate1" in capsys.readouterr().err and not (tmp_path / "g.onnx").exists()
    assert run("--resume", str(ckpt), "--epochs", "2", "--quiet", "--trust-code") == 0
    assert load_checkpoint(ckpt).meta["epoch"] == 2


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("no_such_module_here:tiny", "no module named 'no_such_module_here' in the current folder"),
        ("{m}:nothing", "module {m} ({cwd}/{m}.py) has no 'nothing'"),
        ("{m}:count", "{m}:count is not a function (it is int)"),
        ("{m}:not_a_model", "{m}:not_a_model(2) returned a list, not a fcnn Layer"),
        ("{m}:raises", r"{m}:raises(2) raised ValueError: conv2d: out_channels must be"),
        ("{m}:unmarked", "its checkpoints could not be loaded: from_spec: gate1: unknown layer"),
    ],
)
def test_own_model_that_cannot_be_trained_is_one_line_before_any_training(
    mynets: str,
    in_tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    model: str,
    message: str,
) -> None:
    model, message = (s.format(m=mynets, cwd=in_tmp_path) for s in (model, message))
    assert run(*FAST, "--model", model, "--epochs", "1") == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: --model {model}: ") and message in err, err
    assert err.count("\n") == 1 and not Path("runs").exists()  # nothing written


def test_own_model_that_raises_says_where(mynets: str, capsys: pytest.CaptureFixture[str]) -> None:
    line = MYNETS.splitlines().index("    return fcnn.Conv2d(-1, 3)") + 1
    assert run(*FAST, "--model", f"{mynets}:raises") == 1
    assert f"({mynets}.py, line {line})" in capsys.readouterr().err  # the user's, not fcnn's


def test_a_module_whose_import_fails_is_named(
    in_tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (in_tmp_path / "fcnn_test_broken_nets.py").write_text("import numpy\n\n1 / 0\n")
    try:
        assert run(*FAST, "--model", "fcnn_test_broken_nets:f") == 1
    finally:
        sys.modules.pop("fcnn_test_broken_nets", None)
    assert capsys.readouterr().err == (
        "error: --model fcnn_test_broken_nets:f: importing fcnn_test_broken_nets raised "
        "ZeroDivisionError: division by zero (fcnn_test_broken_nets.py, line 3)\n"
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--model", "tiny"], "--model must be one of"),
        (["--model", "a:b:c"], "--model must be one of"),
        (["--model", "m:f", "--model-arg", "width"], "--model-arg must be KEY=VALUE"),
        (["--model", "m:f", "--model-arg", "2x=1"], "--model-arg must be KEY=VALUE"),
        (["--model", "m:f", "--model-arg", "a=1", "--model-arg", "a=2"], "gives a more than"),
    ],
)
def test_bad_model_flags_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        train.parse_args(argv)
    assert info.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--model-arg", "width=8"], "--model-arg is for a model of your own"),
        (["--model", "small", "--model-arg", "width=8"], "'small' of fcnn.models takes none"),
        (["--model", "m:f", "--impl", "naive"], "--impl chooses the convolutions of fcnn's"),
    ],
)
def test_model_flags_that_do_not_go_together_are_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Refused with the flags (exit 2, issue 24: settings that do not go together are bad
    flags), before anything is loaded."""
    with pytest.raises(SystemExit) as info:
        run(*FAST, *argv)
    err = capsys.readouterr().err
    assert info.value.code == 2 and message in err.splitlines()[-1]


@pytest.mark.parametrize(
    ("text", "pair"),
    [
        ("width=32", ("width", 32)),
        ("rate=0.5", ("rate", 0.5)),
        ("gated=true", ("gated", True)),
        ("norm=null", ("norm", None)),
        ('act="relu"', ("act", "relu")),
        ("act=relu", ("act", "relu")),  # not JSON: the text itself
        ("sizes=[1, 2]", ("sizes", "[1, 2]")),  # only scalars are read as JSON
        ("big=1e999", ("big", "1e999")),  # not a finite number
        ("empty=", ("empty", "")),
    ],
)
def test_model_arg_values_are_json_scalars_else_text(text: str, pair: tuple[str, Any]) -> None:
    assert parse_model_arg(text) == pair


def test_a_stored_config_keeps_0_2_0s_keys_unless_a_new_setting_is_used() -> None:
    plain = RunConfig(dataset="lines", model="small")
    assert "model_args" not in plain.as_dict() and "flip" not in plain.as_dict()
    own = RunConfig(model="m:f", model_args={"width": 8}, flip=0.5)
    assert own.as_dict()["model_args"] == {"width": 8} and own.as_dict()["flip"] == 0.5
    assert RunConfig.from_saved(own.as_dict()) == own
    with pytest.raises(ValueError, match=r"'small' of fcnn\.models takes none"):
        RunConfig.from_saved({**plain.as_dict(), "model_args": {"width": 8}})


# --- a model built in Python: fcnn.save_trained ---------------------------------------------


def _python_model(k: int = 3) -> fcnn.Layer:
    return fcnn.sequential(
        fcnn.Conv2d(4, 3, padding=1),
        fcnn.BatchNorm2d(),
        fcnn.Relu(),
        fcnn.residual(fcnn.sequential(fcnn.Conv2d(4, 3, padding=1), fcnn.Relu())),
        fcnn.GlobalAvgPool2d(),
        fcnn.Dense(k),
    )


def test_a_model_built_in_python_is_saved_for_every_tool(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("matplotlib")
    export = pytest.importorskip("fcnn.export")  # needs onnx
    model = _python_model(10)
    rng = np.random.default_rng(0)
    params, state, _ = fcnn.init(model, rng, (1, 28, 28), np.float64)  # float64: stored as 32
    state = fcnn.tree_map(lambda a: a + 0.5, state)  # running statistics of some training
    path = tmp_path / "mine.npz"
    classes = [str(d) for d in range(10)]
    fcnn.save_trained(
        path, model, params, state, input_shape=(1, 28, 28), classes=classes,
        mean=0.13, std=[0.3], name="mine", dataset="digits-sample",
    )  # fmt: skip
    trained = fcnn.load_trained(path)
    assert trained.model.spec == model.spec and trained.meta["model"]["name"] == "mine"
    assert trained.params["conv1"]["w"].dtype == np.float32
    np.testing.assert_array_equal(trained.state["bn1"]["var"], state["bn1"]["var"] + 0)
    x = rng.random((2, 1, 28, 28)).astype(np.float32)
    xn = (x.astype(np.float64) - 0.13) / 0.3
    want = fcnn.softmax(fcnn.predict(model, params, state, xn))
    np.testing.assert_allclose(trained.predict_proba(x), want, rtol=1e-4, atol=1e-6)
    assert inference_example.main([str(path), "--samples", "3"]) == 0
    pics = tmp_path / "pics"
    assert fcnn.visualize.main([str(path), "--out", str(pics), "--limit-test", "50"]) == 0
    assert (pics / "feature_maps.png").is_file()
    assert export.main([str(path), "--verify"]) == 0
    assert "(ok)" in capsys.readouterr().out
    assert train.main(["--resume", str(path)]) == 1
    assert "only train.py's checkpoints resume" in capsys.readouterr().err


def test_save_trained_refuses_what_the_tools_could_not_read(mynets: str, tmp_path: Path) -> None:
    model = _python_model()
    params, state, _ = fcnn.init(model, np.random.default_rng(0), (1, 8, 8))
    path = tmp_path / "m.npz"
    args: dict[str, Any] = {"input_shape": (1, 8, 8), "classes": ["a", "b", "c"]}
    args.update(mean=0, std=1)
    with pytest.raises(ValueError, match="the model outputs \\(3,\\) but there are 2 classes"):
        fcnn.save_trained(path, model, params, state, **{**args, "classes": ["a", "b"]})
    with pytest.raises(ValueError, match=r"normalization std\[0\] must be a finite number > 0"):
        fcnn.save_trained(path, model, params, state, **{**args, "std": 0})
    with pytest.raises(ValueError, match="params do not match the model"):
        fcnn.save_trained(path, model, {**params, "dense1": {}}, state, **args)
    with pytest.raises(ValueError, match="dataset must be one of"):
        fcnn.save_trained(path, model, params, state, **args, dataset="imagenet")
    unmarked = import_function(f"{mynets}:unmarked")(3)
    p, s, _ = fcnn.init(unmarked, np.random.default_rng(0), (1, 8, 8))
    with pytest.raises(ValueError, match="unknown layer type 'gate'"):
        fcnn.save_trained(path, unmarked, p, s, **args)
    assert not path.exists()  # nothing written by any of them
    gated = fcnn.sequential(import_function(f"{mynets}:gate")(), fcnn.Flatten(), fcnn.Dense(3))
    p, s, _ = fcnn.init(gated, np.random.default_rng(0), (1, 8, 8))
    fcnn.save_trained(path, gated, p, s, **args)
    with pytest.raises(UntrustedCodeError, match=f"layer gate1 is built by code, {mynets}:gate"):
        fcnn.load_trained(path)
    assert fcnn.load_trained(path, trust_code=True).model.spec == gated.spec


def test_a_builder_in_the_script_being_run_is_refused() -> None:
    layer = fcnn.Relu()
    spec = {"type": "gate", "builder": "__main__:gate"}
    from dataclasses import replace

    with pytest.raises(SpecError, match="__main__:gate, a function of the script being run"):
        check_rebuildable(fcnn.sequential(replace(layer, spec=spec)))


def test_a_checkpoint_saved_with_save_checkpoint_says_what_the_tools_need(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The issue's report: such a file was 'not a trained-model checkpoint ('model')' with
    no way forward."""
    model = _python_model()
    params, state, _ = fcnn.init(model, np.random.default_rng(0), (1, 8, 8))
    path = tmp_path / "bare.npz"
    save_checkpoint(path, params=params, state=state)
    with pytest.raises(CheckpointError) as info:
        load_trained(path)
    assert str(info.value) == (
        f"{path}: not a trained-model checkpoint (missing ['model', 'input_shape', 'classes', "
        "'normalization']); a model built in Python is saved for the tools with "
        "fcnn.save_trained(path, model, params, state, input_shape=..., classes=..., "
        "mean=..., std=...)"
    )
    assert inference_example.main([str(path)]) == 1
    assert capsys.readouterr().err == f"error: {info.value}\n"


def test_the_server_serves_an_own_model_and_a_save_trained_checkpoint(
    mynets: str, tmp_path: Path
) -> None:
    """create_app loads through load_trained: both kinds of checkpoint serve."""
    testclient = pytest.importorskip("fastapi.testclient")
    from fcnn.serve import create_app

    own = tmp_path / "own.npz"
    assert run(*FAST, "--model", f"{mynets}:tiny", "--epochs", "1", "--save", str(own)) == 0
    model = _python_model(2)
    params, state, _ = fcnn.init(model, np.random.default_rng(0), (1, 28, 28))
    mine = tmp_path / "mine.npz"
    fcnn.save_trained(
        mine, model, params, state, input_shape=(1, 28, 28), classes=["v", "h"], mean=0, std=1
    )
    x = np.random.default_rng(4).random((3, 1, 28, 28), dtype=np.float32)
    for path in (own, mine):
        with testclient.TestClient(create_app(str(path))) as client:
            r = client.post("/predict/array", json=x.tolist())
        assert r.status_code == 200, r.text
        got = [p["probabilities"] for p in r.json()["predictions"]]
        np.testing.assert_allclose(got, load_trained(path).predict_proba(x), rtol=1e-5)


def test_the_server_imports_an_own_layer_only_with_trust_code(
    mynets: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """python -m fcnn.serve refuses a checkpoint with a user's layer in one line, importing
    nothing, and serves it with --trust-code (uvicorn.run replaced: no socket is opened)."""
    uvicorn = pytest.importorskip("uvicorn")
    from fcnn.serve import main as serve_main

    ckpt = tmp_path / "g.npz"
    argv = ("--model", f"{mynets}:tiny", "--model-arg", "gated=true", "--save", str(ckpt))
    assert run(*FAST, *argv, "--epochs", "1") == 0
    forget(mynets)
    capsys.readouterr()
    served: list[Any] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: served.append(app))
    assert serve_main([str(ckpt)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {ckpt}: its model's layer gate1 is built by code") and (
        "pass --trust-code" in err and err.count("\n") == 1
    )
    assert not imported(mynets) and not served
    assert serve_main([str(ckpt), "--trust-code"]) == 0
    assert imported(mynets) and len(served) == 1


@needs_mpi
def test_own_model_trains_under_mpi_from_the_python_path(mynets: str, tmp_path: Path) -> None:
    """``mpiexec -n 2 python train.py --model mynets:tiny`` with mynets.py on PYTHONPATH: every
    rank imports it, and the job trains what one process trains."""
    one, two = tmp_path / "one.npz", tmp_path / "two.npz"
    argv = [*FAST, "--model", f"{mynets}:tiny", "--model-arg", "width=3", "--epochs", "1"]
    assert run(*argv, "--save", str(one)) == 0
    done = mpirun("train.py", *argv, "--save", str(two), env={"PYTHONPATH": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    a, b = load_checkpoint(one), load_checkpoint(two)
    assert b.meta["model"] == a.meta["model"] and b.meta["config"] == a.meta["config"]
    w = a.params["conv1"]["w"]
    np.testing.assert_allclose(b.params["conv1"]["w"], w, atol=1e-5 * np.abs(w).max())
