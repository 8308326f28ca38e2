"""The command's use of the garbage collector: paused while it starts up, and, when it is the
program, what lives as long as the process kept out of the collector's sight.

What the start-up creates (the modules, Typer's commands, pydantic's schemas: tens of thousands
of objects) lives until the process ends; collecting meanwhile only walks it again and again
(about 15 ms of a ``subplans run``), and a run's full collections would walk it, and the plan,
again and again. So ``main()`` pauses the collector first thing (``pause_collection``); the
command resumes it as its own work begins (``resume_collection``: ``run``, ``resume`` and
``validate`` before they read the plan, the other commands as Typer calls them); a run freezes
what exists as it starts (``freeze_survivors``: the plan, the modules); ``restore_collection``
puts the collector back as it was when ``main()`` returns.

Freezing is for the program only (``subplans``, ``python -m subplans``: ``main()`` without
arguments): ``gc.freeze`` and ``gc.unfreeze`` act on the whole process, so a program that calls
``main([...])`` itself keeps its own frozen objects as they were and gets nothing frozen. Nothing
is ever unfrozen, and nothing is frozen at exit: garbage made by a run (a ``call``'s temporary
file in a reference cycle) is still collected, its finalisers run, when the process ends.
"""

from __future__ import annotations

import gc

__all__ = ["freeze_survivors", "pause_collection", "restore_collection", "resume_collection"]

_paused = False
_program = False


def pause_collection(*, program: bool) -> None:
    """No collection from now on, until ``resume_collection`` or ``restore_collection``;
    ``program``: this process is the command (it may freeze what lives as long as it)."""
    global _paused, _program
    _program = program
    if gc.isenabled():
        gc.disable()
        _paused = True


def resume_collection() -> None:
    """Collect again; the program first freezes what the start-up made."""
    global _paused
    if _paused:
        freeze_survivors()
        gc.enable()
        _paused = False


def freeze_survivors() -> None:
    """In the program, every object that exists now out of the collector's sight for good."""
    if _program:
        gc.freeze()


def restore_collection() -> None:
    """The collector on again if ``pause_collection`` turned it off (a collector that was off
    stays off: the caller's choice stands)."""
    global _paused, _program
    if _paused:
        gc.enable()
        _paused = False
    _program = False
