"""``subplans run`` read without Typer (``cli.run_args``, issue #10): a plain line gives the very
values Typer would give the command, any other line is left to Typer, and the run ends with the
exit code and lines Typer's path gives."""

from __future__ import annotations

import errno
import inspect
from enum import Enum
from pathlib import Path
from typing import Any, NoReturn, get_args, get_type_hints

import pytest
import typer

from subplans.cli import app as cli
from subplans.cli.app import ExitCode, main
from subplans.cli.overrides import BackendKind
from subplans.cli.run_args import _FLAGS, _VALUED, plain_run_args, run_plainly
from subplans.cli.run_plan import run_plan
from subplans.cli.typer_app import app
from subplans.engine.config import FailureMode
from subplans.sinks.tagged_output import OutputMode

from .plans_helpers import write

#: ``run_plan``'s keywords with their defaults: what Typer gives for an option not written
#: (``test_every_option_of_run_is_read_plainly_as_typer_reads_it`` holds them equal).
DEFAULTS: dict[str, Any] = {
    name: parameter.default
    for name, parameter in inspect.signature(run_plan).parameters.items()
    if parameter.kind is parameter.KEYWORD_ONLY
}
#: Options of ``run`` the plain path never reads: a line with one is Typer's.
LEFT_TO_TYPER = {"dry_run", "json_", "help"}

PLAIN = [
    ["run", "plan.yaml"],
    ["run", "plan.yaml", "--no-progress"],
    ["run", "-q", "plan.yaml"],
    ["run", "plan.yaml", "-j", "8", "--failure-mode", "continue_on_error", "-p", "keep-going"],
    ["run", "plan.yaml", "--max-parallel=16", "--profile=wide", "--failure-mode=fail_fast"],
    ["run", "plan.yaml", "--events-jsonl", "-", "--quiet"],
    ["run", "plan.yaml", "--events-jsonl=ev.jsonl", "--store", "s.db", "--concurrent"],
    ["run", "dir/plan with space.yaml", "--output=group"],
    ["run", "plan.yaml", "--output", "tag", "--store=-"],
    ["run", "plan.yaml", "-j", "0"],
    ["run", "plan.yaml", "-j", "99"],
    ["run", "plan.yaml", "--profile", "-"],
    ["run", "ünïcode.yaml", "--output", "files"],
]

FOR_TYPER = [
    ["run"],
    ["runs"],
    ["validate", "plan.yaml"],
    ["--version", "run"],
    ["run", "--help"],
    ["run", "plan.yaml", "-h"],
    ["run", "plan.yaml", "--dry-run"],
    ["run", "plan.yaml", "--json"],
    ["run", "plan.yaml", "--bogus"],
    ["run", "plan.yaml", "--max-par", "4"],
    ["run", "a.yaml", "b.yaml"],
    ["run", "plan.yaml", "-j"],
    ["run", "plan.yaml", "--max-parallel="],
    ["run", "plan.yaml", "-j", "x"],
    ["run", "plan.yaml", "-j", "08"],
    ["run", "plan.yaml", "-j", "+8"],
    ["run", "plan.yaml", "-j", " 8"],
    ["run", "plan.yaml", "-j", "1_0"],
    ["run", "plan.yaml", "-j", "-1"],
    ["run", "plan.yaml", "-j8"],
    ["run", "plan.yaml", "-j=8"],
    ["run", "plan.yaml", "-qj", "8"],
    ["run", "plan.yaml", "-j", "4", "-j", "8"],
    ["run", "plan.yaml", "-q", "--quiet"],
    ["run", "plan.yaml", "--quiet=yes"],
    ["run", "plan.yaml", "--failure-mode", "FAIL_FAST"],
    ["run", "plan.yaml", "--output", "TAG"],
    ["run", "plan.yaml", "--profile", ""],
    ["run", "plan.yaml", "--profile", "--quiet"],
    ["run", "--", "plan.yaml"],
    ["run", "-"],
    ["run", ""],
    ["run", "plan\udcff.yaml"],
]


