"""A nested plan retried as a whole (``retries`` on its ``plan`` subplan, or on its step) runs its
subplans again under the same ids. Regression: the summary counted and listed them once per
attempt of their nested plan (``4 total`` for 2 subplans, ``s/inner/t`` three times in the
failure table), ``--output tag`` printed an attempt's output again with each later one, and each
new attempt's log header said ``(resumed)``. Each subplan counts once, in its latest state; its
log header names the nested plan's attempt (``--- attempt 1 (in s/inner attempt 2), ...``)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from subplans.engine.bus import EventBus
from subplans.engine.events import Event, SubplanStateChanged
from subplans.engine.progress import ProgressReporter
from subplans.engine.states import SubplanExecutionState
from subplans.execution.executor import PlanExecutor
from subplans.execution.spawning import log_header
from subplans.plans.loader import load_plan
from subplans.sinks.formatting import is_cancellation
from subplans.sinks.live import LiveView
from subplans.sinks.plan_progress import PlanProgress
from subplans.sinks.tagged_output import OutputMode, TaggedOutput

from .conftest import command_env
from .log_headers import attempts

#: A nested plan whose one command always fails, run three times as a whole.
ALWAYS_FAILS = """
    name: outer
    steps:
      - name: s
        subplans:
          - name: inner
            retries: 2
            plan:
              name: inner
              steps:
                - name: t
                  run: "echo hi; exit 1"
    """

#: The same, its command failing only on the first attempt of its nested plan.
FAILS_ONCE = """
    name: outer
    steps:
      - name: s
        retries: 2
        subplans:
          - name: inner
            plan:
              name: inner
              steps:
                - name: t
                  run: "test -e flag || { touch flag; exit 1; }"
    """

#: A nested plan of two steps whose second fails until the file ``ok`` exists.
SECOND_STEP_FAILS = """
    name: outer
    steps:
      - name: s
        subplans:
          - name: inner
            retries: 1
            plan:
              name: inner
              steps:
                - name: a
                  run: "echo a"
                - name: b
                  run: "echo b; test -e ok"
    """


def subplans(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The ``subplans`` command, a real process, run in ``folder`` (its store there too)."""
    return subprocess.run(
        [sys.executable, "-m", "subplans", *args],
        cwd=folder,
        env=command_env(SUBPLANS_CONFIG=str(folder / "no-config.yaml")),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def plan_in(folder: Path, text: str) -> Path:
    path = folder / "plan.yaml"
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


def log_of(folder: Path, name: str) -> str:
    (run_dir,) = (folder / ".subplans" / "runs").iterdir()
    return (run_dir / "logs" / f"{name}.log").read_text()


def failure_rows(summary: str) -> list[str]:
    """The ids of the failure table's rows, in order."""
    lines = summary.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("  failed subplan"))
    return [
        line.split()[0] for line in lines[start + 1 :] if line.startswith("  ") and line[2] != " "
    ]


def status_json(folder: Path, *args: str) -> Any:
    done = subplans(folder, "status", "latest", "--json", *args)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_the_summary_counts_each_subplan_once_and_lists_its_last_failure(tmp_path: Path) -> None:
    plan_in(tmp_path, ALWAYS_FAILS)
    done = subplans(tmp_path, "run", "plan.yaml", "-q")
    assert done.returncode == 1, done.stderr
    assert "  subplans  2 total, 0 completed, 2 failed\n" in done.stdout
    assert failure_rows(done.stdout) == ["s/inner/t", "s/inner"]
    assert "+" not in done.stdout  # no "+N more failed"


def test_each_attempt_of_a_nested_plan_names_it_in_the_log_header(tmp_path: Path) -> None:
    plan_in(tmp_path, ALWAYS_FAILS)
    assert subplans(tmp_path, "run", "plan.yaml", "-q").returncode == 1
    log = log_of(tmp_path, "s__inner__t")
    assert attempts(log) == ["1", "1 (in s/inner attempt 2)", "1 (in s/inner attempt 3)"]
    assert "(resumed)" not in log
    assert log.count("hi\n") == 3


def test_the_header_names_every_nested_plan_run_again_outermost_first(tmp_path: Path) -> None:
    plan_in(
        tmp_path,
        """
        name: outer
        steps:
          - name: s
            subplans:
              - name: a
                retries: 1
                plan:
                  name: a
                  steps:
                    - name: x
                      subplans:
                        - name: b
                          retries: 1
                          plan:
                            name: b
                            steps:
                              - name: c
                                run: "exit 3"
        """,
    )
    done = subplans(tmp_path, "run", "plan.yaml", "-q")
    assert done.returncode == 1
    assert "  subplans  3 total, 0 completed, 3 failed\n" in done.stdout
    assert failure_rows(done.stdout) == ["s/a/x/b/c", "s/a/x/b", "s/a"]
    assert attempts(log_of(tmp_path, "s__a__x__b__c")) == [
        "1",
        "1 (in s/a/x/b attempt 2)",
        "1 (in s/a attempt 2)",
        "1 (in s/a attempt 2, s/a/x/b attempt 2)",
    ]


