"""A run's lifecycle in the command: the one path of ``subplans run`` and ``subplans resume``.

``RunLifecycle`` does, in this order, for either ``Launch`` (``FreshRun``, ``ResumedRun``):

1. refuse a plan that runs in another live run (unless ``--concurrent``);
2. take the run's lock (``RunBusyError`` if another process drives it) and defer SIGINT and
   SIGTERM (``signal_guard.GUARD.deferred()``): one that arrives from here on is handled as
   soon as the run can stop cleanly, or ends the command with exit 130 if it never starts;
3. decide what to run (a resume's refusals: nothing is made or changed before);
4. open the ``--events-jsonl`` stream (a fresh run opens it first of all, before its store: a
   path that cannot be opened creates nothing), make the session, start or reach the Dask
   clusters its units need (``run_backends``; refused if one cannot be used), make the run
   folder;
5. register the run in the store (start or resume; a plan that another run got in first is
   refused, and the folders made for it are removed again), then empty the events file;
6. run the session with ``SUBPLANS_RUN_ID`` set (``RunSession.run``), settle the signals, and
   record the end in the store if the executor could not; report how the run ended
   (``RunEnd``).

What it refuses, it refuses with ``exits.refuse()``; store errors pass through as they are.
The command maps both, and ``RunEnd``, to exit codes and lines.
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Final, TextIO

from subplans.cli.exits import refuse, told
from subplans.cli.launches import Decision, FreshRun, Launch
from subplans.cli.limit_requests import ignore_limit_signal
from subplans.cli.session import Outcome, RunSession, View, terminal_console
from subplans.cli.stores import find_run, opened, store_path
from subplans.engine.errors import BackendError, PlanRunningError, StoreError
from subplans.engine.values import Value
from subplans.execution import signal_guard
from subplans.store import RunStatus, default_store_path

if TYPE_CHECKING:
    from subplans.plans.loader import Overrides, PlanNode
    from subplans.sinks.output_modes import OutputMode
    from subplans.store import RunStore

__all__ = ["Output", "RunEnd", "RunLifecycle", "events_stream"]


class Output(Value):
    """How a run shows itself: ``--events-jsonl``, ``--no-progress``, ``--quiet``, and where
    the commands' output goes besides their logs (``--output``; None: the logs only)."""

    # Plain classes, here and below: a dataclass costs the command's start 0.3 ms to build (#10).
    __slots__ = ("events_jsonl", "no_progress", "output_mode", "quiet")
    _fields = ("events_jsonl", "no_progress", "quiet", "output_mode")

    def __init__(
        self,
        events_jsonl: str | None = None,
        no_progress: bool = False,
        quiet: bool = False,
        output_mode: OutputMode | None = None,
    ) -> None:
        self.events_jsonl: Final = events_jsonl
        self.no_progress: Final = no_progress
        self.quiet: Final = quiet
        self.output_mode: Final = output_mode


class RunEnd(Value):
    """How a run ended, and what went wrong on the side without changing that (one line each)."""

    __slots__ = ("outcome", "warnings")
    _fields = ("outcome", "warnings")

    def __init__(self, outcome: Outcome, warnings: tuple[str, ...] = ()) -> None:
        self.outcome: Final = outcome
        self.warnings: Final = warnings


