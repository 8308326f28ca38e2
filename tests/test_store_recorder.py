"""RunRecorder with real SQLite files: every event lands in order, in batches written off the
event loop, with terminal states committed before flush() returns; real dispatches and real
plan runs with commands feed it."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest

from subplans import (
    EventBus,
    FailureMode,
    ParallelExecutionConfig,
    ParallelSubplanDispatcher,
    Subplan,
    SubplanExecutionState,
    SubplanStateChanged,
)
from subplans.engine.errors import CommandFailedError, SubplanError
from subplans.engine.events import Event, SubplanProcessStarted, SubplanRetrying
from subplans.execution.executor import PlanExecutor
from subplans.store import (
    PlanManifest,
    RecorderSettings,
    RecorderStatistics,
    RunRecorder,
    RunStore,
    StoreError,
)
from subplans.store.liveness import process_start_time

from .conftest import Recorder, wait_until
from .log_headers import unheaded
from .process_helpers import eventually
from .store_support import load, manifest, open_store

PENDING = SubplanExecutionState.PENDING
RUNNING = SubplanExecutionState.RUNNING
COMPLETED = SubplanExecutionState.COMPLETED
FAILED = SubplanExecutionState.FAILED


@pytest.fixture
def store(tmp_path: Path) -> Iterator[RunStore]:
    opened = open_store(tmp_path)
    yield opened
    opened.close()


def as_published(store: RunStore, run_id: str) -> list[dict[str, Any]]:
    """The stored events as their to_dict() was when published (less run_id, which every
    stored event has)."""
    found = []
    for event in store.events(run_id):
        data = event.to_dict()
        del data["run_id"], data["seq"]
        found.append(data)
    return found


def published_dicts(recorder: Recorder) -> list[dict[str, Any]]:
    return [
        {key: value for key, value in event.to_dict().items() if key != "run_id"}
        for event in recorder.events
    ]


def row(store: RunStore, run_id: str, subplan_id: str) -> dict[str, Any]:
    db = sqlite3.connect(store.path)
    db.row_factory = sqlite3.Row
    found = db.execute(
        "SELECT * FROM subplans WHERE run_id = ? AND subplan_id = ?", (run_id, subplan_id)
    ).fetchone()
    db.close()
    assert found is not None
    return dict(found)


async def noop() -> None:
    await asyncio.sleep(0)


async def boom() -> None:
    await asyncio.sleep(0)
    raise ValueError("boom")


# --- a real dispatch --------------------------------------------------------------------------


async def test_a_dispatch_lands_in_order_with_terminal_states_after_flush(
    store: RunStore,
) -> None:
    bus = EventBus()
    published = Recorder(bus)
    ids = [f"mod/{i}" for i in range(300)]
    store.start_run("r1", manifest(*ids))
    recorder = store.recorder("r1", bus=bus)
    config = ParallelExecutionConfig(max_parallel=8, failure_mode=FailureMode.CONTINUE_ON_ERROR)
    subplans = [Subplan(i, boom if i.endswith("7") else noop) for i in ids]
    with pytest.raises(ExceptionGroup):
        await ParallelSubplanDispatcher(config, bus=bus).run(subplans, name="step")
    await recorder.flush()

    stored = store.events("r1")
    assert [e.seq for e in stored] == list(range(1, bus.published + 1))
    assert as_published(store, "r1") == published_dicts(published)
    assert bus.subscriber_errors == 0
    run = store.get_run("r1")
    assert run.counts == {
        "pending": 0,
        "running": 0,
        "completed": 270,
        "failed": 30,
        "interrupted": 0,
    }
    failed = row(store, "r1", "mod/17")
    assert failed["state"] == "failed"
    assert failed["attempts"] == 1
    assert json.loads(failed["error"]) == {"type": "ValueError", "message": "boom"}
    assert failed["started"] <= failed["finished"]
    assert failed["exit_code"] is None
    stats = recorder.statistics()
    assert stats.written == bus.published
    assert stats.pending == 0
    assert stats.dropped == 0
    assert stats.durable_batches >= 1
    assert stats.batches <= stats.written
    await recorder.aclose()
    assert recorder.failure is None


async def test_without_a_manifest_rows_appear_from_the_events(store: RunStore) -> None:
    bus = EventBus()
    async with store.recorder("bare", bus=bus) as recorder:
        await ParallelSubplanDispatcher(bus=bus).run([Subplan("a", noop), Subplan("b", noop)])
    assert repr(recorder).startswith("<RunRecorder run bare closed: ")
    assert [s.state for s in store.subplans("bare")] == ["completed", "completed"]
    assert store.events("bare")[0].kind == "dispatch_started"
    assert store.events("bare")[0].step_id is None


async def test_a_retrying_subplan_counts_its_attempts_while_it_runs(store: RunStore) -> None:
    bus = EventBus()
    store.start_run("r1", manifest("flaky"))
    recorder = store.recorder("r1", bus=bus)
    retried, gate, attempts = asyncio.Event(), asyncio.Event(), []

    async def flaky() -> str:
        attempts.append(1)
        if len(attempts) == 1:
            raise RuntimeError("first try")
        retried.set()
        await gate.wait()
        return "done"

    task = asyncio.create_task(
        ParallelSubplanDispatcher(bus=bus).run([Subplan("flaky", flaky, retries=2, retry_delay=0)])
    )
    await retried.wait()
    await recorder.flush()
    assert (row(store, "r1", "flaky")["state"], row(store, "r1", "flaky")["attempts"]) == (
        "running",
        2,
    )
    gate.set()
    await task
    await recorder.aclose()
    assert (row(store, "r1", "flaky")["state"], row(store, "r1", "flaky")["attempts"]) == (
        "completed",
        2,
    )
    kinds = [e.kind for e in store.events("r1")]
    assert "subplan_retrying" in kinds


@pytest.mark.parametrize(
    "subplan_id",
    ['quote"d', "back\\slash", "tab\tnew\nline", "ünïcödé/模块", "\x01control", "emoji 🎉"],
)
async def test_the_fast_payload_is_the_events_own_json(store: RunStore, subplan_id: str) -> None:
    events: list[Event] = [
        SubplanStateChanged(subplan_id, None, PENDING),
        SubplanStateChanged(subplan_id, PENDING, RUNNING, 1),
        SubplanStateChanged(subplan_id, RUNNING, FAILED, 3, CommandFailedError("x", exit_code=2)),
    ]
    with store.recorder("r1") as recorder:
        for event in events:
            recorder.handle(event)
    assert as_published(store, "r1") == [e.to_dict() for e in events]
    assert row(store, "r1", subplan_id)["exit_code"] == 2


# --- a real plan with commands: process groups, logs, exit codes, steps, the run's end -------

GATED_PLAN = """
name: gated
steps:
  - name: work
    failure_mode: continue_on_error
    subplans:
      - name: waits
        run: "while [ ! -e go ]; do sleep 0.01; done; echo out"
      - name: fails
        run: "echo bad; exit 3"
  - name: after
    always: true
    subplans:
      - name: nested
        plan:
          steps:
            - {name: inner, run: "true"}
