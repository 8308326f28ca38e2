"""``dispatcher.open()``: a ``SubplanGroup`` that takes subplans while it is open.

The group is a dispatch with no input of its own: ``submit()`` queues a subplan (announced as
pending at once) and starts it if a slot is free, from any code, a subplan of the same group
included. Leaving the block waits, as ``run()`` does, for every subplan submitted until then.
"""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import TYPE_CHECKING

from subplans.engine.dispatch import Dispatch
from subplans.engine.errors import SubplanCancelledError, SubplanError
from subplans.engine.outcome import check_outcome
from subplans.engine.results import SubplanResult
from subplans.engine.subplan import Subplan

if TYPE_CHECKING:
    from subplans.engine.clock import Clock
    from subplans.engine.config import ParallelExecutionConfig
    from subplans.engine.events import EventBus
    from subplans.engine.limiter import AsyncSemaphoreLimiter

__all__ = ["SubplanGroup"]


class SubplanGroup:
    """Subplans submitted while the group is open, under its dispatcher's cap and semantics.

    ``async with dispatcher.open() as group: group.submit(subplan)``; leaving the block waits
    for every submitted subplan and raises as ``run()`` would.
    """

    def __init__(
        self,
        config: ParallelExecutionConfig,
        bus: EventBus | None,
        budget: AsyncSemaphoreLimiter | None,
        clock: Clock,
        name: str | None,
    ) -> None:
        self._parts = (config, bus, budget, clock)
        self.name = name
        self._dispatch: Dispatch | None = None
        self._ended = False

    def __repr__(self) -> str:
        state = "ended" if self._ended else "open" if self._dispatch else "not entered"
        dispatch = self._dispatch
        counts = (
            ", ".join(f"{s.value}={n}" for s, n in dispatch.counts().items()) if dispatch else ""
        )
        return f"<SubplanGroup {self.name or ''} {state} {counts}>".replace("  ", " ")

    @property
    def results(self) -> list[SubplanResult]:
        """The results so far, in submission order."""
        if self._dispatch is None:
            return []
        return [e for e in self._dispatch.entries if type(e) is SubplanResult]

    def submit(self, subplan: Subplan) -> None:
        """Queue ``subplan``: announced as pending now, started when a slot is free.

        Never blocks. After a fail-fast stop the subplan is recorded as failed (a
        ``SubplanCancelledError``) without starting.

        Raises:
            SubplanError: its id was submitted before, or the group's block has ended (or
                was not entered yet).
        """
        dispatch = self._dispatch
        if not isinstance(subplan, Subplan):
            raise TypeError(f"submit() takes a Subplan, got {subplan!r}")
        if dispatch is None or self._ended:
            when = "has ended" if self._ended else "is not open yet"
            raise SubplanError(f"cannot submit {subplan.id!r}: the group {when}")
        seen = dispatch.seen
        if subplan.id in seen:
            raise SubplanError(f"duplicate subplan id {subplan.id!r}")
        seen.add(subplan.id)
        index = dispatch.total
        dispatch.total = index + 1
        dispatch.entries.append(subplan)
        dispatch.pending(subplan.id)
        if dispatch.stop_reason is not None:
            error = SubplanCancelledError(dispatch.stop_reason)
            dispatch.record_unstarted(index, subplan.id, error)
            return
        dispatch.fill()

    async def __aenter__(self) -> SubplanGroup:
        if self._dispatch is not None:
            raise RuntimeError("a SubplanGroup can be entered only once")
        self._dispatch = dispatch = Dispatch(*self._parts, [], self.name)
        dispatch.expected = None
        dispatch.begin()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        dispatch = self._dispatch
        assert dispatch is not None
        cancel: asyncio.CancelledError | None = None
        try:
            try:
                if isinstance(exc, asyncio.CancelledError):
                    dispatch.cancelled(exc)
                elif exc is not None:
                    # As a cancelled caller would: the block's error says what went wrong.
                    reason = f"cancelled because the group's block raised {type(exc).__name__}"
                    dispatch.stop(reason)
                # Subplans submitted meanwhile are waited for too.
                while not dispatch.quiet():
                    dispatch.idle = dispatch.loop.create_future()
                    await dispatch.idle
            except asyncio.CancelledError as cancelled:
                cancel = dispatch.cancelled(cancelled)
            cancel = await dispatch.drain() or cancel
        finally:
            self._ended = True
            dispatch.end()
        cancel = await dispatch.take_back() or cancel
        if exc is not None:
            return  # the block's own exception goes on
        dispatch.raise_first(cancel)
        if dispatch.failed:
            results: list[SubplanResult] = dispatch.entries
            check_outcome(results, dispatch.first_result(), len(results))
