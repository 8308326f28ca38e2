"""Resuming a run: what ``subplans run`` records so that ``subplans resume`` can start the plan
the same way, and what must happen before anything of a run runs again.

``resume`` decides every refusal before it changes anything (section 13 of the specification):
it takes the run's lock (refused while another process drives it), lists what a dead owner left
running (``find_leftovers``, touching nothing), reloads the plan file with the overrides the run
was started with (``recorded_overrides``) and compares its subplan ids with the run's
(``refusal``), then weighs the subplans whose outcome is unknown (``unknown_outcomes``). Only
then does it stop the leftovers (``stop_leftovers``), ``RunStore.resume_run`` and run the plan
again, skipping each subplan that completed.

The subplans whose outcome is unknown were running when the run stopped: those marked
``idempotent: false`` must not run twice, so resume goes ahead only when the operator says what
to do with them. One whose processes still run is not unknown but unfinished: it is never
recorded completed while they run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from subplans.engine.config import FailureMode
from subplans.engine.errors import SubplanError
from subplans.engine.halting import HaltPolicy
from subplans.engine.states import SubplanExecutionState
from subplans.plans.loader import Overrides
from subplans.store import (
    RunInfo,
    RunStore,
    StoppedGroup,
    stop_leftover_groups,
)

# In ``manifest`` (a fresh run needs it, and nothing else of this module); importable from here.
from subplans.store.manifest import OVERRIDES, run_manifest

if TYPE_CHECKING:
    from subplans.execution.step_items import RecordedItems
    from subplans.plans.tree import PlanNode, UnitNode
    from subplans.store import Leftover, PlanDiff

__all__ = [
    "SKIP_UNKNOWN_REASON",
    "UnknownOutcomes",
    "changed_sources",
    "describe_changed_sources",
    "describe_stopped",
    "recorded_overrides",
    "refusal",
    "run_manifest",
    "stop_leftovers",
    "stop_leftovers_locked",
    "units_made",
    "unknown_outcomes",
]

#: Grace for leftover groups when the run recorded no ``cancel_grace`` (a library run).
_DEFAULT_GRACE = 5.0


def recorded_overrides(run: RunInfo) -> Overrides:
    """The command-line overrides ``run`` was started with (none for a run started in Python)."""
    given: Mapping[str, Any] = run.profile.get(OVERRIDES) or {}
    mode = given.get("failure_mode")
    return Overrides(
        max_parallel=given.get("max_parallel"),
        failure_mode=None if mode is None else FailureMode(mode),
        profile=given.get("profile"),
        halt=None if given.get("halt") is None else HaltPolicy.parse(given["halt"]),
        backend=given.get("backend"),
        scheduler=given.get("scheduler"),
    )


def stop_leftovers(store: RunStore, run: RunInfo) -> list[StoppedGroup]:
    """Stop the processes ``run``'s dead owner left running, with the run's ``cancel_grace``;
    call it holding the run's lock.

    Raises:
        RunBusyError: the run's owner is alive, or runs on another host.
    """
    values: Mapping[str, Any] = run.profile.get("values") or {}
    grace = values.get("cancel_grace")
    return stop_leftover_groups(
        store, run.id, grace=_DEFAULT_GRACE if grace is None else float(grace)
    )


def stop_leftovers_locked(store: RunStore, run: RunInfo) -> list[StoppedGroup]:
    """``stop_leftovers``, holding the run's lock meanwhile (``subplans cancel`` of an
    interrupted run).

    Raises:
        RunBusyError: another process holds the lock (it is resuming the run), or the run's
            owner is alive.
        StoreError: the lock file cannot be created.
    """
    with store.lock(run.id):
        return stop_leftovers(store, run)


def refusal(diff: PlanDiff, *, force: bool) -> str | None:
    """Why a resume must not go ahead with the plan as it is now, or None."""
    if diff.ids_match or force:
        return None
    return f"{diff}; resume with --force to run the plan as it is now"


def describe_stopped(run_id: str, stopped: Sequence[StoppedGroup]) -> str:
    """One line: the process groups of ``run_id`` that were stopped, and how."""
    count = len(stopped)
    groups = ", ".join(
        f"{group.subplan_id} (process group {group.pgid}, {group.signal})" for group in stopped
    )
    return (
        f"stopped {count} process group{'' if count == 1 else 's'} that run {run_id} "
        f"left running: {groups}"
    )


#: Why ``resume --skip-unknown`` recorded a subplan completed (kept in its ``subplan_skipped``).
SKIP_UNKNOWN_REASON = (
    "recorded completed, as the operator asserts (resume --skip-unknown): it was running when "
    "the run stopped, so whether it did its work was unknown"
)


@dataclasses.dataclass(frozen=True, slots=True)
class UnknownOutcomes:
    """The subplans of a run that were running when it stopped: they may have done part or
    all of their work. ``not_idempotent`` are those of them marked ``idempotent: false``;
    ``--skip-unknown`` records ``assumed`` completed: those, and everything inside the nested
    plans among them. ``still_running`` maps those whose processes the dead owner left running
    (theirs, or those of a subplan inside them) to those processes' pids: not finished yet."""

    run_id: str
    subplans: tuple[str, ...]
    not_idempotent: tuple[str, ...]
    assumed: tuple[str, ...]
    still_running: Mapping[str, tuple[int, ...]] = dataclasses.field(default_factory=dict)

    @property
    def listing(self) -> str:
        """One line: whose outcome is unknown, the non-idempotent ones and those still
        running marked."""
        return self._listing(running=True)

    def _listing(self, *, running: bool) -> str:
        def entry(subplan_id: str) -> str:
            notes = ["idempotent: false"] if subplan_id in self.not_idempotent else []
            if running and subplan_id in self.still_running:
                notes.append(f"still running: {_processes(self.still_running[subplan_id])}")
            return f"{subplan_id} ({'; '.join(notes)})" if notes else subplan_id

        return (
            f"the outcome of {_count(len(self.subplans))} of run {self.run_id} is unknown "
            f"(running when it stopped): {', '.join(entry(s) for s in self.subplans)}"
        )

    def describe(self, *, skip: bool = False) -> str:
        """The listing, and what resume does with them: with ``skip`` (``--skip-unknown``),
        the non-idempotent ones are recorded completed; every other one runs again. Said once
        the leftovers are stopped: nothing of them runs any more."""
        listing = self._listing(running=False)
        if skip and self.not_idempotent:
            again = sum(1 for subplan_id in self.subplans if subplan_id not in self.assumed)
            rest = f"; {_count(again)} run again" if again else ""
            return (
                f"{listing}; {', '.join(self.not_idempotent)} recorded completed, as you "
                f"assert (--skip-unknown){rest}"
            )
        return f"{listing}; they run again"

    def refusal(self) -> str:
        """Why resume does not go ahead without ``--rerun-unknown`` or ``--skip-unknown``."""
        count = len(self.not_idempotent)
        them = "it" if count == 1 else "them"
        return (
            f"{_count(count)} of run {self.run_id} "
            f"{'is' if count == 1 else 'are'} marked idempotent: false and may have done "
            f"{'its' if count == 1 else 'their'} work before the run stopped: "
            f"{', '.join(self.not_idempotent)}; resume with --rerun-unknown to run {them} "
            f"again, or --skip-unknown to record {them} completed"
        )

    def skip_refusal(self) -> str | None:
        """Why ``--skip-unknown`` must not record them completed, or None: some still run, so
        they are known unfinished (recorded completed, their work would be cut short when
        resume stops the leftovers)."""
        running = [s for s in self.not_idempotent if s in self.still_running]
        if not running:
            return None
        one = len(running) == 1
        named = ", ".join(f"{s} ({_processes(self.still_running[s])})" for s in running)
        they, them = ("it", "it") if one else ("they", "them")
        return (
            f"{'subplan' if one else 'subplans'} {named} of run {self.run_id} "
            f"{'is' if one else 'are'} still running, so {they} cannot be recorded completed: "
            f"wait for {them} to end, or stop {them} with `subplans cancel {self.run_id}`, "
            "then resume"
        )


