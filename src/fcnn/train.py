"""Train a CNN with fcnn: ``python train.py``, ``python -m fcnn.train`` or ``fcnn-train``.

    python train.py                                   # embedded digits, offline, about a minute
    python train.py --dataset mnist --epochs 12       # full MNIST (downloaded once)
    python train.py --dataset lines                   # synthetic lines, small model, sgd, 1 s
    python train.py --dataset mnist --recipe fast     # 99% on MNIST in a few epochs
    python train.py --save runs/model.npz --metrics runs/metrics.csv --plot runs/curves.png
    python train.py --resume runs/model.npz               # continue exactly where it stopped
    python train.py --resume runs/model.npz --epochs 20   # extend to 20 (lr schedule recomputed)
    python train.py --dataset cifar10 --model resnet      # crops (--augment 4), flips (--flip 0.5)
    python train.py --model mynets:resnet_small --model-arg width=32     # your own, in mynets.py
    python train.py --dataset mnist --recipe fast --device gpu   # on a GPU (docs/gpu.md)

--model MODULE:FUNCTION imports MODULE from the current folder (or the Python path) and
trains FUNCTION(num_classes, **model args), which returns a fcnn Layer, like a registry
model; its checkpoint is read by every tool (docs/own_model.md). --resume rebuilds a
model from its checkpoint; one holding a layer of your own needs --trust-code to import it.

Without --save, every run writes a new folder runs/DATASET-N/ (model.npz, metrics.csv)
and says where; --no-save writes nothing. Existing files are replaced only with
--overwrite (a resumed run rewrites its own).
Exit status: 0 on success, 1 when the loss becomes NaN/inf or data, a checkpoint or an
output cannot be used (one clear message, no traceback), 2 for bad flags, 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import fcnn
from fcnn.cli import (
    EXIT_INTERRUPTED,
    CliError,
    add_flags,
    from_flags,
    run_main,
)
from fcnn.data import DatasetNotFoundError
from fcnn.io import CheckpointError
from fcnn.parallel import EveryRankError, Ranks, evaluate_on, on_every_rank, sync
from fcnn.plots import MissingExtraError
from fcnn.run import (
    Options,
    Progress,
    Run,
    RunConfig,
    check_setting,
    claimed,
    parameter_count,
    parse_model_arg,
    plural,
    resolve_config,
    save,
    set_up,
)
from fcnn.runtime import tune_allocator

# What a user can fix: one line "error: ..." and exit 1 (fcnn.cli.run_main).
USER_ERRORS = (CheckpointError, DatasetNotFoundError, MissingExtraError, OSError)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The flags: one per ``RunConfig`` field and ``Options`` field (``fcnn.cli.add_flags``).
    A setting left out is ``None``, so that ``--resume`` can tell it from a default."""
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    settings = p.add_argument_group("the run's settings")
    add_flags(settings, RunConfig, skip=("model_args",), defaults={"lr": None})
    settings.add_argument(
        "--model-arg",
        dest="model_args",
        action="append",
        type=_model_arg,
        metavar="KEY=VALUE",
        help=_MODEL_ARGS.metadata["help"],
    )
    files = p.add_argument_group("files")
    add_flags(files, Options)
    args = p.parse_args(argv)
    args.model_args = _model_args(p, args.model_args)
    given = settings_given(args)
    try:
        for name, value in given.items():
            check_setting(name, value)
        if args.resume is None:  # settings that do not fit together (--augment past the image)
            resolve_config(given, None)
    except (ValueError, CliError) as err:
        p.error(str(err))
    return args


_MODEL_ARGS = next(f for f in dataclasses.fields(RunConfig) if f.name == "model_args")


