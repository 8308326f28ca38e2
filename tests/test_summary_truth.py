"""Issue #11, points 9-12: the summary and the live view tell the truth. Cancelled subplans and
steps are counted as cancelled and steps that never started as not run; a resumed run says in
one line per step what it skipped; the live view's times move with the clock; log paths are
printed whole, however narrow the terminal."""

from __future__ import annotations

import io
import re
import signal
import subprocess
from pathlib import Path

import pytest
from rich.console import Console

from subplans.engine.errors import CommandFailedError, SubplanCancelledError
from subplans.engine.events import StepStateChanged, SubplanSkipped, SubplanStateChanged
from subplans.engine.progress import Failure, ProgressReporter
from subplans.engine.states import StepState, SubplanExecutionState
from subplans.plans.loader import GlobalConfig, PlanNode, load_plan
from subplans.plans.profiles import ProfileRegistry
from subplans.sinks.lines import PlainLines
from subplans.sinks.live import LiveView
from subplans.sinks.plan_progress import PlanProgress, StepView
from subplans.sinks.summary import RunSummary

from .conftest import command_env
from .plans_helpers import port_legacy_tree, write
from .test_cli_process import read_events, start_run, subplans

PENDING = SubplanExecutionState.PENDING
RUNNING = SubplanExecutionState.RUNNING
COMPLETED = SubplanExecutionState.COMPLETED
FAILED = SubplanExecutionState.FAILED


@pytest.fixture
def tree(tmp_path: Path) -> PlanNode:
    """Three steps, the second of five units three at a time: 9 units with prepare's and
    report's (one of them a nested plan of two)."""
    return port_legacy_tree(tmp_path)


# --- the summary's words ------------------------------------------------------------------


def a_summary(
    failures: list[Failure], *, log_dir: Path, steps: list[StepView] | None = None
) -> RunSummary:
    counts = dict.fromkeys(SubplanExecutionState, 0)
    counts[COMPLETED] = 2
    counts[FAILED] = len(failures)
    return RunSummary(
        plan="p",
        run_id="R1",
        log_dir=log_dir,
        outcome="interrupted",
        elapsed=1.5,
        total=2 + len(failures) + 1,
        counts=counts,
        failures=failures,
        steps=steps or [StepView("work", "work", 0, 2, "failed")],
    )


def test_cancelled_subplans_and_steps_are_not_failures_and_unstarted_steps_did_not_run() -> None:
    abandoned = SubplanCancelledError("interrupted by SIGINT; still running", abandoned=True)
    failures = [
        Failure("work/a", SubplanCancelledError("interrupted by SIGINT"), 1.0),
        Failure("work/b", abandoned, 1.0),
        Failure("work/c", CommandFailedError("exited with code 1", exit_code=1), 1.0),
    ]
    steps = [
        StepView("prep", "prep", 0, 2, "completed"),
        StepView("work", "work", 1, 2, "cancelled"),
        StepView("skip", "skip", 2, 2, "skipped"),
        StepView("report", "report", 3, 2, "pending"),
    ]

    found = a_summary(failures, log_dir=Path("logs"), steps=steps)

    assert (found.failed_count, found.cancelled_count, found.not_run) == (1, 2, 1)
    assert found.lines()[1:3] == [
        "  subplans  6 total, 2 completed, 1 failed, 2 cancelled, 1 not run",
        "  steps     prep completed, work cancelled, skip skipped, report not run",
    ]


def test_plan_progress_tells_a_cancelled_step_from_a_failed_one(tree: PlanNode) -> None:
    progress = PlanProgress(tree)
    for step in ("prepare", "port"):
        progress(StepStateChanged(step, None, StepState.RUNNING, 1))
    progress(StepStateChanged("prepare", StepState.RUNNING, StepState.FAILED, 1, ValueError("x")))
    stopped = SubplanCancelledError("the run was cancelled")
    progress(StepStateChanged("port", StepState.RUNNING, StepState.FAILED, 5, stopped))

    assert [s.state for s in progress.steps()] == ["failed", "cancelled", "pending"]


# --- log paths, whole ---------------------------------------------------------------------

LONG = Path("/srv/builds/" + "very-long-folder-name/" * 4 + "runs/R1/logs")


def narrow(width: int) -> Console:
    return Console(file=io.StringIO(), force_terminal=True, width=width, color_system=None)


def shown(console: Console) -> list[str]:
    assert isinstance(console.file, io.StringIO)
    return [line.rstrip() for line in console.file.getvalue().splitlines()]


def failed(log: Path) -> list[Failure]:
    error = CommandFailedError("exited with code 3", exit_code=3, log_file=str(log))
    return [Failure("work/b", error, 1.0)]