"""


async def test_a_plan_run_records_groups_logs_exit_codes_steps_and_its_end(
    tmp_path: Path, store: RunStore
) -> None:
    plan = load(tmp_path, GATED_PLAN)
    bus = EventBus()
    published = Recorder(bus)
    executor = PlanExecutor(plan, bus=bus, state_dir=tmp_path / "state")
    store.start_run(executor.run_id, PlanManifest.from_plan(plan), run_dir=executor.run_dir)
    recorder = store.recorder(executor.run_id, bus=bus)
    task = asyncio.create_task(executor.run())

    def started() -> list[SubplanProcessStarted]:
        return [e for e in published.of(SubplanProcessStarted) if e.subplan_id == "work/waits"]

    # The command may touch its file before its start is published: wait for the event.
    await eventually(started, timeout=20)
    await recorder.flush()
    waiting = row(store, executor.run_id, "work/waits")
    (process,) = started()
    assert waiting["state"] == "running"
    assert waiting["pgid"] == process.pid
    assert waiting["pgid_start"] == process_start_time(process.pid)
    assert waiting["log_file"] == str(Path(process.log_file).absolute())
    assert store.process_groups(executor.run_id)[0].pgid == process.pid
    (tmp_path / "go").touch()
    result = await task
    await recorder.flush()

    assert result.state == "failed"
    run = store.get_run(executor.run_id)
    assert (run.status, run.finished_at is not None) == ("failed", True)
    done = row(store, executor.run_id, "work/waits")
    assert (done["state"], done["exit_code"], done["pgid"]) == ("completed", 0, None)
    failed = row(store, executor.run_id, "work/fails")
    assert (failed["state"], failed["exit_code"]) == ("failed", 3)
    assert json.loads(failed["error"])["log_file"] == failed["log_file"]
    assert store.log_file(executor.run_id, "work/fails") == Path(failed["log_file"])
    assert unheaded(Path(failed["log_file"]).read_text()) == "bad\n"
    assert [(f.subplan_id, f.exit_code) for f in store.failures(executor.run_id)] == [
        ("work/fails", 3)
    ]
    assert store.process_groups(executor.run_id) == []
    steps = {s.step_id: s for s in store.steps(executor.run_id)}
    assert steps["work"].state == "failed"
    assert steps["work"].error is not None
    assert steps["after"].state == "completed"
    assert steps["after/nested/inner"].state == "completed"
    nested = [e for e in store.events(executor.run_id) if e.kind == "plan_started"]
    assert [e.subplan_id for e in nested] == [None, "after/nested"]
    assert as_published(store, executor.run_id) == published_dicts(published)
    await recorder.aclose()


async def test_a_cancelled_plan_run_is_recorded_as_cancelled(
    tmp_path: Path, store: RunStore
) -> None:
    plan = load(tmp_path, 'name: c\nsteps: [{name: s, run: "touch started; sleep 30"}]\n')
    bus = EventBus()
    executor = PlanExecutor(plan, bus=bus, state_dir=tmp_path / "state")
    store.start_run(executor.run_id, manifest("s"))
    recorder = store.recorder(executor.run_id, bus=bus)
    task = asyncio.create_task(executor.run())
    await eventually((tmp_path / "started").exists, timeout=20)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await recorder.aclose()
    run = store.get_run(executor.run_id)
    assert run.status == "cancelled"
    assert row(store, executor.run_id, "s")["state"] == "failed"
    assert store.process_groups(executor.run_id) == []


RESUMABLE = """
name: resumable
steps:
  - name: mods
    failure_mode: continue_on_error
    for_each: [a, b, c, d]
    subplan:
      run: "echo {item} >> ran.txt; test {item} != c || test -e fixed"
  - name: last
    run: "echo last >> ran.txt"
