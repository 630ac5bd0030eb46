"""Train a small CNN: ``python train.py`` (vertical vs horizontal lines, a few seconds).

Real datasets (MNIST, CIFAR-10, the embedded digits) come with the full command line.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

import fcnn
from fcnn.data import make_lines


def default_cnn(num_classes: int, impl: str = "im2col") -> fcnn.Layer:
    """conv 8 -> relu -> pool -> conv 16 -> relu -> pool -> dense."""
    return fcnn.sequential(
        fcnn.Conv2d(8, 3, padding=1, impl=impl),
        fcnn.Relu(),
        fcnn.MaxPool2d(2),
        fcnn.Conv2d(16, 3, padding=1, impl=impl),
        fcnn.Relu(),
        fcnn.MaxPool2d(2),
        fcnn.Flatten(),
        fcnn.Dense(num_classes),
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--dataset", choices=["lines"], default="lines")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-size", type=int, default=2000)
    p.add_argument("--test-size", type=int, default=500)
    p.add_argument("--impl", choices=["naive", "im2col", "strided"], default="im2col")
    args = p.parse_args(argv)
    for name in ("epochs", "batch_size", "train_size", "test_size"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rng = np.random.default_rng(args.seed)
    data_rng, init_rng, train_rng = rng.spawn(3)
    x_train, y_train = make_lines(args.train_size, data_rng)
    x_test, y_test = make_lines(args.test_size, data_rng)

    model = default_cnn(num_classes=2, impl=args.impl)
    params, state, _ = fcnn.init(model, init_rng, x_train.shape[1:])
    opt = fcnn.sgd(args.lr, momentum=args.momentum)
    ts = fcnn.TrainState(params, state, opt.init(params))
    step = fcnn.make_step(model, opt)

    for epoch in range(1, args.epochs + 1):
        t0 = time.perf_counter()
        try:
            ts, train_loss = fcnn.train_epoch(
                step, ts, x_train, y_train, args.batch_size, train_rng
            )
        except fcnn.NonFiniteLossError as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        test_loss, test_acc = fcnn.evaluate(model, ts.params, ts.state, x_test, y_test)
        print(
            f"epoch {epoch}/{args.epochs}  train loss {train_loss:.4f}  "
            f"test loss {test_loss:.4f}  test acc {100 * test_acc:.2f}%  "
            f"({time.perf_counter() - t0:.1f}s)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
