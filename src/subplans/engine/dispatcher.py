"""The parallel subplan dispatcher: runs subplans under a cap and tracks every one to its end."""

from __future__ import annotations

from collections.abc import Iterable
from itertools import islice
from operator import attrgetter, eq
from typing import Any

from subplans.engine.clock import SYSTEM_CLOCK, Clock
from subplans.engine.config import ParallelExecutionConfig
from subplans.engine.dispatch import Dispatch
from subplans.engine.errors import SubplanError
from subplans.engine.events import EventBus
from subplans.engine.limiter import AsyncSemaphoreLimiter
from subplans.engine.results import SubplanResult
from subplans.engine.subplan import Subplan

__all__ = ["ParallelSubplanDispatcher"]


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
        self, subplans: Iterable[Subplan], *, name: str | None = None
    ) -> list[SubplanResult]:
        """Run every subplan and return their results in input order once all are terminal.

        Raises:
            SubplanError: duplicate subplan ids (before anything runs).
            SubplanExecutionError: fail-fast, for the first failure (after every other
                subplan was cancelled and has finished, up to ``cancel_grace``).
            AggregateSubplanError: continue-on-error, when any subplan failed.
            asyncio.CancelledError: the caller was cancelled (once or more); every subplan was
                stopped and reached its terminal state first.
            KeyboardInterrupt: a subplan or an event subscriber raised it; the dispatch was
                stopped as if its caller had been cancelled.
        """
        # Every id is checked and announced (the total first) before anything runs, so the
        # input is read whole; each subplan is dropped for its result once it ended.
        entries: list[Any] = list(subplans)
        if _has_duplicates(entries):
            _reject_duplicates(entries)
        self._dispatches += 1
        dispatch = Dispatch(self.config, self.bus, self.budget, self.clock, entries, name)
        return await dispatch.run()


_id = attrgetter("id")

#: Up to this many subplans, a hash set finds a repeated id; beyond, sorting the ids does. A set
#: costs 32 to 48 bytes an id (its table, and the old one while it grows): 40 MB for a million,
#: held beside every subplan at once, the peak of a large dispatch. Sorted ids cost 8 to 12
#: bytes an id, and time O(n log n): ids that come in order, as generated ones mostly do, sort
#: in a few merges (44 ms for a million, against 290 ms for the set), shuffled ones take longer.
_SET_UP_TO = 1 << 17


def _has_duplicates(subplans: list[Subplan]) -> bool:
    if len(subplans) <= _SET_UP_TO:
        return len(set(map(_id, subplans))) != len(subplans)
    ids = sorted(map(_id, subplans))
    return any(map(eq, ids, islice(ids, 1, None)))


def _reject_duplicates(subplans: list[Subplan]) -> None:
    """Raise SubplanError for the first id seen twice; called when there is one."""
    seen: set[str] = set()
    for subplan in subplans:  # pragma: no branch (never runs out: there is a duplicate)
        if subplan.id in seen:
            raise SubplanError(f"duplicate subplan id {subplan.id!r}")
        seen.add(subplan.id)
