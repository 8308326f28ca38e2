"""Resuming a run: what ``subplans run`` records so that ``subplans resume`` can start the plan
the same way, and what must happen before anything of a run runs again.

``resume`` goes in this order (section 14 of the specification): take the run's lock (refused
while another process drives it), stop every process group a dead owner left running
(``stop_leftovers``), reload the plan file with the overrides the run was started with
(``recorded_overrides``), compare its subplan ids with the run's (``refusal``), then
``RunStore.resume_run`` and run the plan again, skipping each subplan that completed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from subplans.config import FailureMode
from subplans.errors import RunBusyError
from subplans.loader import Overrides
from subplans.store import (
    PlanManifest,
    RunInfo,
    RunStore,
    StoppedGroup,
    stop_leftover_groups,
)

if TYPE_CHECKING:
    from subplans.loader import PlanNode
    from subplans.store import PlanDiff

__all__ = [
    "describe_stopped",
    "recorded_overrides",
    "refusal",
    "run_manifest",
    "stop_leftovers",
    "try_stop_leftovers",
]

#: Where a run's profile record keeps the command-line overrides it was started with.
OVERRIDES = "overrides"
#: Grace for leftover groups when the run recorded no ``cancel_grace`` (a library run).
_DEFAULT_GRACE = 5.0


def run_manifest(plan: PlanNode, overrides: Overrides) -> PlanManifest:
    """What a run records about ``plan``: its absolute file (resume may start elsewhere) and,
    next to the resolved profile, the command-line ``overrides`` (resume applies them again)."""
    manifest = PlanManifest.from_plan(plan)
    given = {
        name: value.value if isinstance(value, FailureMode) else value
        for name, value in (
            ("max_parallel", overrides.max_parallel),
            ("failure_mode", overrides.failure_mode),
            ("profile", overrides.profile),
        )
        if value is not None
    }
    return dataclasses.replace(
        manifest,
        file=str(Path(plan.file).absolute()),
        profile={**manifest.profile, OVERRIDES: given},
    )


def recorded_overrides(run: RunInfo) -> Overrides:
    """The command-line overrides ``run`` was started with (none for a run started in Python)."""
    given: Mapping[str, Any] = run.profile.get(OVERRIDES) or {}
    mode = given.get("failure_mode")
    return Overrides(
        max_parallel=given.get("max_parallel"),
        failure_mode=None if mode is None else FailureMode(mode),
        profile=given.get("profile"),
    )


def stop_leftovers(store: RunStore, run: RunInfo) -> list[StoppedGroup]:
    """Stop the process groups ``run``'s dead owner left running, with the run's
    ``cancel_grace``; call it holding the run's lock.

    Raises:
        RunBusyError: the run's owner is alive, or runs on another host.
    """
    values: Mapping[str, Any] = run.profile.get("values") or {}
    grace = values.get("cancel_grace")
    return stop_leftover_groups(
        store, run.id, grace=_DEFAULT_GRACE if grace is None else float(grace)
    )


def try_stop_leftovers(store: RunStore, run: RunInfo) -> list[StoppedGroup] | None:
    """``stop_leftovers`` for an interrupted run, if its lock is free now; None if another
    process holds it (it is resuming the run: the leftovers are its business).

    Raises:
        StoreError: the lock file cannot be created.
    """
    lock = store.lock(run.id)
    try:
        lock.acquire()
    except RunBusyError:
        return None
    try:
        return stop_leftovers(store, run)
    finally:
        lock.release()


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
