"""The documentation pages under docs/ stay true to the code.

- Every ```python block of a page runs, in order, in one namespace per page (the
  worked examples assert their numbers), so a page that drifts from the code fails.
- Every code quote written as `` `fcnn/<file>.py` · `<function>` · `<line>` `` names a
  file that exists, a function defined in it, and a line of that function's body
  (compared without indentation and trailing comment), so a quote goes stale loudly.
- Every page is in the site's table of contents, and the pictures exist and are small.
- A file a page shows in a ``{code-block}`` captioned with its path (docs/own_model.md:
  examples/mynets.py) holds every such block verbatim, and the page runs beside that file.

The Sphinx build itself (warnings as errors) runs in .ci/run, not here.
"""

from __future__ import annotations

import ast
import re
import shutil
import sys
from functools import cache
from pathlib import Path

import numpy as np
import pytest

import fcnn

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def repo_file(path: str) -> Path:
    """A path the pages name: ``fcnn/...`` is the package's, in ``src/``; others from the root."""
    return ROOT / "src" / path if path.startswith("fcnn/") else ROOT / path


DERIVATIONS = (
    "conv",
    "conv_impls",
    "conv_groups_dilation",
    "conv_transpose",
    "relu",
    "activations",
    "pooling",
    "flatten",
    "dense",
    "softmax_cross_entropy",
    "batch_norm",
    "dropout",
    "residual",
    "optimizers",
)
EXECUTED = (*DERIVATIONS, "tutorial", "tour", "own_model", "inference")

# Pages that run beside a file of the repository (copied into an empty folder, which becomes
# the current one), pages that run in an empty folder (they write runs/), and the extras
# they need.
BESIDE = {"own_model": ROOT / "examples" / "mynets.py"}
IN_EMPTY_FOLDER = {"inference"}
NEEDS = {"own_model": ("onnx",)}
SHOWN_FILE = re.compile(
    r"^```\{code-block\} python\n:caption: (\S+)\n\n(.*?)^```", flags=re.DOTALL | re.MULTILINE
)

QUOTE = re.compile(r"`(fcnn/[\w/]+\.py)` · `(\w+)` · `([^`]+)`")
PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```", flags=re.DOTALL | re.MULTILINE)


def pages() -> list[Path]:
    return sorted(DOCS.glob("*.md"))


def python_blocks(text: str) -> list[str]:
    return PYTHON_BLOCK.findall(text)


def code_quotes(text: str) -> list[tuple[str, str, str]]:
    return QUOTE.findall(text)


def _normal(line: str) -> str:
    """A code line without indentation, trailing comment and repeated spaces."""
    code = line.split("  #", 1)[0]
    return " ".join(code.split())


@cache
def function_lines(path: str, name: str) -> tuple[frozenset[str], ...]:
    """The normalised body lines of every function called ``name`` in ``path``."""
    source = repo_file(path).read_text()
    lines = source.splitlines()
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == name:
            end = node.end_lineno or node.lineno
            found.append(frozenset(_normal(x) for x in lines[node.lineno - 1 : end]))
    return tuple(found)


def test_every_page_is_in_the_table_of_contents() -> None:
    index = (DOCS / "index.md").read_text()
    listed = set(re.findall(r"^([\w-]+)$", index, flags=re.MULTILINE))
    missing = [p.stem for p in pages() if p.stem != "index" and p.stem not in listed]
    assert not missing, f"pages missing from docs/index.md's toctree: {missing}"


@pytest.mark.parametrize("name", EXECUTED)
def test_page_has_asserted_example_and_code_quotes(name: str) -> None:
    text = (DOCS / f"{name}.md").read_text()
    blocks = python_blocks(text)
    assert blocks, f"docs/{name}.md has no ```python example"
    assert any("assert " in b for b in blocks), f"docs/{name}.md asserts no number"
    if name in DERIVATIONS:
        assert code_quotes(text), f"docs/{name}.md quotes no code line"


