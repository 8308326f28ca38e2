"""The tables of stored runs and subplans: ``subplans runs`` (with the time each run was
running), the runs an ambiguous RUN_ID could name, and ``subplans status RUN_ID --subplans``.

Columns are padded to the widest cell, durations and numbers aligned on the right; ids, names
and errors are ``visible()``: they come from plans, and no control character in them reaches
the terminal raw.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping, Sequence

from subplans.cli.reports import cancelled_error, counts_text
from subplans.sinks.formatting import duration, visible
from subplans.store import RunInfo, RunStatus, SubplanInfo

__all__ = ["candidate_lines", "runs_lines", "shown_state", "subplan_lines", "subplan_state"]


def _table(rows: Sequence[Sequence[str]], *, right: Collection[int] = ()) -> list[str]:
    """``rows`` (the header first) in columns two spaces apart; ``right`` aligns on the right."""
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    return [
        "  ".join(
            f"{cell:>{widths[i]}}" if i in right else f"{cell:<{widths[i]}}"
            for i, cell in enumerate(row)
        ).rstrip()
        for row in rows
    ]


def _when(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(seconds))


def _seconds(value: float | None) -> str:
    return "-" if value is None else duration(value)


def runs_lines(runs: Sequence[RunInfo], active: Mapping[str, float | None]) -> list[str]:
    """``subplans runs``: one line per run under a header: ``took`` is its span from the first
    start to the last end, ``active`` the time it was running (its run and resumes)."""
    header = ("run", "status", "started (UTC)", "took", "active", "subplans", "plan")
    rows = [header]
    for run in runs:
        rows.append(
            (
                run.id,
                run.status,
                _when(run.started_at),
                _seconds(run.duration),
                _seconds(active.get(run.id)),
                counts_text(run.counts),
                visible(run.plan_name),
            )
        )
    return _table(rows, right=(3, 4))


def candidate_lines(runs: Sequence[RunInfo], *, more: int = 0) -> list[str]:
    """The runs an ambiguous RUN_ID could name, newest first, then how many more there are."""
    rows = [("run", "status", "started (UTC)", "plan")]
    rows += [(run.id, run.status, _when(run.started_at), visible(run.plan_name)) for run in runs]
    return _table(rows) + ([f"+{more} more"] if more > 0 else [])


def subplan_state(subplan: SubplanInfo, run: RunInfo) -> str:
    """The subplan's state as the run's counts show it: ``interrupted``, not ``running``, when
    the run's process died while it ran."""
    if run.status == RunStatus.INTERRUPTED and subplan.state == "running":
        return "interrupted"
    return str(subplan.state)


def shown_state(subplan: SubplanInfo, run: RunInfo) -> str:
    """The subplan's state in the summary's words: ``cancelled`` for a failed one whose error is
    a cancellation, ``not run`` for a pending one of a run that ended, else ``subplan_state``."""
    if subplan.state == "failed" and cancelled_error(subplan.error):
        return "cancelled"
    if subplan.state == "pending" and run.status != RunStatus.RUNNING:
        return "not run"
    return subplan_state(subplan, run)


def subplan_lines(subplans: Sequence[SubplanInfo], run: RunInfo) -> list[str]:
    """``subplans status RUN_ID --subplans``: every subplan in plan order, under a header; with
    a ``worker`` column when a cluster worker ran any of them (``here`` for the others)."""
    workers = any(subplan.worker is not None for subplan in subplans)
    rows: list[tuple[str, ...]] = [
        ("subplan", "state", "attempts", "took", "exit code", *(("worker",) if workers else ()))
    ]
    for subplan in subplans:
        exit_code = subplan.exit_code
        row = (
            visible(subplan.subplan_id),
            shown_state(subplan, run),
            str(subplan.attempts),
            _seconds(subplan.elapsed),
            "-" if exit_code is None else str(exit_code),
        )
        where = subplan.worker or ("here" if subplan.started is not None else "-")
        rows.append((*row, visible(where)) if workers else row)
    return _table(rows, right=(2, 3, 4))
