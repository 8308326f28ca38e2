"""Finding the module of each ``call`` without importing (or running) it, and refusing two
plan folders whose modules would shadow each other."""

from __future__ import annotations

import importlib.machinery
import importlib.util
from pathlib import Path

__all__ = ["CallModules", "module_origin"]


class CallModules:
    """The folders the ``call`` modules of one run come from.

    Plans of one run share one import system, so two plan folders that each hold a top-level
    ``tools`` would shadow each other.
    """

    def __init__(self) -> None:
        self.homes: dict[str, Path] = {}
        #: Each module's answer, once found: a ``for_each`` asks again for every item.
        self.checked: dict[tuple[str, Path], str | None] = {}

    def __repr__(self) -> str:
        return f"<CallModules {len(self.homes)} top-level modules>"

    def check(self, dotted: str, folder: Path) -> str | None:
        """A problem with the module ``dotted``, called from a plan in ``folder``, or None."""
        key = (dotted, folder)
        if key not in self.checked:
            self.checked[key] = self._check(dotted, folder)
        return self.checked[key]

    def _check(self, dotted: str, folder: Path) -> str | None:
        home, problem = module_origin(dotted, folder)
        if problem is not None:
            return problem
        top = dotted.split(".")[0]
        if home is not None:
            seen = self.homes.setdefault(top, home)
            if seen != home:
                return (
                    f"module {top!r} is in both {seen} and {home}; plans of one run share "
                    "their imports, so give one of them another name"
                )
        return None


def module_origin(dotted: str, folder: Path) -> tuple[Path | None, str | None]:
    """Where ``dotted`` would be imported from, found without importing (or running) anything.

    Returns the folder its top-level package or module comes from (None for one on sys.path
    other than ``folder``), or a problem.
    """
    parts = dotted.split(".")
    top = importlib.machinery.PathFinder.find_spec(parts[0], [str(folder.resolve())])
    home: Path | None = folder.resolve()
    if top is None:
        home = None
        try:
            top = importlib.util.find_spec(parts[0])
        except (ImportError, ValueError):  # pragma: no cover - a broken package on sys.path
            top = None
    if top is None:
        return None, f"cannot find module {parts[0]!r} (looked in {folder} and sys.path)"
    spec = top
    for depth, part in enumerate(parts[1:], start=2):
        locations = spec.submodule_search_locations
        found = (
            importlib.machinery.PathFinder.find_spec(part, list(locations)) if locations else None
        )
        if found is None:
            return None, f"cannot find module {'.'.join(parts[:depth])!r}"
        spec = found
    return home, None
