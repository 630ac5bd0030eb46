"""What every fcnn command line shares: one error type, one ``main`` wrapper, flags declared
once from the dataclass that holds them, the checkpoint argument, and refusing to replace a
file without ``--overwrite``.

A command is a function that parses its flags, does its work and raises ``CliError`` (or
one of the error types it names) for anything the user can fix::

    def main(argv: Sequence[str] | None = None) -> int:
        return run_main(lambda: _run(_parser().parse_args(argv)), CheckpointError, OSError)

Exit status, the same for every command: 0 on success; 1 with one line ``error: ...``
on stderr for a user's error (no traceback); 2 for bad flags (argparse's own); 130 on
Ctrl-C.

Flags come from a frozen dataclass's fields, so a setting's name, default, type and help
are written once, where the setting lives::

    @dataclass(frozen=True)
    class Limits:
        max_batch: int = field(default=64, metadata={"help": "most images per request"})

    add_flags(parser, Limits)                  # --max-batch N (default 64)
    limits = from_flags(Limits, parser.parse_args(argv))
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "TRUST_CODE_HELP",
    "CliError",
    "add_checkpoint",
    "add_flags",
    "add_overwrite",
    "add_trust_code",
    "check_new_file",
    "checkpoint_path",
    "flag_name",
    "from_flags",
    "run_main",
]

EXIT_OK, EXIT_FAILED, EXIT_INTERRUPTED = 0, 1, 130

_T = TypeVar("_T")


class CliError(Exception):
    """A failure the user can fix, reported as one line ``error: <message>`` and exit 1."""


def run_main(body: Callable[[], int], *errors: type[BaseException], prefix: str = "") -> int:
    """Run a command's ``body`` and return its exit status.

    ``CliError`` and the listed ``errors`` become one line ``error: <prefix><message>`` on
    stderr and status 1 (``prefix`` says who failed, e.g. ``"rank 1: "`` under MPI);
    Ctrl-C becomes ``interrupted`` and 130. Anything else is a bug and keeps its traceback.
    """
    expected: tuple[type[BaseException], ...] = (CliError, *errors)
    try:
        return body()
    except expected as err:
        print(f"error: {prefix}{err}", file=sys.stderr, flush=True)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED


def flag_name(field_name: str) -> str:
    """``max_batch`` -> ``--max-batch``."""
    return "--" + field_name.replace("_", "-")


def _flag_type(hint: Any) -> tuple[Callable[[str], Any] | None, bool]:
    """A field's type hint -> (argparse ``type``, whether it is a switch).

    ``int``, ``float``, ``str`` and their ``X | None`` forms; ``bool`` is a switch.
    """
    if hint is bool:
        return None, True
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    base = args[0] if len(args) == 1 else hint
    if base in (int, float, str):
        return typing.cast(Callable[[str], Any], base), False
    raise TypeError(f"add_flags: no flag for a field of type {hint!r}")


def add_flags(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    cls: type[Any],
    *,
    skip: Sequence[str] = (),
    defaults: Mapping[str, Any] | None = None,
) -> None:
    """Add one flag per field of the dataclass ``cls`` (not those in ``skip``).

    Each field's ``metadata`` gives its ``help`` (required) and optionally ``metavar``,
    ``choices`` and ``flag`` (another flag name than ``--field-name``). The default shown
    in ``--help`` is the field's default, or ``defaults[name]``; the parsed value is
    ``None`` when the flag is absent, so ``from_flags`` can tell "not given" from a value
    equal to the default.
    """
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        meta = f.metadata
        if "help" not in meta:
            raise TypeError(f"add_flags: field {cls.__name__}.{f.name} has no help text")
        default = (defaults or {}).get(f.name, f.default)
        kind, switch = _flag_type(hints[f.name])
        shown = "" if switch or default in (None, dataclasses.MISSING) else f" (default {default})"
        names = [meta.get("flag", flag_name(f.name))]
        options: dict[str, Any] = {"dest": f.name, "default": None, "help": meta["help"] + shown}
        if switch:
            options["action"] = "store_true"
        else:
            options["type"] = kind
            for key in ("metavar", "choices"):
                if key in meta:
                    options[key] = meta[key]
        parser.add_argument(*names, **options)


def from_flags(cls: type[_T], args: argparse.Namespace, **overrides: Any) -> _T:
    """An instance of the dataclass ``cls`` from parsed flags: a field whose flag was not
    given (``None``; ``False`` for a switch) keeps its default; ``overrides`` win.

    The dataclass's own checks (``__post_init__``) run; their ``ValueError`` becomes a
    ``CliError`` with the same message.
    """
    given = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(typing.cast(Any, cls))
        if getattr(args, f.name, None) is not None and getattr(args, f.name) is not False
    }
    try:
        return cls(**{**given, **overrides})
    except ValueError as err:
        raise CliError(str(err)) from None


def add_checkpoint(parser: argparse.ArgumentParser, help: str = "a checkpoint (.npz)") -> None:
    """The checkpoint argument, the same for every command: positional ``CHECKPOINT`` or
    ``--checkpoint CHECKPOINT`` (either, not both); read it with ``checkpoint_path``."""
    parser.add_argument("checkpoint_pos", nargs="?", metavar="CHECKPOINT", help=help)
    parser.add_argument("--checkpoint", metavar="CHECKPOINT", help="the same, as a flag")


def checkpoint_path(args: argparse.Namespace, parser: argparse.ArgumentParser | None = None) -> str:
    """The checkpoint ``add_checkpoint``'s arguments name; ``CliError`` for none or two, or
    with ``parser``, its usage error (exit 2), as for any other bad command line."""
    pos, flag = args.checkpoint_pos, args.checkpoint
    problem = ""
    if pos is not None and flag is not None and pos != flag:
        problem = f"two checkpoints given ({pos} and --checkpoint {flag}); give one"
    elif pos is None and flag is None:
        problem = "no checkpoint given: name one (CHECKPOINT or --checkpoint CHECKPOINT)"
    if problem and parser is not None:
        parser.error(problem)
    if problem:
        raise CliError(problem)
    return str(pos if pos is not None else flag)


TRUST_CODE_HELP = (
    "let the checkpoint's model import and run the code of its own layers (the "
    "@fcnn.rebuildable functions it names); only for a checkpoint you trust. A model made "
    "of fcnn's own layers never needs it"
)


def add_trust_code(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """``--trust-code`` (``args.trust_code``, ``False`` unless given): the one way a command
    line lets a checkpoint import code. Without it, loading a model with a layer of a
    user's own is refused with one line naming the code and this flag."""
    parser.add_argument("--trust-code", action="store_true", help=TRUST_CODE_HELP)


def add_overwrite(parser: argparse.ArgumentParser) -> None:
    """``--overwrite``: let the command replace files it writes (refused by default)."""
    parser.add_argument(
        "--overwrite", action="store_true", help="replace output files that already exist"
    )


def check_new_file(
    path: str | os.PathLike[str], overwrite: bool, flag: str = "", instead: str = ""
) -> None:
    """``CliError`` when ``path`` exists and ``overwrite`` is false: no command replaces a
    file unless asked to. ``flag`` names the option that gave the path, ``instead`` what
    else the user may do (``"continue that run with --resume m.npz"``), for the message."""
    p = os.fspath(path)
    if not overwrite and os.path.lexists(p):
        named = f"{flag} {p}" if flag else p
        other = f"{instead}, or " if instead else ""
        raise CliError(f"{named} already exists; {other}pass --overwrite to replace it")
