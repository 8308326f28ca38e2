"""Text helpers shared by the human-readable sinks: times, durations, errors, and ``visible()``,
the one function that makes text from plans and subplans safe to show on a terminal."""

from __future__ import annotations

import functools
import time
from typing import TypeGuard

from subplans.engine.errors import DispatchError, SubplanCancelledError, SubplanError

__all__ = [
    "TAIL_LINES",
    "clock_time",
    "duration",
    "error_text",
    "is_cancellation",
    "iso_time",
    "own_failure",
    "step_error_text",
    "tail",
    "visible",
]

#: How many lines of a failed command's output the views show.
TAIL_LINES = 10

#: Bidirectional controls (the "Trojan Source" ones and the marks): they reorder what follows.
_BIDI = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
#: What ``visible()`` escapes: every C0 control but the tab, DEL, every C1 control, the line and
#: paragraph separators, and the bidirectional controls.
_ESCAPES = {
    code: chr(code).encode("unicode_escape").decode("ascii")
    for code in (
        *range(0x09),
        *range(0x0A, 0x20),
        *range(0x7F, 0xA0),
        0x2028,
        0x2029,
        *map(ord, _BIDI),
    )
}


def visible(text: str) -> str:
    """``text`` as a terminal may show it: each control character as a visible escape.

    A subplan's output, its error, an item or a file name may hold escape sequences (a new
    window title, a cleared screen, a moved cursor, colours), a carriage return or a BEL, C1
    controls (``\x9b`` is a CSI of its own) or bidirectional overrides: shown raw they rewrite
    the operator's screen. They become ``\x1b``, ``\r``, ``\x9b``, ``\u202e``; a tab stays;
    a line feed becomes ``\n`` (split lines first where they are wanted). Everything a terminal
    reads goes through here; the JSONL events and the log files keep the exact text.
    """
    return text.translate(_ESCAPES)


def iso_time(seconds: float) -> str:
    """Epoch seconds as ISO 8601 UTC with milliseconds: ``2026-11-28T00:04:53.372Z``."""
    whole, millis = divmod(round(seconds * 1000), 1000)
    return f"{_iso_second(whole)}.{millis:03d}Z"


@functools.lru_cache(maxsize=4)
def _iso_second(whole: int) -> str:
    # The lines of a run come many to a second: each second is formatted once.
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))


def duration(seconds: float) -> str:
    """A short duration: ``0.10s``, ``12.3s``, ``2m05s``, ``1h02m``."""
    if seconds < 10:
        return f"{max(seconds, 0.0):.2f}s"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def clock_time(seconds: float) -> str:
    """A duration as ``H:MM:SS``, like a stopwatch."""
    minutes, secs = divmod(max(int(seconds), 0), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def error_text(error: BaseException | None) -> str:
    """One line saying what went wrong, ``visible()``; our own errors are sentences, others get
    their type."""
    if error is None:
        return ""
    # An exception group's str() appends "(N sub-exceptions)": its own message reads better.
    text = error.message if isinstance(error, BaseExceptionGroup) else str(error)
    message = visible(" ".join(text.split()))
    if isinstance(error, SubplanError):
        return message or type(error).__name__
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


def is_cancellation(error: BaseException | None) -> bool:
    """True when a subplan failed because it was cancelled, not by its own doing."""
    return isinstance(error, SubplanCancelledError)


def own_failure(error: BaseException | None) -> TypeGuard[BaseException]:
    """True for the error of a step that failed by itself (a ``for_each`` source that could
    not be read): not because subplans failed (a ``DispatchError``), nor by a cancellation."""
    return error is not None and not isinstance(error, DispatchError) and not is_cancellation(error)


def step_error_text(step_id: str, error: BaseException) -> str:
    """``error_text()`` of a step's own failure, naming the step once: ``step ID: what``."""
    text = error_text(error)
    named = f"step {visible(step_id)}"
    return text if text.startswith(f"{named}:") else f"{named}: {text}"


def tail(error: BaseException | None, lines: int = TAIL_LINES) -> list[str]:
    """The last ``lines`` lines of a failed command's output, ``visible()`` (none for other
    errors)."""
    text = getattr(error, "output_tail", None)
    if not isinstance(text, str) or not text:
        return []
    # Every line break a terminal obeys (a carriage return too) starts a line of its own.
    found = text.splitlines()
    return [visible(line) for line in found[max(len(found) - lines, 0) :]]