def test_a_log_folder_too_long_for_its_line_goes_whole_on_a_line_of_its_own() -> None:
    console = narrow(40)

    a_summary([], log_dir=LONG).show(console)

    lines = shown(console)
    assert lines[-2:] == ["  logs", f"    {LONG}"]  # longer than the terminal, never broken


def test_log_files_are_beside_the_table_when_they_fit_and_below_it_otherwise() -> None:
    log = LONG / "work__b.log"
    summary = a_summary(failed(log), log_dir=Path("logs"))
    # The widest row: "  failed subplan", "exited with code 3", "exit code", the path, with
    # three columns between two cells.
    fits = len("  failed subplan") + len("exited with code 3") + len("exit code") + len(str(log))
    fits += 3 * 3

    beside, below, tiny = narrow(fits), narrow(fits - 1), narrow(30)
    for console in (beside, below, tiny):
        summary.show(console)

    assert re.match(rf"^  work/b +exited with code 3 +3 +{re.escape(str(log))}$", shown(beside)[-1])
    assert re.match(r"^  work/b +exited with code 3 +3$", shown(below)[-3])
    assert shown(below)[-2:] == ["  log of work/b:", f"    {log}"]
    # Too narrow for the table: one failure after the other, the error wrapping, the path not.
    lines = shown(tiny)
    assert lines[lines.index("  work/b") :] == ["  work/b", *lines[-3:-1], f"    {log}"]
    assert "exited with code 3 (exit code 3)" in " ".join(" ".join(lines).split())


def test_below_the_table_only_failures_with_a_log_have_their_log_listed() -> None:
    log = LONG / "work__b.log"
    failures = [*failed(log), Failure("work/py", ValueError("bad"), 1.0)]
    console = narrow(60)

    a_summary(failures, log_dir=Path("logs")).show(console)

    lines = shown(console)
    assert re.match(r"^  work/py +ValueError: bad$", lines[-3])
    assert lines[-2:] == ["  log of work/b:", f"    {log}"]


def test_a_narrow_summary_without_an_exit_code_says_none() -> None:
    error = CommandFailedError("killed by signal SIGKILL", signal="SIGKILL")
    console = narrow(20)

    a_summary([Failure("work/k", error, 1.0)], log_dir=Path("l")).show(console)

    lines = shown(console)
    assert lines[lines.index("  work/k") + 1 :] == ["    killed by signal", "SIGKILL"]


# --- the live view ------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def live(tree: PlanNode) -> tuple[LiveView, ProgressReporter, PlanProgress, Clock]:
    clock = Clock()
    reporter = ProgressReporter(clock=clock)
    progress = PlanProgress(tree)
    view = LiveView(narrow(100), reporter, progress, run_id="R1", clock=clock)
    return view, reporter, progress, clock


def bar_and_states(view: LiveView) -> tuple[str, str]:
    with view.console.capture() as capture:
        view.console.print(view.render())
    lines = [line.rstrip() for line in capture.get().splitlines()]
    return lines[1], lines[2]


def feed(
    view: LiveView, reporter: ProgressReporter, progress: PlanProgress, *events: object
) -> None:
    for event in events:
        reporter.handle(event)  # type: ignore[arg-type]
        progress(event)  # type: ignore[arg-type]
        view(event)  # type: ignore[arg-type]


def times(line: str) -> tuple[str, str]:
    found = re.search(r"elapsed (\S+) ETA (\S+)$", line)
    assert found is not None, line
    return found[1], found[2]


def test_elapsed_and_eta_move_every_second_while_no_subplan_ends(tree: PlanNode) -> None:
    view, reporter, progress, clock = live(tree)
    feed(view, reporter, progress, StepStateChanged("port", None, StepState.RUNNING, 5))
    announced = [SubplanStateChanged(f"port/{x}", None, PENDING) for x in "abcd"]
    feed(view, reporter, progress, *announced)
    feed(view, reporter, progress, SubplanStateChanged("port/a", PENDING, RUNNING, 1))
    clock.now += 10
    feed(view, reporter, progress, SubplanStateChanged("port/a", RUNNING, COMPLETED, 1))
    for x in "bcd":
        feed(view, reporter, progress, SubplanStateChanged(f"port/{x}", PENDING, RUNNING, 1))

    seen = []
    for _ in range(14):  # no event: only the clock moves, one second at a time
        seen.append(times(bar_and_states(view)[0]))
        clock.now += 1

    assert [elapsed for elapsed, _ in seen] == [f"0:00:{s:02d}" for s in range(10, 24)]
    # 8 units are left, 3 at a time (port's max_parallel), each needing the mean of 10 s: 5
    # pending, 3 just started: (50 + 30) / 3 = 26.7 s, then one second less every second.
    assert [eta for _, eta in seen] == [f"0:00:{s:02d}" for s in range(26, 12, -1)]
    clock.now = 137.0  # the estimate ran out, b, c and d overran the mean: 50 / 3 s again
    assert times(bar_and_states(view)[0])[1] == "0:00:16"
    clock.now += 1
    assert times(bar_and_states(view)[0])[1] == "0:00:15"
    assert view.refresh_per_second >= 1  # Rich renders it that often, events or not


