"""What the store's queries return: runs, steps, subplans and events as frozen records."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from subplans.engine.clock import utc
from subplans.engine.states import SubplanExecutionState
from subplans.store.liveness import ProcessIdentity

__all__ = [
    "RUN_ENDS",
    "RUN_STATUSES",
    "PlanDiff",
    "ProcessGroupRecord",
    "RunInfo",
    "RunStatus",
    "StepInfo",
    "StepItemsInfo",
    "StoredEvent",
    "SubplanInfo",
]


class RunStatus(StrEnum):
    """How a run stands. ``interrupted`` is never stored: it is a ``running`` run whose owner is
    gone."""

    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"


#: Every status a run is reported with.
RUN_STATUSES: tuple[RunStatus, ...] = tuple(RunStatus)
#: The statuses a run is recorded with once it has ended.
RUN_ENDS = frozenset({RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED})
#: The keys of ``RunInfo.counts``.
SUBPLAN_STATES = ("pending", "running", "completed", "failed", "interrupted")


@dataclass(frozen=True, slots=True)
class RunInfo:
    """A run as stored, with its subplans counted per state and its status as seen now."""

    id: str
    plan_file: str
    plan_name: str
    plan_hash: str
    #: The root plan's resolved profile: ``{"values": ..., "sources": ...}``.
    profile: Mapping[str, Any]
    run_dir: str | None
    #: ``recorded_status``, except ``interrupted`` for a running run whose owner is gone.
    status: RunStatus
    recorded_status: RunStatus
    started_at: float
    finished_at: float | None
    resumes: int
    owner: ProcessIdentity | None
    #: Subplans per state: pending, running, completed, failed and interrupted (the running
    #: ones of an interrupted run).
    counts: Mapping[str, int]

    @property
    def total(self) -> int:
        """How many subplans the run has."""
        return sum(self.counts.values())

    @property
    def duration(self) -> float | None:
        """Seconds from start to end; None while it has not ended."""
        return None if self.finished_at is None else self.finished_at - self.started_at

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable, as ``subplans runs --json`` shows it."""
        owner = self.owner
        return {
            "id": self.id,
            "status": self.status,
            "plan": self.plan_file,
            "plan_name": self.plan_name,
            "plan_hash": self.plan_hash,
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at),
            "duration": self.duration,
            "counts": dict(self.counts),
            "resumes": self.resumes,
            "run_dir": self.run_dir,
            "owner": None if owner is None else {"pid": owner.pid, "host": owner.host},
            "profile": self.profile,
        }


@dataclass(frozen=True, slots=True)
class StepInfo:
    """A step of a run: pending, running, completed, failed or skipped."""

    step_id: str
    #: A ``str``, not a ``StepState``: the store records a step ``pending`` until it starts,
    #: a state the executor's steps never have.
    state: str
    total: int
    started: float | None
    finished: float | None
    error: Mapping[str, Any] | None


@dataclass(frozen=True, slots=True)
class StepItemsInfo:
    """Where a run-time ``for_each`` step's items came from (``source``, as ``lines of
    'files.txt'``), how many there were and when they were read: recorded as the step started,
    reused by ``resume``."""

    step_id: str
    source: str
    count: int
    read_at: float


@dataclass(frozen=True, slots=True)
class SubplanInfo:
    """A subplan of a run as stored; ``elapsed`` is seconds so far (running) or in all (ended)."""

    subplan_id: str
    step_id: str | None
    state: SubplanExecutionState
    attempts: int
    started: float | None
    finished: float | None
    elapsed: float | None
    exit_code: int | None
    error: Mapping[str, Any] | None
    log_file: str | None
    pgid: int | None
    #: The address of the cluster worker that ran it (issue #12); None: it ran here.
    worker: str | None = None

    @property
    def started_at(self) -> datetime | None:
        """``started`` as a UTC datetime."""
        return None if self.started is None else utc(self.started)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable, as ``subplans status --json`` shows it."""
        return {
            "id": self.subplan_id,
            "step": self.step_id,
            "state": self.state,
            "attempts": self.attempts,
            "started_at": iso(self.started),
            "finished_at": iso(self.finished),
            "elapsed": self.elapsed,
            "exit_code": self.exit_code,
            "error": self.error,
            "log_file": self.log_file,
            "worker": self.worker,
        }


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An event as stored: its place in the run (``seq``), its kind and its fields."""

    run_id: str
    seq: int
    time: float
    kind: str
    subplan_id: str | None
    step_id: str | None
    payload: Mapping[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """The event's own ``to_dict()``, plus ``run_id`` and ``seq``: one JSON line each."""
        return {
            "run_id": self.run_id,
            "seq": self.seq,
            "event": self.kind,
            "timestamp": utc(self.time).isoformat(),
            **self.payload,
        }


@dataclass(frozen=True, slots=True)
class ProcessGroupRecord:
    """A process group a subplan started, recorded while it may still live."""

    subplan_id: str
    pgid: int
    #: The group leader's start time (clock ticks since boot), None if it was gone too soon.
    start_time: int | None


@dataclass(frozen=True, slots=True)
class PlanDiff:
    """How a plan's subplan ids differ from those a run recorded."""

    run_id: str
    added: tuple[str, ...]
    removed: tuple[str, ...]
    hash_changed: bool

    @property
    def ids_match(self) -> bool:
        """True when resume can go ahead without ``--force``."""
        return not self.added and not self.removed

    def __str__(self) -> str:
        if self.ids_match:
            if self.hash_changed:
                return f"the plan's content changed since run {self.run_id}, but not its subplans"
            return f"the plan is unchanged since run {self.run_id}"
        changes = [
            f"{len(ids)} subplan{'' if len(ids) == 1 else 's'} {what} ({some(ids)})"
            for ids, what in ((self.added, "added"), (self.removed, "removed"))
            if ids
        ]
        return f"the plan's subplans changed since run {self.run_id}: {' and '.join(changes)}"


def some(ids: Sequence[str], shown: int = 5) -> str:
    """The first ``shown`` ids, and how many more."""
    more = f", and {len(ids) - shown} more" if len(ids) > shown else ""
    return ", ".join(ids[:shown]) + more


def iso(seconds: float | None) -> str | None:
    """Epoch seconds as ISO 8601 in UTC."""
    return None if seconds is None else utc(seconds).isoformat()


def from_json(text: str | None) -> Any:
    """A JSON column's value."""
    return None if text is None else json.loads(text)
