"""What ``runs``, ``status`` and ``events`` print, from a store filled by hand with a fixed clock:
the text layouts, the JSON of a live run, and following a run's events until it ends."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from subplans.cli.reports import MAX_LISTED, StatusReport, counts_text, run_lines, write_events
from subplans.engine.events import PlanFinished, PlanStarted, SubplanStateChanged
from subplans.engine.states import PlanState, SubplanExecutionState
from subplans.store import PlanManifest, RunStore

from .store_support import manifest

PENDING = SubplanExecutionState.PENDING
RUNNING = SubplanExecutionState.RUNNING
COMPLETED = SubplanExecutionState.COMPLETED

#: 2026-11-28 00:04:53 UTC
T0 = 1_795_824_293.0


@pytest.fixture
def store(tmp_path: Path) -> Iterator[RunStore]:
    now = iter([T0 + 100.0] * 100)
    with RunStore.open(tmp_path / "state.db", clock=lambda: next(now)) as opened:
        yield opened


def record(store: RunStore, run_id: str, *events: object) -> None:
    with store.recorder(run_id) as recorder:
        for event in events:
            recorder.handle(event)  # type: ignore[arg-type]


def test_counts_text_shows_the_states_that_have_subplans() -> None:
    assert counts_text({"pending": 2, "running": 0, "completed": 3, "failed": 1}) == (
        "6 total: 3 completed, 1 failed, 2 pending"
    )
    assert counts_text({"pending": 0}) == "0 total"


def test_a_run_that_has_not_ended_has_no_duration(store: RunStore) -> None:
    store.start_run("r1", manifest("s/a", "s/b"), started_at=T0)

    assert run_lines(store.list_runs()) == [
        "run  status   started (UTC)        took  subplans            plan",
        "r1   running  2026-11-28 00:04:53     -  2 total: 2 pending  plan",
    ]


def test_a_live_run_lists_its_running_subplans_longest_first_and_counts_the_rest(
    store: RunStore,
) -> None:
    ids = [f"s/{n:02d}" for n in range(MAX_LISTED + 2)]
    store.start_run("r1", manifest(*ids), started_at=T0)
    record(
        store,
        "r1",
        *(
            SubplanStateChanged(subplan_id, PENDING, RUNNING, 1, time=T0 + n)
            for n, subplan_id in enumerate(ids)
        ),
    )
    store.resume_run("r1")  # resumed once: every one of them runs again
    record(
        store,
        "r1",
        *(
            SubplanStateChanged(subplan_id, PENDING, RUNNING, 1, time=T0 + n)
            for n, subplan_id in enumerate(ids)
        ),
    )
    run = store.get_run("r1")

    report = StatusReport.collect(store, run)

    lines = report.lines()
    assert lines[:4] == [
        "run r1  running",
        "  plan         plan  (plan.yaml)",
        f"  started      2026-11-28 00:04:53 UTC by {run.owner}, resumed 1 time",
        "  subplans     12 total: 12 running",
    ]
    assert lines[4:] == [
        "  steps        step pending",
        "  running      s/00  1m40s",
        *(f"               s/{n:02d}  1m{40 - n}s" for n in range(1, MAX_LISTED)),
        "               +2 more",
    ]
    data = report.to_dict()
    assert [s["id"] for s in data["running"]] == ids
    assert data["running"][0]["elapsed"] == 100.0
    assert data["interrupted"] == []
    assert data["steps"] == [
        {
            "id": "step",
            "state": "pending",
            "total": 0,
            "started_at": None,
            "finished_at": None,
            "error": None,
            "items": None,
            "shown_state": "pending",
        }
    ]


def test_resumes_are_counted_in_the_plural(store: RunStore) -> None:
    store.start_run("r1", manifest("s/a"), started_at=T0)
    store.resume_run("r1")
    store.resume_run("r1")

    lines = StatusReport.collect(store, store.get_run("r1")).lines()

    assert lines[2].endswith(", resumed 2 times")


def test_a_failure_without_a_message_or_a_log_still_reads(store: RunStore) -> None:
    store.start_run("r1", manifest("s/a"), started_at=T0)
    failed = SubplanExecutionState.FAILED
    record(
        store,
        "r1",
        SubplanStateChanged("s/a", PENDING, RUNNING, 1, time=T0),
        SubplanStateChanged("s/a", RUNNING, failed, 1, error=KeyError(), time=T0 + 1),
    )

    lines = StatusReport.collect(store, store.get_run("r1")).lines()

    assert "  failed       s/a  KeyError" in lines


def test_following_a_live_run_writes_every_event_until_it_ends(store: RunStore) -> None:
    store.start_run("r1", manifest("s/a"))  # owned by this process: live
    record(store, "r1", PlanStarted("", "plan", "plan.yaml", "r1", 1))
    written: list[str] = []
    naps: list[float] = []

    def sleep(seconds: float) -> None:
        # The run goes on while the follower waits: its end is what stops the follower.
        naps.append(seconds)
        if len(naps) == 1:
            record(store, "r1", SubplanStateChanged("s/a", PENDING, RUNNING, 1))
        else:
            record(
                store,
                "r1",
                SubplanStateChanged("s/a", RUNNING, COMPLETED, 1),
                PlanFinished("", PlanState.COMPLETED, 1.0),
            )

    count = write_events(store, "r1", written.append, follow=True, poll=0.25, sleep=sleep)

    events = [json.loads(line) for chunk in written for line in chunk.splitlines()]
    assert count == len(events) == 4
    assert [e["seq"] for e in events] == [1, 2, 3, 4]
    assert [e["event"] for e in events][-1] == "plan_finished"
    assert naps == [0.25, 0.25]
    assert store.get_run("r1").status == "completed"


def test_without_follow_the_events_so_far_are_written_once(store: RunStore) -> None:
    store.start_run("r1", manifest("s/a"))
    record(store, "r1", PlanStarted("", "plan", "plan.yaml", "r1", 1))
    written: list[str] = []

    def sleep(seconds: float) -> None:
        raise AssertionError("no waiting without --follow")

    assert write_events(store, "r1", written.append, sleep=sleep) == 1
    assert json.loads(written[0])["event"] == "plan_started"


def test_a_run_without_steps_or_a_known_owner(store: RunStore) -> None:
    store.start_run("r1", PlanManifest(file="p.yaml"), started_at=T0)
    store._db.execute("UPDATE runs SET owner_pid = NULL WHERE id = 'r1'")

    lines = StatusReport.collect(store, store.get_run("r1")).lines()

    assert lines == [
        "run r1  running",
        "  plan           (p.yaml)",
        "  started      2026-11-28 00:04:53 UTC",
        "  subplans     0 total",
    ]
