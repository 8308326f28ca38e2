"""A ``for_each`` step's items: read from their source, and one named subplan each.

Plain values in, plain values out (no plan file models): a source and the folder it is read
from give the items, whenever they are read. An inline list is known when the plan is loaded;
a glob, a lines file and a command are read when their step starts (``RUNTIME_SOURCES``): the
loader only checks their form, and ``preview`` says what they would give now.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from subplans.engine.values import Value
from subplans.plans.placeholders import item_values, substitute

__all__ = [
    "STDIN",
    "CommandSource",
    "GlobSource",
    "Item",
    "ItemSource",
    "ItemsProblem",
    "LinesSource",
    "check_source",
    "command_items",
    "describe_source",
    "item_source",
    "name_items",
    "named_items",
    "named_values",
    "output_items",
    "preview",
    "read_items",
]

_NUL_ITEM = (
    "a for_each item has a NUL byte, which no command, environment variable or path can hold"
)
#: ``{lines: -}``: the items are the lines of the ``subplans`` command's standard input.
STDIN = "-"


class GlobSource(Value):
    """The files matching any of ``patterns`` and none of ``exclude`` (relative to the folder),
    sorted; matching nothing is a problem unless ``allow_empty``."""

    # Plain classes, not dataclasses, here and below: building a dataclass costs the command's
    # start a third of a millisecond each (#10); Final keeps them read-only for the checker.
    __slots__ = ("allow_empty", "exclude", "patterns")
    _fields = ("patterns", "exclude", "allow_empty")

    def __init__(
        self, patterns: tuple[str, ...], exclude: tuple[str, ...] = (), allow_empty: bool = False
    ) -> None:
        self.patterns: Final = patterns
        self.exclude: Final = exclude
        self.allow_empty: Final = allow_empty


class LinesSource(Value):
    """The non-blank lines of ``file`` (relative to the folder; ``-``: standard input); ``#``
    starts a comment line. Giving none is a problem unless ``allow_empty``."""

    __slots__ = ("allow_empty", "file")
    _fields = ("file", "allow_empty")

    def __init__(self, file: str, allow_empty: bool = False) -> None:
        self.file: Final = file
        self.allow_empty: Final = allow_empty


class CommandSource(Value):
    """The non-blank lines a shell ``command`` prints, run in the folder (by the executor).
    Printing none is a problem unless ``allow_empty``."""

    __slots__ = ("allow_empty", "command")
    _fields = ("command", "allow_empty")

    def __init__(self, command: str, allow_empty: bool = False) -> None:
        self.command: Final = command
        self.allow_empty: Final = allow_empty


#: Items written out, or where to find them.
ItemSource = tuple[str, ...] | GlobSource | LinesSource | CommandSource


class ItemsProblem(Value):
    """Why a ``for_each`` source gives no items.

    ``key`` is the source's field at fault (``glob``, ``lines`` or ``command``); ``file``,
    ``line`` and ``column`` say where, when the fault is in the file the items are read from.
    """

    __slots__ = ("column", "file", "key", "line", "message")
    _fields = ("key", "message", "file", "line", "column")

    def __init__(
        self,
        key: str,
        message: str,
        file: Path | None = None,
        line: int | None = None,
        column: int | None = None,
    ) -> None:
        self.key: Final = key
        self.message: Final = message
        self.file: Final = file
        self.line: Final = line
        self.column: Final = column


class Item(Value):
    """One subplan of a ``for_each``: its name and what its placeholders stand for."""

    __slots__ = ("name", "values")
    _fields = ("name", "values")

    def __init__(self, name: str, values: Mapping[str, str]) -> None:
        self.name: Final = name
        self.values: Final = values


def item_source(spec: Any) -> ItemSource:
    """The plain source of what a ``for_each`` is written as: a list of strings, or one of the
    ``{glob}``, ``{lines}`` and ``{command}`` models (``models.ForEachGlob`` ..., or their
    stand-ins, ``plain_models``), told apart by their fields."""
    if isinstance(spec, list):
        return tuple(spec)
    if hasattr(spec, "glob"):
        patterns = (spec.glob,) if isinstance(spec.glob, str) else tuple(spec.glob)
        return GlobSource(patterns, tuple(spec.exclude or ()), spec.allow_empty)
    if hasattr(spec, "lines"):
        return LinesSource(spec.lines, spec.allow_empty)
    return CommandSource(spec.command, spec.allow_empty)


def check_source(source: ItemSource) -> ItemsProblem | None:
    """What is wrong with ``source`` whatever the files hold, or None."""
    if isinstance(source, GlobSource):
        for pattern in (*source.patterns, *source.exclude):
            if Path(pattern).is_absolute():
                key = "glob" if pattern in source.patterns else "exclude"
                return ItemsProblem(key, "must be relative to the plan's folder")
    return None


def describe_source(source: ItemSource) -> str:
    """Where ``source``'s items come from, in a few words (``glob 'src/*.py'``)."""
    if isinstance(source, GlobSource):
        shown = ", ".join(map(repr, source.patterns))
        excluded = f" excluding {', '.join(map(repr, source.exclude))}" if source.exclude else ""
        return f"glob {shown}{excluded}"
    if isinstance(source, LinesSource):
        return "lines of standard input" if source.file == STDIN else f"lines of {source.file!r}"
    if isinstance(source, CommandSource):
        return f"command {source.command!r}"
    return "a list"


def read_items(
    source: ItemSource, folder: Path, *, stdin: str | None = None
) -> list[str] | ItemsProblem:
    """The items ``source`` gives, read relative to ``folder``; or why it gives none (no file
    matches the glob, no line is an item, the lines file cannot be read, or a line holds a NUL
    byte; giving none is fine with ``allow_empty``). ``stdin`` is
    the text of ``{lines: -}``; a command's items come from ``output_items`` of its output."""
    problem = check_source(source)
    if problem is not None:
        return problem
    if isinstance(source, GlobSource):
        found = _glob(source, folder)
        if not found and not source.allow_empty:
            shown = ", ".join(map(repr, source.patterns))
            left = " (after exclude)" if source.exclude else ""
            return ItemsProblem(
                "glob",
                f"{shown} matches no files in {folder.absolute()}{left}; "
                "allow_empty: true runs no subplans instead",
            )
        return found
    if isinstance(source, LinesSource):
        if source.file == STDIN:
            lines = output_items(stdin or "", key="lines", comments=True)
            where = "standard input"
        else:
            lines = _lines(folder / source.file)
            where = str((folder / source.file).absolute())
        if lines == [] and not source.allow_empty:
            return _none("lines", f"{where} has no items (every line is blank or a # comment)")
        return lines
    if isinstance(source, CommandSource):
        raise ValueError("a command's items are read by running it (execution.step_items)")
    return list(source)


def command_items(source: CommandSource, output: str) -> list[str] | ItemsProblem:
    """The items of what ``source``'s command printed (``output``); or why it gives none."""
    found = output_items(output, key="command")
    if found == [] and not source.allow_empty:
        return _none("command", f"{source.command!r} printed no items")
    return found


def _none(key: str, said: str) -> ItemsProblem:
    """That a source at ``key`` gave no items, as ``said``, and how to accept that."""
    return ItemsProblem(key, f"{said}; allow_empty: true runs no subplans instead")


def preview(source: ItemSource, folder: Path) -> str:
    """What ``source`` would give if its step started now: ``N items``, or why none, in words
    for ``validate``; a command is not run, standard input not read."""
    if isinstance(source, CommandSource):
        return "read when the step starts (the command is not run now)"
    if isinstance(source, LinesSource):
        if source.file == STDIN:
            return "read from standard input when the step starts"
        if not (folder / source.file).exists():
            return f"{source.file} does not exist yet (an earlier step may make it)"
    if isinstance(source, tuple):
        found: list[str] | ItemsProblem = list(source)
    else:  # giving none is told below, in words for now
        found = read_items(_allowing_empty(source), folder)
    if isinstance(found, ItemsProblem):
        return found.message
    if not found and not isinstance(source, tuple) and not source.allow_empty:
        if isinstance(source, GlobSource):
            return "no files match yet (an earlier step may make them)"
        return f"{source.file} has no items yet (an earlier step may write them)"
    return f"{len(found)} item{'' if len(found) == 1 else 's'} now"


def _allowing_empty(source: GlobSource | LinesSource) -> GlobSource | LinesSource:
    if isinstance(source, GlobSource):
        return GlobSource(source.patterns, source.exclude, allow_empty=True)
    return LinesSource(source.file, allow_empty=True)


def _glob(source: GlobSource, folder: Path) -> list[str]:
    from subplans.plans import globbing  # here: a plan without a glob never pays for it

    def matches(patterns: Sequence[str]) -> set[str]:
        found: set[str] = set()
        for pattern in patterns:
            found.update(globbing.glob(pattern, str(folder)))
        return found

    return sorted(matches(source.patterns) - matches(source.exclude))


def _lines(path: Path) -> list[str] | ItemsProblem:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or str(error)
        return ItemsProblem("lines", f"cannot read {path}: {reason}")
    return output_items(text, key="lines", comments=True, path=path)


def output_items(
    text: str, *, key: str, comments: bool = False, path: Path | None = None
) -> list[str] | ItemsProblem:
    """The non-blank lines of ``text``, stripped (``comments``: less those starting with
    ``#``); a problem at ``key`` (and in ``path``) if a line holds a NUL byte."""
    lines = text.splitlines()
    if "\x00" in text:  # looked for line by line only when it is there
        number, line = next((n, x) for n, x in enumerate(lines, start=1) if "\x00" in x)
        message = f"{_NUL_ITEM} ({line.strip()!r})"
        if path is None:
            return ItemsProblem(key, f"line {number}: {message}")
        return ItemsProblem(key, message, path, number, line.index("\x00") + 1)
    stripped = (line.strip() for line in lines)
    if comments:
        return [line for line in stripped if line and not line.startswith("#")]
    return [line for line in stripped if line]


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
