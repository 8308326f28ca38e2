"""Glob patterns matched as ``glob.glob(pattern, root_dir=..., recursive=True)`` matches them,
except that ``**`` does not walk into symlinked folders.

The standard walk follows them: a link to a folder above (``src/deep/loop -> ..``) gives
``loop/deep/loop/...`` until the names are too long, and two such links give exponentially
many. Here ``**`` matches real folders only, as ``find`` walks (a link is still matched as a
name, where ``**`` ends the pattern); every other part of a pattern is matched as ``glob``
matches it (names starting with ``.`` only by a part that starts with ``.``; a pattern ending
in ``/`` only folders).
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterator

__all__ = ["glob"]

_MAGIC = frozenset("*?[")


def glob(pattern: str, root: str) -> Iterator[str]:
    """The paths relative to ``root`` that ``pattern`` matches (unsorted)."""
    found = _glob(pattern, root, dironly=False)
    if pattern.startswith("**"):
        return (path for path in found if path)  # as glob: ``**`` does not give the root
    return found


def _magic(text: str) -> bool:
    return not _MAGIC.isdisjoint(text)


def _glob(pattern: str, root: str, *, dironly: bool) -> Iterator[str]:
    folder, last = os.path.split(pattern)
    if not _magic(pattern):
        if last:
            if os.path.lexists(os.path.join(root, pattern)):
                yield pattern
        elif os.path.isdir(os.path.join(root, folder)):
            yield pattern
        return
    folders = _glob(folder, root, dironly=True) if _magic(folder) else iter([folder])
    for parent in folders:
        inside = os.path.join(root, parent)
        if last == "**":
            names = _walk(inside, dironly=dironly)
        elif _magic(last):
            names = iter(_matching(inside, last, dironly=dironly))
        else:
            names = iter(_literal(inside, last))
        for name in names:
            yield os.path.join(parent, name)


def _entries(folder: str, *, dironly: bool) -> list[os.DirEntry[str]]:
    """The visible entries of ``folder`` (only folders, where ``dironly``): none if it cannot
    be read, as ``glob`` has it."""
    try:
        with os.scandir(folder or os.curdir) as found:
            return [
                entry
                for entry in found
                if not entry.name.startswith(".") and (not dironly or _is_dir(entry))
            ]
    except OSError:
        return []


def _is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False


def _matching(folder: str, part: str, *, dironly: bool) -> list[str]:
    if part.startswith("."):  # hidden names too: as glob, only a part starting with '.'
        try:
            with os.scandir(folder or os.curdir) as found:
                names = [e.name for e in found if not dironly or _is_dir(e)]
        except OSError:
            return []
    else:
        names = [entry.name for entry in _entries(folder, dironly=dironly)]
    return fnmatch.filter(names, part)


def _literal(folder: str, name: str) -> list[str]:
    if name:
        return [name] if os.path.lexists(os.path.join(folder, name)) else []
    return [name] if os.path.isdir(folder) else []  # 'a*/': folders only


def _walk(folder: str, *, dironly: bool) -> Iterator[str]:
    """``''`` and every path below ``folder``, not through a symlinked folder (``**``)."""
    yield ""
    yield from _below(folder, dironly=dironly)


def _below(folder: str, *, dironly: bool) -> Iterator[str]:
    for entry in _entries(folder, dironly=dironly):
        linked = entry.is_symlink()
        if dironly and linked:
            continue  # a linked folder is not one ``**`` walks through
        yield entry.name
        if not linked and _is_dir(entry):
            for name in _below(os.path.join(folder, entry.name), dironly=dironly):
                yield os.path.join(entry.name, name)
