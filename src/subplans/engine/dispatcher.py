"""The parallel subplan dispatcher: runs subplans under a cap and tracks every one to its end."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Iterable, Iterator
from typing import Any

from subplans.engine.clock import SYSTEM_CLOCK, Clock
from subplans.engine.config import ParallelExecutionConfig
from subplans.engine.dispatch import Dispatch
from subplans.engine.duplicates import has_duplicates, reject_duplicates
from subplans.engine.events import EventBus
from subplans.engine.groups import SubplanGroup
from subplans.engine.limiter import AsyncSemaphoreLimiter
from subplans.engine.results import SubplanResult
from subplans.engine.streaming import StreamDispatch
from subplans.engine.subplan import Subplan

__all__ = ["ParallelSubplanDispatcher", "run_sync"]


class ParallelSubplanDispatcher:
    """Runs subplans concurrently, at most ``config.max_parallel`` at once, in input order."""

    def __init__(
        self,
        config: ParallelExecutionConfig | None = None,
        *,
        bus: EventBus | None = None,
        budget: AsyncSemaphoreLimiter | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.config = config if config is not None else ParallelExecutionConfig()
        self.bus = bus
        #: A limiter shared with other dispatchers (nested plans): like make's jobserver, it caps
        #: the subplans that do work across a whole tree, while ``max_parallel`` caps this one.
        self.budget = budget
        #: Where results and events read their stamps and the elapsed time; deadlines (timeouts,
        #: ``cancel_grace``) stay on the event loop's clock, which asyncio waits on.
        self.clock = clock
        self._dispatches = 0

    def __repr__(self) -> str:
        c = self.config
        return (
            f"<ParallelSubplanDispatcher max_parallel={c.max_parallel} "
            f"failure_mode={c.failure_mode.value} dispatches={self._dispatches}>"
        )

    async def run(
        self, subplans: Iterable[Subplan] | AsyncIterable[Subplan], *, name: str | None = None
    ) -> list[SubplanResult]:
        """Run every subplan and return their results in input order once all are terminal.

        A list or tuple is checked and announced whole; any other iterable, or an async
        iterable, is pulled one subplan per free slot (its total is not announced).

        Raises:
            SubplanError: duplicate subplan ids in a list or tuple (before anything runs).
            SubplanExecutionError: fail-fast, for the first failure (after every other
                subplan was cancelled and has finished, up to ``cancel_grace``).
            AggregateSubplanError: continue-on-error, when any subplan failed.
            asyncio.CancelledError: the caller was cancelled (once or more); every subplan was
                stopped and reached its terminal state first.
            KeyboardInterrupt: a subplan or an event subscriber raised it; the dispatch was
                stopped as if its caller had been cancelled.
            Exception: what a lazy input raised; the dispatch was stopped first.
        """
        entries, source = _prepare(subplans)
        self._dispatches += 1
        dispatch = Dispatch(self.config, self.bus, self.budget, self.clock, entries, name, source)
        return await dispatch.run()

    def stream(
        self, subplans: Iterable[Subplan] | AsyncIterable[Subplan], *, name: str | None = None
    ) -> AsyncGenerator[SubplanResult, None]:
        """The results, as each subplan becomes terminal; then what ``run()`` would raise.

        Leaving the loop early (``break``, an exception, ``aclose()``) cancels the subplans
        still running and waits for them, up to ``cancel_grace``; nothing more starts. The
        error at the end carries the failed results only (the others were handed on).

        Raises:
            SubplanError: duplicate subplan ids in a list or tuple (on this call).
        """
        entries, source = _prepare(subplans)
        self._dispatches += 1
        return self._stream(dict(enumerate(entries)), source, name)

    async def _stream(
        self,
        entries: dict[int, Any],
        source: Iterator[Subplan] | AsyncIterator[Subplan] | None,
        name: str | None,
    ) -> AsyncGenerator[SubplanResult, None]:
        parts = (self.config, self.bus, self.budget, self.clock)
        dispatch = StreamDispatch(*parts, entries, name, source)
        results = dispatch.results()
        try:
            async for result in results:
                yield result
        finally:
            await results.aclose()

    def open(self, name: str | None = None) -> SubplanGroup:
        """A group to submit subplans to while it is open: ``async with dispatcher.open() as
        group: group.submit(subplan)``; leaving the block waits for them all."""
        self._dispatches += 1
        return SubplanGroup(self.config, self.bus, self.budget, self.clock, name)


def run_sync(
    subplans: Iterable[Subplan] | AsyncIterable[Subplan],
    config: ParallelExecutionConfig | None = None,
    *,
    bus: EventBus | None = None,
) -> list[SubplanResult]:
    """``ParallelSubplanDispatcher(config, bus=bus).run(subplans)`` from synchronous code, on
    an event loop of its own.

    Raises:
        RuntimeError: called while an event loop runs in this thread (await ``run()`` there).
        Whatever ``run()`` raises.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise RuntimeError(
            "run_sync() cannot run inside a running event loop; "
            "await ParallelSubplanDispatcher(config).run(subplans) instead"
        )
    return asyncio.run(ParallelSubplanDispatcher(config, bus=bus).run(subplans))


def _prepare(
    subplans: Iterable[Subplan] | AsyncIterable[Subplan],
) -> tuple[list[Any], Iterator[Subplan] | AsyncIterator[Subplan] | None]:
    """A list or tuple whole, its ids checked; anything else as a source to pull from."""
    if isinstance(subplans, (list, tuple)):
        entries: list[Any] = list(subplans)
        if has_duplicates(entries):
            reject_duplicates(entries)
        return entries, None
    if isinstance(subplans, AsyncIterable):
        return [], aiter(subplans)
    return [], iter(subplans)
