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
from typing import Literal

from subplans.engine.errors import SubplanError

__all__ = ["PLACEHOLDER", "ShellTemplate", "ShellTemplateError", "quote", "shell_template"]

#: ``{item}``, ``{index}`` or ``{stem}``.
PLACEHOLDER = re.compile(r"\{(item|index|stem)\}")

Context = Literal["bare", "single", "double"]

#: Characters that end a word outside quotes (blanks, newline and the operator characters).
_DELIMITERS = frozenset(" \t\n;&|()<>")
_NAME_START = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_")
_NAME = _NAME_START | frozenset("0123456789")
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
_ODD_DELIMITER = _Reason(
    "comes after a here-document delimiter with $, ` or a newline, or a backslash inside "
    "double quotes, which shells read differently",
    "write a plain delimiter, such as EOF or 'EOF'",
)
_ARRAY = _Reason(
    "comes after a bash array assignment name=(...), which sh and bash read differently",
    'set a variable before it (v={name}; ...) and use "$v" in and after it',
)
_PATTERN = _Reason(
    "comes after a bash pattern such as @(...), which sh and bash read differently",
    'set a variable before it (v={name}; ...) and use "$v" after it',
)
_SUBSCRIPT = _Reason(
    "is inside name[...], which bash may evaluate as arithmetic, running $(...) in the value",
    "keep it out of the brackets",
)
_BRACKETS = _Reason(
    "comes after bash's $[...], which sh does not read as arithmetic", "write $((...)) instead"
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
    for begin, end, name, context in scanner.slots:  # where they stand in ``text``
        literals.append(text[start:begin])
        slots.append((name, context))
        start = end
    literals.append(text[start:])
    return ShellTemplate(tuple(literals), tuple(slots))


class _Scanner:
    """Reads a ``run`` string as ``sh`` tokenises it, noting where each placeholder stands."""

    def __init__(self, text: str) -> None:
        #: The text less the line continuations read so far: the shell removes a backslash and a
        #: newline before it reads on (POSIX 2.2.1), but not inside '...', comments or the body
        #: of a here-document (there one is doubted instead).
        self.text = text
        #: Where each character of ``text``, and its end, stands in the text as written.
        self.origin = list(range(len(text) + 1))
        self.pos = 0
        self.slots: list[tuple[int, int, str, Context]] = []
        self.problems: list[str] = []
        #: Set once the text can no longer be read for sure: every later placeholder is refused.
        self.unsure: _Reason | None = None
        #: Here-documents whose bodies start at the next newline: (delimiter, strip tabs, quoted).
        self.heredocs: list[tuple[str, bool, bool]] = []

    def join(self, index: int) -> None:
        """Remove the line continuations at ``index``, a place where the shell removes them."""
        while self.text.startswith("\\\n", index):
            self.text = self.text[:index] + self.text[index + 2 :]
            del self.origin[index : index + 2]

    def more(self) -> bool:
        """Whether text is left at ``pos``, once line continuations there are removed."""
        self.join(self.pos)
        return self.pos < len(self.text)

    def at(self, token: str) -> bool:
        """Whether ``token`` is at ``pos``, once line continuations inside it are removed."""
        for offset, char in enumerate(token):
            if offset:  # after an unquoted character of a token: lines are joined there
                self.join(self.pos + offset)
            if not self.text.startswith(char, self.pos + offset):
                return False
        return True

    def refuse(self, reason: _Reason, match: re.Match[str]) -> None:
        self.problems.append(reason.message(match.group(0), self.origin[match.start()] + 1))

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
        else:  # no line continuation inside: lines are joined before and after it only
            begin, end = self.origin[match.start()], self.origin[match.end() - 1] + 1
            self.slots.append((begin, end, match.group(1), context))
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
        self.join(index)
        return index >= len(self.text) or self.text[index] in _DELIMITERS

    def quoted(self, char: str, refused: _Reason | None) -> bool:
        """Read the quoted string or expansion that ``char`` starts, outside double quotes;
        False if it starts neither."""
        if char == "'":
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
            return False
        return True

    def command(self, closer: str, refused: _Reason | None, *, nested: bool) -> None:
        """Commands, until ``closer``: ")" ends ``$(...)``, "]]" ends ``[[``, "" the text."""
        depth = 0  # open "(" of subshells, so that their ")" does not end $(...)
        word_start = True
        regex = False  # after =~ in [[ ]], where bash reads ( ... ) as one word, blanks and all
        while self.more():
            if self.placeholder("bare", refused):
                word_start = False
                continue
            char = self.text[self.pos]
            if char == "\\":
                self.pos += 1
                if not self.after_backslash():
                    self.pos += 1  # the escaped character
            elif self.quoted(char, refused):
                pass
            elif word_start and char == "#":
                end = self.text.find("\n", self.pos)
                self.pos = len(self.text) if end < 0 else end
                continue
            elif word_start and closer == "]]" and self.at("]]"):
                if self.ends_word(self.pos + 2):
                    self.pos += 2
                    return
                self.pos += 2
            elif word_start and closer == "]]" and self.at("=~"):
                regex = True
                self.pos += 2
            elif word_start and self.at("[[") and self.ends_word(self.pos + 2):
                self.pos += 2
                self.command("]]", refused or _TEST, nested=nested)
            elif word_start and self.at("(("):
                self.pos += 2
                self.arithmetic("))", refused or _ARITHMETIC, commands=True)
            elif word_start and nested and self.at("case"):
                if self.ends_word(self.pos + 4):
                    self.doubt(_CASE)
                self.pos += 4
            elif word_start and char in _NAME_START:
                self.name(refused)
            elif self.at("<<<"):
                self.doubt(_HERESTRING)
                self.pos += 3
                word_start = True
                continue
            elif self.at("<<"):
                self.heredoc(refused)
                word_start = True
                continue
            elif char == "(" and self.text[self.pos - 1 : self.pos] in ("<", ">"):
                self.pos += 1  # bash's process substitution <(...), read as $(...) is
                self.command(")", refused, nested=True)
            elif char in _DELIMITERS:
                self.pos += 1
                word_start = True
                if char == "(":
                    # In bash, name=( starts an array and @( !( +( *( ?( a pattern, each
                    # read in its own way; in sh, they are syntax errors.
                    before = self.text[self.pos - 2 : self.pos - 1]
                    if before == "=":
                        self.doubt(_ARRAY)
                    elif before != "" and before in "@!+*?":
                        self.doubt(_PATTERN)
                    elif regex:
                        self.doubt(_UNSURE)
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

    def name(self, refused: _Reason | None) -> None:
        """A word that starts with a name; bash reads ``name[...]`` to its matching "]"."""
        self.pos += 1
        while self.more() and self.text[self.pos] in _NAME:
            self.pos += 1
        if self.text.startswith("[", self.pos):
            self.pos += 1
            self.subscript(refused or _SUBSCRIPT)

    def subscript(self, refused: _Reason) -> None:
        """Inside ``name[...]``, after the "[": bash evaluates it as arithmetic, in assignments."""
        depth = 0
        while self.more():
            if self.placeholder("bare", refused):
                continue
            char = self.text[self.pos]
            if char in _DELIMITERS:  # sh ends the word there, bash reads on to the "]"
                self.doubt(_UNSURE)
                return
            if char == "\\":
                self.pos += 2
            elif self.quoted(char, refused):
                pass
            else:
                self.pos += 1
                if char == "[":
                    depth += 1
                elif char == "]":
                    if depth == 0:
                        return
                    depth -= 1

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
        while self.more():
            if self.placeholder("double", refused):
                continue
            char = self.text[self.pos]
            if char == '"':
                self.pos += 1
                return
            if char == "\\":
                if self.text[self.pos + 1 : self.pos + 2] in ("$", "`", '"', "\\"):
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
        pos = self.pos
        if self.at("$(("):
            self.pos += 3
            self.arithmetic("))", refused or _ARITHMETIC)
        elif self.at("$("):
            self.pos += 2
            self.command(")", refused, nested=True)
        elif self.at("${"):
            match = PLACEHOLDER.match(self.text, pos + 1)
            if match is not None:
                name = match.group(1)
                self.problems.append(
                    f"${{{name}}} (character {self.origin[pos] + 1}) is the shell variable "
                    f"{name}, not the placeholder; write {{{name}}} for the value (it is quoted "
                    f"for you), or ${name} for the variable"
                )
                self.pos = match.end()
            else:
                self.pos += 2
                if self.ends_word(self.pos) or self.text[self.pos] == "|":
                    self.doubt(_UNSURE)  # bash 5.3 runs ${ ...; } and ${| ...; } as commands
                self.parameter(refused or _PARAMETER, in_double=in_double)
        elif self.at("$["):
            self.doubt(_BRACKETS)  # to sh, a $ and a [: what follows is read as commands
            self.pos += 2
            self.arithmetic("]", refused or _ARITHMETIC)
        elif not in_double and self.at("$'"):
            self.pos += 2
            self.ansi(refused or _ANSI)
        else:  # $name, $$, $#, $"..." (a "..." follows), a lone $
            self.pos += 1

    def parameter(self, refused: _Reason, *, in_double: bool) -> None:
        """Inside ${...}, after the opening brace, until its closing brace."""
        while self.more():
            if self.placeholder("bare", refused):
                continue
            char = self.text[self.pos]
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

    def arithmetic(self, closer: str, refused: _Reason, *, commands: bool = False) -> None:
        """Inside $((...)), ((...)) or $[...], until ``closer`` ("))" or "]").

        ``commands``: sh (dash) reads ``((...))`` as two subshells, so the text inside as commands.
        """
        opening = "(" if closer == "))" else "["
        depth = 0
        while self.more():
            if self.placeholder("bare", refused):
                continue
            char = self.text[self.pos]
            if char == closer[0] and depth == 0:
                if self.at(closer):
                    self.pos += len(closer)
                else:  # "$(( ... )" - a command substitution after all, in some shells
                    self.doubt(_UNSURE)
                    self.pos += 1
                return
            if char == "\\":
                self.pos += 2
            elif self.quoted(char, refused):
                pass
            else:
                # In commands, # starts a comment, << a here-document, whose body a newline starts.
                if commands and (char == "#" or (char == "\n" and self.heredocs) or self.at("<<")):
                    self.doubt(_UNSURE)
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
        self.pos += 2
        self.join(self.pos)
        strip = self.text.startswith("-", self.pos)
        if strip:
            self.pos += 1
        while self.more() and self.text[self.pos] in " \t":
            self.pos += 1
        start, quoted, delimiter = self.pos, False, []
        while self.more() and self.text[self.pos] not in _DELIMITERS:
            text = self.text
            char = text[self.pos]
            if char in "'\"":
                quoted = True
                end = text.find(char, self.pos + 1)
                end = len(text) if end < 0 else end
                word = text[self.pos + 1 : end]
                # Shells agree on quoted plain characters only: "E\"OF" is one word to them.
                if "\n" in word or (char == '"' and any(c in word for c in "\\$`")):
                    self.doubt(_ODD_DELIMITER)
                delimiter.append(word)
                self.pos = end + 1
            else:
                if char == "\\":
                    quoted = True
                    self.pos += 1
                    char = text[self.pos : self.pos + 1]
                elif char in "$`":  # bash reads $(...) or `...` on, whatever it holds
                    self.doubt(_ODD_DELIMITER)
                delimiter.append(char)
                self.pos += 1
        for match in PLACEHOLDER.finditer(self.text, start, min(self.pos, len(self.text))):
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
