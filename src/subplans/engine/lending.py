"""A running subplan's slot of a shared budget, lent to the dispatches it opens (nesting).

Like make's jobserver, where a child make runs on the token its parent was started with: a
subplan that holds a slot of a budget and opens a group, a stream or a ``run()`` on the same
budget gives its slot back while it waits for them, and takes one again before it goes on. A
planner waiting for its children never holds a slot, so a deep tree of planners cannot take
every slot and wait on itself (deadlock), and the budget is never exceeded. The units of the
pools the subplan uses are lent with it (a planner that uses a pool its children use, too).
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import TYPE_CHECKING

from subplans.engine.errors import ConfigError
from subplans.engine.limiter import acquire_all, release_all

if TYPE_CHECKING:
    from subplans.engine.limiter import AsyncSemaphoreLimiter, Parts

__all__ = ["Holder", "held_by_this_task", "lend", "let_go", "reclaim"]


class Holder:
    """A subplan's claim on one slot of ``budget`` and on the pool units of ``parts`` (which
    holds the budget's slot too); ``held`` is False while it is lent. Made by
    ``Running._start``, which sets its fields without the class's call machinery (one a
    pooled subplan)."""

    __slots__ = ("budget", "ended", "held", "lent", "parts")

    budget: AsyncSemaphoreLimiter | None
    parts: Parts
    #: True when made.
    held: bool
    #: How many dispatches it opened run on its lent slot now: the last to end takes the
    #: slot back (a planner may run several at once, e.g. under ``asyncio.gather``). 0 when
    #: made.
    lent: int
    #: Its subplan ended: nothing is taken back for it any more (a stream it left unclosed
    #: may end later). False when made.
    ended: bool


#: The holder of the subplan whose task this is (each task runs in a copy of the context).
held_by_this_task: ContextVar[Holder | None] = ContextVar("subplans_budget_holder", default=None)


def lend(budget: AsyncSemaphoreLimiter | None) -> Holder | None:
    """Give back what the current subplan holds if it holds a slot of ``budget`` or pool
    units; its holder, or None."""
    holder = held_by_this_task.get()
    if holder is None or holder.ended:
        return None
    pooled = len(holder.parts) > (holder.budget is not None)
    if (budget is None or holder.budget is not budget) and not pooled:
        return None  # no pool units, and the budget is another one
    holder.lent += 1
    if holder.held:  # (not when lent already, or when a cancelled take-back took none)
        holder.held = False
        release_all(holder.parts)
    return holder


async def reclaim(holder: Holder) -> None:
    """Take a slot (and units) again for a subplan whose slot was lent (a cancelled wait
    takes none). Only the last of its dispatches to end takes it, and none once its subplan
    ended."""
    holder.lent -= 1
    if holder.lent or holder.ended or holder.held:
        return
    try:
        await acquire_all(holder.parts)
    except ConfigError:
        return  # a pool was lowered below its units meanwhile: it runs on without them
    if holder.lent or holder.ended or holder.held:
        # Lent again, ended, or taken by another take-back while this one waited.
        release_all(holder.parts)
        return
    holder.held = True


def let_go(holder: Holder) -> None:
    """Its subplan ended: give back what it holds, and never take anything back for it.
    (``Ending.release`` writes it out: keep the two alike.)"""
    holder.ended = True
    if holder.held:
        holder.held = False
        for limiter, units in holder.parts:  # release_all(), a call less a subplan
            limiter.release(units)
