"""Issue #8, points 1, 3 and 15, as a real ``python -m subplans run`` with real signals: whatever
mix of timeouts, failures, signals and nesting stops a run, the command exits within
``cancel_grace`` + 2 s of the last stop request, and no process of the run is left."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from subplans.cli.session import Outcome, RunSession, View
from subplans.plans.loader import GlobalConfig, PlanNode, load_plan
from subplans.plans.profiles import ProfileRegistry

from .conftest import command_env, wait_until
from .plans_helpers import write
from .process_helpers import alive, group_members
from .test_cli_process import processes_of_run

RUN = (sys.executable, "-m", "subplans", "run", "plan.yaml", "--no-progress")
#: The bound the issue sets: cancel_grace + 2 s after the last stop request.
MARGIN = 2.0


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    # Every plan, nested ones included, gets 1 s of grace unless it says otherwise.
    config = write(tmp_path, "config.yaml", "automation_profile: {cancel_grace: 1}\n")
    return command_env(SUBPLANS_CONFIG=str(config))


class Run:
    """One ``subplans run`` of ``plan.yaml`` in ``folder``, its output and events."""

    def __init__(self, folder: Path, env: dict[str, str]) -> None:
        self.folder = folder
        self.events_file = folder / "events.jsonl"
        self.out_file = folder / "out.txt"
        with self.out_file.open("wb") as out:
            self.proc = subprocess.Popen(
                [*RUN, "--events-jsonl", str(self.events_file)],
                cwd=folder,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.ended: float | None = None

    def events(self) -> list[dict[str, Any]]:
        try:
            text = self.events_file.read_text()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in text.splitlines(keepends=True) if line.endswith("\n")]

    def processes(self) -> list[int]:
        return [e["pid"] for e in self.events() if e["event"] == "subplan_process_started"]

    def output(self) -> str:
        return self.out_file.read_text()

    def signal(self, sig: signal.Signals) -> float:
        """Send ``sig``; returns when (epoch seconds)."""
        self.proc.send_signal(sig)
        return time.time()

    def wait(self, timeout: float) -> int:
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"subplans run hung; its output:\n{self.output()}")
        self.ended = time.time()
        return code

    def state_changed_at(self, subplan_id: str, state: str) -> float:
        for event in self.events():
            if event.get("subplan_id") == subplan_id and event.get("state") == state:
                return datetime.fromisoformat(event["timestamp"]).timestamp()
        raise AssertionError(f"no {state} event for {subplan_id}")

    def assert_ended_within(self, seconds: float, of: float) -> None:
        assert self.ended is not None
        took = self.ended - of
        assert took <= seconds, f"exited {took:.2f}s after the last stop request"

    def assert_nothing_left(self) -> None:
        """No process of the run, and every subplan ended before the plan did."""
        events = self.events()
        run_id = events[0]["run_id"]
        pids = self.processes()
        assert pids
        assert [p for p in pids if alive(p)] == []
        assert processes_of_run(run_id) == []
        last: dict[str, str] = {}
        for event in events:
            if event["event"] == "subplan_state_changed":
                last[event["subplan_id"]] = event["state"]
        assert set(last.values()) <= {"completed", "failed"}, last
        assert events[-1]["event"] == "plan_finished"
        output = self.output()
        for noise in ("Traceback", "Warning", "never retrieved", "destroyed but it is pending"):
            assert noise not in output, output


@pytest.fixture
def runs() -> Iterator[list[Run]]:
    started: list[Run] = []
    yield started
    for run in started:
        if run.proc.poll() is None:  # a failed test: leave nothing behind
            run.proc.kill()
            run.proc.wait()


def start(folder: Path, env: dict[str, str], runs: list[Run], plan: str) -> Run:
    write(folder, "plan.yaml", plan)
    run = Run(folder, env)
    runs.append(run)
    return run


#: The issue's plan (run with a cancel_grace of 1 s): the nested command ignores SIGTERM.
HANG = """
    name: hang
    steps:
      - name: work
        subplans:
          - {{name: inner, timeout: 1, plan: {{name: inner, steps: [{{name: s, run: "{stubborn}"}}]}}}}
          - {{name: failer, run: "{sibling}"}}
