"""What a run records about its plan: the file, a hash of the resolved tree, the profile with
provenance, and every step and subplan id (so that resume can tell whether the plan changed)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from subplans.engine.errors import SubplanError

if TYPE_CHECKING:
    from subplans.plans.run_settings import Overrides
    from subplans.plans.tree import PlanNode, StepItems, StepNode, UnitNode

__all__ = ["OVERRIDES", "PlanManifest", "plan_hash", "run_manifest"]

#: Where a run's profile record keeps the command-line overrides it was started with.
OVERRIDES = "overrides"


def plan_hash(plan: PlanNode) -> str:
    """The sha256 (hex) of the resolved plan tree.

    It covers what decides the work: plan, step and unit ids and names, kinds, commands, call
    targets and their keyword arguments, environment, working folders (relative to the root
    plan's folder), ``always`` flags and the nested structure; for a run-time ``for_each``
    step, its source and the subplan its template makes of a sample item. Profiles, timeouts
    and retries are execution policy, recorded separately, and leave it unchanged; so does
    moving the plan's folder.
    """
    text = json.dumps(
        _plan(plan, plan.folder), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    return hashlib.sha256(text.encode()).hexdigest()


def _plan(plan: PlanNode, root: Path) -> dict[str, Any]:
    return {
        "id": plan.id,
        "name": plan.name,
        "steps": [_step(step, root) for step in plan.steps],
    }


def _step(step: StepNode, root: Path) -> dict[str, Any]:
    made = {
        "id": step.id,
        "name": step.name,
        "always": step.always,
        "units": [_unit(unit, root) for unit in step.units],
    }
    if step.items is not None:  # its units are made when it starts: where they come from
        made["items"] = str(step.items)
        made["template"] = _template(step.items, root)
    return made


#: The item a run-time step's template is hashed with: its placeholders stay as they are written.
_SAMPLE = "{item}"


def _template(items: StepItems, root: Path) -> list[dict[str, Any]] | None:
    """What the step's template makes of a sample item (its command, environment, nested
    plan...), so that editing it changes the hash as editing a static step's subplans does;
    None for a template the sample makes nothing of (an item that names the nested plan)."""
    try:
        return [_unit(unit, root) for unit in items.units((_SAMPLE,))]
    except SubplanError:
        return None


def _unit(unit: UnitNode, root: Path) -> dict[str, Any]:
    return {
        "id": unit.id,
        "kind": unit.kind,
        "command": list(unit.command) if isinstance(unit.command, tuple) else unit.command,
        "call": unit.call,
        "kwargs": _canonical(unit.kwargs),
        "env": dict(unit.env),
        "cwd": _relative(unit.cwd, root),
        "item": unit.item,
        "plan": None if unit.plan is None else _plan(unit.plan, root),
    }


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def _canonical(value: Any) -> Any:
    """A JSON-able, deterministic form of YAML values (keys as strings; dates and sets as text)."""
    if isinstance(value, Mapping):
        return {str(key): _canonical(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_canonical(item) for item in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return repr(value)


@dataclass(frozen=True, slots=True)
class PlanManifest:
    """A plan as a run records it; build one with ``from_plan`` (or by hand for a bare dispatch)."""

    file: str
    name: str = ""
    hash: str = ""
    #: ``ResolvedProfile.to_dict()`` of the root plan: values and where each came from.
    profile: Mapping[str, Any] = field(default_factory=dict)
    #: Every step id, depth first in plan order (nested plans' steps after their subplan).
    steps: tuple[str, ...] = ()
    #: Every (subplan id, step id), depth first in plan order.
    subplans: tuple[tuple[str, str], ...] = ()
    #: The steps whose subplans are known only when they start (a ``for_each`` over a glob, a
    #: lines file or a command): what they hold is recorded as it runs.
    later: tuple[str, ...] = ()
    #: The run's pools (``PlanNode.pools``): name, size and ``max_per_second``.
    pools: tuple[tuple[str, int, float | None], ...] = ()
    #: The pool units subplans take (``UnitNode.uses``): subject, kind, below, pool, units;
    #: the subject is a subplan (kind ``subplan``, below '') or a run-time step whose template
    #: takes them (kind ``template``): each item's unit, or the subplan at the path ``below``
    #: under it (of the nested plan it runs).
    uses: tuple[tuple[str, str, str, str, int], ...] = ()

    @classmethod
    def from_plan(cls, plan: PlanNode) -> PlanManifest:
        """The manifest of a loaded plan tree."""
        steps: list[str] = []
        subplans: list[tuple[str, str]] = []
        later: list[str] = []
        uses: list[tuple[str, str, str, str, int]] = []
        _collect(plan, steps, subplans, later, uses)
        return cls(
            file=str(plan.file),
            name=plan.name,
            hash=plan_hash(plan),
            profile=plan.profile.to_dict(),
            steps=tuple(steps),
            subplans=tuple(subplans),
            later=tuple(later),
            pools=tuple((name, p.size, p.max_per_second) for name, p in plan.pools.items()),
            uses=tuple(uses),
        )

    @property
    def subplan_ids(self) -> tuple[str, ...]:
        """Every subplan id, in plan order."""
        return tuple(subplan_id for subplan_id, _ in self.subplans)

    def made_later(self, subplan_id: str) -> bool:
        """Whether ``subplan_id`` is of a step whose subplans are made when it starts (``later``),
        or inside one of them: no plan read before it starts knows it."""
        return bool(self.later) and subplan_id.startswith(tuple(f"{s}/" for s in self.later))


def _collect(
    plan: PlanNode,
    steps: list[str],
    subplans: list[tuple[str, str]],
    later: list[str],
    uses: list[tuple[str, str, str, str, int]],
) -> None:
    for step in plan.steps:
        steps.append(step.id)
        if step.items is not None:
            later.append(step.id)
            if plan.pools:
                uses.extend((step.id, "template", *used) for used in _template_uses(step.items))
        for unit in step.units:
            subplans.append((unit.id, step.id))
            if unit.uses:
                uses.extend((unit.id, "subplan", "", pool, n) for pool, n in unit.uses.items())
            if unit.plan is not None:
                _collect(unit.plan, steps, subplans, later, uses)


def _template_uses(items: StepItems) -> list[tuple[str, str, int]]:
    """The pool units each subplan of a run-time step takes, as its template's sample says:
    (path below the item's unit, pool, units)."""
    try:
        sample = items.units((_SAMPLE,))
    except SubplanError:
        return []
    found: list[tuple[str, str, int]] = []
    for unit in sample:
        below = [("", unit.uses)]
        if unit.plan is not None:
            start = len(unit.id) + 1
            below += [(inner.id[start:], inner.uses) for inner in unit.plan.walk_units()]
        found += [(path, pool, n) for path, used in below for pool, n in used.items()]
    return found


def run_manifest(plan: PlanNode, overrides: Overrides) -> PlanManifest:
    """What a run records about ``plan``: its absolute file (resume may start elsewhere) and,
    next to the resolved profile, the command-line ``overrides`` (resume applies them again).
    Here, not in ``resume``, so that a fresh run loads nothing of resuming (#10)."""
    from subplans.engine.config import FailureMode  # loaded by any run already

    manifest = PlanManifest.from_plan(plan)
    given = {
        name: value.value if isinstance(value, FailureMode) else value
        for name, value in (
            ("max_parallel", overrides.max_parallel),
            ("failure_mode", overrides.failure_mode),
            ("profile", overrides.profile),
            ("halt", None if overrides.halt is None else str(overrides.halt)),
            ("backend", overrides.backend),
            # The run's cluster, as --scheduler or $SUBPLANS_SCHEDULER named it: resume goes
            # back to it (None: one started on 127.0.0.1, started again).
            ("scheduler", overrides.scheduler),
        )
        if value is not None
    }
    return replace(
        manifest,
        file=str(Path(plan.file).absolute()),
        profile={**manifest.profile, OVERRIDES: given},
    )
