"""Reading YAML files, with the line and column of every value for error messages.

libyaml reads a file first (``fast_yaml``); when nothing in it could be refused, positions are
found only once a problem needs one, by reading the text again with PyYAML's own reader, which
keeps a line and column for every value. That reader also reads every file libyaml does not
vouch for, so each message says what it always said, where it always said it.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import yaml

from subplans.engine.errors import SubplanError
from subplans.engine.values import Value
from subplans.plans.fast_yaml import UNSURE, read_fast

__all__ = [
    "MAX_ALIAS_VALUES",
    "Located",
    "Problem",
    "ProblemsError",
    "format_location",
    "read_yaml",
]

Loc = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with an input file: where, and what."""

    file: Path | None
    location: str
    message: str
    line: int | None = None
    column: int | None = None

    def __str__(self) -> str:
        where = "" if self.file is None else str(self.file)
        if self.line is not None:
            where += f":{self.line}:{self.column}"
        parts = [p for p in (where, self.location) if p]
        return ": ".join([*parts, self.message])


class ProblemsError(SubplanError):
    """Input files are invalid; ``problems`` lists every problem, one line each."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


class Located(Value):
    """A parsed YAML document and the (line, column) of each location in it (1-based)."""

    # A plain class: a dataclass costs the command's start half a millisecond to build (#10).
    __slots__ = ("data", "file", "key_positions", "positions", "text")
    _fields = ("file", "data", "positions", "key_positions")

    def __init__(
        self,
        file: Path,
        data: Any,
        positions: dict[Loc, tuple[int, int]],
        key_positions: dict[Loc, tuple[int, int]],
        text: str | None = None,
    ) -> None:
        self.file: Final = file
        self.data: Final = data
        self.positions: Final = positions
        #: Where each mapping key itself is written (an unknown key is reported there).
        self.key_positions: Final = key_positions
        #: The text, while the positions are not found yet (libyaml read it, without them).
        self.text = text

    def problem(self, loc: Loc, message: str, *, at_key: bool = False) -> Problem:
        """A problem at ``loc``, with the nearest known line and column."""
        text = self.text
        if text is not None:  # found once, for this problem and every later one
            self.text = None
            _find_positions(self, text)
        if at_key and loc in self.key_positions:
            line, column = self.key_positions[loc]
            return Problem(self.file, format_location(loc), message, line, column)
        probe = loc
        while probe and probe not in self.positions:
            probe = probe[:-1]
        if probe in self.positions:
            line, column = self.positions[probe]
            return Problem(self.file, format_location(loc), message, line, column)
        return Problem(self.file, format_location(loc), message)


def format_location(loc: Loc) -> str:
    """``("steps", 2, "subplans", 0, "max_parallel")`` -> ``steps[2].subplans[0].max_parallel``."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif not part or not part.isprintable():  # an empty or unprintable key, shown quoted
            text += f"[{part!r}]"
        else:
            text += f".{part}" if text else part
    return text


#: Aliases may share a node many times over; past this many values reached again through an
#: alias a file is refused (a "billion laughs" document would otherwise take forever to walk and
#: to validate). Values written out are not counted: an honest plan may be as long as it needs.
MAX_ALIAS_VALUES = 100_000


def read_yaml(path: Path, *, max_alias_values: int = MAX_ALIAS_VALUES) -> Located:
    """Parse ``path``; every failure is a ``ProblemsError`` at its line and column.

    ``max_alias_values``: how many values aliases may reach again before the file is refused.
    """
    text = _read_text(path)
    data = read_fast(text, max_alias_values=max_alias_values, max_nesting=MAX_NESTING)
    if data is not UNSURE:
        located = Located(path, data, {}, {}, text)
    else:
        located = _read_located(path, text, max_alias_values)
    if _SURROGATE_ESCAPE.search(text):  # (a file read as UTF-8 holds none but by an escape)
        _refuse_surrogates(located)
    return located


#: A double-quoted YAML string can spell a lone surrogate (``"\ud800"``: YAML escapes are code
#: points, so a pair stays two halves); Python keeps it, and it fails later, as a traceback,
#: wherever the text is encoded (a log, the store). Only such an escape can bring one in.
_SURROGATE_ESCAPE = re.compile(r"\\(?:u[dD][89a-fA-F]|U0000[dD][89a-fA-F])")


def _refuse_surrogates(located: Located) -> None:
    """Raise a problem for each key or value of ``located`` that holds a lone surrogate."""
    surrogate = re.compile("[\ud800-\udfff]")  # compiled here: rare, and 0.1 ms of a start
    problems: list[Problem] = []
    seen: set[int] = set()  # (aliases may share a collection, or hold one within itself)

    def check(value: Any, loc: Loc, *, at_key: bool = False) -> None:
        if isinstance(value, str):
            if (found := surrogate.search(value)) is not None:
                message = (
                    f"holds a lone surrogate (U+{ord(found.group()):04X}), which is not text; "
                    "write a character beyond U+FFFF as one \\U escape (\\U0001F600)"
                )
                problems.append(located.problem(loc, message, at_key=at_key))
        elif isinstance(value, dict | list) and id(value) not in seen:
            seen.add(id(value))
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for key, item in items:
                if isinstance(value, dict):
                    check(key, (*loc, key), at_key=True)
                check(item, (*loc, key))

    check(located.data, ())
    if problems:
        raise ProblemsError(problems)


