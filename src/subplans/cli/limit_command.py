"""``subplans limit RUN_ID N [--step STEP | --pool NAME]``: change a running run's cap from
another terminal, through the store (``store.limits``), as ``cancel`` stops it."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Annotated

import typer

from subplans.cli.exits import interruptible, invalid, invalid_input
from subplans.cli.options import RunIdArgument, StoreOption, example
from subplans.cli.stores import find_run, opened, store_path

if TYPE_CHECKING:
    from subplans.store import LimitRecord, RunStore

__all__ = ["commands", "limit"]

#: How long ``limit`` waits for the run to say what it made of the request.
_ANSWER_WAIT = 5.0

#: The command of this module; ``cli.typer_app`` adds it to the ``subplans`` app.
commands = typer.Typer()


@commands.command(
    epilog=example(
        "subplans limit latest 8",
        "subplans limit 20261128-000453-43a954 2 --step build",
        "subplans limit latest 1 --pool db",
    )
)
def limit(
    run_id: RunIdArgument,
    value: Annotated[
        int,
        typer.Argument(
            metavar="N",
            help="The new cap: 1-32 for max_parallel, >= 1 for a pool.",
            show_default=False,
        ),
    ],
    step: Annotated[
        str | None,
        typer.Option(
            "--step",
            help="Change this step's max_parallel (its id, as status shows it).",
            show_default=False,
        ),
    ] = None,
    pool: Annotated[
        str | None,
        typer.Option("--pool", help="Change this pool's capacity.", show_default=False),
    ] = None,
    store: StoreOption = None,
) -> None:
    """Change a running run's max_parallel (the whole run's, or one step's) or a pool's
    capacity, at once.

    Raising it starts waiting subplans at once; lowering it stops nothing that runs, it only
    holds new starts until fewer run than the new cap. The change is recorded in the store:
    `subplans status` shows each cap as it is and as it started.
    """
    from subplans.store import limit_run, limit_target
    from subplans.store.limits import check_limit

    if step is not None and pool is not None:
        invalid(["--step and --pool exclude each other: a limit is of a step or of a pool"])
    target = limit_target(step=step, pool=pool)
    try:
        check_limit(target, value)
    except ValueError as error:
        invalid([str(error)])
    shown = target.replace(":", " ", 1)
    with invalid_input(), opened(store_path(store), existing=True) as db:
        found = find_run(db, run_id)
        owner, request = limit_run(db, found.id, target, value)
        with interruptible():
            record = _answer(db, found.id, target, request)
        caps = db.limits(found.id)
    if record is None:
        typer.echo(f"asked run {found.id} to set {shown} to {value} ({owner} has not answered yet)")
    elif record.error is not None:
        invalid([f"run {found.id} refused {shown} {value}: {record.error}"])
    else:
        from subplans.cli.limit_lines import bounded, in_effect, run_cap

        runs = bounded(record.current, in_effect(record, run_cap(caps)))
        typer.echo(f"run {found.id}: {shown} {record.previous} -> {record.current}{runs}")


def _answer(db: RunStore, run_id: str, target: str, request: int) -> LimitRecord | None:
    """What the run made of this call's request, once it has (None: not within
    ``_ANSWER_WAIT``)."""
    from subplans.cli.reports import POLL_INTERVAL

    deadline = time.monotonic() + _ANSWER_WAIT
    while True:
        record = db.limit_request(run_id, target, request)
        if record is not None and not record.pending:
            return record
        if time.monotonic() > deadline:
            return None
        time.sleep(POLL_INTERVAL)
