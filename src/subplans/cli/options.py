"""The options and arguments that several ``subplans`` commands share, and their epilogs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from subplans.cli.overrides import BackendKind
from subplans.engine.config import FailureMode

__all__ = [
    "CONTEXT",
    "BackendOption",
    "ConcurrentOption",
    "EventsJsonlOption",
    "FailureModeOption",
    "HaltOption",
    "JsonOption",
    "MaxParallelOption",
    "NoProgressOption",
    "PlanArgument",
    "PlanStoreOption",
    "ProfileOption",
    "QuietOption",
    "RunIdArgument",
    "SchedulerOption",
    "StoreOption",
    "example",
    "valid_run_id",
]

#: Every command and group takes ``-h`` as well as ``--help``.
CONTEXT = {"help_option_names": ["-h", "--help"]}


def example(*commands: str) -> str:
    """An epilog with example commands, rendered as a code block by ``--help``."""
    title = "Example" if len(commands) == 1 else "Examples"
    return f"{title}:\n\n```\n" + "\n".join(commands) + "\n```"


PlanArgument = Annotated[
    Path,
    typer.Argument(help="The plan file (YAML).", show_default=False),
]
MaxParallelOption = Annotated[
    int | None,
    typer.Option(
        "--max-parallel",
        "-j",
        help="How many subplans run at once (1-32); acts at the plan level (a step's own setting still wins).",
        show_default=False,
    ),
]
FailureModeOption = Annotated[
    FailureMode | None,
    typer.Option(
        "--failure-mode",
        help="fail_fast stops at the first failure; continue_on_error runs everything.",
        show_default=False,
    ),
]
HaltOption = Annotated[
    str | None,
    typer.Option(
        "--halt",
        help="When to stop early, as GNU parallel says it: soon,fail=3% (start nothing new "
        "once 3% failed), now,fail=3 (also stop the running ones), soon,success=10; "
        "acts at the plan level.",
        show_default=False,
    ),
]
ProfileOption = Annotated[
    str | None,
    typer.Option(
        "--profile",
        "-p",
        help="A named profile for the whole plan (see `subplans profile list`).",
        show_default=False,
    ),
]
BackendOption = Annotated[
    BackendKind | None,
    typer.Option(
        "--backend",
        help="Where run and call subplans run: local, or dask (the cluster at --scheduler, "
        "else at $SUBPLANS_SCHEDULER, else one started on 127.0.0.1 for the run); acts at the "
        "plan level (a step's own setting still wins). dask needs pip install 'subplans[dask]'.",
        show_default=False,
    ),
]
SchedulerOption = Annotated[
    str | None,
    typer.Option(
        "--scheduler",
        metavar="ADDRESS",
        help="The Dask scheduler (tcp://HOST:8786) of every dask backend that names none; "
        "alone, it means --backend dask. Default: $SUBPLANS_SCHEDULER.",
        show_default=False,
    ),
]


EventsJsonlOption = Annotated[
    str | None,
    typer.Option(
        "--events-jsonl",
        metavar="PATH|-",
        help="Write every event as one JSON object per line to PATH, or to stdout with `-` "
        "(human output then goes to stderr).",
        show_default=False,
    ),
]
NoProgressOption = Annotated[
    bool,
    typer.Option(
        "--no-progress", help="No live view and no per-change lines: failures and the summary."
    ),
]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="Only the summary.")]
PlanStoreOption = Annotated[
    Path | None,
    typer.Option(
        "--store",
        metavar="PATH",
        help="The run store (SQLite); default: $SUBPLANS_STORE, else .subplans/state.db next "
        "to the plan.",
        show_default=False,
    ),
]
StoreOption = Annotated[
    Path | None,
    typer.Option(
        "--store",
        metavar="PATH",
        help="The run store (SQLite); default: $SUBPLANS_STORE, else ./.subplans/state.db.",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]
ConcurrentOption = Annotated[
    bool,
    typer.Option(
        "--concurrent",
        help="Run even if the plan is running in the store already (its work may then be "
        "done twice at once).",
    ),
]


def valid_run_id(value: str | None) -> str | None:
    """A run id that can name a lock file (as run ids do), or a usage error."""
    from subplans.store.liveness import check_run_id

    if value is not None:
        try:
            check_run_id(value)
        except ValueError as error:
            raise typer.BadParameter(str(error)) from None
    return value


RunIdArgument = Annotated[
    str,
    typer.Argument(
        metavar="RUN_ID",
        help="A run id (as `subplans runs` lists them), a unique prefix of one, or `latest`.",
        callback=valid_run_id,
        show_default=False,
    ),
]