def _read_located(path: Path, text: str, max_alias_values: int) -> Located:
    """``text`` read by PyYAML's own reader, keeping positions; every failure is raised."""
    node: yaml.Node | None = None
    try:
        # The reader refuses control characters as soon as it is built: inside the ``try``.
        loader = _SafeLoader(text)
    except yaml.reader.ReaderError:
        raise ProblemsError([_unprintable(path, text)]) from None
    try:
        node = loader.get_single_node()
        data = None if node is None else loader.construct_document(node)
    except _TooDeepError as error:
        raise ProblemsError([_at_mark(path, error, str(error.problem))]) from None
    except yaml.YAMLError as error:  # with a mark, as every error of a parsed str has
        what = getattr(error, "problem", None) or getattr(error, "context", None) or str(error)
        raise ProblemsError([_at_mark(path, error, f"YAML syntax error: {what}")]) from None
    finally:
        loader.dispose()
    located = Located(path, data, {}, {})
    problems: list[Problem] = []
    if node is not None:
        _Walk(located, problems, max_alias_values).node(node, ())
    if problems:
        raise ProblemsError(problems)
    return located


def _read_text(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ProblemsError([Problem(path, "", "no such file")]) from None
    except OSError as error:
        reason = error.strerror or str(error)
        raise ProblemsError([Problem(path, "", f"cannot read: {reason}")]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line, column = _line_column(raw[: error.start].decode("utf-8", "replace"))
        byte = raw[error.start : error.start + 1].hex()
        raise ProblemsError(
            [Problem(path, "", f"not UTF-8: cannot decode byte 0x{byte}", line, column)]
        ) from None
    # As reading in text mode would: YAML sees one kind of line break.
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _line_column(before: str) -> tuple[int, int]:
    """The 1-based line and column of the character that follows ``before``."""
    return before.count("\n") + 1, len(before) - before.rfind("\n")


def _unprintable(path: Path, text: str) -> Problem:
    match = yaml.reader.Reader.NON_PRINTABLE.search(text)
    assert match is not None  # the reader refused the text for such a character
    line, column = _line_column(text[: match.start()])
    code = ord(match.group())
    kind = "a control character" if code < 0x20 or 0x7F <= code <= 0x9F else "a non-character"
    return Problem(
        path,
        "",
        f"the character U+{code:04X} ({kind}) is not allowed in YAML; remove it, or write it "
        "escaped inside a double-quoted string",
        line,
        column,
    )


def _at_mark(path: Path, error: yaml.YAMLError, message: str) -> Problem:
    mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
    line, column = (mark.line + 1, mark.column + 1) if mark is not None else (None, None)
    return Problem(path, "", message, line, column)


#: How deep collections may nest. The composer (and the walk below) recurse once per level;
#: a limit far below Python's recursion limit turns "[[[[..." into one line, not a traceback.
MAX_NESTING = 100


class _TooDeepError(yaml.MarkedYAMLError):
    """A document nests collections more than ``MAX_NESTING`` levels deep."""


class _SafeLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing documents nested more than ``MAX_NESTING`` levels deep."""

    _nesting = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self._nesting >= MAX_NESTING:
            mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
            raise _TooDeepError(
                problem=f"nested more than {MAX_NESTING} levels deep", problem_mark=mark
            )
        self._nesting += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._nesting -= 1


def _mark(node: yaml.Node) -> tuple[int, int]:
    return (node.start_mark.line + 1, node.start_mark.column + 1)


class _Walk:
    """Records positions; refuses recursive aliases and documents that expand too far."""

    def __init__(self, located: Located, problems: list[Problem], max_alias_values: int) -> None:
        self.located = located
        self.problems = problems
        self.max_alias_values = max_alias_values
        self.active: set[int] = set()
        self.seen: set[int] = set()
        self.expanded = 0

    def node(self, node: yaml.Node, loc: Loc) -> bool:
        """Walk ``node``; False once the document was refused."""
        if id(node) in self.seen:
            if id(node) in self.active:
                self.problems.append(self.located.problem(loc, "an alias refers to itself"))
                return False
            self.expanded += 1
            if self.expanded > self.max_alias_values:
                self.problems.append(
                    self.located.problem(
                        loc, f"more than {self.max_alias_values:,} values once aliases expand"
                    )
                )
                return False
            if len(loc) > MAX_NESTING:
                self.problems.append(
                    self.located.problem(
                        loc, f"nested more than {MAX_NESTING} levels deep once aliases expand"
                    )
                )
                return False
        else:
            self.seen.add(id(node))
        self.located.positions.setdefault(loc, _mark(node))
        if isinstance(node, yaml.MappingNode | yaml.SequenceNode):
            self.active.add(id(node))
            try:
                return self.children(node, loc)
            finally:
                self.active.discard(id(node))
        return True

    def children(self, node: yaml.MappingNode | yaml.SequenceNode, loc: Loc) -> bool:
        if isinstance(node, yaml.SequenceNode):
            return all(self.node(item, (*loc, index)) for index, item in enumerate(node.value))
        keys = self.located.key_positions
        for key_node, value_node in node.value:
            where = (*loc, key_node.value)
            duplicate = where in keys
            keys[where] = _mark(key_node)
            if duplicate:
                self.problems.append(self.located.problem(where, "duplicate key", at_key=True))
            if not self.node(value_node, where):
                return False
        return True


def _find_positions(located: Located, text: str) -> None:
    """Record the positions of ``text``, which libyaml read as ``located.data`` unrefused."""
    loader = _SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is not None:  # merge keys rewrite the nodes while they are built: as first read
            loader.construct_document(node)
    finally:
        loader.dispose()
    if node is not None:
        _Walk(located, [], sys.maxsize).node(node, ())