def test_log_header_wording() -> None:
    started = 1796022001.1239
    assert log_header(1, started, within="s/inner attempt 2") == (
        "--- attempt 1 (in s/inner attempt 2), started 2026-11-30T07:00:01.123Z ---\n"
    )
    # A nested plan run again in a resumed run: its attempt is what tells the log's reader.
    assert log_header(1, started, resumed=True, within="s/inner attempt 2").startswith(
        "--- attempt 1 (in s/inner attempt 2), "
    )


def test_the_jsonl_stream_has_every_attempt_and_ends_with_the_plan(tmp_path: Path) -> None:
    plan_in(tmp_path, ALWAYS_FAILS)
    done = subplans(tmp_path, "run", "plan.yaml", "-q", "--events-jsonl", "events.jsonl")
    assert done.returncode == 1
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    inner = [
        (e["previous"], e["state"], e["attempt"])
        for e in events
        if e["event"] == "subplan_state_changed" and e["subplan_id"] == "s/inner/t"
    ]
    # The state machine once per attempt of its nested plan: each begins at pending again.
    assert inner == [(None, "pending", 0), ("pending", "running", 1), ("running", "failed", 1)] * 3
    outer = [
        e for e in events if e["event"] == "subplan_state_changed" and e["subplan_id"] == "s/inner"
    ]
    assert (outer[-1]["state"], outer[-1]["attempt"]) == ("failed", 3)
    assert events[-1]["event"] == "plan_finished"
    assert (events[-1]["plan_id"], events[-1]["state"]) == ("", "failed")


def test_status_counts_the_store_rows_once(tmp_path: Path) -> None:
    plan_in(tmp_path, ALWAYS_FAILS)
    assert subplans(tmp_path, "run", "plan.yaml", "-q").returncode == 1
    status = status_json(tmp_path)
    assert status["counts"]["failed"] == 2
    assert sum(status["counts"].values()) == 2
    assert [(f["id"], f["attempts"]) for f in status["failures"]] == [
        ("s/inner/t", 1),  # its attempts in the last attempt of its nested plan
        ("s/inner", 3),
    ]
    text = subplans(tmp_path, "status").stdout
    assert "  subplans     2 total: 2 failed\n" in text
    listed = status_json(tmp_path, "--subplans")["subplans"]
    assert [(s["id"], s["state"]) for s in listed] == [
        ("s/inner", "failed"),
        ("s/inner/t", "failed"),
    ]


def test_a_subplan_that_succeeds_in_the_next_attempt_is_no_failure(tmp_path: Path) -> None:
    plan_in(tmp_path, FAILS_ONCE)  # retries on the step: the nested plan's, as a whole
    done = subplans(tmp_path, "run", "plan.yaml", "-q")
    assert done.returncode == 0, done.stdout
    assert "  subplans  2 total, 2 completed, 0 failed\n" in done.stdout
    assert "failed subplan" not in done.stdout
    assert attempts(log_of(tmp_path, "s__inner__t")) == ["1", "1 (in s/inner attempt 2)"]
    status = status_json(tmp_path)
    assert status["counts"]["completed"] == 2
    assert sum(status["counts"].values()) == 2
    assert status["failures"] == []


def test_resume_runs_again_what_did_not_complete_in_the_last_attempt(tmp_path: Path) -> None:
    plan_in(tmp_path, SECOND_STEP_FAILS)
    first = subplans(tmp_path, "run", "plan.yaml", "-q")
    assert first.returncode == 1
    assert "  subplans  3 total, 1 completed, 2 failed\n" in first.stdout
    assert failure_rows(first.stdout) == ["s/inner/b", "s/inner"]
    (tmp_path / "ok").touch()
    resumed = subplans(tmp_path, "resume", "latest", "-q")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    # s/inner/a completed (in each attempt of its nested plan): never run again.
    assert "  subplans  3 total, 2 completed, 0 failed, 1 already completed\n" in resumed.stdout
    assert attempts(log_of(tmp_path, "s__inner__a")) == ["1", "1 (in s/inner attempt 2)"]
    assert attempts(log_of(tmp_path, "s__inner__b")) == [
        "1",
        "1 (in s/inner attempt 2)",
        "1 (resumed)",
    ]
    status = status_json(tmp_path)
    assert status["counts"]["completed"] == 3
    assert sum(status["counts"].values()) == 3


