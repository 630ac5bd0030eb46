"""Classify images with a checkpoint written by ``train.py`` (or ``fcnn.save_trained``).

    python inference_example.py runs/mnist-1/model.npz digit.png photo.jpg
    python inference_example.py --checkpoint runs/mnist-1/model.npz --samples 16 --show preds.png

With image files (PNG, JPEG, BMP, GIF, WebP, PPM; needs Pillow: ``pip install "fcnn[images]"``)
each is read as the model's input: for a grayscale model it is inverted when its
background is light, and the digit is fitted into the middle of the frame as MNIST's
are (``fcnn.data.images``); an image with nothing on it (blank, all one shade) is
reported as empty instead of being given a class; a file that cannot be read is
reported on its own line and the others are still classified. Without files,
``--samples N`` test images of the dataset the checkpoint was trained on are classified
(``fcnn.run.load_test_set``: MNIST or CIFAR-10 from ``--data-dir``, else from the folder
the training run recorded; the embedded digits need nothing; lines are generated with the
run's seed). ``--seed`` picks the samples.
Prints the ``--top`` classes with their probabilities for each input; ``--show PATH``
also saves a grid of the inputs with predicted (and true) labels, in the format the
extension names (.png, .jpg, .svg, .pdf, ...; needs matplotlib: ``pip install "fcnn[plot]"``);
an existing file is replaced only with ``--overwrite``.
Exit status: 0; 1 with one line per problem on stderr (no traceback), also when some
image could not be read; 2 for bad flags; 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fcnn.atomic import atomic_write
from fcnn.cli import (
    EXIT_FAILED,
    CliError,
    add_checkpoint,
    add_overwrite,
    add_trust_code,
    check_new_file,
    checkpoint_path,
    run_main,
)
from fcnn.data.images import EMPTY_IMAGE_HINT, is_empty_image, load_image
from fcnn.io import CheckpointError
from fcnn.models import Trained, load_trained
from fcnn.paths import PathError, check_readable_file, check_writable_file
from fcnn.plots import MissingExtraError, figure_class, image_format
from fcnn.run import load_test_set

DEFAULT_SAMPLES = 8
GRID_COLUMNS = 8


@dataclass(frozen=True)
class Inputs:
    """What to classify: ``x: (N, C, H, W)`` float32 in [0, 1], a name per input, for
    dataset samples the true class names (``None`` for files), and per input whether it
    is empty (``fcnn.data.images.is_empty_image``: reported, not classified)."""

    x: NDArray[np.float32]
    names: tuple[str, ...]
    truth: tuple[str, ...] | None
    empty: tuple[bool, ...] = ()

    def is_empty(self, i: int) -> bool:
        return bool(self.empty) and self.empty[i]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    summary, _, details = (__doc__ or "").partition("\n\n")
    p = argparse.ArgumentParser(
        prog="inference_example.py",
        description=summary,
        epilog=details,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_checkpoint(p, "a checkpoint written by train.py or fcnn.save_trained")
    p.add_argument("images", nargs="*", metavar="IMAGE", help="image files to classify")
    p.add_argument(
        "--samples",
        type=int,
        default=None,
        metavar="N",
        help=f"classify N random test samples of the checkpoint's dataset "
        f"(the default, with N = {DEFAULT_SAMPLES}, when no image is given)",
    )
    p.add_argument("--top", type=int, default=3, metavar="K", help="classes shown per input")
    p.add_argument(
        "--show", metavar="PATH", help="save a grid of the inputs and predictions (.png, .jpg, ...)"
    )
    add_overwrite(p)
    add_trust_code(p)
    p.add_argument(
        "--data-dir", metavar="DIR", help="dataset folder (default: the one training recorded)"
    )
    p.add_argument("--seed", type=int, default=0, help="picks the samples")
    args = p.parse_args(argv)
    if args.checkpoint is not None and args.checkpoint_pos is not None:
        args.images.insert(0, args.checkpoint_pos)  # --checkpoint X a.png: a.png is an image
        args.checkpoint_pos = None
    args.checkpoint = checkpoint_path(args, p)
    if args.images and args.samples is not None:
        p.error("give image files or --samples, not both")
    if args.samples is not None and args.samples < 1:
        p.error("--samples must be >= 1")
    if args.top < 1:
        p.error("--top must be >= 1")
    if not args.images and args.samples is None:
        args.samples = DEFAULT_SAMPLES
    return args


def read_images(paths: Sequence[str], trained: Trained) -> tuple[Inputs | None, list[str]]:
    """The files that can be read, as ``(N, C, H, W)`` inputs for ``trained`` (``None`` if
    none can), and one message per file that cannot."""
    images, names, failed = [], [], []
    for path in paths:
        try:
            images.append(load_image(path, trained.input_shape))
            names.append(path)
        except ImportError as err:  # no Pillow: one message for every file
            raise CliError(str(err)) from None
        except ValueError as err:
            failed.append(str(err))
        except OSError as err:
            failed.append(f"cannot read image {path!r}: {err.strerror or err}")
    if not images:
        return None, failed
    x = np.stack(images)
    return Inputs(x, tuple(names), None, tuple(is_empty_image(image) for image in x)), failed


def read_samples(trained: Trained, n: int, data_dir: str | None, seed: int) -> Inputs:
    """``n`` test samples of the checkpoint's dataset, drawn without replacement with a
    generator seeded ``seed`` (``fcnn.run.load_test_set`` finds and checks the data)."""
    if trained.record is None:
        raise CliError("the model carries no run record; give image files instead")
    ds = load_test_set(trained.record, data_dir, seed)
    rng = np.random.default_rng(seed)
    idx = rng.choice(ds.x_test.shape[0], size=min(n, ds.x_test.shape[0]), replace=False)
    # predict_proba takes raw intensities in [0, 1]; the generated lines carry Gaussian
    # noise beyond them, which a picture of lines could not hold.
    return Inputs(
        x=np.clip(ds.x_test[idx], 0.0, 1.0).astype(np.float32),
        names=tuple(f"test #{i}" for i in idx),
        truth=tuple(ds.classes[int(label)] for label in ds.y_test[idx]),
    )


def top_classes(probs: NDArray[np.floating[Any]], k: int) -> NDArray[np.int64]:
    """Indices ``(N, k)`` of the ``k`` most probable classes of ``probs: (N, K)``, best first;
    ties go to the lower index."""
    order: NDArray[np.int64] = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return order


def report(inputs: Inputs, probs: NDArray[np.floating[Any]], classes: Sequence[str], k: int) -> str:
    """One line per input: its name, the top ``k`` classes with probabilities, the truth;
    for an empty input, that it is empty instead of a class."""
    top = top_classes(probs, k)
    width = max(len(name) for name in inputs.names)
    lines = []
    for i, name in enumerate(inputs.names):
        if inputs.is_empty(i):
            lines.append(f"{name:<{width}}  not classified: {EMPTY_IMAGE_HINT}")
            continue
        guesses = "  ".join(f"{classes[j]} {probs[i, j]:6.1%}" for j in top[i])
        line = f"{name:<{width}}  {guesses}"
        if inputs.truth is not None:
            verdict = "ok" if classes[top[i, 0]] == inputs.truth[i] else "WRONG"
            line += f"   (true {inputs.truth[i]}: {verdict})"
        lines.append(line)
    if inputs.truth is not None:
        right = sum(classes[top[i, 0]] == t for i, t in enumerate(inputs.truth))
        lines.append(f"{right}/{len(inputs.truth)} correct")
    return "\n".join(lines)


def _figure_class() -> Any:
    """matplotlib's ``Figure`` (``fcnn.plots.figure_class``), or ``CliError`` naming --show."""
    try:
        return figure_class()
    except MissingExtraError:
        raise CliError('--show needs matplotlib: pip install "fcnn[plot]"') from None


