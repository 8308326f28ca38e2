"""The ``subplans`` command as a real process: ``python -m subplans``, its exit codes, its
output when not on a terminal, its JSONL stream, and what SIGINT and SIGTERM leave behind
(nothing)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from .conftest import command_env, wait_until
from .plans_helpers import write
from .process_helpers import alive, group_members

STATE_ORDERS = (
    ["pending", "running", "completed"],
    ["pending", "running", "failed"],
    ["pending", "failed"],
)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """Our environment without a user config file or store, or anything that makes Rich see a
    terminal."""
    return command_env(SUBPLANS_CONFIG=str(tmp_path / "no-config.yaml"))


def subplans(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "subplans", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def read_events(path: Path) -> list[dict[str, Any]]:
    """The complete lines written so far."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.splitlines(keepends=True) if line.endswith("\n")]


def processes_of_run(run_id: str) -> list[int]:
    """Live (non-zombie) processes whose environment carries ``SUBPLANS_RUN_ID=run_id``."""
    found = []
    marker = f"SUBPLANS_RUN_ID={run_id}".encode()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as environ:
                variables = environ.read().split(b"\0")
            with open(f"/proc/{name}/stat", "rb") as stat:
                state = stat.read().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue  # gone meanwhile, or not ours to read
        if marker in variables and state != b"Z":
            found.append(int(name))
    return found


# --- exit codes and output ----------------------------------------------------------------


def test_exit_0_with_plain_lines_when_not_on_a_terminal(
    tmp_path: Path, env: dict[str, str]
) -> None:
    write(tmp_path, "plan.yaml", "name: ok\nsteps:\n  - {name: a, run: 'echo hi'}\n")

    done = subplans("run", "plan.yaml", cwd=tmp_path, env=env)

    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
    assert re.fullmatch(rf"{stamp}  started    plan ok  \(plan\.yaml, run \S+\)", lines[0])
    assert re.fullmatch(rf"{stamp}  running    step a  \(1 subplan\)", lines[1])
    assert re.fullmatch(rf"{stamp}  running    a", lines[2])
    assert re.fullmatch(rf"{stamp}  completed  a  \(\d+\.\d\ds\)", lines[3])
    assert "\x1b" not in done.stdout
    assert done.stderr == ""


def test_exit_1_when_a_subplan_fails(tmp_path: Path, env: dict[str, str]) -> None:
    write(tmp_path, "plan.yaml", "name: bad\nsteps:\n  - {name: a, run: 'echo oops; exit 3'}\n")

    done = subplans("run", "plan.yaml", "--quiet", cwd=tmp_path, env=env)

    assert done.returncode == 1
    assert done.stdout.startswith("plan bad failed in ")
    assert re.search(
        r"^  a +exited with code 3 +3  \.subplans/runs/\S+/logs/a\.log$", done.stdout, re.M
    )


@pytest.mark.parametrize(
    ("args", "first"),
    [
        (
            ["run", "plan.yaml", "--max-parallel", "40"],
            "error: --max-parallel must be between 1 and 32, got 40",
        ),
        (["run", "plan.yaml", "--profile", "nope"], "error: --profile: unknown profile 'nope'"),
        (["run", "missing.yaml"], "error: missing.yaml: no such file"),
        (["validate", "plan.yaml", "--frobnicate"], "error: no such option: --frobnicate"),
        (["run", "broken.yaml"], "error: broken.yaml:2:8: steps: "),
    ],
)
def test_invalid_input_is_exit_2_with_one_line_and_no_traceback(
    args: list[str], first: str, tmp_path: Path, env: dict[str, str]
) -> None:
    write(tmp_path, "plan.yaml", "name: ok\nsteps:\n  - {name: a, run: 'true'}\n")
    write(tmp_path, "broken.yaml", "name: b\nsteps: 3\n")

    done = subplans(*args, cwd=tmp_path, env=env)

    assert done.returncode == 2
    assert done.stdout == ""
    assert "Traceback" not in done.stderr
    assert len(done.stderr.splitlines()) == 1
    assert done.stderr.startswith(first)


