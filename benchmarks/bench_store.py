"""What the run store costs a run, side by side in one process: the store on and off.

Run with ``python benchmarks/bench_store.py``. 10,000 no-op callable subplans at max_parallel=32
go through ``ParallelSubplanDispatcher`` with an ``EventBus``: once with a no-op subscriber
(off), once with a ``RunRecorder`` subscribed (on), counting until ``aclose()`` returns, that is
until every event is committed and the terminal states are fsynced. Rounds are interleaved so
that machine noise hits both alike; the best round of each is compared (target: on <= 2x off).
Registering the run (``start_run`` with its 10,000 subplans, once per run) is timed apart.
Never part of pass/fail: the machine is shared and noisy.
"""

from __future__ import annotations

import asyncio
import gc
import statistics
import sys
import tempfile
import time
from pathlib import Path

from subplans import EventBus, ParallelExecutionConfig, ParallelSubplanDispatcher, Subplan
from subplans.store import PlanManifest, RecorderStatistics, RunStore

N = 10_000
CAP = 32
ROUNDS = 7
MANIFEST = PlanManifest(
    file="bench.yaml", name="bench", subplans=tuple((f"s{i}", "step") for i in range(N))
)


async def noop() -> None:
    await asyncio.sleep(0)


async def dispatch(bus: EventBus) -> None:
    dispatcher = ParallelSubplanDispatcher(ParallelExecutionConfig(max_parallel=CAP), bus=bus)
    await dispatcher.run((Subplan(f"s{i}", noop) for i in range(N)), name="step")


async def store_off() -> None:
    bus = EventBus()
    bus.subscribe(lambda event: None)
    await dispatch(bus)


async def store_on(store: RunStore, run_id: str, *, durable: bool) -> tuple[float, float]:
    """Seconds until the dispatch returned, and until every event was committed."""
    start = time.perf_counter()
    bus = EventBus()
    recorder = store.recorder(run_id, bus=bus, durable=durable)
    await dispatch(bus)
    dispatched = time.perf_counter()
    await recorder.aclose()
    stats.append(recorder.statistics())
    return dispatched - start, time.perf_counter() - start


stats: list[RecorderStatistics] = []


def main() -> int:
    folder = Path(tempfile.mkdtemp(prefix="subplans-bench-"))
    store = RunStore.open(folder / "state.db")
    off: list[float] = []
    on: list[float] = []
    returned: list[float] = []
    relaxed: list[float] = []
    registering: list[float] = []
    for round_ in range(ROUNDS):
        gc.collect()
        start = time.perf_counter()
        asyncio.run(store_off())
        off.append(time.perf_counter() - start)

        for durable, times in ((True, on), (False, relaxed)):
            run_id = f"r{round_}-{'durable' if durable else 'relaxed'}"
            start = time.perf_counter()
            store.start_run(run_id, MANIFEST)
            registering.append(time.perf_counter() - start)
            gc.collect()
            back, done = asyncio.run(store_on(store, run_id, durable=durable))
            times.append(done)
            if durable:
                returned.append(back)
    healthy = store.integrity_check() == []
    store.close()

    def us(seconds: float) -> float:
        return seconds / N * 1e6

    best_off, best_on = min(off), min(on)
    print(f"{N:,} no-op subplans at max_parallel={CAP}, best of {ROUNDS} interleaved rounds")
    print(f"  store off (no-op subscriber)    {us(best_off):7.2f} us/subplan")
    print(
        f"  store on  (RunRecorder)         {us(best_on):7.2f} us/subplan "
        f"(median {us(statistics.median(on)):.2f}; run() returned after "
        f"{us(min(returned)):.2f}, the rest is the final flush)"
    )
    print(f"  store on, durable=False         {us(min(relaxed)):7.2f} us/subplan")
    print(f"  on / off: {best_on / best_off:.2f}x (target <= 2.0x)")
    print(f"  start_run registering {N:,} subplans: {min(registering) * 1000:.1f} ms per run")
    last = stats[-2]
    print(
        f"  last durable run: {last.written:,} events in {last.batches} batches "
        f"(largest {last.largest_batch:,}, {last.durable_batches} fsynced); "
        f"integrity_check {'ok' if healthy else 'FAILED'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
