"""``for_each`` sources read when their step starts (issue #11), end to end: ``python -m
subplans`` runs real processes that make the files, globs and command output later steps fan
out over; ``validate`` says what each source would give now."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from subplans import EventBus
from subplans.cli.app import main
from subplans.cli.exits import ExitCode
from subplans.engine.errors import CommandFailedError
from subplans.engine.events import StepStateChanged
from subplans.engine.states import PlanState, StepState
from subplans.execution.executor import PlanExecutor
from subplans.execution.results import PlanResult
from subplans.plans.loader import GlobalConfig, load_plan
from subplans.plans.profiles import ProfileRegistry
from subplans.store import PlanManifest

from .conftest import Recorder, command_env, wait_until
from .plans_helpers import write
from .process_helpers import alive, eventually
from .test_cli_process import processes_of_run


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """No user config, no terminal, the store in the test's folder."""
    return command_env(
        SUBPLANS_CONFIG=str(tmp_path / "no-config.yaml"),
        SUBPLANS_STORE=str(tmp_path / "store" / "state.db"),
    )


def run_cli(
    *args: str, cwd: Path, env: dict[str, str], stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "subplans", *args],
        cwd=cwd,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def run_plan(
    tmp_path: Path, env: dict[str, str], plan: str, *, stdin: str = ""
) -> tuple[subprocess.CompletedProcess[str], list[dict[str, Any]]]:
    """``subplans run`` of ``plan``: how it ended, and its events."""
    write(tmp_path, "plan.yaml", plan)
    events = tmp_path / "events.jsonl"
    events.unlink(missing_ok=True)
    done = run_cli(
        "run",
        "plan.yaml",
        "--quiet",
        "--events-jsonl",
        str(events),
        cwd=tmp_path,
        env=env,
        stdin=stdin,
    )
    return done, [json.loads(line) for line in events.read_text().splitlines()]


def subplan_ids(events: list[dict[str, Any]], state: str = "completed") -> list[str]:
    return sorted(
        e["subplan_id"]
        for e in events
        if e["event"] == "subplan_state_changed" and e["state"] == state
    )


