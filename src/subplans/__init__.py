"""subplans: run a plan's subplans in parallel under a concurrency cap.

The public API is re-exported here from small single-purpose modules:

- ``config``: ``ParallelExecutionConfig`` and ``FailureMode``
- ``states``: the state machine and ``SubplanTracker``
- ``limiter``: ``AsyncSemaphoreLimiter``
- ``dispatcher``: ``Subplan``, ``SubplanResult`` and ``ParallelSubplanDispatcher``
- ``events``: ``EventBus`` and the event types
- ``progress``: ``ProgressReporter``
- ``errors``: the one exception hierarchy
"""

from __future__ import annotations

import logging
from importlib.metadata import PackageNotFoundError, version

from subplans.config import FailureMode, ParallelExecutionConfig
from subplans.dispatcher import ParallelSubplanDispatcher, Subplan, SubplanResult
from subplans.errors import (
    AggregateSubplanError,
    ConfigError,
    InvalidTransitionError,
    SubplanCancelledError,
    SubplanError,
    SubplanExecutionError,
)
from subplans.events import (
    DispatchFinished,
    DispatchStarted,
    Event,
    EventBus,
    SubplanRetrying,
    SubplanStateChanged,
)
from subplans.limiter import AsyncSemaphoreLimiter, LimiterStatistics
from subplans.progress import ProgressReporter, ProgressSnapshot
from subplans.states import SubplanExecutionState, SubplanTracker

# A library logs, it never configures logging: no output unless the application asks.
logging.getLogger("subplans").addHandler(logging.NullHandler())

try:
    __version__ = version("subplans")
except PackageNotFoundError:  # pragma: no cover - only when run from a source tree
    __version__ = "0.0.0"

__all__ = [
    "AggregateSubplanError",
    "AsyncSemaphoreLimiter",
    "ConfigError",
    "DispatchFinished",
    "DispatchStarted",
    "Event",
    "EventBus",
    "FailureMode",
    "InvalidTransitionError",
    "LimiterStatistics",
    "ParallelExecutionConfig",
    "ParallelSubplanDispatcher",
    "ProgressReporter",
    "ProgressSnapshot",
    "Subplan",
    "SubplanCancelledError",
    "SubplanError",
    "SubplanExecutionError",
    "SubplanExecutionState",
    "SubplanResult",
    "SubplanRetrying",
    "SubplanStateChanged",
    "SubplanTracker",
    "__version__",
]