"""


async def test_resume_skips_completed_subplans_and_numbers_events_on(
    tmp_path: Path, store: RunStore
) -> None:
    plan = load(tmp_path, RESUMABLE)
    bus = EventBus()
    first = PlanExecutor(plan, bus=bus, state_dir=tmp_path / "state")
    store.start_run(first.run_id, PlanManifest.from_plan(plan))
    async with store.recorder(first.run_id, bus=bus):
        assert (await first.run()).state == "failed"
    seen = len(store.events(first.run_id))
    done = store.completed_subplans(first.run_id)
    assert done == {"mods/a", "mods/b", "mods/d"}

    (tmp_path / "fixed").touch()
    store.resume_run(first.run_id, PlanManifest.from_plan(plan))
    assert store.get_run(first.run_id).counts["failed"] == 0  # back to pending
    bus = EventBus()
    second = PlanExecutor(plan, bus=bus, run_id=first.run_id, skip=done)
    async with store.recorder(first.run_id, bus=bus):
        assert (await second.run()).state == "completed"
    events = store.events(first.run_id)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    skipped = [e.subplan_id for e in events[seen:] if e.kind == "subplan_skipped"]
    assert skipped == ["mods/a", "mods/b", "mods/d"]
    run = store.get_run(first.run_id)
    assert (run.status, run.resumes, run.counts["completed"]) == ("completed", 1, 5)
    ran = (tmp_path / "ran.txt").read_text().split()
    assert sorted(ran) == ["a", "b", "c", "c", "d", "last"]


# --- the writer's batches ---------------------------------------------------------------------


def state_changes(n: int, prefix: str = "s") -> list[Event]:
    return [SubplanStateChanged(f"{prefix}{i}", None, PENDING) for i in range(n)]


async def test_a_flush_does_not_wait_out_the_batch_delay(store: RunStore) -> None:
    recorder = store.recorder("r1", batch_delay=60.0)
    for event in state_changes(3):
        recorder(event)
    await recorder.flush()  # the test's timeout fails this if the writer waits a minute
    assert recorder.statistics().written == 3
    recorder.close()


def test_a_lone_event_is_written_once_the_batch_delay_is_over(store: RunStore) -> None:
    recorder = store.recorder("r1", batch_delay=0.001)
    recorder.handle(SubplanStateChanged("a", None, PENDING))
    wait_until(lambda: recorder.statistics().written == 1)
    recorder.close()


async def test_many_queued_events_are_written_without_waiting(store: RunStore) -> None:
    recorder = store.recorder("r1", batch_delay=60.0)
    eager = RecorderSettings().eager
    for event in state_changes(eager + 10):
        recorder.handle(event)
    wait_until(lambda: recorder.statistics().written == eager + 10)
    recorder.close()


async def test_batches_are_capped(store: RunStore) -> None:
    recorder = store.recorder("r1", max_batch=2, batch_delay=0)
    for event in state_changes(5):
        recorder.handle(event)
    await recorder.flush()
    stats = recorder.statistics()
    assert stats.written == 5
    assert stats.largest_batch == 2
    assert stats.batches >= 3
    recorder.close()


def test_rows_go_many_per_statement_in_chunks(store: RunStore) -> None:
    with store.recorder("r1", settings=RecorderSettings(chunk=3)) as recorder:
        for event in state_changes(10):
            recorder.handle(event)
    assert [e.seq for e in store.events("r1")] == list(range(1, 11))
    assert len(store.subplans("r1")) == 10


def test_without_durability_nothing_is_fsynced(store: RunStore) -> None:
    with store.recorder("r1", durable=False) as recorder:
        recorder.handle(SubplanStateChanged("a", None, PENDING))
        recorder.handle(SubplanStateChanged("a", PENDING, FAILED))
        recorder.flush_sync()
        assert recorder.statistics().durable_batches == 0
    assert row(store, "r1", "a")["started"] is None


@dataclass(slots=True)
class Custom(Event):
    """An event kind the store does not know: stored as it is."""

    kind: ClassVar[str] = "custom"
    subplan_id: str
    detail: object

    def to_dict(self) -> dict[str, Any]:
        return {
            "event": self.kind,
            "timestamp": self.timestamp.isoformat(),
            "subplan_id": self.subplan_id,
            "detail": self.detail,
        }


def test_other_event_kinds_are_stored_as_they_are(store: RunStore) -> None:
    with store.recorder("r1") as recorder:
        recorder.handle(Custom("x", {"when": Path("/p")}))
        recorder.handle(SubplanProcessStarted("unknown", 999999999, "rel/x.log"))
        recorder.handle(SubplanRetrying("unknown", 1, RuntimeError("r"), 0.5))
    custom, _, retrying = store.events("r1")
    assert (custom.kind, custom.subplan_id, custom.payload) == (
        "custom",
        "x",
        {"subplan_id": "x", "detail": {"when": "/p"}},
    )
    unknown = row(store, "r1", "unknown")
    assert (unknown["state"], unknown["pgid"], unknown["pgid_start"]) == (
        "running",
        999999999,
        None,
    )
    assert unknown["attempts"] == 2
    assert Path(unknown["log_file"]).is_absolute()
    assert retrying.payload["delay"] == 0.5


# --- life cycle -------------------------------------------------------------------------------


def test_close_is_idempotent_and_a_closed_recorder_refuses_events(store: RunStore) -> None:
    bus = EventBus()
    recorder = store.recorder("r1", bus=bus)
    assert repr(recorder) == "<RunRecorder run r1 open: 0 written in 0 batches, 0 pending>"
    recorder.close()
    recorder.close()
    assert not bus.has_subscribers
    with pytest.raises(RuntimeError, match=r"^the recorder is closed$"):
        recorder.handle(SubplanStateChanged("a", None, PENDING))
    with pytest.raises(RuntimeError, match=r"^the recorder is closed$"):
        recorder.flush_sync()
    assert recorder.statistics() == RecorderStatistics(0, 0, 0, 0, 0, 0)


async def test_aclose_is_idempotent(store: RunStore) -> None:
    recorder = store.recorder("r1")
    await recorder.aclose()
    await recorder.aclose()
    assert "closed" in repr(recorder)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"batch_delay": -1}, r"^batch_delay must be >= 0, got -1$"),
        ({"batch_delay": float("nan")}, r"^batch_delay must be >= 0, got nan$"),
        ({"max_batch": 0}, r"^max_batch must be an integer >= 1, got 0$"),
        ({"max_batch": 2.0}, r"^max_batch must be an integer >= 1, got 2.0$"),
    ],
)
def test_options_are_checked(store: RunStore, options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RunRecorder(store.path, "r1", **options)


def test_a_store_that_cannot_be_opened_fails_at_once(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match=r"^cannot open the store .*: unable to open database"):
        RunRecorder(tmp_path / "missing" / "state.db", "r1")
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"no" * 1000)
    with pytest.raises(StoreError, match=r"^cannot open the store .*: file is not a database$"):
        RunRecorder(garbage, "r1")


def hold_write_lock(store: RunStore) -> sqlite3.Connection:
    holder = sqlite3.connect(store.path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    return holder


async def test_a_write_failure_is_logged_once_and_raised_by_flush_and_close(
    store: RunStore, caplog: pytest.LogCaptureFixture
) -> None:
    recorder = store.recorder("r1", timeout=0.01)
    holder = hold_write_lock(store)
    try:
        recorder.handle(SubplanStateChanged("a", None, PENDING))
        with (
            caplog.at_level(logging.ERROR, logger="subplans"),
            pytest.raises(StoreError, match=r"database is locked; events of run r1 are no"),
        ):
            await recorder.flush()
        recorder.handle(SubplanStateChanged("b", None, PENDING))
        with pytest.raises(StoreError):
            recorder.flush_sync()
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert recorder.failure is not None
    assert "failed" in repr(recorder)
    assert recorder.statistics().dropped == 2
    assert [r.getMessage() for r in caplog.records] == [str(recorder.failure)]
    with pytest.raises(StoreError):
        recorder.close()
    assert store.events("r1") == []
    assert issubclass(StoreError, SubplanError)


def test_a_batch_that_fails_midway_leaves_nothing_behind(store: RunStore) -> None:
    recorder = store.recorder("r1")
    recorder.handle(SubplanStateChanged("a", None, PENDING))
    recorder.flush_sync()
    # A state change without an id: its event row is fine, its subplan row is not.
    broken = SubplanStateChanged(None, None, PENDING, 0, RuntimeError("x"))  # type: ignore[arg-type]
    recorder.handle(SubplanStateChanged("b", None, PENDING))
    recorder.handle(broken)
    with pytest.raises(StoreError, match=r"NOT NULL constraint failed: subplans.subplan_id"):
        recorder.flush_sync()
    assert [e.subplan_id for e in store.events("r1")] == ["a"]
    assert recorder.statistics().dropped == 2
    with pytest.raises(StoreError):
        recorder.close()


async def test_aclose_raises_a_failure_too(store: RunStore) -> None:
    recorder = store.recorder("r1", timeout=0.01)
    holder = hold_write_lock(store)
    try:
        recorder.handle(SubplanStateChanged("a", None, PENDING))
        with pytest.raises(StoreError):
            await recorder.aclose()
    finally:
        holder.execute("ROLLBACK")
        holder.close()


async def test_a_cancelled_flush_leaves_the_writer_working(store: RunStore) -> None:
    recorder = store.recorder("r1", timeout=5.0)
    holder = hold_write_lock(store)
    recorder.handle(SubplanStateChanged("a", None, PENDING))
    flush = asyncio.create_task(recorder.flush())
    await asyncio.sleep(0)
    flush.cancel()
    with pytest.raises(asyncio.CancelledError):
        await flush
    holder.execute("ROLLBACK")  # the writer, blocked on the lock, now settles a cancelled flush
    holder.close()
    await recorder.flush()
    assert recorder.statistics().written == 1
    assert recorder.failure is None
    await recorder.aclose()


def test_a_flush_can_time_out(store: RunStore) -> None:
    recorder = store.recorder("r1", timeout=5.0)
    holder = hold_write_lock(store)
    try:
        recorder.handle(SubplanStateChanged("a", None, PENDING))
        with pytest.raises(TimeoutError):
            recorder.flush_sync(timeout=0.05)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    recorder.close()
    assert len(store.events("r1")) == 1


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("chunk", 0, r"^chunk must be an integer >= 1, got 0$"),
        ("eager", 1.5, r"^eager must be an integer >= 1, got 1.5$"),
        ("checkpoint_after", -1, r"^checkpoint_after must be an integer >= 1, got -1$"),
        ("idle", 0.0, r"^idle must be > 0, got 0.0$"),
        ("gather_tick", float("nan"), r"^gather_tick must be > 0, got nan$"),
    ],
)
def test_recorder_settings_are_checked(name: str, value: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RecorderSettings(**{name: value})


async def test_a_small_eager_setting_writes_without_waiting(store: RunStore) -> None:
    recorder = store.recorder("r1", batch_delay=60.0, settings=RecorderSettings(eager=2))
    for event in state_changes(3):
        recorder.handle(event)
    wait_until(lambda: recorder.statistics().written == 3)
    recorder.close()
