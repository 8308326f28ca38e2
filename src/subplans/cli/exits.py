"""The exit codes of ``subplans`` and the errors that end a command with one.

====  ==============================================================================
0     every subplan and step completed (or the command did what it was asked)
1     the plan failed (a subplan or a step failed)
2     invalid input: plan, profile, config file or command-line values; a store that
      cannot be used; a run that is unknown, busy in another process or not live
130   interrupted by SIGINT or SIGTERM; every process of the run was stopped first
====  ==============================================================================

Invalid input is one ``error:`` line per problem on stderr (``invalid()``); the modules below
the commands ``refuse()`` with those lines instead, and know nothing of Typer: the command's
``invalid_input()`` block prints them. Typer is imported only to print them: ``main()`` uses
``ExitCode`` before Typer is loaded.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from enum import IntEnum
from typing import NoReturn

__all__ = ["ExitCode", "interruptible", "invalid", "invalid_input", "refuse", "told"]


class ExitCode(IntEnum):
    """The exit codes of ``subplans``."""

    OK = 0
    FAILED = 1
    INVALID = 2
    INTERRUPTED = 130


class _Refused(Exception):
    """What ``refuse()`` raises and ``invalid_input()`` prints (a command-internal exception: it
    never leaves the command, so it is not part of the error tree)."""

    def __init__(self, problems: list[str], preface: str | None) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems
        self.preface = preface
        #: Its lines are printed already (``told()``).
        self.told = False


def refuse(problems: Iterable[object], *, preface: str | None = None) -> NoReturn:
    """Refuse the command's input: one ``error:`` line per problem, exit 2, once the command's
    ``invalid_input()`` block sees it. ``preface``, if given, is printed on stderr as it is
    before them (a listing the problems refer to)."""
    raise _Refused([str(problem) for problem in problems], preface) from None


def invalid(problems: Iterable[object]) -> NoReturn:
    """Print one ``error:`` line per problem on stderr and exit 2."""
    import typer

    _print_errors(problems)
    raise typer.Exit(ExitCode.INVALID)


def _print_errors(problems: Iterable[object]) -> None:
    import typer

    from subplans.sinks.formatting import visible

    for problem in problems:
        # One line each, whatever the message holds: a line per problem is the contract, and
        # a control character it quotes (from a plan, an item, a file name) is shown, not obeyed.
        typer.echo(f"error: {visible(' '.join(str(problem).splitlines()))}", err=True)


def _print_refused(refused: _Refused) -> None:
    import typer

    if not refused.told:
        refused.told = True
        if refused.preface is not None:
            typer.echo(refused.preface, err=True)
        _print_errors(refused.problems)


@contextlib.contextmanager
def told() -> Iterator[None]:
    """Print the lines of what ``refuse()`` refuses in the block as it leaves the block (the
    exit stays 2, once ``invalid_input()`` sees it): inside ``signal_guard``'s ``deferred()``,
    whose end replaces the exit with 130 if a signal was noted meanwhile, the lines are then
    printed before the interrupt's line instead of lost."""
    try:
        yield
    except _Refused as refused:
        _print_refused(refused)
        raise


@contextlib.contextmanager
def invalid_input() -> Iterator[None]:
    """Exit 2 with its lines for what is refused: ``refuse()``, a store that cannot be used, a
    run that is unknown, busy or not live."""
    from subplans.engine.errors import RunBusyError, RunNotLiveError, StoreError

    try:
        yield
    except _Refused as refused:
        import typer

        _print_refused(refused)
        raise typer.Exit(ExitCode.INVALID) from None
    except (StoreError, RunBusyError, RunNotLiveError) as error:
        invalid([error])


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """Ctrl-C while waiting on a run: exit 130, without a traceback."""
    try:
        yield
    except KeyboardInterrupt:
        import typer

        raise typer.Exit(ExitCode.INTERRUPTED) from None
