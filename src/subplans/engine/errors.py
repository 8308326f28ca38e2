"""The one exception hierarchy of subplans.

Every class of the tree is importable from ``subplans``. Where a class is defined outside this
module, its module follows the description. A test checks the tree against the real subclasses.

SubplanError                          base class of every error raised by subplans
├── ConfigError (also a ValueError)   invalid configuration value
├── InvalidTransitionError            an illegal state-machine move
├── DispatchError                     a dispatch failed; ``results`` has every subplan's result
│   ├── SubplanExecutionError         one subplan failed; __cause__ is its own error
│   └── AggregateSubplanError (also an ExceptionGroup)
│                                     every failure of a continue-on-error dispatch
│                                     (``except*`` works)
├── SubplanCancelledError             recorded on a subplan that was cancelled
│   └── ThreadAbandonedError          a cancelled function's thread ran on past cancel_grace
│                                     (runners)
├── CommandFailedError                a command exited non-zero, was killed or could not start
├── WorkerLostError                   the cluster worker running a subplan was lost (cluster)
├── BackendError                      a cluster cannot be used: not installed, unreachable,
│                                     another subplans version, a plan folder it cannot see
├── CallTargetError                   a ``call`` target cannot be imported or is not a function
│                                     (runners)
├── ShellTemplateError                a placeholder stands where it cannot be quoted (shellquote)
├── ProblemsError                     input files are invalid, one line per problem (yamlfile)
├── ProfileError                      an unknown or circular profile name (profiles)
├── PlanFailedError                   a nested plan failed (executor)
├── StoreError                        the run store cannot be opened, read or written
│   └── RunNotFoundError              no run with that id (or no run at all yet)
├── RunBusyError                      another live process drives the run
│   └── PlanRunningError              another live run of the same plan file is in the store
└── RunNotLiveError                   the run has no live owner to ask

Two more exceptions never reach a program that uses the library, and are not exported:

SchemaError                           the file is not a store this version can use;
                                      ``RunStore.open`` raises a StoreError instead (store.schema)
CommandInterrupted (a SystemExit)     the ``subplans`` command was interrupted outside a run:
                                      exit code 130 (signal_guard)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Self

if TYPE_CHECKING:
    from subplans.engine.results import SubplanResult
    from subplans.engine.states import SubplanExecutionState

__all__ = [
    "AggregateSubplanError",
    "BackendError",
    "CommandFailedError",
    "ConfigError",
    "DispatchError",
    "InvalidTransitionError",
    "PlanRunningError",
    "RunBusyError",
    "RunNotFoundError",
    "RunNotLiveError",
    "StoreError",
    "SubplanCancelledError",
    "SubplanError",
    "SubplanExecutionError",
    "WorkerLostError",
]


class SubplanError(Exception):
    """Base class of every error raised by subplans."""


class ConfigError(SubplanError, ValueError):
    """A configuration value is invalid; the message names the field, the value and the rule."""


class InvalidTransitionError(SubplanError):
    """A subplan was moved between two states the state machine does not connect."""

    def __init__(
        self,
        subplan_id: str,
        previous: SubplanExecutionState | None,
        state: SubplanExecutionState,
    ) -> None:
        before = previous.value if previous is not None else "nothing"
        super().__init__(f"subplan {subplan_id!r} cannot move from {before} to {state.value}")
        self.subplan_id = subplan_id
        self.previous = previous
        self.state = state


class SubplanCancelledError(SubplanError):
    """The error recorded on a subplan that was cancelled; the message says why."""

    def __init__(self, reason: str, *, abandoned: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        #: True when the subplan ignored cancellation past ``cancel_grace`` and was left running.
        self.abandoned = abandoned


class CommandFailedError(SubplanError):
    """A command exited non-zero, was killed by a signal or could not start.

    The message is one short sentence ("exited with code 3", "killed by signal SIGTERM"); the
    output stays in attributes so that events can show it without repeating it in every message.
    """

    def __init__(
        self,
        message: str,
        *,
        exit_code: int | None = None,
        signal: str | None = None,
        log_file: str | None = None,
        output_tail: str = "",
    ) -> None:
        super().__init__(message)
        #: The exit status; None when a signal killed it. 127/126 when it could not start.
        self.exit_code = exit_code
        #: The name of the signal that killed it, such as ``"SIGKILL"``.
        self.signal = signal
        self.log_file = log_file
        #: The last lines of its output, possibly ``""``.
        self.output_tail = output_tail


class WorkerLostError(SubplanError):
    """The cluster worker that ran an attempt was lost (killed, crashed, disconnected); the
    attempt failed, and ``retries`` counts it as any failure. ``worker`` is its address."""

    def __init__(self, message: str, *, worker: str | None = None) -> None:
        super().__init__(message)
        self.worker = worker


class BackendError(SubplanError):
    """A cluster backend cannot be used: the one-line message says what and how to fix it."""


class DispatchError(SubplanError):
    """A dispatch failed; ``results`` holds the result of every subplan, in input order.

    ``except DispatchError`` catches the failure of a dispatch in either failure mode.
    """

    results: list[SubplanResult]


class SubplanExecutionError(DispatchError):
    """A subplan failed; ``__cause__`` is the subplan's own exception."""

    def __init__(
        self, subplan_id: str, results: Sequence[SubplanResult], error: BaseException
    ) -> None:
        super().__init__(f"subplan {subplan_id!r} failed: {_describe(error)}")
        self.subplan_id = subplan_id
        self.results = list(results)
        self.__cause__ = error


class AggregateSubplanError(ExceptionGroup[SubplanExecutionError], DispatchError):
    """Every failure of a dispatch, one ``SubplanExecutionError`` per failed subplan in input order."""

    def __new__(
        cls,
        message: str,
        exceptions: Sequence[SubplanExecutionError],
        results: Sequence[SubplanResult] = (),
    ) -> Self:
        self = super().__new__(cls, message, exceptions)
        self.results = list(results)
        return self

    def __init__(
        self,
        message: str,
        exceptions: Sequence[SubplanExecutionError],
        results: Sequence[SubplanResult] = (),
    ) -> None:
        super().__init__(message, exceptions)

    def derive(self, excs: Sequence[Any]) -> AggregateSubplanError:  # type: ignore[override]
        """Keep the type and the results when ``except*`` splits the group."""
        return AggregateSubplanError(self.message, excs, self.results)


def _describe(error: BaseException) -> str:
    text = str(error)
    name = type(error).__name__
    return f"{name}: {text}" if text else name


class StoreError(SubplanError):
    """The store cannot be opened, read or written; the one-line message names the path."""


class RunNotFoundError(StoreError):
    """No run with the id asked for (or no run at all) is in the store."""


class RunBusyError(SubplanError):
    """Another live process drives the run; the message names the run and that process."""


class PlanRunningError(RunBusyError):
    """Another live run of the same plan file is in the store: running the plan twice at once
    could do the same work twice. The attributes name that run and the process driving it."""

    def __init__(
        self, message: str, *, run_id: str, plan_file: str, pid: int | None, host: str | None
    ) -> None:
        super().__init__(message)
        self.run_id = run_id
        self.plan_file = plan_file
        self.pid = pid
        self.host = host


class RunNotLiveError(SubplanError):
    """The run has no live owner to signal: it has ended, or its owner is gone."""
