"""What lets a slot's task run the next subplan of its slot (``Running._execute``; the spec's
"A slot's task"): the counts ``Running._spawn`` takes of a new task, which it must come back
to, the context variables a new task would get, and the turn of the loop before the next
subplan, where a new task's first step would be.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from subplans.engine.lending import held_by_this_task

if TYPE_CHECKING:
    from collections.abc import Generator
    from contextvars import Context

__all__ = ["ENTERED_REFS", "RUNNING_REFS", "UNCOUNTED", "YIELD", "same_vars"]

_MISSING = object()

#: References a task has while it runs beyond those it has when made (``Running._spawn``):
#: the loop's record of its current task (CPython 3.11's C task, the only one reused).
RUNNING_REFS = 1
#: References a task's context has while the task runs beyond those it has when counted in
#: ``Running._spawn``: the step's handle enters it (``Context.run``, which has it on its stack
#: too) and ``Running._execute``'s name holds it, where ``Running._spawn``'s name and the tuple
#: being built did (checked by tests/test_task_reuse.py: a wrong count never reuses).
ENTERED_REFS = 1
#: A slot's counts once its task has taken them.
UNCOUNTED: tuple[int, int, str, int, int, int, None, int] = (0, 0, "", 0, 0, 0, None, 0)


class _Yield:
    """``await YIELD`` gives the loop one turn, as ``asyncio.sleep(0)`` does: one bare
    yield (an iterator of one None, without a generator's call)."""

    __slots__ = ()

    if TYPE_CHECKING:

        def __await__(self) -> Generator[None, None, None]: ...

    else:
        __await__ = (None,).__iter__


YIELD = _Yield()


def same_vars(now: Context, context: Context, direct: bool) -> bool:
    """Whether ``now`` (the running task's context) binds the variables ``context`` binds, to
    the same objects, and no other (``direct``: else the holder of ``Running._execute`` too,
    which it sets again first)."""
    if len(now) != len(context) + (not direct and held_by_this_task not in context):
        return False
    get = now.get
    return all(
        get(var, _MISSING) is value
        for var, value in context.items()
        if direct or var is not held_by_this_task
    )