def units_made(plan: PlanNode, items: Mapping[str, RecordedItems]) -> list[UnitNode]:
    """Every unit of ``plan``'s tree, depth first, in plan order, with those a run-time step
    made of the ``items`` it read (a step that has not read them, or whose source changed since,
    has none yet)."""
    units: list[UnitNode] = []
    for step in plan.steps:
        made = step.units
        recorded = None if step.items is None else items.get(step.id)
        if step.items is not None and recorded is not None and recorded.fits(step.items):
            try:
                made = step.items.units(recorded.items)
            except SubplanError:  # an item or a nested plan that is invalid now: made no units
                made = ()
        for unit in made:
            units.append(unit)
            if unit.plan is not None:
                units.extend(units_made(unit.plan, items))
    return units


def changed_sources(
    plan: PlanNode, items: Mapping[str, RecordedItems]
) -> list[tuple[str, str, str]]:
    """The run-time steps of ``plan``'s tree that had started (``items`` records what they read)
    and that the plan now gives another source: (step id, source then, source now). Their
    subplans change as much as a static list's would: a resume reads the new source only with
    ``--force``."""
    plans = [plan, *(unit.plan for unit in units_made(plan, items) if unit.plan is not None)]
    return [
        (step.id, items[step.id].source, str(step.items))
        for each in plans
        for step in each.steps
        if step.items is not None and step.id in items and not items[step.id].fits(step.items)
    ]


