"""The command's sinks one by one, fed events by hand: JSONL, plain lines, plan progress, the
summary and the live view (rendered into an in-memory terminal)."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
from rich.console import Console

from subplans.engine.config import ParallelExecutionConfig
from subplans.engine.errors import CommandFailedError, SubplanCancelledError, SubplanError
from subplans.engine.events import (
    DispatchStarted,
    PlanFinished,
    PlanStarted,
    StepStateChanged,
    SubplanProcessStarted,
    SubplanRetrying,
    SubplanSkipped,
    SubplanStateChanged,
)
from subplans.engine.progress import Failure, ProgressReporter
from subplans.engine.states import PlanState, StepState, SubplanExecutionState
from subplans.plans.loader import PlanNode
from subplans.sinks.formatting import (
    clock_time,
    duration,
    error_text,
    is_cancellation,
    iso_time,
    tail,
)
from subplans.sinks.jsonl import JsonlSink
from subplans.sinks.lines import PlainLines
from subplans.sinks.live import LiveView
from subplans.sinks.plan_progress import PlanProgress
from subplans.sinks.summary import MAX_FAILURE_ROWS, RunSummary

from .conftest import printed
from .plans_helpers import port_legacy_tree

PENDING = SubplanExecutionState.PENDING
RUNNING = SubplanExecutionState.RUNNING
COMPLETED = SubplanExecutionState.COMPLETED
FAILED = SubplanExecutionState.FAILED

#: 2026-11-28T00:04:53.372Z
T0 = 1795824293.372


def command_failed(code: int = 3, tail_text: str = "one\ntwo") -> CommandFailedError:
    return CommandFailedError(
        f"exited with code {code}",
        exit_code=code,
        log_file="/runs/r/logs/port__b.log",
        output_tail=tail_text,
    )


@pytest.fixture
def tree(tmp_path: Path) -> PlanNode:
    """A root plan of three steps; the second holds a nested plan of two units."""
    return port_legacy_tree(tmp_path)


# --- formatting ---------------------------------------------------------------------------


def test_iso_time_is_utc_with_milliseconds() -> None:
    assert iso_time(T0) == "2026-11-28T00:04:53.372Z"
    assert iso_time(T0 + 0.9999999) == "2026-11-28T00:04:54.372Z"
    assert iso_time(T0 + 0.6284) == "2026-11-28T00:04:54.000Z"
    assert iso_time(0.0) == "1970-01-01T00:00:00.000Z"


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (-0.001, "0.00s"),
        (0.1, "0.10s"),
        (9.994, "9.99s"),
        (12.34, "12.3s"),
        (125, "2m05s"),
        (3725, "1h02m"),
    ],
)
def test_duration(seconds: float, shown: str) -> None:
    assert duration(seconds) == shown


def test_clock_time() -> None:
    assert [clock_time(s) for s in (-1, 4.9, 65, 3725)] == [
        "0:00:00",
        "0:00:04",
        "0:01:05",
        "1:02:05",
    ]


def test_error_text_is_one_line_and_names_foreign_errors() -> None:
    assert error_text(None) == ""
    assert error_text(command_failed()) == "exited with code 3"
    assert error_text(SubplanError("")) == "SubplanError"
    assert error_text(ValueError("bad\n  value")) == "ValueError: bad value"
    assert error_text(TimeoutError()) == "TimeoutError"
    group = ExceptionGroup("2 of 5 subplans failed", [ValueError(), KeyError()])
    assert error_text(group) == "ExceptionGroup: 2 of 5 subplans failed"


def test_is_cancellation() -> None:
    assert is_cancellation(SubplanCancelledError("stop"))
    assert not is_cancellation(command_failed())
    assert not is_cancellation(None)


def test_tail_keeps_the_last_lines_of_a_command_output() -> None:
    many = "\n".join(f"line {n}" for n in range(15))
    assert tail(command_failed(tail_text=many)) == [f"line {n}" for n in range(5, 15)]
    assert tail(command_failed(tail_text=many), 2) == ["line 13", "line 14"]
    assert tail(command_failed(tail_text="")) == []
    assert tail(ValueError("no output")) == []
    assert tail(None) == []


# --- JSONL --------------------------------------------------------------------------------


def test_jsonl_sink_writes_one_flushed_object_per_event_with_the_run_id() -> None:
    stream = io.StringIO()
    sink = JsonlSink(stream, run_id="R1")

    sink(SubplanStateChanged("port/b", RUNNING, FAILED, 1, command_failed(), time=T0))
    sink(SubplanProcessStarted("port/c", 4242, "/runs/r/logs/port__c.log", time=T0))

    lines = stream.getvalue().splitlines()
    assert [json.loads(line) for line in lines] == [
        {
            "event": "subplan_state_changed",
            "timestamp": "2026-11-28T00:04:53.372000+00:00",
            "subplan_id": "port/b",
            "previous": "running",
            "state": "failed",
            "attempt": 1,
            "error": {
                "type": "CommandFailedError",
                "message": "exited with code 3",
                "exit_code": 3,
                "log_file": "/runs/r/logs/port__b.log",
                "output_tail": "one\ntwo",
            },
            "run_id": "R1",
        },
        {
            "event": "subplan_process_started",
            "timestamp": "2026-11-28T00:04:53.372000+00:00",
            "subplan_id": "port/c",
            "pid": 4242,
            "log_file": "/runs/r/logs/port__c.log",
            "worker": None,
            "run_id": "R1",
        },
    ]
    assert sink.written == 2
    assert repr(sink) == "<JsonlSink run R1, 2 written>"


class BrokenPipe(io.StringIO):
    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")


def test_a_failed_write_ends_the_jsonl_stream_without_raising() -> None:
    sink = JsonlSink(BrokenPipe(), run_id="R1")
    event = PlanFinished("", PlanState.COMPLETED, 1.0)

    sink(event)
    sink(event)

    assert isinstance(sink.error, BrokenPipeError)
    assert sink.written == 0
    assert repr(sink) == "<JsonlSink run R1, 0 written, failed: [Errno 32] Broken pipe>"


# --- plain lines --------------------------------------------------------------------------


def test_plain_lines_one_line_per_state_change() -> None:
    stream = io.StringIO()
    lines = PlainLines(stream)
    events = [
        PlanStarted("", "port-legacy", "plan.yaml", "R1", 2, time=T0),
        StepStateChanged("port", None, StepState.RUNNING, 3, time=T0),
        DispatchStarted("port", 3, ParallelExecutionConfig(), time=T0),
        SubplanSkipped("port/z", "already completed", time=T0),
        SubplanStateChanged("port/a", None, PENDING, time=T0),
        SubplanStateChanged("port/a", PENDING, RUNNING, 1, time=T0),
        SubplanRetrying("port/a", 1, command_failed(2), 0.1, time=T0 + 0.5),
        SubplanStateChanged("port/a", RUNNING, COMPLETED, 2, time=T0 + 1.25),
        SubplanStateChanged("port/b", PENDING, RUNNING, 1, time=T0),
        SubplanStateChanged("port/b", RUNNING, FAILED, 1, command_failed(), time=T0 + 12.5),
        SubplanStateChanged(
            "port/c", PENDING, FAILED, 0, SubplanCancelledError("cancelled"), time=T0 + 13
        ),
        StepStateChanged(
            "port",
            StepState.RUNNING,
            StepState.FAILED,
            3,
            SubplanError("1 of 3 failed"),
            time=T0 + 13,
        ),
        StepStateChanged("one", None, StepState.RUNNING, 1, time=T0 + 13),
        StepStateChanged("one", StepState.RUNNING, StepState.COMPLETED, 1, time=T0 + 13),
        StepStateChanged("report", None, StepState.SKIPPED, 1, time=T0 + 13),
        PlanStarted("port/docs", "docs", "docs.yaml", "R1", 1, time=T0 + 13),
        PlanFinished("port/docs", PlanState.COMPLETED, 0.5, time=T0 + 13),
        PlanFinished("", PlanState.FAILED, 13.0, time=T0 + 13),
    ]
    for event in events:
        lines(event)

    assert stream.getvalue().splitlines() == [
        "2026-11-28T00:04:53.372Z  started    plan port-legacy  (plan.yaml, run R1)",
        "2026-11-28T00:04:53.372Z  running    step port  (3 subplans)",
        "2026-11-28T00:04:53.372Z  skipped    1 subplan of step port  (already completed)",
        "2026-11-28T00:04:53.372Z  running    port/a",
        "2026-11-28T00:04:53.872Z  retrying   port/a  attempt 1 failed: exited with code 2; next in 0.10s",
        "2026-11-28T00:04:54.622Z  completed  port/a  (1.25s)",
        "2026-11-28T00:04:53.372Z  running    port/b",
        "2026-11-28T00:05:05.872Z  failed     port/b  (12.5s)  exited with code 3",
        "    | one",
        "    | two",
        "2026-11-28T00:05:06.372Z  failed     port/c  (not started)  cancelled",
        "2026-11-28T00:05:06.372Z  failed     step port  1 of 3 failed",
        "2026-11-28T00:05:06.372Z  running    step one  (1 subplan)",
        "2026-11-28T00:05:06.372Z  completed  step one",
        "2026-11-28T00:05:06.372Z  skipped    step report",
        "2026-11-28T00:05:06.372Z  failed     plan port-legacy  (13.0s)",
    ]
    assert lines.written == 14  # a failure and its output are one write
    assert repr(lines) == "<PlainLines every state change, 14 written, 0 running>"


def test_plain_lines_failures_only_shows_failures_of_subplans_that_ran() -> None:
    stream = io.StringIO()
    lines = PlainLines(stream, failures_only=True)
    for event in [
        PlanStarted("", "port-legacy", "plan.yaml", "R1", 1, time=T0),
        StepStateChanged("port", None, StepState.RUNNING, 3, time=T0),
        SubplanStateChanged("port/a", PENDING, RUNNING, 1, time=T0),
        SubplanStateChanged("port/a", RUNNING, COMPLETED, 1, time=T0 + 1),
        SubplanStateChanged("port/b", PENDING, RUNNING, 1, time=T0),
        SubplanStateChanged(
            "port/b", RUNNING, FAILED, 1, command_failed(tail_text=""), time=T0 + 2
        ),
        SubplanStateChanged("port/c", PENDING, FAILED, 0, SubplanCancelledError("x"), time=T0 + 2),
        SubplanRetrying("port/d", 1, command_failed(), 0.1, time=T0),
    ]:
        lines(event)

    assert stream.getvalue().splitlines() == [
        "2026-11-28T00:04:55.372Z  failed     port/b  (2.00s)  exited with code 3",
    ]
    assert repr(lines) == "<PlainLines failures, 1 written, 0 running>"


# --- plan progress ------------------------------------------------------------------------


def test_plan_progress_knows_the_tree_and_follows_the_root_steps(tree: PlanNode) -> None:
    progress = PlanProgress(tree)

    assert progress.total == 9  # prepare, a-d, docs + html + pdf, report
    assert progress.current is None
    assert [(s.name, s.state) for s in progress.steps()] == [
        ("prepare", "pending"),
        ("port", "pending"),
        ("report", "pending"),
    ]
    progress(StepStateChanged("prepare", None, StepState.RUNNING, 1))
    progress(StepStateChanged("prepare", StepState.RUNNING, StepState.COMPLETED, 1))
    progress(StepStateChanged("port", None, StepState.RUNNING, 5))
    progress(
        StepStateChanged("port/docs/build", None, StepState.RUNNING, 2)
    )  # nested: not a root step
    progress(SubplanStateChanged("port/a", None, PENDING))  # not followed here

    current = progress.current
    assert current is not None
    assert (current.name, current.index, current.max_parallel, current.state) == (
        "port",
        1,
        3,
        "running",
    )
    progress(StepStateChanged("port", StepState.RUNNING, StepState.FAILED, 5))
    progress(StepStateChanged("report", None, StepState.SKIPPED, 1))
    assert progress.skipped == 1
    assert [s.state for s in progress.steps()] == ["completed", "failed", "skipped"]
    assert repr(progress) == (
        "<PlanProgress 'port-legacy' 9 units, 1 in skipped steps, 0 already completed>"
    )


def test_plan_progress_counts_whole_subtrees_of_skipped_work(tree: PlanNode) -> None:
    progress = PlanProgress(tree)

    progress(StepStateChanged("port", None, StepState.SKIPPED, 5))
    progress(SubplanSkipped("prepare", "already completed"))
    progress(SubplanSkipped("port/docs", "already completed"))
    progress(SubplanSkipped("port/unknown", "already completed"))

    assert progress.skipped == 7
    assert progress.resumed == 1 + 3 + 1


# --- summary ------------------------------------------------------------------------------


def summary(
    failures: list[Failure], *, total: int = 10, completed: int = 6, resumed: int = 0
) -> RunSummary:
    counts = dict.fromkeys(SubplanExecutionState, 0)
    counts[COMPLETED] = completed
    counts[FAILED] = len(failures)
    from subplans.sinks.plan_progress import StepView

    return RunSummary(
        plan="port-legacy",
        run_id="R1",
        log_dir=Path.cwd() / ".subplans" / "runs" / "R1" / "logs",
        outcome="failed",
        elapsed=4.2,
        total=total,
        counts=counts,
        failures=failures,
        steps=[
            StepView("prepare", "prepare", 0, 4, "completed"),
            StepView("port", "port", 1, 8, "failed"),
        ],
        resumed=resumed,
    )


def test_summary_lines_list_the_failures_in_a_table_and_group_the_cancellations() -> None:
    killed = CommandFailedError("killed by signal SIGKILL", signal="SIGKILL", log_file="/x/k.log")
    failures = [
        Failure("port/b", command_failed(), 1.0),
        Failure("port/kill", killed, 1.0),
        Failure("port/py", ValueError("bad input"), 1.0),
        Failure("port/c", SubplanCancelledError("cancelled because subplan 'port/b' failed"), 1.0),
        Failure("port/d", SubplanCancelledError("cancelled because subplan 'port/b' failed"), 1.0),
        Failure("port/e", SubplanCancelledError("the dispatch was cancelled"), 1.0),
    ]

    lines = summary(failures, resumed=1).lines()

    assert lines == [
        "plan port-legacy failed in 4.20s  (run R1)",
        "  subplans  10 total, 6 completed, 3 failed, 3 cancelled, 1 already completed",
        "  steps     prepare completed, port failed",
        "  logs      .subplans/runs/R1/logs",
        "  failed subplan  error                     exit code  log file",
        "  port/b          exited with code 3                3  /runs/r/logs/port__b.log",
        "  port/kill       killed by signal SIGKILL    SIGKILL  /x/k.log",
        "  port/py         ValueError: bad input",
        "  2 cancelled: cancelled because subplan 'port/b' failed",
        "  1 cancelled: the dispatch was cancelled",
    ]


def test_summary_caps_the_failure_table_and_counts_what_never_ran() -> None:
    failures = [Failure(f"port/m{n}", command_failed(1), 1.0) for n in range(MAX_FAILURE_ROWS + 3)]

    found = summary(failures, total=40, completed=10).lines()

    assert found[1] == "  subplans  40 total, 10 completed, 23 failed, 7 not run"
    rows = [line for line in found if line.startswith("  port/m")]
    assert len(rows) == MAX_FAILURE_ROWS
    assert found[-1] == "  +3 more failed: see the logs or --events-jsonl"


def test_summary_render_for_a_terminal(console: Console) -> None:
    failures = [
        Failure("port/b", command_failed(), 1.0),
        Failure("port/c", SubplanCancelledError("the dispatch was cancelled"), 1.0),
    ] + [Failure(f"port/m{n}", command_failed(1), 1.0) for n in range(MAX_FAILURE_ROWS)]

    console.print(summary(failures).render())

    text = printed(console)
    lines = [line.rstrip() for line in text.splitlines()]
    assert lines[0] == "plan port-legacy failed in 4.20s  (run R1)"
    assert lines[1] == "  subplans  10 total, 6 completed, 21 failed, 1 cancelled"
    assert lines[2] == "  steps     prepare completed, port failed"
    assert lines[3] == "  logs      .subplans/runs/R1/logs"
    assert re.match(r"^  failed subplan +error +exit code +log file$", lines[4])
    assert re.match(r"^  port/b +exited with code 3 +3 +/runs/r/logs/port__b\.log$", lines[6])
    assert "  +1 more failed: see the logs or --events-jsonl" in lines
    assert lines[-1] == "  1 cancelled: the dispatch was cancelled"


def test_summary_shows_paths_outside_the_working_folder_as_they_are() -> None:
    plain = summary([])
    outside = RunSummary(
        **{
            **{f: getattr(plain, f) for f in RunSummary.__slots__},
            "log_dir": Path("/elsewhere/logs"),
        }
    )
    relative = RunSummary(
        **{
            **{f: getattr(plain, f) for f in RunSummary.__slots__},
            "log_dir": Path("rel/logs"),
        }
    )

    assert "  logs      /elsewhere/logs" in outside.lines()
    assert "  logs      rel/logs" in relative.lines()


# --- live view ----------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def live_view(
    tree: PlanNode, console: Console, **options: int
) -> tuple[LiveView, ProgressReporter, PlanProgress, Clock]:
    clock = Clock()
    reporter = ProgressReporter(clock=clock)
    progress = PlanProgress(tree)
    view = LiveView(console, reporter, progress, run_id="R1", clock=clock, **options)
    return view, reporter, progress, clock


def rendered(view: LiveView) -> list[str]:
    """The view as its console renders it now (captured: not part of ``printed()``)."""
    with view.console.capture() as capture:
        view.console.print(view.render())
    return [line.rstrip() for line in capture.get().splitlines()]


def feed(
    view: LiveView, reporter: ProgressReporter, progress: PlanProgress, *events: object
) -> None:
    for event in events:
        reporter.handle(event)  # type: ignore[arg-type]
        progress(event)  # type: ignore[arg-type]
        view(event)  # type: ignore[arg-type]


def test_live_view_before_anything_ran(tree: PlanNode, console: Console) -> None:
    view, _, _, _ = live_view(tree, console)

    lines = rendered(view)

    assert lines[0] == "port-legacy  run R1"
    assert re.match(r"^.{40} 0/9  0% elapsed 0:00:00 ETA -:--:--$", lines[1])
    assert lines[2] == "pending 9   running 0   completed 0   failed 0"
    assert len(lines) == 3


def test_live_view_shows_step_bar_counts_eta_and_the_longest_running(
    tree: PlanNode, console: Console
) -> None:
    view, reporter, progress, clock = live_view(tree, console, max_running=2)
    feed(view, reporter, progress, StepStateChanged("port", None, StepState.RUNNING, 5))
    feed(
        view, reporter, progress, *[SubplanStateChanged(f"port/{x}", None, PENDING) for x in "abcd"]
    )
    for x in "abc":
        feed(view, reporter, progress, SubplanStateChanged(f"port/{x}", PENDING, RUNNING, 1))
        clock.now += 1
    feed(view, reporter, progress, SubplanStateChanged("port/a", RUNNING, COMPLETED, 1))
    feed(view, reporter, progress, SubplanStateChanged("port/d", PENDING, RUNNING, 1))
    feed(view, reporter, progress, SubplanSkipped("prepare", "already completed"))
    clock.now += 2.5

    lines = rendered(view)

    # a ran 3 s; 7 units are left, 3 at a time: 4 pending need 3 s each; of the 3 running, b
    # and c ran longer than that, d needs 0.5 s more: (12 + 0.5) / 3 = 4.2 s.
    assert lines[0] == "port-legacy  step 2/3 port  run R1"
    assert re.match(r"^━{8}.{32} 2/9  22% elapsed 0:00:05 ETA 0:00:04$", lines[1])
    assert lines[2] == "pending 4   running 3   completed 1   failed 0   already completed 1"
    assert lines[3:] == ["  port/b  4.50s", "  port/c  3.50s", "  +1 more running"]


def test_live_view_eta_is_zero_when_nothing_is_left(tree: PlanNode, console: Console) -> None:
    view, reporter, progress, _ = live_view(tree, console)
    for step in ("prepare", "port", "report"):
        feed(view, reporter, progress, StepStateChanged(step, None, StepState.SKIPPED, 1))

    assert re.match(r"^.{40} 0/0  100% elapsed 0:00:00 ETA 0:00:00$", rendered(view)[1])


def test_live_view_prints_failures_above_it_as_they_happen(
    tree: PlanNode, console: Console
) -> None:
    view, reporter, progress, _ = live_view(tree, console)

    feed(
        view,
        reporter,
        progress,
        SubplanStateChanged("port/b", RUNNING, FAILED, 1, command_failed()),
        SubplanStateChanged("port/c", RUNNING, FAILED, 1, SubplanCancelledError("stop")),
        SubplanStateChanged("port/d", PENDING, FAILED, 0, SubplanCancelledError("stop")),
        SubplanStateChanged("port/e", RUNNING, FAILED, 1, ValueError("bad")),
        SubplanStateChanged("port/f", RUNNING, COMPLETED, 1),
    )

    assert printed(console).splitlines() == [
        "✗ port/b  exited with code 3",
        "    │ one",
        "    │ two",
        "    log: /runs/r/logs/port__b.log",
        "■ port/c  stop",
        "✗ port/e  ValueError: bad",
    ]


def test_live_view_starts_and_stops_a_live_display(tree: PlanNode, console: Console) -> None:
    view, reporter, progress, _ = live_view(tree, console)

    with view:
        assert repr(view) == "<LiveView 'port-legacy' started>"
        feed(
            view,
            reporter,
            progress,
            SubplanStateChanged("port/b", RUNNING, FAILED, 1, command_failed()),
        )

    assert repr(view) == "<LiveView 'port-legacy' stopped>"
    text = printed(console)
    assert "port-legacy  run R1" in text
    assert "✗ port/b  exited with code 3" in text


def test_live_view_lists_every_running_subplan_when_they_fit(
    tree: PlanNode, console: Console
) -> None:
    view, reporter, progress, clock = live_view(tree, console)
    feed(view, reporter, progress, SubplanStateChanged("prepare", PENDING, RUNNING, 1))
    clock.now += 0.25

    assert rendered(view)[3:] == ["  prepare  0.25s"]


def test_summary_render_without_failures(console: Console) -> None:
    console.print(summary([], completed=10).render())

    lines = printed(console).splitlines()
    assert [line.rstrip() for line in lines] == [
        "plan port-legacy failed in 4.20s  (run R1)",
        "  subplans  10 total, 10 completed, 0 failed",
        "  steps     prepare completed, port failed",
        "  logs      .subplans/runs/R1/logs",
    ]


def test_plain_lines_stop_at_the_first_failed_write() -> None:
    lines = PlainLines(BrokenPipe())

    lines(StepStateChanged("port", None, StepState.RUNNING, 3, time=T0))
    lines(StepStateChanged("port", StepState.RUNNING, StepState.COMPLETED, 3, time=T0))

    assert isinstance(lines.error, BrokenPipeError)
    assert lines.written == 0
