"""The parallel subplan dispatcher: runs subplans under a cap and tracks every one to its end."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Iterable,
    Iterator,
    Mapping,
)
from contextvars import Context, copy_context
from typing import TYPE_CHECKING, Any

from subplans.engine.bus import EventBus
from subplans.engine.clock import SYSTEM_CLOCK, Clock
from subplans.engine.config import ParallelExecutionConfig, check_max_parallel
from subplans.engine.dispatch import Dispatch
from subplans.engine.duplicates import has_duplicates, reject_duplicates
from subplans.engine.gates import Controls, check_all_uses, check_pools
from subplans.engine.limiter import AsyncSemaphoreLimiter
from subplans.engine.results import SubplanResult
from subplans.engine.subplan import Subplan

if TYPE_CHECKING:  # loaded by stream() and open() only: a plan's run needs neither (#10)
    from subplans.engine.groups import SubplanGroup

__all__ = ["ParallelSubplanDispatcher", "run_sync"]


class ParallelSubplanDispatcher:
    """Runs subplans concurrently, at most ``config.max_parallel`` at once, in input order.

    ``pools`` are named limiters (``{"api": AsyncSemaphoreLimiter(4)}``) that a subplan takes
    units of while it runs (``Subplan(..., uses={"api": 1})``): it starts only when its slot
    and every unit it uses are free, and holds nothing while it waits. Pass the same pools to
    the dispatchers of nested plans to share them across the whole tree.
    """

    def __init__(
        self,
        config: ParallelExecutionConfig | None = None,
        *,
        bus: EventBus | None = None,
        budget: AsyncSemaphoreLimiter | None = None,
        clock: Clock = SYSTEM_CLOCK,
        pools: Mapping[str, AsyncSemaphoreLimiter] | None = None,
    ) -> None:
        self.config = config if config is not None else ParallelExecutionConfig()
        self.bus = bus
        #: The named pools (None: none), shared with the dispatchers given the same ones.
        self.pools = check_pools(pools)
        self._controls = Controls(self.pools)
        if bus is not None and self.pools is not None:
            for pool_name, pool in self.pools.items():
                pool.announce_to(bus, pool_name)
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
            ConfigError: a subplan of a list or tuple uses a pool the dispatcher does not
                have, or more units than its pool was made with (before anything runs; a lazy
                input's, or one asking more than a pool lowered since has, fails without
                running).
            SubplanExecutionError: fail-fast, for the first failure (after every other
                subplan was cancelled and has finished, up to ``cancel_grace``).
            AggregateSubplanError: continue-on-error, or a ``halt`` policy other than
                ``now,fail=1``, when any subplan failed; not when the policy's success
                threshold halted the dispatch (unless its fail threshold was reached too).
            asyncio.CancelledError: the caller was cancelled (once or more); every subplan was
                stopped and reached its terminal state first.
            KeyboardInterrupt: a subplan or an event subscriber raised it; the dispatch was
                stopped as if its caller had been cancelled.
            Exception: what a lazy input raised; the dispatch was stopped first.
        """
        entries, source = self._prepare(subplans)
        self._dispatches += 1
        parts = (self.config, self.bus, self.budget, self.clock)
        return await Dispatch(*parts, entries, name, source, self._controls).run()

    def set_max_parallel(self, max_parallel: int) -> None:
        """Change ``max_parallel`` now, for the dispatches running and the ones to come:
        raising it starts waiting subplans at once; lowering it cancels nothing, it holds new
        starts until fewer than ``max_parallel`` run. Published as ``LimitChanged``.

        Raises:
            ConfigError: not an integer between 1 and 32.
        """
        check_max_parallel(max_parallel)
        previous = self.config.max_parallel
        self.config = dataclasses.replace(self.config, max_parallel=max_parallel)
        live = sorted(self._controls.live, key=id)
        if self.bus is not None and previous != max_parallel:
            from subplans.engine.control_events import LimitChanged  # loaded once a cap changes

            # Before the subplans a raise starts: the cap holds at every event.
            for name in [d.name for d in live] or [None]:
                self.bus.publish(LimitChanged(name, None, previous, max_parallel))
        for dispatch in live:
            dispatch.resize(max_parallel)

    def _prepare(
        self, subplans: Iterable[Subplan] | AsyncIterable[Subplan]
    ) -> tuple[list[Any], Iterator[Subplan] | AsyncIterator[Subplan] | None]:
        entries, source = _prepare(subplans)
        if entries:
            check_all_uses(entries, self.pools)
        return entries, source

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
        entries, source = self._prepare(subplans)
        self._dispatches += 1
        return self._stream(dict(enumerate(entries)), source, name, copy_context())

    async def _stream(
        self,
        entries: dict[int, Any],
        source: Iterator[Subplan] | AsyncIterator[Subplan] | None,
        name: str | None,
        context: Context,
    ) -> AsyncGenerator[SubplanResult, None]:
        from subplans.engine.streaming import StreamDispatch

        parts = (self.config, self.bus, self.budget, self.clock)
        # Its subplans run in copies of the context where stream() was called.
        dispatch = context.run(StreamDispatch, *parts, entries, name, source, self._controls)
        results = dispatch.results()
        try:
            async for result in results:
                yield result
        finally:
            await results.aclose()

    def open(self, name: str | None = None) -> SubplanGroup:
        """A group to submit subplans to while it is open: ``async with dispatcher.open() as
        group: group.submit(subplan)``; leaving the block waits for them all."""
        from subplans.engine.groups import SubplanGroup

        self._dispatches += 1
        parts = (self.config, self.bus, self.budget, self.clock)
        return SubplanGroup(*parts, name, self._controls)


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
