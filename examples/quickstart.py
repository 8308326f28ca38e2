"""Port twelve "modules" in parallel, four at a time, and watch every state change.

Run: python examples/quickstart.py
"""

from __future__ import annotations

import asyncio
import random

from subplans import (
    AggregateSubplanError,
    Event,
    EventBus,
    FailureMode,
    ParallelExecutionConfig,
    ParallelSubplanDispatcher,
    ProgressReporter,
    Subplan,
    SubplanExecutionState,
    SubplanStateChanged,
)

MODULES = [
    "parser", "lexer", "ast", "types", "codegen", "cli",
    "config", "cache", "io", "net", "auth", "report",
]  # fmt: skip


def port(module: str) -> Subplan:
    async def run() -> str:
        await asyncio.sleep(random.uniform(0.05, 0.3))  # stands in for real work
        if module == "net":
            raise RuntimeError("net: uses asyncore, which no longer exists")
        return f"{module}: ported"

    return Subplan(f"port/{module}", run, timeout=5, retries=1, retry_delay=0.05)


def show(event: Event) -> None:
    if isinstance(event, SubplanStateChanged) and event.previous is not None:
        note = f"  ({event.error})" if event.error else ""
        print(f"{event.timestamp:%H:%M:%S.%f} {event.subplan_id:14} {event.state.value}{note}")


async def main() -> int:
    bus = EventBus()
    bus.subscribe(show)
    progress = ProgressReporter(bus)
    config = ParallelExecutionConfig(max_parallel=4, failure_mode=FailureMode.CONTINUE_ON_ERROR)
    dispatcher = ParallelSubplanDispatcher(config, bus=bus)
    try:
        await dispatcher.run(port(m) for m in MODULES)
    except AggregateSubplanError as error:
        # continue-on-error: every module ran; the failures come back together.
        for result in error.results:
            if result.error is not None:
                print(f"FAILED {result.subplan_id}: {result.error}")
    snapshot = progress.snapshot()
    counts = snapshot.counts
    print(
        f"{counts[SubplanExecutionState.COMPLETED]} completed, "
        f"{counts[SubplanExecutionState.FAILED]} failed in {snapshot.elapsed:.2f}s, "
        f"at most {config.max_parallel} at a time (the net module fails on purpose)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
