"""Reading the store: the stored rows as named tuples, and the queries that turn them into the
records ``RunStore`` returns (``RunInfo``, ``SubplanInfo``, ...).

Each function reads through a connection inside a transaction its caller holds, so that what
one ``RunStore`` call returns is one consistent snapshot.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

from subplans.engine.errors import PlanRunningError, RunBusyError, RunNotFoundError
from subplans.engine.states import SubplanExecutionState
from subplans.store.event_chunks import read_events
from subplans.store.liveness import (
    Liveness,
    ProcessIdentity,
    live_process_groups,
    owner_liveness,
)
from subplans.store.record_formats import some
from subplans.store.records import (
    SUBPLAN_STATES,
    RunInfo,
    RunStatus,
    from_json,
)

if TYPE_CHECKING:
    from subplans.execution.step_items import RecordedItems

    # Built where they are queried: a run never reads them (``records.__getattr__``).
    from subplans.store.run_details import (
        ProcessGroupRecord,
        StepInfo,
        StepItemsInfo,
        StoredEvent,
        SubplanInfo,
    )

__all__ = [
    "RunRow",
    "completed_ids",
    "events",
    "integrity_findings",
    "log_file",
    "process_groups",
    "read_run",
    "recent_runs",
    "recorded_items",
    "refuse_a_busy_resume",
    "refuse_a_second_run",
    "run_ids",
    "step_items",
    "steps",
    "stored_ids",
    "subplans",
]


class RunRow(NamedTuple):
    """A row of ``runs``."""

    id: str
    plan_file: str
    plan_name: str
    plan_hash: str
    profile: str
    run_dir: str | None
    status: str
    started_at: float
    finished_at: float | None
    resumes: int
    owner_pid: int | None
    owner_host: str | None
    owner_boot_id: str | None
    owner_start: int | None

    @property
    def owner(self) -> ProcessIdentity | None:
        """The process recorded as driving the run."""
        if self.owner_pid is None:
            return None
        return ProcessIdentity(
            self.owner_pid, self.owner_host or "", self.owner_boot_id or "", self.owner_start
        )


class _StepRow(NamedTuple):
    step_id: str
    state: str
    total: int
    started: float | None
    finished: float | None
    error: str | None


class _SubplanRow(NamedTuple):
    subplan_id: str
    step_id: str | None
    position: int | None
    state: str
    attempts: int
    started: float | None
    finished: float | None
    exit_code: int | None
    error: str | None
    log_file: str | None
    pgid: int | None
    worker: str | None


_R = TypeVar("_R")


def _columns(row: type[tuple[Any, ...]]) -> str:
    return ", ".join(row._fields)  # type: ignore[attr-defined]


def _select(
    db: sqlite3.Connection, make: Callable[..., _R], sql: str, args: Sequence[Any] = ()
) -> list[_R]:
    """The rows of ``sql``, each made by ``make`` from its columns, in order."""
    cursor = db.cursor()
    cursor.row_factory = lambda _cursor, values: make(*values)
    found: list[_R] = cursor.execute(sql, args).fetchall()
    return found


_RUNS = f"SELECT {_columns(RunRow)} FROM runs"
_NEWEST_FIRST = "ORDER BY started_at DESC, id DESC"


def read_run(db: sqlite3.Connection, path: Path, run_id: str | None) -> RunInfo:
    """The run ``run_id``, or the most recent one.

    Raises:
        RunNotFoundError: no such run (or no run at all).
    """
    if run_id is None:
        rows = _select(db, RunRow, f"{_RUNS} {_NEWEST_FIRST} LIMIT 1")
    else:
        rows = _select(db, RunRow, f"{_RUNS} WHERE id = ?", (run_id,))
    if not rows:
        what = "no runs" if run_id is None else f"no run {run_id}"
        raise RunNotFoundError(f"{what} in the store {path}")
    return _run_info(db, rows[0])


def recent_runs(db: sqlite3.Connection, limit: int) -> list[RunInfo]:
    """The ``limit`` most recent runs, newest first."""
    rows = _select(db, RunRow, f"{_RUNS} {_NEWEST_FIRST} LIMIT ?", (limit,))
    return [_run_info(db, row) for row in rows]


def _run_info(db: sqlite3.Connection, row: RunRow) -> RunInfo:
    counts = dict.fromkeys(SUBPLAN_STATES, 0)
    for state, n in db.execute(
        "SELECT state, count(*) FROM subplans WHERE run_id = ? GROUP BY state", (row.id,)
    ):
        counts[state] = n
    owner = row.owner
    recorded = status = RunStatus(row.status)
    if recorded is RunStatus.RUNNING and owner_liveness(owner) is Liveness.GONE:
        status = RunStatus.INTERRUPTED
        counts["interrupted"], counts["running"] = counts["running"], 0
    return RunInfo(
        id=row.id,
        plan_file=row.plan_file,
        plan_name=row.plan_name,
        plan_hash=row.plan_hash,
        profile=json.loads(row.profile),
        run_dir=row.run_dir,
        status=status,
        recorded_status=recorded,
        started_at=row.started_at,
        finished_at=row.finished_at,
        resumes=row.resumes,
        owner=owner,
        counts=counts,
    )


def run_ids(db: sqlite3.Connection, prefix: str) -> list[str]:
    """The ids of the runs whose id starts with ``prefix``, newest first."""
    rows = db.execute(
        f"SELECT id FROM runs WHERE substr(id, 1, ?) = ? {_NEWEST_FIRST}", (len(prefix), prefix)
    ).fetchall()
    return [run_id for (run_id,) in rows]


def refuse_a_second_run(
    db: sqlite3.Connection, path: Path, run_id: str, plan_file: str, owner: ProcessIdentity
) -> None:
    """PlanRunningError if a run of ``plan_file`` other than ``run_id`` is running and its
    owner is another process that lives, or cannot be judged from here (another host); a
    killed owner never blocks. (One process that drives a plan twice knows it does.)"""
    target = os.path.realpath(plan_file)
    rows = _select(
        db,
        RunRow,
        f"{_RUNS} WHERE status = ? AND id <> ? ORDER BY started_at, id",
        (RunStatus.RUNNING.value, run_id),
    )
    for row in rows:
        if os.path.realpath(row.plan_file) != target:
            continue
        driver = row.owner
        if driver == owner or owner_liveness(driver) is Liveness.GONE:
            continue
        raise PlanRunningError(
            f"plan {plan_file} is already running in the store {path}: run {row.id}, driven by "
            f"{driver or 'an unknown process'}",
            run_id=row.id,
            plan_file=plan_file,
            pid=row.owner_pid,
            host=row.owner_host,
        )


def refuse_a_busy_resume(
    run: RunInfo, owner: ProcessIdentity, groups: Sequence[ProcessGroupRecord]
) -> None:
    """RunBusyError unless ``owner`` may resume ``run``: its recorded owner is gone (or is
    ``owner``), and none of its recorded process ``groups`` has live members."""
    if run.recorded_status is RunStatus.RUNNING and run.owner != owner:
        liveness = owner_liveness(run.owner)
        if liveness is not Liveness.GONE:
            who = run.owner if liveness is Liveness.ALIVE else "a process on another host"
            raise RunBusyError(f"run {run.id} is still being driven by {who}")
    live = live_process_groups()
    alive = [group for group in groups if group.pgid in live]
    if alive:
        pgids = some([str(group.pgid) for group in alive])
        raise RunBusyError(
            f"run {run.id} left process groups running ({pgids}); "
            "stop them first (stop_leftover_groups)"
        )


def process_groups(db: sqlite3.Connection, run_id: str) -> list[ProcessGroupRecord]:
    """The process groups recorded for ``run_id`` that may still live, in plan order."""
    from subplans.store.run_details import ProcessGroupRecord

    return _select(
        db,
        ProcessGroupRecord,
        "SELECT subplan_id, pgid, pgid_start FROM subplans "
        "WHERE run_id = ? AND pgid IS NOT NULL ORDER BY position, subplan_id",
        (run_id,),
    )


def steps(db: sqlite3.Connection, run_id: str) -> list[StepInfo]:
    """Every step of the run, in plan order."""
    from subplans.store.run_details import StepInfo

    rows = _select(
        db,
        _StepRow,
        f"SELECT {_columns(_StepRow)} FROM steps "
        "WHERE run_id = ? ORDER BY position IS NULL, position, started",
        (run_id,),
    )
    return [
        StepInfo(row.step_id, row.state, row.total, row.started, row.finished, from_json(row.error))
        for row in rows
    ]


def step_items(db: sqlite3.Connection, run_id: str) -> list[StepItemsInfo]:
    """Where the run's run-time steps' items came from and how many, in the order read."""
    from subplans.store.run_details import StepItemsInfo

    sql = "SELECT step_id, source, count, read_at FROM step_items WHERE run_id = ? ORDER BY read_at"
    return _select(db, StepItemsInfo, sql, (run_id,))


def recorded_items(db: sqlite3.Connection, run_id: str) -> dict[str, RecordedItems]:
    """The items each run-time step of the run read, by step id."""
    from subplans.execution.step_items import RecordedItems  # a resume's only

    rows = db.execute("SELECT step_id, source, items FROM step_items WHERE run_id = ?", (run_id,))
    return {
        step_id: RecordedItems(source, tuple(json.loads(items))) for step_id, source, items in rows
    }


def subplans(
    db: sqlite3.Connection, run_id: str, state: str | None, now: float
) -> list[SubplanInfo]:
    """The run's subplans in plan order, or only those in ``state``; ``now`` for the elapsed
    time of those still running."""
    from subplans.store.plan_order import in_plan_order  # status and resume: never a run (#10)
    from subplans.store.run_details import SubplanInfo

    where, args = ("", (run_id,)) if state is None else (" AND state = ?", (run_id, state))
    rows = _select(
        db,
        _SubplanRow,
        f"SELECT {_columns(_SubplanRow)} FROM subplans WHERE run_id = ?{where} "
        "ORDER BY position IS NULL, position, started, subplan_id",
        args,
    )
    if state is None:  # run-time subplans (no position) under their steps
        rows = in_plan_order(db, run_id, rows, [row.position for row in rows])
    return [_subplan_info(row, now, SubplanInfo) for row in rows]


def _subplan_info(row: _SubplanRow, now: float, make: type[SubplanInfo]) -> SubplanInfo:
    started, finished = row.started, row.finished
    elapsed = None if started is None else (now if finished is None else finished) - started
    return make(
        subplan_id=row.subplan_id,
        step_id=row.step_id,
        state=SubplanExecutionState(row.state),
        attempts=row.attempts,
        started=started,
        finished=finished,
        elapsed=elapsed,
        exit_code=row.exit_code,
        error=from_json(row.error),
        log_file=row.log_file,
        pgid=row.pgid,
        worker=row.worker,
    )


def completed_ids(db: sqlite3.Connection, run_id: str) -> frozenset[str]:
    """Every subplan of the run recorded as completed."""
    rows = db.execute(
        "SELECT subplan_id FROM subplans WHERE run_id = ? AND state = 'completed'", (run_id,)
    ).fetchall()
    return frozenset(subplan_id for (subplan_id,) in rows)


def stored_ids(db: sqlite3.Connection, run_id: str) -> list[str]:
    """Every subplan id the run recorded, in plan order."""
    rows = db.execute(
        "SELECT subplan_id FROM subplans WHERE run_id = ? "
        "ORDER BY position IS NULL, position, subplan_id",
        (run_id,),
    ).fetchall()
    return [subplan_id for (subplan_id,) in rows]


def log_file(db: sqlite3.Connection, run_id: str, subplan_id: str) -> tuple[bool, str | None]:
    """Whether the run has this subplan, and where its output went."""
    row = db.execute(
        "SELECT log_file FROM subplans WHERE run_id = ? AND subplan_id = ?", (run_id, subplan_id)
    ).fetchone()
    return (False, None) if row is None else (True, row[0])


def events(
    db: sqlite3.Connection, run_id: str, after_seq: int, limit: int | None
) -> list[StoredEvent]:
    """The run's events with ``seq > after_seq``, in order, at most ``limit``."""
    return read_events(db, run_id, after_seq, limit)


def integrity_findings(db: sqlite3.Connection) -> list[str]:
    """``PRAGMA integrity_check``: ``[]`` when the database is sound, else its findings."""
    found = [str(row[0]) for row in db.execute("PRAGMA integrity_check").fetchall()]
    return [] if found == ["ok"] else found
