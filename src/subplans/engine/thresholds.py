"""A dispatch's halting thresholds (``HaltPolicy``), checked as its subplans end.

Fail-fast is the policy ``now,fail=1`` and keeps its own words and error (the first failure's
``SubplanExecutionError``). Another threshold halts the dispatch ``now`` (as fail-fast
stops it: the running subplans are cancelled) or ``soon`` (nothing more starts; the running
ones finish), and what never started ends FAILED with a ``SubplanCancelledError`` naming the
threshold.

While more subplans may come (a lazy input not read to its end, a group), a percentage is of
the subplans known so far and is judged only once ``MIN_ENDED`` of them have ended, as GNU
parallel waits for 3 jobs: else the first end of a long input (1 of 1, 100%) would halt it.
A threshold reached with nothing left to stop or start (no subplan running or pending, no
more to come) is no halt: nothing is published and nothing is said to have halted.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from subplans.engine.errors import (
    AggregateSubplanError,
    SubplanCancelledError,
    SubplanExecutionError,
)
from subplans.engine.outcome import check_outcome, failed_message
from subplans.engine.results import SubplanResult
from subplans.engine.states import SubplanExecutionState

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator

    from subplans.engine.bus import EventBus
    from subplans.engine.config import ParallelExecutionConfig
    from subplans.engine.halting import HaltPolicy, Threshold

__all__ = [
    "MIN_ENDED",
    "Thresholds",
    "cancelled_by_success",
    "check_success_halt",
    "halt_reason",
]

_FAILED = SubplanExecutionState.FAILED

#: While the total is unknown, a percentage is judged once this many subplans have ended.
MIN_ENDED = 3


def halt_reason(threshold: str, policy: HaltPolicy) -> str:
    """What the subplans a halt cancels (or never starts) are told."""
    return f"cancelled because the {threshold} threshold was reached (halt {policy})"


#: How the reason of a subplan a success halt cancelled starts (``halt_reason``).
_SUCCESS_HALTED = "cancelled because the success threshold was reached"


def cancelled_by_success(error: BaseException | None) -> bool:
    """Whether a subplan failed only because its dispatch's success threshold was reached:
    it was cancelled, or never started, and is no failure."""
    return isinstance(error, SubplanCancelledError) and error.reason.startswith(_SUCCESS_HALTED)


def check_success_halt(results: list[SubplanResult], policy: HaltPolicy | None) -> None:
    """Raise for the subplans that failed by themselves in a dispatch that returned its
    results because its success threshold was reached (``run()`` raises nothing then): as
    continue-on-error would, so that a plan's step fails. The subplans the halt cancelled
    are no failure; nothing is raised when no other subplan failed.

    Raises:
        AggregateSubplanError: one ``SubplanExecutionError`` per subplan that failed by
            itself; its message counts the cancelled ones apart.
    """
    if policy is None or policy.success is None:
        return
    reason = halt_reason("success", policy)
    own: list[SubplanResult] = []
    cancelled = 0
    for result in results:
        if result.state is _FAILED:
            error = result.error
            if isinstance(error, SubplanCancelledError) and error.reason.startswith(reason):
                cancelled += 1
            else:
                own.append(result)
    if not own:
        return
    failures = [SubplanExecutionError(r.subplan_id, results, r.error) for r in own]  # type: ignore[arg-type]
    note = f"the success threshold was reached (halt {policy})"
    message = failed_message(len(own), cancelled, len(results), note)
    raise AggregateSubplanError(message, failures, results)


class Thresholds:
    """The halting part of a dispatch (a mixin of ``Dispatch``)."""

    #: The policy in effect (None: continue on error).
    halt: HaltPolicy | None
    #: The policy when it is checked as each subplan ends: it has a success threshold, or a
    #: percentage was left unjudged (fewer than ``MIN_ENDED`` ended while more may come).
    success: HaltPolicy | None
    #: The threshold that halted the dispatch ("fail" or "success"), or None.
    halted: str | None
    #: Whether the fail threshold was reached (also after a success halt).
    fail_hit: bool
    #: How many pending subplans a ``soon`` halt failed (they count as no failure).
    held_back: int
    #: The lazy input a ``soon`` halt stopped reading, closed once the dispatch drains.
    unread: Iterator[Any] | AsyncIterator[Any] | None
    #: Whether the subplans come from a lazy input (its total is known once it ran out).
    lazy: bool
    name: str | None
    entries: Any
    total: int
    expected: int | None
    next: int
    failed: int
    completed: int
    never_started: int
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
        self.lazy = self.source is not None

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
        if self.judged(policy.fail) and policy.fail_reached(self.failed, self.total):
            self.fail_hit = True
            self.halt_on("fail", policy)

    def check_success(self) -> None:
        """A subplan ended: halt if that reaches the success threshold (or a fail percentage
        left unjudged until enough had ended)."""
        policy = self.success
        if self.halted is not None or self.stop_reason is not None or policy is None:
            return
        fail = policy.fail
        if type(fail) is str and self.judged(fail) and policy.fail_reached(self.failed, self.total):
            self.fail_hit = True
            self.halt_on("fail", policy)
        elif self.judged(policy.success) and policy.success_reached(self.completed, self.total):
            self.halt_on("success", policy)
        elif policy.success is None and self.completed + self.failed >= MIN_ENDED:
            # A fail percentage judged at last: from now on, as failures come (a success only
            # lowers the share).
            self.success = None

    def judged(self, threshold: Threshold | None) -> bool:
        """Whether ``threshold`` may be judged now: a count always, a percentage once the
        total is known or ``MIN_ENDED`` subplans have ended (until then, the policy is checked
        as each subplan ends)."""
        if type(threshold) is not str or self.completed + self.failed >= MIN_ENDED:
            return True
        if self.total_known():
            return True
        self.success = self.halt
        return False

    def total_known(self) -> bool:
        """Whether no more subplans can come: a list's, or a lazy input's read to its end (a
        group takes more until it ends)."""
        return self.expected is not None or (self.lazy and self.source is None)

    def anything_left(self) -> bool:
        """Whether a halt would stop or hold back anything: a subplan running or pending, or
        more that may come."""
        running = self.next - self.completed - self.failed + self.never_started
        return running > 0 or self.next < self.total or not self.total_known()

    def halt_on(self, threshold: str, policy: HaltPolicy) -> None:
        self.halted = threshold
        if not self.anything_left():
            return  # the last subplan reached it: nothing to stop, so no halt to report
        reason = halt_reason(threshold, policy)
        if self.bus is not None:
            from subplans.engine.control_events import DispatchHalted  # loaded once one halts

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
