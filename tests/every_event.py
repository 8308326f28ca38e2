"""One run's events of every kind the store reads, at fixed times, and the rows the store holds
after they are recorded: ``every_event_rows.json`` pins the rows the writer THREAD of the
recorder wrote (captured once from that recorder, before the writer process replaced it:
``python tests/every_event.py OUT.json`` with the old tree first on ``sys.path``), so the
writer process is held to them. Imports only the engine, which both trees share."""

from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path
from typing import Any

from subplans.engine.config import ParallelExecutionConfig
from subplans.engine.control_events import DispatchHalted, LimitChanged
from subplans.engine.events import (
    DispatchFinished,
    DispatchStarted,
    Event,
    PlanFinished,
    PlanStarted,
    StepItemsRead,
    StepStateChanged,
    SubplanProcessStarted,
    SubplanRetrying,
    SubplanSkipped,
    SubplanStateChanged,
)
from subplans.engine.states import PlanState, StepState, SubplanExecutionState

__all__ = ["IDS", "ROWS", "events", "manifest", "stored"]

S = SubplanExecutionState
T = 1_700_000_000.0
IDS = [f"s{i}" for i in range(12)]
ROWS = Path(__file__).with_name("every_event_rows.json")


class _Failure(Exception):
    """A command's failure, with the fields an error's description carries."""

    def __init__(self, message: str, **fields: Any) -> None:
        super().__init__(message)
        self.__dict__.update(fields)


def events() -> list[Event]:
    failure = _Failure("boom ünïcode ☃", exit_code=3, output_tail="tail\né")
    found: list[Event] = [
        PlanStarted(plan_id="", name="p", file="plan.yaml", run_id="r1", steps=1, time=T),
        StepStateChanged("step", None, StepState.RUNNING, total=len(IDS), time=T + 0.1),
        StepItemsRead("step", "lines of 'x'", 3, items=("a", "é☃", "x" * 10), time=T + 0.2),
        DispatchStarted("step", len(IDS), ParallelExecutionConfig(max_parallel=2), time=T + 0.3),
    ]
    for i, name in enumerate(IDS):
        found.append(SubplanStateChanged(name, None, S.PENDING, time=T + 1 + i / 1000))
    found.append(LimitChanged("step", None, 2, 3, time=T + 1.5))
    for i, name in enumerate(IDS[:-2]):
        found.append(SubplanStateChanged(name, S.PENDING, S.RUNNING, 1, time=T + 2 + i / 1000))
        found.append(SubplanProcessStarted(name, 999_999_999, f"/logs/{name}.log", time=T + 2.5))
    found.append(SubplanRetrying(IDS[3], 1, failure, 0.5, time=T + 3))
    found.append(SubplanStateChanged(IDS[3], S.RUNNING, S.RUNNING, 2, failure, time=T + 3.1))
    for i, name in enumerate(IDS[:-2]):
        state = S.FAILED if i in (3, 5) else S.COMPLETED
        error = failure if state is S.FAILED else None
        found.append(SubplanStateChanged(name, S.RUNNING, state, 2 if i == 3 else 1, error))
        found[-1].time = T + 4 + i / 1000
    found.append(DispatchHalted("step", "fail", "soon,fail=2", "2 failed", time=T + 4.5))
    for name in IDS[-2:]:
        found.append(SubplanSkipped(name, "halted", time=T + 4.6))
        halted = _Failure("halted")
        found.append(SubplanStateChanged(name, S.PENDING, S.FAILED, 0, halted, time=T + 4.6))
    counts = {S.COMPLETED: 8, S.FAILED: 4}
    found.append(DispatchFinished("step", counts, 4.0, time=T + 4.7))
    found.append(StepStateChanged("step", StepState.RUNNING, StepState.FAILED, 12, failure))
    found[-1].time = T + 4.8
    found.append(PlanFinished(plan_id="", state=PlanState.FAILED, elapsed=5.0, time=T + 5))
    return found


def stored(store: Any, run_id: str) -> dict[str, Any]:
    """The rows of ``run_id`` the recorder writes (``store`` a ``RunStore``), as JSON gives
    them back."""
    found: dict[str, Any] = {"events": [event.to_dict() for event in store.events(run_id)]}
    db = sqlite3.connect(store.path)
    try:
        for table in ("subplans", "steps", "step_items"):
            rows = db.execute(f"SELECT * FROM {table} WHERE run_id = ? ORDER BY 2, 3", (run_id,))
            found[table] = [list(row)[1:] for row in rows]
        runs = db.execute("SELECT status, finished_at FROM runs WHERE id = ?", (run_id,))
        found["runs"] = [list(row) for row in runs]
    finally:
        db.close()
    return json.loads(json.dumps(found))  # type: ignore[no-any-return]


def manifest(kind: Any) -> Any:
    """The run's manifest: ``kind`` is ``PlanManifest`` (of the tree that records)."""
    subplans = tuple((name, "step") for name in IDS)
    return kind(
        file="plan.yaml", name="p", hash="h", profile={}, steps=("step",), subplans=subplans
    )


def _capture(out: str) -> None:  # pragma: no cover - run once, with the old tree
    import asyncio
    import tempfile

    from subplans import EventBus
    from subplans.store import PlanManifest, RunStore

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "state.db"
        with RunStore.open(path) as store:
            store.start_run("r1", manifest(PlanManifest))
            bus = EventBus()
            recorder = store.recorder("r1", bus=bus)

            async def record() -> None:
                for event in events():
                    bus.publish(event)
                await recorder.aclose()

            asyncio.run(record())
            rows = stored(store, "r1")
        Path(out).write_text(json.dumps(rows, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":  # pragma: no cover
    _capture(sys.argv[1])
