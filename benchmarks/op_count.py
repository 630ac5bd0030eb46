"""Array operations and host round trips per training step, counted on the CPU.

    python benchmarks/op_count.py                 # the fast model, Adam, batch 128
    python benchmarks/op_count.py --by-function   # and where they come from

A GPU pays mostly per kernel launch and per wait for the device (docs/gpu.md), so the
number of array-producing operations in a step is a stand-in for its launches. The step
runs on tests/foreign.py's test double, which counts every operation that makes a new
array (a fused function counts once, as its one kernel) and every read on or upload from
the host. No GPU needed; the numbers are exact for a given checkout.
"""

from __future__ import annotations

import argparse
import collections
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import foreign

import fcnn
from fcnn.models import build_model


def fast_step(batch: int) -> tuple[Any, Any, Any, Any]:
    """The fast model's step (Adam, label smoothing 0.1) and its state and batch on the double."""
    model = build_model("fast", 10)
    rng = np.random.default_rng(0)
    params, state, _ = fcnn.init(model, rng, (1, 28, 28), np.float32)
    opt = fcnn.adam(1e-3)
    step = fcnn.make_step(model, opt, fcnn.label_smoothing(0.1))
    ts = fcnn.TrainState(params, state, opt.init(params))
    x = rng.standard_normal((batch, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, batch)
    return step, *fcnn.to_device((ts, x, y), foreign)


class _Attributing(list[int]):
    """``foreign.calls`` that also charges each new operation to the fcnn function making it."""

    def __init__(self, where: collections.Counter[str]) -> None:
        super().__init__([0])
        self.where = where

    def __setitem__(self, i: Any, value: Any) -> None:
        stack = traceback.extract_stack()[:-1]
        fused = [f for f in stack if f.name == "kernel" and f.filename.endswith("foreign.py")]
        if fused and stack[-1] is fused[-1]:  # a fused function's end: one operation
            self._charge(stack, 1)
        elif not fused and value > self[0]:
            self._charge(stack, value - self[0])
        super().__setitem__(i, value)

    def _charge(self, stack: list[Any], n: int) -> None:
        for frame in reversed(stack):
            if "/fcnn/" in frame.filename and "/ops/xp.py" not in frame.filename:
                self.where[f"{frame.filename.split('/fcnn/')[1]}:{frame.name}"] += n
                return


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--by-function", action="store_true")
    args = p.parse_args(argv)
    step, ts, x, y = fast_step(args.batch)
    ctx = fcnn.Context(train=True)
    ts, _ = step(ts, x, y, ctx)  # the first step may set things up
    where: collections.Counter[str] = collections.Counter()
    foreign.reset_counts()
    if args.by_function:
        foreign.calls = _Attributing(where)
    ts, _ = step(ts, x, y, ctx)
    print(
        f"fast model, Adam, batch {args.batch}: {foreign.calls[0]} array operations and "
        f"{foreign.transfers[0]} host round trips per training step"
    )
    for name, n in where.most_common():
        print(f"{n:5d}  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
