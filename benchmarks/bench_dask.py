"""What running on a Dask cluster costs, side by side in one process: the local backend and a
2-worker local cluster on 127.0.0.1 (issue #12).

Run with ``python benchmarks/bench_dask.py`` (needs the ``dask`` extra). 200 subplans of
``sleep 0.05`` at max_parallel 16 go through one ``ParallelSubplanDispatcher``: once as local
commands (``run_command``, the baseline), once handed to the cluster (``DaskBackend``, whose
worker processes start before the rounds and are warmed up by one wave). Rounds are
interleaved so that machine noise hits both alike; the row is dask / local of the medians and
of the best rounds (target: <= 1.6x), and the per-subplan overhead the cluster adds (the
difference of the medians, times max_parallel, over the subplans: what each handover costs a
slot). Never part of pass/fail: the machine is shared and noisy.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from subplans import ParallelExecutionConfig, ParallelSubplanDispatcher, Subplan
from subplans.cluster import DaskBackend
from subplans.execution.process import CommandResult, run_command

N = 200
CAP = 16
COMMAND = "sleep 0.05"
ROUNDS = 5


def local(logs: Path, index: int) -> Subplan:
    log_file = logs / f"local-{index}.log"

    async def run() -> CommandResult:
        return await run_command(COMMAND, log_file=log_file)

    return Subplan(f"local-{index}", run)


def remote(backend: DaskBackend, logs: Path, index: int) -> Subplan:
    log_file = logs / f"dask-{index}.log"

    async def run() -> CommandResult:
        return await backend.run_command(COMMAND, log_file=log_file)

    return Subplan(f"dask-{index}", run)


async def timed(dispatcher: ParallelSubplanDispatcher, make: Callable[[int], Subplan]) -> float:
    started = time.perf_counter()
    await dispatcher.run([make(index) for index in range(N)])
    return time.perf_counter() - started


async def main() -> int:
    dispatcher = ParallelSubplanDispatcher(ParallelExecutionConfig(max_parallel=CAP))
    with tempfile.TemporaryDirectory(prefix="bench-dask-") as folder:
        logs = Path(folder)
        started = time.perf_counter()
        async with await DaskBackend.start(None, threads=CAP) as backend:
            print(
                f"local cluster up in {time.perf_counter() - started:.2f}s: {backend!r}",
                flush=True,
            )
            await dispatcher.run([remote(backend, logs, index) for index in range(CAP)])
            on_local: list[float] = []
            on_dask: list[float] = []
            for _ in range(ROUNDS):
                on_local.append(await timed(dispatcher, lambda i: local(logs, i)))
                on_dask.append(await timed(dispatcher, lambda i: remote(backend, logs, i)))
    median_local, median_dask = statistics.median(on_local), statistics.median(on_dask)
    overhead = (median_dask - median_local) * CAP / N
    print(f"{N} x `{COMMAND}` at max_parallel={CAP}, {ROUNDS} interleaved rounds")
    print(f"  local backend            {median_local:.3f}s median, {min(on_local):.3f}s best")
    print(f"  dask, 2 local workers    {median_dask:.3f}s median, {min(on_dask):.3f}s best")
    print(
        f"  dask / local             {median_dask / median_local:.2f}x median, "
        f"{min(on_dask) / min(on_local):.2f}x best (target <= 1.6x); "
        f"overhead {overhead * 1000:.1f} ms per subplan per slot"
    )
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
