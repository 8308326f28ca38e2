"""subplans: run a plan's subplans in parallel under a concurrency cap.

The public API is re-exported here from small single-purpose modules:

- ``config``: ``ParallelExecutionConfig`` and ``FailureMode``
- ``states``: the state machine and ``SubplanTracker``
- ``limiter``: ``AsyncSemaphoreLimiter``
- ``dispatcher``: ``Subplan``, ``SubplanResult`` and ``ParallelSubplanDispatcher``
- ``events``: ``EventBus`` and the event types
- ``progress``: ``ProgressReporter``
- ``errors``: the one exception hierarchy

Plans build on the engine: ``plans`` (the file format), ``profiles``, ``loader`` (files to a
validated tree), ``runners`` and ``process`` (commands, callables, nested plans), ``executor``.
Their public names are importable from here too, loaded on first use so that embedding the engine
does not pay for pydantic and YAML.
"""

from __future__ import annotations

# First of all: in the `subplans` command, SIGINT and SIGTERM end it cleanly from here on,
# imports included (see signal_guard; nothing changes for a program importing the library).
from subplans.execution import signal_guard  # noqa: F401

# isort: split
import logging
from importlib.metadata import PackageNotFoundError, version

from subplans.engine.config import FailureMode, ParallelExecutionConfig
from subplans.engine.dispatcher import ParallelSubplanDispatcher, Subplan, SubplanResult
from subplans.engine.errors import (
    AggregateSubplanError,
    CommandFailedError,
    ConfigError,
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
from subplans.engine.states import SubplanExecutionState, SubplanTracker

# A library logs, it never configures logging: no output unless the application asks.
logging.getLogger("subplans").addHandler(logging.NullHandler())

try:
    __version__ = version("subplans")
except PackageNotFoundError:  # pragma: no cover - only when run from a source tree
    __version__ = "0.0.0"

_LAZY = {
    "CallTargetError": "subplans.execution.runners",
    "CommandResult": "subplans.execution.process",
    "GlobalConfig": "subplans.plans.loader",
    "Overrides": "subplans.plans.loader",
    "PlanExecutor": "subplans.execution.executor",
    "PlanFailedError": "subplans.execution.executor",
    "PlanNode": "subplans.plans.loader",
    "PlanResult": "subplans.execution.executor",
    "Problem": "subplans.plans.yamlfile",
    "ProblemsError": "subplans.plans.yamlfile",
    "ProcessGroups": "subplans.execution.process",
    "ProfileError": "subplans.plans.profiles",
    "ResolvedProfile": "subplans.plans.profiles",
    "ShellTemplateError": "subplans.plans.shellquote",
    "StepResult": "subplans.execution.executor",
    "ThreadAbandonedError": "subplans.execution.runners",
    "load_global_config": "subplans.plans.loader",
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
