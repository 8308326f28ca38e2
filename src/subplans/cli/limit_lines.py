"""What ``subplans status`` says of the caps changed while a run ran (``subplans limit``): each
as it is now and as it started, a request not applied yet, a request the run refused."""

from __future__ import annotations

from collections.abc import Sequence

from subplans.store import LimitRecord, RunInfo, RunStatus
from subplans.store.limits import RUN_TARGET

__all__ = ["bounded", "in_effect", "limit_lines", "max_parallel_of", "run_cap"]


def max_parallel_of(run: RunInfo, limits: Sequence[LimitRecord]) -> dict[str, int | None]:
    """The run's ``max_parallel``: as it started and as it is now."""
    values = run.profile.get("values") or {}
    original = values.get("max_parallel")
    current = original
    for limit in limits:
        if limit.target == "max_parallel" and limit.current is not None:
            current = limit.current
    return {"original": original, "current": current}


def run_cap(limits: Sequence[LimitRecord]) -> int | None:
    """The run's ``max_parallel`` as ``subplans limit`` set it (None: never set)."""
    for limit in limits:
        if limit.target == RUN_TARGET:
            return limit.current
    return None


def in_effect(limit: LimitRecord, cap: int | None) -> int | None:
    """The cap ``limit`` set as it acts: a root step's (an id without "/") is bounded by the
    run's ``max_parallel`` as set (``cap``), as the budget of the whole run."""
    current = limit.current
    root_step = limit.target.startswith("step:") and "/" not in limit.target
    if current is not None and root_step and cap is not None and cap < current:
        return cap
    return current


def bounded(set_to: int | None, runs: int | None) -> str:
    """What to add when a step runs fewer at once than its cap was set to."""
    if set_to is None or runs is None or runs >= set_to:
        return ""
    return f" (runs at most {runs}: the run's max_parallel bounds it)"


def limit_lines(run: RunInfo, limits: Sequence[LimitRecord]) -> list[str]:
    """One line per cap asked to change; none if none was. A root step's cap shows as it
    acts, bounded by the run's ``max_parallel`` as changed."""
    lines: list[str] = []
    cap = run_cap(limits)
    if any(limit.target == RUN_TARGET for limit in limits):
        shown = max_parallel_of(run, limits)
        if shown["original"] is not None:
            line = f"max_parallel {shown['current']}"
            if shown["current"] != shown["original"]:
                line += f" (started with {shown['original']})"
            lines.append(line)
    for limit in limits:
        if limit.target == RUN_TARGET and limit.error is None and not limit.pending:
            continue  # said above
        target = limit.target.replace(":", " ", 1)
        if limit.target != RUN_TARGET and limit.current is not None:
            runs = in_effect(limit, cap)
            target += f" {runs} (started with {limit.original}"
            if runs != limit.current:
                target += f"; set to {limit.current}, the run's max_parallel bounds it"
            target += ")"
        if limit.error is not None:
            target += f": {limit.requested} refused: {limit.error}"
        elif limit.pending and run.status == RunStatus.RUNNING:
            target += f": {limit.requested} asked for, not applied yet"
        lines.append(target)
    return lines
