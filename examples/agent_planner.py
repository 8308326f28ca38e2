"""An agent that plans as it goes, and a search that stops at the first answer.

1. A planner subplan splits a task into subtasks and submits them into the group it runs in;
   some subtasks split again. Each result is printed as it arrives. One branch fails; under
   continue-on-error the others go on, and the failure comes back with every result at the end.
2. A search reads an endless, lazily made list of documents four at a time and leaves
   ``stream()`` at the first answer: what still runs is cancelled, nothing more starts.

No network and no model: ``think()`` stands in for a model call. Run:
python examples/agent_planner.py
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools

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
    SubplanGroup,
    SubplanStateChanged,
)

#: How the "model" splits a task; a task not listed here is done in one go.
SPLITS = {
    "release": ["release/docs", "release/build", "release/test"],
    "release/build": ["release/build/linux", "release/build/macos", "release/build/windows"],
    "release/test": ["release/test/unit", "release/test/integration"],
}
#: The one document of the endless list that holds the answer.
ANSWER_IN = 137


async def think() -> None:
    """Where an agent would await a model (or a tool): here, one turn of the event loop."""
    await asyncio.sleep(0)


async def do(task: str) -> str:
    await think()
    if task == "release/build/windows":
        raise RuntimeError("no Windows runner is available")
    return f"{task.rsplit('/', 1)[-1]} done"


async def plan(group: SubplanGroup, task: str) -> str:
    """A planner: split ``task`` and submit each subtask, itself a planner, into ``group``
    (the group this planner runs in); a task that does not split is done here."""
    await think()
    subtasks = SPLITS.get(task)
    if subtasks is None:
        return await do(task)
    for subtask in subtasks:
        group.submit(Subplan(subtask, functools.partial(plan, group, subtask)))
    return f"split into {len(subtasks)}"


def show(event: Event) -> None:
    """Each subplan's end, as it happens."""
    if isinstance(event, SubplanStateChanged) and event.state in _ENDS:
        error = f"  {type(event.error).__name__}: {event.error}" if event.error else ""
        print(f"  {event.state.value:<9}  {event.subplan_id}{error}")


_ENDS = (SubplanExecutionState.COMPLETED, SubplanExecutionState.FAILED)


async def release() -> None:
    print("plan 'release', 3 at a time, continue-on-error:")
    bus = EventBus()
    bus.subscribe(show)
    config = ParallelExecutionConfig(max_parallel=3, failure_mode=FailureMode.CONTINUE_ON_ERROR)
    try:
        async with ParallelSubplanDispatcher(config, bus=bus).open(name="release") as group:
            group.submit(Subplan("release", functools.partial(plan, group, "release")))
        results = group.results
    except AggregateSubplanError as error:
        # Every branch ran; the failures come back together, with every result.
        print(f"{error.message}; every result, in the order submitted:")
        results = error.results
    for result in results:
        print(f"  {result.subplan_id:<25}  {result.value or result.error}")


async def search() -> None:
    print("search, 4 at a time, stopping at the first answer:")
    bus = EventBus()
    progress = ProgressReporter(bus)
    # Endless: the dispatcher takes the next document only when a slot is free.
    documents = (Subplan(f"doc-{n}", functools.partial(read, n)) for n in itertools.count(1))
    dispatcher = ParallelSubplanDispatcher(ParallelExecutionConfig(max_parallel=4), bus=bus)
    async with contextlib.aclosing(dispatcher.stream(documents, name="search")) as results:
        async for result in results:
            if result.value is not None:
                print(f"  found      {result.value!r} in {result.subplan_id}")
                break
    # Leaving the loop cancelled the reads still running (recorded failed, as cancelled).
    counts = progress.snapshot().counts
    print(
        f"  stopped    {counts[SubplanExecutionState.COMPLETED]} documents read, "
        f"{counts[SubplanExecutionState.FAILED]} reads cancelled, no more started"
    )


async def read(n: int) -> str | None:
    await think()
    return "the answer is 42" if n == ANSWER_IN else None


async def main() -> int:
    await release()
    await search()
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
