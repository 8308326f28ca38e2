"""``subplans run PLAN --dry-run``: what a run would do, as plain data, and that data as text
or as one JSON document.

Nothing runs and nothing is written: the plan is loaded as a run loads it; a source read when
its step starts (glob, lines file) is read now and marked so, a ``{command: ...}`` source is
not run and standard input is not read (``{lines: -}``): their steps show no subplans.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from subplans.plans.for_each import (
    STDIN,
    CommandSource,
    GlobSource,
    ItemsProblem,
    LinesSource,
    preview,
)

if TYPE_CHECKING:
    from subplans.plans.tree import (
        PlanNode,
        PoolSpec,
        ResolvedProfile,
        StepItems,
        StepNode,
        UnitNode,
    )

__all__ = ["plan_preview", "render_json", "render_text"]

#: The fields a dry run shows per plan and step, with where each comes from.
_SETTINGS = ("max_parallel", "failure_mode")
#: Shown too where something sets them (the scheduling controls, where units run).
_SCHEDULING = ("halt", "max_per_second", "pools", "backend")


@dataclass(frozen=True, slots=True)
class _RunPools:
    """The run's pools as its executor makes them (``PlanNode.pools``: of a name, the first
    plan to declare it as the plans load, outer plans first, wins), and which plan that was."""

    pools: Mapping[str, PoolSpec]
    declared_by: Mapping[str, PlanNode]

    @classmethod
    def of(cls, root: PlanNode) -> _RunPools:
        # A copy first: reading a run-time step's items may load more plans into the original.
        pools = dict(root.pools)
        declared_by: dict[str, PlanNode] = {}
        for plan in _plans(root):
            for name in plan.profile.pools:
                declared_by.setdefault(name, plan)
        for name in pools:  # none left: the loader read these plans the same way
            declared_by.setdefault(name, root)
        return cls(pools, declared_by)


def _plans(node: PlanNode) -> Iterator[PlanNode]:
    """``node`` and the plans nested in it, in the order the loader reads them (a run-time
    step's: as its template makes them of a sample item, as validating it did)."""
    from subplans.engine.errors import SubplanError

    yield node
    for step in node.steps:
        units = step.units
        if step.items is not None:
            try:
                units = step.items.units(("{item}",))
            except SubplanError:  # its plan is named by the item: read when the step starts
                units = ()
        for unit in units:
            if unit.plan is not None:
                yield from _plans(unit.plan)


def plan_preview(node: PlanNode) -> dict[str, Any]:
    """What running ``node`` would do, JSON-serialisable: its settings and every step's
    subplans, nested plans expanded (the shape is in the specification, "Dry run")."""
    run = _RunPools.of(node)
    shown: dict[str, Any] = {"dry_run": True, "plan": _plan(node, run)}
    return shown | {"pools": {name: _run_pool(name, run) for name in run.pools}}


def _run_pool(name: str, run: _RunPools) -> dict[str, Any]:
    declared = run.declared_by[name]
    by = {"plan": declared.id, "file": str(declared.file)}
    return run.pools[name].to_dict() | {"declared_by": by}


def render_json(document: dict[str, Any]) -> str:
    """The dry run as one JSON document."""
    return json.dumps(document, indent=2, ensure_ascii=False, default=str)  # YAML dates


def render_text(document: dict[str, Any]) -> str:
    """The dry run as text: per plan and step its settings, then one line per subplan."""
    plan = document["plan"]
    head = f"dry run: plan {plan['name']!r} ({plan['file']}); nothing runs, nothing is written"
    pools = document.get("pools")
    if pools:  # shared by the whole run, whichever plan declares them
        head += "\npools of the run (every step and nested plan shares them): " + ", ".join(
            f"{name}={_pool_text(pool)} ({_declared_text(pool['declared_by'])})"
            for name, pool in pools.items()
        )
    return "\n".join([head, *_plan_lines(plan, "")])


# --- the data ------------------------------------------------------------------------------


def _settings(profile: ResolvedProfile, run: _RunPools) -> dict[str, Any]:
    values = profile.to_dict()["values"]
    names = [
        *_SETTINGS,
        *(name for name in _SCHEDULING if profile.sources[name].level != "default"),
    ]
    shown = {
        name: {
            "value": values[name],
            "source": profile.sources[name].to_dict() | {"text": str(profile.sources[name])},
        }
        for name in names
    }
    if profile.halt is not None:  # the engine follows the halt policy, not failure_mode
        shown["failure_mode"]["replaced_by"] = "halt"
    elif "halt" in shown:  # a failure_mode set closer replaced a halt
        shown["halt"]["text"] = "none"
    if "pools" in shown:
        shown["pools"] |= _pools_in_effect(profile.pools, run)
    if "backend" in shown:  # "dask tcp://HOST:8786", "dask (local cluster)"
        shown["backend"]["text"] = str(profile.backend)
    return shown


def _pools_in_effect(declared: Mapping[str, PoolSpec], run: _RunPools) -> dict[str, Any]:
    """A plan's pools as they apply: of each name it declares, the run's pool (``value``); where
    that is not its own, ``declared`` (its own) and ``declared_by`` (the plan whose pool it is;
    null: none of the run's, as with a plan read only when its step starts)."""
    value = {name: (run.pools.get(name) or pool).to_dict() for name, pool in declared.items()}
    other = {name for name, pool in declared.items() if run.pools.get(name) != pool}
    if not other:
        return {"value": value}
    return {
        "value": value,
        "declared": {name: declared[name].to_dict() for name in sorted(other)},
        "declared_by": {
            name: _run_pool(name, run)["declared_by"] if name in run.pools else None
            for name in sorted(other)
        },
    }


def _plan(node: PlanNode, run: _RunPools) -> dict[str, Any]:
    return {
        "id": node.id,
        "name": node.name,
        "file": str(node.file),
        **_settings(node.profile, run),
        "steps": [_step(step, run) for step in node.steps],
    }


def _step(step: StepNode, run: _RunPools) -> dict[str, Any]:
    units = step.units
    items = None
    if step.items is not None:
        items, units = _items(step.items)
    return {
        "id": step.id,
        "name": step.name,
        "always": step.always,
        **_settings(step.profile, run),
        "items": items,
        "subplans": [_unit(unit, run) for unit in units],
    }


def _items(items: StepItems) -> tuple[dict[str, Any], tuple[UnitNode, ...]]:
    """A source read when its step starts, as it stands now, and the units it gives now."""
    from subplans.plans.for_each import read_items
    from subplans.plans.yamlfile import ProblemsError

    source = items.source
    kind = "glob" if isinstance(source, GlobSource) else "lines"
    if isinstance(source, CommandSource):
        kind = "command"
    shown: dict[str, Any] = {"kind": kind, "source": str(items), "runtime": True}
    shown |= {"read_now": False, "count": None, "note": None}
    if items.uses:  # as a unit's: only when it takes some
        shown["uses"] = dict(items.uses)
    if isinstance(source, CommandSource):
        shown["note"] = f"would run {source.command!r} when the step starts"
        return shown, ()
    if isinstance(source, LinesSource) and source.file == STDIN:
        shown["note"] = "read from standard input when the step starts"
        return shown, ()
    found = read_items(source, items.folder)
    if isinstance(found, ItemsProblem):
        shown["note"] = preview(source, items.folder)  # its words for a file not there yet
        return shown, ()
    shown |= {"read_now": True, "count": len(found)}
    try:
        units = items.units(found)
    except ProblemsError as error:  # an item's name, or the nested plan it names
        shown["note"] = "; ".join(map(str, error.problems))
        return shown, ()
    return shown, units


def _unit(unit: UnitNode, run: _RunPools) -> dict[str, Any]:
    shown: dict[str, Any] = {"id": unit.id, "kind": unit.kind}
    if unit.kind == "run":
        if isinstance(unit.command, str):
            shown["shell"] = unit.command
        else:
            assert unit.command is not None
            shown["argv"] = list(unit.command)
    elif unit.kind == "call":
        shown |= {"call": unit.call, "with": dict(unit.kwargs)}
    else:
        assert unit.plan is not None
        shown["plan"] = _plan(unit.plan, run)
    cwd = None if unit.cwd == unit.folder else str(unit.cwd)
    shown |= {"cwd": cwd, "env": dict(unit.env), "item": unit.item}
    shown |= {"timeout": unit.timeout, "retries": unit.retries}
    return shown | ({"uses": dict(unit.uses)} if unit.uses else {})


# --- the text ------------------------------------------------------------------------------


def _plan_lines(plan: dict[str, Any], indent: str) -> Iterator[str]:
    yield from _setting_lines(plan, indent + "  ")
    for step in plan["steps"]:
        always = " (always runs)" if step["always"] else ""
        yield f"{indent}step {step['id']}{always}"
        yield from _setting_lines(step, indent + "  ")
        items = step["items"]
        if items is not None:
            yield f"{indent}  {'for_each':<12}  {_items_text(items)}"
        subplans = step["subplans"]
        width = max((len(unit["id"]) for unit in subplans), default=0)
        for unit in subplans:
            yield f"{indent}  {unit['id']:<{width}}  {_unit_text(unit)}"
            if unit["kind"] == "plan":
                yield from _plan_lines(unit["plan"], indent + "    ")


def _setting_lines(shown: dict[str, Any], indent: str) -> Iterator[str]:
    names = [*_SETTINGS, *(name for name in _SCHEDULING if name in shown)]
    values = {name: _setting_text(shown[name]) for name in names}
    width = max(map(len, values.values()))
    label = max(12, *map(len, names))
    for name in names:
        source = shown[name]["source"]["text"]
        if "replaced_by" in shown[name]:
            source += f", replaced by {shown[name]['replaced_by']}"
        yield f"{indent}{name:<{label}}  {values[name]:<{width}}  {source}"


def _setting_text(setting: dict[str, Any]) -> str:
    value = setting["value"]
    if "text" in setting:
        return str(setting["text"])
    if not isinstance(value, dict):
        return str(value)
    # Pools: as they apply; one the run takes from another plan says so.
    declared, by = setting.get("declared", {}), setting.get("declared_by", {})
    texts = []
    for name, pool in value.items():
        text = f"{name}={_pool_text(pool)}"
        if name in declared:
            own = _pool_text(declared[name])
            text += (
                f" (not {own}: {_declared_text(by[name])}'s)"
                if by[name] is not None
                else " (not a pool of the run: its plan is read when its step starts)"
            )
        texts.append(text)
    return ", ".join(texts)


def _declared_text(by: dict[str, str]) -> str:
    """Where a pool of the run is declared: ``plan.yaml``, or ``plan 'ID' (FILE)``."""
    return by["file"] if by["plan"] == "" else f"plan {by['plan']!r} ({by['file']})"


def _pool_text(pool: dict[str, Any]) -> str:
    rate = pool["max_per_second"]
    return str(pool["size"]) if rate is None else f"{pool['size']} at {rate:g}/s"


def _items_text(items: dict[str, Any]) -> str:
    uses = items.get("uses")
    if uses:  # before its subplans are known: what each will take
        each = ", ".join(f"{name}={units}" for name, units in uses.items())
        return f"{_source_text(items)}; each subplan uses {each}"
    return _source_text(items)


def _source_text(items: dict[str, Any]) -> str:
    if items["kind"] == "command":
        return f"{items['note']}; its subplans are known then"
    if not items["read_now"]:
        return f"{items['source']}: {items['note']}"
    count = items["count"]
    said = f"{items['source']}: {count} item{'' if count == 1 else 's'} now"
    if items["note"] is not None:
        return f"{said}, but {items['note']}"
    return f"{said} (read again when the step starts)"


def _unit_text(unit: dict[str, Any]) -> str:
    if unit["kind"] == "plan":
        plan = unit["plan"]
        text = f"plan: {plan['name']!r} ({plan['file']})"
    elif unit["kind"] == "call":
        args = ", ".join(f"{key}={value!r}" for key, value in unit["with"].items())
        text = f"call: {unit['call']}({args})"
    elif "shell" in unit:
        text = f"shell: {unit['shell']}"
    else:
        text = f"argv: {shlex.join(unit['argv'])}"
    if unit["cwd"] is not None:
        text += f"  (in {unit['cwd']})"
    if "uses" in unit:
        text += "  (uses " + ", ".join(f"{k}={n}" for k, n in unit["uses"].items()) + ")"
    return text
