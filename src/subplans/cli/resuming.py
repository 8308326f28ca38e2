"""``subplans resume`` as a ``Launch``: every refusal decided under the run's lock before anything
is stopped or written, then what the dead owner left running stopped, and the run resumed.

The building blocks (leftovers, recorded overrides, the plan's diff, unknown outcomes) are in
``store.resume``; this module puts them in the order the specification gives (section 13).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from subplans.cli.exits import refuse
from subplans.cli.launches import Decision
from subplans.cli.loading import load
from subplans.cli.run_backends import cluster_needs, stopped_on_cluster
from subplans.store import find_leftovers
from subplans.store.resume import (
    SKIP_UNKNOWN_REASON,
    UnknownOutcomes,
    changed_sources,
    describe_changed_sources,
    describe_stopped,
    recorded_overrides,
    refusal,
    run_manifest,
    stop_leftovers,
    unknown_outcomes,
)

if TYPE_CHECKING:
    from subplans.cli.session import RunSession
    from subplans.execution.step_items import RecordedItems
    from subplans.store import PlanDiff, RunInfo, RunStore

__all__ = ["ResumedRun"]


class ResumedRun:
    """``subplans resume`` of ``run``, with the operator's choices: ``force`` (the plan's
    subplans changed), ``rerun_unknown`` or ``skip_unknown`` (subplans marked ``idempotent:
    false`` whose outcome is unknown)."""

    def __init__(
        self,
        run: RunInfo,
        *,
        force: bool,
        rerun_unknown: bool,
        skip_unknown: bool,
        scheduler: str | None = None,
    ) -> None:
        self.run = run
        #: ``--scheduler``: the run's cluster at a new address (None: the one recorded).
        self.scheduler = scheduler
        self.force = force
        self.rerun_unknown = rerun_unknown
        self.skip_unknown = skip_unknown
        #: The items the run's run-time steps read, as the store recorded them (``decide``).
        self.items: dict[str, RecordedItems] = {}

    def __repr__(self) -> str:
        return f"<ResumedRun {self.run.id}>"

    @property
    def run_id(self) -> str:
        return self.run.id

    def check_plan_free(self, store: RunStore) -> None:
        store.check_plan_free(self.run.plan_file, run_id=self.run.id)

    def decide(self, store: RunStore) -> Decision:
        """The plan file read again with the run's overrides, refused if its subplans changed
        (unless ``force``) or if an ``idempotent: false`` subplan's outcome is unknown (unless
        the operator chose); nothing is stopped or written yet."""
        run_id = self.run.id
        leftovers = find_leftovers(store, run_id)  # only listed here
        overrides = recorded_overrides(self.run)
        if self.scheduler is not None:
            overrides = dataclasses.replace(overrides, scheduler=self.scheduler)
        node = load(Path(self.run.plan_file), overrides)
        if self.scheduler is not None and not cluster_needs(node):
            refuse([f"--scheduler: run {run_id} runs nothing on a Dask cluster"])
        manifest = run_manifest(node, overrides)
        diff = store.plan_diff(run_id, manifest)
        # The steps that had started make their subplans of the items they read then; one the
        # plan gives another source changes its subplans: refused as added ones are.
        self.items = store.recorded_items(run_id)
        changed = changed_sources(node, self.items)
        problems = [refusal(diff, force=self.force)]
        if changed and not self.force:
            problems.append(describe_changed_sources(run_id, changed, force=False))
        if any(problems):
            refuse([problem for problem in problems if problem is not None])
        # Whatever was running when the run stopped may have done its work already.
        unknown = unknown_outcomes(store, run_id, node, leftovers, self.items)
        if unknown.not_idempotent and not (self.rerun_unknown or self.skip_unknown):
            refuse([unknown.refusal()], preface=unknown.listing)
        # One that still runs has not finished: stopped now, it would never finish.
        unfinished = unknown.skip_refusal() if self.skip_unknown else None
        if unfinished is not None:
            refuse([unfinished])
        # Recorded completed on the operator's word.
        assumed = unknown.assumed if self.skip_unknown else ()
        return Decision(
            node,
            manifest,
            run_dir=None if self.run.run_dir is None else Path(self.run.run_dir),
            skip=store.completed_subplans(run_id).union(assumed),
            assume_completed=assumed,
            notes=_notes(
                diff,
                describe_changed_sources(run_id, changed, force=True) if changed else None,
                unknown,
                skip=self.skip_unknown,
            ),
        )

    def before_start(self, store: RunStore, session: RunSession, decision: Decision) -> None:
        """Stop what the dead owner left (nothing may run twice at the same time), and say what
        the resume found; the run's steps that had started get the items they read then."""
        session.executor.items = self.items
        # On the clusters' workers first: what the dead driver's subplans left running there
        # (the workers find them by the run's id, as the leftovers here are found).
        session.backends.waiting = session.say
        remote = session.stop_remote(self.run.id)
        if remote:
            session.say(stopped_on_cluster(self.run.id, remote))
        # A call's function in a thread cannot be stopped: run again beside it, it would be
        # done twice at once. Waited for (above), then refused unless the operator chose.
        left = session.backends.calls_left
        if left:
            said = (
                f"run {self.run.id}: call subplans still running on the Dask cluster (a "
                f"function in a thread cannot be stopped): {', '.join(left)}"
            )
            if not self.force:
                refuse([f"{said}; resume once they end, or with --force to run them again"])
            session.say(f"{said}; resuming anyway (--force)")
        stopped = stop_leftovers(store, self.run)
        if stopped:
            session.say(describe_stopped(self.run.id, stopped))
        for note in decision.notes:
            session.say(note)

    def register(
        self, store: RunStore, session: RunSession, decision: Decision, *, concurrent: bool
    ) -> None:
        store.resume_run(
            self.run.id,
            decision.manifest,
            concurrent=concurrent,
            assume_completed=decision.assume_completed,
            reason=SKIP_UNKNOWN_REASON,
        )

    def made(self, session: RunSession) -> Sequence[Path]:
        return ()  # the run's folder is the one it had


def _notes(
    diff: PlanDiff, sources: str | None, unknown: UnknownOutcomes, *, skip: bool
) -> tuple[str, ...]:
    """What the resume found that the operator should read: a changed plan (``sources``: the
    steps given another source, forced), unknown outcomes."""
    notes = []
    if diff.hash_changed and not (diff.ids_match and sources):
        forced = "" if diff.ids_match else "; resuming anyway (--force)"
        notes.append(f"{diff}{forced}")
    if sources:
        notes.append(sources)
    if unknown.subplans:
        notes.append(unknown.describe(skip=skip))
    return tuple(notes)
