"""Dispatcher overhead, side by side in one process: subplans vs a bare TaskGroup vs aiometer.

Run with ``nox -s bench`` (or ``python benchmarks/bench_dispatcher.py``). Prints microseconds per
subplan for 10,000 no-op subplans at max_parallel=32, the ratios against the baselines, and the
peak memory of 100,000 no-op subplans. Never part of pass/fail: the machine is shared and noisy.
"""

from __future__ import annotations

import asyncio
import gc
import statistics
import sys
import time
import tracemalloc
from collections.abc import Awaitable, Callable

from subplans import EventBus, ParallelExecutionConfig, ParallelSubplanDispatcher, Subplan

N = 10_000
CAP = 32
ROUNDS = 7


async def noop() -> None:
    await asyncio.sleep(0)


async def bare_baseline(n: int) -> None:
    """A TaskGroup that acquires a semaphore before creating each task."""
    semaphore = asyncio.Semaphore(CAP)

    async def one() -> None:
        try:
            await noop()
        finally:
            semaphore.release()

    async with asyncio.TaskGroup() as group:
        for _ in range(n):
            await semaphore.acquire()
            group.create_task(one())


async def with_subplans(n: int) -> None:
    bus = EventBus()
    bus.subscribe(lambda event: None)
    dispatcher = ParallelSubplanDispatcher(ParallelExecutionConfig(max_parallel=CAP), bus=bus)
    await dispatcher.run(Subplan(f"s{i}", noop) for i in range(n))


async def with_aiometer(n: int) -> None:
    import aiometer

    await aiometer.run_all([noop for _ in range(n)], max_at_once=CAP)


def measure(body: Callable[[int], Awaitable[None]], n: int) -> float:
    """Best-of-ROUNDS microseconds per subplan (the least disturbed round)."""
    times = []
    for _ in range(ROUNDS):
        gc.collect()
        start = time.perf_counter()
        asyncio.run(body(n))  # type: ignore[arg-type]
        times.append((time.perf_counter() - start) / n * 1e6)
    return min(times)


def peak_memory(body: Callable[[int], Awaitable[None]], n: int) -> float:
    """Peak traced memory, in MiB, while running ``n`` subplans."""
    gc.collect()
    tracemalloc.start()
    asyncio.run(body(n))  # type: ignore[arg-type]
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / 2**20


def main() -> int:
    contenders: dict[str, Callable[[int], Awaitable[None]]] = {
        "bare TaskGroup + Semaphore": bare_baseline,
        "subplans (EventBus attached)": with_subplans,
    }
    try:
        import aiometer  # noqa: F401

        contenders["aiometer.run_all"] = with_aiometer
    except ImportError:
        print("aiometer is not installed; skipping it")
    # Interleave the contenders round by round so that machine noise hits them alike.
    results: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(3):
        for name, body in contenders.items():
            results[name].append(measure(body, N))
    best = {name: min(times) for name, times in results.items()}
    print(f"{N:,} no-op subplans at max_parallel={CAP} (best of {3 * ROUNDS} runs)")
    for name, us in best.items():
        spread = statistics.median(results[name])
        print(f"  {name:32s} {us:7.2f} us/subplan (median of bests {spread:.2f})")
    ours, bare = best["subplans (EventBus attached)"], best["bare TaskGroup + Semaphore"]
    print(f"  subplans / bare baseline: {ours / bare:.2f}x (target <= 2.0x)")
    if "aiometer.run_all" in best:
        print(f"  aiometer / subplans:      {best['aiometer.run_all'] / ours:.2f}x (target >= 3x)")
    big = 100_000
    print(f"peak memory for {big:,} no-op subplans:")
    print(f"  subplans: {peak_memory(with_subplans, big):.1f} MiB")
    print(f"  bare:     {peak_memory(bare_baseline, big):.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