"""
#: Ignores SIGTERM, and says it got it: the timeout's stop has begun.
STUBBORN = "trap 'touch termed' TERM; while :; do sleep 0.05; done"


def test_a_nested_timeout_beside_a_failing_sibling_exits_in_time(
    tmp_path: Path, env: dict[str, str], runs: list[Run]
) -> None:
    """Pins #8.1: the summary was printed and the command never exited; the nested command
    that ignores SIGTERM stayed RUNNING, and ran on."""
    plan = HANG.format(stubborn="trap '' TERM; sleep 30", sibling="sleep 1.5; exit 1")
    run = start(tmp_path, env, runs, plan)

    assert run.wait(timeout=30) == 1
    run.assert_ended_within(1 + MARGIN, of=run.state_changed_at("work/failer", "failed"))
    run.assert_nothing_left()
    assert "plan hang failed" in run.output()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupt_while_a_nested_timeout_drains_exits_in_time(
    sig: signal.Signals, tmp_path: Path, env: dict[str, str], runs: list[Run]
) -> None:
    """Pins #8.1 with a signal instead of the failing sibling."""
    run = start(tmp_path, env, runs, HANG.format(stubborn=STUBBORN, sibling="sleep 30"))
    wait_until(lambda: (tmp_path / "termed").exists(), "the timeout to stop the nested command")

    sent = run.signal(sig)

    assert run.wait(timeout=30) == 130
    run.assert_ended_within(1 + MARGIN, of=sent)
    run.assert_nothing_left()


def test_a_second_interrupt_mid_drain_kills_at_once(
    tmp_path: Path, env: dict[str, str], runs: list[Run]
) -> None:
    """Pins #8.1: the second SIGINT was ignored (the command hung after its summary)."""
    write(tmp_path, "config.yaml", "automation_profile: {cancel_grace: 30}\n")
    run = start(tmp_path, env, runs, HANG.format(stubborn=STUBBORN, sibling="sleep 30"))
    wait_until(lambda: (tmp_path / "termed").exists(), "the timeout to stop the nested command")
    run.signal(signal.SIGINT)
    wait_until(lambda: "SIGINT: stopping" in run.output(), "the first interrupt to be handled")

    sent = run.signal(signal.SIGINT)

    assert run.wait(timeout=30) == 130
    run.assert_ended_within(MARGIN, of=sent)  # not the 30 s grace
    run.assert_nothing_left()
    assert "SIGINT again: killed" in run.output()


def test_three_levels_of_timeouts_retries_and_a_failure_exit_in_time(
    tmp_path: Path, env: dict[str, str], runs: list[Run]
) -> None:
    plan = f"""
        name: deep
        steps:
          - name: work
            subplans:
              - name: l1
                timeout: 1.5
                plan:
                  name: l1
                  steps:
                    - name: s1
                      subplans:
                        - name: l2
                          timeout: 1.2
                          plan:
                            name: l2
                            steps:
                              - name: s2
                                subplans:
                                  - {{name: l3, timeout: 1, plan: {{name: l3, steps: [{{name: s3, run: "{STUBBORN}"}}]}}}}
                                  - {{name: t, run: "{STUBBORN}", timeout: 0.3, retries: 2}}
              - {{name: failer, run: "sleep 2; exit 1"}}
    """
    run = start(tmp_path, env, runs, plan)

    assert run.wait(timeout=30) == 1
    run.assert_ended_within(1 + MARGIN, of=run.state_changed_at("work/failer", "failed"))
    run.assert_nothing_left()


def test_a_nested_plan_with_a_longer_grace_is_bounded_by_the_runs(
    tmp_path: Path, env: dict[str, str], runs: list[Run]
) -> None:
    """The root step abandons the nested plan after its own grace: its command, still in the
    nested step's 30 s grace, is killed then, and the command exits."""
    plan = f"""
        name: grace
        automation_profile: {{cancel_grace: 0.5}}
        steps:
          - name: work
            subplans:
              - name: inner
                plan:
                  name: inner
                  automation_profile: {{cancel_grace: 30}}
                  steps: [{{name: s, run: "{STUBBORN}"}}]
              - {{name: other, run: "sleep 30"}}
    """
    run = start(tmp_path, env, runs, plan)
    wait_until(lambda: len(run.processes()) == 2, "both commands to start")

    sent = run.signal(signal.SIGINT)

    assert run.wait(timeout=30) == 130
    run.assert_ended_within(0.5 + MARGIN, of=sent)
    run.assert_nothing_left()


