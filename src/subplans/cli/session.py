"""One run of a plan from the command line: the executor, the sinks wired to its bus, the
signal handlers, and the summary at the end.

The sinks only listen; this module decides which ones a run gets:

============  ===========================================================================
``live``      a terminal: the live view, failures printed above it (``sinks.live``)
``lines``     not a terminal: one timestamped line per state change (``sinks.lines``)
``failures``  ``--no-progress``: only the failures, as they happen (``sinks.lines``)
``quiet``     ``--quiet``: nothing until the summary
============  ===========================================================================

plus the JSONL stream when asked for (``sinks.jsonl``), the commands' output on the human stream
with ``--output tag|group`` (``sinks.tagged_output``), the run store's recorder when given a
store (``store.recorder``), and the summary (``sinks.summary``) in every case. Rich is imported
only when the human output goes to a terminal.

A resumed run is a session too: the run id and folder of the run it continues, and the subplans
to skip (those that completed before).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Collection
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from subplans.cli.gc_pause import freeze_survivors
from subplans.cli.run_backends import RunBackends, cluster_needs
from subplans.engine.bus import EventBus
from subplans.engine.errors import StoreError
from subplans.engine.progress import ProgressReporter
from subplans.execution.executor import KILL_MARGIN, PlanExecutor, new_run_id
from subplans.execution.interrupts import Interrupts
from subplans.execution.process import ProcessGroups
from subplans.execution.results import PlanResult
from subplans.execution.stopping import stop_run_processes
from subplans.sinks.formatting import visible
from subplans.sinks.jsonl import JsonlSink
from subplans.sinks.plan_progress import PlanProgress
from subplans.sinks.summary import Outcome, RunSummary

if TYPE_CHECKING:
    from rich.console import Console

    from subplans.plans.loader import PlanNode
    from subplans.sinks.lines import PlainLines
    from subplans.sinks.tagged_output import OutputMode, TaggedOutput
    from subplans.store import RunRecorder, RunStore

__all__ = ["Outcome", "RunSession", "View", "terminal_console"]


class View(StrEnum):
    """How a run shows its progress."""

    LIVE = "live"
    LINES = "lines"
    FAILURES = "failures"
    QUIET = "quiet"


#: How long tasks left when the run is over (they ignored cancellation) get to end.
_LEFTOVER_WAIT = 0.1

#: Variables with which Rich may call a stream a terminal although it is no TTY.
_TERMINAL_VARIABLES = ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE")


def terminal_console(stream: TextIO) -> Console | None:
    """A Rich console on ``stream`` if it is an interactive terminal (as Rich decides, so
    ``FORCE_COLOR`` and ``TTY_INTERACTIVE`` count); None without importing Rich otherwise."""
    isatty = getattr(stream, "isatty", None)
    tty = bool(isatty is not None and isatty())
    if not tty and not any(os.environ.get(name) for name in _TERMINAL_VARIABLES):
        return None
    from rich.console import Console

    console = Console(file=stream, highlight=False)
    return console if console.is_interactive else None


class RunSession:
    """Runs ``plan`` once with the sinks ``view`` calls for; ``events`` gets the JSONL stream.

    Human output goes to ``human``: through ``console`` when that is given (a terminal), as
    plain text otherwise. ``View.LIVE`` needs a console. With ``store``, every event is recorded
    there under ``run_id`` (the caller has started or resumed that run in the store). A resumed
    run passes the ``run_dir`` it continues and the subplan ids to ``skip``. ``output`` (tag or
    group) also writes the commands' output to ``human``, each line after ``[ID] ``.
    """

    def __init__(
        self,
        plan: PlanNode,
        *,
        human: TextIO,
        console: Console | None = None,
        view: View = View.LINES,
        events: TextIO | None = None,
        run_id: str | None = None,
        state_dir: Path | None = None,
        run_dir: Path | None = None,
        skip: Collection[str] = frozenset(),
        store: RunStore | None = None,
        output: OutputMode | None = None,
    ) -> None:
        if view is View.LIVE and console is None:
            raise RuntimeError("the live view needs a terminal console")
        self.plan = plan
        self.human = human
        self.console = console
        self.view = view
        self.run_id = run_id or new_run_id()
        self.bus = EventBus()
        self.jsonl: JsonlSink | None = None
        if events is not None:
            self.jsonl = JsonlSink(events, run_id=self.run_id)
            self.bus.subscribe(self.jsonl)
        self.groups = ProcessGroups()
        self.executor = PlanExecutor(
            plan,
            bus=self.bus,
            run_id=self.run_id,
            groups=self.groups,
            state_dir=state_dir,
            run_dir=run_dir,
            skip=skip,
        )
        #: The Dask clusters its units need (none: everything runs here); ``connect()``.
        self.backends = RunBackends(cluster_needs(plan))
        #: The run's event loop, made by ``connect()`` or ``run_blocking()``, closed by ``close()``.
        self._loop: asyncio.AbstractEventLoop | None = None
        # The run's pools, read into each snapshot: the live view shows their usage.
        self.reporter = ProgressReporter(self.bus, pools=self.executor.limits.pools)
        self.progress = PlanProgress(plan, completed=skip)
        self.bus.subscribe(self.progress)
        self.store = store
        #: Why the store stopped recording this run, if it did; the run itself went on.
        self.store_error: StoreError | None = None
        #: Interrupting signals that arrived before the run's own handlers were in place (the
        #: lifecycle defers them while it registers the run); the run starts by handling them.
        self.early_signals: list[int] = []
        self._display: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
        self._lines: PlainLines | None = None
        self.tagged: TaggedOutput | None = None
        if output is not None and output != "files":  # files: the logs only, nothing to follow
            from subplans.sinks.tagged_output import TaggedOutput

            # Before the views: a subplan's last lines come before the line saying it ended.
            self.tagged = TaggedOutput(output, human, log_dir=self.log_dir, console=console)
            self.bus.subscribe(self.tagged)
        if view is View.LIVE:
            from subplans.sinks.live import LiveView

            assert console is not None
            live = LiveView(console, self.reporter, self.progress, run_id=self.run_id)
            self.bus.subscribe(live)
            self._display = live
        elif view is not View.QUIET:
            from subplans.sinks.lines import PlainLines

            self._lines = PlainLines(human, failures_only=view is View.FAILURES)
            self.bus.subscribe(self._lines)
        self.summary: RunSummary | None = None

    def __repr__(self) -> str:
        return f"<RunSession {self.plan.name!r} run {self.run_id} view={self.view.value}>"

    @property
    def log_dir(self) -> Path:
        """Where the run's logs go."""
        return self.executor.run_dir / "logs"

    def connect(self) -> bool:
        """Start or reach the Dask clusters the run's units need and check them, on the run's
        event loop, and hand them to the executor; their warnings are said. False if a signal
        noted meanwhile (``early_signals``) stopped it: nothing is left started then.

        Raises:
            BackendError: one cannot be used (whatever was started is closed again).
        """
        if not self.backends.needs:
            return True
        # Reaching a scheduler may take its whole connect timeout: Ctrl-C need not wait for it.
        started = self.backends.start_unless(lambda: self.early_signals)
        warnings = self._event_loop().run_until_complete(started)
        if warnings is None:
            return False
        self.executor.context.backends = dict(self.backends.started)
        for warning in warnings:
            self.say(f"warning: {warning}")
        return True

    def stop_remote(self, run_id: str) -> int:
        """Stop what ``run_id`` left running on the clusters' workers (resume, before it runs
        anything); how many processes."""
        if not self.backends.started:
            return 0
        return self._event_loop().run_until_complete(self.backends.stop_run(run_id))

    def prepare(self) -> None:
        """Create the run folder.

        Raises:
            OSError: it cannot be created.
        """
        self.log_dir.mkdir(parents=True, exist_ok=True)

    async def run(self) -> Outcome:
        """Run the plan, then print the summary; SIGINT and SIGTERM interrupt it cleanly.

        Raises:
            StoreError: the store's recorder cannot be started (nothing ran).
        """
        started = time.monotonic()
        recorder: RunRecorder | None = None
        if self.store is not None:
            # Subscribed before the executor publishes anything.
            recorder = self.store.recorder(self.run_id, bus=self.bus)
        # Children of `call` functions inherit the run's id, as commands get it: so they can be
        # found, and stopped, when the run ends or after it was killed.
        previous_run_id = os.environ.get("SUBPLANS_RUN_ID")
        os.environ["SUBPLANS_RUN_ID"] = self.run_id
        if self.tagged is not None:
            self.tagged.start()  # after a resume stopped what its dead owner left running
        task = asyncio.create_task(self._execute(), name=f"subplans run {self.run_id}")
        interrupts = Interrupts(task, self.groups, notify=self.say)
        result: PlanResult | None = None
        loop = asyncio.get_running_loop()
        limits: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
        if self.store is not None:  # `subplans limit` reaches the run through its store
            from subplans.cli.limit_requests import LimitRequests

            requests = LimitRequests(self.store, self.run_id, self.executor.limits, self.say)
            limits = requests.followed(loop)
        try:
            with interrupts.installed(loop), limits, self._display:
                # Taken off the list: the command's guard acts on those nobody handled.
                while self.early_signals:
                    interrupts.handle(self.early_signals.pop(0))
                try:
                    result = await task
                except asyncio.CancelledError:
                    if not interrupts.interrupted:
                        raise  # not ours: whoever runs the session was cancelled
                finally:
                    await self._end_abandoned()
                    if self.tagged is not None:
                        self.tagged.close()  # what is left, still above the live view
        finally:
            # A `call` function may have started processes of its own and left them running
            # (every command's were stopped as it ended), in our process group, which is not
            # theirs alone, or in one they moved to: they carry the run's id, and are stopped
            # one by one, with whatever they start meanwhile.
            # An interrupted run leaves within its grace (+2 s): never a fresh grace here.
            grace = interrupts.grace_left(self.plan.profile.cancel_grace)
            await asyncio.to_thread(stop_run_processes, self.run_id, grace=grace)
            if previous_run_id is None:
                del os.environ["SUBPLANS_RUN_ID"]
            else:
                os.environ["SUBPLANS_RUN_ID"] = previous_run_id
            if recorder is not None:
                # Every terminal state is committed (fsynced) before the run reports its end.
                self.store_error = await _closed(recorder)
        if self._lines is not None:
            self._lines.flush()
        outcome = Outcome.INTERRUPTED if result is None else Outcome(result.state)
        self.summary = RunSummary.collect(
            self.progress,
            self.reporter.snapshot(),
            outcome=outcome.value,
            elapsed=time.monotonic() - started,
            run_id=self.run_id,
            log_dir=self.log_dir,
        )
        # Nobody reads a closed pipe (``subplans run ... | head``): the outcome stands.
        with contextlib.suppress(OSError):
            if self.console is not None:
                self.summary.show(self.console)
            else:
                self.human.write("".join(f"{line}\n" for line in self.summary.lines()))
                self.human.flush()
        return outcome

    def run_blocking(self) -> Outcome:
        """``run()`` in an event loop of its own, like ``asyncio.run``, but bounded: a task the
        run abandoned because it ignores cancellation (an ``async`` function that catches every
        ``CancelledError``) had its grace: it is cancelled once more, then closed; it never
        keeps the command from exiting."""
        # What exists now (modules, Typer's and pydantic's schemas, the plan) lives as long as
        # the command: out of the collector's sight while the run goes on (the program only),
        # its full collections walk the run's own objects.
        freeze_survivors()
        loop = self._event_loop()
        main = loop.create_task(self.run())
        try:
            return loop.run_until_complete(main)
        finally:
            try:
                if not main.done():  # something broke out of the loop: its cleanup still runs
                    main.cancel()
                    loop.run_until_complete(asyncio.wait([main]))
            finally:
                self.close()

    def _event_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self._loop)
        return self._loop

    def close(self) -> None:
        """Close the run's clusters, then its event loop (the tasks left in it closed first);
        nothing to do if neither was made. Idempotent."""
        loop, self._loop = self._loop, None
        if loop is None:
            return
        try:
            if self.backends.started:  # before the tasks left: the clients' own are among them
                loop.run_until_complete(self.backends.aclose())
            _close_leftovers(loop)
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            asyncio.set_event_loop(None)
            loop.close()

    async def _execute(self) -> PlanResult | None:
        """The executor's run; None when a subplan or a subscriber raised KeyboardInterrupt."""
        try:
            return await self.executor.run()
        except KeyboardInterrupt:
            # Every subplan was stopped as on Ctrl-C; raised from this task, it would break out
            # of the event loop.
            self.say("KeyboardInterrupt raised in the run: it was stopped")
            return None

    async def _end_abandoned(self) -> None:
        """Kill the commands of subplans the run abandoned, and wait for them, bounded.

        The run is over, and they had their grace: a nested plan with a longer
        ``cancel_grace`` than its parent's step is abandoned while its commands still stop.
        Waited for here, while the loop still watches its children.
        """
        if self.groups.empty.is_set():
            return
        self.groups.kill_all()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.groups.empty.wait(), KILL_MARGIN)

    def say(self, text: str) -> None:
        """One line for the human: above the live view, or on the human stream; ``visible()``
        (it may quote what a subplan left running)."""
        text = visible(text)
        with contextlib.suppress(OSError):
            if self.console is not None:
                from rich.text import Text

                self.console.print(Text(text, style="yellow"))
            else:
                self.human.write(f"{text}\n")
                self.human.flush()


def _close_leftovers(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel the tasks still in ``loop``, wait ``_LEFTOVER_WAIT`` at most, then close those
    that ignore it (their ``finally`` blocks run; asyncio is told not to report them)."""
    tasks = asyncio.all_tasks(loop)
    for task in tasks:
        task.cancel()
    if tasks:
        loop.run_until_complete(asyncio.wait(tasks, timeout=_LEFTOVER_WAIT))
    for task in tasks:
        if task.done():
            if not task.cancelled():
                task.exception()  # abandoned: its outcome was recorded as abandoned already
            continue
        task._log_destroy_pending = False  # type: ignore[attr-defined]
        with contextlib.suppress(RuntimeError):  # it awaits again in its finally: let it be
            task.get_coro().close()


async def _closed(recorder: RunRecorder) -> StoreError | None:
    """Close ``recorder`` once it has written everything; the store's failure, if any."""
    try:
        await recorder.aclose()
    except StoreError as error:
        return error
    return None