def test_the_live_view_refreshes_at_least_once_a_second(tree: PlanNode) -> None:
    with pytest.raises(ValueError, match=r"^refresh_per_second must be at least 1, got 0.5$"):
        LiveView(
            narrow(80), ProgressReporter(), PlanProgress(tree), run_id="R1", refresh_per_second=0.5
        )


def test_the_live_view_counts_cancelled_subplans_apart(tree: PlanNode) -> None:
    view, reporter, progress, _ = live(tree)
    stop = SubplanCancelledError("interrupted by SIGINT")
    feed(
        view,
        reporter,
        progress,
        *[SubplanStateChanged(f"port/{x}", None, PENDING) for x in "abc"],
        SubplanStateChanged("port/a", PENDING, RUNNING, 1),
        SubplanStateChanged(
            "port/a", RUNNING, FAILED, 1, CommandFailedError("exited", exit_code=1)
        ),
        SubplanStateChanged("port/b", PENDING, RUNNING, 1),
        SubplanStateChanged("port/b", RUNNING, FAILED, 1, stop),
        SubplanStateChanged("port/c", PENDING, FAILED, 0, stop),
    )

    assert bar_and_states(view)[1].endswith("failed 1   cancelled 2")


def test_a_failure_s_log_path_is_printed_whole_above_the_live_view(tree: PlanNode) -> None:
    view, reporter, progress, _ = live(tree)
    view.console.width = 30
    log = LONG / "port__b.log"
    error = CommandFailedError("exited with code 3", exit_code=3, log_file=str(log))

    feed(view, reporter, progress, SubplanStateChanged("port/b", RUNNING, FAILED, 1, error))

    assert shown(view.console)[-1] == f"    log: {log}"


# --- what a resumed run skipped -----------------------------------------------------------


def test_skipped_subplans_are_told_in_one_line_per_step() -> None:
    stream = io.StringIO()
    lines = PlainLines(stream)
    for event in [
        SubplanSkipped("lone", "already completed", time=0.0),  # no step started yet
        StepStateChanged("prep", None, StepState.RUNNING, 3, time=1.0),
        *[SubplanSkipped(f"prep/{x}", "already completed", time=1.0) for x in "abc"],
        StepStateChanged("prep", StepState.RUNNING, StepState.COMPLETED, 3, time=1.0),
        StepStateChanged("port", None, StepState.RUNNING, 3, time=2.0),
        SubplanSkipped("port/a", "already completed", time=2.0),
        SubplanSkipped("port/b", "done elsewhere", time=2.0),
        SubplanStateChanged("port/c", None, PENDING, time=2.0),
        StepStateChanged("last", None, StepState.RUNNING, 2, time=3.0),
        SubplanSkipped("last/a", "already completed", time=3.0),
        SubplanSkipped("last/b", "already completed", time=3.0),
    ]:
        lines(event)
    lines.flush()  # the last event was a skip: nothing came after it to write the step's line
    lines.flush()

    assert [line[26:] for line in stream.getvalue().splitlines()] == [
        "skipped    1 subplan  (already completed)",
        "running    step prep  (3 subplans)",
        "skipped    3 subplans of step prep  (already completed)",
        "completed  step prep",
        "running    step port  (3 subplans)",
        "skipped    1 subplan of step port  (already completed)",
        "skipped    1 subplan of step port  (done elsewhere)",
        "running    step last  (2 subplans)",
        "skipped    2 subplans of step last  (already completed)",
    ]


# --- end to end: real runs, real signals --------------------------------------------------

PLAN = """
    name: sleepy
    automation_profile: {max_parallel: 2, cancel_grace: 5}
    steps:
      - name: prep
        run: "true"
      - name: work
        for_each: [a, b, c, d]
        subplan: {run: "sleep 30"}
      - name: report
        run: "true"
    """


