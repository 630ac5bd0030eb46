"""Pictures of what a trained network learned (matplotlib, ``pip install "fcnn[plot]"``).

From the command line, for a checkpoint written by ``train.py``::

    python -m fcnn.visualize runs/mnist-1/model.npz --out runs/mnist-1/pictures [--data-dir data]

writes five PNGs into ``--out``: ``filters.png`` (the first convolution's kernels),
``feature_maps.png`` (one test image through every convolution), ``saliency.png``
(the gradient of the class score with respect to the input pixels),
``confusion.png`` (the confusion matrix on the test set) and ``wrong.png`` (the
most confidently wrong test images); pictures already there are replaced only with
``--overwrite``. The test set is the checkpoint's dataset (``fcnn.run.load_test_set``:
from ``--data-dir``, else from the folder the training run recorded).

The computations are plain functions on arrays, usable without matplotlib::

    maps = feature_maps(model, params, state, x)          # [(path, (N, F, OH, OW)), ...]
    s = saliency(model, params, state, x, target)         # (N, C, H, W) = d score / d x
    cm = confusion_matrix(labels, predicted, k)           # (K, K), rows true, columns predicted
    idx = confidently_wrong(probs, labels, count)         # (<= count,) worst first

The saliency is the library's own backward pass run with ``dy`` = one-hot of the
target class at the output (the logits, before the softmax): no autodiff, just
the pure pairs walked in reverse. Drawing functions return matplotlib ``Figure``
objects made without pyplot (no global state; ``fcnn.plots.figure_class``).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .atomic import atomic_write
from .cli import (
    CliError,
    add_checkpoint,
    add_overwrite,
    add_trust_code,
    check_new_file,
    checkpoint_path,
    run_main,
)
from .layers.base import Array, Context, Layer, Params, State
from .losses import softmax
from .model import backward, forward, named_children, predict
from .paths import PathError, check_readable_file
from .plots import MissingExtraError, figure_class

__all__ = [
    "PICTURES",
    "confidently_wrong",
    "confusion_matrix",
    "conv_layers",
    "feature_maps",
    "first_conv_weights",
    "main",
    "plot_confusion",
    "plot_feature_maps",
    "plot_filters",
    "plot_saliency",
    "plot_wrong",
    "saliency",
    "save_figure",
]

PICTURES = ("filters.png", "feature_maps.png", "saliency.png", "confusion.png", "wrong.png")
"""The files ``python -m fcnn.visualize`` writes into its ``--out`` folder."""

_DPI = 100


# --- computations on arrays ----------------------------------------------------------------


def _join(prefix: str, name: str) -> str:
    return f"{prefix}/{name}" if prefix else name


def _leaves(model: Layer, prefix: str = "") -> Iterator[tuple[str, Layer]]:
    """``(path, layer)`` of every layer that is not a container (sequential, residual,
    concat), in forward order, a residual's block before its shortcut; paths as in params
    (``"conv1"``, ``"stage2/residual1/block/conv1"``)."""
    children = named_children(model)
    if not children:
        yield prefix, model
    for name, child in children:
        yield from _leaves(child, _join(prefix, name))


def conv_layers(model: Layer) -> list[str]:
    """Paths of the model's convolutions in forward order (``["conv1", "conv2"]``)."""
    return [path for path, layer in _leaves(model) if layer.kind == "conv"]


def _subtree(tree: Any, path: str) -> Any:
    for key in path.split("/"):
        tree = tree.get(key, {}) if isinstance(tree, dict) else {}
    return tree


def first_conv_weights(model: Layer, params: Params) -> Array:
    """The first convolution's weights ``w: (F, C, KH, KW)``; ``ValueError`` if it has none."""
    paths = conv_layers(model)
    if not paths:
        raise ValueError("first_conv_weights: the model has no convolution")
    w: Array = _subtree(params, paths[0])["w"]
    return w


def feature_maps(model: Layer, params: Params, state: State, x: Array) -> list[tuple[str, Array]]:
    """Every convolution's output for ``x: (N, C, H, W)``, in eval mode.

    Returns ``[(path, y), ...]`` with ``y: (N, F, OH, OW)`` (C-contiguous copies) in
    forward order (a residual's block before its shortcut, a concat's branches in order).
    Runs the layers one by one, exactly as ``forward`` does.
    """
    out: list[tuple[str, Array]] = []
    _walk(model, params, state, x, "", out)
    return out