def _model_arg(text: str) -> tuple[str, Any]:
    """``--model-arg``'s argparse type: ``parse_model_arg``, its refusal a usage error."""
    try:
        return parse_model_arg(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _model_args(p: argparse.ArgumentParser, pairs: Any) -> dict[str, Any] | None:
    """``--model-arg`` pairs ``[(key, value), ...]`` as a dict; a key given twice is exit 2."""
    if pairs is None:
        return None
    keys = [key for key, _ in pairs]
    twice = sorted({key for key in keys if keys.count(key) > 1})
    if twice:
        p.error(f"--model-arg gives {', '.join(twice)} more than once")
    return dict(pairs)


def settings_given(args: argparse.Namespace) -> dict[str, Any]:
    """The ``RunConfig`` settings given as flags, by name."""
    fields = dataclasses.fields(RunConfig)
    return {f.name: getattr(args, f.name) for f in fields if getattr(args, f.name) is not None}


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit status."""
    args = parse_args(argv)
    tune_allocator()  # keep freed temporaries in the heap: see fcnn/runtime.py

    def on_this_rank(ranks: Ranks) -> int:
        return run_main(lambda: train(args, ranks), *USER_ERRORS, prefix=ranks.prefix)

    return on_every_rank(on_this_rank)


def train(args: argparse.Namespace, ranks: Ranks) -> int:
    """Claim the checkpoint, set up, then every epoch: train, evaluate, log, save."""
    options = from_flags(Options, args)
    with claimed(options, ranks):  # no other run writes this checkpoint until this one ends
        run, progress = set_up(settings_given(args), options, ranks)
        return train_epochs(run, progress)


def train_epochs(run: Run, progress: Progress) -> int:
    """Every epoch: train, evaluate, log, save; the exit status."""
    say(run, describe(run, progress))
    d, c = run.data, run.config
    try:
        while progress.epoch < c.epochs:
            epoch, t0 = progress.epoch + 1, time.perf_counter()
            with batch_bar(run, epoch) as on_batch:  # says which epoch and batch a NaN came in
                ts, loss = fcnn.train_epoch(
                    run.step, progress.ts, d.x_train, d.y_train, c.batch_size, progress.rng,
                    on_batch, run.augment, run.drop_last,
                )  # fmt: skip
            seconds = time.perf_counter() - t0
            ts = sync(run.ranks, ts)  # under MPI: rank 0's weights, averaged batch-norm state
            row = epoch_row(run, epoch, loss, seconds, evaluate(run, ts, epoch))
            say(run, epoch_line(run, row))
            progress = Progress(ts, progress.rng, epoch, (*progress.history, row), progress.saved)
            progress = save(run, progress)
    except fcnn.NonFiniteLossError as err:  # raised at the same step on every rank
        kept = f"the last good checkpoint is {progress.saved}" if progress.saved else None
        raise EveryRankError(f"{err}; {kept or 'no checkpoint was saved'}") from None
    except KeyboardInterrupt:
        # progress.epoch is the last epoch finished (or being saved): the one under way is next
        tell(run, f"\ninterrupted during epoch {progress.epoch + 1}; {resume_hint(run, progress)}")
        return EXIT_INTERRUPTED
    tell(run, done_line(run, progress), sys.stdout)
    return 0


# --- what is said about a run ---------------------------------------------------------------


@contextmanager
def batch_bar(run: Run, epoch: int) -> Iterator[Callable[[int, float], None]]:
    """``on_batch(i, loss)`` for ``fcnn.train_epoch``, moving a progress bar; a
    ``NonFiniteLossError`` inside is raised again naming the epoch and the batch."""
    bar = progress_bar(run.steps_per_epoch, f"epoch {epoch}/{run.config.epochs}", run.quiet)
    done = 0  # steps finished in this epoch

    def on_batch(i: int, loss: float) -> None:
        nonlocal done
        done = i + 1
        if bar is not None:
            bar.update(1)
            if i % 20 == 0:
                bar.set_postfix(loss=f"{loss:.4f}", refresh=False)

    try:
        yield on_batch
    except fcnn.NonFiniteLossError as err:
        raise fcnn.NonFiniteLossError(f"epoch {epoch}, batch {done + 1}: {err}") from None
    finally:
        if bar is not None:
            bar.close()


def progress_bar(total: int, desc: str, quiet: bool) -> Any:
    """A tqdm bar that stays silent when stderr is not a terminal; None without tqdm."""
    if quiet:
        return None
    try:
        from tqdm import tqdm  # type: ignore[import-untyped]
    except ImportError:
        return None
    return tqdm(total=total, desc=desc, unit="batch", leave=False, disable=None)


def evaluate(run: Run, ts: fcnn.TrainState, epoch: int) -> tuple[float, float]:
    """Test ``(loss, accuracy)``; ``NonFiniteLossError`` if the epoch broke the model."""
    d = run.data
    test_loss, test_acc = evaluate_on(run.ranks, run.model, ts.params, ts.state, d.x_test, d.y_test)
    if not math.isfinite(test_loss):
        raise fcnn.NonFiniteLossError(
            f"epoch {epoch}: test loss is {test_loss} after the epoch's updates; stopping "
            "(try a smaller learning rate)"
        )
    return test_loss, test_acc


def epoch_row(
    run: Run, epoch: int, train_loss: float, seconds: float, test: tuple[float, float]
) -> dict[str, Any]:
    """One row of the metrics file."""
    return {
        "epoch": epoch,
        "train_loss": round(train_loss, 6),
        "test_loss": round(test[0], 6),
        "test_acc": round(test[1], 6),
        "lr": float(f"{run.schedule(epoch * run.steps_per_epoch - 1):.6g}"),  # the last step's
        "train_seconds": round(seconds, 2),
        "samples_per_second": round(len(run.data.x_train) / seconds, 1),
    }


def epoch_line(run: Run, row: Mapping[str, Any]) -> str:
    return (
        f"epoch {row['epoch']}/{run.config.epochs}  train loss {row['train_loss']:.4f}  "
        f"test loss {row['test_loss']:.4f}  test acc {100 * row['test_acc']:.2f}%  "
        f"({row['train_seconds']:.1f}s, {row['samples_per_second']:.0f}/s)"
    )


def describe(run: Run, progress: Progress) -> str:
    """The run's header: what it resumes, model, data, optimizer, batch, epochs, where it
    saves, the device, the ranks."""
    c, d, r = run.config, run.data, run.ranks
    n = len(d.x_train)
    batch = str(c.batch_size)
    if c.batch_size > n:  # every batch is then the whole (shuffled) training set
        batch = f"{n} (the whole training set; --batch-size {c.batch_size} is larger)"
    line = (
        f"{c.model} ({parameter_count(progress):,} params) on {d.name}: {n:,} train / "
        f"{len(d.x_test):,} test images {tuple(d.x_train.shape[1:])}, {c.optimizer} lr "
        f"{c.lr:g} ({c.schedule}), batch {batch}, {plural(c.epochs, 'epoch')}"
    )
    extras = [f"label smoothing {c.label_smoothing:g}"] if c.label_smoothing else []
    extras += [f"shifts of up to {plural(c.augment, 'pixel')}"] if c.recipe and c.augment else []
    extras += [f"flips with probability {c.flip:g}"] if c.recipe and c.flip else []
    line = f"recipe {c.recipe}: {line}" if c.recipe else line
    lines = [f"{line}, {', '.join(extras)}" if extras else line]
    if progress.saved:  # resumed
        left = c.epochs - progress.epoch
        lines.insert(0, f"resuming {progress.saved}: {plural(left, 'epoch')} to go")
    if run.outputs.save:
        lines.append(f"saving {run.outputs.save} after every epoch")
    if run.device:
        lines.append(run.device)
    if r.summary:
        lines.append(r.summary)
    return "\n".join(lines)


def resume_hint(run: Run, progress: Progress) -> str:
    """What an interrupted run left, and how to go on."""
    if progress.saved:
        return f"resume from {progress.saved}"
    if run.outputs.save:
        return f"no checkpoint was saved yet (the first goes to {run.outputs.save} after an epoch)"
    return "no checkpoint was saved (--no-save)"


def done_line(run: Run, progress: Progress) -> str:
    """The last line. The history is never empty here: a run has at least one epoch, and
    a resumed checkpoint holds a row for every epoch it has done."""
    seconds = sum(row["train_seconds"] for row in progress.history)
    line = (
        f"done: test accuracy {100 * progress.history[-1]['test_acc']:.2f}% after "
        f"{plural(run.config.epochs, 'epoch')} ({seconds:.1f}s of training)"
    )
    return f"{line}; checkpoint {run.outputs.save}" if run.outputs.save else line


def say(run: Run, line: str) -> None:
    """A progress line on stdout (rank 0, unless --quiet)."""
    if not run.quiet:
        print(line, flush=True)


def tell(run: Run, line: str, stream: Any = None) -> None:
    """A line rank 0 says even with --quiet (stderr unless ``stream``)."""
    if run.ranks.root:
        print(line, file=stream or sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
