"""The ``subplans`` command's entry point: ``main()``.

``main()`` runs the Typer app (``typer_app``, where the commands are gathered; ``app`` here too)
outside click's standalone mode, so that the exit codes are ours (``exits.ExitCode``) and a
usage error is one ``error:`` line like any other invalid input.

Nothing is loaded before it is needed: ``subplans --version`` is answered here before Typer is
imported, a plain ``subplans run`` line is read and run without Typer (``run_args``: any other
line goes to Typer, which answers it as always), and the commands import their heavy modules
(the loader, Rich, the executor, the sinks, the store) inside themselves, so that ``--help``
starts fast too.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from subplans.cli.exits import ExitCode
from subplans.execution import signal_guard

if TYPE_CHECKING:
    from subplans.cli.typer_app import app

__all__ = ["ExitCode", "app", "main"]


def __getattr__(name: str) -> object:
    # The Typer app, loaded on first use: `subplans --version` never builds it.
    if name == "app":
        from subplans.cli.typer_app import app

        return app
    raise AttributeError(f"module 'subplans.cli.app' has no attribute {name!r}")


# --- entry point --------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """The ``subplans`` command; returns the exit code (``ExitCode``)."""
    # SIGINT and SIGTERM: exit 130 and one line at any moment (signal_guard).
    with signal_guard.GUARD.guarded():
        try:
            if _only_the_version(sys.argv[1:] if argv is None else argv):
                return _print_version()
            from subplans.cli.gc_pause import pause_collection, restore_collection

            # Until the command's own work begins; freezing only as the program (gc_pause).
            pause_collection(program=argv is None)
            try:
                args = sys.argv[1:] if argv is None else argv
                code = _run_without_typer(args) if args[:1] == ["run"] else None
                return _main(argv) if code is None else code
            finally:
                restore_collection()
        except signal_guard.CommandInterrupted:
            return ExitCode.INTERRUPTED


def _only_the_version(args: Sequence[str]) -> bool:
    """True when Typer would only print the version: the root's eager ``--version`` first, then
    nothing click would parse as a root option (past a command's name, nothing is parsed), and
    no shell completion asked for (click's ``_SUBPLANS_COMPLETE``)."""
    return (
        len(args) > 0
        and args[0] == "--version"
        and (len(args) == 1 or not args[1].startswith("-"))
        and "_SUBPLANS_COMPLETE" not in os.environ
    )


def _print_version() -> int:
    """``subplans --version`` without Typer: the line its ``--version`` prints, byte for byte."""
    from subplans import __version__

    if sys.stdout is None:  # started with stdout closed (`>&-`): click prints nothing either
        return ExitCode.OK
    # `subplans --version | true`: the reader has all it wanted, as click's exit 0 says too.
    with contextlib.suppress(BrokenPipeError):
        sys.stdout.write(f"subplans {__version__}\n")
        sys.stdout.flush()
    _forget_closed_stdout()
    return ExitCode.OK


def _run_without_typer(args: Sequence[str]) -> int | None:
    """``subplans run`` of a plain command line, read without loading Typer (``run_args``);
    None for any other line: Typer reads it."""
    from subplans.cli.run_args import plain_run_args, run_plainly

    arguments = plain_run_args(args)
    if arguments is None:
        return None
    _escape_unencodable()
    try:
        return run_plainly(arguments)
    finally:
        _forget_closed_stdout()


def _escape_unencodable() -> None:
    """Ids and output come from plans and commands: a terminal or pipe that cannot encode a
    character gets an escape, never a UnicodeEncodeError halfway through a summary."""
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")


def _main(argv: Sequence[str] | None) -> int:
    import typer

    from subplans.cli.typer_app import app

    # Recent Typer versions vendor click: take click's base exception from Typer's own class.
    click_exception: type[Exception] = next(
        cls for cls in typer.BadParameter.__mro__ if cls.__name__ == "ClickException"
    )
    command = typer.main.get_command(app)
    _escape_unencodable()
    try:
        code = command.main(args=argv, prog_name="subplans", standalone_mode=False)
    except click_exception as error:
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
    import typer

    message: str = error.format_message()
    if type(error).__name__ == "NoArgsIsHelpError":
        if message.strip():  # pragma: no cover - click prints the help itself in some versions
            typer.echo(message, err=True)
        return ExitCode.INVALID
    message = " ".join(message.split()).rstrip(".")
    # Typer coerces option values through pydantic, whose messages start "Value error, ".
    message = message.replace(": Value error, ", ": ")
    message = message[:1].lower() + message[1:]
    ctx = getattr(error, "ctx", None)
    hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
    typer.echo(f"error: {message}{hint}", err=True)
    return ExitCode.INVALID
