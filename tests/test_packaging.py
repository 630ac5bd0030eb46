"""How the installed package is found: only ``fcnn`` is importable from a clone (issue 21),
and a clone folder named ``fcnn`` cannot shadow the package (issue 13)."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Top-level names in the clone that only the clone's own scripts and tests may import.
CLONE_NAMES = ("train", "inference_example", "tests", "docs", "benchmarks", "examples", "scripts")


def _python(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """``python argv`` in ``cwd`` with the environment's PYTHONPATH left out: what a user's
    own program sees of the installed package."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(
        [sys.executable, *argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def test_regression_clone_named_fcnn_shadowed_the_package_from_its_parent(tmp_path: Path) -> None:
    """A script run from the folder holding a clone named ``fcnn`` imports the package.

    The clone's root has no ``__init__.py``, so from its parent folder it is a namespace
    package ``fcnn``; with setuptools' import-hook editable install (appended after the
    path scan) that empty namespace won (no ``fcnn.Conv2dCfg``). The install puts ``src/``
    on ``sys.path``, where the path scan finds the regular package first.
    """
    (tmp_path / "fcnn").symlink_to(ROOT, target_is_directory=True)
    (tmp_path / "script.py").write_text("import fcnn\nprint(fcnn.__file__, fcnn.Conv2dCfg)\n")
    for argv in (["script.py"], ["-c", "import fcnn; print(fcnn.__file__, fcnn.Conv2dCfg)"]):
        proc = _python(argv, tmp_path)
        assert proc.returncode == 0, (
            f"{proc.stderr}\n(an editable install made before this fix: run pip install -e . again)"
        )
        assert "Conv2dCfg" in proc.stdout and proc.stdout.split()[0].endswith("__init__.py")


@pytest.mark.parametrize("name", CLONE_NAMES)
def test_regression_editable_install_leaked_the_clones_top_level_names(
    name: str, tmp_path: Path
) -> None:
    """``pip install -e .`` put the clone's root on ``sys.path``, so ``import train``,
    ``import tests`` or ``import docs`` worked from any folder (issue 21). Now only the
    package is importable; the clone's scripts are run by path."""
    code = f"import fcnn, importlib.util; print(fcnn.__file__, importlib.util.find_spec({name!r}))"
    proc = _python(["-c", code], tmp_path)
    assert proc.returncode == 0, proc.stderr
    where, spec = proc.stdout.split()
    if Path(where).resolve().is_relative_to(ROOT):  # this clone is what is installed
        assert Path(where).resolve().parent == ROOT / "src" / "fcnn"
    assert spec == "None", f"import {name} works outside the clone: {proc.stdout}"


def test_src_holds_only_the_package() -> None:
    """The .pth entry an editable install writes is ``src/``: anything else there would be
    importable everywhere. ``package-dir`` and ``where`` are what make it ``src/``."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert config["package-dir"] == {"": "src"}
    assert config["packages"]["find"] == {"where": ["src"], "include": ["fcnn*"]}
    built = (".egg-info", "__pycache__")
    names = sorted(p.name for p in (ROOT / "src").iterdir() if not p.name.endswith(built))
    assert names == ["fcnn"]
