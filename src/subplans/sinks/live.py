"""The live terminal view: plan and step, a progress bar with counts per state and an ETA,
the longest-running subplans, and each failure printed above it as it happens. While a
dispatch whose total nothing has told yet is under way (a group, a lazy input), the bar pulses
and shows how many are done, without a percentage or an ETA, until its total is known.

Rendering is pulled, not pushed: Rich's refresh thread calls ``render()`` a bounded number of
times a second (at least one), events or not, and ``render()`` reads the ``ProgressReporter``
snapshot and the clock, so the elapsed time and the ETA move while no subplan ends. Per event
the view does nothing but print the rare failure and count the cancelled, so a plan of
thousands of subplans stays smooth.

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

from subplans.engine.events import Event, StepStateChanged, SubplanStateChanged
from subplans.engine.progress import ProgressReporter, ProgressSnapshot
from subplans.engine.states import StepState, SubplanExecutionState
from subplans.sinks.formatting import (
    clock_time,
    duration,
    error_text,
    is_cancellation,
    own_failure,
    step_error_text,
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
        if refresh_per_second < 1:
            # The elapsed time and the ETA must move at least once a second.
            raise ValueError(f"refresh_per_second must be at least 1, got {refresh_per_second}")
        self.console = console
        #: How often Rich's refresh thread renders the view, whether or not events come.
        self.refresh_per_second = refresh_per_second
        self.reporter = reporter
        self.progress = progress
        self.run_id = run_id
        self.max_running = max_running
        self.bar_width = bar_width
        self._clock = clock
        #: Subplans cancelled so far (among the failed ones of the reporter's counts).
        self.cancelled = 0
        # Their ids: a nested plan that its parent's retry runs again announces its subplans
        # again, and one cancelled before counts by its new state from then on.
        self._cancelled_ids: set[str] = set()
        # When the last estimate said the work would be done, and of what work (``_eta``).
        self._eta_due: float | None = None
        self._eta_work: object = None
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
        if not isinstance(event, SubplanStateChanged):
            if isinstance(event, StepStateChanged) and event.state is StepState.FAILED:
                self._step_failed(event)
            return
        if event.state is not _FAILED:
            if event.previous is None and event.subplan_id in self._cancelled_ids:
                self._cancelled_ids.discard(event.subplan_id)
                self.cancelled -= 1
            return
        if is_cancellation(event.error):
            # Recorded as failed by the engine, shown as cancelled: nothing it did failed.
            self._cancelled_ids.add(event.subplan_id)
            self.cancelled += 1
        # Only a failure of a subplan that ran is printed; those cancelled before they started
        # are counted instead of scrolling by in hundreds.
        if event.previous is _RUNNING:
            self.console.print(self.failure(event))
            log_file = getattr(event.error, "log_file", None)
            if log_file:
                # Soft-wrapped, never cut nor broken: a copied path must work.
                line = Text(f"    log: {visible(str(log_file))}", style="dim")
                self.console.print(line, soft_wrap=True)

    def _step_failed(self, event: StepStateChanged) -> None:
        """A step that failed by itself (its ``for_each`` source): why, and its log."""
        error = event.error
        if not own_failure(error):
            return
        self.console.print(Text.assemble(("✗ ", "bold red"), step_error_text(event.step_id, error)))
        log_file = getattr(error, "log_file", None)
        if log_file:
            self.console.print(
                Text(f"    log: {visible(str(log_file))}", style="dim"), soft_wrap=True
            )

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
        return Group(headline, *lines)

    def _eta(
        self, snapshot: ProgressSnapshot, now: float, pending: int, width: int, work: object
    ) -> float | None:
        """Seconds left, counting down with the clock from the last estimate (None: no subplan
        ended yet).

        An estimate is made when ``work`` (what is done, of how much) changes, or when the last
        one ran out with work left: a pending subplan needs the mean duration, a running one
        what it has not run of it yet, all ``width`` at a time. In between the ETA moves one
        second a second, whether or not a subplan ends.
        """
        mean = snapshot.mean_duration
        if pending + len(snapshot.running) == 0:
            return 0.0
        if mean is None:
            return None
        due = self._eta_due
        if work != self._eta_work or due is None or now >= due:
            owed = pending * mean
            for began in snapshot.running.values():
                owed += max(mean - (now - began), 0.0)
            due = self._eta_due = now + owed / width
            self._eta_work = work
        return due - now

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
        total = progress.known_total(snapshot.total) - progress.skipped
        pending = max(total - done - running, 0)
        step = progress.current

        header = Text.assemble((visible(progress.plan.name), "bold"))
        if step is not None:
            header.append(f"  step {step.index + 1}/{len(progress.plan.steps)} ")
            header.append(visible(step.name), style="bold cyan")
        header.append(f"  run {self.run_id}", style="dim")

        bar = Table.grid(padding=(0, 1))
        elapsed = Text(f"elapsed {clock_time(snapshot.elapsed)}", style="dim")
        if progress.total_known:
            left = pending + running
            width = max(1, min(step.max_parallel if step is not None else 1, left))
            eta = self._eta(snapshot, now, pending, width, (done, total))
            percent = 100 * done // total if total else 100
            bar.add_row(
                ProgressBar(total=max(total, 1), completed=done, width=self.bar_width),
                Text(f"{done}/{total}  {percent}%"),
                elapsed,
                Text(f"ETA {clock_time(eta) if eta is not None else '-:--:--'}", style="cyan"),
            )
        else:
            # Work is still being added: a share of it, or when it ends, would be a guess.
            bar.add_row(
                ProgressBar(total=None, width=self.bar_width, animation_time=now),
                Text(f"{done}/?"),
                elapsed,
            )

        cancelled = min(self.cancelled, counts[_FAILED])
        states = Text.assemble(
            ("pending ", "dim"),
            f"{pending}   ",
            ("running ", "yellow"),
            f"{running}   ",
            ("completed ", "green"),
            f"{counts[_COMPLETED]}   ",
            ("failed ", "red"),
            str(counts[_FAILED] - cancelled),
        )
        if cancelled:
            states.append("   cancelled ", style="yellow")
            states.append(str(cancelled))
        if progress.resumed:
            states.append("   already completed ", style="dim")
            states.append(str(progress.resumed))

        parts: list[RenderableType] = [header, bar, states]
        if snapshot.pools:  # the run's pools: units in use of their capacity, waiting, peak
            pools = Text("pools ", style="dim")
            for index, (name, pool) in enumerate(sorted(snapshot.pools.items())):
                pools.append(f"{'   ' if index else ''}{visible(name)} ")
                pools.append(f"{pool.in_use}/{pool.capacity}", style="yellow")
                pools.append(f" ({pool.waiting} waiting, peak {pool.peak})", style="dim")
            parts.append(pools)
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