def _walk(
    layer: Layer, params: Params, state: State, x: Array, path: str, out: list[tuple[str, Array]]
) -> Array:
    """``layer``'s eval-mode output for ``x``, appending every convolution's output inside
    it to ``out``. A sequential chain feeds each child the previous one's output; the paths
    of a residual or a concat each take the block's input, and the block's own ``apply``
    then joins them (its sum or concatenation is written once, in fcnn.model)."""
    children = named_children(layer)
    chain = layer.kind == "block" and bool(children)
    for name, child in children:
        y = _walk(child, params.get(name, {}), state.get(name, {}), x, _join(path, name), out)
        if chain:  # each child's output is the next one's input
            x = y
    if chain:
        return x
    # a leaf, or a residual or concat whose paths each took x: its own apply joins them
    y, _, _ = layer.apply(params, state, x, Context(train=False))
    if layer.kind == "conv":
        out.append((path, np.ascontiguousarray(y)))
    return y


def saliency(
    model: Layer, params: Params, state: State, x: Array, target: NDArray[np.integer[Any]]
) -> Array:
    """Gradient of each sample's class score with respect to its input pixels.

    x: (N, C, H, W); target: (N,) class indices -> (N, C, H, W), x's dtype, with
    ``out[n] = d logits[n, target[n]] / d x[n]``. One eval-mode forward, then the
    model's backward with ``dy`` = one-hot of ``target``: row ``n`` of ``dy`` picks
    sample ``n``'s score, and samples do not interact in eval mode.
    """
    logits, cache, _ = forward(model, params, state, x, Context(train=False))
    n, k = logits.shape
    target = np.asarray(target)
    if target.shape != (n,) or (target.size and (target.min() < 0 or target.max() >= k)):
        raise ValueError(f"saliency: target must be ({n},) class indices in [0, {k}), got {target}")
    dy = np.zeros_like(logits)
    dy[np.arange(n), target] = 1
    dx, _ = backward(model, cache, dy)
    return np.ascontiguousarray(dx)


def confusion_matrix(
    labels: NDArray[np.integer[Any]], predicted: NDArray[np.integer[Any]], k: int
) -> NDArray[np.int64]:
    """Counts ``(K, K)``: entry ``[t, p]`` is how many samples of true class ``t`` were
    predicted as ``p``. labels, predicted: (N,) ints in [0, K)."""
    labels, predicted = np.asarray(labels), np.asarray(predicted)
    if labels.shape != predicted.shape or labels.ndim != 1:
        raise ValueError(
            f"confusion_matrix: labels and predicted must be (N,) alike, got "
            f"{labels.shape} and {predicted.shape}"
        )
    flat = np.bincount(labels.astype(np.int64) * k + predicted, minlength=k * k)
    cm: NDArray[np.int64] = flat.astype(np.int64).reshape(k, k)
    return cm


def confidently_wrong(
    probs: NDArray[np.floating[Any]], labels: NDArray[np.integer[Any]], count: int
) -> NDArray[np.int64]:
    """Indices of up to ``count`` misclassified samples, most confident first.

    probs: (N, K) class probabilities; labels: (N,). Confidence is the probability
    of the (wrong) predicted class; ties go to the lower index.
    """
    predicted = probs.argmax(axis=1)
    wrong = np.flatnonzero(predicted != labels)
    confidence = probs[wrong, predicted[wrong]]
    order = np.argsort(-confidence, kind="stable")[:count]
    idx: NDArray[np.int64] = wrong[order].astype(np.int64)
    return idx


# --- drawing -------------------------------------------------------------------------------


def _grid(fig: Any, rows: int, cols: int, title_in: float) -> Any:
    """A (rows, cols) array of axes filling ``fig`` below a ``title_in``-inch title band.

    Fixed margins rather than a layout engine: image grids need no tick labels, and
    constrained layout would measure every hidden axis on each draw.
    """
    height = fig.get_figheight()
    top = 1.0 - title_in / height
    axes = fig.subplots(rows, cols, squeeze=False, gridspec_kw={"wspace": 0.15, "hspace": 0.35})
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=top)
    return axes


def _show(ax: Any, image: Array, **kwargs: Any) -> None:
    """One (C, H, W) image on ``ax``: gray for one channel, RGB for three (clipped to [0, 1])."""
    ax.set_axis_off()
    if image.shape[0] == 3:
        ax.imshow(np.clip(image.transpose(1, 2, 0), 0.0, 1.0))
    else:
        ax.imshow(image[0], cmap=kwargs.pop("cmap", "gray"), **kwargs)


