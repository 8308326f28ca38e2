"""How a subplan ended: the ``SubplanResult`` that dispatches return and dispatch errors carry.

A module of its own, below the errors, so that the errors can name it without a circle.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from subplans.engine.clock import utc
from subplans.engine.states import SubplanExecutionState

__all__ = ["SubplanResult"]


@dataclass(slots=True)
class SubplanResult:
    """How a subplan ended; ``started``/``finished`` are epoch seconds (None if never started)."""

    subplan_id: str
    state: SubplanExecutionState
    value: Any = None
    error: BaseException | None = None
    started: float | None = None
    finished: float | None = None
    attempts: int = 0

    @property
    def started_at(self) -> datetime | None:
        """When its first attempt started (UTC), or None if it never started."""
        return None if self.started is None else utc(self.started)

    @property
    def finished_at(self) -> datetime | None:
        """When it reached its terminal state (UTC)."""
        return None if self.finished is None else utc(self.finished)

    @property
    def duration(self) -> float | None:
        """``finished - started`` in seconds, or None if it never started: the difference of
        two wall-clock stamps (``clock.now()``), which a wall clock set meanwhile bends."""
        if self.started is None or self.finished is None:
            return None
        return self.finished - self.started