def test_an_async_function_that_ignores_cancellation_never_keeps_the_command_running(
    tmp_path: Path, env: dict[str, str], runs: list[Run]
) -> None:
    """It is abandoned after the grace; the command then exits instead of waiting for it."""
    write(
        tmp_path,
        "stubborn.py",
        """
        import asyncio

        async def run():
            while True:
                try:
                    await asyncio.sleep(60)
                except asyncio.CancelledError:
                    pass
        """,
    )
    plan = """
        name: calls
        automation_profile: {cancel_grace: 0.5}
        steps:
          - name: work
            subplans:
              - {name: stubborn, call: "stubborn:run"}
              - {name: other, run: "sleep 30"}
    """
    run = start(tmp_path, env, runs, plan)
    wait_until(lambda: len(run.processes()) == 1, "the command to start")

    sent = run.signal(signal.SIGTERM)

    assert run.wait(timeout=30) == 130
    run.assert_ended_within(0.5 + MARGIN, of=sent)
    run.assert_nothing_left()
    assert "abandoned" in run.output()


def test_an_async_call_raising_keyboard_interrupt_stops_the_run_without_a_traceback(
    tmp_path: Path, env: dict[str, str], runs: list[Run]
) -> None:
    """Pins #8.15: 'Task exception was never retrieved' and a traceback were printed."""
    write(
        tmp_path,
        "ctrl_c.py",
        """
        import asyncio

        async def run():
            while not __import__("os").path.exists("go"):
                await asyncio.sleep(0.01)
            raise KeyboardInterrupt
        """,
    )
    plan = """
        name: ki
        steps:
          - name: work
            subplans:
              - {name: ctrl-c, call: "ctrl_c:run"}
              - {name: other, run: "touch go; sleep 30"}
    """
    run = start(tmp_path, env, runs, plan)

    assert run.wait(timeout=30) == 130
    run.assert_nothing_left()
    output = run.output()
    assert "KeyboardInterrupt raised in the run: it was stopped" in output
    assert "plan ki interrupted" in output
    assert "1 cancelled: interrupted by KeyboardInterrupt" in output


# The same stop path in-process: RunSession.run_blocking() as the command runs it.


def load(folder: Path, text: str) -> PlanNode:
    path = write(folder, "plan.yaml", text)
    return load_plan(
        path, config=GlobalConfig(folder / "none.yaml", False, ProfileRegistry(), None)
    )


def test_run_blocking_closes_tasks_that_ignore_cancellation(tmp_path: Path) -> None:
    """One swallows every cancellation: it is closed (its finally runs) instead of keeping
    the loop open; one swallows only the first: it ends when cancelled again."""
    write(
        tmp_path,
        "stubborn_tasks.py",
        """
        import asyncio
        from pathlib import Path

        async def forever():
            try:
                while True:
                    try:
                        await asyncio.sleep(60)
                    except asyncio.CancelledError:
                        pass
            finally:
                Path(__file__).with_name("closed").touch()

        async def once():
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                await asyncio.sleep(60)

        async def fails():
            await asyncio.sleep(0.05)
            raise RuntimeError("boom")
        """,
    )
    node = load(
        tmp_path,
        """
        name: stubborn
        automation_profile: {cancel_grace: 0.05}
        steps:
          - name: s
            subplans:
              - {name: forever, call: "stubborn_tasks:forever"}
              - {name: once, call: "stubborn_tasks:once"}
              - {name: fails, call: "stubborn_tasks:fails"}
        """,
    )
    human = io.StringIO()
    session = RunSession(node, human=human, view=View.FAILURES, state_dir=tmp_path / "state")
    session.prepare()

    assert session.run_blocking() is Outcome.FAILED

    assert (tmp_path / "closed").exists()
    assert human.getvalue().count("abandoned") >= 2


