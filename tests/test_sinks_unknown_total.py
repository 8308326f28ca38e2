"""The sinks while a dispatch has no total (``DispatchStarted.total`` None: a group, a lazy
input, issue #13): counts without a percentage or an ETA until its total is known, and nothing
crashes, the summary and the JSON lines included. Fed events by hand, then by a real group
and a real lazy input; the live view rendered into an in-memory terminal."""

from __future__ import annotations

import asyncio
import io
import json
import re
from pathlib import Path

import pytest
from rich.console import Console

from subplans.engine.bus import EventBus
from subplans.engine.config import ParallelExecutionConfig
from subplans.engine.dispatcher import ParallelSubplanDispatcher
from subplans.engine.events import (
    DispatchFinished,
    DispatchStarted,
    Event,
    StepStateChanged,
    SubplanStateChanged,
)
from subplans.engine.progress import ProgressReporter
from subplans.engine.states import StepState, SubplanExecutionState
from subplans.engine.subplan import Subplan
from subplans.plans.loader import PlanNode
from subplans.sinks.jsonl import JsonlSink
from subplans.sinks.lines import PlainLines
from subplans.sinks.live import LiveView
from subplans.sinks.plan_progress import PlanProgress
from subplans.sinks.summary import RunSummary

from .conftest import returning, waiting
from .plans_helpers import port_legacy_tree
from .process_helpers import eventually

PENDING = SubplanExecutionState.PENDING
RUNNING = SubplanExecutionState.RUNNING
COMPLETED = SubplanExecutionState.COMPLETED
FAILED = SubplanExecutionState.FAILED

#: 2026-11-28T00:04:53.372Z
T0 = 1795824293.372
CONFIG = ParallelExecutionConfig(max_parallel=2)


def untold(name: str | None = "agent") -> DispatchStarted:
    """The start of a dispatch that does not know its total (a group, a lazy input)."""
    return DispatchStarted(name, None, CONFIG, time=T0)


def finished(name: str | None = "agent", completed: int = 0, failed: int = 0) -> DispatchFinished:
    counts = dict.fromkeys(SubplanExecutionState, 0)
    counts[COMPLETED], counts[FAILED] = completed, failed
    return DispatchFinished(name, counts, 1.5, time=T0 + 1.5)


@pytest.fixture
def tree(tmp_path: Path) -> PlanNode:
    """Three steps, nine units (``plans_helpers.port_legacy_tree``)."""
    return port_legacy_tree(tmp_path)


# --- JSON lines and plain lines ------------------------------------------------------------


def test_jsonl_writes_an_unknown_total_as_null() -> None:
    stream = io.StringIO()
    sink = JsonlSink(stream, run_id="R1")

    sink(untold())
    sink(finished(completed=2))

    started, ended = map(json.loads, stream.getvalue().splitlines())
    assert started == {
        "event": "dispatch_started",
        "timestamp": "2026-11-28T00:04:53.372000+00:00",
        "name": "agent",
        "total": None,
        "config": CONFIG.to_dict(),
        "run_id": "R1",
    }
    assert ended["counts"] == {"pending": 0, "running": 0, "completed": 2, "failed": 0}


@pytest.mark.parametrize("failures_only", [False, True])
def test_plain_lines_go_on_through_a_dispatch_without_a_total(failures_only: bool) -> None:
    stream = io.StringIO()
    lines = PlainLines(stream, failures_only=failures_only)

    for event in (
        untold(None),
        SubplanStateChanged("plan/a", None, PENDING, time=T0),
        SubplanStateChanged("plan/a", PENDING, RUNNING, 1, time=T0),
        SubplanStateChanged("plan/a", RUNNING, FAILED, 1, ValueError("no"), time=T0 + 0.25),
        finished(None, failed=1),
    ):
        lines(event)

    failed = "2026-11-28T00:04:53.622Z  failed     plan/a  (0.25s)  ValueError: no"
    everything = ["2026-11-28T00:04:53.372Z  running    plan/a", failed]
    assert stream.getvalue().splitlines() == ([failed] if failures_only else everything)


# --- plan progress -------------------------------------------------------------------------


