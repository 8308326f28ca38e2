"""Where a plan tree stands beyond the subplan counts: the current root step, the state of
each root step, and how much work skipped steps and skipped (already completed) subplans took
out of the run.

``ProgressReporter`` counts the subplans that dispatchers have announced; a plan announces a
step's subplans only when the step starts. The views want the whole plan, so this sink knows
the tree's size up front (one walk of the loaded plan), adds the size of a step that reads its
items when it starts (``for_each`` over a glob, a file, a command) then, and follows the steps,
in O(1) per event. A dispatch that is none of the tree's steps adds its subplans too: at once
when its ``dispatch_started`` has a total, as it finishes when it has none (a group, a lazy
input: ``total_known`` is False until then, and the views show counts without a percentage or
an ETA).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING, Final, cast

from subplans.engine.events import (
    DispatchFinished,
    DispatchStarted,
    Event,
    StepStateChanged,
    SubplanSkipped,
    SubplanStateChanged,
)
from subplans.engine.states import StepState
from subplans.engine.values import Value
from subplans.sinks.formatting import is_cancellation, own_failure

if TYPE_CHECKING:
    from subplans.engine.control_events import DispatchHalted, LimitChanged
    from subplans.plans.tree import PlanNode, StepNode

__all__ = ["PlanProgress", "StepView"]

#: The state the views show for a root step before its first event (no ``StepState``: no event
#: says a step is waiting).
_NOT_STARTED = "pending"
#: The state the views show for a root step that failed because it was cancelled (the engine
#: records it as failed, with a ``SubplanCancelledError``): a Ctrl-C, ``subplans cancel``.
_CANCELLED = "cancelled"


class StepView(Value):
    """A root step as the views show it."""

    # A plain class: a dataclass costs the command's start a third of a millisecond (#10).
    __slots__ = ("id", "index", "max_parallel", "name", "state")
    _fields = ("id", "name", "index", "max_parallel", "state")

    def __init__(self, id: str, name: str, index: int, max_parallel: int, state: str) -> None:
        self.id: Final = id
        self.name: Final = name
        self.index: Final = index
        self.max_parallel: Final = max_parallel
        self.state: Final = state


def _size(step: StepNode, sizes: dict[str, int]) -> int:
    """Units in ``step`` and in the plans nested below it; records the size of every step and
    every unit (a unit counts itself and what its nested plan holds). A step whose items are
    read when it starts is left out: its size is known only then."""
    if step.items is not None:
        return 0
    size = 0
    for unit in step.units:
        unit_size = 1
        if unit.plan is not None:
            unit_size += sum(_size(inner, sizes) for inner in unit.plan.steps)
        sizes[unit.id] = unit_size
        size += unit_size
    sizes[step.id] = size
    return size


class PlanProgress:
    """A bus subscriber that follows the steps of one plan tree; a resumed run passes the ids
    of the subplans that ``completed`` before (those it skips)."""

    def __init__(self, plan: PlanNode, *, completed: Collection[str] = ()) -> None:
        self.plan = plan
        self._sizes: dict[str, int] = {}
        # A resumed run's completed subplans below each id: the size of a skipped nested plan
        # whose steps read their items when they started (never read again, as it is skipped).
        self._completed_below: dict[str, int] = {}
        for subplan_id in completed:
            parts = subplan_id.split("/")
            for end in range(1, len(parts)):
                prefix = "/".join(parts[:end])
                self._completed_below[prefix] = self._completed_below.get(prefix, 0) + 1
        #: Every unit of the tree known so far: subplans, and nested plans with their own
        #: units; the steps that read their items when they start add theirs then.
        self.total = sum(_size(step, self._sizes) for step in plan.steps)
        self._root = {step.id: index for index, step in enumerate(plan.steps)}
        self._states: list[str] = [_NOT_STARTED] * len(plan.steps)
        self._current: int | None = None
        #: Units that will never run because their step was skipped (and never ran).
        self.skipped = 0
        # A nested plan that its parent's retry runs again runs its steps again: a step skipped
        # in one attempt may run in the next (its units then count as they end), and one that
        # ran and then is skipped keeps what its units did; each counts once.
        self._skipped_steps: set[str] = set()
        self._started_steps: set[str] = set()
        # Subplans told skipped so far: a nested plan run again skips them again.
        self._skipped_ids: set[str] = set()
        #: Units not run again because they already completed (``subplan_skipped`` events).
        self.resumed = 0
        #: Why steps (root or nested) failed, by step id, in the order they did, when it was
        #: not their subplans (whose failures the summary lists) nor a cancellation: a
        #: ``for_each`` source that could not be read. Nothing else says so.
        self.step_errors: dict[str, BaseException] = {}
        #: Subplans the dispatches told of: their totals as they started, and what those
        #: without a total ran, as they finished. The progress reporter counts the subplans
        #: announced; beyond these, a dispatch without a total announced them.
        self.told = 0
        #: The dispatches a ``halt`` threshold stopped, in order: what says why they stopped.
        self.halted: list[DispatchHalted] = []
        #: The caps changed while the run ran (``subplans limit``), in order.
        self.limit_changes: list[LimitChanged] = []
        # Dispatches under way without a total, by name (several may share one), and how
        # many of them are none of the tree's steps: their size is known when they finish.
        self._untold: dict[str | None, int] = {}
        self._untold_extra = 0
        #: The tree's steps whose dispatch started.
        self._dispatched: set[str | None] = set()

    def __repr__(self) -> str:
        return (
            f"<PlanProgress {self.plan.name!r} {self.total} units, {self.skipped} in skipped "
            f"steps, {self.resumed} already completed>"
        )

    def __call__(self, event: Event) -> None:
        if type(event) is SubplanStateChanged:
            return  # most events are: not followed here
        if isinstance(event, SubplanSkipped):
            if event.subplan_id in self._skipped_ids:
                return  # skipped again by a nested plan run again: counted already
            self._skipped_ids.add(event.subplan_id)
            # Step and unit ids share one namespace (a single-unit step's unit has its id).
            known = self._sizes.get(event.subplan_id, 1)
            size = max(known, 1 + self._completed_below.get(event.subplan_id, 0))
            self.total += size - known
            self.resumed += size
            return
        if not isinstance(event, StepStateChanged):
            if isinstance(event, DispatchStarted | DispatchFinished):
                self._dispatch(event)
            # By kind: their module is loaded once a dispatch halts or a cap changes.
            elif event.kind == "dispatch_halted":
                self.halted.append(cast("DispatchHalted", event))
            elif event.kind == "limit_changed":
                self.limit_changes.append(cast("LimitChanged", event))
            return
        step_id = event.step_id
        if event.state == StepState.SKIPPED:
            if step_id not in self._started_steps and step_id not in self._skipped_steps:
                self._skipped_steps.add(step_id)
                self.skipped += self._sizes.get(step_id, 0)
        elif event.state == StepState.FAILED and own_failure(event.error):
            self.step_errors[step_id] = event.error
        elif event.state == StepState.RUNNING:
            self._started(step_id, event.total)
        index = self._root.get(event.step_id)
        if index is not None:
            cancelled = event.state == StepState.FAILED and is_cancellation(event.error)
            self._states[index] = _CANCELLED if cancelled else event.state
            if event.state == StepState.RUNNING:
                self._current = index

    def _started(self, step_id: str, total: int) -> None:
        """A step started: one skipped before (by an earlier attempt of its nested plan) is
        not skipped any more, and a failure of its own, or a halt, before is not its last state."""
        if step_id in self._started_steps:
            self.step_errors.pop(step_id, None)
            self.halted = [event for event in self.halted if event.name != step_id]
        else:
            self._started_steps.add(step_id)
            if step_id in self._skipped_steps:
                self._skipped_steps.discard(step_id)
                self.skipped -= self._sizes.get(step_id, 0)
        if step_id not in self._sizes:
            # A step whose items were read as it started, or one of a plan nested in such a
            # step's units: its units count from now on (their nested plans', as they start).
            self._sizes[step_id] = total
            self.total += total

    def _dispatch(self, event: DispatchStarted | DispatchFinished) -> None:
        """Count what a dispatch tells of its size: its total as it starts or, without one,
        what it ran as it finishes; a dispatch that is none of the tree's steps (whose size
        the tree gives) adds it to ``total``."""
        name = event.name
        extra = name is None or name not in self._sizes
        if isinstance(event, DispatchStarted):
            if not extra:
                if name in self._dispatched:
                    return  # a nested plan's step run again: its subplans were told of
                self._dispatched.add(name)
            if event.total is not None:
                self.told += event.total
                if extra:
                    self.total += event.total
            else:
                self._untold[name] = self._untold.get(name, 0) + 1
                self._untold_extra += extra
            return
        untold = self._untold.get(name)
        if untold is None:
            return
        if untold == 1:
            del self._untold[name]
        else:
            self._untold[name] = untold - 1
        ran = sum(event.counts.values())
        self.told += ran
        if extra:
            self._untold_extra -= 1
            self.total += ran

    @property
    def total_known(self) -> bool:
        """False while a dispatch without a total (a group, a lazy input) that is none of the
        tree's steps is under way: ``total`` holds none of its subplans until it finishes."""
        return not self._untold_extra

    def known_total(self, announced: int) -> int:
        """Every unit known now, skipped ones included, given ``announced``: the subplans the
        progress reporter counts. While a dispatch without a total is under way, that is the
        tree and the subplans such dispatches announced so far."""
        if self._untold_extra:
            return self.total + max(announced - self.told, 0)
        return max(self.total, announced + self.resumed + self.skipped)

    @property
    def current(self) -> StepView | None:
        """The root step that runs now (or ran last), or None before the first one."""
        if self._current is None:
            return None
        return self._view(self._current)

    def steps(self) -> list[StepView]:
        """Every root step with its state: pending, running, completed, failed, cancelled or
        skipped."""
        return [self._view(index) for index in range(len(self.plan.steps))]

    def _view(self, index: int) -> StepView:
        step = self.plan.steps[index]
        return StepView(step.id, step.name, index, step.profile.max_parallel, self._states[index])