class RunLifecycle:
    """Starts or resumes runs with the human output and events of ``output``; ``concurrent``
    runs a plan even while it runs in another live run."""

    def __init__(self, output: Output, *, concurrent: bool = False) -> None:
        self.output = output
        self.concurrent = concurrent

    def __repr__(self) -> str:
        return f"<RunLifecycle concurrent={self.concurrent}>"

    def start(self, plan: PlanNode, overrides: Overrides, *, store: Path | None) -> RunEnd:
        """Run ``plan`` afresh, recorded in ``store`` (default: next to the plan); refused
        (``exits.refuse``) if the events file or the run folder cannot be made, or the plan is
        running.

        Raises:
            StoreError: the store cannot be used.
            RunBusyError: another process holds the run's lock.
        """
        path = store if store is not None else default_store_path(plan.file)
        events = events_stream(self.output.events_jsonl)
        with events as stream, opened(path) as db:
            return self.drive(db, FreshRun(plan, overrides), contextlib.nullcontext(stream))

    def resume(
        self,
        run_id: str,
        *,
        store: Path | None,
        force: bool = False,
        rerun_unknown: bool = False,
        skip_unknown: bool = False,
        scheduler: str | None = None,
    ) -> RunEnd:
        """Run a stored run's plan again, skipping what completed (``ResumedRun``; its Dask
        cluster at ``scheduler`` if given); refused as ``start`` is, or as ``ResumedRun.decide``
        decides (nothing was changed then).

        Raises:
            StoreError: the store cannot be used, or the run is unknown.
            RunBusyError: another process drives the run.
        """
        from subplans.store.writer_start import prestarted

        # The writer process starts on another core while the run and its plan are read
        # (``run_plan`` says why); killed if the resume is refused.
        with prestarted(), opened(store_path(store), existing=True) as db:
            from subplans.cli.resuming import ResumedRun  # a plain run never loads it

            launch = ResumedRun(
                find_run(db, run_id),
                force=force,
                rerun_unknown=rerun_unknown,
                skip_unknown=skip_unknown,
                scheduler=scheduler,
            )
            return self.drive(db, launch, events_stream(self.output.events_jsonl))

    def drive(
        self,
        store: RunStore,
        launch: Launch,
        events: AbstractContextManager[TextIO | None] | None = None,
    ) -> RunEnd:
        """The one path of every run, recorded in ``store`` (open); ``events`` opens the events
        stream once the run is decided (none by default). A refused run (``exits.refuse``)
        leaves nothing recorded.

        Raises:
            RunBusyError: another process holds the run's lock.
        """
        if not self.concurrent:
            with _plan_free():
                launch.check_plan_free(store)
        # A refusal's lines are printed inside deferred(): a signal noted meanwhile then adds
        # its line and exit 130 to them instead of replacing them.
        with signal_guard.GUARD.deferred() as noted, told(), store.lock(launch.run_id):
            # A killed run's writer process may still commit what it was handed: the
            # decision (what to skip, what to stop) is made from all of it.
            store.wait_for_writer(launch.run_id)
            decision = launch.decide(store)
            with (
                events or contextlib.nullcontext() as stream,
                contextlib.closing(self._session(launch, decision, stream, store)) as session,
            ):
                session.early_signals = noted
                _connect(session)
                _prepare(session)
                ignore_limit_signal()  # from here on `subplans limit` may send it
                launch.before_start(store, session, decision)
                with _plan_free(launch.made(session)):
                    launch.register(store, session, decision, concurrent=self.concurrent)
                _start_afresh(stream)
                return _execute(session, stream, store)

    def _session(
        self, launch: Launch, decision: Decision, events: TextIO | None, store: RunStore
    ) -> RunSession:
        """The run's session, with the human output the options and the terminal call for."""
        human = sys.stderr if events is sys.stdout else sys.stdout
        console = terminal_console(human)
        if self.output.quiet:
            view = View.QUIET
        elif self.output.no_progress:
            view = View.FAILURES
        else:
            view = View.LINES if console is None else View.LIVE
        return RunSession(
            decision.plan,
            human=human,
            console=console,
            view=view,
            events=events,
            run_id=launch.run_id,
            run_dir=decision.run_dir,
            skip=decision.skip,
            store=store,
            output=self.output.output_mode,
        )


