"""The commands about stored runs: ``runs``, ``status``, ``events``, ``logs`` and ``cancel``.

They read the run store (never creating one) and print what ``reports`` makes of it; only
``cancel`` acts, by signalling the run's owner or stopping what an interrupted run left.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from subplans.cli.exits import interruptible, invalid, invalid_input
from subplans.cli.options import JsonOption, RunIdArgument, StoreOption, example, valid_run_id
from subplans.cli.stores import find_run, missing_store, opened, store_path
from subplans.sinks.formatting import visible

if TYPE_CHECKING:
    from subplans.store import RunInfo, RunStore, SubplanInfo

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

    `took` is a run's span, from its first start to its last end; `active` the time it was
    running, summed over the run and its resumes. A run whose process is gone without
    finishing it is `interrupted` (resume it).
    """
    from subplans.cli.listings import runs_lines

    path = store_path(store)
    found, active = [], {}
    if path.exists():
        with invalid_input(), opened(path, readonly=True) as db:
            found = db.list_runs(limit)
            active = {info.id: db.active_time(info) for info in found}
    if json_output:
        _echo_json([{**info.to_dict(), "active": active[info.id]} for info in found])
    elif not path.exists():
        typer.echo(f"no runs in the store {path}: {missing_store(path)}")
    elif not found:
        typer.echo(f"no runs in the store {path}")
    else:
        typer.echo("\n".join(runs_lines(found, active)))