def step_ends(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each step's last ``step_state_changed`` event."""
    return {e["step_id"]: e for e in events if e["event"] == "step_state_changed"}


def lines_of(path: Path) -> list[str]:
    return sorted(path.read_text().split())


# --- the sources, read when their step starts ----------------------------------------------


def test_a_step_fans_out_over_the_lines_an_earlier_step_wrote(
    tmp_path: Path, env: dict[str, str]
) -> None:
    plan = """
        name: p
        steps:
          - name: list
            run: printf 'a\\n\\n# not one\\nb\\nc\\n' > items.txt
          - name: each
            for_each: {lines: items.txt}
            subplan: {run: 'echo {item} >> done.txt'}
        """
    write(tmp_path, "plan.yaml", plan)
    checked = run_cli("validate", "plan.yaml", cwd=tmp_path, env=env)
    assert checked.stdout == (
        "ok: plan.yaml: plan 'p', 2 steps, 1 subplan; 1 step reads its items when it starts:\n"
        "  each: lines of 'items.txt': items.txt does not exist yet (an earlier step may make it)\n"
    )

    done, events = run_plan(tmp_path, env, plan)

    assert done.returncode == ExitCode.OK, done.stderr
    assert lines_of(tmp_path / "done.txt") == ["a", "b", "c"]
    assert subplan_ids(events) == ["each/a", "each/b", "each/c", "list"]
    running = [e for e in events if e["event"] == "step_state_changed" and e["state"] == "running"]
    assert [(e["step_id"], e["total"]) for e in running] == [("list", 1), ("each", 3)]


def test_globs_read_what_earlier_steps_made_less_what_is_excluded(
    tmp_path: Path, env: dict[str, str]
) -> None:
    done, events = run_plan(
        tmp_path,
        env,
        """
        name: p
        steps:
          - name: make
            run: mkdir -p out/deep && touch out/a.py out/deep/b.py out/c.txt out/skip.py
          - name: each
            for_each: {glob: ["out/**/*.py", "out/*.txt"], exclude: [out/skip.py]}
            subplan: {name: '{stem}', run: ['true']}
          - name: none
            for_each: {glob: 'nothing/*', allow_empty: true}
            subplan: {run: ['false']}
        """,
    )

    assert done.returncode == ExitCode.OK, done.stderr
    assert subplan_ids(events) == ["each/a", "each/b", "each/c", "make"]
    ends = step_ends(events)
    assert (ends["none"]["state"], ends["none"]["total"]) == ("completed", 0)


def test_a_glob_that_matches_nothing_fails_its_step_and_says_so(
    tmp_path: Path, env: dict[str, str]
) -> None:
    done, events = run_plan(
        tmp_path,
        env,
        """
        name: p
        steps:
          - name: each
            for_each: {glob: 'out/*.py'}
            subplan: {run: ['true']}
          - name: later
            run: ['true']
          - name: last
            always: true
            run: ['true']
        """,
    )

    assert done.returncode == ExitCode.FAILED
    ends = step_ends(events)
    assert [ends[s]["state"] for s in ("each", "later", "last")] == [
        "failed",
        "skipped",
        "completed",
    ]
    error = ends["each"]["error"]
    assert error["type"] == "ProblemsError"
    assert error["message"] == (
        f"step each: for_each.glob: 'out/*.py' matches no files in {tmp_path}; "
        "allow_empty: true runs no subplans instead"
    )


def test_a_command_s_output_lines_are_the_items(tmp_path: Path, env: dict[str, str]) -> None:
    done, events = run_plan(
        tmp_path,
        env,
        """
        name: p
        steps:
          - name: each
            for_each: {command: "printf 'x\\n\\n  y z \\n'; echo noise >&2; pwd > where.txt"}
            subplan: {name: '{index}', run: 'echo {item} >> done.txt'}
        """,
    )

    assert done.returncode == ExitCode.OK, done.stderr
    assert subplan_ids(events) == ["each/0", "each/1"]
    assert sorted((tmp_path / "done.txt").read_text().splitlines()) == ["x", "y z"]
    assert (tmp_path / "where.txt").read_text().strip() == str(tmp_path)  # the plan's folder
    log = tmp_path / ".subplans" / "runs"
    (source_log,) = log.glob("*/logs/each.items.log")
    assert source_log.read_text() == "noise\n"  # standard error only
    assert not list(log.glob("*/logs/*.out"))


def test_a_failed_command_fails_its_step_with_its_exit_code_and_stderr(
    tmp_path: Path, env: dict[str, str]
) -> None:
    done, events = run_plan(
        tmp_path,
        env,
        """
        name: p
        steps:
          - name: each
            for_each: {command: "echo item; echo first >&2; echo 'no such module' >&2; exit 3"}
            subplan: {run: ['true']}
        """,
    )

    assert done.returncode == ExitCode.FAILED
    error = step_ends(events)["each"]["error"]
    assert error["type"] == "CommandFailedError"
    assert error["exit_code"] == 3
    assert error["message"] == (
        "step each: for_each command \"echo item; echo first >&2; echo 'no such module' >&2; "
        'exit 3" exited with code 3: no such module'
    )
    assert error["output_tail"] == "first\nno such module"
    assert subplan_ids(events) == []


def test_lines_of_standard_input(tmp_path: Path, env: dict[str, str]) -> None:
    done, events = run_plan(
        tmp_path,
        env,
        """
        name: p
        steps:
          - name: each
            for_each: {lines: '-'}
            subplan: {run: ['true']}
          - name: again
            for_each: {lines: '-'}
            subplan: {run: ['true']}
        """,
        stdin="p\n# no\nq\n",
    )

    assert done.returncode == ExitCode.OK, done.stderr
    # Read once: both steps get what the command was given.
    assert subplan_ids(events) == ["again/p", "again/q", "each/p", "each/q"]


def test_runtime_names_are_checked_as_written_ones(tmp_path: Path, env: dict[str, str]) -> None:
    done, events = run_plan(
        tmp_path,
        env,
        """
        name: p
        steps:
          - name: each
            for_each: {command: "echo a; echo a"}
            subplan: {run: ['true']}
        """,
    )

    assert done.returncode == ExitCode.FAILED
    error = step_ends(events)["each"]["error"]
    assert error["message"] == (
        "plan.yaml:5:14: steps[0].subplan.name: for_each item 'a' gives the duplicate name 'a'"
    )


def test_a_nested_plan_per_item_fans_out_again_inside(tmp_path: Path, env: dict[str, str]) -> None:
    """One nested plan per module, each fanning out over what its module lists: the nested
    plan's own source is read when its step starts, with the module it was given."""
    write(
        tmp_path,
        "module.yaml",
        """
        name: module
        steps:
          - name: parts
            for_each: {command: 'for n in 1 2; do echo "$SUBPLANS_ITEM-$X-$n"; done'}
            subplan: {name: '{index}', run: 'echo {item} >> done.txt'}
        """,
    )
    done, events = run_plan(
        tmp_path,
        env,
        """
        name: p
        steps:
          - name: list
            run: printf 'm1\\nm2\\n' > modules.txt
          - name: mods
            for_each: {lines: modules.txt}
            subplan: {name: '{item}', plan: module.yaml, env: {X: 'x{index}'}}
        """,
    )

    assert done.returncode == ExitCode.OK, done.stderr
    assert lines_of(tmp_path / "done.txt") == ["m1-x0-1", "m1-x0-2", "m2-x1-1", "m2-x1-2"]
    assert subplan_ids(events) == [
        "list",
        "mods/m1",
        "mods/m1/parts/0",
        "mods/m1/parts/1",
        "mods/m2",
        "mods/m2/parts/0",
        "mods/m2/parts/1",
    ]


def test_a_nested_plan_named_by_its_item_is_loaded_when_its_step_starts(
    tmp_path: Path, env: dict[str, str]
) -> None:
    done, events = run_plan(
        tmp_path,
        env,
        """
        name: p
        steps:
          - name: make
            run: >-
              printf 'gen\\n' > which.txt &&
              printf 'name: gen\\nsteps: [{name: s, run: "touch ran"}]\\n' > gen.yaml
          - name: nested
            for_each: {lines: which.txt}
            subplan: {plan: '{item}.yaml'}
          - name: broken
            for_each: {command: echo missing}
            subplan: {plan: '{item}.yaml'}
        """,
    )

    assert done.returncode == ExitCode.FAILED
    assert (tmp_path / "ran").exists()
    assert "nested/gen/s" in subplan_ids(events)
    error = step_ends(events)["broken"]["error"]
    assert error["type"] == "ProblemsError"
    assert "missing.yaml" in error["message"]


# --- cancelled while a command reads the items -----------------------------------------------


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def test_a_cancelled_run_stops_the_command_that_reads_the_items(
    tmp_path: Path, env: dict[str, str], started: list[subprocess.Popen[str]]
) -> None:
    write(
        tmp_path,
        "plan.yaml",
        """
        name: p
        automation_profile: {cancel_grace: 5}
        steps:
          - name: each
            for_each: {command: "trap 'echo bye > bye.txt; exit 9' TERM; echo $$ > pid; sleep 60 & wait"}
            subplan: {run: ['true']}
        """,
    )
    run = subprocess.Popen(
        [sys.executable, "-m", "subplans", "run", "plan.yaml", "--quiet"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    started.append(run)
    pid_file = tmp_path / "pid"
    wait_until(lambda: pid_file.exists() and pid_file.read_text().strip(), "the command's pid")
    pid = int(pid_file.read_text())

    run.send_signal(signal.SIGINT)

    assert run.wait(timeout=20) == ExitCode.INTERRUPTED
    assert (tmp_path / "bye.txt").read_text() == "bye\n"  # SIGTERM first, its trap ran
    assert not alive(pid)
    run_id = next((tmp_path / ".subplans" / "runs").iterdir()).name
    assert processes_of_run(run_id) == []  # its sleep too


# --- resume ----------------------------------------------------------------------------------


def test_resume_reads_the_sources_of_steps_that_had_not_started(
    tmp_path: Path, env: dict[str, str]
) -> None:
    plan = """
        name: p
        automation_profile: keep-going  # each/a is never cancelled by each/b's failure
        steps:
          - name: gate
            run: test -e open && printf 'a\\nb\\n' > items.txt
          - name: each
            for_each: {lines: items.txt}
            subplan: {run: 'test ! -e fail-{item} && echo {item} >> done.txt'}
        """
    first, _ = run_plan(tmp_path, env, plan)
    assert first.returncode == ExitCode.FAILED
    run_id = next((tmp_path / ".subplans" / "runs").iterdir()).name

    (tmp_path / "open").touch()
    (tmp_path / "fail-b").touch()
    second = run_cli("resume", run_id, "--quiet", cwd=tmp_path, env=env)
    assert second.returncode == ExitCode.FAILED, second.stdout + second.stderr
    assert lines_of(tmp_path / "done.txt") == ["a"]

    # The step had started: its recorded subplans are known, the completed one is not re-run.
    (tmp_path / "fail-b").unlink()
    third = run_cli("resume", run_id, "--quiet", cwd=tmp_path, env=env)
    assert third.returncode == ExitCode.OK, third.stdout + third.stderr
    assert lines_of(tmp_path / "done.txt") == ["a", "b"]
    status = json.loads(run_cli("status", run_id, "--json", cwd=tmp_path, env=env).stdout)
    assert status["counts"]["completed"] == 3


# --- validate --------------------------------------------------------------------------------


def test_validate_says_what_each_source_would_give_now(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SUBPLANS_CONFIG", str(tmp_path / "no-config.yaml"))
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "src/a.py", "")
    write(tmp_path, "src/b.py", "")
    write(tmp_path, "items.txt", "one\n")
    write(
        tmp_path,
        "inner.yaml",
        "name: inner\nsteps: [{name: s, for_each: {glob: 'none/*'}, subplan: {run: 'true'}}]\n",
    )
    write(
        tmp_path,
        "plan.yaml",
        """
        name: p
        steps:
          - {name: globbed, for_each: {glob: 'src/*.py'}, subplan: {run: 'true'}}
          - {name: lined, for_each: {lines: items.txt}, subplan: {run: 'true'}}
          - {name: later, for_each: {lines: out/list.txt}, subplan: {run: 'true'}}
          - {name: piped, for_each: {lines: '-'}, subplan: {run: 'true'}}
          - {name: asked, for_each: {command: 'touch ran; ls'}, subplan: {run: 'true'}}
          - {name: nested, plan: inner.yaml}
        """,
    )

    assert main(["validate", "plan.yaml"]) == ExitCode.OK

    assert capsys.readouterr().out.splitlines() == [
        "ok: plan.yaml: plan 'p', 6 steps, 1 subplan (1 nested plan); "
        "6 steps read their items when they start:",
        "  globbed: glob 'src/*.py': 2 items now",
        "  lined: lines of 'items.txt': 1 item now",
        "  later: lines of 'out/list.txt': out/list.txt does not exist yet (an earlier step "
        "may make it)",
        "  piped: lines of standard input: read from standard input when the step starts",
        "  asked: command 'touch ran; ls': read when the step starts (the command is not run now)",
        "  nested/s: glob 'none/*': no files match yet (an earlier step may make them)",
    ]
    assert not (tmp_path / "ran").exists()


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (
            "{glob: '/abs/*'}",
            "p.yaml:2:36: steps[0].for_each.glob: must be relative to the plan's folder",
        ),
        (
            "{glob: 'a', exclude: ['/x']}",
            "p.yaml:2:50: steps[0].for_each.exclude: must be relative to the plan's folder",
        ),
        (
            "{glob: []}",
            "p.yaml:2:36: steps[0].for_each.glob: must not be empty",
        ),
        (
            "{glob: 'a', allow_empty: 'yes'}",
            "p.yaml:2:54: steps[0].for_each.allow_empty: input should be a valid boolean, got 'yes' (str)",
        ),
        (
            "{command: ''}",
            "p.yaml:2:39: steps[0].for_each.command: string should have at least 1 character, got '' (str)",
        ),
        (
            "{command: 'ls', glob: 'x'}",
            "p.yaml:2:29: steps[0].for_each: has glob and command: a source has exactly one of "
            "glob (with exclude), lines or command, each with allow_empty",
        ),
    ],
)
def test_validate_checks_each_source_s_form(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    source: str,
    expected: str,
) -> None:
    monkeypatch.setenv("SUBPLANS_CONFIG", str(tmp_path / "no-config.yaml"))
    monkeypatch.chdir(tmp_path)
    write(
        tmp_path,
        "p.yaml",
        f"name: p\nsteps: [{{name: a, for_each: {source}, subplan: {{run: y}}}}]\n",
    )

    assert main(["validate", "p.yaml"]) == ExitCode.INVALID

    assert capsys.readouterr().err == f"error: {expected}\n"


def test_validate_checks_a_runtime_template_without_its_items(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """What does not depend on the items is checked before anything runs: the run string's
    placeholders, the call module, the nested plan file that no item names."""
    monkeypatch.setenv("SUBPLANS_CONFIG", str(tmp_path / "no-config.yaml"))
    monkeypatch.chdir(tmp_path)
    write(
        tmp_path,
        "p.yaml",
        """
        name: p
        steps:
          - {name: a, for_each: {glob: '*'}, subplan: {run: 'echo `{item}`'}}
          - {name: b, for_each: {lines: x}, subplan: {call: 'no_such_module_q:f'}}
          - {name: c, for_each: {command: ls}, subplan: {plan: missing.yaml}}
          - {name: d, for_each: {command: ls}, subplan: {plan: '{item}.yaml', cwd: x}}
        """,
    )

    assert main(["validate", "p.yaml"]) == ExitCode.INVALID

    err = capsys.readouterr().err.splitlines()
    assert len(err) == 4, err
    assert err[0].startswith("error: p.yaml:3:53: steps[0].subplan.run: {item} (character 7)")
    assert err[1].startswith("error: p.yaml:4:53: steps[1].subplan.call: cannot find module")
    assert "missing.yaml" in err[2]
    assert err[3] == (
        "error: p.yaml:6:76: steps[3].subplan.cwd: has no effect on a nested plan; "
        "set it on its subplans"
    )


def test_environment_of_the_command_marks_it_as_the_run_s(
    tmp_path: Path, env: dict[str, str]
) -> None:
    done, _ = run_plan(
        tmp_path,
        env,
        """
        name: p
        steps:
          - name: each
            for_each: {command: 'echo "$SUBPLANS_SUBPLAN" > who.txt; echo x'}
            subplan: {run: ['true']}
        """,
    )

    assert done.returncode == ExitCode.OK, done.stderr
    assert (tmp_path / "who.txt").read_text() == "each\n"
    assert os.environ.get("SUBPLANS_ITEM") is None


# --- the executor in this process --------------------------------------------------------------


@pytest.fixture
def config(tmp_path: Path) -> GlobalConfig:
    return GlobalConfig(tmp_path / "no-config.yaml", False, ProfileRegistry(), None)


async def execute(path: Path, config: GlobalConfig) -> tuple[PlanResult, Recorder]:
    bus = EventBus()
    recorder = Recorder(bus)
    result = await PlanExecutor(load_plan(path, config=config), bus=bus).run()
    return result, recorder


def step_errors(recorder: Recorder) -> dict[str, BaseException | None]:
    return {
        e.step_id: e.error
        for e in recorder.events
        if isinstance(e, StepStateChanged) and e.state is StepState.FAILED
    }


async def test_the_executor_reads_each_source_when_its_step_starts(
    tmp_path: Path, config: GlobalConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("s1\ns2\n"))
    path = write(
        tmp_path,
        "p.yaml",
        """
        name: p
        steps:
          - name: make
            run: mkdir out && touch out/a.py && printf 'l1\\nl2\\n' > list.txt
          - {name: globbed, for_each: {glob: 'out/*.py'}, subplan: {run: ['true']}}
          - {name: lined, for_each: {lines: list.txt}, subplan: {run: ['true']}}
          - {name: piped, for_each: {lines: '-'}, subplan: {run: ['true']}}
          - {name: again, for_each: {lines: '-'}, subplan: {run: ['true']}}
          - {name: asked, for_each: {command: 'echo c1; echo c2'}, subplan: {run: ['true']}}
          - name: nested
            for_each: {command: 'echo inner'}
            subplan:
              plan: '{item}.yaml'
              env: {OUTER: 'o-{item}'}
        """,
    )
    write(
        tmp_path,
        "inner.yaml",
        """
        name: inner
        steps:
          - name: deep
            for_each: {command: 'echo "$OUTER-$SUBPLANS_ITEM"'}
            subplan: {name: '{index}', run: 'echo {item} > deep.txt'}
        """,
    )

    result, recorder = await execute(path, config)

    assert result.state is PlanState.COMPLETED
    assert [[r.subplan_id for r in step.subplans] for step in result.steps] == [
        ["make"],
        ["globbed/out_a.py"],
        ["lined/l1", "lined/l2"],
        ["piped/s1", "piped/s2"],
        ["again/s1", "again/s2"],
        ["asked/c1", "asked/c2"],
        ["nested/inner"],
    ]
    assert (tmp_path / "deep.txt").read_text() == "o-inner-inner\n"
    totals = {
        e.step_id: e.total
        for e in recorder.events
        if isinstance(e, StepStateChanged) and e.state is StepState.RUNNING
    }
    assert totals["lined"] == 2
    assert totals["nested/inner/deep"] == 1


async def test_a_source_that_gives_no_items_fails_its_step_and_skips_the_rest(
    tmp_path: Path, config: GlobalConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", None)  # no standard input at all: no items
    path = write(
        tmp_path,
        "p.yaml",
        """
        name: p
        steps:  # always: each runs after the failures before it
          - {name: none, for_each: {glob: 'x/*'}, subplan: {run: ['true']}}
          - {name: unread, always: true, for_each: {lines: missing.txt}, subplan: {run: ['true']}}
          - {name: failed, always: true, for_each: {command: 'echo out; echo err >&2; exit 4'}, subplan: {run: ['true']}}
          - {name: nul, always: true, for_each: {command: 'printf "a\\0b\\n"'}, subplan: {run: ['true']}}
          - {name: dup, always: true, for_each: {command: 'echo a; echo a'}, subplan: {run: ['true']}}
          - {name: empty, always: true, for_each: {lines: '-'}, subplan: {run: ['true']}}
          - {name: later, always: true, for_each: {lines: missing.txt}, subplan: {run: ['true']}}
        """,
    )

    result, recorder = await execute(path, config)

    assert result.state is PlanState.FAILED
    # Standard input that gives no items fails its step as a glob that matches nothing does.
    assert [step.state for step in result.steps] == [StepState.FAILED] * 7
    errors = step_errors(recorder)
    assert str(errors["none"]).startswith("step none: for_each.glob: 'x/*' matches no files in ")
    assert str(errors["unread"]) == (
        f"step unread: for_each.lines: cannot read {tmp_path}/missing.txt: "
        "No such file or directory"
    )
    failed = errors["failed"]
    assert isinstance(failed, CommandFailedError)
    assert (failed.exit_code, failed.output_tail) == (4, "err")
    assert str(failed) == "step failed: for_each command 'echo out; echo err >&2; exit 4' " + (
        "exited with code 4: err"
    )
    assert str(errors["nul"]) == (
        "step nul: for_each.command: line 1: a for_each item has a NUL byte, which no command, "
        "environment variable or path can hold ('a\\x00b')"
    )
    assert str(errors["dup"]).endswith("for_each item 'a' gives the duplicate name 'a'")
    assert str(errors["empty"]) == (
        "step empty: for_each.lines: standard input has no items (every line is blank or a # "
        "comment); allow_empty: true runs no subplans instead"
    )


async def test_a_failed_step_skips_a_later_step_before_its_source_is_read(
    tmp_path: Path, config: GlobalConfig
) -> None:
    path = write(
        tmp_path,
        "p.yaml",
        """
        name: p
        steps:
          - {name: first, run: ['false']}
          - {name: each, for_each: {command: 'touch read'}, subplan: {run: ['true']}}
        """,
    )

    result, _ = await execute(path, config)

    assert [step.state for step in result.steps] == [StepState.FAILED, StepState.SKIPPED]
    assert not (tmp_path / "read").exists()


async def test_cancelling_the_run_stops_the_command_that_reads_the_items(
    tmp_path: Path, config: GlobalConfig
) -> None:
    path = write(
        tmp_path,
        "p.yaml",
        """
        name: p
        automation_profile: {cancel_grace: 5}
        steps:
          - name: each
            for_each: {command: "trap 'echo bye > bye.txt; exit 9' TERM; echo $$ > pid; sleep 60 & wait"}
            subplan: {run: ['true']}
        """,
    )
    bus = EventBus()
    recorder = Recorder(bus)
    task = asyncio.create_task(PlanExecutor(load_plan(path, config=config), bus=bus).run())
    pid_file = tmp_path / "pid"
    await eventually(lambda: pid_file.exists() and pid_file.read_text().strip())
    pid = int(pid_file.read_text())

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert (tmp_path / "bye.txt").read_text() == "bye\n"
    assert not alive(pid)
    assert str(step_errors(recorder)["each"]) == "the run was cancelled"


async def test_a_source_that_fails_without_a_bus_still_fails_its_step(
    tmp_path: Path, config: GlobalConfig
) -> None:
    write(tmp_path, "items.txt", "ok\nn\x00ul\n")
    path = write(
        tmp_path,
        "p.yaml",
        "name: p\nsteps: [{name: each, for_each: {lines: items.txt}, subplan: {run: ['true']}}]\n",
    )

    result = await PlanExecutor(load_plan(path, config=config)).run()

    (step,) = result.steps
    assert step.state is StepState.FAILED
    assert str(step.error) == (
        f"step each: {tmp_path}/items.txt:2:2: a for_each item has a NUL byte, which no "
        "command, environment variable or path can hold ('n\\x00ul')"
    )


def test_the_manifest_names_the_steps_made_when_they_start(
    tmp_path: Path, config: GlobalConfig
) -> None:
    """Their subplans are recorded as they run: resume keeps them (issue #11)."""
    plan = "name: p\nsteps: [{name: each, for_each: {glob: 'GLOB'}, subplan: {run: ['true']}}]\n"
    first = PlanManifest.from_plan(load_plan(write(tmp_path, "p.yaml", plan), config=config))
    other = plan.replace("GLOB", "*.py")
    second = PlanManifest.from_plan(load_plan(write(tmp_path, "p.yaml", other), config=config))

    assert (first.later, first.subplans) == (("each",), ())
    assert first.made_later("each/x")
    assert first.made_later("each/x/inner")
    assert not first.made_later("eachx")
    assert not first.made_later("each")
    assert first.hash != second.hash  # the source is part of what decides the work
    assert not PlanManifest(file="p.yaml").made_later("each/x")


def test_validate_counts_one_step_read_when_it_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SUBPLANS_CONFIG", str(tmp_path / "no-config.yaml"))
    monkeypatch.chdir(tmp_path)
    write(
        tmp_path,
        "p.yaml",
        "name: p\nsteps: [{name: a, for_each: {command: ls}, subplan: {run: y}}]\n",
    )

    assert main(["validate", "p.yaml"]) == ExitCode.OK

    assert capsys.readouterr().out.splitlines()[0] == (
        "ok: p.yaml: plan 'p', 1 step, 0 subplans; 1 step reads its items when it starts:"
    )


async def test_standard_input_that_cannot_be_read_fails_the_step(
    tmp_path: Path, config: GlobalConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    closed = io.StringIO()
    closed.close()
    monkeypatch.setattr(sys, "stdin", closed)
    path = write(
        tmp_path,
        "p.yaml",
        "name: p\nsteps: [{name: each, for_each: {lines: '-'}, subplan: {run: ['true']}}]\n",
    )

    result = await PlanExecutor(load_plan(path, config=config)).run()

    assert str(result.steps[0].error) == (
        "step each: for_each.lines: cannot read standard input: I/O operation on closed file"
    )


def test_an_interrupted_run_does_not_wait_for_standard_input_to_end(
    tmp_path: Path, env: dict[str, str], started: list[subprocess.Popen[str]]
) -> None:
    """Pins: the read of standard input held the interrupted command up until it ended."""
    write(
        tmp_path,
        "plan.yaml",
        "name: p\nsteps: [{name: each, for_each: {lines: '-'}, subplan: {run: ['true']}}]\n",
    )
    events = tmp_path / "events.jsonl"
    run = subprocess.Popen(
        [sys.executable, "-m", "subplans", "run", "plan.yaml", "--events-jsonl", str(events)],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.PIPE,  # left open: no end of input
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    started.append(run)
    wait_until(lambda: events.exists() and events.read_text(), "the run to start")

    run.send_signal(signal.SIGINT)

    assert run.wait(timeout=20) == ExitCode.INTERRUPTED
    assert run.stdin is not None
    run.stdin.close()


async def test_a_cancelled_read_of_standard_input_is_let_go(
    tmp_path: Path, config: GlobalConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    reading, release = threading.Event(), threading.Event()

    class Held(io.StringIO):
        def read(self, size: int | None = -1) -> str:
            reading.set()
            release.wait(10)
            return "late\n"

    monkeypatch.setattr(sys, "stdin", Held())
    path = write(
        tmp_path,
        "p.yaml",
        "name: p\nsteps: [{name: each, for_each: {lines: '-'}, subplan: {run: ['true']}}]\n",
    )
    task = asyncio.create_task(PlanExecutor(load_plan(path, config=config)).run())
    await eventually(reading.is_set)

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    release.set()  # the read ends after all: its result goes nowhere
    await eventually(
        lambda: not any(t.name == "subplans standard input" for t in threading.enumerate())
    )


def test_a_for_each_mapping_without_a_source_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SUBPLANS_CONFIG", str(tmp_path / "no-config.yaml"))
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "p.yaml", "name: p\nsteps: [{name: a, for_each: {}, subplan: {run: y}}]\n")

    assert main(["validate", "p.yaml"]) == ExitCode.INVALID

    assert capsys.readouterr().err.startswith("error: p.yaml:2:29: steps[0].for_each")
