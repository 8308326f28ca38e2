"""Reading YAML files with the line and column of every value, for error messages."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from subplans.errors import SubplanError

__all__ = ["Located", "Problem", "ProblemsError", "format_location", "read_yaml"]

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


@dataclass(frozen=True, slots=True)
class Located:
    """A parsed YAML document and the (line, column) of each location in it (1-based)."""

    file: Path
    data: Any
    positions: dict[Loc, tuple[int, int]]
    #: Where each mapping key itself is written (an unknown key is reported there).
    key_positions: dict[Loc, tuple[int, int]]

    def problem(self, loc: Loc, message: str, *, at_key: bool = False) -> Problem:
        """A problem at ``loc``, with the nearest known line and column."""
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
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def read_yaml(path: Path) -> Located:
    """Parse ``path``, keeping positions; every failure is a ``ProblemsError``."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ProblemsError([Problem(path, "", "no such file")]) from None
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or str(error)
        raise ProblemsError([Problem(path, "", f"cannot read: {reason}")]) from None
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        data = None if node is None else loader.construct_document(node)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        what = error.problem or error.context or "invalid YAML"
        line, column = (mark.line + 1, mark.column + 1) if mark is not None else (None, None)
        raise ProblemsError(
            [Problem(path, "", f"YAML syntax error: {what}", line, column)]
        ) from None
    except yaml.YAMLError as error:
        raise ProblemsError([Problem(path, "", f"YAML error: {error}")]) from None
    finally:
        loader.dispose()
    located = Located(path, data, {}, {})
    problems: list[Problem] = []
    if node is not None:
        _Walk(located, problems).node(node, ())
    if problems:
        raise ProblemsError(problems)
    return located


def _mark(node: yaml.Node) -> tuple[int, int]:
    return (node.start_mark.line + 1, node.start_mark.column + 1)


#: Aliases may share a node many times over; past this many visits a file is refused (a
#: "billion laughs" document would otherwise take forever to walk and to validate).
MAX_NODES = 100_000


class _Walk:
    """Records positions; refuses recursive aliases and documents that expand too far."""

    def __init__(self, located: Located, problems: list[Problem]) -> None:
        self.located = located
        self.problems = problems
        self.active: set[int] = set()
        self.visits = 0

    def node(self, node: yaml.Node, loc: Loc) -> bool:
        """Walk ``node``; False once the document was refused."""
        self.visits += 1
        if self.visits > MAX_NODES:
            self.problems.append(
                self.located.problem(loc, f"more than {MAX_NODES:,} values once aliases expand")
            )
            return False
        if id(node) in self.active:
            self.problems.append(self.located.problem(loc, "an alias refers to itself"))
            return False
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
