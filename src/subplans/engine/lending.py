"""A running subplan's slot of a shared budget, lent to the dispatches it opens (nesting).

Like make's jobserver, where a child make runs on the token its parent was started with: a
subplan that holds a slot of a budget and opens a group, a stream or a ``run()`` on the same
budget gives its slot back while it waits for them, and takes one again before it goes on. A
planner waiting for its children never holds a slot, so a deep tree of planners cannot take
every slot and wait on itself (deadlock), and the budget is never exceeded.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from subplans.engine.limiter import AsyncSemaphoreLimiter

__all__ = ["Holder", "held_by_this_task", "lend", "reclaim"]


class Holder:
    """A subplan's claim on one slot of ``budget``; ``held`` is False while it is lent."""

    __slots__ = ("budget", "held")

    def __init__(self, budget: AsyncSemaphoreLimiter) -> None:
        self.budget = budget
        self.held = True


#: The holder of the subplan whose task this is (each task runs in a copy of the context).
held_by_this_task: ContextVar[Holder | None] = ContextVar("subplans_budget_holder", default=None)


def lend(budget: AsyncSemaphoreLimiter) -> Holder | None:
    """Give back the current subplan's slot of ``budget`` if it holds one; its holder, or None."""
    holder = held_by_this_task.get()
    if holder is None or holder.budget is not budget or not holder.held:
        return None
    holder.held = False
    budget.release()
    return holder


async def reclaim(holder: Holder) -> None:
    """Take a slot again for a subplan whose slot was lent (a cancelled wait takes none)."""
    await holder.budget.acquire()
    holder.held = True