def save_grid(
    path: str, inputs: Inputs, probs: NDArray[np.floating[Any]], classes: Sequence[str]
) -> None:
    """A grid of the inputs titled with the predicted (and true) class, written atomically
    in the format ``path``'s extension names (``fcnn.plots.image_format``)."""
    n = inputs.x.shape[0]
    cols = min(n, GRID_COLUMNS)
    rows = math.ceil(n / cols)
    fig = _figure_class()(figsize=(1.6 * cols, 1.9 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    best = probs.argmax(axis=1)
    for i, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if i >= n:
            continue
        image = np.clip(inputs.x[i], 0.0, 1.0)  # generated lines carry noise outside [0, 1]
        if image.shape[0] == 1:
            ax.imshow(image[0], cmap="gray", vmin=0.0, vmax=1.0)
        else:
            ax.imshow(image.transpose(1, 2, 0))
        title = "empty" if inputs.is_empty(i) else f"{classes[best[i]]} ({probs[i, best[i]]:.0%})"
        color = "black"
        if inputs.truth is not None:
            title += f"\ntrue {inputs.truth[i]}"
            color = "green" if classes[best[i]] == inputs.truth[i] else "red"
        ax.set_title(title, fontsize=9, color=color)
    try:
        with atomic_write(path, "wb") as f:
            fig.savefig(f, format=image_format(path), dpi=100)
    except OSError as err:
        raise CliError(f"cannot write {path!r}: {err.strerror or err}") from None


def check_paths(args: argparse.Namespace) -> None:
    """Fail before any work when the checkpoint or --show cannot be the file it must be."""
    try:
        check_readable_file(args.checkpoint, "checkpoint")
        if args.show:
            image_format(args.show)
            check_writable_file(args.show)
            check_new_file(args.show, args.overwrite, "--show")
    except PathError as err:
        raise CliError(str(err)) from None


def run(args: argparse.Namespace) -> int:
    check_paths(args)
    if args.show:
        _figure_class()  # fail before any work when matplotlib is missing
    trained = load_trained(args.checkpoint, trust_code=args.trust_code)
    failed: list[str] = []
    if args.images:
        inputs, failed = read_images(args.images, trained)
    else:
        inputs = read_samples(trained, args.samples, args.data_dir, args.seed)
    for message in failed:
        print(f"error: {message}", file=sys.stderr, flush=True)
    if inputs is None:
        return EXIT_FAILED
    probs = trained.predict_proba(inputs.x)
    k = min(args.top, len(trained.classes))
    print(report(inputs, probs, trained.classes, k), flush=True)
    if args.show:
        save_grid(args.show, inputs, probs, trained.classes)
        print(f"saved {args.show}")
    return EXIT_FAILED if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    return run_main(lambda: run(args), CheckpointError, OSError)


if __name__ == "__main__":
    sys.exit(main())