def _tiles(n: int, cell: tuple[float, float], title_in: float) -> tuple[Any, list[Any]]:
    """A figure of up to 8 tiles a row for ``n`` images (each ``cell`` inches) below a
    title band, every axis hidden; returns it and the first ``n`` axes in reading order."""
    cols = min(max(n, 1), 8)
    rows = math.ceil(max(n, 1) / cols)
    fig = figure_class()(figsize=(cell[0] * cols, cell[1] * rows + title_in))
    axes = list(_grid(fig, rows, cols, title_in=title_in).flat)
    for ax in axes:
        ax.set_axis_off()
    return fig, axes[:n]


def plot_filters(w: Array, title: str = "") -> Any:
    """A grid of the kernels ``w: (F, C, KH, KW)``: gray (first channel) or RGB (C == 3),
    each scaled symmetrically around 0 (gray 0.5 is a zero weight)."""
    f = w.shape[0]
    fig, axes = _tiles(f, (1.1, 1.1), title_in=0.5)
    for i, ax in enumerate(axes):
        k = w[i].astype(np.float64)
        scale = float(np.abs(k).max()) or 1.0
        if k.shape[0] == 3:
            ax.imshow((k / scale * 0.5 + 0.5).transpose(1, 2, 0))
        else:
            ax.imshow(k[0], cmap="gray", vmin=-scale, vmax=scale)
        ax.set_title(str(i), fontsize=7)
    fig.suptitle(title or f"first convolution: {f} filters {w.shape[2]}x{w.shape[3]}")
    return fig


def plot_feature_maps(image: Array, maps: Sequence[tuple[str, Array]], per_row: int = 8) -> Any:
    """``image: (C, H, W)`` and, per convolution, up to ``per_row`` of its maps
    ``(F, OH, OW)`` (one sample's), one row per convolution."""
    rows = 1 + len(maps)
    fig = figure_class()(figsize=(1.2 * per_row, 1.35 * rows))
    axes = _grid(fig, rows, per_row, title_in=0.45)
    for ax in axes.flat:
        ax.set_axis_off()
    _show(axes[0, 0], image)
    axes[0, 0].set_title("input", fontsize=8)
    for r, (path, y) in enumerate(maps, start=1):
        for j in range(min(per_row, y.shape[0])):
            axes[r, j].imshow(y[j], cmap="viridis")
            axes[r, j].set_title(f"{path}[{j}]", fontsize=7)
    fig.suptitle("feature maps: one test image through every convolution")
    return fig


def plot_saliency(images: Array, grads: Array, titles: Sequence[str]) -> Any:
    """Per sample: the image ``(C, H, W)`` above ``max_c |d score / d x|``.

    images, grads: (N, C, H, W); titles: N strings."""
    n = images.shape[0]
    fig = figure_class()(figsize=(1.7 * n, 3.6))
    axes = _grid(fig, 2, n, title_in=0.45)
    for i in range(n):
        _show(axes[0, i], images[i])
        axes[0, i].set_title(titles[i], fontsize=8)
        heat = np.abs(grads[i]).max(axis=0)
        axes[1, i].set_axis_off()
        axes[1, i].imshow(heat, cmap="hot")
    fig.suptitle("saliency: |d class score / d pixel| (the library's own backward)")
    return fig


def plot_confusion(cm: NDArray[np.int64], classes: Sequence[str]) -> Any:
    """The confusion matrix ``(K, K)`` with counts; rows true, columns predicted."""
    k = cm.shape[0]
    size = max(4.0, 0.45 * k + 1.5)
    fig = figure_class()(figsize=(size, size))
    ax = fig.subplots()
    ax.imshow(np.log1p(cm), cmap="Blues")
    ax.set_xticks(range(k), [str(c) for c in classes], fontsize=8)
    ax.set_yticks(range(k), [str(c) for c in classes], fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    big = cm.max() if cm.size else 0
    for t in range(k):
        for p in range(k):
            if cm[t, p]:
                dark = np.log1p(cm[t, p]) > 0.6 * np.log1p(big)
                ax.text(
                    p,
                    t,
                    str(cm[t, p]),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if dark else "black",
                )
    accuracy = np.trace(cm) / max(int(cm.sum()), 1)
    ax.set_title(f"confusion matrix on {int(cm.sum())} test images ({accuracy:.2%} right)")
    fig.tight_layout()  # one axes with tick labels: cheap to measure
    return fig


def plot_wrong(
    images: Array,
    labels: Sequence[int],
    predicted: Sequence[int],
    confidence: Sequence[float],
    classes: Sequence[str],
) -> Any:
    """A grid of misclassified images ``(N, C, H, W)`` titled ``true -> predicted (p)``."""
    fig, axes = _tiles(images.shape[0], (1.3, 1.5), title_in=0.4)
    for i, ax in enumerate(axes):
        _show(ax, images[i], vmin=0.0, vmax=1.0)
        ax.set_title(
            f"{classes[labels[i]]}→{classes[predicted[i]]} {confidence[i]:.0%}", fontsize=8
        )
    fig.suptitle("most confidently wrong test images (true→predicted, confidence)")
    return fig


def save_figure(fig: Any, path: str | os.PathLike[str]) -> None:
    """Write ``fig`` as PNG to ``path``, atomically."""
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=_DPI)


