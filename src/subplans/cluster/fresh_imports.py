"""A ``call`` unit's function imported on a worker as a fresh process would import it: the
plan's current code, from its own folder.

A worker lives on across runs and plans, and keeps every module it imported: without care, a
plan whose module was edited would run the old code, and a plan whose module has the name of
another plan's would run the other plan's. So before each import (``PlanImports.load``), the
modules imported from other plan folders are dropped, and those of the unit's folder too if
one of its files changed since (its size or modification time); a module of the target's
name that the unit's folder holds but was imported from elsewhere is dropped as well. Only
modules an import here made are dropped (never what the worker imported on its own). The
unit's folder goes first on ``sys.path``, the other plan folders off it. A local run imports
in a process of its own and never comes here. (Python's cached bytecode is checked by the
source's size and mtime in seconds: an edit of the same size within a second is not seen.)
"""

from __future__ import annotations

import importlib
import os
import sys
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from subplans.execution.runners import import_target

__all__ = ["PlanImports"]


@dataclass(frozen=True, slots=True)
class _Imported:
    """A module imported from a plan folder: the folder, its file and the file's stamp."""

    folder: str
    file: str
    stamp: tuple[int, int] | None


def _stamp(file: str) -> tuple[int, int] | None:
    try:
        found = os.stat(file)
    except OSError:
        return None
    return found.st_mtime_ns, found.st_size


def _provides(folder: str, name: str) -> bool:
    """Whether ``folder`` holds the top-level module or package ``name``."""
    return os.path.exists(os.path.join(folder, f"{name}.py")) or os.path.isdir(
        os.path.join(folder, name)
    )


class PlanImports:
    """The modules this worker process imported from plan folders, kept current."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._modules: dict[str, _Imported] = {}
        #: The plan folders put on ``sys.path`` here (others on it are the worker's own).
        self._added: set[str] = set()

    def __repr__(self) -> str:
        return f"<PlanImports {len(self._modules)} modules of {len(self._added)} plan folders>"

    def load(self, target: str, folder: Path) -> Callable[..., Any]:
        """``runners.import_target(target, folder)`` with the plan's current code only.

        Raises:
            CallTargetError: it cannot be imported, or is not a function.
        """
        where = str(folder.resolve())
        top = target.partition(":")[0].partition(".")[0]
        with self._lock:  # one import at a time: sys.path and sys.modules are the process's
            self._only_on_path(where)
            if self._drop_stale(where, top):
                importlib.invalidate_caches()
            before = set(sys.modules)
            try:
                return import_target(target, Path(where))
            finally:
                self._note(where, sys.modules.keys() - before)

    def _only_on_path(self, where: str) -> None:
        """``where`` first on ``sys.path``, the other plan folders put there before off it."""
        sys.path[:] = [entry for entry in sys.path if entry != where and entry not in self._added]
        sys.path.insert(0, where)
        self._added.add(where)

    def _drop_stale(self, where: str, top: str) -> bool:
        """Drop what must be imported afresh; whether anything was."""
        stale = {name for name, found in self._modules.items() if found.folder != where}
        mine = [name for name, found in self._modules.items() if found.folder == where]
        if any(_stamp(self._modules[name].file) != self._modules[name].stamp for name in mine):
            stale.update(mine)  # an unchanged module may hold names of a changed one
        loaded = sys.modules.get(top)
        file = getattr(loaded, "__file__", None)
        if (
            loaded is not None
            and top not in self._modules
            and not (isinstance(file, str) and file.startswith(where + os.sep))
            and _provides(where, top)
        ):
            stale.add(top)
            stale.update(name for name in sys.modules if name.startswith(f"{top}."))
        for name in stale:
            sys.modules.pop(name, None)
            self._modules.pop(name, None)
        return bool(stale)

    def _note(self, where: str, imported: Iterable[str]) -> None:
        """Remember those of the modules just ``imported`` that come from ``where`` (and their
        files' stamps). Only those: what the worker had imported before (subplans itself,
        when a plan folder holds its source) is never dropped."""
        prefix = where + os.sep
        for name in imported:
            file = getattr(sys.modules.get(name), "__file__", None)
            if isinstance(file, str) and file.startswith(prefix):
                self._modules[name] = _Imported(where, file, _stamp(file))