def test_a_resume_whose_nested_plan_runs_again_counts_the_skipped_once(tmp_path: Path) -> None:
    plan_in(tmp_path, SECOND_STEP_FAILS)
    assert subplans(tmp_path, "run", "plan.yaml", "-q").returncode == 1
    resumed = subplans(tmp_path, "resume", "latest", "-q")
    assert resumed.returncode == 1
    assert "  subplans  3 total, 0 completed, 2 failed, 1 already completed\n" in resumed.stdout
    assert failure_rows(resumed.stdout) == ["s/inner/b", "s/inner"]
    assert attempts(log_of(tmp_path, "s__inner__b")) == [
        "1",
        "1 (in s/inner attempt 2)",
        "1 (resumed)",
        "1 (in s/inner attempt 2)",
    ]


@pytest.mark.parametrize("mode", ["tag", "group"])
def test_tagged_output_shows_each_attempt_once(tmp_path: Path, mode: str) -> None:
    plan_in(tmp_path, ALWAYS_FAILS)
    done = subplans(tmp_path, "run", "plan.yaml", "-q", "--output", mode)
    assert done.returncode == 1
    tagged = [line for line in done.stdout.splitlines() if line.startswith("[s/inner/t] ")]
    assert [line.split(", started")[0] for line in tagged] == [
        "[s/inner/t] hi",
        "[s/inner/t] --- attempt 1 (in s/inner attempt 2)",
        "[s/inner/t] hi",
        "[s/inner/t] --- attempt 1 (in s/inner attempt 3)",
        "[s/inner/t] hi",
    ]


def test_a_step_that_fails_by_itself_then_runs_is_no_error(tmp_path: Path) -> None:
    """The nested plan's first step fails by itself (its source) in the first attempt, and its
    second step is skipped; the next attempt runs both: nothing failed, nothing is not run."""
    plan_in(tmp_path, SOURCE_FAILS_ONCE)
    done = subplans(tmp_path, "run", "plan.yaml", "-q")
    assert done.returncode == 0, done.stdout
    assert "  subplans  4 total, 4 completed, 0 failed\n" in done.stdout
    assert "error" not in done.stdout


