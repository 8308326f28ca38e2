"""Time, read from one place, so that tests can set it (rich's ``get_time`` is the model).

Two readings with two jobs: ``now`` is wall-clock time (seconds since the epoch) for the stamps
people read (when a subplan started and finished, in results, events and the store); ``monotonic``
measures elapsed times and deadlines, which a wall clock set back or forward must not bend.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Final

from subplans.engine.values import Value

__all__ = ["SYSTEM_CLOCK", "Clock", "utc"]


class Clock(Value):
    """Where the dispatcher and the executor read the time.

    ``now``: wall-clock seconds since the epoch (stamps); ``monotonic``: seconds on a clock
    that only moves forward (elapsed times).
    """

    __slots__ = ("monotonic", "now")
    _fields = ("now", "monotonic")

    def __init__(
        self,
        now: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.now: Final = now
        self.monotonic: Final = monotonic


#: The real clocks.
SYSTEM_CLOCK = Clock()


def utc(seconds: float) -> datetime:
    """Epoch seconds (a stamp from ``Clock.now``) as an aware UTC datetime."""
    return datetime.fromtimestamp(seconds, UTC)
