"""Training curves as an image (matplotlib, an optional extra: ``pip install "fcnn[plot]"``).

``history`` is the list of per-epoch records ``train.py`` writes to its metrics
file and checkpoints: dicts with ``epoch``, ``train_loss``, ``test_loss`` and
``test_acc`` (a fraction in [0, 1])::

    plot_history(history, "runs/curves.png", title="default on mnist")

The file's format is the one its extension names (``image_format``: PNG, JPEG, SVG,
PDF, TIFF, WebP); call ``image_format(path)`` before long work to refuse an unknown one early.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from .atomic import atomic_write
from .paths import PathError

__all__ = ["IMAGE_FORMATS", "MissingExtraError", "figure_class", "image_format", "plot_history"]

IMAGE_FORMATS = {
    ".png": "png",
    ".jpg": "jpeg",
    ".jpeg": "jpeg",
    ".svg": "svg",
    ".pdf": "pdf",
    ".tif": "tiff",
    ".tiff": "tiff",
    ".webp": "webp",
}
"""File extension (lower case) -> the matplotlib ``savefig`` format written for it."""


class MissingExtraError(ImportError):
    """An optional dependency is not installed; the message says which extra to install."""


def figure_class() -> Any:
    """matplotlib's ``Figure`` class, or ``MissingExtraError``.

    A ``Figure`` made directly (not through pyplot) draws with its own canvas: no
    backend is chosen and no global figure list is touched, so nothing in the
    calling process changes and nothing has to be closed.
    """
    try:
        from matplotlib.figure import Figure
    except ImportError as err:
        raise MissingExtraError(
            'plotting needs matplotlib: pip install "fcnn[plot]" (or pip install matplotlib)'
        ) from err
    return Figure


def image_format(path: str | os.PathLike[str]) -> str:
    """The ``savefig`` format that ``path``'s extension names (``x.JPG`` -> ``"jpeg"``).

    Needs no matplotlib, so a command line can check its output path before any work.
    Raises ``PathError`` (a ``ValueError``) for an unknown or missing extension.
    """
    p = os.fspath(path)
    ext = os.path.splitext(p)[1].lower()
    if ext not in IMAGE_FORMATS:
        known = ", ".join(IMAGE_FORMATS)
        named = f"the extension {ext!r}" if ext else "no extension"
        raise PathError(
            f"cannot write {p}: {named} names no image format this can write; use one of {known}"
        )
    return IMAGE_FORMATS[ext]


def plot_history(
    history: Sequence[Mapping[str, Any]], path: str | os.PathLike[str], title: str = ""
) -> None:
    """Write loss (train and test) and test accuracy per epoch to ``path``, atomically,
    in the format its extension names (``image_format``).

    Raises ``ValueError`` when ``history`` is empty or a record lacks a key, ``PathError``
    (a ``ValueError``) for an unknown extension, and ``MissingExtraError`` when
    matplotlib is not installed.
    """
    fmt = image_format(path)
    if not history:
        raise ValueError("plot_history: history is empty; nothing to plot")
    keys = ("epoch", "train_loss", "test_loss", "test_acc")
    for i, row in enumerate(history):
        missing = [k for k in keys if k not in row]
        if missing:
            raise ValueError(f"plot_history: record {i} lacks {missing}")
    fig = figure_class()(figsize=(10, 4))
    ax_loss, ax_acc = fig.subplots(1, 2)
    epochs = [row["epoch"] for row in history]
    ax_loss.plot(epochs, [row["train_loss"] for row in history], "o-", label="train")
    ax_loss.plot(epochs, [row["test_loss"] for row in history], "s-", label="test")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("cross-entropy loss")
    ax_loss.set_yscale("log")
    ax_loss.legend()
    ax_loss.grid(True, alpha=0.3)
    ax_acc.plot(epochs, [100 * row["test_acc"] for row in history], "s-", color="C1")
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("test accuracy (%)")
    ax_acc.grid(True, alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format=fmt, dpi=110)
