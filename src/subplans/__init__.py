"""subplans: run a plan's subplans in parallel under a concurrency cap.

The package is built in layers, each importing only the ones before it:

- ``engine``: subplans dispatched under a cap. ``config`` (``ParallelExecutionConfig``,
  ``FailureMode``), ``states`` and ``tracker`` (the state machine), ``limiter``, ``subplan`` and
  ``results`` (what goes in and comes out), ``dispatcher`` (with ``dispatch``, ``streaming`` and ``groups``), ``events`` (the bus and the event
  types), ``halting`` (``HaltPolicy``), ``gates`` (pools, rates, a live cap), ``progress``,
  ``clock`` and ``errors`` (the one exception hierarchy).
- ``plans``: plan files and automation profiles to a validated tree.
- ``execution``: the executor that runs a tree, its runners and processes.
- ``store``, ``sinks`` and ``cli``: the run store, the event sinks and the ``subplans`` command.

Every public name is importable from here (``__all__``) and loaded on first use: importing the
package loads nothing but the signal guard, so that the command starts fast and a program that
embeds the engine pays for the modules it uses, never for pydantic, YAML, Typer, Rich or sqlite3.
"""

from __future__ import annotations

# First of all: in the `subplans` command, SIGINT and SIGTERM end it cleanly from here on,
# imports included (see signal_guard; nothing changes for a program importing the library).
from subplans.execution import signal_guard  # noqa: F401

# isort: split
import typing

#: The version, as pyproject.toml's (a test keeps them equal): read here rather than from the
#: installed metadata, whose import alone costs ``subplans --version`` more than the rest.
__version__ = "0.1.0"

# Every name below is loaded on first use, so that `import subplans` (and so the command's
# start) costs nothing but the signal guard: the dispatcher's asyncio, pydantic and YAML are paid
# for by what uses them. The names are imported for the type checker only.
if typing.TYPE_CHECKING:
    from subplans.engine.bus import EventBus
    from subplans.engine.config import FailureMode, ParallelExecutionConfig
    from subplans.engine.control_events import DispatchHalted, LimitChanged
    from subplans.engine.dispatcher import ParallelSubplanDispatcher, run_sync
    from subplans.engine.errors import (
        AggregateSubplanError,
        BackendError,
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
        WorkerLostError,
    )
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
    from subplans.engine.groups import SubplanGroup
    from subplans.engine.halting import HaltPolicy
    from subplans.engine.limiter import AsyncSemaphoreLimiter, LimiterStatistics
    from subplans.engine.progress import ProgressReporter, ProgressSnapshot
    from subplans.engine.results import SubplanResult
    from subplans.engine.states import PlanState, StepState, SubplanExecutionState
    from subplans.engine.subplan import Subplan
    from subplans.engine.tracker import SubplanTracker
    from subplans.execution.executor import PlanExecutor
    from subplans.execution.process import CommandResult, ProcessGroups
    from subplans.execution.results import PlanFailedError, PlanResult, StepResult
    from subplans.execution.runners import CallTargetError, ThreadAbandonedError
    from subplans.plans.loader import load_plan
    from subplans.plans.profiles import ProfileError
    from subplans.plans.run_settings import GlobalConfig, Overrides, load_global_config
    from subplans.plans.shellquote import ShellTemplateError
    from subplans.plans.tree import PlanNode, ResolvedProfile
    from subplans.plans.yamlfile import Problem, ProblemsError

_MODULES = {
    "subplans.engine.config": "FailureMode ParallelExecutionConfig",
    "subplans.engine.control_events": "DispatchHalted LimitChanged",
    "subplans.engine.dispatcher": "ParallelSubplanDispatcher run_sync",
    "subplans.engine.errors": "AggregateSubplanError BackendError CommandFailedError ConfigError "
    "DispatchError InvalidTransitionError PlanRunningError RunBusyError RunNotFoundError "
    "RunNotLiveError StoreError SubplanCancelledError SubplanError SubplanExecutionError "
    "WorkerLostError",
    "subplans.engine.bus": "EventBus",
    "subplans.engine.events": "DispatchFinished DispatchStarted Event PlanFinished "
    "PlanStarted StepItemsRead StepStateChanged SubplanProcessStarted SubplanRetrying "
    "SubplanSkipped SubplanStateChanged",
    "subplans.engine.groups": "SubplanGroup",
    "subplans.engine.halting": "HaltPolicy",
    "subplans.engine.limiter": "AsyncSemaphoreLimiter LimiterStatistics",
    "subplans.engine.progress": "ProgressReporter ProgressSnapshot",
    "subplans.engine.results": "SubplanResult",
    "subplans.engine.states": "PlanState StepState SubplanExecutionState",
    "subplans.engine.subplan": "Subplan",
    "subplans.engine.tracker": "SubplanTracker",
    "subplans.execution.executor": "PlanExecutor",
    "subplans.execution.process": "CommandResult ProcessGroups",
    "subplans.execution.results": "PlanFailedError PlanResult StepResult",
    "subplans.execution.runners": "CallTargetError ThreadAbandonedError",
    "subplans.plans.loader": "load_plan",
    "subplans.plans.profiles": "ProfileError",
    "subplans.plans.run_settings": "GlobalConfig Overrides load_global_config",
    "subplans.plans.shellquote": "ShellTemplateError",
    "subplans.plans.tree": "PlanNode ResolvedProfile",
    "subplans.plans.yamlfile": "Problem ProblemsError",
}
#: Each public name and the module it is loaded from on first use.
_LAZY = {name: module for module, names in _MODULES.items() for name in names.split()}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'subplans' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


__all__ = [
    "AggregateSubplanError",
    "AsyncSemaphoreLimiter",
    "BackendError",
    "CallTargetError",
    "CommandFailedError",
    "CommandResult",
    "ConfigError",
    "DispatchError",
    "DispatchFinished",
    "DispatchHalted",
    "DispatchStarted",
    "Event",
    "EventBus",
    "FailureMode",
    "GlobalConfig",
    "HaltPolicy",
    "InvalidTransitionError",
    "LimitChanged",
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
    "PlanState",
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
    "StepItemsRead",
    "StepResult",
    "StepState",
    "StepStateChanged",
    "StoreError",
    "Subplan",
    "SubplanCancelledError",
    "SubplanError",
    "SubplanExecutionError",
    "SubplanExecutionState",
    "SubplanGroup",
    "SubplanProcessStarted",
    "SubplanResult",
    "SubplanRetrying",
    "SubplanSkipped",
    "SubplanStateChanged",
    "SubplanTracker",
    "ThreadAbandonedError",
    "WorkerLostError",
    "__version__",
    "load_global_config",
    "load_plan",
    "run_sync",
]
