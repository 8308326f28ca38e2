"""Why a placeholder of a ``run`` string is refused: where it stands, and how to write it instead.

A placeholder is refused where its value cannot be quoted for sure (see ``shellquote``); each
reason below is one such place, with the fix its message suggests.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Reason:
    """Why a placeholder is refused: where it stands and how to write it instead."""

    where: str
    #: ``{name}`` is the placeholder.
    hint: str = 'set a variable first (v={name}; ...) and use "$v" there'

    def message(self, name: str, position: int) -> str:
        return f"{name} (character {position}) {self.where}; {self.hint.format(name=name)}"


BACKQUOTE = Reason("is inside `...`, where quotes cannot protect it", "write $(...) instead")
PARAMETER = Reason("is inside ${...}")
ARITHMETIC = Reason("is inside an arithmetic expression")
ANSI = Reason("is inside $'...'", "write it outside the quotes: it is quoted for you")
TEST = Reason(
    "is inside [[ ... ]], where bash evaluates quoted text as arithmetic", "use [ ... ] instead"
)
HEREDOC = Reason(
    "is inside a here-document",
    "set a variable first (v={name}; ...) and write $v in the here-document "
    "(with an unquoted delimiter)",
)
DELIMITER = Reason("is a here-document's delimiter", "write a fixed delimiter")
BACKSLASH = Reason("comes right after a backslash", "remove the backslash: it is quoted for you")
CASE = Reason("comes after `case` inside $(...), where its quoting cannot be told for sure")
HERESTRING = Reason(
    "comes after a <<< here-string, which sh and bash read differently",
    "pipe it instead: printf '%s\\n' {name} | ...",
)
CONTINUED = Reason(
    "comes after a here-document line that ends with a backslash, "
    "where its quoting cannot be told for sure"
)
ODD_DELIMITER = Reason(
    "comes after a here-document delimiter with $, ` or a newline, or a backslash inside "
    "double quotes, which shells read differently",
    "write a plain delimiter, such as EOF or 'EOF'",
)
ARRAY = Reason(
    "comes after a bash array assignment name=(...), which sh and bash read differently",
    'set a variable before it (v={name}; ...) and use "$v" in and after it',
)
PATTERN = Reason(
    "comes after a bash pattern such as @(...), which sh and bash read differently",
    'set a variable before it (v={name}; ...) and use "$v" after it',
)
SUBSCRIPT = Reason(
    "is inside name[...], which bash may evaluate as arithmetic, running $(...) in the value",
    "keep it out of the brackets",
)
BRACKETS = Reason(
    "comes after bash's $[...], which sh does not read as arithmetic", "write $((...)) instead"
)
UNSURE = Reason("comes after text that sh and bash read differently")
