"""The commands about stored runs: ``runs``, ``status``, ``events``, ``logs`` and ``cancel``.

They read the run store (never creating one) and print what ``reports`` makes of it; only
``cancel`` acts, by signalling the run's owner or stopping what an interrupted run left.
"""

from __future__ import annotations

import contextlib
import json
import sys
from typing import TYPE_CHECKING, Annotated

import typer

from subplans.cli.exits import interruptible, invalid, invalid_input
from subplans.cli.options import JsonOption, RunIdArgument, StoreOption, example, valid_run_id
from subplans.cli.stores import opened, store_path
from subplans.sinks.formatting import visible

if TYPE_CHECKING:
    from subplans.store import RunInfo, RunStore

__all__ = ["cancel", "commands", "events", "logs", "runs", "status"]

#: The commands of this module; ``cli.app`` adds them to the ``subplans`` app.
commands = typer.Typer()


def _echo_json(value: object) -> None:
    typer.echo(json.dumps(value, indent=2, default=str))


@commands.command(epilog=example("subplans runs", "subplans runs --json --limit 5"))
def runs(
    json_output: JsonOption = False,
    limit: Annotated[
        int,
        typer.Option("--limit", "-n", min=1, max=100_000, help="How many runs, newest first."),
    ] = 20,
    store: StoreOption = None,
) -> None:
    """List recent runs, newest first: status, started, duration and subplan counts.

    A run whose process is gone without finishing it is `interrupted` (resume it).
    """
    from subplans.cli.reports import run_lines

    path = store_path(store)
    found = []
    if path.exists():
        with invalid_input(), opened(path, readonly=True) as db:
            found = db.list_runs(limit)
    if json_output:
        _echo_json([info.to_dict() for info in found])
    elif not found:
        typer.echo(f"no runs in the store {path}")
    else:
        typer.echo("\n".join(run_lines(found)))


@commands.command(
    epilog=example("subplans status", "subplans status 20261128-000453-43a954 --json")
)
def status(
    run_id: Annotated[
        str | None,
        typer.Argument(
            metavar="RUN_ID",
            help="A run id; the latest run by default.",
            callback=valid_run_id,
            show_default=False,
        ),
    ] = None,
    json_output: JsonOption = False,
    store: StoreOption = None,
) -> None:
    """Show a run: its status, subplan counts, steps, what runs now and what failed.

    Works while the run is live in another process. For an interrupted run (its process is
    gone), it lists any process the run left running; `subplans cancel RUN_ID` stops them.
    Nothing is ever stopped or changed by status.
    """
    from subplans.cli.reports import StatusReport
    from subplans.engine.errors import RunBusyError
    from subplans.store import RunStatus, find_leftovers

    with invalid_input(), opened(store_path(store), readonly=True) as db:
        found = db.get_run(run_id)
        leftovers = []
        if found.status == RunStatus.INTERRUPTED:
            # Busy: resumed since the line above; its processes are its own again.
            with contextlib.suppress(RunBusyError):
                leftovers = find_leftovers(db, found.id)
        report = StatusReport.collect(db, found, leftovers)
    if json_output:
        _echo_json(report.to_dict())
    else:
        typer.echo("\n".join(report.lines()))


@commands.command(
    epilog=example(
        "subplans events 20261128-000453-43a954 > events.jsonl",
        "subplans events 20261128-000453-43a954 --follow",
    )
)
def events(
    run_id: RunIdArgument,
    follow: Annotated[
        bool,
        typer.Option(
            "--follow", "-f", help="Keep printing new events until the run is no longer running."
        ),
    ] = False,
    store: StoreOption = None,
) -> None:
    """Print a run's stored events as JSON lines, in order (each with `run_id` and `seq`)."""
    from subplans.cli.reports import write_events

    def write(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    # A reader that went away has all it wanted (`subplans events R | head`).
    with (
        invalid_input(),
        opened(store_path(store), readonly=True) as db,
        interruptible(),
        contextlib.suppress(BrokenPipeError),
    ):
        write_events(db, run_id, write, follow=follow)


@commands.command(epilog=example("subplans logs 20261128-000453-43a954 port/plugins"))
def logs(
    run_id: RunIdArgument,
    subplan: Annotated[
        str,
        typer.Argument(metavar="SUBPLAN", help="A subplan's id, such as port/plugins."),
    ],
    store: StoreOption = None,
) -> None:
    """Print the output (stdout and stderr) of a command subplan of a run.

    Exactly as written when piped or redirected; on a terminal, control characters (escape
    sequences) are shown as escapes such as `\x1b`, not obeyed.
    """
    from subplans.cli.reports import write_log

    with invalid_input(), opened(store_path(store), readonly=True) as db:
        log = db.log_file(run_id, subplan)
    if log is None:
        invalid([f"subplan {subplan!r} of run {run_id} has no log: it started no command"])
    try:
        with log.open("rb") as file:
            sys.stdout.flush()
            write_log(file, sys.stdout.buffer, terminal=sys.stdout.isatty())
            sys.stdout.buffer.flush()
    except OSError as error:
        invalid([f"cannot read the log of {subplan!r}: {log}: {error.strerror}"])


@commands.command(
    epilog=example(
        "subplans cancel 20261128-000453-43a954", "subplans cancel 20261128-000453-43a954 --wait"
    )
)
def cancel(
    run_id: RunIdArgument,
    wait: Annotated[
        bool, typer.Option("--wait", help="Return once the run has stopped, with its status.")
    ] = False,
    store: StoreOption = None,
) -> None:
    """Ask a run that another process drives to stop, as Ctrl-C would.

    Its subplans are cancelled (SIGTERM, then SIGKILL after their cancel_grace) and the run
    ends `cancelled`. For an interrupted run (its process is gone), it stops the processes the
    run left running, the same way; the run stays interrupted, to be resumed or left.
    """
    import time

    from subplans.cli.reports import POLL_INTERVAL
    from subplans.store import RunStatus, cancel_run

    with invalid_input(), opened(store_path(store), readonly=True) as db:
        found = db.get_run(run_id)
        if found.status == RunStatus.INTERRUPTED:
            _cancel_leftovers(db, found)
            return
        owner = cancel_run(db, run_id)
        typer.echo(f"asked run {run_id} to stop: sent SIGTERM to {owner}")
        if wait:
            with interruptible():
                while (found := db.get_run(run_id)).status == RunStatus.RUNNING:
                    time.sleep(POLL_INTERVAL)
            typer.echo(f"run {run_id} {found.status}")


def _cancel_leftovers(db: RunStore, run: RunInfo) -> None:
    """``cancel`` of an interrupted run: stop what it left running (holding its lock), say so."""
    from subplans.store.resume import describe_stopped, stop_leftovers_locked

    with interruptible():
        stopped = stop_leftovers_locked(db, run)
    if stopped:
        typer.echo(visible(describe_stopped(run.id, stopped)))
    else:
        typer.echo(f"run {run.id} was interrupted and left nothing running")
    typer.echo(f"run {run.id} stays interrupted: resume it with `subplans resume {run.id}`")
