"""The Typer app of ``subplans``: its root options and every command, in the order of ``--help``.

The commands live one group to a module: ``run``, ``resume`` and ``validate`` in
``run_commands`` (the run itself is ``lifecycle.RunLifecycle``'s), ``runs``, ``status``,
``events``, ``logs`` and ``cancel`` in ``store_commands``, ``limit`` in ``limit_command``,
``profile list|show|resolve`` in
``profile_commands``, ``schema`` in ``schema_command``. Each imports what its commands need
inside them, so that building the app loads Typer and little else.
"""

from __future__ import annotations

from typing import Annotated

import typer

from subplans.cli.gc_pause import resume_collection
from subplans.cli.limit_command import commands as limit_commands
from subplans.cli.options import CONTEXT, example
from subplans.cli.profile_commands import profile_app
from subplans.cli.run_commands import commands as run_commands
from subplans.cli.schema_command import commands as schema_commands
from subplans.cli.store_commands import commands as store_commands

__all__ = ["app"]

app = typer.Typer(
    name="subplans",
    no_args_is_help=True,
    add_completion=False,
    context_settings=CONTEXT,
    rich_markup_mode="markdown",
    epilog=example(
        "subplans run plan.yaml --max-parallel 8 --profile keep-going",
        "subplans status",
        "subplans resume 20261128-000453-43a954",
    ),
)
# In this order in `subplans --help`, the profile group last.
for commands in (run_commands, schema_commands, store_commands, limit_commands):
    app.registered_commands.extend(commands.registered_commands)
app.add_typer(profile_app)


def _version(value: bool) -> None:
    # `subplans --version` alone is answered by `main()` before Typer is loaded: the same line.
    if value:
        from subplans import __version__

        typer.echo(f"subplans {__version__}")
        raise typer.Exit()


#: The commands that resume the garbage collector themselves, once their imports are done.
_RESUMING_THE_COLLECTOR = frozenset({"run", "resume", "validate"})


@app.callback()
def _root(
    ctx: typer.Context,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Run a plan's subplans in parallel under a concurrency cap: safely, visibly and fast.

    Exit codes: 0 every subplan and step completed, 1 the plan failed, 2 invalid input,
    130 interrupted.
    """
    if ctx.invoked_subcommand not in _RESUMING_THE_COLLECTOR:
        resume_collection()
