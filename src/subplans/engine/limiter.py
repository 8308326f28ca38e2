"""A counting limiter over ``asyncio.Semaphore`` that keeps statistics."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from types import TracebackType

__all__ = ["AsyncSemaphoreLimiter", "LimiterStatistics"]


@dataclass(frozen=True, slots=True)
class LimiterStatistics:
    """A snapshot of a limiter: its capacity, slots in use, the peak and the waiters."""

    capacity: int
    in_use: int
    peak: int
    waiting: int


class AsyncSemaphoreLimiter:
    """At most ``capacity`` holders at once; ``async with limiter:`` holds one slot."""

    __slots__ = ("_capacity", "_in_use", "_peak", "_semaphore", "_waiting")

    def __init__(self, capacity: int) -> None:
        if type(capacity) is not int or capacity < 1:
            raise ValueError(f"capacity must be an integer >= 1, got {capacity!r}")
        self._capacity = capacity
        self._semaphore = asyncio.Semaphore(capacity)
        self._in_use = 0
        self._peak = 0
        self._waiting = 0

    def __repr__(self) -> str:
        return (
            f"<AsyncSemaphoreLimiter {self._in_use}/{self._capacity} in use, "
            f"peak {self._peak}, {self._waiting} waiting>"
        )

    @property
    def capacity(self) -> int:
        """How many slots there are."""
        return self._capacity

    @property
    def in_use(self) -> int:
        """How many slots are held now."""
        return self._in_use

    @property
    def peak(self) -> int:
        """The highest ``in_use`` ever seen."""
        return self._peak

    @property
    def waiting(self) -> int:
        """How many acquirers are blocked waiting for a slot."""
        return self._waiting

    def statistics(self) -> LimiterStatistics:
        """A frozen snapshot of the counters."""
        return LimiterStatistics(self._capacity, self._in_use, self._peak, self._waiting)

    async def acquire(self) -> None:
        """Wait for a free slot and take it (cancellation-safe: a cancelled wait takes nothing)."""
        # Counted around every acquire: without a yield nobody can observe an uncontended one.
        self._waiting += 1
        try:
            await self._semaphore.acquire()
        finally:
            self._waiting -= 1
        self._in_use = in_use = self._in_use + 1
        if in_use > self._peak:
            self._peak = in_use

    def release(self) -> None:
        """Give a slot back.

        Raises:
            RuntimeError: more releases than acquires.
        """
        if self._in_use == 0:
            raise RuntimeError("this limiter has no slot in use to release")
        self._in_use -= 1
        self._semaphore.release()

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