def test_the_jsonl_stream_on_stdout_follows_the_state_machine(
    tmp_path: Path, env: dict[str, str]
) -> None:
    write(tmp_path, "inner.yaml", "name: inner\nsteps:\n  - {name: x, run: 'true'}\n")
    write(
        tmp_path,
        "plan.yaml",
        """
        name: mixed
        steps:
          - name: port
            max_parallel: 3
            failure_mode: continue_on_error
            for_each: ["1", "2", "3", "4", "5", "6"]
            subplan:
              run: "test {item} -ne 4"
          - name: docs
            always: true
            plan: inner.yaml
          - name: stop
            always: true
            subplans:
              - {name: fails, run: "exit 1"}
              - {name: slow, run: "sleep 5"}
              - {name: never, run: "true"}
            max_parallel: 2
        """,
    )

    done = subplans("run", "plan.yaml", "--events-jsonl", "-", cwd=tmp_path, env=env)

    assert done.returncode == 1
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert len({e["run_id"] for e in events}) == 1
    assert all(e["event"] and e["timestamp"] for e in events)
    states: dict[str, list[str]] = {}
    for event in events:
        if event["event"] == "subplan_state_changed":
            states.setdefault(event["subplan_id"], []).append(event["state"])
    assert set(states) == {
        *(f"port/{n}" for n in range(1, 7)),
        "docs",
        "docs/x",
        "stop/fails",
        "stop/slow",
        "stop/never",
    }
    for subplan_id, order in states.items():
        assert order in STATE_ORDERS, subplan_id
    assert states["port/4"][-1] == "failed"
    assert states["stop/never"] == ["pending", "failed"]  # fail-fast: it never started
    assert states["stop/slow"] == ["pending", "running", "failed"]
    assert events[-1]["event"] == "plan_finished"
    assert "plan mixed failed in " in done.stderr


# --- interruption -------------------------------------------------------------------------

SLEEPERS = """
    name: sleepy
    automation_profile: {{max_parallel: 3, cancel_grace: {grace}}}
    steps:
      - name: work
        for_each: [a, b, c, d, e]
        subplan:
          run: "{trap}sleep 30 & sleep 30; wait"
    """


def start_run(
    tmp_path: Path, env: dict[str, str], started: list[subprocess.Popen[bytes]], plan: str
) -> tuple[subprocess.Popen[bytes], Path, Path]:
    write(tmp_path, "plan.yaml", plan)
    events, out = tmp_path / "events.jsonl", tmp_path / "out.txt"
    with out.open("wb") as stdout:
        proc = subprocess.Popen(
            [sys.executable, "-m", "subplans", "run", "plan.yaml", "--events-jsonl", str(events)],
            cwd=tmp_path,
            env=env,
            stdout=stdout,
            stderr=subprocess.STDOUT,
        )
    started.append(proc)
    wait_until(
        lambda: sum(e["event"] == "subplan_process_started" for e in read_events(events)) == 3,
        "three commands to start",
    )
    return proc, events, out


def assert_nothing_left(events: Path) -> None:
    found = read_events(events)
    run_id = found[0]["run_id"]
    pgids = [e["pid"] for e in found if e["event"] == "subplan_process_started"]
    assert len(pgids) == 3
    assert [group_members(pgid) for pgid in pgids] == [[], [], []]
    assert processes_of_run(run_id) == []


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupt_exits_130_and_leaves_no_process_behind(
    sig: signal.Signals, tmp_path: Path, env: dict[str, str], started: list[subprocess.Popen[bytes]]
) -> None:
    proc, events, out = start_run(tmp_path, env, started, SLEEPERS.format(grace=5, trap=""))

    proc.send_signal(sig)

    assert proc.wait(timeout=10) == 130
    assert_nothing_left(events)
    text = out.read_text()
    assert f"{sig.name}: stopping" in text
    assert "plan sleepy interrupted in " in text
    assert f"  5 cancelled: interrupted by {sig.name}\n" in text  # 3 running, 2 pending
    assert "Traceback" not in text
    last = read_events(events)[-1]
    assert (last["event"], last["state"]) == ("plan_finished", "cancelled")


def test_a_second_interrupt_kills_commands_that_ignore_sigterm(
    tmp_path: Path, env: dict[str, str], started: list[subprocess.Popen[bytes]]
) -> None:
    # They ignore SIGTERM and get 30 s of grace: only the second Ctrl-C ends this run quickly.
    plan = SLEEPERS.format(grace=30, trap="trap '' TERM; ")
    proc, events, out = start_run(tmp_path, env, started, plan)

    proc.send_signal(signal.SIGINT)
    wait_until(lambda: "SIGINT: stopping" in out.read_text(), "the first interrupt to be handled")
    proc.send_signal(signal.SIGINT)

    assert proc.wait(timeout=5) == 130
    assert_nothing_left(events)
    assert "SIGINT again: killed 3 process groups" in out.read_text()


def test_processes_a_call_function_leaves_behind_are_stopped(
    tmp_path: Path, env: dict[str, str]
) -> None:
    """Pins: a `call` function's own children share the run's process group; they outlived
    the run (and Ctrl-C, and cancel) because only command groups were tracked."""
    write(
        tmp_path,
        "spawner.py",
        """
        import subprocess

        def spawn():
            child = subprocess.Popen(["sleep", "30"])
            with open("child.pid", "w") as file:
                file.write(str(child.pid))
        """,
    )
    write(tmp_path, "plan.yaml", "name: leaky\nsteps: [{name: s, call: 'spawner:spawn'}]\n")
    result = subplans("run", "plan.yaml", "-q", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    child = int((tmp_path / "child.pid").read_text())
    wait_until(lambda: not alive(child), "the leaked child to be stopped", timeout=2)