async def test_the_live_view_counts_a_cancelled_subplan_by_its_last_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fail-fast in the nested plan's first attempt cancels ``later`` before it started; the
    second attempt completes both: nothing is shown cancelled or failed."""
    monkeypatch.chdir(tmp_path)
    path = plan_in(
        tmp_path,
        """
        name: outer
        steps:
          - name: s
            subplans:
              - name: inner
                retries: 1
                plan:
                  name: inner
                  steps:
                    - name: t
                      max_parallel: 1
                      subplans:
                        - {name: quick, run: "test -e flag || { touch flag; exit 1; }"}
                        - {name: later, run: "echo later"}
        """,
    )
    plan = load_plan(path)
    bus = EventBus()
    now = [0.0]
    reporter = ProgressReporter(bus, clock=lambda: now[0])
    progress = PlanProgress(plan)
    bus.subscribe(progress)
    console = Console(file=io.StringIO(), force_terminal=True, width=100, color_system=None)
    view = LiveView(console, reporter, progress, run_id="R", clock=lambda: now[0])
    bus.subscribe(view)
    events: list[Event] = []
    bus.subscribe(events.append)
    result = await PlanExecutor(plan, bus=bus, state_dir=tmp_path / "state").run()
    assert result.state == "completed"
    ends = [
        (e.state, is_cancellation(e.error))
        for e in events
        if isinstance(e, SubplanStateChanged) and e.subplan_id == "s/inner/t/later"
    ]
    first, second = ends[:2], ends[2:]
    assert first == [("pending", False), ("failed", True)]  # cancelled before it started
    assert second == [("pending", False), ("running", False), ("completed", False)]
    snapshot = reporter.snapshot()
    assert snapshot.counts[SubplanExecutionState.COMPLETED] == 3
    assert snapshot.total == 3
    assert snapshot.failures == ()
    assert view.cancelled == 0
    assert progress.known_total(snapshot.total) == 3
    shown = io.StringIO()
    Console(file=shown, force_terminal=True, width=100, color_system=None).print(view.render())
    assert "pending 0   running 0   completed 3   failed 0\n" in shown.getvalue()
    assert "cancelled" not in shown.getvalue()


def test_a_step_skipped_by_a_later_attempt_keeps_what_its_subplans_did(tmp_path: Path) -> None:
    """``inner1``'s second step is skipped in both attempts: not run, counted once. ``inner2``'s
    second step failed in the first attempt and is skipped in the second: its subplan's last
    state is that failure (the store's row says so too), not "not run"."""
    plan_in(tmp_path, SKIPPED_BY_A_LATER_ATTEMPT)
    done = subplans(tmp_path, "run", "plan.yaml", "-q")
    assert done.returncode == 1
    assert "  subplans  6 total, 0 completed, 5 failed, 1 not run\n" in done.stdout
    assert sorted(failure_rows(done.stdout)) == [
        "s/inner1",
        "s/inner1/a1",
        "s/inner2",
        "s/inner2/a2",
        "s/inner2/b2",
    ]
    counts = status_json(tmp_path)["counts"]
    assert (counts["failed"], counts["pending"], sum(counts.values())) == (5, 1, 6)


SKIPPED_BY_A_LATER_ATTEMPT = """
    name: outer
    steps:
      - name: s
        failure_mode: continue_on_error
        subplans:
          - name: inner1
            retries: 1
            plan:
              name: inner1
              steps:
                - {name: a1, run: "exit 1"}
                - {name: b1, run: "echo b1"}
          - name: inner2
            retries: 1
            plan:
              name: inner2
              steps:
                - {name: a2, run: "test -e f && exit 1; touch f"}
                - {name: b2, run: "exit 1"}
    """

SOURCE_FAILS_ONCE = """
    name: outer
    steps:
      - name: s
        subplans:
          - name: inner
            retries: 1
            plan:
              name: inner
              steps:
                - name: t
                  for_each: {command: "test -e f || { touch f; exit 3; }; echo x; echo y"}
                  subplan: {run: "echo {item}"}
                - name: u
                  run: "echo u"
    """


@pytest.mark.parametrize(
    ("text", "skip", "expected"),
    [
        # (completed, failed, known total, in skipped steps, already completed, step errors)
        (SECOND_STEP_FAILS, (), (1, 2, 3, 0, 0, 0)),
        (SECOND_STEP_FAILS, ("s/inner/a",), (0, 2, 3, 0, 1, 0)),  # a resume: a skipped twice
        (SKIPPED_BY_A_LATER_ATTEMPT, (), (0, 5, 6, 1, 0, 0)),
        (SOURCE_FAILS_ONCE, (), (4, 0, 4, 0, 0, 0)),
    ],
)
async def test_the_views_follow_each_subplan_and_step_by_its_last_state(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    text: str,
    skip: tuple[str, ...],
    expected: tuple[int, ...],
) -> None:
    monkeypatch.chdir(tmp_path)
    plan = load_plan(plan_in(tmp_path, text))
    bus = EventBus()
    reporter = ProgressReporter(bus)
    progress = PlanProgress(plan, completed=skip)
    bus.subscribe(progress)
    await PlanExecutor(plan, bus=bus, state_dir=tmp_path / "state", skip=skip).run()
    snapshot = reporter.snapshot()
    counts = snapshot.counts
    assert (
        counts[SubplanExecutionState.COMPLETED],
        counts[SubplanExecutionState.FAILED],
        progress.known_total(snapshot.total),
        progress.skipped,
        progress.resumed,
        len(progress.step_errors),
    ) == expected
    assert len(snapshot.failures) == counts[SubplanExecutionState.FAILED]
    assert len({f.subplan_id for f in snapshot.failures}) == len(snapshot.failures)


@pytest.mark.parametrize("mode", [OutputMode.TAG, OutputMode.GROUP])
async def test_a_tagged_output_goes_on_where_the_last_attempt_ended(
    tmp_path: Path, mode: OutputMode
) -> None:
    """In this process: a nested plan run again shows its commands' new output only, under
    its header; the earlier attempt's last line, without its end, gets one first."""
    plan = load_plan(
        plan_in(tmp_path, ALWAYS_FAILS.replace('"echo hi; exit 1"', '"printf hi; exit 1"'))
    )
    bus = EventBus()
    executor = PlanExecutor(plan, bus=bus, state_dir=tmp_path / "state")
    stream = io.StringIO()
    output = TaggedOutput(mode, stream, log_dir=executor.run_dir / "logs")
    bus.subscribe(output)
    output.start()
    await executor.run()
    output.close()
    assert [line.split(", started")[0] for line in stream.getvalue().splitlines()] == [
        "[s/inner/t] hi",
        "[s/inner/t] --- attempt 1 (in s/inner attempt 2)",
        "[s/inner/t] hi",
        "[s/inner/t] --- attempt 1 (in s/inner attempt 3)",
        "[s/inner/t] hi",
    ]