def describe_changed_sources(
    run_id: str, changed: Sequence[tuple[str, str, str]], *, force: bool
) -> str:
    """One line: the steps of ``run_id`` whose source the plan changed (``changed_sources``),
    and what resume does: refuses without ``force``, reads the new sources with it."""
    steps = "; ".join(
        f"step {step_id} read its items from the {then} and the plan now gives it the {now}"
        for step_id, then, now in changed
    )
    sources = "source" if len(changed) == 1 else "sources"
    then = (
        f"resuming anyway (--force), reading the new {sources}"
        if force
        else f"resume with --force to read the new {sources}"
    )
    return f"the plan's subplans changed since run {run_id}: {steps}; {then}"


def _count(n: int) -> str:
    return f"{n} subplan{'' if n == 1 else 's'}"


def _processes(pids: Sequence[int]) -> str:
    return f"process{'' if len(pids) == 1 else 'es'} {', '.join(map(str, pids))}"


def unknown_outcomes(
    store: RunStore,
    run_id: str,
    plan: PlanNode,
    leftovers: Sequence[Leftover] = (),
    items: Mapping[str, RecordedItems] | None = None,
) -> UnknownOutcomes:
    """The subplans of ``run_id`` recorded as running (its owner died meanwhile), in plan
    order, which of them ``plan`` marks ``idempotent: false``, and which of them still run:
    ``leftovers`` (``find_leftovers``) holds processes of theirs, or of a subplan inside them.
    The subplans of run-time steps are those made of the ``items`` they read (by default, as
    the store recorded them). Subplans no longer in the plan are left out: resume drops them."""
    units = units_made(plan, store.recorded_items(run_id) if items is None else items)
    idempotent = {unit.id: unit.idempotent for unit in units}
    running = tuple(
        info.subplan_id
        for info in store.subplans(run_id, state=SubplanExecutionState.RUNNING)
        if info.subplan_id in idempotent
    )
    marked = tuple(subplan_id for subplan_id in running if not idempotent[subplan_id])
    # A nested plan recorded completed holds its subplans' work: they are recorded so too.
    inside = tuple(f"{subplan_id}/" for subplan_id in marked)
    assumed = tuple(unit.id for unit in units if unit.id in marked or unit.id.startswith(inside))
    alive: dict[str, tuple[int, ...]] = {}
    for subplan_id in running:
        pids = sorted(
            leftover.pid
            for leftover in leftovers
            if leftover.subplan_id == subplan_id or leftover.subplan_id.startswith(f"{subplan_id}/")
        )
        if pids:
            alive[subplan_id] = tuple(pids)
    return UnknownOutcomes(run_id, running, marked, assumed, alive)
