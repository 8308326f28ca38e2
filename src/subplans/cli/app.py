"""The ``subplans`` command: the Typer app, its root options, and ``main()``, the entry point.

The commands live one group to a module: ``run``, ``resume`` and ``validate`` in
``run_commands`` (the run itself is ``lifecycle.RunLifecycle``'s), ``runs``, ``status``,
``events``, ``logs`` and ``cancel`` in ``store_commands``, ``profile list|show|resolve`` in
``profile_commands``, ``schema`` in ``schema_command``.

``main()`` runs the app outside click's standalone mode, so that the exit codes are ours
(``exits.ExitCode``) and a usage error is one ``error:`` line like any other invalid input.
Heavy modules (pydantic through the loader, Rich, the executor, the sinks, the store) are
imported inside the commands, so that ``--help`` and ``--version`` start fast.
"""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Sequence
from typing import Annotated, Any

import typer

from subplans.cli.exits import ExitCode
from subplans.cli.options import CONTEXT, example
from subplans.cli.profile_commands import profile_app
from subplans.cli.run_commands import commands as run_commands
from subplans.cli.schema_command import commands as schema_commands
from subplans.cli.store_commands import commands as store_commands
from subplans.execution import signal_guard

__all__ = ["ExitCode", "app", "main"]

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
for commands in (run_commands, schema_commands, store_commands):
    app.registered_commands.extend(commands.registered_commands)
app.add_typer(profile_app)


def _version(value: bool) -> None:
    if value:
        from subplans import __version__

        typer.echo(f"subplans {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
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


# --- entry point --------------------------------------------------------------------------

# Recent Typer versions vendor click: take click's base exception from Typer's own class.
_ClickException: type[Exception] = next(
    cls for cls in typer.BadParameter.__mro__ if cls.__name__ == "ClickException"
)


def main(argv: Sequence[str] | None = None) -> int:
    """The ``subplans`` command; returns the exit code (``ExitCode``)."""
    # SIGINT and SIGTERM: exit 130 and one line at any moment (signal_guard).
    with signal_guard.GUARD.guarded():
        try:
            return _main(argv)
        except signal_guard.CommandInterrupted:
            return ExitCode.INTERRUPTED


def _main(argv: Sequence[str] | None) -> int:
    command = typer.main.get_command(app)
    # Ids and output come from plans and commands: a terminal or pipe that cannot encode a
    # character gets an escape, never a UnicodeEncodeError halfway through a summary.
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")
    try:
        code = command.main(args=argv, prog_name="subplans", standalone_mode=False)
    except _ClickException as error:
        return _usage_error(error)
    except typer.Abort:  # end of input while prompting, or Ctrl-C outside a run
        return ExitCode.INTERRUPTED
    except BrokenPipeError:  # `subplans runs | head`: the reader has all it wanted
        code = ExitCode.OK
    except SystemExit as exiting:
        # click answers a broken pipe itself with exit 1 after wrapping stdout; that is the
        # reader having all it wanted, not a failed plan.
        if type(sys.stdout).__name__ != "PacifyFlushWrapper":
            raise
        code = ExitCode.OK if exiting.code == 1 else exiting.code
    finally:
        _forget_closed_stdout()
    return code if isinstance(code, int) else ExitCode.OK


def _forget_closed_stdout() -> None:
    """After ``subplans ... | head``: no "Exception ignored" noise when Python exits.

    Python flushes stdout on the way out; if the reader has gone, point stdout at /dev/null
    first (the recipe of the ``signal`` module's documentation).
    """
    if sys.stdout is None:  # started with stdout closed (`>&-`)
        return
    try:
        sys.stdout.flush()
    except OSError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def _usage_error(error: Any) -> int:
    """A click usage error as one ``error:`` line; ``subplans`` alone prints its help."""
    message: str = error.format_message()
    if type(error).__name__ == "NoArgsIsHelpError":
        if message.strip():  # pragma: no cover - click prints the help itself in some versions
            typer.echo(message, err=True)
        return ExitCode.INVALID
    message = " ".join(message.split()).rstrip(".")
    message = message[:1].lower() + message[1:]
    ctx = getattr(error, "ctx", None)
    hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
    typer.echo(f"error: {message}{hint}", err=True)
    return ExitCode.INVALID
