"""``subplans run PLAN --dry-run``: what a run would do, as plain data, and that data as text
or as one JSON document.

Nothing runs and nothing is written: the plan is loaded as a run loads it; a source read when
its step starts (glob, lines file) is read now and marked so, a ``{command: ...}`` source is
not run and standard input is not read (``{lines: -}``): their steps show no subplans.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterator
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
    from subplans.plans.tree import PlanNode, ResolvedProfile, StepItems, StepNode, UnitNode

__all__ = ["plan_preview", "render_json", "render_text"]

#: The fields a dry run shows per plan and step, with where each comes from.
_SETTINGS = ("max_parallel", "failure_mode")
#: Shown too where something sets them.
_SCHEDULING = ("halt", "max_per_second", "pools")


def plan_preview(node: PlanNode) -> dict[str, Any]:
    """What running ``node`` would do, JSON-serialisable: its settings and every step's
    subplans, nested plans expanded (the shape is in the specification, "Dry run")."""
    return {"dry_run": True, "plan": _plan(node)}


def render_json(document: dict[str, Any]) -> str:
    """The dry run as one JSON document."""
    return json.dumps(document, indent=2, ensure_ascii=False, default=str)  # YAML dates


def render_text(document: dict[str, Any]) -> str:
    """The dry run as text: per plan and step its settings, then one line per subplan."""
    plan = document["plan"]
    head = f"dry run: plan {plan['name']!r} ({plan['file']}); nothing runs, nothing is written"
    return "\n".join([head, *_plan_lines(plan, "")])


# --- the data ------------------------------------------------------------------------------


def _settings(profile: ResolvedProfile) -> dict[str, Any]:
    values = profile.to_dict()["values"]
    names = [
        *_SETTINGS,
        *(name for name in _SCHEDULING if profile.sources[name].level != "default"),
    ]
    return {
        name: {
            "value": values[name],
            "source": profile.sources[name].to_dict() | {"text": str(profile.sources[name])},
        }
        for name in names
    }


def _plan(node: PlanNode) -> dict[str, Any]:
    return {
        "id": node.id,
        "name": node.name,
        "file": str(node.file),
        **_settings(node.profile),
        "steps": [_step(step) for step in node.steps],
    }


def _step(step: StepNode) -> dict[str, Any]:
    units = step.units
    items = None
    if step.items is not None:
        items, units = _items(step.items)
    return {
        "id": step.id,
        "name": step.name,
        "always": step.always,
        **_settings(step.profile),
        "items": items,
        "subplans": [_unit(unit) for unit in units],
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


def _unit(unit: UnitNode) -> dict[str, Any]:
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
        shown["plan"] = _plan(unit.plan)
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
    values = {name: _setting_text(shown[name]["value"]) for name in names}
    width = max(map(len, values.values()))
    label = max(12, *map(len, names))
    for name in names:
        yield f"{indent}{name:<{label}}  {values[name]:<{width}}  {shown[name]['source']['text']}"


def _setting_text(value: object) -> str:
    if isinstance(value, dict):  # pools
        return ", ".join(f"{name}={_pool_text(pool)}" for name, pool in value.items())
    return str(value)


def _pool_text(pool: dict[str, Any]) -> str:
    rate = pool["max_per_second"]
    return str(pool["size"]) if rate is None else f"{pool['size']} at {rate:g}/s"


def _items_text(items: dict[str, Any]) -> str:
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
