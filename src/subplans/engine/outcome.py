"""What a finished dispatch raises: its first failure under fail-fast, else every failure."""

from __future__ import annotations

from subplans.engine.errors import (
    AggregateSubplanError,
    SubplanCancelledError,
    SubplanExecutionError,
)
from subplans.engine.results import SubplanResult
from subplans.engine.states import SubplanExecutionState

__all__ = ["check_outcome", "failed_message"]

_FAILED = SubplanExecutionState.FAILED


def check_outcome(
    results: list[SubplanResult], first: SubplanResult | None, total: int, note: str | None = None
) -> None:
    """Raise for a dispatch of ``total`` subplans that had failures (``results`` has them);
    ``note`` (why it halted) ends the aggregate's message, which then counts the cancelled
    subplans apart from the failed ones (as the summary and ``status`` do).

    Raises:
        SubplanExecutionError: ``first``, the failure that stopped a fail-fast dispatch.
        AggregateSubplanError: one ``SubplanExecutionError`` per failed result, in order.
    """
    if first is not None:
        raise SubplanExecutionError(first.subplan_id, results, first.error)  # type: ignore[arg-type]
    failed = [r for r in results if r.state is _FAILED]
    failures = [SubplanExecutionError(r.subplan_id, results, r.error) for r in failed]  # type: ignore[arg-type]
    if note is None:
        message = f"{len(failures)} of {total} subplans failed"
    else:
        cancelled = sum(isinstance(r.error, SubplanCancelledError) for r in failed)
        message = failed_message(len(failed) - cancelled, cancelled, total, note)
    raise AggregateSubplanError(message, failures, results)


def failed_message(failed: int, cancelled: int, total: int, note: str) -> str:
    """``"4 of 10 subplans failed, 6 cancelled; <note>"`` (no count of none cancelled)."""
    message = f"{failed} of {total} subplans failed"
    if cancelled:
        message = f"{message}, {cancelled} cancelled"
    return f"{message}; {note}"
