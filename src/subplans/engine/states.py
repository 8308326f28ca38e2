"""The states of subplans, steps and plans, and the moves a subplan's state machine allows.

Only enums and sets here, so that every other engine module (errors included) can name a state
without importing what enforces them (``tracker``).
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "LEGAL_TRANSITIONS",
    "TERMINAL_STATES",
    "PlanState",
    "StepState",
    "SubplanExecutionState",
]


class SubplanExecutionState(StrEnum):
    """Where a subplan is in its life: pending -> running -> completed | failed."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"

    @property
    def is_terminal(self) -> bool:
        """True for COMPLETED and FAILED."""
        return self in TERMINAL_STATES


class StepState(StrEnum):
    """Where a step of a plan is: running -> completed | failed, or skipped (never started)."""

    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    SKIPPED = "skipped"


class PlanState(StrEnum):
    """How a plan ended: completed, failed, or cancelled (stopped from outside before its end)."""

    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


PENDING = SubplanExecutionState.PENDING
RUNNING = SubplanExecutionState.RUNNING
COMPLETED = SubplanExecutionState.COMPLETED
FAILED = SubplanExecutionState.FAILED

TERMINAL_STATES = frozenset({COMPLETED, FAILED})

#: The moves of a subplan, (before, after); pending -> failed is one cancelled before it started.
LEGAL_TRANSITIONS = frozenset(
    {(PENDING, RUNNING), (RUNNING, COMPLETED), (RUNNING, FAILED), (PENDING, FAILED)}
)