@contextlib.contextmanager
def events_stream(events_jsonl: str | None) -> Iterator[TextIO | None]:
    """The stream ``--events-jsonl`` asks for, closed after; refused if it cannot be opened."""
    events: TextIO | None = None
    if events_jsonl == "-":
        events = sys.stdout
    elif events_jsonl is not None:
        try:
            # Appending, not truncating: if the run is then refused, nothing is lost.
            events = open(events_jsonl, "a", encoding="utf-8")  # noqa: SIM115 - closed below
        except OSError as error:
            refuse([f"--events-jsonl: cannot open {events_jsonl}: {error.strerror}"])
    try:
        yield events
    finally:
        if events is not None and events is not sys.stdout:
            # A stream that failed keeps its unwritten buffer: closing it fails again.
            with contextlib.suppress(OSError):
                events.close()


def _start_afresh(events: TextIO | None) -> None:
    """Empty an ``--events-jsonl`` file once the run is sure to start (stdout is left alone)."""
    if events is None or events is sys.stdout:
        return
    # A regular file only: /dev/null, a FIFO or a device has nothing to empty.
    if stat.S_ISREG(os.fstat(events.fileno()).st_mode):
        events.truncate(0)


@contextlib.contextmanager
def _plan_free(made: Sequence[Path] = ()) -> Iterator[None]:
    """A plan that is running in the store already: refused, saying what to do. The folders
    ``made`` for the refused run are removed again (only while empty)."""
    try:
        yield
    except PlanRunningError as error:
        for folder in made:
            with contextlib.suppress(OSError):
                folder.rmdir()
        refuse(
            [
                f"{error}; wait for it to end, stop it with `subplans cancel {error.run_id}`, "
                "or pass --concurrent to run it anyway"
            ]
        )


def _connect(session: RunSession) -> None:
    """The clusters the run needs, started and checked before anything is made or recorded;
    refused with the one line of what is wrong (``distributed`` missing: how to install it).
    A signal meanwhile ends the command there (exit 130, its one line): nothing was made."""
    try:
        connected = session.connect()
    except BackendError as error:
        refuse([error])
    if not connected:
        refuse([])  # no line of its own: the signal's ends the command


def _prepare(session: RunSession) -> None:
    try:
        session.prepare()
    except OSError as error:
        refuse([f"cannot create the run folder {session.log_dir}: {error.strerror}"])


def _execute(session: RunSession, events: TextIO | None, store: RunStore) -> RunEnd:
    """Run the session, recorded in ``store``; its end is recorded whatever happens."""
    # With the events on stdout, anything a called function prints goes to stderr instead.
    redirect = contextlib.redirect_stdout(sys.stderr) if events is sys.stdout else None
    try:
        with redirect or contextlib.nullcontext():
            outcome = session.run_blocking()
        # The run has ended and is recorded: a late `subplans cancel` changes nothing.
        signal_guard.GUARD.settle()
    except BaseException as error:
        # Ended before the executor could record an end (the recorder did not start, or
        # Ctrl-C came before the signal handlers): the store must not show it running.
        interrupted = isinstance(error, KeyboardInterrupt)
        _finish_unfinished(store, session.run_id, cancelled=interrupted)
        raise
    # A run interrupted before its executor started published no end: record it (unless the
    # store failed mid-run: then it stays unfinished, to show as interrupted).
    if outcome is Outcome.INTERRUPTED and session.store_error is None:
        _finish_unfinished(store, session.run_id, cancelled=True)
    warnings = []
    if session.jsonl is not None and session.jsonl.error is not None:
        warnings.append(f"--events-jsonl: writing failed: {session.jsonl.error}")
    if session.store_error is not None:
        warnings.append(str(session.store_error))
    return RunEnd(outcome, tuple(warnings))


def _finish_unfinished(store: RunStore, run_id: str, *, cancelled: bool) -> None:
    """Record the end of ``run_id`` if nothing did (a store that fails now changes nothing)."""
    with contextlib.suppress(StoreError):
        if store.get_run(run_id).recorded_status == RunStatus.RUNNING:
            store.finish_run(run_id, RunStatus.CANCELLED if cancelled else RunStatus.FAILED)
