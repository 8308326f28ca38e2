"""The end-of-run summary: outcome, totals, wall time, and a table of the failed subplans.

It is built from what the sinks followed (the ``ProgressReporter`` snapshot and
``PlanProgress``), not from the executor's result: an interrupted run has no result, yet its
summary must say what ran, what failed and what was cancelled. ``lines()`` is plain text for
logs and pipes; ``render()`` is the same for a terminal, with colour (Rich is imported only then).
Text from plans and subplans is ``visible()`` in both, and never read as Rich markup.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

from subplans.engine.progress import Failure, ProgressSnapshot
from subplans.engine.states import StepState, SubplanExecutionState
from subplans.sinks.formatting import duration, error_text, is_cancellation, visible

if TYPE_CHECKING:
    from rich.console import RenderableType

    from subplans.sinks.plan_progress import PlanProgress, StepView

__all__ = ["MAX_FAILURE_ROWS", "Outcome", "RunSummary"]

#: The failure table shows at most this many rows; the rest are counted below it.
MAX_FAILURE_ROWS = 20

_HEADER = ("failed subplan", "error", "exit code", "log file")


class Outcome(StrEnum):
    """How a run ended."""

    COMPLETED = "completed"
    FAILED = "failed"
    INTERRUPTED = "interrupted"


_OUTCOME_STYLE: dict[str, str] = {
    Outcome.COMPLETED: "bold green",
    Outcome.FAILED: "bold red",
    Outcome.INTERRUPTED: "bold yellow",
}
_STEP_STYLE: dict[str, str] = {
    StepState.COMPLETED: "green",
    StepState.FAILED: "red",
    StepState.RUNNING: "yellow",
}


@dataclass(frozen=True, slots=True)
class RunSummary:
    """What a run did: ``outcome`` is completed, failed or interrupted; ``elapsed`` is wall time."""

    plan: str
    run_id: str
    log_dir: Path
    outcome: str
    elapsed: float
    total: int
    counts: Mapping[SubplanExecutionState, int]
    failures: Sequence[Failure]
    steps: Sequence[StepView]
    #: Subplans not run because they already completed (a resumed run).
    resumed: int = 0

    @classmethod
    def collect(
        cls,
        progress: PlanProgress,
        snapshot: ProgressSnapshot,
        *,
        outcome: str,
        elapsed: float,
        run_id: str,
        log_dir: Path,
    ) -> RunSummary:
        """The summary of a run from the sinks that followed it."""
        return cls(
            plan=progress.plan.name,
            run_id=run_id,
            log_dir=log_dir,
            outcome=outcome,
            elapsed=elapsed,
            total=progress.total,
            counts=snapshot.counts,
            failures=snapshot.failures,
            steps=progress.steps(),
            resumed=progress.resumed,
        )

    @property
    def not_run(self) -> int:
        """Units that never ran: skipped steps, and nested plans that never started."""
        counts = self.counts
        done = counts[SubplanExecutionState.COMPLETED] + counts[SubplanExecutionState.FAILED]
        return max(self.total - done - self.resumed, 0)

    def headline(self) -> str:
        """``plan NAME OUTCOME in WALL TIME  (run RUN_ID)``."""
        plan = visible(self.plan)
        return f"plan {plan} {self.outcome} in {duration(self.elapsed)}  (run {self.run_id})"

    def totals(self) -> str:
        """``N total, N completed, N failed[, N already completed][, N not run]``."""
        counts = self.counts
        shown = [
            f"{self.total} total",
            f"{counts[SubplanExecutionState.COMPLETED]} completed",
            f"{counts[SubplanExecutionState.FAILED]} failed",
        ]
        if self.resumed:
            shown.append(f"{self.resumed} already completed")
        if self.not_run:
            shown.append(f"{self.not_run} not run")
        return ", ".join(shown)

    def rows(self) -> tuple[list[tuple[str, str, str, str]], int]:
        """The failure table (failures that are not cancellations) and how many rows it hides;
        every cell ``visible()``."""
        errors = [f for f in self.failures if not is_cancellation(f.error)]
        rows = []
        for failure in errors[:MAX_FAILURE_ROWS]:
            error = failure.error
            code = getattr(error, "exit_code", None)
            log_file = getattr(error, "log_file", None)
            rows.append(
                (
                    visible(failure.subplan_id),
                    error_text(error),
                    str(code)
                    if code is not None
                    else visible(getattr(error, "signal", None) or ""),
                    visible(_shown_path(Path(log_file))) if log_file else "",
                )
            )
        return rows, max(len(errors) - MAX_FAILURE_ROWS, 0)

    def cancelled(self) -> list[tuple[int, str]]:
        """How many subplans were cancelled, per reason, the most common first."""
        reasons = Counter(error_text(f.error) for f in self.failures if is_cancellation(f.error))
        return [(n, reason) for reason, n in reasons.most_common()]

    def lines(self) -> list[str]:
        """The summary as plain text lines."""
        steps = ", ".join(f"{visible(step.name)} {step.state}" for step in self.steps)
        found = [
            self.headline(),
            f"  subplans  {self.totals()}",
            f"  steps     {steps}",
            f"  logs      {visible(_shown_path(self.log_dir))}",
        ]
        rows, hidden = self.rows()
        if rows:
            table = [_HEADER, *rows]
            widths = [max(len(row[column]) for row in table) for column in range(3)]
            for name, error, code, log in table:
                found.append(
                    f"  {name:<{widths[0]}}  {error:<{widths[1]}}  {code:>{widths[2]}}  {log}".rstrip()
                )
        if hidden:
            found.append(f"  +{hidden} more failed: see the logs or --events-jsonl")
        found.extend(f"  {n} cancelled: {reason}" for n, reason in self.cancelled())
        return found

    def render(self) -> RenderableType:
        """The summary as a Rich renderable, with colour."""
        from rich import box
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        parts: list[RenderableType] = []
        headline = Text()
        headline.append(
            f"plan {visible(self.plan)} {self.outcome}", style=_OUTCOME_STYLE[self.outcome]
        )
        headline.append(f" in {duration(self.elapsed)}  (run {self.run_id})")
        parts.append(headline)
        facts = Text()
        facts.append("  subplans  ", style="bold")
        facts.append(self.totals())
        facts.append("\n  steps     ", style="bold")
        for index, step in enumerate(self.steps):
            if index:
                facts.append(", ")
            facts.append(f"{visible(step.name)} ")
            facts.append(step.state, style=_STEP_STYLE.get(step.state, "dim"))
        facts.append("\n  logs      ", style="bold")
        facts.append(visible(_shown_path(self.log_dir)))
        parts.append(facts)
        rows, hidden = self.rows()
        if rows:
            table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1))
            # Ids and exit codes are never cut; the error wraps and a long log path folds, so a
            # narrow terminal still shows every column.
            widest = [max(len(row[i]) for row in rows) for i in range(4)]
            table.add_column(f"  {_HEADER[0]}", style="red", no_wrap=True, min_width=widest[0] + 2)
            table.add_column(_HEADER[1], min_width=min(widest[1], 24))
            table.add_column(_HEADER[2], justify="right", no_wrap=True, min_width=len(_HEADER[2]))
            table.add_column(_HEADER[3], overflow="fold")
            for name, error, code, log in rows:
                # Text, not str: Rich reads markup in a string cell ("[bold]" in an error).
                table.add_row(Text(f"  {name}"), Text(error), Text(code), Text(log))
            parts.append(table)
        if hidden:
            parts.append(Text(f"  +{hidden} more failed: see the logs or --events-jsonl"))
        for n, reason in self.cancelled():
            parts.append(Text(f"  {n} cancelled: {reason}", style="yellow"))
        return Group(*parts)


def _shown_path(path: Path) -> str:
    """``path`` relative to the working folder when it lies below it (shorter to read)."""
    if not path.is_absolute():
        return str(path)
    try:
        return str(path.relative_to(Path.cwd()))
    except (ValueError, OSError):  # not below it, or the working folder is gone
        return str(path)
