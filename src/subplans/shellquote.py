"""Placeholders in a ``run`` string, each value quoted for the place where it stands.

``/bin/sh`` reads a ``run`` string, so ``{item}`` cannot just be pasted in (an item such as
``x; touch pwned`` would run), nor always wrapped in '...' (inside "..." the quotes are plain
characters and ``$(...)`` in the item would run). ``shell_template`` reads the string the way
the shell tokenises it (POSIX Shell Command Language 2.2, 2.3 and 2.6) to know where each placeholder stands, and
``ShellTemplate.render`` inserts the value so that the shell reads back exactly its text:

- bare (also inside ``$(...)``): ``'value'``, each ``'`` in it written ``'\\''``;
- inside '...': the same without the outer quotes (close, a quoted quote, reopen);
- inside "...": with ``\\``, ``"``, ``$`` and the backquote escaped by a backslash.

Where the shell reads text some other way (backquotes, ``${...}``, arithmetic, here-documents,
``$'...'``, bash's ``[[ ]]``, after a backslash), or where this reading cannot be sure how the
shell goes on (``case`` inside ``$(...)``, ``<<<``), a placeholder is refused, with how to write
it instead. A placeholder in a comment is left as it is.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from subplans.errors import SubplanError

__all__ = ["PLACEHOLDER", "ShellTemplate", "ShellTemplateError", "quote", "shell_template"]

#: ``{item}``, ``{index}`` or ``{stem}``.
PLACEHOLDER = re.compile(r"\{(item|index|stem)\}")

Context = Literal["bare", "single", "double"]

#: Characters that end a word outside quotes (blanks, newline and the operator characters).
_DELIMITERS = frozenset(" \t\n;&|()<>")
_DOUBLE_ESCAPES = re.compile(r'([\\"$`])')


class ShellTemplateError(SubplanError):
    """A ``run`` string has placeholders where they cannot be quoted; one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class _Reason:
    """Why a placeholder is refused: where it stands and how to write it instead."""

    where: str
    #: ``{name}`` is the placeholder.
    hint: str = 'set a variable first (v={name}; ...) and use "$v" there'

    def message(self, name: str, position: int) -> str:
        return f"{name} (character {position}) {self.where}; {self.hint.format(name=name)}"


_BACKQUOTE = _Reason("is inside `...`, where quotes cannot protect it", "write $(...) instead")
_PARAMETER = _Reason("is inside ${...}")
_ARITHMETIC = _Reason("is inside an arithmetic expression")
_ANSI = _Reason("is inside $'...'", "write it outside the quotes: it is quoted for you")
_TEST = _Reason(
    "is inside [[ ... ]], where bash evaluates quoted text as arithmetic", "use [ ... ] instead"
)
_HEREDOC = _Reason(
    "is inside a here-document",
    "set a variable first (v={name}; ...) and write $v in the here-document "
    "(with an unquoted delimiter)",
)
_DELIMITER = _Reason("is a here-document's delimiter", "write a fixed delimiter")
_BACKSLASH = _Reason("comes right after a backslash", "remove the backslash: it is quoted for you")
_CASE = _Reason("comes after `case` inside $(...), where its quoting cannot be told for sure")
_HERESTRING = _Reason(
    "comes after a <<< here-string, which sh and bash read differently",
    "pipe it instead: printf '%s\\n' {name} | ...",
)
_CONTINUED = _Reason(
    "comes after a here-document line that ends with a backslash, "
    "where its quoting cannot be told for sure"
)
_UNSURE = _Reason("comes after text that sh and bash read differently")


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
    scanner = _Scanner(text)
    scanner.command("", None, nested=False)
    if scanner.problems:
        raise ShellTemplateError(scanner.problems)
    literals, slots, start = [], [], 0
    for begin, end, name, context in scanner.slots:
        literals.append(text[start:begin])
        slots.append((name, context))
        start = end
    literals.append(text[start:])
    return ShellTemplate(tuple(literals), tuple(slots))