def test_run_blocking_runs_a_plan_to_its_end(tmp_path: Path) -> None:
    node = load(tmp_path, "name: x\nsteps: [{name: a, run: 'true'}]\n")
    session = RunSession(node, human=io.StringIO(), view=View.QUIET, state_dir=tmp_path / "s")
    session.prepare()

    assert session.run_blocking() is Outcome.COMPLETED


def test_run_blocking_cancels_a_task_a_function_left_behind(tmp_path: Path) -> None:
    write(
        tmp_path,
        "background.py",
        """
        import asyncio
        from pathlib import Path

        async def waits():
            try:
                await asyncio.sleep(60)
            finally:
                Path(__file__).with_name("cancelled").touch()

        async def start():
            asyncio.get_running_loop().create_task(waits())
        """,
    )
    node = load(tmp_path, "name: bg\nsteps: [{name: a, call: 'background:start'}]\n")
    session = RunSession(node, human=io.StringIO(), view=View.QUIET, state_dir=tmp_path / "s")
    session.prepare()

    assert session.run_blocking() is Outcome.COMPLETED

    assert (tmp_path / "cancelled").exists()


def test_run_blocking_still_cleans_up_when_something_breaks_out_of_the_loop(
    tmp_path: Path,
) -> None:
    """A function that stops the loop ends run_until_complete at once: the run is still
    cancelled and waited for, as ``asyncio.run`` would."""
    write(
        tmp_path,
        "breaker.py",
        """
        import asyncio
        from pathlib import Path

        async def stop_the_loop():
            while not Path(__file__).with_name("started").exists():
                await asyncio.sleep(0.01)
            asyncio.get_running_loop().stop()
            await asyncio.sleep(30)
        """,
    )
    node = load(
        tmp_path,
        """
        name: breaks
        steps:
          - name: s
            subplans:
              - {name: stops, call: "breaker:stop_the_loop"}
              - {name: sleeps, run: "echo $$ > pgid; touch started; sleep 30"}
        """,
    )
    session = RunSession(node, human=io.StringIO(), view=View.QUIET, state_dir=tmp_path / "s")
    session.prepare()

    with pytest.raises(RuntimeError, match=r"^Event loop stopped before Future completed\.$"):
        session.run_blocking()

    assert group_members(int((tmp_path / "pgid").read_text())) == []
    assert len(session.groups) == 0


async def test_the_commands_of_an_abandoned_nested_plan_are_killed_at_the_end(
    tmp_path: Path,
) -> None:
    """The root step's grace is over: its command, still in the nested step's grace, is
    killed, and waited for while the loop still watches its children."""
    node = load(
        tmp_path,
        """
        name: grace
        automation_profile: {cancel_grace: 0.05}
        steps:
          - name: work
            subplans:
              - name: inner
                plan:
                  name: inner
                  automation_profile: {cancel_grace: 30}
                  steps: [{name: s, run: "trap '' TERM; echo $$ > pgid; touch started; sleep 30"}]
              - {name: failer, run: "while [ ! -e started ]; do sleep 0.01; done; exit 1"}
        """,
    )
    session = RunSession(node, human=io.StringIO(), view=View.QUIET, state_dir=tmp_path / "st")
    session.prepare()

    assert await session.run() is Outcome.FAILED

    assert len(session.groups) == 0
    assert group_members(int((tmp_path / "pgid").read_text())) == []
    summary = session.summary
    assert summary is not None
    assert "abandoned" in "\n".join(summary.lines())


async def test_a_subplan_raising_keyboard_interrupt_interrupts_the_session(
    tmp_path: Path,
) -> None:
    write(
        tmp_path,
        "interrupting.py",
        "async def run():\n    raise KeyboardInterrupt\n",
    )
    node = load(tmp_path, "name: ki\nsteps: [{name: a, call: 'interrupting:run'}]\n")
    human = io.StringIO()
    session = RunSession(node, human=human, view=View.QUIET, state_dir=tmp_path / "st")
    session.prepare()

    assert await session.run() is Outcome.INTERRUPTED

    assert human.getvalue().startswith("KeyboardInterrupt raised in the run: it was stopped\n")
    assert "plan ki interrupted in " in human.getvalue()