def test_plan_progress_adds_a_dispatch_without_a_total_as_it_finishes(tree: PlanNode) -> None:
    progress = PlanProgress(tree)
    assert progress.total_known

    progress(untold())
    progress(untold())  # a second one of the same name
    progress(SubplanStateChanged("agent/a", None, PENDING))

    assert not progress.total_known
    assert progress.total == 9
    progress(finished(completed=3, failed=1))
    assert not progress.total_known
    assert progress.total == 13
    progress(finished(completed=2))
    assert progress.total_known
    assert progress.total == 15


def test_plan_progress_counts_a_dispatch_with_a_total_as_it_starts(tree: PlanNode) -> None:
    progress = PlanProgress(tree)

    progress(DispatchStarted("extra", 4, CONFIG))
    progress(finished("extra", completed=4))

    assert progress.total_known
    assert progress.total == 13


def test_plan_progress_takes_a_steps_size_from_the_tree(tree: PlanNode) -> None:
    """A step's dispatch without a total (a lazy input) leaves the total to the tree, which
    knows it; so does a dispatch that finishes without having started here."""
    progress = PlanProgress(tree)

    progress(StepStateChanged("port", None, StepState.RUNNING, 5))
    progress(untold("port"))
    assert progress.total_known
    progress(finished("port", completed=5))
    progress(finished("elsewhere", completed=7))

    assert progress.total == 9


# --- the live view -------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Watched:
    """A live view, its reporter and plan progress, fed the same events as on a bus."""

    def __init__(self, tree: PlanNode, console: Console) -> None:
        self.clock = Clock()
        self.reporter = ProgressReporter(clock=self.clock)
        self.progress = PlanProgress(tree)
        self.view = LiveView(console, self.reporter, self.progress, run_id="R1", clock=self.clock)

    def feed(self, *events: Event) -> None:
        for event in events:
            self.reporter.handle(event)
            self.progress(event)
            self.view(event)

    def lines(self) -> list[str]:
        console = self.view.console
        with console.capture() as capture:
            console.print(self.view.render())
        return [line.rstrip() for line in capture.get().splitlines()]


def test_live_view_shows_counts_without_a_percentage_or_eta_until_the_total_is_known(
    tree: PlanNode, console: Console
) -> None:
    watched = Watched(tree, console)
    watched.feed(untold(), *(SubplanStateChanged(f"agent/{x}", None, PENDING) for x in "abc"))
    watched.feed(SubplanStateChanged("agent/a", PENDING, RUNNING, 1))
    watched.clock.now += 2
    watched.feed(SubplanStateChanged("agent/a", RUNNING, COMPLETED, 1))
    watched.feed(SubplanStateChanged("agent/b", PENDING, RUNNING, 1))
    watched.clock.now += 1

    lines = watched.lines()

    # A subplan ended (an ETA could be guessed) but work is still being added: none is shown.
    assert re.match(r"^.{40} 1/\? elapsed 0:00:03$", lines[1])
    assert lines[2] == "pending 10   running 1   completed 1   failed 0"
    assert lines[3:] == ["  agent/b  1.00s"]

    watched.feed(SubplanStateChanged("agent/b", RUNNING, COMPLETED, 1))
    watched.feed(SubplanStateChanged("agent/c", PENDING, FAILED, 0, ValueError("stop")))
    watched.feed(finished(completed=2, failed=1))
    watched.clock.now += 1

    # Known now: the tree's 9 and the group's 3; 9 left at 1.5 s each, one at a time.
    assert re.match(r"^━{10}.{30} 3/12  25% elapsed 0:00:04 ETA 0:00:13$", watched.lines()[1])


def test_live_view_pulses_with_its_clock(tree: PlanNode) -> None:
    """The bar of an unknown total moves with the view's clock, not the wall clock: the same
    moment renders the same (the pulse is drawn in colours)."""
    console = Console(file=io.StringIO(), force_terminal=True, width=100, color_system="truecolor")
    watched = Watched(tree, console)
    watched.feed(untold())

    def drawn() -> str:
        with console.capture() as capture:
            console.print(watched.view.render())
        return capture.get()

    first = drawn()
    assert drawn() == first
    watched.clock.now += 0.1
    assert drawn() != first


# --- the summary ---------------------------------------------------------------------------


