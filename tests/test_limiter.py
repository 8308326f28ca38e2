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


async def test_units_a_rate_and_a_capacity_that_changes() -> None:
    """Issue #14: several units at once, set_capacity (also to the same value), a rate."""
    limiter = AsyncSemaphoreLimiter(3)
    await limiter.acquire(2)
    assert limiter.in_use == 2
    limiter.set_capacity(3)  # unchanged: nothing happens
    limiter.release(2)
    assert limiter.in_use == 0
    now = [0.0]
    paced = AsyncSemaphoreLimiter(2, max_per_second=1000, clock=lambda: now[0])
    await paced.acquire()
    now[0] = 1.0
    await paced.acquire()  # the rate allows it at once: no timer
    assert paced.in_use == 2


async def test_a_waiter_cancelled_just_before_a_release_is_skipped() -> None:
    limiter = AsyncSemaphoreLimiter(1)
    await limiter.acquire()
    first = asyncio.create_task(limiter.acquire())
    second = asyncio.create_task(limiter.acquire())
    await asyncio.sleep(0)
    first.cancel()  # its future is cancelled now; its own code runs later
    limiter.release()  # so the wake skips it and serves the second
    await second
    with pytest.raises(asyncio.CancelledError):
        await first
    assert (limiter.in_use, limiter.waiting) == (1, 0)


async def test_a_pool_with_its_own_rate_takes_the_fast_path() -> None:
    import itertools

    from subplans import ParallelExecutionConfig, ParallelSubplanDispatcher, Subplan

    ticks = itertools.count()  # a second passes at every reading: the rate always allows
    pool = AsyncSemaphoreLimiter(2, max_per_second=1000, clock=lambda: float(next(ticks)))

    async def run() -> None:
        await asyncio.sleep(0)

    dispatcher = ParallelSubplanDispatcher(ParallelExecutionConfig(), pools={"api": pool})
    results = await dispatcher.run([Subplan(f"s{i}", run, uses={"api": 1}) for i in range(4)])
    assert len(results) == 4
    assert pool.in_use == 0