def typer_reads(args: list[str]) -> dict[str, Any]:
    """The values Typer's ``run`` command gets from ``args`` (after ``run``)."""
    group = typer.main.get_command(app)
    command = group.commands["run"]  # type: ignore[attr-defined]
    with command.make_context("run", list(args[1:])) as ctx:
        params = dict(ctx.params)
    # Typer makes a path a Path and a choice its Enum as it calls the command (older versions
    # only then, newer ones already in the parameters): compare what the command receives.
    names = {
        "Path": Path,
        "FailureMode": FailureMode,
        "OutputMode": OutputMode,
        "BackendKind": BackendKind,
    }
    hints = get_type_hints(run_plan, localns=names)
    for name, value in params.items():
        kinds = get_args(hints.get(name)) or (hints.get(name),)
        made = [k for k in kinds if k is Path or (isinstance(k, type) and issubclass(k, Enum))]
        if isinstance(value, str) and made:
            params[name] = made[0](value)
    return params


@pytest.mark.parametrize("args", PLAIN, ids=" ".join)
def test_a_plain_line_gives_what_typer_gives(args: list[str]) -> None:
    plain = plain_run_args(args)

    assert plain is not None
    typed = typer_reads(args)
    assert {typed.pop(name, False) for name in LEFT_TO_TYPER} == {False}
    assert {**DEFAULTS, **plain} == typed
    for name, value in plain.items():
        assert type(value) is type(typed[name]), name


def test_values_are_typed_as_the_command_takes_them() -> None:
    found = plain_run_args(
        ["run", "p.yaml", "-j", "8", "--failure-mode", "fail_fast", "--store", "s.db"]
    )

    assert found == {
        "plan": Path("p.yaml"),
        "max_parallel": 8,
        "failure_mode": FailureMode.FAIL_FAST,
        "store": Path("s.db"),
    }


@pytest.mark.parametrize("args", FOR_TYPER, ids=repr)
def test_any_other_line_is_left_to_typer(args: list[str]) -> None:
    assert plain_run_args(args) is None


def test_shell_completion_is_left_to_typer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("_SUBPLANS_COMPLETE", "bash_complete")

    assert plain_run_args(["run", "plan.yaml"]) is None


FAILING = "name: f\nsteps:\n  - name: s\n    run: 'exit 3'\n"


