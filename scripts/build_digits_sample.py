"""Build ``src/fcnn/data/digits_sample.npz``, the embedded class-balanced MNIST sample.

    python scripts/build_digits_sample.py [--data-dir DIR] [--out PATH] [--seed N]

Reads the four MNIST IDX files (raw or .gz, verified by ``fcnn.data.mnist``) from
``--data-dir`` (default ``../shared/data/mnist`` next to the repository), draws
1000 training and 200 test images per digit with ``fcnn.data.digits.build_digits_sample``
(the exact procedure is in that module's docstring) and writes them with
``np.savez_compressed`` atomically (temporary name, then rename). Prints the file
size and warns when it is over 3 MB. Never downloads unless ``--download``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from fcnn.atomic import atomic_write
from fcnn.data.digits import DIGITS_SAMPLE_SEED, build_digits_sample
from fcnn.data.mnist import load_mnist_uint8

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA_DIR = REPO.parent / "shared" / "data" / "mnist"
DEFAULT_OUT = REPO / "src" / "fcnn" / "data" / "digits_sample.npz"
SIZE_LIMIT = 3 * 1000 * 1000  # bytes


def write_sample(data_dir: Path, out: Path, seed: int, download: bool = False) -> int:
    """Build the sample from ``data_dir`` and write it to ``out``; the file size in bytes."""
    arrays = build_digits_sample(*load_mnist_uint8(data_dir, download=download), seed=seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(out, "wb") as f:
        np.savez_compressed(
            f,
            x_train=arrays["x_train"],
            y_train=arrays["y_train"],
            x_test=arrays["x_test"],
            y_test=arrays["y_test"],
            train_indices=arrays["train_indices"],
            test_indices=arrays["test_indices"],
        )
    return out.stat().st_size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=DEFAULT_DATA_DIR,
        help="folder holding the MNIST IDX files (default: %(default)s)",
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="output .npz (default: %(default)s)"
    )
    parser.add_argument(
        "--seed", type=int, default=DIGITS_SAMPLE_SEED, help="sampling seed (default: %(default)s)"
    )
    parser.add_argument(
        "--download", action="store_true", help="download missing MNIST files (off by default)"
    )
    args = parser.parse_args(argv)
    size = write_sample(args.data_dir, args.out, args.seed, args.download)
    print(f"wrote {args.out} ({size} bytes, {size / 1e6:.2f} MB)")
    if size > SIZE_LIMIT:
        print(f"warning: {args.out} is over {SIZE_LIMIT / 1e6:.0f} MB", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
