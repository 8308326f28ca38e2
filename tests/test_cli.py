"""The ``subplans`` command in-process: Typer's test runner for the commands, ``main()`` for the
exit codes and the one-line usage errors."""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import textwrap
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from subplans.cli import app as cli
from subplans.cli.app import ExitCode, app, main
from subplans.cli.exits import invalid

from .plans_helpers import write

runner = CliRunner()

TIMESTAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"


def plain(text: str) -> str:
    """``text`` without terminal escape sequences."""
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)


@pytest.fixture(autouse=True)
def no_user_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No test reads the user's config file, and every run folder and store lands in
    ``tmp_path``."""
    config = tmp_path / "config" / "config.yaml"
    monkeypatch.setenv("SUBPLANS_CONFIG", str(config))
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "COLUMNS", "SUBPLANS_STORE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return config


def plan(folder: Path, text: str, name: str = "plan.yaml") -> Path:
    return write(folder, name, text)


OK_PLAN = """
    name: demo
    steps:
      - name: prepare
        run: echo preparing
      - name: port
        max_parallel: 2
        for_each: [a, b, c]
        subplan:
          run: "echo porting {item}"
    """

FAILING_PLAN = """
    name: demo
    automation_profile: keep-going
    steps:
      - name: port
        for_each: [a, b, c]
        subplan:
          run: "echo porting {item}; echo second line {item}; test {item} != b"
      - name: report
        run: echo never
      - name: cleanup
        always: true
        run: echo cleaning
    """


# --- run ----------------------------------------------------------------------------------


def test_run_exits_0_with_one_timestamped_line_per_state_change(tmp_path: Path) -> None:
    plan(tmp_path, OK_PLAN)

    result = runner.invoke(app, ["run", "plan.yaml"])

    assert result.exit_code == ExitCode.OK, result.output
    lines = result.stdout.splitlines()
    changes = [line for line in lines if re.match(TIMESTAMP, line)]
    shown = [re.sub(rf"^{TIMESTAMP}  ", "", line) for line in changes]
    shown = [re.sub(r"\(\d+\.\d\ds\)", "(T)", line) for line in shown]
    assert shown[0].startswith("started    plan demo  (plan.yaml, run ")
    assert shown[1:6] == [
        "running    step prepare  (1 subplan)",
        "running    prepare",
        "completed  prepare  (T)",
        "completed  step prepare",
        "running    step port  (3 subplans)",
    ]
    for item in "abc":
        assert f"running    port/{item}" in shown
        assert f"completed  port/{item}  (T)" in shown
    assert shown[-2:] == ["completed  step port", "completed  plan demo  (T)"]
    summary = lines[len(changes) :]
    assert re.match(
        r"^plan demo completed in \d+\.\d\ds  \(run \d{8}-\d{6}-[0-9a-f]{6}\)$", summary[0]
    )
    assert summary[1:3] == [
        "  subplans  4 total, 4 completed, 0 failed",
        "  steps     prepare completed, port completed",
    ]
    assert re.match(r"^  logs      \.subplans/runs/\d{8}-\d{6}-[0-9a-f]{6}/logs$", summary[3])
    assert len(summary) == 4
    assert result.stderr == ""


def test_run_exits_1_when_the_plan_fails_and_the_summary_lists_the_failure(tmp_path: Path) -> None:
    plan(tmp_path, FAILING_PLAN)

    result = runner.invoke(app, ["run", "plan.yaml"])

    assert result.exit_code == ExitCode.FAILED
    out = result.stdout
    failed = re.search(
        rf"^{TIMESTAMP}  failed     port/b  \(\d+\.\d\ds\)  exited with code 1$", out, re.M
    )
    assert failed is not None
    # The failure line is followed by the last lines of the command's output.
    after = out[failed.end() :].splitlines()[1:3]
    assert after == ["    | porting b", "    | second line b"]
    assert re.search(rf"^{TIMESTAMP}  skipped    step report$", out, re.M)
    assert re.search(rf"^{TIMESTAMP}  failed     step port  1 of 3 subplans failed$", out, re.M)
    assert "  subplans  5 total, 3 completed, 1 failed, 1 not run\n" in out
    assert "  steps     port failed, report skipped, cleanup completed\n" in out
    table = out[out.index("  failed subplan") :].splitlines()
    assert re.match(r"^  failed subplan  error               exit code  log file$", table[0])
    assert re.match(
        r"^  port/b          exited with code 1          1  \.subplans/runs/[^/]+/logs/port__b\.log$",
        table[1],
    )


def test_quiet_prints_only_the_summary(tmp_path: Path) -> None:
    plan(tmp_path, FAILING_PLAN)

    result = runner.invoke(app, ["run", "plan.yaml", "--quiet"])

    assert result.exit_code == ExitCode.FAILED
    assert result.stdout.splitlines()[0].startswith("plan demo failed in ")
    assert not re.search(TIMESTAMP, result.stdout)


def test_no_progress_prints_failures_as_they_happen_and_the_summary(tmp_path: Path) -> None:
    plan(tmp_path, FAILING_PLAN)

    result = runner.invoke(app, ["run", "plan.yaml", "--no-progress"])

    assert result.exit_code == ExitCode.FAILED
    lines = result.stdout.splitlines()
    assert re.match(
        rf"^{TIMESTAMP}  failed     port/b  \(\d+\.\d\ds\)  exited with code 1$", lines[0]
    )
    assert lines[1:3] == ["    | porting b", "    | second line b"]
    assert lines[3].startswith("plan demo failed in ")


def test_overrides_change_the_run(tmp_path: Path) -> None:
    plan(tmp_path, FAILING_PLAN)

    result = runner.invoke(
        app,
        ["run", "plan.yaml", "-j", "1", "--failure-mode", "fail_fast", "--events-jsonl", "e.jsonl"],
    )

    assert result.exit_code == ExitCode.FAILED
    events = [json.loads(line) for line in (tmp_path / "e.jsonl").read_text().splitlines()]
    started = next(e for e in events if e["event"] == "dispatch_started" and e["name"] == "port")
    assert started["config"]["max_parallel"] == 1
    assert started["config"]["failure_mode"] == "fail_fast"
    # Fail-fast: c never started, and the summary counts it as cancelled.
    assert "  1 cancelled: cancelled because subplan 'port/b' failed\n" in result.stdout


def test_events_jsonl_writes_every_event_with_the_run_id(tmp_path: Path) -> None:
    plan(tmp_path, FAILING_PLAN)

    result = runner.invoke(app, ["run", "plan.yaml", "--events-jsonl", "events.jsonl", "-q"])

    assert result.exit_code == ExitCode.FAILED
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    run_ids = {event["run_id"] for event in events}
    assert len(run_ids) == 1
    assert run_ids.pop() in result.stdout
    kinds = [event["event"] for event in events]
    assert kinds[0] == "plan_started"
    assert kinds[-1] == "plan_finished"
    assert kinds.count("subplan_process_started") == 4  # a, b, c and cleanup
    failed = next(
        e for e in events if e.get("subplan_id") == "port/b" and e.get("state") == "failed"
    )
    assert failed["error"]["exit_code"] == 1
    assert failed["error"]["output_tail"] == "porting b\nsecond line b"


def test_events_jsonl_to_stdout_sends_the_human_output_to_stderr(tmp_path: Path) -> None:
    plan(tmp_path, OK_PLAN)

    result = runner.invoke(app, ["run", "plan.yaml", "--events-jsonl", "-"])

    assert result.exit_code == ExitCode.OK
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert {e["event"] for e in events} >= {"plan_started", "subplan_state_changed"}
    assert "plan demo completed in" in result.stderr
    assert re.search(rf"^{TIMESTAMP}  completed  port/a", result.stderr, re.M)


def test_called_functions_that_print_do_not_corrupt_the_json_on_stdout(tmp_path: Path) -> None:
    write(tmp_path, "chatty_cli_helper.py", "def talk():\n    print('hello from a function')\n")
    plan(
        tmp_path,
        """
        name: chatty
        steps:
          - name: talk
            call: chatty_cli_helper:talk
        """,
    )

    result = runner.invoke(app, ["run", str(tmp_path / "plan.yaml"), "--events-jsonl", "-", "-q"])

    assert result.exit_code == ExitCode.OK, result.output
    for line in result.stdout.splitlines():
        json.loads(line)
    assert "hello from a function" in result.stderr


def test_an_unwritable_events_path_is_invalid_input(tmp_path: Path) -> None:
    plan(tmp_path, OK_PLAN)

    result = runner.invoke(app, ["run", "plan.yaml", "--events-jsonl", "missing/dir/e.jsonl"])

    assert result.exit_code == ExitCode.INVALID
    assert result.stderr == (
        "error: --events-jsonl: cannot open missing/dir/e.jsonl: No such file or directory\n"
    )
    assert not (tmp_path / ".subplans").exists()


def test_a_run_folder_that_cannot_be_created_is_invalid_input(tmp_path: Path) -> None:
    plan(tmp_path, OK_PLAN)
    (tmp_path / ".subplans").write_text("a file where the state folder goes")

    # The store elsewhere: by default it lives in that folder too, and would be reported first.
    result = runner.invoke(
        app, ["run", "plan.yaml", "--events-jsonl", "e.jsonl", "--store", "store/state.db"]
    )

    assert result.exit_code == ExitCode.INVALID
    assert re.fullmatch(
        r"error: cannot create the run folder \S+/logs: Not a directory\n", result.stderr
    )


def test_the_live_view_runs_on_a_terminal(tmp_path: Path) -> None:
    plan(tmp_path, FAILING_PLAN)

    result = runner.invoke(
        app, ["run", "plan.yaml"], env={"FORCE_COLOR": "1", "TERM": "xterm", "COLUMNS": "120"}
    )

    assert result.exit_code == ExitCode.FAILED
    assert "\x1b[" in result.stdout  # a terminal gets colour and cursor movement
    out = plain(result.stdout)
    assert "✗ port/b  exited with code 1" in out
    assert "│ porting b" in out
    assert "plan demo failed" in out
    assert "failed subplan" in out
    assert not re.search(rf"^{TIMESTAMP}", out, re.M)


# --- invalid input ------------------------------------------------------------------------


def test_an_invalid_plan_is_one_line_per_problem_and_exit_2(tmp_path: Path) -> None:
    plan(
        tmp_path,
        """
        name: bad
        steps:
          - name: a
            max_paralel: 3
            run: "true"
          - name: b
            run: 3
        """,
    )

    result = runner.invoke(app, ["run", "plan.yaml"])

    assert result.exit_code == ExitCode.INVALID
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "error: plan.yaml:4:5: steps[0].max_paralel: unknown key 'max_paralel'; "
        "did you mean 'max_parallel'?",
        "error: plan.yaml:7:10: steps[1].run: must be a command string or a non-empty list of "
        "argument strings, got 3 (int)",
    ]
    assert "Traceback" not in result.output


def test_bad_option_values_are_reported_with_the_plan_problems(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["run", "missing.yaml", "--max-parallel", "40", "--profile", "nope"]
    )

    assert result.exit_code == ExitCode.INVALID
    assert result.stderr.splitlines() == [
        "error: --max-parallel must be between 1 and 32, got 40",
        "error: --profile: unknown profile 'nope'; known profiles: default, serial, keep-going, "
        "wide, wide-keep-going",
        "error: missing.yaml: no such file",
    ]


def test_bad_option_values_alone_exit_2(tmp_path: Path) -> None:
    plan(tmp_path, OK_PLAN)

    result = runner.invoke(app, ["run", "plan.yaml", "-j", "0"])

    assert result.exit_code == ExitCode.INVALID
    assert result.stderr == "error: --max-parallel must be between 1 and 32, got 0\n"


def test_a_bad_config_file_is_invalid_input(tmp_path: Path, no_user_config: Path) -> None:
    write(no_user_config.parent, no_user_config.name, "profiles:\n  default: {max_parallel: 2}\n")
    plan(tmp_path, OK_PLAN)

    for args in (["run", "plan.yaml"], ["validate", "plan.yaml"], ["profile", "list"]):
        result = runner.invoke(app, args)
        assert result.exit_code == ExitCode.INVALID, args
        assert result.stderr == (
            f"error: {no_user_config}: profiles.default: 'default' is a built-in profile; "
            "choose another name\n"
        )


def test_a_problem_message_of_several_lines_is_printed_on_one(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(typer.Exit):
        invalid(["first\nsecond"])

    assert capsys.readouterr().err == "error: first second\n"


# --- main(): exit codes of usage errors -----------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run"], r"(?i)error: missing argument 'PLAN' \(see 'subplans run --help'\)"),
        (["run", "p.yaml", "-j", "abc"], r"error: invalid value for '--max-parallel' / '-j': .+"),
        (
            ["run", "p.yaml", "--failure-mode", "fast"],
            r"error: invalid value for '--failure-mode': .+",
        ),
        (["run", "p.yaml", "--frobnicate"], r"error: no such option: --frobnicate.*"),
        (
            ["schema", "nothing"],
            r"error: invalid value for '\{plan\|profile\}': .+|error: .*'nothing'.*",
        ),
        (["launch"], r"error: no such command 'launch'.*"),
    ],
)
def test_usage_errors_are_one_error_line_and_exit_2(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(args) == ExitCode.INVALID

    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1
    assert re.fullmatch(message, lines[0])


def test_main_without_a_command_prints_the_help_and_exits_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main([]) == ExitCode.INVALID

    captured = capsys.readouterr()
    assert "Usage: subplans" in captured.out + captured.err


def test_main_returns_the_exit_code_of_a_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plan(tmp_path, FAILING_PLAN)

    assert main(["run", "plan.yaml", "-q"]) == ExitCode.FAILED
    assert main(["validate", "plan.yaml"]) == ExitCode.OK
    assert main(["run", "nothing.yaml"]) == ExitCode.INVALID
    assert "error: nothing.yaml: no such file" in capsys.readouterr().err


def test_main_turns_an_abort_into_exit_130(monkeypatch: pytest.MonkeyPatch) -> None:
    def abort(*args: object, **kwargs: object) -> None:
        raise typer.Abort()

    command = typer.main.get_command(app)
    monkeypatch.setattr(type(command), "main", abort)

    # Through Typer: a plain `run` line is read without it (cli.run_args).
    assert main(["validate", "x.yaml"]) == ExitCode.INTERRUPTED


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    from importlib.metadata import version

    assert main(["--version"]) == ExitCode.OK
    assert capsys.readouterr().out == f"subplans {version('subplans')}\n"


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["run"],
        ["validate"],
        ["profile"],
        ["profile", "list"],
        ["profile", "show"],
        ["profile", "resolve"],
        ["schema"],
    ],
)
def test_every_command_has_help_with_an_example(args: list[str]) -> None:
    result = runner.invoke(app, [*args, "--help"], env={"COLUMNS": "120"})

    assert result.exit_code == 0
    assert re.search(r"Examples?:", result.stdout)
    assert re.search(r"^\s+subplans( \S+)*", result.stdout.split("Example")[-1], re.M)


# --- validate, profile, schema ------------------------------------------------------------


def test_validate_describes_a_valid_plan_and_runs_nothing(tmp_path: Path) -> None:
    write(tmp_path, "nested.yaml", "name: inner\nsteps:\n  - {name: x, run: 'true'}\n")
    plan(
        tmp_path,
        """
        name: outer
        steps:
          - name: a
            subplans:
              - {name: one, run: "touch ran"}
              - {name: two, plan: nested.yaml}
        """,
    )

    result = runner.invoke(app, ["validate", "plan.yaml"])

    assert result.exit_code == ExitCode.OK
    assert result.stdout == "ok: plan.yaml: plan 'outer', 1 step, 3 subplans (1 nested plan)\n"
    assert not (tmp_path / "ran").exists()
    assert not (tmp_path / ".subplans").exists()


def test_validate_counts_in_the_plural(tmp_path: Path) -> None:
    plan(tmp_path, OK_PLAN)

    result = runner.invoke(app, ["validate", "plan.yaml"])

    assert result.stdout == "ok: plan.yaml: plan 'demo', 2 steps, 4 subplans\n"


def test_validate_reports_an_invalid_plan(tmp_path: Path) -> None:
    plan(tmp_path, "name: x\nsteps: [\n")

    result = runner.invoke(app, ["validate", "plan.yaml"])

    assert result.exit_code == ExitCode.INVALID
    assert result.stderr.startswith("error: plan.yaml:3:1: YAML syntax error: ")
    assert len(result.stderr.splitlines()) == 1


def test_profile_list_shows_built_in_and_custom_profiles(no_user_config: Path) -> None:
    write(no_user_config.parent, no_user_config.name, "profiles:\n  fast: {max_parallel: 12}\n")

    result = runner.invoke(app, ["profile", "list"])

    assert result.exit_code == ExitCode.OK
    assert result.stdout.splitlines() == [
        "default          4 at a time, stop on the first failure",
        "serial           one at a time, in order, stop on the first failure",
        "keep-going       4 at a time, run everything and report every failure",
        "wide             16 at a time, stop on the first failure",
        "wide-keep-going  16 at a time, run everything and report every failure",
        f"fast             custom, from {no_user_config}",
    ]


def test_profile_show_a_built_in_profile() -> None:
    result = runner.invoke(app, ["profile", "show", "keep-going"])

    assert result.exit_code == ExitCode.OK
    assert result.stdout.splitlines() == [
        "keep-going: 4 at a time, run everything and report every failure",
        "  max_parallel  4                  profile = 'keep-going' (built-in)",
        "  failure_mode  continue_on_error  profile = 'keep-going' (built-in)",
        "  cancel_grace  5.0                not set: built-in default",
        "  timeout       none               not set: built-in default",
        "  retries       0                  not set: built-in default",
        "  idempotent    true               not set: built-in default",
    ]


def test_profile_show_a_custom_profile_names_its_file(no_user_config: Path) -> None:
    write(
        no_user_config.parent,
        no_user_config.name,
        "profiles:\n  fast: {profile: wide, retries: 2, timeout: 30}\n",
    )

    result = runner.invoke(app, ["profile", "show", "fast"])

    assert result.exit_code == ExitCode.OK
    assert result.stdout.splitlines()[1:] == [
        f"  max_parallel  16         profile = 'fast' (profiles.fast.profile = 'wide' (built-in)) ({no_user_config})",
        f"  failure_mode  fail_fast  profile = 'fast' (profiles.fast.profile = 'wide' (built-in)) ({no_user_config})",
        "  cancel_grace  5.0        not set: built-in default",
        f"  timeout       30.0       profile = 'fast' (profiles.fast.timeout) ({no_user_config})",
        f"  retries       2          profile = 'fast' (profiles.fast.retries) ({no_user_config})",
        "  idempotent    true       not set: built-in default",
    ]


def test_profile_show_an_unknown_profile_exits_2() -> None:
    result = runner.invoke(app, ["profile", "show", "fastest"])

    assert result.exit_code == ExitCode.INVALID
    assert result.stderr == (
        "error: unknown profile 'fastest'; known profiles: default, serial, keep-going, wide, "
        "wide-keep-going\n"
    )


def test_profile_resolve_prints_each_field_with_its_source(tmp_path: Path) -> None:
    write(
        tmp_path,
        "inner.yaml",
        """
        name: inner
        automation_profile: serial
        steps:
          - {name: build, run: "true"}
        """,
    )
    plan(
        tmp_path,
        """
        name: outer
        automation_profile: keep-going
        steps:
          - name: prepare
            run: "true"
          - name: port
            max_parallel: 8
            subplans:
              - {name: docs, plan: inner.yaml}
        """,
    )

    result = runner.invoke(app, ["profile", "resolve", "plan.yaml", "--failure-mode", "fail_fast"])

    assert result.exit_code == ExitCode.OK
    assert result.stdout == textwrap.dedent(
        """\
        plan: outer  (plan.yaml)
          max_parallel  4          plan (plan.yaml: automation_profile = 'keep-going' (built-in))
          failure_mode  fail_fast  plan (--failure-mode)
          cancel_grace  5.0        default (profile = 'default' (built-in))
          timeout       none       default (built-in profile 'default' (no timeout))
          retries       0          default (profile = 'default' (built-in))
          idempotent    true       default (profile = 'default' (built-in))
        step prepare
          max_parallel  4          plan (plan.yaml: automation_profile = 'keep-going' (built-in))
          failure_mode  fail_fast  plan (--failure-mode)
          cancel_grace  5.0        default (profile = 'default' (built-in))
          timeout       none       default (built-in profile 'default' (no timeout))
          retries       0          default (profile = 'default' (built-in))
          idempotent    true       default (profile = 'default' (built-in))
        step port
          max_parallel  8          step (plan.yaml: steps[1].max_parallel)
          failure_mode  fail_fast  plan (--failure-mode)
          cancel_grace  5.0        default (profile = 'default' (built-in))
          timeout       none       default (built-in profile 'default' (no timeout))
          retries       0          default (profile = 'default' (built-in))
          idempotent    true       default (profile = 'default' (built-in))
        plan port/docs: inner  (inner.yaml)
          max_parallel  1          plan (inner.yaml: automation_profile = 'serial' (built-in))
          failure_mode  fail_fast  plan (inner.yaml: automation_profile = 'serial' (built-in))
          cancel_grace  5.0        default (profile = 'default' (built-in))
          timeout       none       default (built-in profile 'default' (no timeout))
          retries       0          default (profile = 'default' (built-in))
          idempotent    true       default (profile = 'default' (built-in))
        step port/docs/build
          max_parallel  1          plan (inner.yaml: automation_profile = 'serial' (built-in))
          failure_mode  fail_fast  plan (inner.yaml: automation_profile = 'serial' (built-in))
          cancel_grace  5.0        default (profile = 'default' (built-in))
          timeout       none       default (built-in profile 'default' (no timeout))
          retries       0          default (profile = 'default' (built-in))
          idempotent    true       default (profile = 'default' (built-in))
        """
    )


def test_profile_resolve_checks_the_overrides(tmp_path: Path) -> None:
    plan(tmp_path, OK_PLAN)

    result = runner.invoke(app, ["profile", "resolve", "plan.yaml", "-j", "33"])

    assert result.exit_code == ExitCode.INVALID
    assert result.stderr == "error: --max-parallel must be between 1 and 32, got 33\n"


@pytest.mark.parametrize("name", ["plan", "profile"])
def test_schema_prints_the_json_schema(name: str) -> None:
    from subplans.plans.schemas import render

    result = runner.invoke(app, ["schema", name])

    assert result.exit_code == ExitCode.OK
    assert result.stdout == render(name)
    assert json.loads(result.stdout)["$id"].endswith(f"/{name}.schema.json")


# --- interruption and broken streams, in-process -------------------------------------------


def test_an_interrupt_exits_130_with_the_summary(tmp_path: Path) -> None:
    # The subplan interrupts its own run: the signal arrives while the run's handlers are on.
    write(
        tmp_path,
        "interrupt_cli_helper.py",
        """
        import asyncio, os, signal

        async def interrupt():
            os.kill(os.getpid(), signal.SIGINT)
            await asyncio.sleep(30)
        """,
    )
    plan(tmp_path, "name: stop\nsteps:\n  - {name: a, call: 'interrupt_cli_helper:interrupt'}\n")

    # An absolute path: the loader finds a module through the plan's folder on sys.path,
    # and "." may be there already, cached by an earlier test in another folder.
    result = runner.invoke(app, ["run", str(tmp_path / "plan.yaml"), "--no-progress"])

    assert result.exit_code == ExitCode.INTERRUPTED, result.output
    assert result.stdout.startswith("SIGINT: stopping; ")
    assert "plan stop interrupted in " in result.stdout
    assert "  1 cancelled: interrupted by SIGINT\n" in result.stdout


def test_a_failing_events_stream_is_reported_once_at_the_end(tmp_path: Path) -> None:
    plan(tmp_path, OK_PLAN)

    result = runner.invoke(app, ["run", "plan.yaml", "-q", "--events-jsonl", "/dev/full"])

    assert result.exit_code == ExitCode.OK
    assert result.stderr == (
        "warning: --events-jsonl: writing failed: [Errno 28] No space left on device\n"
    )


def test_python_dash_m_subplans_runs_main(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import runpy

    monkeypatch.setattr("sys.argv", ["subplans", "--version"])

    with pytest.raises(SystemExit) as exited:
        runpy.run_module("subplans", run_name="__main__")

    assert exited.value.code == ExitCode.OK
    assert capsys.readouterr().out.startswith("subplans ")


def test_a_closed_stdout_is_pointed_at_dev_null_before_python_exits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import io
    import os
    import stat

    read, write_end = os.pipe()
    os.close(read)
    stream = io.TextIOWrapper(io.FileIO(write_end, "w"), write_through=False)
    stream.write("lost")
    monkeypatch.setattr("sys.stdout", stream)

    cli._forget_closed_stdout()

    assert stat.S_ISCHR(os.fstat(write_end).st_mode)  # /dev/null now
    stream.close()


def test_a_reader_that_goes_away_is_not_a_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pins: `subplans schema plan | head -1` exited 1, the code of a failed plan."""
    import io as _io

    read_end, write_end = os.pipe()
    os.close(read_end)
    stream = _io.TextIOWrapper(_io.FileIO(write_end, "w"), write_through=True)
    monkeypatch.setattr(sys, "stdout", stream)
    try:
        assert main(["schema", "plan"]) == ExitCode.OK
    finally:
        monkeypatch.undo()
        with contextlib.suppress(OSError):
            stream.close()


def test_a_command_started_without_stdout_has_nothing_to_forget(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sys, "stdout", None)  # started with stdout closed (`>&-`)

    cli._forget_closed_stdout()
