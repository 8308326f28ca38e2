import asyncio

import pytest

from subplans import AsyncSemaphoreLimiter, LimiterStatistics


async def test_counts_peak_and_waiting() -> None:
    limiter = AsyncSemaphoreLimiter(2)
    await limiter.acquire()
    async with limiter:
        assert limiter.statistics() == LimiterStatistics(capacity=2, in_use=2, peak=2, waiting=0)
        waiter = asyncio.create_task(limiter.acquire())
        await asyncio.sleep(0)
        assert limiter.waiting == 1
        assert repr(limiter) == "<AsyncSemaphoreLimiter 2/2 in use, peak 2, 1 waiting>"
    await waiter
    assert (limiter.in_use, limiter.waiting, limiter.peak, limiter.capacity) == (2, 0, 2, 2)
    limiter.release()
    limiter.release()
    assert limiter.in_use == 0


async def test_release_more_than_acquired() -> None:
    limiter = AsyncSemaphoreLimiter(1)
    with pytest.raises(RuntimeError, match=r"^this limiter has no slot in use to release$"):
        limiter.release()


async def test_cancelled_wait_takes_nothing() -> None:
    limiter = AsyncSemaphoreLimiter(1)
    await limiter.acquire()
    waiter = asyncio.create_task(limiter.acquire())
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert (limiter.in_use, limiter.waiting) == (1, 0)
    limiter.release()
    await asyncio.wait_for(limiter.acquire(), 1)
    assert limiter.in_use == 1


@pytest.mark.parametrize("capacity", [0, -1, True, 1.5])
def test_invalid_capacity(capacity: object) -> None:
    with pytest.raises(ValueError, match=r"^capacity must be an integer >= 1, got "):
        AsyncSemaphoreLimiter(capacity)  # type: ignore[arg-type]
