"""The header line that opens each attempt's output in a log file (``spawning.log_header``),
checked and taken out, so that a test compares the command's own output exactly."""

from __future__ import annotations

import re
from typing import TypeVar

#: One header line, whole, optionally after a ``[ID] `` tag (``logs --all``) and before a
#: carriage return (a terminal's ``\r\n``); group 1: the attempt number, 2: " (resumed)", or
#: " (in s/inner attempt 2)" for a command whose nested plan runs again.
HEADER = (
    r"(?:\[[^\]\n]*\] )?--- attempt (\d+)( \(resumed\)| \(in [^()\n]+ attempt \d+\))?, "
    r"started \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z ---\r?\n"
)
_HEADERS = re.compile(HEADER, re.MULTILINE)
_HEADERS_BYTES = re.compile(HEADER.encode(), re.MULTILINE)

Text = TypeVar("Text", str, bytes)


def attempts(text: str | bytes) -> list[str]:
    """The headers of ``text`` in order: ``"2"`` for attempt 2, ``"1 (resumed)"`` for a resume's,
    ``"1 (in s/inner attempt 2)"`` for one whose nested plan runs again."""
    found = _HEADERS.finditer(text if isinstance(text, str) else text.decode(errors="replace"))
    return [match[1] + (match[2] or "") for match in found]


def unheaded(text: Text, count: int = 1) -> Text:
    """``text`` without its header lines, which must be exactly ``count``, each at the start of
    a line."""
    if isinstance(text, bytes):
        found, rest = _HEADERS_BYTES.subn(b"", text)
    else:
        found, rest = _HEADERS.subn("", text)
    assert rest == count, f"{rest} header lines, not {count}, in {text!r}"
    return found
