"""The items of a ``for_each`` step, read when the step starts: a glob, a lines file, standard
input, or what a command prints.

A command runs as every command of the run does (``process.run_command``: its own process
group, stopped with SIGTERM, the step's ``cancel_grace``, then SIGKILL if the run is
cancelled meanwhile); its standard output goes to a file the items are read from, its standard
error to the step's source log.

A resumed run reuses the items a step read when it first started (``RecordedItems``, from the
run store), so that the subplans it completed then are the ones it skips now.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
from collections.abc import Awaitable, Callable
from typing import Final, TextIO

from subplans.engine.errors import CommandFailedError
from subplans.engine.values import Value
from subplans.execution.process import run_command
from subplans.execution.run_context import RunContext
from subplans.plans.for_each import (
    STDIN,
    CommandSource,
    GlobSource,
    ItemsProblem,
    LinesSource,
    command_items,
    read_items,
)
from subplans.plans.tree import StepItems, UnitNode

__all__ = ["RecordedItems", "read_stdin", "read_step_items"]

#: How many lines of a failed command's standard error its error keeps.
_TAIL_LINES = 10


class RecordedItems(Value):
    """The items a step read when it started, and its source then (``str(StepItems)``): a
    resumed run uses them instead of reading the source again, while the source is the same."""

    __slots__ = ("items", "source")
    _fields = ("source", "items")

    def __init__(self, source: str, items: tuple[str, ...]) -> None:
        self.source: Final = source
        self.items: Final = items

    def fits(self, items: StepItems) -> bool:
        """Whether they were read from the source ``items`` has now (a plan changed and resumed
        with ``--force`` may give the step another one: that is read afresh)."""
        return self.source == str(items)


async def read_step_items(
    items: StepItems,
    context: RunContext,
    *,
    step_id: str,
    cancel_grace: float,
    stdin: Callable[[], Awaitable[str]],
) -> list[str]:
    """The items of ``step_id``'s source, read now; ``stdin`` gives the text of ``{lines: -}``.

    Raises:
        ProblemsError: the source gives no items (a glob matches nothing, a file cannot be
            read, a line holds a NUL byte), in one line that names the step.
        CommandFailedError: the command failed: its exit code and the last lines of its
            standard error.
        asyncio.CancelledError: the run was cancelled; the command was stopped first.
    """
    source = items.source
    try:
        if isinstance(source, CommandSource):
            text = await _command_output(source.command, items, context, step_id, cancel_grace)
            found = command_items(source, text)
        else:
            given = None
            if isinstance(source, LinesSource) and source.file == STDIN:
                try:
                    given = await stdin()
                except (OSError, ValueError) as error:
                    raise _problem(
                        step_id, ItemsProblem("lines", f"cannot read standard input: {error}")
                    ) from None
            found = read_items(source, items.folder, stdin=given)
    except OSError as error:  # whatever reading it met: the step's failure, not a traceback
        raise _problem(
            step_id, ItemsProblem(_KEYS[type(source)], f"cannot read the {items}: {_reason(error)}")
        ) from None
    if isinstance(found, ItemsProblem):
        raise _problem(step_id, found)
    return found


#: The field that names a source of each kind.
_KEYS = {CommandSource: "command", LinesSource: "lines", GlobSource: "glob"}


def _reason(error: OSError) -> str:
    said = error.strerror or str(error)
    return f"{said}: {error.filename}" if error.filename else said


async def read_stdin() -> str:
    """All of standard input ("" when there is none), read by a daemon thread: a run cancelled
    while standard input stays open is not held up by a read that never returns."""
    loop = asyncio.get_running_loop()
    read: asyncio.Future[str] = loop.create_future()

    def settle(text: str | None, error: BaseException | None) -> None:
        if read.done():  # cancelled meanwhile
            return
        if error is not None:
            read.set_exception(error)
        else:
            read.set_result(text or "")

    def reader() -> None:
        stream: TextIO | None = sys.stdin
        try:
            text, error = ("" if stream is None else stream.read()), None
        except (OSError, ValueError) as failure:  # closed, or not readable as text
            text, error = None, failure
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            loop.call_soon_threadsafe(settle, text, error)

    threading.Thread(target=reader, name="subplans standard input", daemon=True).start()
    return await read


async def _command_output(
    command: str, items: StepItems, context: RunContext, step_id: str, grace: float
) -> str:
    # Absolute: the shell runs in the plan's folder, not where the run was started, and the
    # path is stored with the step's error (status and logs read it from anywhere).
    log_file = context.log_file(f"{step_id}.items").absolute()
    output = log_file.with_suffix(".out")
    # The command's standard output to its own file: the shell's redirection, so that what
    # it starts inherits it too; standard error to the log.
    argv = ["/bin/sh", "-c", 'exec >"$1" && exec /bin/sh -c "$2"', "sh", str(output), command]
    # What a subplan of the step would get: the run's marker finds what the command leaves.
    folder = items.folder.absolute()
    unit = UnitNode(step_id, step_id, "run", folder, folder, env=items.env, item=items.item)
    try:
        try:
            await run_command(
                argv,
                log_file=log_file,
                cwd=folder,
                env=context.environment(unit),
                cancel_grace=grace,
                tail_lines=_TAIL_LINES,
                groups=context.groups,
            )
        except CommandFailedError as error:
            raise _failed(command, step_id, error) from None
        return output.read_text(encoding="utf-8", errors="replace")
    finally:
        with contextlib.suppress(OSError):
            output.unlink()


def _failed(command: str, step_id: str, error: CommandFailedError) -> CommandFailedError:
    """``error`` told as the failure of ``step_id``'s ``for_each`` command, with the last line
    of its standard error."""
    last = next((line for line in reversed(error.output_tail.splitlines()) if line.strip()), "")
    return CommandFailedError(
        f"step {step_id}: for_each command {command!r} {error}" + (f": {last}" if last else ""),
        exit_code=error.exit_code,
        signal=error.signal,
        log_file=error.log_file,
        output_tail=error.output_tail,
    )


def _problem(step_id: str, found: ItemsProblem) -> Exception:
    from subplans.plans.yamlfile import Problem, ProblemsError  # only when it fails

    if found.file is not None:
        where = Problem(found.file, "", found.message, found.line, found.column)
        return ProblemsError([Problem(None, f"step {step_id}", str(where))])
    return ProblemsError([Problem(None, f"step {step_id}: for_each.{found.key}", found.message)])