@pytest.mark.parametrize("how", ["SIGINT", "cancel"])
def test_a_stopped_run_s_summary_says_cancelled_and_not_run(
    how: str, tmp_path: Path, started: list[subprocess.Popen[bytes]]
) -> None:
    # The cancelled run shows on a terminal (Rich is made to see one), 40 columns wide.
    terminal = {"TTY_INTERACTIVE": "1", "NO_COLOR": "1", "COLUMNS": "40"}
    env = command_env(
        SUBPLANS_CONFIG=str(tmp_path / "none.yaml"), **(terminal if how == "cancel" else {})
    )
    proc, events, out = start_run(tmp_path, env, started, PLAN)  # prep and two of work started
    run_id = str(read_events(events)[0]["run_id"])

    if how == "SIGINT":
        proc.send_signal(signal.SIGINT)
    else:
        assert subplans("cancel", run_id, cwd=tmp_path, env=env).returncode == 0

    assert proc.wait(timeout=15) == 130
    text = out.read_text()
    assert "Traceback" not in text
    # On 40 columns the totals wrap (they hold no path): read them as words.
    words = " ".join(text.split())
    assert "subplans 6 total, 1 completed, 0 failed, 4 cancelled, 1 not run" in words
    assert "steps prep completed, work cancelled, report not run" in words
    logs = f".subplans/runs/{run_id}/logs"
    assert re.search(rf"^  logs( {{6}}|\n    ){re.escape(logs)}$", text, re.M)  # whole


def test_resume_says_per_step_how_many_subplans_it_skipped(tmp_path: Path) -> None:
    write(
        tmp_path,
        "plan.yaml",
        """
        name: twice
        automation_profile: {failure_mode: continue_on_error}
        steps:
          - name: prep
            for_each: [a, b, c]
            subplan: {run: "true"}
          - name: port
            for_each: [a, b, c, d]
            subplan: {run: "test {item} != d || test -e fixed"}
        """,
    )
    env = command_env(SUBPLANS_CONFIG=str(tmp_path / "none.yaml"))
    first = subplans("run", "plan.yaml", cwd=tmp_path, env=env)
    assert first.returncode == 1, first.stdout + first.stderr
    run_id = re.findall(r"\(run (\S+)\)$", first.stdout, re.M)[-1]
    (tmp_path / "fixed").touch()

    resumed = subplans("resume", run_id, cwd=tmp_path, env=env)

    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    skipped = [line[26:] for line in resumed.stdout.splitlines() if line[26:].startswith("skip")]
    assert skipped == [
        "skipped    3 subplans of step prep  (already completed)",
        "skipped    3 subplans of step port  (already completed)",
    ]
    assert "  subplans  7 total, 1 completed, 0 failed, 6 already completed\n" in resumed.stdout


# --- steps that read their items when they start -------------------------------------------


def test_a_step_that_reads_its_items_when_it_starts_counts_them_then(tmp_path: Path) -> None:
    write(tmp_path, "inner.yaml", "name: inner\nsteps:\n  - {name: build, run: 'true'}\n")
    path = write(
        tmp_path,
        "plan.yaml",
        """
        name: late
        steps:
          - name: list
            run: "true"
          - name: port
            for_each: {glob: "*.txt", allow_empty: true}
            subplan: {plan: inner.yaml}
        """,
    )
    config = GlobalConfig(tmp_path / "none.yaml", False, ProfileRegistry(), None)
    progress = PlanProgress(load_plan(path, config=config))
    assert progress.total == 1

    progress(StepStateChanged("port", None, StepState.RUNNING, 2))
    progress(StepStateChanged("port/a/build", None, StepState.RUNNING, 1))
    progress(StepStateChanged("port/b/build", None, StepState.RUNNING, 1))
    progress(StepStateChanged("port/a/build", StepState.RUNNING, StepState.COMPLETED, 1))
    progress(StepStateChanged("port/b/build", None, StepState.RUNNING, 1))  # a nested retry

    assert progress.total == 1 + 2 + 1 + 1


def test_a_skipped_nested_plan_counts_what_completed_inside_it(tmp_path: Path) -> None:
    write(
        tmp_path,
        "inner.yaml",
        """
        name: inner
        steps:
          - {name: survey, run: "true"}
          - name: each
            for_each: {glob: "*.txt", allow_empty: true}
            subplan: {run: "true"}
        """,
    )
    path = write(
        tmp_path, "plan.yaml", "name: outer\nsteps:\n  - {name: check, plan: inner.yaml}\n"
    )
    config = GlobalConfig(tmp_path / "none.yaml", False, ProfileRegistry(), None)
    done = ["check", "check/survey", "check/each/a", "check/each/b", "elsewhere/x"]
    progress = PlanProgress(load_plan(path, config=config), completed=done)
    assert progress.total == 2  # check and survey: each's items are read when it starts

    progress(SubplanSkipped("check", "already completed"))

    assert (progress.total, progress.resumed) == (4, 4)
