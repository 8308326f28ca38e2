"""The run store: every run kept in an embedded SQLite database, so that a run can be watched
from another terminal and resumed after a crash.

Layers, each importing only those above it (and the engine and execution below the store):

- ``schema``: the DDL as numbered migrations (``PRAGMA user_version``); ``checking``: what
  opening checks (in bounded time) and the full check; ``opening``: where the file is
  (``default_store_path``), and opening it
- ``manifest``: what a run records about its plan (``PlanManifest``, ``plan_hash``)
- ``liveness``: run owners (``ProcessIdentity``, ``owner_liveness``); ``lock``: ``RunLock``
- ``records``: what queries return (``RunStatus``, ``RunInfo``, ...); ``run_details``: the
  records of steps, subplans, plan changes, events and limit requests (``SubplanInfo``,
  ``StoredEvent``, ``LimitRecord``, ...), handed on by ``records``
- ``statements``: many rows bound per statement (``execute_rows``)
- ``queries`` (reading) and ``writes`` (the owner's writes): the SQL, as named rows
- ``limits``: caps changed while a run runs (their requests and SQL)
- ``pool_usage``: a run's pools as ``status`` shows them (``PoolUsage``), told from the store
- ``event_chunks``: a run's events as kept since schema 3, a chunk (one row) per batch
- ``event_rows`` (events to rows), ``batch_writer`` (a batch in one transaction),
  ``event_pickling`` (events made plain for the pipe), ``writer_frames`` (what crosses it),
  ``writer_process`` (the writer process's loop), ``writer_start`` (starting it, or taking
  the spare; ``writer_thread``: the loop in a thread where none starts), ``writer_lock``
  (one writer per run), ``writer_watch`` (when a writer is hung), ``writer_pipe`` (the
  recorder's end) and ``recorder``: ``RunRecorder``, the bus subscriber whose process writes
  events in batches
- ``sessions``: a run's sessions from its events (how long it was running)
- ``reader`` (``RunReader``, the queries) and ``store``: ``RunStore``, one transaction per
  method over ``queries`` and ``writes``; it hands out recorders
- ``leftovers`` (``find_leftovers``, ``stop_leftover_groups``) and ``cancel`` (``cancel_run``);
  ``change_limit`` (``limit_run``)
- ``resume``: what resume decides before anything of a run runs again

The errors are in ``subplans.engine.errors``. Data flows one way: the recorder depends on
events, never the other way round.
"""

from __future__ import annotations

import typing

from subplans.engine.errors import (
    PlanRunningError,
    RunBusyError,
    RunNotFoundError,
    RunNotLiveError,
    StoreError,
)

# The names below are loaded on first use (as the package ``subplans`` does), so that a plain
# run pays for the store's modules it uses and never for ``cancel``, ``change_limit`` or
# ``pool_usage``. They are imported for the type checker only.
if typing.TYPE_CHECKING:
    from subplans.store.cancel import cancel_run
    from subplans.store.change_limit import limit_run
    from subplans.store.leftovers import (
        Leftover,
        StoppedGroup,
        find_leftovers,
        stop_leftover_groups,
    )
    from subplans.store.limits import LIMIT_SIGNAL, limit_target
    from subplans.store.liveness import Liveness, ProcessIdentity, owner_liveness
    from subplans.store.lock import RunLock
    from subplans.store.manifest import PlanManifest, plan_hash
    from subplans.store.opening import default_store_path
    from subplans.store.pool_usage import PoolUsage
    from subplans.store.recorder import RecorderSettings, RecorderStatistics, RunRecorder
    from subplans.store.records import RUN_STATUSES, RunInfo, RunStatus
    from subplans.store.run_details import (
        LimitRecord,
        PlanDiff,
        ProcessGroupRecord,
        StepInfo,
        StepItemsInfo,
        StoredEvent,
        SubplanInfo,
    )
    from subplans.store.schema import SCHEMA_VERSION
    from subplans.store.store import RunStore

_MODULES = {
    "subplans.store.cancel": "cancel_run",
    "subplans.store.change_limit": "limit_run",
    "subplans.store.leftovers": "Leftover StoppedGroup find_leftovers stop_leftover_groups",
    "subplans.store.limits": "LIMIT_SIGNAL limit_target",
    "subplans.store.liveness": "Liveness ProcessIdentity owner_liveness",
    "subplans.store.lock": "RunLock",
    "subplans.store.manifest": "PlanManifest plan_hash",
    "subplans.store.opening": "default_store_path",
    "subplans.store.pool_usage": "PoolUsage",
    "subplans.store.recorder": "RecorderSettings RecorderStatistics RunRecorder",
    "subplans.store.records": "RUN_STATUSES RunInfo RunStatus",
    "subplans.store.run_details": (
        "LimitRecord PlanDiff ProcessGroupRecord StepInfo StepItemsInfo StoredEvent SubplanInfo"
    ),
    "subplans.store.schema": "SCHEMA_VERSION",
    "subplans.store.store": "RunStore",
}
#: Each public name and the module it is loaded from on first use.
_LAZY = {name: module for module, names in _MODULES.items() for name in names.split()}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'subplans.store' has no attribute {name!r}")
    # __import__ rather than importlib.import_module: `-X importtime` (bench_startup's
    # breakdown) then counts the module's time as its own, not as its importer's.
    value = getattr(__import__(module, fromlist=[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


__all__ = [
    "LIMIT_SIGNAL",
    "RUN_STATUSES",
    "SCHEMA_VERSION",
    "Leftover",
    "LimitRecord",
    "Liveness",
    "PlanDiff",
    "PlanManifest",
    "PlanRunningError",
    "PoolUsage",
    "ProcessGroupRecord",
    "ProcessIdentity",
    "RecorderSettings",
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
    "StepItemsInfo",
    "StoppedGroup",
    "StoreError",
    "StoredEvent",
    "SubplanInfo",
    "cancel_run",
    "default_store_path",
    "find_leftovers",
    "limit_run",
    "limit_target",
    "owner_liveness",
    "plan_hash",
    "stop_leftover_groups",
]
