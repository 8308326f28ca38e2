"""RunSession: the sinks a run gets, its summary, and interruption by real signals, in-process."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import textwrap
from pathlib import Path

import pytest
from rich.console import Console

from subplans.cli.session import Outcome, RunSession, View, terminal_console
from subplans.engine.events import SubplanProcessStarted
from subplans.plans.loader import GlobalConfig, PlanNode, load_plan
from subplans.plans.profiles import ProfileRegistry

from .conftest import printed
from .plans_helpers import write
from .process_helpers import group_members


def load(folder: Path, text: str) -> PlanNode:
    path = write(folder, "plan.yaml", text)
    return load_plan(
        path, config=GlobalConfig(folder / "none.yaml", False, ProfileRegistry(), None)
    )


SLEEPERS = """
    name: sleepy
    automation_profile: {max_parallel: 2, cancel_grace: 0.2}
    steps:
      - name: work
        for_each: [a, b, c]
        subplan:
          run: "trap '' TERM; sleep 30 & sleep 30; wait"
      - name: after
        always: true
        run: "true"
    """


def test_the_live_view_needs_a_console(tmp_path: Path) -> None:
    node = load(tmp_path, "name: x\nsteps:\n  - {name: a, run: 'true'}\n")

    with pytest.raises(RuntimeError, match=r"^the live view needs a terminal console$"):
        RunSession(node, human=io.StringIO(), view=View.LIVE)


async def test_a_quiet_session_prints_the_summary_only(tmp_path: Path) -> None:
    node = load(tmp_path, "name: x\nsteps:\n  - {name: a, run: 'true'}\n")
    human = io.StringIO()
    session = RunSession(node, human=human, view=View.QUIET, run_id="R1", state_dir=tmp_path / "s")
    session.prepare()

    assert await session.run() is Outcome.COMPLETED

    assert human.getvalue().splitlines()[0].startswith("plan x completed in ")
    assert session.summary is not None
    assert session.log_dir == tmp_path / "s" / "runs" / "R1" / "logs"
    assert repr(session) == "<RunSession 'x' run R1 view=quiet>"


async def test_a_live_session_prints_its_summary_through_the_console(
    tmp_path: Path, console: Console
) -> None:
    node = load(tmp_path, "name: x\nsteps:\n  - {name: a, run: 'exit 4'}\n")
    session = RunSession(
        node, human=io.StringIO(), console=console, view=View.LIVE, state_dir=tmp_path / "s"
    )
    session.prepare()

    assert await session.run() is Outcome.FAILED

    text = printed(console)
    assert "✗ a  exited with code 4" in text
    assert "plan x failed in " in text


async def test_a_signal_interrupts_the_run_and_stops_every_process(tmp_path: Path) -> None:
    node = load(tmp_path, SLEEPERS)
    human = io.StringIO()
    session = RunSession(node, human=human, view=View.FAILURES, state_dir=tmp_path / "s")
    session.prepare()
    pgids: list[int] = []
    both_started = asyncio.Event()

    def watch(event: object) -> None:
        if isinstance(event, SubplanProcessStarted):
            pgids.append(event.pid)
            if len(pgids) == 2:
                both_started.set()

    session.bus.subscribe(watch)
    run = asyncio.create_task(session.run())
    await asyncio.wait_for(both_started.wait(), 5)

    os.kill(os.getpid(), signal.SIGINT)
    outcome = await asyncio.wait_for(run, 5)

    assert outcome is Outcome.INTERRUPTED
    assert [group_members(pgid) for pgid in pgids] == [[], []]
    out = human.getvalue()
    assert out.startswith("SIGINT: stopping; running subplans get SIGTERM")
    assert "plan sleepy interrupted in " in out
    # Issue #11, point 9: cancelled subplans and steps, and a step that never started.
    assert "  subplans  4 total, 0 completed, 0 failed, 3 cancelled, 1 not run\n" in out
    assert "  steps     work cancelled, after not run\n" in out
    assert "  3 cancelled: interrupted by SIGINT\n" in out


async def test_a_cancellation_that_is_not_a_signal_propagates(tmp_path: Path) -> None:
    node = load(tmp_path, SLEEPERS)
    session = RunSession(node, human=io.StringIO(), view=View.QUIET, state_dir=tmp_path / "s")
    session.prepare()
    started = asyncio.Event()
    session.bus.subscribe(
        lambda event: started.set() if isinstance(event, SubplanProcessStarted) else None
    )
    run = asyncio.create_task(session.run())
    await asyncio.wait_for(started.wait(), 5)

    run.cancel()

    with pytest.raises(asyncio.CancelledError):
        await run
    assert session.summary is None


def test_say_writes_above_the_live_view_or_on_the_stream(tmp_path: Path, console: Console) -> None:
    node = load(tmp_path, "name: x\nsteps:\n  - {name: a, run: 'true'}\n")
    human = io.StringIO()

    RunSession(node, human=human).say("hello")
    RunSession(node, human=human, console=console, view=View.QUIET).say("there")

    assert human.getvalue() == "hello\n"
    assert printed(console) == "there\n"


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("stream", "env", "live"),
    [
        (io.StringIO(), {}, False),
        (io.StringIO(), {"FORCE_COLOR": "1"}, True),
        (io.StringIO(), {"FORCE_COLOR": "1", "TERM": "dumb"}, False),
        (Tty(), {"TERM": "xterm"}, True),
        (Tty(), {"TERM": "xterm", "TTY_INTERACTIVE": "0"}, False),
    ],
)
def test_terminal_console_follows_rich(
    stream: io.StringIO, env: dict[str, str], live: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "TERM"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    console = terminal_console(stream)

    assert (console is not None) is live
    if console is not None:
        assert console.file is stream


def test_module_docstring_lists_every_view() -> None:
    from subplans.cli import session

    doc = textwrap.dedent(session.__doc__ or "")
    for view in View:
        assert f"``{view.value}``" in doc


class ClosedPipe(io.StringIO):
    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")


async def test_a_reader_that_went_away_does_not_change_the_outcome(tmp_path: Path) -> None:
    node = load(tmp_path, "name: x\nsteps:\n  - {name: a, run: 'true'}\n")
    session = RunSession(node, human=ClosedPipe(), view=View.LINES, state_dir=tmp_path / "s")
    session.prepare()

    assert await session.run() is Outcome.COMPLETED
    session.say("nobody reads this")


async def test_the_run_id_variable_is_set_for_the_run_and_restored_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SUBPLANS_RUN_ID", "outer")
    node = load(tmp_path, "name: x\nsteps:\n  - {name: a, run: 'echo $SUBPLANS_RUN_ID > seen'}\n")
    session = RunSession(node, human=io.StringIO(), view=View.QUIET, run_id="R1")
    session.prepare()

    assert await session.run() is Outcome.COMPLETED

    assert (tmp_path / "seen").read_text() == "R1\n"
    assert os.environ["SUBPLANS_RUN_ID"] == "outer"
