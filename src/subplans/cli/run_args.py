"""``subplans run PLAN [OPTIONS]`` read without Typer, when the command line is plain.

Typer (with its vendored click, and the pydantic adapter it builds for each option as it parses
them) is about 40 ms of a run's start. A plain command line needs none of it: ``run``, one plan
path, and options each written once as ``--name VALUE``, ``--name=VALUE``, ``-j VALUE`` or a
flag, with values that Typer would take as they are. ``plain_run_args`` reads those and
``run_plainly`` runs them, as Typer would (``run_plan``, the same exit codes); anything else
(``--help``, ``--dry-run``, an unknown, repeated or misspelt option, a value Typer would refuse
or convert, ``--``, shell completion) returns None, and Typer reads the line, so every help
text and usage error stays Typer's own.
"""

from __future__ import annotations

import errno
import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from subplans.cli.exits import ExitCode
from subplans.cli.overrides import BackendKind
from subplans.engine.config import FailureMode
from subplans.sinks.output_modes import OutputMode

__all__ = ["plain_run_args", "run_plainly"]

#: Flags (no value), by every name Typer gives them, to ``run_plan``'s keyword.
_FLAGS = {
    "--no-progress": "no_progress",
    "--quiet": "quiet",
    "-q": "quiet",
    "--concurrent": "concurrent",
}
#: Options with a value, by every name, to ``run_plan``'s keyword.
_VALUED = {
    "--max-parallel": "max_parallel",
    "-j": "max_parallel",
    "--failure-mode": "failure_mode",
    "--halt": "halt",
    "--backend": "backend",
    "--scheduler": "scheduler",
    "--profile": "profile",
    "-p": "profile",
    "--events-jsonl": "events_jsonl",
    "--store": "store",
    "--output": "output_mode",
}
#: An int as Typer's adapter reads it and returns it unchanged (no sign, space, ``_`` or zero
#: in front); other spellings go to Typer. Compiled on first use (``re``'s cache): only ``-j``.
_INT = r"0|[1-9][0-9]{0,8}"


def plain_run_args(args: Sequence[str]) -> dict[str, Any] | None:
    """``run_plan``'s arguments from ``args`` (``sys.argv[1:]``), or None: let Typer read them."""
    if len(args) < 2 or args[0] != "run" or "_SUBPLANS_COMPLETE" in os.environ:
        return None
    found: dict[str, Any] = {}
    rest = iter(args[1:])
    for arg in rest:
        if not _plain(arg):
            return None
        if not arg.startswith("-"):
            if "plan" in found:
                return None  # a second argument: Typer's usage error
            found["plan"] = Path(arg)
            continue
        # click splits `--name=VALUE`; a short option's `=` would be part of its value.
        name, equals, value = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        converted: object
        if name in _FLAGS and not equals:
            key, converted = _FLAGS[name], True
        elif name in _VALUED:
            if not equals:
                value = next(rest, "")
            if not _plain(value) or (value.startswith("-") and value != "-"):
                return None  # missing, or an option where Typer would decide
            key, converted = _VALUED[name], _value(_VALUED[name], value)
        else:
            return None  # --help, --dry-run, -qj8, --: whatever Typer decides
        if converted is None or key in found:
            return None
        found[key] = converted
    return found if "plan" in found else None


def _plain(arg: str) -> bool:
    """Text every Typer option takes as it is: not empty, and encodable (a byte that is not
    UTF-8 arrives as a lone surrogate, which pydantic refuses)."""
    if not arg:
        return False
    try:
        arg.encode()
    except UnicodeEncodeError:
        return False
    return True


def _value(key: str, value: str) -> object:
    """An option's value as Typer gives it to the command, or None where Typer might not."""
    if key == "max_parallel":
        return int(value) if re.fullmatch(_INT, value) else None
    if key == "failure_mode":
        return FailureMode(value) if value in FailureMode._value2member_map_ else None
    if key == "output_mode":
        return OutputMode(value) if value in OutputMode._value2member_map_ else None
    if key == "backend":
        return BackendKind(value) if value in BackendKind._value2member_map_ else None
    if key == "store":
        return Path(value)
    return value


def run_plainly(arguments: dict[str, Any], runner: Callable[..., int] | None = None) -> int:
    """``run_plan(**arguments)`` (or ``runner``'s), its end turned into an exit code as Typer's
    ``main`` and ``app._main`` turn it."""
    if runner is None:
        from subplans.cli.run_plan import run_plan

        runner = run_plan
    try:
        return runner(**arguments)
    except EOFError:
        print(file=sys.stderr)  # click's end-of-input line, then Abort: interrupted
        return ExitCode.INTERRUPTED
    except KeyboardInterrupt:
        return ExitCode.INTERRUPTED
    except OSError as error:
        if error.errno != errno.EPIPE:
            raise
        return ExitCode.OK  # the reader has all it wanted (click exits 1, `_main` says 0)
    except Exception as error:
        code = _typer_exit_code(error)
        if code is None:
            raise
        return code


def _typer_exit_code(error: Exception) -> int | None:
    """The code of a ``typer.Exit`` (raised for invalid input); None for anything else. Typer
    is loaded only if something raised one."""
    typer = sys.modules.get("typer")
    if typer is not None and isinstance(error, typer.Exit):
        return int(error.exit_code)
    return None