# --- the command line ----------------------------------------------------------------------


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m fcnn.visualize",
        description="Draw what a trained checkpoint learned: filters, feature maps, "
        "saliency, confusion matrix, confidently wrong test images (PNG files in --out).",
    )
    add_checkpoint(p, "a checkpoint written by train.py or fcnn.save_trained")
    p.add_argument("--out", required=True, help="folder for the PNG files (created if missing)")
    add_overwrite(p)
    add_trust_code(p)
    p.add_argument(
        "--data-dir", default=None, help="the dataset's folder (default: the one training used)"
    )
    p.add_argument("--index", type=int, default=0, help="test image for the feature maps (0)")
    p.add_argument("--saliency", type=int, default=8, help="test images in saliency.png (8)")
    p.add_argument("--wrong", type=int, default=16, help="images in wrong.png (16)")
    p.add_argument("--limit-test", type=int, default=None, help="use the first N test images only")
    args = p.parse_args(argv)
    args.checkpoint = checkpoint_path(args, p)
    return args


def _load(args: argparse.Namespace) -> tuple[Any, Any, Array]:
    """The trained model, its raw test set and that set normalised, before any drawing."""
    from .data.dataset import normalize
    from .models import load_trained
    from .run import load_test_set

    check_readable_file(args.checkpoint, "checkpoint")
    for name in PICTURES:
        check_new_file(os.path.join(args.out, name), args.overwrite, "--out")
    trained = load_trained(args.checkpoint, trust_code=args.trust_code)
    if trained.record is None:
        raise CliError(f"{args.checkpoint}: the model carries no run record")
    ds = load_test_set(trained.record, args.data_dir)
    x = ds.x_test[: args.limit_test] if args.limit_test else ds.x_test
    return trained, ds, normalize(x.astype(np.float32), trained.mean, trained.std)


def run(args: argparse.Namespace) -> list[str]:
    """Draw every picture of ``PICTURES`` into ``args.out``; returns the paths written."""
    figure_class()  # MissingExtraError before any work
    trained, ds, x = _load(args)
    raw = ds.x_test[: x.shape[0]]
    labels = ds.y_test[: x.shape[0]]
    if not 0 <= args.index < x.shape[0]:
        raise CliError(f"--index must be in [0, {x.shape[0]}), got {args.index}")
    os.makedirs(args.out, exist_ok=True)
    model, params, state, classes = trained.model, trained.params, trained.state, trained.classes
    probs = softmax(predict(model, params, state, x, batch_size=500))
    predicted = probs.argmax(axis=1)
    written = []

    def save(fig: Any, name: str) -> None:
        path = os.path.join(args.out, name)
        save_figure(fig, path)
        written.append(path)

    save(plot_filters(first_conv_weights(model, params)), "filters.png")
    one = slice(args.index, args.index + 1)
    maps = [(path, y[0]) for path, y in feature_maps(model, params, state, x[one])]
    save(plot_feature_maps(raw[args.index], maps), "feature_maps.png")
    pick = np.arange(min(args.saliency, x.shape[0]))
    grads = saliency(model, params, state, x[pick], predicted[pick])
    titles = [f"{classes[predicted[i]]} ({probs[i, predicted[i]]:.0%})" for i in pick]
    save(plot_saliency(raw[pick], grads, titles), "saliency.png")
    save(
        plot_confusion(confusion_matrix(labels, predicted, len(classes)), classes), "confusion.png"
    )
    bad = confidently_wrong(probs, labels, args.wrong)
    save(
        plot_wrong(
            raw[bad],
            [int(labels[i]) for i in bad],
            [int(predicted[i]) for i in bad],
            [float(probs[i, predicted[i]]) for i in bad],
            classes,
        ),
        "wrong.png",
    )
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m fcnn.visualize``: 0 on success, 1 with one line on stderr otherwise."""
    from .io import CheckpointError

    args = _parse(argv)

    def body() -> int:
        for path in run(args):
            print(path)
        return 0

    return run_main(body, MissingExtraError, PathError, CheckpointError, OSError)


if __name__ == "__main__":
    sys.exit(main())
