"""``python -m fcnn.serve CHECKPOINT [--host H] [--port P] [--trust-code] [limits ...]``.

The flags come from the fields of ``Listen``, ``ServeLimits`` and ``ConnectionLimits``
(``fcnn.serve.limits``), the checkpoint is given as for every fcnn command (positional
or ``--checkpoint``), and errors follow ``fcnn.cli``: one line ``error: ...`` and exit 1
for a missing or unreadable checkpoint, 2 for a bad flag value.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..cli import (
    CliError,
    add_checkpoint,
    add_flags,
    add_trust_code,
    checkpoint_path,
    from_flags,
    run_main,
)

if TYPE_CHECKING:
    from .limits import ConnectionLimits, Listen, ServeLimits

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    from .limits import ConnectionLimits, Listen, ServeLimits

    p = argparse.ArgumentParser(
        prog="python -m fcnn.serve",
        description="Serve a checkpoint written by train.py over HTTP (see /docs).",
    )
    add_checkpoint(p, "the .npz checkpoint to serve")
    add_trust_code(p)
    add_flags(p, Listen)
    add_flags(p.add_argument_group("request limits"), ServeLimits)
    add_flags(p.add_argument_group("connection guards"), ConnectionLimits)
    return p


def _settings(
    p: argparse.ArgumentParser, args: argparse.Namespace
) -> tuple[Listen, ServeLimits, ConnectionLimits]:
    """The settings the flags give; a bad value exits 2, as argparse's own errors do."""
    from .limits import ConnectionLimits, Listen, ServeLimits

    try:
        return (
            from_flags(Listen, args),
            from_flags(ServeLimits, args),
            from_flags(ConnectionLimits, args),
        )
    except CliError as err:
        p.error(str(err))


def _serve(argv: Sequence[str] | None) -> int:
    from ..models import load_trained
    from ..paths import check_readable_file
    from .app import create_app
    from .guards import fit_open_files, guarded_protocol
    from .limits import ConnectionLimits

    p = _parser()
    args = p.parse_args(argv)
    listen, limits, conns = _settings(p, args)
    checkpoint = checkpoint_path(args)
    check_readable_file(checkpoint, "checkpoint")  # before any work: a directory, a typo
    # No runtime.tune_allocator() here: raising glibc's trim and mmap thresholds keeps
    # every freed image buffer in its thread's heap, which suits a training loop (the
    # same sizes again each step), not a server decoding images of any size.
    try:
        import uvicorn
    except ImportError:
        raise CliError('the server needs uvicorn: pip install "fcnn[serve]"') from None
    app = create_app(load_trained(checkpoint, trust_code=args.trust_code), limits)
    max_connections, backlog, open_files = fit_open_files(conns.max_connections)
    if max_connections < conns.max_connections:
        print(
            f"note: --max-connections lowered to {max_connections} to fit the open-file "
            f"limit (ulimit -n {open_files})",
            file=sys.stderr,
        )
    uvicorn.run(
        app,
        host=listen.host,
        port=listen.port,
        log_level=listen.log_level,
        http=guarded_protocol(  # type: ignore[arg-type]
            ConnectionLimits(max_connections, conns.header_timeout_s, conns.keep_alive_s),
            limits.min_body_rate,
        ),
        timeout_keep_alive=conns.keep_alive_s,
        backlog=backlog,
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit status."""
    from ..io import CheckpointError
    from ..paths import PathError
    from .schema import UnservableModelError

    errors = (CheckpointError, PathError, OSError, UnservableModelError)
    return run_main(lambda: _serve(argv), *errors)


if __name__ == "__main__":
    sys.exit(main())
