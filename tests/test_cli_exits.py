"""The command's exit codes for what ends it early: refusals, unusable stores, Ctrl-C."""

from __future__ import annotations

import pytest
import typer

from subplans.cli.exits import ExitCode, interruptible, invalid_input, refuse
from subplans.engine.errors import RunBusyError, StoreError


def test_a_refusal_prints_its_preface_then_one_error_line_per_problem(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(typer.Exit) as exited, invalid_input():
        refuse(["first", "second\nline"], preface="what was found:\n  a, b")

    assert exited.value.exit_code == ExitCode.INVALID
    assert capsys.readouterr().err == (
        "what was found:\n  a, b\nerror: first\nerror: second line\n"
    )


@pytest.mark.parametrize("error", [StoreError("no store"), RunBusyError("run r1 is busy")])
def test_store_and_busy_errors_are_invalid_input(
    error: Exception, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(typer.Exit) as exited, invalid_input():
        raise error

    assert exited.value.exit_code == ExitCode.INVALID
    assert capsys.readouterr().err == f"error: {error}\n"


def test_other_errors_pass_through_invalid_input() -> None:
    with pytest.raises(ValueError, match=r"^not ours$"), invalid_input():
        raise ValueError("not ours")


def test_a_refusal_without_preface_is_its_error_lines_only(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(typer.Exit), invalid_input():
        refuse(["a", "b"])

    assert capsys.readouterr() == ("", "error: a\nerror: b\n")


def test_ctrl_c_while_waiting_is_exit_130_without_a_traceback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(typer.Exit) as exited, interruptible():
        raise KeyboardInterrupt

    assert exited.value.exit_code == ExitCode.INTERRUPTED
    assert exited.value.__cause__ is None
    assert exited.value.__suppress_context__
    assert capsys.readouterr() == ("", "")


@pytest.mark.parametrize(
    ("option", "allowed"),
    [
        ("--output", "'files', 'tag', 'group'"),
        ("--failure-mode", "'fail_fast', 'continue_on_error'"),
    ],
)
def test_a_bad_choice_is_one_line_without_the_validator_s_prefix(
    option: str, allowed: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from subplans.cli.app import main

    assert main(["run", "plan.yaml", option, "bogus"]) == ExitCode.INVALID
    assert capsys.readouterr().err == (
        f"error: invalid value for '{option}': 'bogus' is not one of {allowed}"
        " (see 'subplans run --help')\n"
    )
