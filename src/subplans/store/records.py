"""What the store's queries return: runs as frozen records; the records of a run's steps,
subplans, process groups, plan changes, events and limit requests are in ``run_details``,
loaded on first use of one of their names here (a run never builds them), and importable from
here as ever."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from subplans.store.liveness import ProcessIdentity
from subplans.store.record_formats import iso as iso  # importable from here, as before
from subplans.store.record_formats import some as some

# What a run never builds is in ``run_details``, loaded on first use of a name (#10).
if TYPE_CHECKING:
    from subplans.store.run_details import (
        LimitRecord,
        PlanDiff,
        ProcessGroupRecord,
        StepInfo,
        StepItemsInfo,
        StoredEvent,
        SubplanInfo,
    )

__all__ = [
    "RUN_ENDS",
    "RUN_STATUSES",
    "LimitRecord",
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


_DETAILS = frozenset(
    (
        "LimitRecord",
        "PlanDiff",
        "ProcessGroupRecord",
        "StepInfo",
        "StepItemsInfo",
        "StoredEvent",
        "SubplanInfo",
    )
)


def __getattr__(name: str) -> object:
    if name not in _DETAILS:
        raise AttributeError(f"module 'subplans.store.records' has no attribute {name!r}")
    # __import__, as subplans.store does: -X importtime then counts it as its own.
    value = getattr(__import__("subplans.store.run_details", fromlist=[name]), name)
    globals()[name] = value
    return value


def from_json(text: str | None) -> Any:
    """A JSON column's value."""
    return None if text is None else json.loads(text)