@pytest.mark.parametrize("name", EXECUTED)
def test_page_examples_run(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for extra in NEEDS.get(name, ()):
        pytest.importorskip(extra)
    if name in BESIDE:  # the page's own folder: its file, its runs/
        shutil.copy(BESIDE[name], tmp_path)
    if name in BESIDE or name in IN_EMPTY_FOLDER:
        monkeypatch.chdir(tmp_path)
        monkeypatch.setattr(sys, "path", list(sys.path))  # the page may add a folder
    path = DOCS / f"{name}.md"
    namespace: dict[str, object] = {"__name__": f"docs_{name}"}
    try:
        for i, block in enumerate(python_blocks(path.read_text())):
            exec(compile(block, f"{path}:block{i + 1}", "exec"), namespace)
    finally:
        if name in BESIDE:  # forget the page's module: another test may write its own
            sys.modules.pop(BESIDE[name].stem, None)


def page_namespace(name: str) -> dict[str, object]:
    """What a page's ```python blocks leave behind, run in order in one namespace."""
    path = DOCS / f"{name}.md"
    namespace: dict[str, object] = {"__name__": f"docs_{name}"}
    for i, block in enumerate(python_blocks(path.read_text())):
        exec(compile(block, f"{path}:block{i + 1}", "exec"), namespace)
    return namespace


def test_tour_does_what_its_comments_say() -> None:
    """The tour (once the README's, issue 21) holds to its claims about shapes."""
    namespace = page_namespace("tour")
    y = namespace["y"]
    assert isinstance(y, np.ndarray) and y.shape == (5, 10)
    params = namespace["params"]
    assert isinstance(params, dict) and params["dense1"]["w"].shape == (784, 10)


def test_tour_shows_own_layer_in_a_model() -> None:
    """Issue 13: the tour wraps a user's pair with fcnn.layer, composes, trains and checks it."""
    text = (DOCS / "tour.md").read_text()
    block = next(b for b in python_blocks(text) if "fcnn.layer(" in b)
    assert "sequential(" in block and "loss_and_grad" in block and "check_layer" in block
    mine = page_namespace("tour")["mine"]
    assert isinstance(mine, fcnn.Layer)
    assert [c.kind for c in mine.children] == ["conv", "swish", "maxpool", "flatten", "dense"]


@pytest.mark.parametrize("page", pages(), ids=lambda p: p.stem)
def test_a_file_a_page_shows_holds_what_it_shows(page: Path) -> None:
    for shown, code in SHOWN_FILE.findall(page.read_text()):
        source = repo_file(shown).read_text()
        assert code.rstrip() in source, f"docs/{page.name} shows code that {shown} lacks"


def test_the_own_model_page_shows_its_file() -> None:
    """The check above has something to check, and can fail."""
    shown = SHOWN_FILE.findall((DOCS / "own_model.md").read_text())
    assert len(shown) == 4 and all(path == "examples/mynets.py" for path, _ in shown)
    assert "def gate_fwd(" in shown[0][1] and "gated_net" in shown[3][1]
    assert shown[0][1].replace("(1 - g)", "(1 + g)") not in BESIDE["own_model"].read_text()


@pytest.mark.parametrize("page", pages(), ids=lambda p: p.stem)
def test_quoted_code_lines_exist(page: Path) -> None:
    stale = []
    for path, func, line in code_quotes(page.read_text()):
        if not repo_file(path).is_file():
            stale.append(f"{path} does not exist")
            continue
        bodies = function_lines(path, func)
        if not bodies:
            stale.append(f"{path} defines no function {func}")
        elif not any(_normal(line) in body for body in bodies):
            stale.append(f"{path}, {func}: no line `{line}`")
    assert not stale, f"docs/{page.name} quotes stale code:\n" + "\n".join(stale)


@pytest.mark.parametrize("page", pages(), ids=lambda p: p.stem)
def test_every_code_quote_is_in_the_checked_form(page: Path) -> None:
    """A quote with a typo in its form would escape the check above: refuse it."""
    loose = re.compile(r"`fcnn/[\w/]+\.py` ·")
    for line in page.read_text().splitlines():
        assert len(loose.findall(line)) == len(code_quotes(line)), line


def test_quote_checker_catches_a_stale_line() -> None:
    """The checker itself can fail: a changed line is not found, a real one is."""
    bodies = function_lines("fcnn/layers/dense.py", "dense_bwd")
    assert any("dw: Array = x.T @ dy" in b for b in bodies)
    assert not any(_normal("dw: Array = dy.T @ x") in b for b in bodies)
    assert _normal("    dx: Array = dy @ w.T  # why") == "dx: Array = dy @ w.T"


def test_pictures_exist_and_are_small() -> None:
    text = (DOCS / "pictures.md").read_text()
    images = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", text)
    assert len(images) >= 5
    for name in images:
        path = DOCS / name
        assert path.is_file(), name
        assert path.stat().st_size < 300_000, f"{name} is {path.stat().st_size} bytes"
