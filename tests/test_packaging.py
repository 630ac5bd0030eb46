"""How the installed package is found (issue 13: a clone folder named ``fcnn``)."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_regression_clone_named_fcnn_shadowed_the_package_from_its_parent(tmp_path: Path) -> None:
    """A script run from the folder holding a clone named ``fcnn`` imports the package.

    The clone's root has no ``__init__.py``, so from its parent folder it is a namespace
    package ``fcnn``; with setuptools' import-hook editable install (appended after the
    path scan) that empty namespace won (no ``fcnn.Conv2dCfg``). The install now puts the
    repository root on ``sys.path``, where the path scan finds the regular package first.
    """
    (tmp_path / "fcnn").symlink_to(ROOT, target_is_directory=True)
    (tmp_path / "script.py").write_text("import fcnn\nprint(fcnn.__file__, fcnn.Conv2dCfg)\n")
    for argv in (["script.py"], ["-c", "import fcnn; print(fcnn.__file__, fcnn.Conv2dCfg)"]):
        proc = subprocess.run(
            [sys.executable, *argv], cwd=tmp_path, capture_output=True, text=True, timeout=120
        )
        assert proc.returncode == 0, (
            f"{proc.stderr}\n(an editable install made before this fix: run pip install -e . again)"
        )
        assert "Conv2dCfg" in proc.stdout and proc.stdout.split()[0].endswith("__init__.py")


def test_editable_install_is_a_path_entry() -> None:
    """``package-dir = {"" = "."}`` is what makes setuptools write a .pth path entry."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert config["tool"]["setuptools"]["package-dir"] == {"": "."}
    assert config["tool"]["setuptools"]["packages"]["find"]["include"] == ["fcnn*"]