class _Scanner:
    """Reads a ``run`` string as ``sh`` tokenises it, noting where each placeholder stands."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.slots: list[tuple[int, int, str, Context]] = []
        self.problems: list[str] = []
        #: Set once the text can no longer be read for sure: every later placeholder is refused.
        self.unsure: _Reason | None = None
        #: Here-documents whose bodies start at the next newline: (delimiter, strip tabs, quoted).
        self.heredocs: list[tuple[str, bool, bool]] = []

    def refuse(self, reason: _Reason, match: re.Match[str]) -> None:
        self.problems.append(reason.message(match.group(0), match.start() + 1))

    def doubt(self, reason: _Reason) -> None:
        self.unsure = self.unsure or reason

    def placeholder(self, context: Context, refused: _Reason | None) -> bool:
        """Take the placeholder at ``pos``, if there is one."""
        match = PLACEHOLDER.match(self.text, self.pos)
        if match is None:
            return False
        reason = refused or self.unsure
        if reason is not None:
            self.refuse(reason, match)
        else:
            self.slots.append((match.start(), match.end(), match.group(1), context))
        self.pos = match.end()
        return True

    def after_backslash(self) -> bool:
        """Refuse a placeholder at ``pos``, right after a backslash (which would escape it)."""
        match = PLACEHOLDER.match(self.text, self.pos)
        if match is None:
            return False
        self.refuse(_BACKSLASH, match)
        self.pos = match.end()
        return True

    def ends_word(self, index: int) -> bool:
        return index >= len(self.text) or self.text[index] in _DELIMITERS

    def command(self, closer: str, refused: _Reason | None, *, nested: bool) -> None:
        """Commands, until ``closer``: ")" ends ``$(...)``, "]]" ends ``[[``, "" the text."""
        text = self.text
        depth = 0  # open "(" of subshells, so that their ")" does not end $(...)
        word_start = True
        while self.pos < len(text):
            if self.placeholder("bare", refused):
                word_start = False
                continue
            char = text[self.pos]
            if char == "\\":
                if text.startswith("\n", self.pos + 1):  # a line continuation joins two lines
                    self.pos += 2
                    continue
                self.pos += 1
                if not self.after_backslash():
                    self.pos += 1  # the escaped character
            elif char == "'":
                self.pos += 1
                self.single(refused)
            elif char == '"':
                self.pos += 1
                self.double(refused)
            elif char == "`":
                self.backquote()
            elif char == "$":
                self.dollar(refused, in_double=False)
            elif word_start and char == "#":
                end = text.find("\n", self.pos)
                self.pos = len(text) if end < 0 else end
                continue
            elif word_start and closer == "]]" and text.startswith("]]", self.pos):
                if self.ends_word(self.pos + 2):
                    self.pos += 2
                    return
                self.pos += 2
            elif word_start and text.startswith("[[", self.pos) and self.ends_word(self.pos + 2):
                self.pos += 2
                self.command("]]", refused or _TEST, nested=nested)
            elif word_start and text.startswith("((", self.pos):
                self.pos += 2
                self.arithmetic("))", refused or _ARITHMETIC)
            elif word_start and nested and text.startswith("case", self.pos):
                if self.ends_word(self.pos + 4):
                    self.doubt(_CASE)
                self.pos += 4
            elif text.startswith("<<<", self.pos):
                self.doubt(_HERESTRING)
                self.pos += 3
                word_start = True
                continue
            elif text.startswith("<<", self.pos):
                self.heredoc(refused)
                word_start = True
                continue
            elif char in _DELIMITERS:
                self.pos += 1
                word_start = True
                if char == "(":
                    depth += 1
                elif char == ")":
                    if closer == ")" and depth == 0:
                        return
                    depth -= 1
                elif char == "\n" and self.heredocs:
                    self.heredoc_bodies(refused)
                continue
            else:
                self.pos += 1
            word_start = False

    def single(self, refused: _Reason | None) -> None:
        """Inside '...', after the opening quote: nothing is special but the closing quote."""
        text = self.text
        while self.pos < len(text):
            if self.placeholder("single", refused):
                continue
            char = text[self.pos]
            self.pos += 1
            if char == "'":
                return
            if char == "\n" and self.heredocs:
                self.doubt(_UNSURE)

    def double(self, refused: _Reason | None) -> None:
        """Inside "...", after the opening quote: \\ (before $ ` " \\ newline), $ and `."""
        text = self.text
        while self.pos < len(text):
            if self.placeholder("double", refused):
                continue
            char = text[self.pos]
            if char == '"':
                self.pos += 1
                return
            if char == "\\":
                if text[self.pos + 1 : self.pos + 2] in ("$", "`", '"', "\\", "\n"):
                    self.pos += 2
                else:  # a plain backslash: it would escape the first character inserted
                    self.pos += 1
                    self.after_backslash()
            elif char == "`":
                self.backquote()
            elif char == "$":
                self.dollar(refused, in_double=True)
            else:
                if char == "\n" and self.heredocs:
                    self.doubt(_UNSURE)
                self.pos += 1

    def backquote(self) -> None:
        """```...```, from its opening backquote: it ends at the first backquote not escaped."""
        text = self.text
        self.pos += 1
        quoted: str | None = None
        while self.pos < len(text):
            if self.placeholder("bare", _BACKQUOTE):
                continue
            char = text[self.pos]
            self.pos += 1
            if char == "\\":
                self.pos += 1
            elif char == "`":
                if quoted is not None:  # POSIX leaves a backquote inside quotes undefined
                    self.doubt(_UNSURE)
                return
            elif char in "'\"":
                quoted = None if quoted == char else (quoted or char)

    def dollar(self, refused: _Reason | None, *, in_double: bool) -> None:
        """What starts with ``$``: $((...)), $(...), ${...}, $[...], $'...' or a plain $."""
        text, pos = self.text, self.pos
        if text.startswith("$((", pos):
            self.pos += 3
            self.arithmetic("))", refused or _ARITHMETIC)
        elif text.startswith("$(", pos):
            self.pos += 2
            self.command(")", refused, nested=True)
        elif text.startswith("${", pos):
            match = PLACEHOLDER.match(text, pos + 1)
            if match is not None:
                name = match.group(1)
                self.problems.append(
                    f"${{{name}}} (character {pos + 1}) is the shell variable {name}, not the "
                    f"placeholder; write {{{name}}} for the value (it is quoted for you), or "
                    f"${name} for the variable"
                )
                self.pos = match.end()
            else:
                self.pos += 2
                self.parameter(refused or _PARAMETER, in_double=in_double)
        elif text.startswith("$[", pos):
            self.pos += 2
            self.arithmetic("]", refused or _ARITHMETIC)
        elif text.startswith("$'", pos) and not in_double:
            self.pos += 2
            self.ansi(refused or _ANSI)
        else:  # $name, $$, $#, $"..." (a "..." follows), a lone $
            self.pos += 1

    def parameter(self, refused: _Reason, *, in_double: bool) -> None:
        """Inside ${...}, after the opening brace, until its closing brace."""
        text = self.text
        while self.pos < len(text):
            if self.placeholder("bare", refused):
                continue
            char = text[self.pos]
            if char == "}":
                self.pos += 1
                return
            if char == "\\":
                self.pos += 2
            elif char == "'" and not in_double:
                self.pos += 1
                self.single(refused)
            elif char == '"':
                self.pos += 1
                self.double(refused)
            elif char == "`":
                self.backquote()
            elif char == "$":
                self.dollar(refused, in_double=in_double)
            else:
                # '...' inside "${...}" and a nested "{" are read differently by sh and bash.
                if char in "'{":
                    self.doubt(_UNSURE)
                self.pos += 1

    def arithmetic(self, closer: str, refused: _Reason) -> None:
        """Inside $((...)), ((...)) or $[...], until ``closer`` ("))" or "]")."""
        text = self.text
        opening = "(" if closer == "))" else "["
        depth = 0
        while self.pos < len(text):
            if self.placeholder("bare", refused):
                continue
            char = text[self.pos]
            if char == closer[0] and depth == 0:
                if text.startswith(closer, self.pos):
                    self.pos += len(closer)
                else:  # "$(( ... )" - a command substitution after all, in some shells
                    self.doubt(_UNSURE)
                    self.pos += 1
                return
            if char == "\\":
                self.pos += 2
            elif char == "'":
                self.pos += 1
                self.single(refused)
            elif char == '"':
                self.pos += 1
                self.double(refused)
            elif char == "`":
                self.backquote()
            elif char == "$":
                self.dollar(refused, in_double=False)
            else:
                if char == opening:
                    depth += 1
                elif char == closer[0]:
                    depth -= 1
                self.pos += 1

    def ansi(self, refused: _Reason) -> None:
        """Inside bash's $'...' (in sh, a $ and then '...'), after the opening quote."""
        text = self.text
        while self.pos < len(text):
            if self.placeholder("bare", refused):
                continue
            char = text[self.pos]
            self.pos += 1
            if char == "'":
                return
            if char == "\\":
                if text.startswith("'", self.pos):  # ends the quotes in sh, not in bash
                    self.doubt(_UNSURE)
                self.pos += 1

    def heredoc(self, refused: _Reason | None) -> None:
        """A ``<<`` or ``<<-`` and its delimiter word; the body comes after the next newline."""
        text = self.text
        self.pos += 2
        strip = text.startswith("-", self.pos)
        if strip:
            self.pos += 1
        while text.startswith((" ", "\t"), self.pos):
            self.pos += 1
        start, quoted, delimiter = self.pos, False, []
        while self.pos < len(text) and text[self.pos] not in _DELIMITERS:
            char = text[self.pos]
            if char == "\\":
                quoted = True
                delimiter.append(text[self.pos + 1 : self.pos + 2])
                self.pos += 2
            elif char in "'\"":
                quoted = True
                end = text.find(char, self.pos + 1)
                end = len(text) if end < 0 else end
                delimiter.append(text[self.pos + 1 : end])
                self.pos = end + 1
            else:
                delimiter.append(char)
                self.pos += 1
        for match in PLACEHOLDER.finditer(text, start, min(self.pos, len(text))):
            self.refuse(refused or _DELIMITER, match)
        self.heredocs.append(("".join(delimiter), strip, quoted))

    def heredoc_bodies(self, refused: _Reason | None) -> None:
        """The bodies of the pending here-documents, from the start of a line."""
        text = self.text
        for delimiter, strip, quoted in self.heredocs:
            while self.pos < len(text):
                end = text.find("\n", self.pos)
                end = len(text) if end < 0 else end
                line = text[self.pos : end]
                first = self.pos
                self.pos = min(end + 1, len(text))
                if (line.lstrip("\t") if strip else line) == delimiter:
                    break
                for match in PLACEHOLDER.finditer(text, first, end):
                    self.refuse(refused or self.unsure or _HEREDOC, match)
                if not quoted and (len(line) - len(line.rstrip("\\"))) % 2:
                    self.doubt(_CONTINUED)
        self.heredocs = []