@commands.command(
    epilog=example(
        "subplans status",
        "subplans status 20261128-000453-43a954 --json",
        "subplans status 20261128-0004 --subplans",
    )
)
def status(
    run_id: Annotated[
        str | None,
        typer.Argument(
            metavar="RUN_ID",
            help="A run id, a unique prefix of one, or `latest` (the default).",
            callback=valid_run_id,
            show_default=False,
        ),
    ] = None,
    subplans: Annotated[
        bool,
        typer.Option(
            "--subplans",
            help="List every subplan instead: id, state, attempts, duration and exit code.",
        ),
    ] = False,
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

    if subplans:
        _list_subplans(run_id, json_output=json_output, store=store)
        return
    with invalid_input(), opened(store_path(store), readonly=True) as db:
        found = find_run(db, run_id)
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


def _list_subplans(run_id: str | None, *, json_output: bool, store: Path | None) -> None:
    """``status --subplans``: every subplan of the run, in plan order."""
    from subplans.cli.listings import shown_state, subplan_lines, subplan_state

    with invalid_input(), opened(store_path(store), readonly=True) as db:
        found = find_run(db, run_id)
        listed = db.subplans(found.id)
    if json_output:
        _echo_json(
            {
                "run_id": found.id,
                "status": found.status,
                "subplans": [
                    {
                        **subplan.to_dict(),
                        "state": subplan_state(subplan, found),
                        "shown_state": shown_state(subplan, found),
                    }
                    for subplan in listed
                ],
            }
        )
    else:
        typer.echo("\n".join(subplan_lines(listed, found)))


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
        write_events(db, find_run(db, run_id).id, write, follow=follow)


@commands.command(
    epilog=example(
        "subplans logs 20261128-000453-43a954 port/plugins",
        "subplans logs latest 'port/*'",
        "subplans logs 20261128-0004 --failed",
    )
)
def logs(
    run_id: RunIdArgument,
    subplan: Annotated[
        str | None,
        typer.Argument(
            metavar="SUBPLAN",
            help="A subplan's id (such as port/plugins), a unique prefix of one, or a glob "
            "(such as 'port/*'); a step's id prints its for_each command's log (its stderr).",
            show_default=False,
        ),
    ] = None,
    all_logs: Annotated[
        bool, typer.Option("--all", help="Every subplan's log, each line after its `[ID]` tag.")
    ] = False,
    failed: Annotated[
        bool, typer.Option("--failed", help="Only the failed subplans' logs, each line tagged.")
    ] = False,
    store: StoreOption = None,
) -> None:
    """Print the output (stdout and stderr) of a run's command subplans.

    One subplan's log is printed as written when piped or redirected; a glob, --all or
    --failed prints each selected log in plan order, every line after its `[ID]` tag. On a
    terminal, control characters (escape sequences) are shown as escapes such as `\x1b`, not obeyed.
    """
    from subplans.cli.subplan_logs import items_log, select

    if subplan is None and not (all_logs or failed):
        invalid(
            ["name a SUBPLAN (an id, a unique prefix of one, or a glob), or give --all or --failed"]
        )
    if subplan is not None and all_logs:
        invalid([f"give SUBPLAN ({subplan!r}) or --all, not both"])
    with invalid_input(), opened(store_path(store), readonly=True) as db:
        run = find_run(db, run_id)
        listed = db.subplans(run.id)
        step_log = None if subplan is None else items_log(run, db.steps(run.id), listed, subplan)
        chosen = None if step_log is not None else select(run.id, listed, subplan, failed=failed)
    # A reader that went away has all it wanted (`subplans logs R --all | head`): end quietly.
    with contextlib.suppress(BrokenPipeError):
        if chosen is None:  # a step's items log
            _write_log(run.id, f"{subplan}.items", str(step_log))
        elif not chosen.tagged:
            _write_log(run.id, chosen.subplans[0].subplan_id, chosen.subplans[0].log_file)
        elif not _write_tagged(chosen.subplans):
            what = "failed subplan" if failed else "subplan"
            typer.echo(f"no {what} of run {run.id} that started a command has a log", err=True)


def _write_log(run_id: str, subplan_id: str, log: str | None) -> None:
    """One subplan's log, as written (``visible()`` on a terminal)."""
    from subplans.cli.reports import write_log

    if log is None:
        invalid([f"subplan {subplan_id!r} of run {run_id} has no log: it started no command"])
    try:
        with open(log, "rb") as file:
            sys.stdout.flush()
            write_log(file, sys.stdout.buffer, terminal=sys.stdout.isatty())
            sys.stdout.buffer.flush()
    except BrokenPipeError:
        raise  # the reader went away: not a log that cannot be read
    except OSError as error:
        invalid([f"cannot read the log of {subplan_id!r}: {log}: {error.strerror}"])


def _write_tagged(subplans: Sequence[SubplanInfo]) -> int:
    """The logs of ``subplans`` one after the other, every line tagged; returns how many were
    printed. A log that cannot be read is an error line at the end (exit 2)."""
    from subplans.cli.subplan_logs import write_tagged

    printed, problems = 0, []
    terminal = sys.stdout.isatty()
    sys.stdout.flush()
    for subplan in subplans:
        if subplan.log_file is None:
            continue  # a call, a nested plan or one that never ran: no output of its own
        try:
            with open(subplan.log_file, "rb") as file:
                write_tagged(file, sys.stdout.buffer, subplan.subplan_id, terminal=terminal)
            printed += 1
        except BrokenPipeError:
            raise  # the reader went away: not a log that cannot be read
        except OSError as error:
            problems.append(
                f"cannot read the log of {subplan.subplan_id!r}: {subplan.log_file}: "
                f"{error.strerror}"
            )
    sys.stdout.buffer.flush()
    if problems:
        invalid(problems)
    return printed


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
        found = find_run(db, run_id)
        if found.status == RunStatus.INTERRUPTED:
            _cancel_leftovers(db, found)
            return
        owner = cancel_run(db, found.id)
        typer.echo(f"asked run {found.id} to stop: sent SIGTERM to {owner}")
        if wait:
            with interruptible():
                while (found := db.get_run(found.id)).status == RunStatus.RUNNING:
                    time.sleep(POLL_INTERVAL)
            typer.echo(f"run {found.id} {found.status}")


def _cancel_leftovers(db: RunStore, run: RunInfo) -> None:
    """``cancel`` of an interrupted run: stop what it left running (holding its lock) here and
    on the Dask cluster it recorded, and say so."""
    from subplans.cli.run_backends import stop_on_cluster
    from subplans.store.resume import describe_stopped, stop_leftovers

    # Its subplans on a cluster's workers are out of this machine's sight: stopped through the
    # cluster it recorded (first, as resume does), or said, never claimed gone (issue #12).
    running = db.subplans(run.id, state="running")
    remote = any(subplan.worker is not None for subplan in running)
    with interruptible(), db.lock(run.id):
        on_cluster = stop_on_cluster(run) if remote else None
        stopped = stop_leftovers(db, run)
    if on_cluster is not None:
        typer.echo(on_cluster)
    elif remote:
        typer.echo(
            f"run {run.id} was running subplans on a Dask cluster: `subplans resume {run.id}` "
            "stops what they left on its workers before it runs anything"
        )
    if stopped:
        typer.echo(visible(describe_stopped(run.id, stopped)))
    elif not remote:
        typer.echo(f"run {run.id} was interrupted and left nothing running")
    typer.echo(f"run {run.id} stays interrupted: resume it with `subplans resume {run.id}`")
