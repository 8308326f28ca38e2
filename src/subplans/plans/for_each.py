"""A ``for_each`` step's items: read from their source, and one named subplan each.

Plain values in, plain values out (no plan file models): a source and the folder it is read
from give the items, whenever they are read.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from subplans.plans.placeholders import item_values, substitute

__all__ = [
    "GlobSource",
    "Item",
    "ItemSource",
    "ItemsProblem",
    "LinesSource",
    "check_source",
    "name_items",
    "named_items",
    "named_values",
    "read_items",
]

_NUL_ITEM = (
    "a for_each item has a NUL byte, which no command, environment variable or path can hold"
)


@dataclass(frozen=True, slots=True)
class GlobSource:
    """The files matching ``pattern`` (relative to the folder), sorted."""

    pattern: str


@dataclass(frozen=True, slots=True)
class LinesSource:
    """The non-blank lines of ``file`` (relative to the folder); ``#`` starts a comment line."""

    file: str


#: Items written out, or where to find them.
ItemSource = tuple[str, ...] | GlobSource | LinesSource


@dataclass(frozen=True, slots=True)
class ItemsProblem:
    """Why a ``for_each`` source gives no items.

    ``key`` is the source's field at fault (``glob`` or ``lines``); ``file``, ``line`` and
    ``column`` say where, when the fault is in the file the items are read from.
    """

    key: str
    message: str
    file: Path | None = None
    line: int | None = None
    column: int | None = None


@dataclass(frozen=True, slots=True)
class Item:
    """One subplan of a ``for_each``: its name and what its placeholders stand for."""

    name: str
    values: Mapping[str, str]


def check_source(source: ItemSource) -> ItemsProblem | None:
    """What is wrong with ``source`` whatever the files hold, or None."""
    if isinstance(source, GlobSource) and Path(source.pattern).is_absolute():
        return ItemsProblem("glob", "must be relative to the plan's folder")
    return None


def read_items(source: ItemSource, folder: Path) -> list[str] | ItemsProblem:
    """The items ``source`` gives, read relative to ``folder``; or why it gives none (no file
    matches the glob, the lines file cannot be read, or a line holds a NUL byte)."""
    problem = check_source(source)
    if problem is not None:
        return problem
    if isinstance(source, GlobSource):
        import glob as globbing  # here: a plan without a glob never pays for its import

        found = sorted(globbing.glob(source.pattern, root_dir=folder, recursive=True))
        if not found:
            return ItemsProblem("glob", f"{source.pattern!r} matches no files in {folder}")
        return found
    if isinstance(source, LinesSource):
        return _lines(folder / source.file)
    return list(source)


def _lines(path: Path) -> list[str] | ItemsProblem:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or str(error)
        return ItemsProblem("lines", f"cannot read {path}: {reason}")
    lines = text.splitlines()
    for number, line in enumerate(lines, start=1):
        if "\x00" in line:
            column = line.index("\x00") + 1
            message = f"{_NUL_ITEM} ({line.strip()!r})"
            return ItemsProblem("lines", message, path, number, column)
    stripped = (line.strip() for line in lines)
    return [line for line in stripped if line and not line.startswith("#")]


def name_items(items: Sequence[str], name: str | None) -> list[Item | str]:
    """One ``Item`` per item, named by the template ``name`` (None: after the item itself).

    In item order; an item whose name is not a valid name, or an earlier item's, is left out:
    the problem stands in its place.
    """
    return list(named_items(items, name))


def named_items(items: Iterable[str], name: str | None) -> Iterator[Item | str]:
    """``name_items`` one at a time: a million items are never all held as ``Item``s."""
    for named in named_values(items, name):
        yield named if isinstance(named, str) else Item(*named)


def named_values(
    items: Iterable[str], name: str | None
) -> Iterator[tuple[str, dict[str, str]] | str]:
    """``named_items``, each a plain (name, values) pair: the loader takes them apart at once,
    and making a frozen ``Item`` was a tenth of what an item of a big ``for_each`` cost."""
    taken: set[str] = set()
    for index, item in enumerate(items):
        values = item_values(item, index)
        if name is not None:
            given = substitute(name, values)
            if "/" in given or not given.strip():
                yield (
                    f"for_each item {item!r} gives the name {given!r}; a name must be "
                    "non-empty, without '/' (try {stem} or {index})"
                )
                continue
        else:
            # The default name is the item, with '/' (a glob's folders) made '_'.
            given = item.replace("/", "_") or str(index)
        if given in taken:
            yield f"for_each item {item!r} gives the duplicate name {given!r}"
            continue
        taken.add(given)
        yield given, values
