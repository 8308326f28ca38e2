"""``RunReader``: the read side of ``RunStore``, each query one read transaction (one
consistent snapshot) over the SQL in ``queries`` and ``sessions``; it works while a run is live
in another process.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import subplans.store.queries as queries
import subplans.store.sessions as sessions
from subplans.engine.errors import RunNotFoundError, StoreError
from subplans.engine.states import SubplanExecutionState
from subplans.store.event_chunks import events_of_kind
from subplans.store.limits import read_limits, read_listener, read_request
from subplans.store.manifest import PlanManifest
from subplans.store.records import RunInfo, RunStatus

if TYPE_CHECKING:  # loaded where used: a run never reads its pools' usage, recorded items, ...
    from subplans.execution.step_items import RecordedItems
    from subplans.store.pool_usage import PoolUsage
    from subplans.store.run_details import (
        LimitRecord,
        PlanDiff,
        StepInfo,
        StepItemsInfo,
        StoredEvent,
        SubplanInfo,
    )

__all__ = ["RunReader"]


class RunReader:
    """The queries of a run store; ``RunStore`` adds opening it and the owner's writes."""

    path: Path
    _connection: sqlite3.Connection | None
    _clock: Callable[[], float]

    @property
    def _db(self) -> sqlite3.Connection:
        if self._connection is None:
            raise RuntimeError("the store is closed")
        return self._connection

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """One consistent snapshot (a read transaction)."""
        db = self._db
        try:
            db.execute("BEGIN")
            try:
                yield db
            finally:
                db.execute("COMMIT")
        except sqlite3.Error as error:
            raise StoreError(f"cannot read the store {self.path}: {error}") from None

    def events_of_kind(self, run_id: str, kind: str) -> list[StoredEvent]:
        """The run's events of one (rare) ``kind``, such as ``dispatch_halted``, in order."""
        with self._reading() as db:
            return events_of_kind(db, run_id, kind)

    def limits(self, run_id: str) -> list[LimitRecord]:
        """The caps of ``run_id`` asked to change while it ran (``subplans limit``), by target."""
        with self._reading() as db:
            return read_limits(db, run_id)

    def pool_usage(self, run_id: str) -> list[PoolUsage]:
        """The run's pools by name: size, capacity now, units in use, waiting and peak."""
        from subplans.store.pool_usage import pool_usage

        with self._reading() as db:
            run = queries.read_run(db, self.path, run_id)
            changed = {
                limit.target.removeprefix("pool:"): limit.current
                for limit in read_limits(db, run_id)
                if limit.target.startswith("pool:") and limit.current is not None
            }
            return pool_usage(db, run_id, changed, running=run.status == RunStatus.RUNNING)

    def limit_request(self, run_id: str, target: str, request: int) -> LimitRecord | None:
        """One request to change a cap of ``run_id`` (``request_limit``'s number), as it is."""
        with self._reading() as db:
            return read_request(db, run_id, target, request)

    def limit_listener(self, run_id: str) -> int | None:
        """The pid of the owner of ``run_id`` that handles ``LIMIT_SIGNAL``, if one does."""
        with self._reading() as db:
            return read_listener(db, run_id)

    def list_runs(self, limit: int = 20) -> list[RunInfo]:
        """The ``limit`` most recent runs, newest first."""
        if type(limit) is not int or limit < 1:
            raise ValueError(f"limit must be an integer >= 1, got {limit!r}")
        with self._reading() as db:
            return queries.recent_runs(db, limit)

    def get_run(self, run_id: str | None = None) -> RunInfo:
        """The run ``run_id``, or the most recent one.

        Raises:
            RunNotFoundError: no such run (or no run at all).
        """
        with self._reading() as db:
            return queries.read_run(db, self.path, run_id)

    def steps(self, run_id: str) -> list[StepInfo]:
        """Every step of the run, in plan order."""
        with self._reading() as db:
            return queries.steps(db, run_id)

    def step_items(self, run_id: str) -> list[StepItemsInfo]:
        """Where the run's run-time ``for_each`` steps' items came from and how many there
        were, in the order they were read."""
        with self._reading() as db:
            return queries.step_items(db, run_id)

    def recorded_items(self, run_id: str) -> dict[str, RecordedItems]:
        """The items each run-time step of the run read when it started, by step id: what a
        resumed run's ``PlanExecutor`` takes (``items=``) instead of reading them again."""
        with self._reading() as db:
            return queries.recorded_items(db, run_id)

    def subplans(self, run_id: str, *, state: str | None = None) -> list[SubplanInfo]:
        """The run's subplans in plan order, or only those in ``state``."""
        with self._reading() as db:
            return queries.subplans(db, run_id, state, self._clock())

    def running_subplans(self, run_id: str) -> list[SubplanInfo]:
        """The subplans running now, longest-running first, each with its elapsed time."""
        return sorted(
            self.subplans(run_id, state=SubplanExecutionState.RUNNING),
            key=lambda s: s.started or 0.0,
        )

    def failures(self, run_id: str) -> list[SubplanInfo]:
        """The failed subplans, in the order they failed, each with its error and log file."""
        found = self.subplans(run_id, state=SubplanExecutionState.FAILED)
        return sorted(found, key=lambda s: s.finished or 0.0)

    def completed_subplans(self, run_id: str) -> frozenset[str]:
        """The ids resume must skip: every subplan recorded as completed."""
        with self._reading() as db:
            return queries.completed_ids(db, run_id)

    def log_file(self, run_id: str, subplan_id: str) -> Path | None:
        """Where a subplan's output went; None if it never started a process.

        Raises:
            RunNotFoundError: no such run, or no such subplan in it.
        """
        with self._reading() as db:
            found, log = queries.log_file(db, run_id, subplan_id)
        if not found:
            self.get_run(run_id)  # names a missing run rather than the subplan
            raise RunNotFoundError(f"run {run_id} has no subplan {subplan_id!r}")
        return None if log is None else Path(log)

    def events(
        self, run_id: str, *, after_seq: int = 0, limit: int | None = None
    ) -> list[StoredEvent]:
        """The run's events with ``seq > after_seq``, in order: poll with the last seq seen to
        follow a live run."""
        with self._reading() as db:
            return queries.events(db, run_id, after_seq, limit)

    def plan_diff(self, run_id: str, manifest: PlanManifest) -> PlanDiff:
        """How ``manifest``'s subplan ids differ from those the run recorded."""
        from subplans.store.run_details import PlanDiff

        run = self.get_run(run_id)
        with self._reading() as db:
            stored = queries.stored_ids(db, run_id)
        known, planned = set(stored), set(manifest.subplan_ids)
        return PlanDiff(
            run_id,
            tuple(i for i in manifest.subplan_ids if i not in known),
            tuple(i for i in stored if i not in planned and not manifest.made_later(i)),
            run.plan_hash != manifest.hash,
        )

    def integrity_check(self) -> list[str]:
        """``PRAGMA integrity_check``: ``[]`` when the database is sound, else its findings."""
        with self._reading() as db:
            return queries.integrity_findings(db)

    def run_ids(self, prefix: str = "") -> list[str]:
        """The ids of the runs whose id starts with ``prefix`` (every run by default), newest
        first: what a shortened run id may name."""
        with self._reading() as db:
            return queries.run_ids(db, prefix)

    def active_time(self, run: RunInfo) -> float | None:
        """How long ``run`` was running: the sum over its sessions (its start and each resume),
        each from its start to its end (the run's end, the root plan's ``plan_finished``, or for
        a session whose process was killed, its last event); up to now while it runs. None
        while the run has no events to tell (started, not yet running its plan)."""
        live = run.status is RunStatus.RUNNING
        with self._reading() as db:
            return sessions.active_time(db, run, self._clock() if live else None)
