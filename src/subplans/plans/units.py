"""One unit of a plan file (a step's own work, a subplan, a ``for_each`` subplan) made a
``UnitNode``: placeholders filled in, ``run`` values quoted for their place, profile defaults set.

The loader checks the unit first (its id, its ``call`` module, its nested plan); what is left
here cannot fail.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from subplans.plans.models import StepModel, SubplanModel, SubplanTemplate
from subplans.plans.placeholders import substitute, substitute_all
from subplans.plans.shellquote import shell_template
from subplans.plans.tree import PlanNode, ResolvedProfile, UnitKind, UnitNode, inherit

__all__ = ["UnitModel", "build_unit"]

#: What a unit is written as: a step of one unit of work, a subplan, or a for_each's template.
UnitModel = SubplanModel | SubplanTemplate | StepModel

_T = TypeVar("_T")


def build_unit(
    unit: UnitModel,
    *,
    unit_id: str,
    name: str,
    folder: Path,
    profile: ResolvedProfile,
    values: Mapping[str, str],
    plan: PlanNode | None = None,
) -> UnitNode:
    """``unit`` as a node; ``values`` fill its placeholders, ``plan`` is its loaded nested plan."""
    env = {k: substitute(v, values) for k, v in (unit.env or {}).items()}
    cwd = folder / substitute(unit.cwd, values) if unit.cwd else folder
    kind: UnitKind
    command: str | tuple[str, ...] | None = None
    kwargs: dict[str, Any] = {}
    if unit.run is not None:
        kind = "run"
        if isinstance(unit.run, str):
            # The loader checked the template: each value goes in quoted for its place.
            command = shell_template(unit.run).render(values) if values else unit.run
        else:
            command = tuple(substitute(arg, values) for arg in unit.run)
    elif unit.call is not None:
        kind = "call"
        kwargs = substitute_all(unit.with_ or {}, values)
    else:
        kind = "plan"
        assert plan is not None
        if env or values.get("item") is not None:
            # What the plan subplan was given reaches the work inside: "one nested plan per
            # module" gets its module through env and SUBPLANS_ITEM.
            plan = inherit(plan, env, values.get("item"))
    return UnitNode(
        id=unit_id,
        name=name,
        kind=kind,
        folder=folder,
        cwd=cwd,
        command=command,
        call=unit.call,
        kwargs=kwargs,
        plan=plan,
        # A profile's defaults are for the work itself; a nested plan's own subplans get
        # them, so retrying or timing the whole nested plan happens only when asked for.
        timeout=_own_or_default(unit.timeout, None if kind == "plan" else profile.timeout),
        retries=_own_or_default(unit.retries, 0 if kind == "plan" else profile.retries),
        env=env,
        item=values.get("item"),
        idempotent=_own_or_default(unit.idempotent, profile.idempotent),
    )


def _own_or_default(own: _T | None, default: _T) -> _T:
    return own if own is not None else default
