"""subplans: run a plan's subplans in parallel under a concurrency cap.

The package is built in layers, each importing only the ones before it:

- ``engine``: subplans dispatched under a cap. ``config`` (``ParallelExecutionConfig``,
  ``FailureMode``), ``states`` and ``tracker`` (the state machine), ``limiter``, ``subplan`` and
  ``results`` (what goes in and comes out), ``dispatcher``, ``events`` (the bus and the event
  types), ``progress``, ``clock`` and ``errors`` (the one exception hierarchy).
- ``plans``: plan files and automation profiles to a validated tree.
- ``execution``: the executor that runs a tree, its runners and processes.
- ``store``, ``sinks`` and ``cli``: the run store, the event sinks and the ``subplans`` command.

The engine's public names are imported here. The public names of ``plans`` and ``execution`` are
importable from here too, loaded on first use so that embedding the engine does not pay for
pydantic and YAML.
"""

from __future__ import annotations

# First of all: in the `subplans` command, SIGINT and SIGTERM end it cleanly from here on,
# imports included (see signal_guard; nothing changes for a program importing the library).
from subplans.execution import signal_guard  # noqa: F401

# isort: split
import logging
from importlib.metadata import PackageNotFoundError, version

from subplans.engine.config import FailureMode, ParallelExecutionConfig
from subplans.engine.dispatcher import ParallelSubplanDispatcher
from subplans.engine.errors import (
    AggregateSubplanError,
    CommandFailedError,
    ConfigError,
    DispatchError,
    InvalidTransitionError,
    PlanRunningError,
    RunBusyError,
    RunNotFoundError,
    RunNotLiveError,
    StoreError,
    SubplanCancelledError,
    SubplanError,
    SubplanExecutionError,
)
from subplans.engine.events import (
    DispatchFinished,
    DispatchStarted,
    Event,
    EventBus,
    PlanFinished,
    PlanStarted,
    StepStateChanged,
    SubplanProcessStarted,
    SubplanRetrying,
    SubplanSkipped,
    SubplanStateChanged,
)
from subplans.engine.limiter import AsyncSemaphoreLimiter, LimiterStatistics
from subplans.engine.progress import ProgressReporter, ProgressSnapshot
from subplans.engine.results import SubplanResult
from subplans.engine.states import SubplanExecutionState
from subplans.engine.subplan import Subplan
from subplans.engine.tracker import SubplanTracker

# A library logs, it never configures logging: no output unless the application asks.
logging.getLogger("subplans").addHandler(logging.NullHandler())

try:
    __version__ = version("subplans")
except PackageNotFoundError:  # pragma: no cover - only when run from a source tree
    __version__ = "0.0.0"

_LAZY = {
    "CallTargetError": "subplans.execution.runners",
    "CommandResult": "subplans.execution.process",
    "GlobalConfig": "subplans.plans.run_settings",
    "Overrides": "subplans.plans.run_settings",
    "PlanExecutor": "subplans.execution.executor",
    "PlanFailedError": "subplans.execution.results",
    "PlanNode": "subplans.plans.tree",
    "PlanResult": "subplans.execution.results",
    "Problem": "subplans.plans.yamlfile",
    "ProblemsError": "subplans.plans.yamlfile",
    "ProcessGroups": "subplans.execution.process",
    "ProfileError": "subplans.plans.profiles",
    "ResolvedProfile": "subplans.plans.tree",
    "ShellTemplateError": "subplans.plans.shellquote",
    "StepResult": "subplans.execution.results",
    "ThreadAbandonedError": "subplans.execution.runners",
    "load_global_config": "subplans.plans.run_settings",
    "load_plan": "subplans.plans.loader",
}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'subplans' has no attribute {name!r}")


__all__ = [
    "AggregateSubplanError",
    "AsyncSemaphoreLimiter",
    "CallTargetError",
    "CommandFailedError",
    "CommandResult",
    "ConfigError",
    "DispatchError",
    "DispatchFinished",
    "DispatchStarted",
    "Event",
    "EventBus",
    "FailureMode",
    "GlobalConfig",
    "InvalidTransitionError",
    "LimiterStatistics",
    "Overrides",
    "ParallelExecutionConfig",
    "ParallelSubplanDispatcher",
    "PlanExecutor",
    "PlanFailedError",
    "PlanFinished",
    "PlanNode",
    "PlanResult",
    "PlanRunningError",
    "PlanStarted",
    "Problem",
    "ProblemsError",
    "ProcessGroups",
    "ProfileError",
    "ProgressReporter",
    "ProgressSnapshot",
    "ResolvedProfile",
    "RunBusyError",
    "RunNotFoundError",
    "RunNotLiveError",
    "ShellTemplateError",
    "StepResult",
    "StepStateChanged",
    "StoreError",
    "Subplan",
    "SubplanCancelledError",
    "SubplanError",
    "SubplanExecutionError",
    "SubplanExecutionState",
    "SubplanProcessStarted",
    "SubplanResult",
    "SubplanRetrying",
    "SubplanSkipped",
    "SubplanStateChanged",
    "SubplanTracker",
    "ThreadAbandonedError",
    "__version__",
    "load_global_config",
    "load_plan",
]