def test_summary_counts_a_dispatch_without_a_total(tree: PlanNode) -> None:
    reporter = ProgressReporter()
    progress = PlanProgress(tree)
    events: list[Event] = [
        untold(),
        *(SubplanStateChanged(f"agent/{x}", None, PENDING) for x in "ab"),
        SubplanStateChanged("agent/a", PENDING, RUNNING, 1),
        SubplanStateChanged("agent/a", RUNNING, COMPLETED, 1),
        SubplanStateChanged("agent/b", PENDING, FAILED, 0, ValueError("x")),
        finished(completed=1, failed=1),
    ]
    for event in events:
        reporter.handle(event)
        progress(event)

    summary = RunSummary.collect(
        progress,
        reporter.snapshot(),
        outcome="failed",
        elapsed=1.0,
        run_id="R1",
        log_dir=Path("logs"),
    )

    # The tree's 9, never started, and the group's two.
    assert summary.totals() == "11 total, 1 completed, 1 failed, 9 not run"
    assert summary.lines()[-2:] == [
        "  failed subplan  error          exit code  log file",
        "  agent/b         ValueError: x",
    ]


def test_summary_of_a_run_that_ended_before_a_dispatch_told_its_size(tree: PlanNode) -> None:
    """Nothing else ends a dispatch without its ``dispatch_finished``: counted all the same."""
    reporter = ProgressReporter()
    progress = PlanProgress(tree)
    for event in (untold(), *(SubplanStateChanged(f"agent/{n}", None, PENDING) for n in range(12))):
        reporter.handle(event)
        progress(event)

    summary = RunSummary.collect(
        progress,
        reporter.snapshot(),
        outcome="interrupted",
        elapsed=1.0,
        run_id="R1",
        log_dir=Path("logs"),
    )

    assert summary.totals() == "21 total, 0 completed, 0 failed, 21 not run"


# --- a real group and a real lazy input ------------------------------------------------------


async def test_every_sink_follows_a_real_group_while_its_total_is_unknown(
    tree: PlanNode, console: Console
) -> None:
    bus = EventBus()
    watched = Watched(tree, console)
    for sink in (watched.reporter.handle, watched.progress, watched.view):
        bus.subscribe(sink)
    jsonl, plain = io.StringIO(), io.StringIO()
    bus.subscribe(JsonlSink(jsonl, run_id="R1"))
    bus.subscribe(PlainLines(plain))
    gate, started = asyncio.Event(), asyncio.Event()
    config = ParallelExecutionConfig(max_parallel=2)

    async with ParallelSubplanDispatcher(config, bus=bus).open(name="agent") as group:
        group.submit(Subplan("agent/slow", waiting(gate, started)))
        group.submit(Subplan("agent/quick", returning(1)))
        await started.wait()
        await eventually(lambda: watched.reporter.snapshot().counts[COMPLETED] == 1)
        watched.clock.now += 1
        while_open = watched.lines()
        gate.set()

    assert re.match(r"^.{40} 1/\? elapsed 0:00:01$", while_open[1])
    assert while_open[2] == "pending 9   running 1   completed 1   failed 0"
    # Known once the group ended: the tree's 9 left, at the mean of 0 s and 1 s, one at a time.
    assert re.match(r"^━{7}.{33} 2/11  18% elapsed 0:00:01 ETA 0:00:04$", watched.lines()[1])
    records = [json.loads(line) for line in jsonl.getvalue().splitlines()]
    assert [r["total"] for r in records if r["event"] == "dispatch_started"] == [None]
    assert [line.split()[1:3] for line in plain.getvalue().splitlines()] == [
        ["running", "agent/slow"],
        ["running", "agent/quick"],
        ["completed", "agent/quick"],
        ["completed", "agent/slow"],
    ]


async def test_a_lazy_input_is_null_in_the_json_lines() -> None:
    bus = EventBus()
    jsonl = io.StringIO()
    bus.subscribe(JsonlSink(jsonl, run_id="R1"))

    lazy = (Subplan(f"s{n}", returning(n)) for n in range(3))
    await ParallelSubplanDispatcher(ParallelExecutionConfig(), bus=bus).run(lazy, name="lazy")

    records = [json.loads(line) for line in jsonl.getvalue().splitlines()]
    assert records[0]["event"] == "dispatch_started"
    assert (records[0]["name"], records[0]["total"]) == ("lazy", None)
    assert records[-1]["counts"]["completed"] == 3
