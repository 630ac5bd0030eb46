"""The README's ```python examples run as written, in order, in one namespace.

Examples that need files from an earlier command (checkpoints) are fenced as ```py.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

import fcnn

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)


def test_readme_has_examples() -> None:
    assert len(python_blocks(README.read_text())) >= 3


def test_readme_examples_run() -> None:
    namespace: dict[str, object] = {}
    for block in python_blocks(README.read_text()):
        exec(compile(block, str(README), "exec"), namespace)
    # The tour's claims about shapes and dtypes hold.
    y = namespace["y"]
    assert isinstance(y, np.ndarray) and y.shape == (5, 10)
    params = namespace["params"]
    assert isinstance(params, dict) and params["dense1"]["w"].shape == (784, 10)


def test_readme_shows_own_layer_in_a_model() -> None:
    """Issue 13: the tour wraps a user's pair with fcnn.layer, composes, trains and checks it."""
    text = README.read_text()
    block = next(b for b in python_blocks(text) if "fcnn.layer(" in b)
    assert "sequential(" in block and "loss_and_grad" in block and "check_layer" in block
    namespace: dict[str, object] = {}
    for b in python_blocks(text):
        exec(compile(b, str(README), "exec"), namespace)
    mine = namespace["mine"]
    assert isinstance(mine, fcnn.Layer)
    assert [c.kind for c in mine.children] == ["conv", "swish", "maxpool", "flatten", "dense"]
