"""The records of a run's parts that the commands reading runs get (``status``, ``resume``,
``cancel``, ``events``, ``limit``): steps, their items, subplans, process groups, how a plan
changed, its events as stored and the requests to change its caps. A run never builds them:
``records`` (and ``limits``, for ``LimitRecord``) loads this module on first use of one of
these names (#10), and they stay importable from there, as from ``subplans.store``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from subplans.engine.clock import utc
from subplans.engine.states import SubplanExecutionState
from subplans.store.record_formats import iso, some

__all__ = [
    "LimitRecord",
    "PlanDiff",
    "ProcessGroupRecord",
    "StepInfo",
    "StepItemsInfo",
    "StoredEvent",
    "SubplanInfo",
]


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
class LimitRecord:
    """A target's last request and what the run made of it."""

    target: str
    requested: int
    requested_at: float
    #: Which request of the target this is (1, 2, ...); ``applied`` is the last acted on.
    request: int
    applied: int | None
    original: int | None
    current: int | None
    applied_at: float | None
    error: str | None
    #: The cap just before the last request the run acted on.
    previous: int | None = None

    @property
    def pending(self) -> bool:
        """Whether the run has not acted on the last request yet."""
        return self.applied is None or self.applied < self.request

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable copy."""
        return {
            "target": self.target,
            "requested": self.requested,
            "requested_at": self.requested_at,
            "pending": self.pending,
            "original": self.original,
            "current": self.current,
            "applied_at": self.applied_at,
            "error": self.error,
        }
