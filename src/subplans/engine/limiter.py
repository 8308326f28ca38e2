"""A counting limiter that keeps statistics: a cap, units, a rate, a capacity that can change.

Its waiters queue in FIFO order. ``acquire_all`` takes units of several limiters at once, all or
nothing: a waiter waits in the queue of the first limiter that cannot give it its units and
holds nothing meanwhile, so that no two waiters can each hold what the other waits for (the
dispatcher's pools rely on it to be deadlock-free).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING
from weakref import WeakKeyDictionary

from subplans.engine.config import check_rate
from subplans.engine.errors import ConfigError

if TYPE_CHECKING:
    from subplans.engine.bus import EventBus

__all__ = [
    "AsyncSemaphoreLimiter",
    "LimiterStatistics",
    "Pace",
    "Parts",
    "acquire_all",
    "release_all",
    "try_acquire_all",
]


#: Units to take of each limiter: ``(limiter, units)`` pairs.
Parts = tuple[tuple["AsyncSemaphoreLimiter", int], ...]


@dataclass(frozen=True, slots=True)
class LimiterStatistics:
    """A snapshot of a limiter: its capacity, slots in use, the peak and the waiters."""

    capacity: int
    in_use: int
    peak: int
    waiting: int


class Pace:
    """Evenly spaced takes, at most ``per_second``, with no burst beyond one (aiometer's
    ``max_per_second``): a take at time t allows the next one from t + 1/per_second."""

    __slots__ = ("clock", "interval", "next_at", "per_second")

    def __init__(self, per_second: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_second = per_second
        self.interval = 1.0 / per_second
        self.clock = clock
        self.next_at = float("-inf")

    def delay(self) -> float:
        """Seconds until the next take is allowed (0 if it is now, or a rounding error away)."""
        delay = self.next_at - self.clock()
        return delay if delay > 1e-9 else 0.0

    def take(self) -> None:
        self.next_at = self.clock() + self.interval


class _Waiter:
    __slots__ = ("future", "parts", "queue")

    def __init__(self, parts: Sequence[tuple[AsyncSemaphoreLimiter, int]]) -> None:
        self.parts = parts
        self.future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.queue: AsyncSemaphoreLimiter | None = None


class AsyncSemaphoreLimiter:
    """At most ``capacity`` units held at once; ``async with limiter:`` holds one.

    A bad argument (capacity, units, rate) is a ``ConfigError``, which is a ``ValueError``.

    ``max_per_second`` (a number > 0) also spaces the takes evenly, with no burst beyond one;
    ``clock`` is where that rate reads the time (tests inject one). ``set_capacity()``
    changes the cap while it is in use.
    """

    __slots__ = (
        "_announce",
        "_capacity",
        "_in_use",
        "_needed",
        "_original",
        "_pace",
        "_peak",
        "_timer",
        "_waiters",
    )

    def __init__(
        self,
        capacity: int,
        *,
        max_per_second: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        _check_capacity(capacity)
        self._capacity = self._original = capacity
        self._in_use = 0
        self._peak = 0
        self._waiters: deque[_Waiter] = deque()
        #: The units each waiter needs of this limiter, whichever queue it waits in: a cap
        #: lowered below one of them would leave it waiting forever.
        self._needed: dict[_Waiter, int] = {}
        rate = None if max_per_second is None else check_rate(max_per_second)
        self._pace = None if rate is None else Pace(rate, clock)
        self._timer: asyncio.TimerHandle | None = None
        #: The buses (and the pool name) a change of capacity is published to; a bus no one
        #: else holds is let go.
        self._announce: WeakKeyDictionary[EventBus, str] = WeakKeyDictionary()

    def __repr__(self) -> str:
        rate = "" if self._pace is None else f", {self._pace.per_second:g}/s"
        return (
            f"<AsyncSemaphoreLimiter {self._in_use}/{self._capacity} in use, "
            f"peak {self._peak}, {len(self._waiters)} waiting{rate}>"
        )

    @property
    def capacity(self) -> int:
        """How many units there are."""
        return self._capacity

    @property
    def original_capacity(self) -> int:
        """The capacity it was made with (``set_capacity()`` changes ``capacity`` only)."""
        return self._original

    @property
    def max_per_second(self) -> float | None:
        """The most takes a second, or None."""
        return None if self._pace is None else self._pace.per_second

    @property
    def in_use(self) -> int:
        """How many units are held now."""
        return self._in_use

    @property
    def peak(self) -> int:
        """The highest ``in_use`` ever seen."""
        return self._peak

    @property
    def waiting(self) -> int:
        """How many acquirers are blocked waiting here."""
        return len(self._waiters)

    def statistics(self) -> LimiterStatistics:
        """A frozen snapshot of the counters."""
        return LimiterStatistics(self._capacity, self._in_use, self._peak, len(self._waiters))

    async def acquire(self, units: int = 1) -> None:
        """Wait for ``units`` free units and take them (cancellation-safe: a cancelled wait
        takes nothing).

        Raises:
            ConfigError (a ValueError): ``units`` is not an integer between 1 and the capacity.
        """
        if units != 1:
            self.check_units(units)
        await acquire_all(((self, units),))

    def release(self, units: int = 1) -> None:
        """Give ``units`` back. (``Ending.release`` writes it out for a subplan's units, and
        ``try_take`` for a pulled subplan's: keep them alike.)

        Raises:
            RuntimeError: more releases than acquires.
        """
        if self._in_use < units or units < 1:
            raise RuntimeError("this limiter has no slot in use to release")
        self._in_use -= units
        if self._waiters:
            self._wake()

    def set_capacity(self, capacity: int) -> None:
        """Change the cap now: raising it starts waiters at once; lowering it takes nothing
        from holders, it only holds new takes until fewer than ``capacity`` are in use.

        Raises:
            ConfigError (a ValueError): ``capacity`` is not an integer >= 1, or a waiter
                needs more than ``capacity`` units at once (it could never start); nothing
                is changed then.
        """
        _check_capacity(capacity)
        if self._needed:
            needed = max(
                (units for waiter, units in self._needed.items() if not waiter.future.done()),
                default=0,
            )
            if needed > capacity:
                raise ConfigError(
                    f"cannot lower the capacity to {capacity}: a waiting subplan needs "
                    f"{needed} units of it at once"
                )
        previous, self._capacity = self._capacity, capacity
        if previous != capacity:
            from subplans.engine.control_events import LimitChanged

            for bus, name in list(self._announce.items()):
                bus.publish(LimitChanged(None, name, previous, capacity))
        self._wake()

    def check_units(self, units: object, label: str = "units") -> int:
        """Return ``units`` if this limiter can ever give that many at once."""
        if type(units) is not int or units < 1:
            raise ConfigError(f"{label} must be an integer >= 1, got {units!r}")
        if units > self._capacity:
            raise ConfigError(f"{label} asks {units}, more than the capacity of {self._capacity}")
        return units

    def announce_to(self, bus: EventBus, name: str) -> None:
        """Publish a change of capacity on ``bus`` as ``LimitChanged`` of the pool ``name``."""
        self._announce[bus] = name

    def try_take(self, units: int) -> bool:
        """Take ``units`` if they are free now and no one waits ahead; whether it took them.
        (``Ending.release`` writes out its case without a rate: keep the two alike.)"""
        if self._waiters or self._in_use + units > self._capacity:
            return False
        pace = self._pace
        if pace is not None:
            if pace.delay() > 0:
                return False
            pace.take()
        self._in_use = in_use = self._in_use + units
        if in_use > self._peak:
            self._peak = in_use
        return True

    def _fits(self, units: int) -> bool:
        pace = self._pace
        return self._in_use + units <= self._capacity and (pace is None or pace.delay() <= 0)

    def _take(self, units: int) -> None:
        self._in_use = in_use = self._in_use + units
        if in_use > self._peak:
            self._peak = in_use
        if self._pace is not None:
            self._pace.take()

    def _enqueue(self, waiter: _Waiter) -> None:
        waiter.queue = self
        self._waiters.append(waiter)
        self._arm()

    def _arm(self) -> None:
        """Wake the queue when the rate allows its head's take (a cap waits for a release)."""
        pace = self._pace
        if pace is None or self._timer is not None or not self._waiters:
            return
        head = self._waiters[0]
        units = next((units for limiter, units in head.parts if limiter is self), 0)
        if self._in_use + units > self._capacity:
            return
        # Armed even when the delay read now is 0: the time moved on since the head was found
        # blocked by the rate, and nothing else would wake it (a hang, seen once in 90 runs).
        self._timer = asyncio.get_running_loop().call_later(pace.delay(), self._tick)

    def _tick(self) -> None:
        self._timer = None
        self._wake()

    def _wake(self) -> None:
        """Grant the waiters in order while they fit; one blocked elsewhere moves there."""
        waiters = self._waiters
        while waiters:
            waiter = waiters[0]
            if waiter.future.done():  # cancelled
                waiters.popleft()
                continue
            blocker = _blocker(waiter.parts, self)
            if blocker is self:
                self._arm()
                return
            waiters.popleft()
            if blocker is None:
                for limiter, units in waiter.parts:
                    limiter._take(units)
                waiter.queue = None
                waiter.future.set_result(None)
            else:
                blocker._enqueue(waiter)

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def _blocker(
    parts: Sequence[tuple[AsyncSemaphoreLimiter, int]], head_of: AsyncSemaphoreLimiter | None
) -> AsyncSemaphoreLimiter | None:
    """The first limiter of ``parts`` that cannot give its units now (FIFO: one with waiters
    cannot, unless the waiter is the head of its queue), or None."""
    for limiter, units in parts:
        if not limiter._fits(units) or (limiter._waiters and limiter is not head_of):
            return limiter
    return None


def try_acquire_all(parts: Sequence[tuple[AsyncSemaphoreLimiter, int]]) -> bool:
    """Take ``units`` of every limiter of ``parts`` if all can give them now (no one waits
    ahead); else take nothing. Whether it took them."""
    if _blocker(parts, None) is not None:
        return False
    for limiter, units in parts:
        limiter._take(units)
    return True


async def acquire_all(parts: Sequence[tuple[AsyncSemaphoreLimiter, int]]) -> None:
    """Take ``units`` of every limiter of ``parts`` at once, waiting until all of them can give
    them; nothing is held while waiting, and a cancelled wait takes nothing."""
    blocker = _blocker(parts, None)
    if blocker is None:
        for limiter, units in parts:
            limiter._take(units)
        return
    for limiter, units in parts:
        if units > limiter._capacity:  # lowered since the units were checked
            raise ConfigError(f"{units} units asked, more than the capacity of {limiter._capacity}")
    waiter = _Waiter(parts)
    for limiter, units in parts:
        limiter._needed[waiter] = limiter._needed.get(waiter, 0) + units
    blocker._enqueue(waiter)
    try:
        await waiter.future
    except asyncio.CancelledError:
        future = waiter.future
        if future.done() and not future.cancelled():
            release_all(parts)  # granted just as it was cancelled: give it all back
        elif waiter.queue is not None:
            queue = waiter.queue
            if waiter in queue._waiters:
                queue._waiters.remove(waiter)
            queue._wake()  # the waiter may have held up the ones behind it
        raise
    finally:
        for limiter, _ in parts:
            limiter._needed.pop(waiter, None)


def release_all(parts: Sequence[tuple[AsyncSemaphoreLimiter, int]]) -> None:
    """Give back what ``acquire_all(parts)`` took."""
    for limiter, units in parts:
        limiter.release(units)


def _check_capacity(capacity: object) -> None:
    if type(capacity) is not int or capacity < 1:
        raise ConfigError(f"capacity must be an integer >= 1, got {capacity!r}")