@pytest.mark.parametrize(
    "args",
    [
        ["run", "missing.yaml"],
        ["run", "plan.yaml", "-j", "0"],
        ["run", "plan.yaml", "-j", "40", "--profile", "nope"],
        ["run", "plan.yaml", "--output", "tag", "--events-jsonl", "-"],
        ["run", "bad.yaml"],
    ],
    ids=" ".join,
)
def test_refusals_are_typers_line_for_line(
    args: list[str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "plan.yaml", FAILING)
    write(tmp_path, "bad.yaml", "name: b\nsteps:\n  - name: 'a/b'\n    run: 1\n")
    assert plain_run_args(args) is not None

    plain = main(args), capsys.readouterr()
    typed = cli._main(args), capsys.readouterr()

    assert plain == typed
    assert plain[0] == ExitCode.INVALID


def test_a_failed_run_exits_1_on_both_paths(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "plan.yaml", FAILING)

    assert main(["run", "plan.yaml", "-q", "--store", "a.db"]) == ExitCode.FAILED
    plain = capsys.readouterr()
    assert cli._main(["run", "plan.yaml", "-q", "--store", "b.db"]) == ExitCode.FAILED
    typed = capsys.readouterr()
    assert plain.out.count("\n") == typed.out.count("\n") > 0
    assert plain.err == typed.err


def _raising(error: BaseException) -> Any:
    def runner(**arguments: object) -> NoReturn:
        raise error

    return runner


@pytest.mark.parametrize(
    ("error", "code", "err"),
    [
        (typer.Exit(ExitCode.INVALID), ExitCode.INVALID, ""),
        (EOFError(), ExitCode.INTERRUPTED, "\n"),  # click: a line, then Abort
        (KeyboardInterrupt(), ExitCode.INTERRUPTED, ""),
        (BrokenPipeError(errno.EPIPE, "Broken pipe"), ExitCode.OK, ""),
    ],
    ids=["exit", "eof", "interrupt", "pipe"],
)
def test_how_a_run_ends_is_the_code_typers_path_gives(
    error: BaseException, code: int, err: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_plainly({"plan": Path("p.yaml")}, _raising(error)) == code
    assert capsys.readouterr().err == err


@pytest.mark.parametrize(
    "error", [OSError(errno.ENOENT, "gone"), ValueError("a bug")], ids=["oserror", "other"]
)
def test_other_errors_pass_through(error: Exception) -> None:
    with pytest.raises(type(error)):
        run_plainly({"plan": Path("p.yaml")}, _raising(error))


# The plain path's tables read from Typer's own ``run`` command, so that an option added to it,
# renamed, given an environment variable or a callback fails here until ``run_args`` follows.

#: A value Typer takes as it is for each option with one (a new one needs its sample here).
SAMPLES = {
    "max_parallel": "8",
    "failure_mode": "continue_on_error",
    "profile": "wide",
    "halt": "soon,fail=3%",
    "events_jsonl": "events.jsonl",
    "store": "runs.db",
    "output_mode": OutputMode.GROUP.value,
    "backend": "dask",
    "scheduler": "tcp://127.0.0.1:8786",
}


def run_parameters() -> dict[str, Any]:
    """Every parameter of Typer's ``run`` command (``--help`` included), by name."""
    command = typer.main.get_command(app).commands["run"]  # type: ignore[attr-defined]
    with command.make_context("run", ["plan.yaml"]) as ctx:
        return {parameter.name: parameter for parameter in command.get_params(ctx)}


PARAMETERS = run_parameters()
OPTIONS = {name: p for name, p in PARAMETERS.items() if p.param_type_name == "option"}
READ_PLAINLY = sorted(set(OPTIONS) - LEFT_TO_TYPER)


def test_run_has_one_argument_the_plan_and_options_run_plan_takes() -> None:
    arguments = [name for name, p in PARAMETERS.items() if p.param_type_name == "argument"]

    assert arguments == ["plan"]
    assert PARAMETERS["plan"].nargs == 1
    assert set(OPTIONS) >= LEFT_TO_TYPER
    assert set(READ_PLAINLY) == set(DEFAULTS)
    assert set(_FLAGS.values()) | set(_VALUED.values()) == set(DEFAULTS)


def test_the_plain_tables_name_exactly_the_options_of_run() -> None:
    names = {name for option in READ_PLAINLY for name in OPTIONS[option].opts}

    assert set(_FLAGS) | set(_VALUED) == names
    assert not set(_FLAGS) & set(_VALUED)


@pytest.mark.parametrize("option", READ_PLAINLY)
def test_every_option_of_run_is_read_plainly_as_typer_reads_it(option: str) -> None:
    parameter = OPTIONS[option]
    # What the plain path cannot see: a value from the environment, a callback, a --no-x
    # spelling, a count, a repeated or many-valued option.
    assert parameter.envvar is None
    assert parameter.callback is None
    assert parameter.secondary_opts == []
    assert (parameter.multiple, parameter.nargs, parameter.count) == (False, 1, False)
    assert parameter.expose_value
    assert not parameter.is_eager
    table = _FLAGS if parameter.is_flag else _VALUED
    assert {table.get(name) for name in parameter.opts} == {option}
    unwritten = typer_reads(["run", "plan.yaml"])[option]
    assert (unwritten, type(unwritten)) == (DEFAULTS[option], type(DEFAULTS[option]))
    for name in parameter.opts:
        lines = [[name]] if parameter.is_flag else [[name, SAMPLES[option]]]
        if name.startswith("--") and not parameter.is_flag:
            lines.append([f"{name}={SAMPLES[option]}"])
        for written in lines:
            args = ["run", "plan.yaml", *written]
            plain, typed = plain_run_args(args), typer_reads(args)
            assert plain is not None, args
            assert (plain[option], type(plain[option])) == (typed[option], type(typed[option]))
            assert plain[option] != DEFAULTS[option]


@pytest.mark.parametrize("option", sorted(LEFT_TO_TYPER))
def test_an_option_left_to_typer_leaves_the_line_to_it(option: str) -> None:
    for name in OPTIONS[option].opts:
        assert plain_run_args(["run", "plan.yaml", name]) is None
        assert plain_run_args(["run", name, "plan.yaml", "-q"]) is None
