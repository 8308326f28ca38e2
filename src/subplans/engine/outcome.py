"""What a finished dispatch raises: its first failure under fail-fast, else every failure."""

from __future__ import annotations

from subplans.engine.errors import AggregateSubplanError, SubplanExecutionError
from subplans.engine.results import SubplanResult
from subplans.engine.states import SubplanExecutionState

__all__ = ["check_outcome"]

_FAILED = SubplanExecutionState.FAILED


def check_outcome(
    results: list[SubplanResult], first: SubplanResult | None, total: int, note: str | None = None
) -> None:
    """Raise for a dispatch of ``total`` subplans that had failures (``results`` has them);
    ``note`` (why it halted) ends the aggregate's message.

    Raises:
        SubplanExecutionError: ``first``, the failure that stopped a fail-fast dispatch.
        AggregateSubplanError: one ``SubplanExecutionError`` per failed result, in order.
    """
    if first is not None:
        raise SubplanExecutionError(first.subplan_id, results, first.error)  # type: ignore[arg-type]
    failures = [
        SubplanExecutionError(r.subplan_id, results, r.error)  # type: ignore[arg-type]
        for r in results
        if r.state is _FAILED
    ]
    message = f"{len(failures)} of {total} subplans failed"
    if note is not None:
        message = f"{message}; {note}"
    raise AggregateSubplanError(message, failures, results)
