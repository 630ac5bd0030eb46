"""Sphinx configuration of fcnn's documentation site.

Build it (the same command CI runs, warnings are errors)::

    pip install -e ".[docs]"
    sphinx-build -W --keep-going -b html docs docs/_build/html

then open ``docs/_build/html/index.html``. Pages are Markdown (MyST); the API
reference is generated from the docstrings by autodoc. Nothing is fetched from the
network at build or view time: no intersphinx, the bundled alabaster theme, and
formulas are plain-text blocks (no MathJax from a CDN).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # the package, installed or not

import fcnn  # noqa: E402

project = "fcnn"
author = "the fcnn authors"
copyright = "the fcnn authors, MIT licence"
release = fcnn.__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "**/.ipynb_checkpoints"]

# Anchors for "page.md#section" links (docs/architecture.md's sections are linked
# from code comments and other pages).
myst_heading_anchors = 3

# Autodoc: the docstrings are reStructuredText-compatible prose with ``::`` blocks.
autodoc_default_options = {"members": True, "show-inheritance": False}
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
autodoc_inherit_docstrings = False  # no pydantic BaseModel prose under fcnn.serve's models

html_theme = "alabaster"  # ships with Sphinx: no network at build or view time
html_title = f"fcnn {release}"
html_static_path: list[str] = []
html_show_sourcelink = False
pygments_style = "sphinx"


def _indented_blocks_are_code(app, what, name, obj, options, lines):  # type: ignore[no-untyped-def]
    """Docstrings here mark code with ``::``, but a few show an indented example
    after a plain sentence (``fcnn.io``'s module docstring). reStructuredText reads
    such a block as a quotation or a definition list (a warning, so a failed build);
    the house style means code. So an indented block (4+ spaces) that follows a
    blank line and an unindented paragraph not ending in ``::`` gets a ``::``
    paragraph of its own, which reStructuredText drops while making the block literal.
    List items' continuation lines are indented less than 4 and are left alone.
    """
    out: list[str] = []
    prev = ""  # the last non-blank line before the current blank run
    blank = False
    for line in lines:
        if not line.strip():
            blank = True
            out.append(line)
            continue
        starts_block = blank and line.startswith("    ") and prev and not prev[0].isspace()
        if starts_block and not prev.rstrip().endswith("::"):
            out.extend(["::", ""])
        out.append(line)
        if not line.startswith("    "):
            prev = line
        elif starts_block:
            prev = "::"
        blank = False
    lines[:] = out


def setup(app):  # type: ignore[no-untyped-def]
    app.connect("autodoc-process-docstring", _indented_blocks_are_code)
