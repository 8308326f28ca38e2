"""The end-of-run summary: outcome, totals, wall time, and a table of the failed subplans.

It is built from what the sinks followed (the ``ProgressReporter`` snapshot and
``PlanProgress``), not from the executor's result: an interrupted run has no result, yet its
summary must say what ran, what failed and what was cancelled (a subplan the engine records as
failed with a ``SubplanCancelledError`` is counted as cancelled; a step the run never started,
as not run). ``lines()`` is plain text for logs and pipes; ``show()`` prints the same on a
terminal, with colour (Rich is imported only then), and log paths whole however narrow it is.
Text from plans and subplans is ``visible()`` in both, and never read as Rich markup.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Final

from subplans.engine.progress import Failure, ProgressSnapshot
from subplans.engine.states import StepState, SubplanExecutionState
from subplans.engine.values import Value
from subplans.sinks.formatting import (
    duration,
    error_text,
    is_cancellation,
    step_error_text,
    visible,
)

if TYPE_CHECKING:
    from rich.console import Console, RenderableType

    from subplans.engine.control_events import DispatchHalted
    from subplans.sinks.plan_progress import PlanProgress, StepView

__all__ = ["MAX_FAILURE_ROWS", "Outcome", "RunSummary"]

#: The failure table shows at most this many rows; the rest are counted below it.
MAX_FAILURE_ROWS = 20

_HEADER = ("failed subplan", "error", "exit code", "log file")
#: The header as the terminal's table shows it: indented like the rest of the summary.
_HEADER_CELLS = (f"  {_HEADER[0]}", *_HEADER[1:])


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
    "cancelled": "yellow",
}
#: How the summary names a step's last state: one that never started did not run; it is not
#: waiting for anything any more.
_STEP_ENDS = {"pending": "not run"}


class RunSummary(Value):
    """What a run did: ``outcome`` is completed, failed or interrupted; ``elapsed`` is wall time."""

    # A plain class: a dataclass costs the command's start most of a millisecond to build (#10).
    __slots__ = (
        "counts",
        "elapsed",
        "failures",
        "halted",
        "log_dir",
        "outcome",
        "plan",
        "resumed",
        "run_id",
        "step_errors",
        "steps",
        "total",
    )
    _fields = (
        "plan",
        "run_id",
        "log_dir",
        "outcome",
        "elapsed",
        "total",
        "counts",
        "failures",
        "steps",
        "resumed",
        "step_errors",
        "halted",
    )

    def __init__(
        self,
        plan: str,
        run_id: str,
        log_dir: Path,
        outcome: str,
        elapsed: float,
        total: int,
        counts: Mapping[SubplanExecutionState, int],
        failures: Sequence[Failure],
        steps: Sequence[StepView],
        resumed: int = 0,
        step_errors: Sequence[tuple[str, BaseException]] = (),
        halted: Sequence[str] = (),
    ) -> None:
        self.plan: Final = plan
        self.run_id: Final = run_id
        self.log_dir: Final = log_dir
        self.outcome: Final = outcome
        self.elapsed: Final = elapsed
        self.total: Final = total
        self.counts: Final = counts
        self.failures: Final = failures
        self.steps: Final = steps
        #: Subplans not run because they already completed (a resumed run).
        self.resumed: Final = resumed
        #: Steps that failed by themselves (a ``for_each`` source that could not be read), by id,
        #: with their error: no subplan failure says why.
        self.step_errors: Final = step_errors
        #: Which ``halt`` threshold stopped which step: one line each.
        self.halted: Final = halted

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
            total=progress.known_total(snapshot.total),
            counts=snapshot.counts,
            failures=snapshot.failures,
            steps=progress.steps(),
            resumed=progress.resumed,
            step_errors=tuple(progress.step_errors.items()),
            halted=tuple(halted_line(event) for event in progress.halted),
        )

    @property
    def cancelled_count(self) -> int:
        """Subplans that were cancelled (the engine records them as failed, with a
        ``SubplanCancelledError``; an abandoned one too): a Ctrl-C, ``subplans cancel``, a
        fail-fast stop."""
        return sum(1 for f in self.failures if is_cancellation(f.error))

    @property
    def failed_count(self) -> int:
        """Subplans that failed by their own doing (not cancelled)."""
        return self.counts[SubplanExecutionState.FAILED] - self.cancelled_count

    @property
    def not_run(self) -> int:
        """Units that never ran: skipped steps, steps never started, and nested plans that never
        started."""
        counts = self.counts
        done = counts[SubplanExecutionState.COMPLETED] + counts[SubplanExecutionState.FAILED]
        return max(self.total - done - self.resumed, 0)

    def headline(self) -> str:
        """``plan NAME OUTCOME in WALL TIME  (run RUN_ID)``."""
        plan = visible(self.plan)
        return f"plan {plan} {self.outcome} in {duration(self.elapsed)}  (run {self.run_id})"

    def totals(self) -> str:
        """``N total, N completed, N failed[, N cancelled][, N already completed][, N not run]``."""
        cancelled = self.cancelled_count
        shown = [
            f"{self.total} total",
            f"{self.counts[SubplanExecutionState.COMPLETED]} completed",
            f"{self.failed_count} failed",
        ]
        if cancelled:
            shown.append(f"{cancelled} cancelled")
        if self.resumed:
            shown.append(f"{self.resumed} already completed")
        if self.not_run:
            shown.append(f"{self.not_run} not run")
        return ", ".join(shown)

    def step_states(self) -> list[tuple[str, str]]:
        """Every root step's name, ``visible()``, and how it ended: completed, failed, cancelled,
        skipped, or ``not run`` (never started: the run ended first)."""
        return [(visible(step.name), _STEP_ENDS.get(step.state, step.state)) for step in self.steps]

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

    def step_failures(self) -> tuple[list[tuple[str, str]], int]:
        """Why steps failed by themselves, one ``(message, items log)`` each (the log ``""``
        when there is none), at most ``MAX_FAILURE_ROWS``, and how many more there are; the
        message is one ``visible()`` line that names the step, the log path is whole."""
        shown = []
        for step_id, error in self.step_errors[:MAX_FAILURE_ROWS]:
            text = step_error_text(step_id, error)
            log_file = getattr(error, "log_file", None)
            shown.append((text, visible(_shown_path(Path(log_file))) if log_file else ""))
        return shown, max(len(self.step_errors) - MAX_FAILURE_ROWS, 0)

    def _step_failure_lines(self) -> list[tuple[str, bool]]:
        """The ``error`` lines of ``step_failures()``, each with True if it holds a path."""
        found: list[tuple[str, bool]] = []
        errors, hidden = self.step_failures()
        for index, (text, log) in enumerate(errors):
            found.append((f"{_ERROR if index == 0 else _INDENT}{text}", False))
            if log:
                found.append((f"{_INDENT}log: {log}", True))
        if hidden:
            found.append((f"{_INDENT}+{hidden} more failed steps: see --events-jsonl", False))
        return found

    def cancelled(self) -> list[tuple[int, str]]:
        """How many subplans were cancelled, per reason, the most common first."""
        reasons = Counter(error_text(f.error) for f in self.failures if is_cancellation(f.error))
        return [(n, reason) for reason, n in reasons.most_common()]

    def lines(self) -> list[str]:
        """The summary as plain text lines."""
        steps = ", ".join(f"{name} {state}" for name, state in self.step_states())
        found = [
            self.headline(),
            f"  subplans  {self.totals()}",
            f"  steps     {steps}",
            *(line for line, _ in self._step_failure_lines()),
            *(f"  halted    {line}" for line in self.halted),
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

    def render(self, width: int | None = None) -> RenderableType:
        """The summary as a Rich renderable, with colour, for a terminal ``width`` columns wide
        (None: as wide as it takes). ``show()`` prints it with every path whole."""
        from rich.console import Group

        return Group(*(part for part, _ in self._parts(width)))

    def show(self, console: Console) -> None:
        """Print the summary on ``console``: log paths are never wrapped nor cut (a copied path
        must work), so a line with a path is printed as it is and the terminal wraps it, if it
        must, softly; a path that does not fit beside its label goes on a line of its own."""
        for part, whole in self._parts(console.width):
            console.print(part, soft_wrap=whole)

    def _parts(self, width: int | None) -> Iterator[tuple[RenderableType, bool]]:
        """What ``render()`` shows, part by part, each with True if it holds a path."""
        from rich.text import Text

        headline = Text()
        headline.append(
            f"plan {visible(self.plan)} {self.outcome}", style=_OUTCOME_STYLE[self.outcome]
        )
        headline.append(f" in {duration(self.elapsed)}  (run {self.run_id})")
        yield headline, False
        facts = Text()
        facts.append("  subplans  ", style="bold")
        facts.append(self.totals())
        facts.append("\n  steps     ", style="bold")
        for index, (name, state) in enumerate(self.step_states()):
            if index:
                facts.append(", ")
            facts.append(f"{name} ")
            facts.append(state, style=_STEP_STYLE.get(state, "dim"))
        yield facts, False
        for line, whole in self._step_failure_lines():
            yield Text(line, style="dim" if whole else "red"), whole
        for line in self.halted:
            yield Text.assemble(("  halted    ", "bold"), (line, "yellow")), False
        logs = visible(_shown_path(self.log_dir))
        if width is None or len(_LOGS) + len(logs) <= width:
            yield Text.assemble((_LOGS, "bold"), logs), True
        else:
            yield Text.assemble((_LOGS.rstrip(), "bold"), f"\n    {logs}"), True
        rows, hidden = self.rows()
        if rows:
            yield from _failure_table(rows, width)
        if hidden:
            yield Text(f"  +{hidden} more failed: see the logs or --events-jsonl"), False
        for n, reason in self.cancelled():
            yield Text(f"  {n} cancelled: {reason}", style="yellow"), False


def halted_line(event: DispatchHalted) -> str:
    """Which threshold of which policy stopped which dispatch, ``visible()``."""
    where = "the dispatch" if event.name is None else f"step {event.name}"
    return visible(f"{where}: its {event.threshold} threshold was reached (halt {event.policy})")


#: The label of the log folder's line.
_LOGS = "  logs      "
#: The label of a failed step's error, and the indent of the lines under it.
_ERROR = "  error     "
_INDENT = " " * len(_ERROR)
#: Columns between two cells of the failure table (padding, rule, padding).
_GUTTER = 3


def _failure_table(
    rows: Sequence[tuple[str, str, str, str]], width: int | None
) -> Iterator[tuple[RenderableType, bool]]:
    """The failure table, with the log files in a column of their own when every path fits
    whole in ``width``, below the table otherwise, each on a line of its own."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    cells = [_HEADER_CELLS, *((f"  {name}", *rest) for name, *rest in rows)]
    widest = [max(len(row[i]) for row in cells) for i in range(4)]
    if width is not None and widest[0] + min(widest[1], 24) + widest[2] + _GUTTER * 2 > width:
        # Too narrow for a table whose ids are never cut: one failure after the other.
        for name, error, code, log in rows:
            yield Text(f"  {name}", style="red"), True
            yield Text(f"    {error}" + (f"  (exit code {code})" if code.isdigit() else "")), False
            if log:
                yield Text(f"    {log}", style="dim"), True
        return
    logs = any(row[3] for row in rows)
    beside = width is None or not logs or sum(widest) + _GUTTER * 3 <= width
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1))
    # Ids and exit codes are never cut; the error wraps, so a narrow terminal still shows the
    # columns; a log path is never cut nor wrapped.
    table.add_column(_HEADER_CELLS[0], style="red", no_wrap=True, min_width=widest[0])
    table.add_column(_HEADER[1], min_width=min(widest[1], 24))
    table.add_column(_HEADER[2], justify="right", no_wrap=True, min_width=len(_HEADER[2]))
    if beside and logs:
        table.add_column(_HEADER[3], no_wrap=True, overflow="ignore")
    for name, error, code, log in rows:
        # Text, not str: Rich reads markup in a string cell ("[bold]" in an error).
        shown = [Text(f"  {name}"), Text(error), Text(code)]
        table.add_row(*shown, *([Text(log)] if beside and logs else []))
    yield table, beside and logs
    if not beside:
        for name, _, _, log in rows:
            if log:
                yield Text(f"  log of {name}:\n    {log}", style="dim"), True


def _shown_path(path: Path) -> str:
    """``path`` relative to the working folder when it lies below it (shorter to read)."""
    if not path.is_absolute():
        return str(path)
    try:
        return str(path.relative_to(Path.cwd()))
    except (ValueError, OSError):  # not below it, or the working folder is gone
        return str(path)
