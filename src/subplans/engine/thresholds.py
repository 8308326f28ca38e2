"""A dispatch's halting thresholds (``HaltPolicy``), checked as its subplans end.

Fail-fast is the policy ``now,fail=1`` and keeps its own words and error (the first failure's
``SubplanExecutionError``). Another threshold halts the dispatch ``now`` (as fail-fast
stops it: the running subplans are cancelled) or ``soon`` (nothing more starts; the running
ones finish), and what never started ends FAILED with a ``SubplanCancelledError`` naming the
threshold.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from subplans.engine.control_events import DispatchHalted
from subplans.engine.errors import SubplanCancelledError
from subplans.engine.outcome import check_outcome
from subplans.engine.results import SubplanResult

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator

    from subplans.engine.config import ParallelExecutionConfig
    from subplans.engine.events import EventBus
    from subplans.engine.halting import HaltPolicy

__all__ = ["Thresholds", "halt_reason"]


def halt_reason(threshold: str, policy: HaltPolicy) -> str:
    """What the subplans a halt cancels (or never starts) are told."""
    return f"cancelled because the {threshold} threshold was reached (halt {policy})"


class Thresholds:
    """The halting part of a dispatch (a mixin of ``Dispatch``)."""

    #: The policy in effect (None: continue on error).
    halt: HaltPolicy | None
    #: The policy when it has a success threshold (checked as each subplan completes).
    success: HaltPolicy | None
    #: The threshold that halted the dispatch ("fail" or "success"), or None.
    halted: str | None
    #: Whether the fail threshold was reached (also after a success halt).
    fail_hit: bool
    #: How many pending subplans a ``soon`` halt failed (they count as no failure).
    held_back: int
    #: The lazy input a ``soon`` halt stopped reading, closed once the dispatch drains.
    unread: Iterator[Any] | AsyncIterator[Any] | None
    name: str | None
    entries: Any
    total: int
    next: int
    failed: int
    completed: int
    stop_reason: str | None
    first_failure: int | None
    feeder: asyncio.Task[None] | None
    source: Iterator[Any] | AsyncIterator[Any] | None
    pull: Callable[[], Any] | None
    bus: EventBus | None
    now: Callable[[], float]

    if TYPE_CHECKING:

        def stop(self, reason: str) -> None: ...
        def wake(self) -> None: ...
        def first_result(self) -> SubplanResult | None: ...
        def record_unstarted(
            self, index: int, subplan_id: str, error: BaseException, *, counted: bool = True
        ) -> None: ...

    def set_thresholds(self, config: ParallelExecutionConfig) -> None:
        """Set the policy up (from ``Dispatch.__init__``)."""
        self.halt = policy = config.halt_policy
        self.success = policy if policy is not None and policy.success is not None else None
        self.halted = None
        self.fail_hit = False
        self.held_back = 0
        self.unread = None

    def check_fail(self, index: int) -> None:
        """Subplan ``index`` failed: halt if that reaches the fail threshold."""
        policy = self.halt
        if policy is None or self.fail_hit:
            return
        if self.halted is not None or self.stop_reason is not None:
            # Halted on success already (or stopping): a failure still counts for the outcome.
            self.fail_hit = policy.fail_reached(self.failed - self.held_back, self.total)
            return
        if policy.is_fail_fast:
            self.first_failure = index
            self.stop(f"cancelled because subplan {self.entries[index].subplan_id!r} failed")
            return
        if policy.fail_reached(self.failed, self.total):
            self.fail_hit = True
            self.halt_on("fail", policy)

    def check_success(self) -> None:
        """A subplan completed: halt if that reaches the success threshold."""
        policy = self.success
        if self.halted is not None or self.stop_reason is not None or policy is None:
            return
        if policy.success_reached(self.completed, self.total):
            self.halt_on("success", policy)

    def halt_on(self, threshold: str, policy: HaltPolicy) -> None:
        self.halted = threshold
        reason = halt_reason(threshold, policy)
        if self.bus is not None:
            halted = DispatchHalted(self.name, threshold, str(policy), reason, time=self.now())
            self.bus.publish(halted)
        if policy.now:
            self.stop(reason)
        else:
            self.hold(reason)

    def hold(self, reason: str) -> None:
        """Start nothing more (``soon``): what is pending fails now, the input is not read
        again, the running subplans go on."""
        if self.stop_reason is not None:
            return  # a subscriber of DispatchHalted interrupted the dispatch
        self.unread, self.source, self.pull = self.source, None, None
        if self.feeder is not None:
            self.feeder.cancel()  # it waits for the gates of a subplan that fails below
        entries = self.entries
        for index in range(self.next, self.total):
            entry = entries[index]
            if type(entry) is not SubplanResult:
                self.hold_back(index, entry.id, reason)
        self.next = self.total
        self.wake()

    def hold_back(self, index: int, subplan_id: str, reason: str) -> None:
        """Fail pending subplan ``index`` of a dispatch halted ``soon``, without starting it."""
        self.held_back += 1
        self.record_unstarted(index, subplan_id, SubplanCancelledError(reason), counted=False)

    def outcome(self, results: list[SubplanResult], total: int) -> None:
        """Raise as ``run()`` does for a dispatch with failures; a dispatch halted by its
        success threshold returns instead, unless its fail threshold was reached too.

        Raises:
            SubplanExecutionError: fail-fast's first failure.
            AggregateSubplanError: every failure.
        """
        if self.halted == "success" and not self.fail_hit:
            return
        note = None
        if self.halted is not None and self.halt is not None:
            note = f"the fail threshold was reached (halt {self.halt})"
        check_outcome(results, self.first_result(), total, note)
