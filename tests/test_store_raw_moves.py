"""The recorder takes a dispatch's subplan moves as plain tuples (``EventBus._subscribe_raw``,
issue #10) and writes exactly what it writes for the events; a batch's subplan rows go through
statements that bind no ``None`` (running rows, rows made for pending states, ends whose start
an earlier batch wrote)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from subplans import (
    AggregateSubplanError,
    EventBus,
    FailureMode,
    ParallelExecutionConfig,
    ParallelSubplanDispatcher,
    Subplan,
    SubplanExecutionState,
)
from subplans.engine.bus import RawMove
from subplans.engine.errors import CommandFailedError
from subplans.store import PlanManifest, RunStore
from subplans.store.batch_writer import BatchWriter

PENDING = SubplanExecutionState.PENDING
RUNNING = SubplanExecutionState.RUNNING
COMPLETED = SubplanExecutionState.COMPLETED
FAILED = SubplanExecutionState.FAILED
IDS = tuple(f"s{i}" for i in range(12))
ROW = "state, attempts, started, finished, exit_code, error IS NOT NULL, pgid"


async def _noop() -> None:
    await asyncio.sleep(0)


async def _boom() -> None:
    await asyncio.sleep(0)
    raise ValueError("boom")


def _record(store: RunStore, run_id: str, *, beside: bool, lazy: bool) -> None:
    """A dispatch of ``IDS`` (every third fails) recorded into ``run_id``; ``beside``: with
    another subscriber on the bus, so that moves are published as events."""
    store.start_run(run_id, PlanManifest(file="p.yaml", subplans=tuple((i, "s") for i in IDS)))
    subplans = [Subplan(i, _boom if n % 3 == 2 else _noop) for n, i in enumerate(IDS)]
    config = ParallelExecutionConfig(max_parallel=3, failure_mode=FailureMode.CONTINUE_ON_ERROR)

    async def main() -> None:
        bus = EventBus()
        if beside:
            bus.subscribe(lambda event: None)
        recorder = store.recorder(run_id, bus=bus)
        assert bus._all_raw is not beside
        dispatcher = ParallelSubplanDispatcher(config, bus=bus)
        with pytest.raises(AggregateSubplanError):
            await dispatcher.run(iter(subplans) if lazy else subplans, name="s")
        await recorder.aclose()

    asyncio.run(main())


def _stored(store: RunStore, run_id: str) -> tuple[list[Any], list[Any]]:
    events = []
    for event in store.events(run_id):
        data = event.to_dict()
        del data["run_id"], data["timestamp"]
        data.pop("elapsed", None)  # dispatch_finished's: the two dispatches' own
        if data.get("error"):
            data["error"] = data["error"]["type"], data["error"]["message"]
        events.append(data)
    rows = [
        (s.subplan_id, s.state, s.attempts, s.started is None, s.finished is None, s.error)
        for s in store.subplans(run_id)
    ]
    return events, rows


@pytest.mark.parametrize("lazy", [False, True])
def test_moves_as_tuples_are_recorded_as_their_events(tmp_path: Path, lazy: bool) -> None:
    with RunStore.open(tmp_path / "state.db") as store:
        _record(store, "raw", beside=False, lazy=lazy)
        _record(store, "objects", beside=True, lazy=lazy)
        raw, objects = _stored(store, "raw"), _stored(store, "objects")
        assert [event["seq"] for event in raw[0]] == list(range(1, len(raw[0]) + 1))
        assert raw == objects
        assert [row[1] for row in raw[1]].count("failed") == 4
        assert all(not started and not finished for _, _, _, started, finished, _ in raw[1])


@pytest.fixture
def writer(tmp_path: Path) -> Iterator[BatchWriter]:
    with RunStore.open(tmp_path / "state.db") as store:
        store.start_run("r1", PlanManifest(file="p.yaml", subplans=(("a", "s"), ("b", "s"))))
    connection = sqlite3.connect(tmp_path / "state.db", isolation_level=None)
    yield BatchWriter(connection, "r1", chunk=2)
    connection.close()


def _move(
    subplan_id: str, previous: Any, state: Any, attempt: int, time: float, error: Any = None
) -> RawMove:
    return (time, subplan_id, previous, state, attempt, error)


def _rows(writer: BatchWriter, *batches: list[RawMove]) -> dict[str, tuple[Any, ...]]:
    for batch in batches:
        writer.write(batch, durable=False)
    found = writer.connection.execute(
        f"SELECT subplan_id, {ROW} FROM subplans WHERE run_id = 'r1' ORDER BY subplan_id"
    )
    return {subplan_id: tuple(rest) for subplan_id, *rest in found}


def test_an_end_keeps_the_start_an_earlier_batch_wrote(writer: BatchWriter) -> None:
    writer.connection.execute("UPDATE subplans SET pgid = 7 WHERE subplan_id = 'a'")
    first = [_move("a", PENDING, RUNNING, 1, 1.0), _move("b", PENDING, RUNNING, 1, 2.0)]
    assert _rows(writer, first) == {
        "a": ("running", 1, 1.0, None, None, 0, 7),  # a running row keeps its process group
        "b": ("running", 1, 2.0, None, None, 0, None),
    }
    second = [_move("a", RUNNING, COMPLETED, 1, 3.0)]
    assert _rows(writer, second)["a"] == ("completed", 1, 1.0, 3.0, None, 0, None)


def test_unregistered_subplans_get_rows_from_their_pending_states(writer: BatchWriter) -> None:
    rows = _rows(
        writer,
        [
            _move("x", None, PENDING, 0, 1.0),
            _move("y", None, PENDING, 0, 1.0),
            _move("y", PENDING, RUNNING, 1, 2.0),
            _move("y", RUNNING, COMPLETED, 1, 3.0),
            _move("a", None, PENDING, 0, 4.0),  # registered: its row stays as it is
        ],
    )
    assert rows["x"] == ("pending", 0, None, None, None, 0, None)
    assert rows["y"] == ("completed", 1, 2.0, 3.0, None, 0, None)
    assert rows["a"] == ("pending", 0, None, None, None, 0, None)
    assert writer.builder.known >= {"x", "y"}


def test_running_again_after_a_failure_in_one_batch_clears_it(writer: BatchWriter) -> None:
    failure = CommandFailedError("exited with code 3", exit_code=3, log_file="/l", output_tail="")
    rows = _rows(
        writer,
        [
            _move("a", PENDING, RUNNING, 1, 1.0),
            _move("a", RUNNING, FAILED, 1, 2.0, failure),
            _move("a", FAILED, RUNNING, 2, 3.0),
        ],
    )
    assert rows["a"] == ("running", 2, 3.0, None, None, 0, None)


def test_a_failure_after_an_end_without_its_start_keeps_the_stored_start(
    writer: BatchWriter,
) -> None:
    failure = CommandFailedError("exited with code 3", exit_code=3, log_file="/l", output_tail="")
    _rows(writer, [_move("b", PENDING, RUNNING, 1, 1.0)])
    rows = _rows(
        writer,
        [_move("b", RUNNING, COMPLETED, 1, 2.0), _move("b", COMPLETED, FAILED, 1, 3.0, failure)],
    )
    assert rows["b"] == ("failed", 1, 1.0, 3.0, 3, 1, None)
