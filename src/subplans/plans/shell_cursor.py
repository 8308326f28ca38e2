"""Reading a ``run`` string the way the shell does: where line continuations go, and where
each placeholder stands (or why it is refused)."""

from __future__ import annotations

import re
from typing import Literal

from subplans.plans.placeholders import PLACEHOLDER
from subplans.plans.shell_refusals import BACKSLASH, Reason

__all__ = ["DELIMITERS", "Context", "Cursor"]

#: Where a placeholder stands: outside quotes, inside '...' or inside "...".
Context = Literal["bare", "single", "double"]

#: Characters that end a word outside quotes (blanks, newline and the operator characters).
DELIMITERS = frozenset(" \t\n;&|()<>")


class Cursor:
    """A ``run`` string read as the shell reads it, a character at a time: line continuations
    removed where the shell removes them, each placeholder noted where it stands or refused."""

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
        self.unsure: Reason | None = None

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

    def refuse(self, reason: Reason, match: re.Match[str]) -> None:
        self.problems.append(reason.message(match.group(0), self.origin[match.start()] + 1))

    def doubt(self, reason: Reason) -> None:
        self.unsure = self.unsure or reason

    def placeholder(self, context: Context, refused: Reason | None) -> bool:
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
        self.refuse(BACKSLASH, match)
        self.pos = match.end()
        return True

    def ends_word(self, index: int) -> bool:
        self.join(index)
        return index >= len(self.text) or self.text[index] in DELIMITERS
