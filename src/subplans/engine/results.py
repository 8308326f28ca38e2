"""How a subplan ended: the ``SubplanResult`` that dispatches return and dispatch errors carry.

A module of its own, below the errors, so that the errors can name it without a circle.

A dispatch of a million subplans returns a million results, so a result is packed (issue #10:
peak RSS of 1,000,000 results returned <= 200 MB). As a slotted dataclass it took 96 bytes,
plus two float objects of 32 bytes each for its stamps. Now it has four slots (64 bytes): the
two stamps share one ``complex`` (32 bytes: two doubles, exactly the floats given), and
``value``, ``error`` and ``attempts`` share one slot that holds just ``attempts`` (a cached
small int) in the common case where both others are None. 232 -> 168 bytes a result, its id
string included. The fields read and compare as before.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from subplans.engine.clock import utc
from subplans.engine.states import SubplanExecutionState

__all__ = ["SubplanResult"]


class SubplanResult:
    """How a subplan ended; ``started``/``finished`` are epoch seconds (None if never started)."""

    __slots__ = ("_outcome", "_stamps", "state", "subplan_id")
    # The fields, in the order ``__init__`` takes them, ``repr`` shows them and ``==`` compares.
    __match_args__ = ("subplan_id", "state", "value", "error", "started", "finished", "attempts")
    __hash__ = None  # type: ignore[assignment]  # mutable, compared by value: not hashable

    subplan_id: str
    state: SubplanExecutionState
    # complex(started, finished) when both are set, else the tuple (started, finished).
    _stamps: complex | tuple[float | None, float | None]
    # ``attempts`` alone when value and error are None, else (value, error, attempts).
    _outcome: int | tuple[Any, BaseException | None, int]

    def __init__(
        self,
        subplan_id: str,
        state: SubplanExecutionState,
        value: Any = None,
        error: BaseException | None = None,
        started: float | None = None,
        finished: float | None = None,
        attempts: int = 0,
    ) -> None:
        # Written out rather than through the setters: a million dispatches build a million.
        self.subplan_id = subplan_id
        self.state = state
        if started is None or finished is None:
            self._stamps = (started, finished)
        else:
            self._stamps = complex(started, finished)
        if value is None and error is None and type(attempts) is int:
            self._outcome = attempts
        else:
            self._outcome = (value, error, attempts)

    def _set_stamps(self, started: float | None, finished: float | None) -> None:
        if started is None or finished is None:
            self._stamps = (started, finished)
        else:
            self._stamps = complex(started, finished)

    def _set_outcome(self, value: Any, error: BaseException | None, attempts: int) -> None:
        if value is None and error is None and type(attempts) is int:
            self._outcome = attempts
        else:
            self._outcome = (value, error, attempts)

    @property
    def value(self) -> Any:
        """What the subplan's ``run`` returned (None if it failed)."""
        outcome = self._outcome
        return None if type(outcome) is int else outcome[0]  # type: ignore[index]

    @value.setter
    def value(self, value: Any) -> None:
        self._set_outcome(value, self.error, self.attempts)

    @property
    def error(self) -> BaseException | None:
        """The exception it failed with, or None."""
        outcome = self._outcome
        return None if type(outcome) is int else outcome[1]  # type: ignore[index]

    @error.setter
    def error(self, error: BaseException | None) -> None:
        self._set_outcome(self.value, error, self.attempts)

    @property
    def attempts(self) -> int:
        """How many attempts were made (0 if it never started)."""
        outcome = self._outcome
        return outcome if type(outcome) is int else outcome[2]  # type: ignore[index]

    @attempts.setter
    def attempts(self, attempts: int) -> None:
        self._set_outcome(self.value, self.error, attempts)

    @property
    def started(self) -> float | None:
        """Epoch seconds when its first attempt started, or None if it never started."""
        stamps = self._stamps
        return stamps.real if type(stamps) is complex else stamps[0]  # type: ignore[index]

    @started.setter
    def started(self, started: float | None) -> None:
        self._set_stamps(started, self.finished)

    @property
    def finished(self) -> float | None:
        """Epoch seconds when it reached its terminal state."""
        stamps = self._stamps
        return stamps.imag if type(stamps) is complex else stamps[1]  # type: ignore[index]

    @finished.setter
    def finished(self, finished: float | None) -> None:
        self._set_stamps(self.started, finished)

    @property
    def started_at(self) -> datetime | None:
        """When its first attempt started (UTC), or None if it never started."""
        started = self.started
        return None if started is None else utc(started)

    @property
    def finished_at(self) -> datetime | None:
        """When it reached its terminal state (UTC)."""
        finished = self.finished
        return None if finished is None else utc(finished)

    @property
    def duration(self) -> float | None:
        """``finished - started`` in seconds, or None if it never started: the difference of
        two wall-clock stamps (``clock.now()``), which a wall clock set meanwhile bends."""
        started, finished = self.started, self.finished
        if started is None or finished is None:
            return None
        return finished - started

    def _fields(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in self.__match_args__)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._fields() == other._fields()

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__match_args__)
        return f"{self.__class__.__qualname__}({shown})"

    def __reduce__(self) -> tuple[type[SubplanResult], tuple[Any, ...]]:
        return self.__class__, self._fields()


_new = object.__new__
