"""The garbage collector paused while the command starts up.

What the start-up creates (the modules, Typer's commands, pydantic's schemas: tens of thousands
of objects) lives until the process ends; collecting meanwhile only walks it again and again
(about 15 ms of a ``subplans run``). ``main()`` pauses the collector first thing (``pause_collection``);
the command resumes it as its own work begins (``resume_collection``: ``run``, ``resume`` and ``validate``
before they read the plan, the other commands as Typer calls them), with what exists then
frozen out of its sight; ``restore_collection`` puts it back as it was when ``main()`` returns. A collector
that was off already stays off: the caller's choice stands.
"""

from __future__ import annotations

import gc

__all__ = ["pause_collection", "restore_collection", "resume_collection"]

_paused = False
_frozen = False


def pause_collection() -> None:
    """No collection from now on, until ``resume_collection`` or ``restore_collection``."""
    global _paused
    if gc.isenabled():
        gc.disable()
        _paused = True


def resume_collection() -> None:
    """Collect again, with every object that exists now out of the collector's sight."""
    global _paused, _frozen
    if _paused:
        gc.freeze()
        gc.enable()
        _paused, _frozen = False, True


def restore_collection() -> None:
    """The collector as it was before ``pause_collection``: collecting everything, or off."""
    global _paused, _frozen
    if _frozen:
        gc.unfreeze()
        _frozen = False
    if _paused:
        gc.enable()
        _paused = False
