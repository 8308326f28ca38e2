"""What a subplan waits for before it starts, beyond a free slot: a slot of the shared budget,
the units of the pools it uses, the dispatch's rate; and a cap that changes while it runs.

A subplan that waits takes them all at once or none (``acquire_all``), in the dispatch's
feeder task, so a waiting subplan holds nothing and no nesting of pools can deadlock. A
dispatch with none of them starts its subplans directly (``direct``), as fast as before.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, cast

from subplans.engine.attempts import Slot
from subplans.engine.errors import ConfigError
from subplans.engine.limiter import AsyncSemaphoreLimiter, Parts, try_acquire_all

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from subplans.engine.clock import Clock
    from subplans.engine.config import ParallelExecutionConfig
    from subplans.engine.subplan import Subplan

__all__ = ["Controls", "Gating", "check_all_uses", "check_pools", "check_uses"]


class Controls:
    """What the dispatches of one dispatcher share: its pools and the live dispatches (which a
    new ``max_parallel`` reaches)."""

    __slots__ = ("live", "parts", "pools")

    def __init__(self, pools: Mapping[str, AsyncSemaphoreLimiter] | None) -> None:
        self.pools = pools
        self.live: set[Gating] = set()
        #: The pool units of each ``Subplan.uses`` seen (checked once: a fan-out has a few).
        self.parts: dict[tuple[tuple[str, int], ...], Parts] = {}


def check_pools(pools: object) -> dict[str, AsyncSemaphoreLimiter] | None:
    """``pools`` as a dict of names to limiters, or None.

    Raises:
        ConfigError: not a mapping of non-empty names to ``AsyncSemaphoreLimiter``s.
    """
    if pools is None:
        return None
    if not hasattr(pools, "items"):
        raise ConfigError(f"pools must be a mapping of names to limiters, got {pools!r}")
    checked: dict[str, AsyncSemaphoreLimiter] = {}
    for name, pool in pools.items():
        if not isinstance(name, str) or not name:
            raise ConfigError(f"pool names must be non-empty strings, got {name!r}")
        if not isinstance(pool, AsyncSemaphoreLimiter):
            raise ConfigError(f"pool {name!r} must be an AsyncSemaphoreLimiter, got {pool!r}")
        checked[name] = pool
    return checked


def check_uses(
    subplan: Subplan,
    pools: Mapping[str, AsyncSemaphoreLimiter] | None,
    *,
    as_made: bool = False,
) -> Parts:
    """The pool units ``subplan`` takes (``as_made``: of each pool as it was made, or as it
    is if it was raised since).

    Raises:
        ConfigError: it uses a pool there is not, or more units than its pool has.
    """
    parts: list[tuple[AsyncSemaphoreLimiter, int]] = []
    for name, units in subplan.uses or ():
        pool = None if pools is None else pools.get(name)
        if pool is None:
            known = ", ".join(sorted(pools or ())) or "none"
            raise ConfigError(
                f"subplan {subplan.id!r} uses pool {name!r}, which the dispatcher does not "
                f"have (its pools: {known})"
            )
        capacity = pool.capacity
        if as_made and pool.original_capacity > capacity:
            capacity = pool.original_capacity
        if units > capacity:
            raise ConfigError(
                f"subplan {subplan.id!r} uses {units} units of pool {name!r}, "
                f"more than its capacity of {capacity}"
            )
        parts.append((pool, units))
    return tuple(parts)


def check_all_uses(
    subplans: Iterable[Subplan], pools: Mapping[str, AsyncSemaphoreLimiter] | None
) -> None:
    """Check the ``uses`` of every subplan of a list up front (before anything runs): a pool
    the dispatcher lacks, or more units than the pool was made with, could never start. A
    pool lowered since (``set_capacity``) below what a subplan uses is no mistake of the
    list's: that subplan fails when its turn comes (without running), as a lazy input's does,
    and the dispatch goes on."""
    for subplan in subplans:
        if subplan.uses is not None:
            check_uses(subplan, pools, as_made=True)


class Gating:
    """The gates of a dispatch (a mixin of ``Dispatch``)."""

    name: str | None
    config: ParallelExecutionConfig
    controls: Controls | None
    budget: AsyncSemaphoreLimiter | None
    pools: Mapping[str, AsyncSemaphoreLimiter] | None
    #: The dispatch's own rate, as a limiter taken 0 units of (its pace only), or None.
    rate: AsyncSemaphoreLimiter | None
    direct: bool
    claim: Parts | None
    #: Slots to drop as their subplans end: a lowered ``max_parallel`` cancels nothing.
    excess: int
    slots: list[Slot]
    free: list[Slot]
    stop_reason: str | None

    if TYPE_CHECKING:

        def fill(self) -> None: ...

    def set_gates(self, controls: Controls | None, clock: Clock) -> None:
        """Set the gates up (from ``Dispatch.__init__``, once ``budget`` is set)."""
        self.controls = controls
        self.pools = None if controls is None else controls.pools
        rate = self.config.max_per_second
        self.rate = None
        if rate is not None:
            self.rate = AsyncSemaphoreLimiter(1, max_per_second=rate, clock=clock.monotonic)
        #: No gate but a free slot: a subplan starts as the one before it ends.
        self.direct = self.budget is None and self.pools is None and rate is None
        self.excess = 0
        #: What the feeder took for the subplan it starts.
        self.claim = None

    def gated(self, subplan: Subplan) -> bool:
        """Whether ``subplan`` waits for more than a slot (then the feeder starts it)."""
        return (
            (self.budget is not None and subplan.uses_budget)
            or subplan.uses is not None
            or self.rate is not None
        )

    def claim_now(self, subplan: Subplan) -> bool:
        """Take what ``subplan`` needs to start if all of it is free now (then ``claim`` is
        what it holds, or stays None when it needs nothing but a slot); False if it must wait.

        Raises:
            ConfigError: see ``check_uses``.
        """
        controls, uses = self.controls, subplan.uses
        if uses is None:
            if (self.budget is None or not subplan.uses_budget) and self.rate is None:
                return True
        elif controls is not None and self.budget is None and self.rate is None:
            # A fan-out over one pool, written out: its parts are known after the first.
            parts = controls.parts.get(uses)
            if parts is not None and len(parts) == 1:
                pool, units = parts[0]
                if not pool.try_take(units):
                    return False
                self.claim = parts
                return True
        held, waited = self.parts_for(subplan)
        if not try_acquire_all(waited):
            return False
        self.claim = held
        return True

    def parts_for(self, subplan: Subplan) -> tuple[Parts, Parts]:
        """What ``subplan`` takes while it runs, and what it waits for to start (the same,
        plus the dispatch's rate).

        Raises:
            ConfigError: see ``check_uses``.
        """
        uses, held = subplan.uses, cast("Parts", ())
        if uses is not None:
            known = self.controls.parts if self.controls is not None else {}
            held = known.get(uses) or known.setdefault(uses, check_uses(subplan, self.pools))
        if self.budget is not None and subplan.uses_budget:
            held = ((self.budget, 1), *held)
        return held, held if self.rate is None else ((self.rate, 0), *held)

    async def pace_retry(self, subplan: Subplan) -> None:
        """Wait until the dispatch's rate and that of every pool ``subplan`` uses allow one
        more start, and take it: a retry is a start, spaced as the first one was.

        Only the paces: the subplan holds its slot and units already, and waiting in a
        pool's queue behind a subplan that waits for those very units would deadlock.
        """
        if self.direct:
            return
        paces = [
            pace
            for limiter, _ in self.parts_for(subplan)[1]
            if (pace := limiter._pace) is not None  # (the limiter's queue is not for us)
        ]
        while paces:
            wait = max(pace.delay() for pace in paces)
            if wait <= 0:
                for pace in paces:
                    pace.take()
                return
            await asyncio.sleep(wait)  # the time the rates say: nothing else can open them

    def resize(self, max_parallel: int) -> None:
        """Make the cap ``max_parallel`` now: raising it starts waiting subplans at once;
        lowering it drops free slots and, as they end, busy ones (nothing is cancelled)."""
        slots, free = self.slots, self.free
        width = len(slots) - self.excess
        if max_parallel > width:
            grow = max_parallel - width
            kept = min(grow, self.excess)  # busy slots no longer to drop
            self.excess -= kept
            for _ in range(grow - kept):
                slot = Slot()
                slots.append(slot)
                free.append(slot)
            if self.stop_reason is None:
                self.fill()
            return
        drop = width - max_parallel
        while drop and free:
            slots.remove(free.pop())
            drop -= 1
        self.excess += drop

    def drop_slot(self, slot: Slot) -> bool:
        """Drop ``slot`` (its subplan ended): the cap was lowered below the busy ones
        (``excess`` > 0, which the caller checks first, on the hot path)."""
        self.excess -= 1
        self.slots.remove(slot)
        return True
