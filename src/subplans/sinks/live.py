"""The live terminal view: plan and step, a progress bar with counts per state and an ETA,
the longest-running subplans, and each failure printed above it as it happens.

Rendering is pulled, not pushed: Rich's refresh thread calls ``render()`` a bounded number of
times a second, and ``render()`` reads the ``ProgressReporter`` snapshot. Per event the view
does nothing but print the rare failure, so a plan of thousands of subplans stays smooth.

Text from plans and subplans is ``visible()`` and given to Rich as ``Text``, never as a string
Rich would read markup in: ``[bold red]`` in an error is shown as it is.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable
from operator import itemgetter
from types import TracebackType

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from subplans.engine.events import Event, SubplanStateChanged
from subplans.engine.progress import ProgressReporter
from subplans.engine.states import SubplanExecutionState
from subplans.sinks.formatting import (
    clock_time,
    duration,
    error_text,
    is_cancellation,
    tail,
    visible,
)
from subplans.sinks.plan_progress import PlanProgress

__all__ = ["LiveView"]

_RUNNING = SubplanExecutionState.RUNNING
_COMPLETED = SubplanExecutionState.COMPLETED
_FAILED = SubplanExecutionState.FAILED


class LiveView:
    """A bus subscriber and a Rich ``Live`` display; use it as a context manager around the run.

    ``clock`` must be the reporter's clock (running times are measured on it); it is injectable
    so that tests render a known moment.
    """

    def __init__(
        self,
        console: Console,
        reporter: ProgressReporter,
        progress: PlanProgress,
        *,
        run_id: str,
        clock: Callable[[], float] = time.monotonic,
        refresh_per_second: float = 8.0,
        max_running: int = 10,
        bar_width: int = 40,
    ) -> None:
        self.console = console
        self.reporter = reporter
        self.progress = progress
        self.run_id = run_id
        self.max_running = max_running
        self.bar_width = bar_width
        self._clock = clock
        self._live = Live(
            console=console,
            get_renderable=self.render,
            auto_refresh=True,
            refresh_per_second=refresh_per_second,
            transient=True,
        )

    def __repr__(self) -> str:
        state = "started" if self._live.is_started else "stopped"
        return f"<LiveView {self.progress.plan.name!r} {state}>"

    def __enter__(self) -> LiveView:
        self._live.start(refresh=True)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._live.stop()

    def __call__(self, event: Event) -> None:
        # Only a failure of a subplan that ran is printed; those cancelled before they started
        # are counted in the summary instead of scrolling by in hundreds.
        if (
            isinstance(event, SubplanStateChanged)
            and event.state is _FAILED
            and event.previous is _RUNNING
        ):
            self.console.print(self.failure(event))

    def failure(self, event: SubplanStateChanged) -> RenderableType:
        """How a failure is printed above the live area."""
        subplan_id = visible(event.subplan_id)
        if is_cancellation(event.error):
            return Text.assemble(
                ("■ ", "yellow"), (subplan_id, "bold"), f"  {error_text(event.error)}"
            )
        headline = Text.assemble(
            ("✗ ", "bold red"), (subplan_id, "bold red"), f"  {error_text(event.error)}"
        )
        lines = [Text(f"    │ {line}", style="dim") for line in tail(event.error)]
        log_file = getattr(event.error, "log_file", None)
        if log_file:
            lines.append(Text(f"    log: {visible(str(log_file))}", style="dim"))
        return Group(headline, *lines)

    def render(self) -> RenderableType:
        """The live area now: called by Rich's refresh thread, a bounded number of times a second."""
        snapshot = self.reporter.snapshot()
        now = self._clock()
        counts = snapshot.counts
        progress = self.progress
        running = counts[_RUNNING]
        # Subplans skipped because they already completed count as done.
        done = snapshot.done + progress.resumed
        # The whole tree, less the skipped steps; the dispatchers announce steps as they start.
        total = max(progress.total - progress.skipped, snapshot.total + progress.resumed)
        pending = max(total - done - running, 0)
        step = progress.current

        header = Text.assemble((visible(progress.plan.name), "bold"))
        if step is not None:
            header.append(f"  step {step.index + 1}/{len(progress.plan.steps)} ")
            header.append(visible(step.name), style="bold cyan")
        header.append(f"  run {self.run_id}", style="dim")

        left = pending + running
        if left == 0:
            eta: float | None = 0.0
        elif snapshot.mean_duration is None:
            eta = None
        else:
            width = max(1, min(step.max_parallel if step is not None else 1, left))
            eta = snapshot.mean_duration * left / width
        percent = 100 * done // total if total else 100
        bar = Table.grid(padding=(0, 1))
        bar.add_row(
            ProgressBar(total=max(total, 1), completed=done, width=self.bar_width),
            Text(f"{done}/{total}  {percent}%"),
            Text(f"elapsed {clock_time(snapshot.elapsed)}", style="dim"),
            Text(f"ETA {clock_time(eta) if eta is not None else '-:--:--'}", style="cyan"),
        )

        states = Text.assemble(
            ("pending ", "dim"),
            f"{pending}   ",
            ("running ", "yellow"),
            f"{running}   ",
            ("completed ", "green"),
            f"{counts[_COMPLETED]}   ",
            ("failed ", "red"),
            str(counts[_FAILED]),
        )
        if progress.resumed:
            states.append("   already completed ", style="dim")
            states.append(str(progress.resumed))

        parts: list[RenderableType] = [header, bar, states]
        if snapshot.running:
            longest = heapq.nsmallest(self.max_running, snapshot.running.items(), key=itemgetter(1))
            table = Table.grid(padding=(0, 2))
            table.add_column(no_wrap=True, overflow="ellipsis")
            table.add_column(justify="right", style="yellow")
            for subplan_id, began in longest:
                table.add_row(Text(f"  {visible(subplan_id)}"), Text(duration(now - began)))
            parts.append(table)
            more = len(snapshot.running) - len(longest)
            if more > 0:
                parts.append(Text(f"  +{more} more running", style="dim"))
        return Group(*parts)
