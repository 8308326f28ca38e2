"""What ``subplans status`` says of the caps changed while a run ran (``subplans limit``): each
as it is now and as it started, a request not applied yet, a request the run refused."""

from __future__ import annotations

from collections.abc import Sequence

from subplans.store import LimitRecord, RunInfo, RunStatus

__all__ = ["limit_lines", "max_parallel_of"]


def max_parallel_of(run: RunInfo, limits: Sequence[LimitRecord]) -> dict[str, int | None]:
    """The run's ``max_parallel``: as it started and as it is now."""
    values = run.profile.get("values") or {}
    original = values.get("max_parallel")
    current = original
    for limit in limits:
        if limit.target == "max_parallel" and limit.current is not None:
            current = limit.current
    return {"original": original, "current": current}


def limit_lines(run: RunInfo, limits: Sequence[LimitRecord]) -> list[str]:
    """One line per cap asked to change; none if none was."""
    lines: list[str] = []
    if not limits:
        return lines
    shown = max_parallel_of(run, limits)
    if shown["original"] is not None:
        line = f"max_parallel {shown['current']}"
        if shown["current"] != shown["original"]:
            line += f" (started with {shown['original']})"
        lines.append(line)
    for limit in limits:
        if limit.target == "max_parallel" and limit.error is None and not limit.pending:
            continue  # said above
        target = limit.target.replace(":", " ", 1)
        if target != "max_parallel" and limit.current is not None:
            target += f" {limit.current} (started with {limit.original})"
        if limit.error is not None:
            target += f": {limit.requested} refused: {limit.error}"
        elif limit.pending and run.status == RunStatus.RUNNING:
            target += f": {limit.requested} asked for, not applied yet"
        lines.append(target)
    return lines
