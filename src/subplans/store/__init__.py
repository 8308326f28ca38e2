"""The run store: every run kept in an embedded SQLite database, so that a run can be watched
from another terminal and resumed after a crash.

Layers, each depending only on those above it:

- errors (in ``subplans.engine.errors``): ``StoreError``, ``RunNotFoundError``, ``RunBusyError``,
  ``PlanRunningError``, ``RunNotLiveError``
- ``schema``: the DDL as numbered migrations (``PRAGMA user_version``)
- ``manifest``: what a run records about its plan (``PlanManifest``, ``plan_hash``)
- ``liveness``: run owners (``ProcessIdentity``), ``RunLock``, ``find_leftovers``,
  ``stop_leftover_groups``, ``cancel_run``
- ``records``: what queries return (``RunInfo``, ``SubplanInfo``, ``StoredEvent``, ...)
- ``store``: ``RunStore`` (open, the owner's writes, the CLI's queries)
- ``recorder``: ``RunRecorder``, the bus subscriber that writes events in batches off the loop

Data flows one way: the recorder depends on events, never the other way round.
"""

from __future__ import annotations

from subplans.engine.errors import (
    PlanRunningError,
    RunBusyError,
    RunNotFoundError,
    RunNotLiveError,
    StoreError,
)
from subplans.store.liveness import (
    Leftover,
    Liveness,
    ProcessIdentity,
    RunLock,
    StoppedGroup,
    cancel_run,
    find_leftovers,
    owner_liveness,
    stop_leftover_groups,
)
from subplans.store.manifest import PlanManifest, plan_hash
from subplans.store.recorder import RecorderStatistics, RunRecorder
from subplans.store.records import (
    RUN_STATUSES,
    PlanDiff,
    ProcessGroupRecord,
    RunInfo,
    RunStatus,
    StepInfo,
    StoredEvent,
    SubplanInfo,
)
from subplans.store.schema import SCHEMA_VERSION
from subplans.store.store import RunStore, default_store_path

__all__ = [
    "RUN_STATUSES",
    "SCHEMA_VERSION",
    "Leftover",
    "Liveness",
    "PlanDiff",
    "PlanManifest",
    "PlanRunningError",
    "ProcessGroupRecord",
    "ProcessIdentity",
    "RecorderStatistics",
    "RunBusyError",
    "RunInfo",
    "RunLock",
    "RunNotFoundError",
    "RunNotLiveError",
    "RunRecorder",
    "RunStatus",
    "RunStore",
    "StepInfo",
    "StoppedGroup",
    "StoreError",
    "StoredEvent",
    "SubplanInfo",
    "cancel_run",
    "default_store_path",
    "find_leftovers",
    "owner_liveness",
    "plan_hash",
    "stop_leftover_groups",
]
