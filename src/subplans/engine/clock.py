"""Time, read from one place, so that tests can set it (rich's ``get_time`` is the model).

Two readings with two jobs: ``now`` is wall-clock time (seconds since the epoch) for the stamps
people read (when a subplan started and finished, in results, events and the store); ``monotonic``
measures elapsed times and deadlines, which a wall clock set back or forward must not bend.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

__all__ = ["SYSTEM_CLOCK", "Clock", "utc"]


@dataclass(frozen=True, slots=True)
class Clock:
    """Where the dispatcher and the executor read the time."""

    #: Wall-clock seconds since the epoch: stamps.
    now: Callable[[], float] = time.time
    #: Seconds on a clock that only moves forward: elapsed times.
    monotonic: Callable[[], float] = time.monotonic


#: The real clocks.
SYSTEM_CLOCK = Clock()


def utc(seconds: float) -> datetime:
    """Epoch seconds (a stamp from ``Clock.now``) as an aware UTC datetime."""
    return datetime.fromtimestamp(seconds, UTC)
