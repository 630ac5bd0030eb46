"""The README is the door (issue 21): short, its code runs, its commands are the ones CI runs.

- Its ```python example runs as written and does what its comments say.
- Its first two ```bash blocks are the set-up commands ../shared/tools/fresh-clone-check runs
  verbatim in a fresh clone: each makes its own virtual environment first (Debian's Python
  refuses pip outside one), and .ci/run runs the test command verbatim.
- It stays under 12,000 characters, names no path a user does not have (../shared), and
  every file it links to exists. The tour that used to follow is docs/tour.md
  (tests/test_docs.py runs it).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

import fcnn

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

INSTALL_AND_TRAIN = (
    "python3 -m venv .venv && . .venv/bin/activate && pip install -e . && python train.py"
)
INSTALL_AND_TEST = (
    'python3 -m venv .venv && . .venv/bin/activate && pip install -e ".[dev]" && pytest'
)


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)


def shell_commands(text: str) -> list[str]:
    """The first line of each bash/sh/console block, as fresh-clone-check reads them."""
    blocks = re.findall(r"```(?:bash|sh|console)\n(.*?)```", text, flags=re.DOTALL)
    return [b.strip().splitlines()[0] for b in blocks]


def test_readme_example_runs_and_does_what_it_says() -> None:
    blocks = python_blocks(README.read_text())
    assert len(blocks) == 1, "the README shows one example; the tour is docs/tour.md"
    namespace: dict[str, object] = {}
    exec(compile(blocks[0], str(README), "exec"), namespace)
    y, dx, grads = namespace["y"], namespace["dx"], namespace["grads"]
    assert isinstance(y, np.ndarray) and y.shape == (64, 8, 28, 28) and y.dtype == np.float32
    assert isinstance(dx, np.ndarray) and dx.shape == (64, 1, 28, 28)
    assert isinstance(grads, dict) and set(grads) == {"w", "b"}
    params = namespace["params"]
    assert isinstance(params, dict) and params["dense1"]["w"].shape == (1568, 10)
    ts = namespace["ts"]
    assert isinstance(ts, fcnn.TrainState)
    assert not np.array_equal(ts.params["dense1"]["w"], params["dense1"]["w"])  # a step was taken
    assert np.isfinite(float(namespace["loss"]))  # type: ignore[arg-type]


def test_readme_example_is_short() -> None:
    """Issue 21: about twelve lines of code on the first screen."""
    block = python_blocks(README.read_text())[0]
    code = [line for line in block.splitlines() if line.strip()]
    assert len(code) <= 14, f"the first example has {len(code)} lines"


def test_readme_set_up_commands_are_the_first_two_shell_blocks() -> None:
    assert shell_commands(README.read_text())[:2] == [INSTALL_AND_TRAIN, INSTALL_AND_TEST]


def test_ci_runs_the_readme_test_and_docs_commands_verbatim() -> None:
    """.ci/run runs them as written, in its own shell (so .venv stays active for ruff, mypy
    and Sphinx), with ``|| exit $?`` since ``set -e`` ignores a failure inside an && list."""
    commands = shell_commands(README.read_text())
    docs_command = next(c for c in commands if c.startswith('pip install -e ".[docs]"'))
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    for command in (commands[1], docs_command):
        assert f"{command} || exit $?" in ci, f".ci/run does not run `{command}` verbatim"
    assert "set -euo pipefail" in ci


def test_readme_is_a_door() -> None:
    """Issue 21: short, no dated benchmark tables, only paths a user has."""
    text = README.read_text()
    assert len(text) <= 12_000, f"README.md has {len(text)} characters"
    assert "../shared" not in text and "/work/" not in text
    assert not re.search(r"\b20\d\d-\d\d-\d\d\b", text), "dates belong in docs/results.md"
    assert "load average" not in text


def test_readme_links_the_tutorial_own_model_and_derivations_from_the_top() -> None:
    text = README.read_text()
    top = text[: text.index("```python")]
    for page in ("docs/tutorial.md", "docs/own_model.md", "docs/index.md"):
        assert f"]({page})" in top, page


def slug(heading: str) -> str:
    """A heading's anchor as GitHub (and MyST's heading anchors) write it."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_file_and_section_the_readme_links_exists() -> None:
    links = re.findall(r"\]\(([^)#\s]+)(?:#([^)]*))?\)", README.read_text())
    local = [(path, anchor) for path, anchor in links if "://" not in path]
    assert len(local) >= 20
    missing = [path for path, _ in local if not (ROOT / path).exists()]
    assert not missing, f"README.md links to missing files: {missing}"
    for path, anchor in local:
        if anchor:
            headings = re.findall(r"^#+ (.+)$", (ROOT / path).read_text(), flags=re.MULTILINE)
            assert anchor in {slug(h) for h in headings}, f"{path} has no section #{anchor}"


def test_slug_is_githubs() -> None:
    assert slug("Time to 99% on MNIST") == "time-to-99-on-mnist"
    assert slug("Code runs only with --trust-code") == "code-runs-only-with---trust-code"
