"""fcnn.cli: the error wrapper, flags from dataclasses, the checkpoint argument, --overwrite."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

import pytest

from fcnn.cli import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    CliError,
    add_checkpoint,
    add_flags,
    add_overwrite,
    check_new_file,
    checkpoint_path,
    from_flags,
    run_main,
)


@dataclass(frozen=True)
class Limits:
    max_batch: int = field(default=64, metadata={"help": "most images"})
    rate: float | None = field(default=None, metadata={"help": "a rate", "metavar": "R"})
    mode: str = field(default="a", metadata={"help": "a mode", "choices": ["a", "b"]})
    verbose: bool = field(default=False, metadata={"help": "talk"})

    def __post_init__(self) -> None:
        if self.max_batch < 1:
            raise ValueError(f"--max-batch must be >= 1, got {self.max_batch}")


def _parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_flags(p, Limits)
    return p.parse_args(argv)


def test_flags_come_from_the_fields_with_their_defaults() -> None:
    assert from_flags(Limits, _parse([])) == Limits()
    got = from_flags(
        Limits, _parse(["--max-batch", "3", "--rate", "0.5", "--mode", "b", "--verbose"])
    )
    assert got == Limits(max_batch=3, rate=0.5, mode="b", verbose=True)


def test_overrides_win_and_the_dataclass_checks_become_cli_errors() -> None:
    assert from_flags(Limits, _parse(["--max-batch", "3"]), max_batch=9).max_batch == 9
    with pytest.raises(CliError, match="--max-batch must be >= 1, got 0"):
        from_flags(Limits, _parse(["--max-batch", "0"]))


def test_help_shows_the_default_and_a_field_without_help_is_refused() -> None:
    p = argparse.ArgumentParser()
    add_flags(p, Limits, defaults={"max_batch": 32})
    assert "most images (default 32)" in " ".join(p.format_help().split())

    @dataclass(frozen=True)
    class NoHelp:
        x: int = 1

    with pytest.raises(TypeError, match=r"NoHelp\.x has no help"):
        add_flags(argparse.ArgumentParser(), NoHelp)


def test_bad_choice_is_argparse_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        _parse(["--mode", "c"])
    assert stop.value.code == 2


@pytest.mark.parametrize(
    ("argv", "want"),
    [
        (["m.npz"], "m.npz"),
        (["--checkpoint", "m.npz"], "m.npz"),
        (["m.npz", "--checkpoint", "m.npz"], "m.npz"),
    ],
)
def test_the_checkpoint_positional_or_as_a_flag(argv: list[str], want: str) -> None:
    p = argparse.ArgumentParser()
    add_checkpoint(p)
    assert checkpoint_path(p.parse_args(argv)) == want


@pytest.mark.parametrize(
    ("argv", "msg"),
    [([], "no checkpoint given"), (["a.npz", "--checkpoint", "b.npz"], "two checkpoints")],
)
def test_no_checkpoint_or_two_is_an_error(argv: list[str], msg: str) -> None:
    p = argparse.ArgumentParser()
    add_checkpoint(p)
    with pytest.raises(CliError, match=msg):
        checkpoint_path(p.parse_args(argv))


def test_an_existing_file_is_kept_without_overwrite(tmp_path: object) -> None:
    import pathlib

    path = pathlib.Path(str(tmp_path)) / "out.onnx"
    check_new_file(path, overwrite=False)  # absent: fine
    path.write_bytes(b"x")
    with pytest.raises(CliError, match=r"-o .*out.onnx already exists; pass --overwrite"):
        check_new_file(path, overwrite=False, flag="-o")
    check_new_file(path, overwrite=True)
    p = argparse.ArgumentParser()
    add_overwrite(p)
    assert p.parse_args(["--overwrite"]).overwrite is True


def test_run_main_one_line_and_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    def fails() -> int:
        raise CliError("bad input")

    def os_fails() -> int:
        raise OSError("disk full")

    def interrupted() -> int:
        raise KeyboardInterrupt

    assert run_main(lambda: 0) == 0
    assert run_main(fails) == EXIT_FAILED
    assert capsys.readouterr().err == "error: bad input\n"
    assert run_main(os_fails, OSError) == EXIT_FAILED
    assert capsys.readouterr().err == "error: disk full\n"
    assert run_main(interrupted) == EXIT_INTERRUPTED
    with pytest.raises(OSError):  # not listed: a bug keeps its traceback
        run_main(os_fails)
