"""A live progress snapshot kept up to date from events, in O(1) per event."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Final, cast

from subplans.engine.bus import EventBus
from subplans.engine.events import (
    DispatchFinished,
    DispatchStarted,
    Event,
    SubplanStateChanged,
)
from subplans.engine.states import SubplanExecutionState
from subplans.engine.values import Value

if TYPE_CHECKING:
    from subplans.engine.control_events import LimitChanged
    from subplans.engine.limiter import AsyncSemaphoreLimiter, LimiterStatistics

__all__ = ["Failure", "ProgressReporter", "ProgressSnapshot"]

_RUNNING = SubplanExecutionState.RUNNING
_PENDING = SubplanExecutionState.PENDING
_FAILED = SubplanExecutionState.FAILED


class Failure(Value):
    """A subplan that failed, as the progress view reports it (``at``: on the reporter's
    clock)."""

    __slots__ = ("at", "error", "subplan_id")
    _fields = ("subplan_id", "error", "at")

    def __init__(self, subplan_id: str, error: BaseException | None, at: float) -> None:
        self.subplan_id: Final = subplan_id
        self.error: Final = error
        self.at: Final = at


@dataclass(frozen=True, slots=True)
class ProgressSnapshot:
    """Progress at one moment; times are on the reporter's clock (seconds)."""

    counts: Mapping[SubplanExecutionState, int]
    running: Mapping[str, float]
    failures: tuple[Failure, ...]
    elapsed: float
    eta: float | None
    #: Mean seconds a finished subplan ran (None until one finished), for estimates of more work.
    mean_duration: float | None = None
    #: False while a dispatch whose total is not known up front (a group, a lazy input) is
    #: open: ``total`` counts the subplans seen so far, so show no percentage (``eta`` is None).
    total_known: bool = True
    #: Each pool's usage (capacity, in use, peak, waiting), by name: the reporter's ``pools``.
    pools: Mapping[str, LimiterStatistics] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def total(self) -> int:
        """How many subplans are known."""
        return sum(self.counts.values())

    @property
    def done(self) -> int:
        """How many subplans are terminal."""
        return (
            self.counts[SubplanExecutionState.COMPLETED] + self.counts[SubplanExecutionState.FAILED]
        )


class ProgressReporter:
    """Follows a bus and keeps counts, running subplans, failures, elapsed time and an ETA.

    ``clock`` is injectable so that tests and displays control time; it defaults to
    ``time.monotonic``. ``pools`` (the dispatcher's) are read into each snapshot. A subplan
    announced again (a nested plan that its parent's retry runs again) counts once, in its
    latest state, and is among the failures only with its last failure, if it failed again.
    """

    def __init__(
        self,
        bus: EventBus | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        parallelism: int | None = None,
        pools: Mapping[str, AsyncSemaphoreLimiter] | None = None,
    ) -> None:
        self._clock = clock
        self._pools = dict(pools or {})
        self._started = clock()
        self._counts: dict[SubplanExecutionState, int] = dict.fromkeys(SubplanExecutionState, 0)
        self._running: dict[str, float] = {}
        #: The failed subplans by id, each with its last failure, in the order they failed.
        self._failures: dict[str, Failure] = {}
        #: The state each ended subplan ended in: a nested plan that its parent's retry runs
        #: again announces its subplans again (``previous`` None), and each must move from
        #: that state, not count twice.
        self._ended: dict[str, SubplanExecutionState] = {}
        self._finished_runs = 0
        self._run_time = 0.0
        self._parallelism = parallelism
        #: Open dispatches without a total, by identity (by name for events that carry none):
        #: no ETA while there is one.
        self._open_without_total: dict[object, int] = {}
        self._unsubscribe: Callable[[], None] | None = None
        if bus is not None:
            self._unsubscribe = bus.subscribe(self.handle)

    def __repr__(self) -> str:
        shown = ", ".join(f"{state.value}={n}" for state, n in self._counts.items())
        return f"<ProgressReporter {shown}>"

    def close(self) -> None:
        """Stop following the bus."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    def handle(self, event: Event) -> None:
        """Fold one event into the snapshot (a bus subscriber)."""
        if isinstance(event, SubplanStateChanged):
            now = self._clock()
            counts, state, subplan_id = self._counts, event.state, event.subplan_id
            if event.previous is not None:
                counts[event.previous] -= 1
            else:
                ended = self._ended.pop(subplan_id, None)
                if ended is not None:  # run again by its nested plan's retry: counted once
                    counts[ended] -= 1
                    if ended is _FAILED:
                        del self._failures[subplan_id]
            counts[state] += 1
            if state is _RUNNING:
                self._running[subplan_id] = now
            elif state is not _PENDING:
                self._ended[subplan_id] = state
                began = self._running.pop(subplan_id, None)
                if began is not None:
                    self._finished_runs += 1
                    self._run_time += now - began
                if state is _FAILED:
                    self._failures[subplan_id] = Failure(subplan_id, event.error, now)
        elif isinstance(event, DispatchStarted):
            if self._parallelism is None:
                self._parallelism = event.config.max_parallel
            if event.total is None:
                unknown = self._open_without_total
                key = _key(event)
                unknown[key] = unknown.get(key, 0) + 1
        elif event.kind == "limit_changed":  # by kind: its module is loaded once a cap changes
            changed = cast("LimitChanged", event)
            if changed.pool is None:
                self._parallelism = changed.limit  # the ETA's width follows a live change
        elif isinstance(event, DispatchFinished) and _key(event) in self._open_without_total:
            unknown = self._open_without_total
            key = _key(event)
            unknown[key] -= 1
            if not unknown[key]:
                del unknown[key]

    def snapshot(self) -> ProgressSnapshot:
        """The progress now."""
        now = self._clock()
        counts = dict(self._counts)
        total_known = not self._open_without_total
        return ProgressSnapshot(
            counts=MappingProxyType(counts),
            running=MappingProxyType(dict(self._running)),
            failures=tuple(self._failures.values()),
            elapsed=now - self._started,
            eta=self._eta(counts) if total_known else None,
            mean_duration=self._run_time / self._finished_runs if self._finished_runs else None,
            total_known=total_known,
            pools=MappingProxyType({name: p.statistics() for name, p in self._pools.items()}),
        )

    def _eta(self, counts: Mapping[SubplanExecutionState, int]) -> float | None:
        """Mean duration so far times the waves of work left; None until one subplan ended."""
        left = counts[_PENDING] + counts[_RUNNING]
        if left == 0:
            return 0.0
        if self._finished_runs == 0:
            return None
        mean = self._run_time / self._finished_runs
        width = max(1, min(self._parallelism or 1, left))
        return mean * left / width


def _key(event: DispatchStarted | DispatchFinished) -> object:
    """Which dispatch an event is of: its ``dispatch`` number, else (built by hand) its name."""
    return event.dispatch or ("name", event.name)
