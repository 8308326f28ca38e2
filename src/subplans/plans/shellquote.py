"""Placeholders in a ``run`` string, each value quoted for the place where it stands.

``/bin/sh`` reads a ``run`` string, so ``{item}`` cannot just be pasted in (an item such as
``x; touch pwned`` would run), nor always wrapped in '...' (inside "..." the quotes are plain
characters and ``$(...)`` in the item would run). ``shell_template`` reads the string the way
the shell tokenises it (POSIX Shell Command Language 2.2, 2.3 and 2.6) to know where each placeholder stands, and
``ShellTemplate.render`` inserts the value so that the shell reads back exactly its text:

- bare (also inside ``$(...)``): ``'value'``, each ``'`` in it written ``'\\''``;
- inside '...': the same without the outer quotes (close, a quoted quote, reopen);
- inside "...": with ``\\``, ``"``, ``$`` and the backquote escaped by a backslash.

Line continuations (a backslash ending a line) are removed where the shell removes them before
it reads on: ``ca\\`` at the end of a line and ``se`` on the next make ``case``; the values
still go into the text as written. Where the shell reads text some other way (backquotes,
``${...}``, arithmetic, here-documents, ``$'...'``, bash's ``[[ ]]`` and ``name[...]``, after a
backslash), or where this reading cannot be sure how the shell goes on (``case`` inside
``$(...)``, ``<<<``, a here-document delimiter with ``$`` or a quoted backslash, bash's
``name=(...)``, ``@(...)`` and ``$[...]``, a ``<<`` inside ``((...))``), a placeholder is refused,
with how to write it instead. A placeholder in a comment is left as it is.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass

from subplans.engine.errors import SubplanError
from subplans.plans.placeholders import PLACEHOLDER
from subplans.plans.shell_cursor import Context
from subplans.plans.shell_grammar import Scanner

__all__ = [
    "PLACEHOLDER",
    "Context",
    "ShellTemplate",
    "ShellTemplateError",
    "quote",
    "shell_template",
]

_DOUBLE_ESCAPES = re.compile(r'([\\"$`])')


class ShellTemplateError(SubplanError):
    """A ``run`` string has placeholders where they cannot be quoted; one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class ShellTemplate:
    """A ``run`` string split at its placeholders, each with where it stands."""

    literals: tuple[str, ...]
    slots: tuple[tuple[str, Context], ...]

    def render(self, values: Mapping[str, str]) -> str:
        """The command with each placeholder's value quoted for its place."""
        parts = [self.literals[0]]
        for (name, context), literal in zip(self.slots, self.literals[1:], strict=True):
            parts.append(quote(values[name], context))
            parts.append(literal)
        return "".join(parts)


def quote(value: str, context: Context) -> str:
    """``value`` written so that the shell reads exactly its text where ``context`` says."""
    if context == "double":
        return _DOUBLE_ESCAPES.sub(r"\\\1", value)
    inside = value.replace("'", "'\\''")
    return inside if context == "single" else f"'{inside}'"


@functools.lru_cache(maxsize=256)
def shell_template(text: str) -> ShellTemplate:
    """Split the ``run`` string ``text`` at its placeholders.

    Raises:
        ShellTemplateError: a placeholder stands where its value cannot be quoted for sure.
    """
    scanner = Scanner(text)
    scanner.command("", None, nested=False)
    if scanner.problems:
        raise ShellTemplateError(scanner.problems)
    literals, slots, start = [], [], 0
    for begin, end, name, context in scanner.slots:  # where they stand in ``text``
        literals.append(text[start:begin])
        slots.append((name, context))
        start = end
    literals.append(text[start:])
    return ShellTemplate(tuple(literals), tuple(slots))
