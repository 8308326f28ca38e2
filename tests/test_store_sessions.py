"""``RunStore.active_time``: how long a run was running, summed over its sessions (its start and
each resume), from the events the store keeps; with a fixed clock and events recorded through
the real recorder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from subplans.engine.events import PlanFinished, PlanStarted, SubplanStateChanged
from subplans.engine.states import PlanState, SubplanExecutionState
from subplans.store import RunStore

from .store_support import gone_owner, manifest

#: 2026-11-28 00:04:53 UTC
T0 = 1_795_824_293.0
#: The store's clock: "now".
NOW = T0 + 100.0


@pytest.fixture
def store(tmp_path: Path) -> Iterator[RunStore]:
    with RunStore.open(tmp_path / "state.db", clock=lambda: NOW) as opened:
        yield opened


def record(store: RunStore, *events: object) -> None:
    with store.recorder("r1") as recorder:
        for event in events:
            recorder.handle(event)  # type: ignore[arg-type]


def started(at: float) -> PlanStarted:
    return PlanStarted("", "plan", "plan.yaml", "r1", 1, time=at)


def finished(state: PlanState, at: float) -> PlanFinished:
    return PlanFinished("", state, 1.0, time=at)


def ran(subplan_id: str, at: float) -> SubplanStateChanged:
    pending, running = SubplanExecutionState.PENDING, SubplanExecutionState.RUNNING
    return SubplanStateChanged(subplan_id, pending, running, 1, time=at)


def active(store: RunStore) -> float | None:
    return store.active_time(store.get_run("r1"))


def test_a_resumed_run_sums_its_sessions_not_the_time_between_them(store: RunStore) -> None:
    store.start_run("r1", manifest("s/a"), started_at=T0)
    record(store, started(T0 + 1), finished(PlanState.FAILED, T0 + 10))
    store.resume_run("r1")
    record(store, started(T0 + 50), finished(PlanState.COMPLETED, T0 + 60))

    run = store.get_run("r1")

    assert run.duration == 60.0
    assert store.active_time(run) == 10.0 + 10.0


def test_a_killed_session_ends_at_its_last_event_and_a_live_one_now(store: RunStore) -> None:
    store.start_run("r1", manifest("s/a", "s/b"), owner=gone_owner(), started_at=T0)
    nested = PlanStarted("s/a", "inner", "inner.yaml", "r1", 1, time=T0 + 2)  # not a session
    record(store, started(T0 + 1), nested, ran("s/a", T0 + 5))
    # The skip a resume records (--skip-unknown) is the resume's, not the killed session's.
    store.resume_run("r1", assume_completed=["s/a"])
    record(store, started(T0 + 50), ran("s/b", T0 + 51))

    assert store.get_run("r1").status == "running"
    assert active(store) == 5.0 + (NOW - (T0 + 50))


def test_a_session_killed_as_it_started_ends_at_its_start(store: RunStore) -> None:
    store.start_run("r1", manifest("s/a"), owner=gone_owner(), started_at=T0)
    record(store, started(T0 + 1))
    store.resume_run("r1")
    record(store, started(T0 + 50), finished(PlanState.COMPLETED, T0 + 52))

    assert active(store) == 1.0 + 2.0


def test_a_resumed_run_without_its_plans_start_is_timed_from_its_row(store: RunStore) -> None:
    store.start_run("r1", manifest("s/a"), owner=gone_owner(), started_at=T0)
    store.resume_run("r1", owner=gone_owner())

    assert store.get_run("r1").status == "interrupted"
    assert active(store) is None
    record(store, ran("s/a", T0 + 7))
    assert active(store) == 7.0


def test_a_run_of_one_session(store: RunStore) -> None:
    store.start_run("r1", manifest("s/a"), started_at=T0)

    assert active(store) == NOW - T0  # it runs: up to now
    store.finish_run("r1", "completed", finished_at=T0 + 30)
    assert active(store) == 30.0


def test_run_ids_by_their_start_newest_first(store: RunStore) -> None:
    store.start_run("r1", manifest("s/a"), started_at=T0, concurrent=True)
    store.start_run("r2", manifest("s/a"), started_at=T0 + 1, concurrent=True)
    store.start_run("x1", manifest("s/a"), started_at=T0 + 2, concurrent=True)

    assert store.run_ids() == ["x1", "r2", "r1"]
    assert store.run_ids("r") == ["r2", "r1"]
    assert store.run_ids("r1") == ["r1"]
    assert store.run_ids("q") == []
