"""From plan files to a runnable tree: actions merged, nested plans loaded, ``for_each``
expanded, ids checked, and each plan's and step's automation profile resolved.

Every problem is collected (not just the first) and raised together as a ``ProblemsError``
before anything runs.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from subplans.plans.call_modules import CallModules
from subplans.plans.for_each import (
    GlobSource,
    ItemSource,
    ItemsProblem,
    LinesSource,
    named_values,
    read_items,
)
from subplans.plans.models import (
    ForEachGlob,
    ForEachLines,
    InlinePlan,
    PlanFile,
    ProfileFields,
    StepModel,
    SubplanTemplate,
)
from subplans.plans.placeholders import find_placeholders, substitute
from subplans.plans.profiles import Level, ProfileError, ResolvedProfile
from subplans.plans.run_settings import GlobalConfig, Overrides, load_global_config
from subplans.plans.shellquote import ShellTemplateError, shell_template
from subplans.plans.tree import PlanNode, StepNode, UnitNode
from subplans.plans.units import UnitBuilder, UnitModel
from subplans.plans.validation import validate
from subplans.plans.yamlfile import Loc, Located, Problem, ProblemsError, format_location, read_yaml

__all__ = [
    "MAX_DEPTH",
    "GlobalConfig",
    "Overrides",
    "PlanNode",
    "StepNode",
    "UnitNode",
    "load_global_config",
    "load_plan",
]

#: How deep plans may nest (the root plan is depth 0).
MAX_DEPTH = 8


def load_plan(
    path: Path | str,
    *,
    config: GlobalConfig | None = None,
    overrides: Overrides | None = None,
) -> PlanNode:
    """Load and validate the plan at ``path`` and everything it refers to.

    Raises:
        ProblemsError: every problem found, one line each, naming file and location.
    """
    config = config if config is not None else load_global_config()
    loader = _Loader(config, overrides or Overrides())
    with _collector_paused():
        root = loader.root(Path(path))
    if loader.problems or root is None:
        raise ProblemsError(loader.problems)
    return root


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cycle collector paused while a tree is built: a million-item plan is millions
    of objects that all live on, and the collector's full passes over the growing heap took
    about 40% of loading it. Unreachable cycles are collected when it runs again."""
    if not gc.isenabled():  # paused by the caller, who resumes it
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        _promote_young()
        gc.enable()


def _promote_young() -> None:
    """What was made while the collector was paused moved to its oldest generation, where two
    of its passes over every new object would have moved whatever lives on (a tree does); the
    first of them, right after loading 100,000 items, took as long as a tenth of loading them.
    Cycles left unreachable meanwhile wait for its next full pass. Not when the program froze
    objects of its own (``gc.freeze``): unfreezing would hand those back to the collector."""
    if gc.get_freeze_count() == 0:
        gc.freeze()
        gc.unfreeze()


@dataclass(frozen=True, slots=True)
class _Scope:
    """Where the loader stands: a file and a location in it, the id that ids below start with
    ('' in the root plan), how deep plans nest there, and the plan files that led there."""

    file: Path
    loc: Loc
    prefix: str
    depth: int
    #: Resolved paths, to find a plan that includes itself.
    chain: tuple[Path, ...]

    def at(self, *keys: str | int) -> _Scope:
        """The same place, ``keys`` further in."""
        return replace(self, loc=(*self.loc, *keys))

    def id_of(self, name: str) -> str:
        """The path id of what is named ``name`` here."""
        return f"{self.prefix}/{name}" if self.prefix else name


class _Loader:
    def __init__(self, config: GlobalConfig, overrides: Overrides) -> None:
        self.config = config
        self.overrides = overrides
        self.problems: list[Problem] = []
        #: Where each unit id was given (many ids of a for_each share their template's place).
        self.ids: dict[str, _Scope] = {}
        self.located: dict[Path, Located] = {}
        self.modules = CallModules()

    def root(self, path: Path) -> PlanNode | None:
        model = self.file(path, "a plan file")
        if model is None:
            return None
        return self.plan(model, _Scope(path, (), "", 0, (path.resolve(),)), root=True)

    def file(self, path: Path, what: str) -> PlanFile | None:
        try:
            located = read_yaml(path)
            if located.data is None:
                raise ProblemsError(
                    [Problem(path, "", "the file is empty; a plan needs name and steps")]
                )
            model = validate(PlanFile, located.data, located, what)
        except ProblemsError as error:
            self.problems.extend(error.problems)
            return None
        self.located[path] = located
        return model

    def problem(self, at: _Scope, message: str, *, at_key: bool = False) -> None:
        # Every file reaches here only after file() read it, so its positions can be found.
        self.problems.append(self.located[at.file].problem(at.loc, message, at_key=at_key))

    def plan(
        self, model: PlanFile | InlinePlan, at: _Scope, *, root: bool = False
    ) -> PlanNode | None:
        steps = model.steps
        plan_level = Level(
            "plan",
            at.file,
            format_location((*at.loc, "automation_profile")),
            model.automation_profile,
        )
        action_level = Level("action", None, "automation_profile", None)
        if isinstance(model, PlanFile) and model.action is not None:
            action_path = at.file.parent / model.action
            if action_path.resolve() in at.chain:
                self.problem(at.at("action"), _loop(at.chain, action_path), at_key=True)
                return None
            action = self.file(action_path, "an action file")
            if action is None:
                return None
            if action.action is not None:
                self.problem(
                    replace(at, file=action_path, loc=("action",)),
                    "an action cannot build on another action",
                    at_key=True,
                )
            action_level = Level(
                "action", action_path, "automation_profile", action.automation_profile
            )
            if steps is None:
                steps = action.steps
                at = replace(at, file=action_path, loc=())
        if not steps:
            self.problem(at.at("steps"), "required: a plan needs steps (or an action with steps)")
            return None
        plan_levels = [
            *(self.overrides.levels() if root else []),
            plan_level,
            action_level,
            self.config.level(),
        ]
        profile = self.resolve(plan_levels, at.file)
        if profile is None:
            return None
        names: set[str] = set()
        nodes = []
        for index, step in enumerate(steps):
            step_at = at.at("steps", index)
            if step.name in names:
                self.problem(step_at.at("name"), f"duplicate step name {step.name!r}")
                continue
            names.add(step.name)
            node = self.step(step, step_at, plan_levels)
            if node is not None:
                nodes.append(node)
        name = model.name or (at.prefix.rsplit("/", 1)[-1] if at.prefix else at.file.stem)
        return PlanNode(
            at.prefix,
            name,
            at.file,
            at.file.parent,
            model.description,
            profile,
            tuple(nodes),
            at.depth,
        )

    def resolve(self, levels: list[Level], file: Path) -> ResolvedProfile | None:
        try:
            return self.config.registry.resolve(levels)
        except ProfileError as error:
            self.problems.append(Problem(file, "", str(error)))
            return None

    def step(self, step: StepModel, at: _Scope, plan_levels: list[Level]) -> StepNode | None:
        direct = ProfileFields(
            max_parallel=step.max_parallel,
            failure_mode=step.failure_mode,
            idempotent=step.idempotent,
        )
        levels = [
            Level("step", at.file, format_location(at.loc), direct),
            Level(
                "step",
                at.file,
                format_location((*at.loc, "automation_profile")),
                step.automation_profile,
            ),
            *plan_levels,
        ]
        profile = self.resolve(levels, at.file)
        if profile is None:
            return None
        step_id = at.id_of(step.name)
        units: list[UnitNode | None] = []
        if step.subplans is not None:
            names: set[str] = set()
            for index, sub in enumerate(step.subplans):
                sub_at = at.at("subplans", index)
                if sub.name in names:
                    self.problem(sub_at.at("name"), f"duplicate subplan name {sub.name!r}")
                    continue
                names.add(sub.name)
                builder = UnitBuilder(sub, folder=at.file.parent, profile=profile)
                units.append(self.unit(builder, sub.name, f"{step_id}/{sub.name}", sub_at))
        elif step.for_each is not None:
            assert step.subplan is not None
            expanded = self.for_each(step.for_each, step.subplan, at, step_id, profile)
            if expanded is None:
                return None
            units.extend(expanded)
        else:
            builder = UnitBuilder(step, folder=at.file.parent, profile=profile)
            units.append(self.unit(builder, step.name, step_id, at))
        if any(u is None for u in units):
            return None
        return StepNode(
            step_id,
            step.name,
            step.always,
            step.subplans is None and step.for_each is None,
            profile,
            tuple(u for u in units if u is not None),
        )

    def for_each(
        self,
        spec: list[str] | ForEachGlob | ForEachLines,
        template: SubplanTemplate,
        at: _Scope,
        step_id: str,
        profile: ResolvedProfile,
    ) -> list[UnitNode | None] | None:
        """The units of a ``for_each`` step, one per item; None if its template is refused."""
        items = self.items(_source(spec), at.at("for_each"))
        template_at = at.at("subplan")
        if isinstance(template.run, str):
            try:  # placeholders of a run string must stand where they can be quoted
                shell_template(template.run)
            except ShellTemplateError as error:
                for message in error.problems:
                    self.problem(template_at.at("run"), message)
                return None
        name = template.name if "name" in template.model_fields_set else None
        # Worked out once for every item: a million items cost about a million nodes.
        builder = UnitBuilder(template, folder=at.file.parent, profile=profile)
        units: list[UnitNode | None] = []
        for named in named_values(items or [], name):
            if isinstance(named, str):
                self.problem(template_at.at("name"), named)
                continue
            unit_name, values = named
            unit_id = f"{step_id}/{unit_name}"
            units.append(self.unit(builder, unit_name, unit_id, template_at, values))
        return units

    def items(self, source: ItemSource, at: _Scope) -> list[str] | None:
        found = read_items(source, at.file.parent)
        if not isinstance(found, ItemsProblem):
            return found
        if found.file is not None:  # the fault is in the file the items come from
            self.problems.append(Problem(found.file, "", found.message, found.line, found.column))
        else:
            self.problem(at.at(found.key), found.message)
        return None

    def unit(
        self,
        builder: UnitBuilder,
        name: str,
        unit_id: str,
        at: _Scope,
        values: Mapping[str, str] | None = None,
    ) -> UnitNode | None:
        if unit_id in self.ids:  # pragma: no cover - sibling names are unique and hold no '/'
            first = self.ids[unit_id]
            self.problem(
                at,
                f"duplicate subplan id {unit_id!r} "
                f"(also at {first.file}: {format_location(first.loc)})",
            )
            return None
        self.ids[unit_id] = at
        unit, folder = builder.unit, builder.folder
        values = values or {}
        if not values:
            written = find_placeholders([unit.run, unit.cwd, unit.env, unit.with_, unit.plan])
            if written:
                shown = ", ".join(sorted(set(written)))
                self.problem(at, f"{shown} is only replaced under for_each")
                return None
        nested: PlanNode | None = None
        if unit.call is not None:
            problem = self.modules.check(unit.call.split(":")[0], folder)
            if problem is not None:
                self.problem(at.at("call"), problem)
                return None
        elif unit.run is None:  # a nested plan
            if unit.cwd is not None:
                self.problem(at.at("cwd"), "has no effect on a nested plan; set it on its subplans")
                return None
            nested = self.nested(unit, at, unit_id, values)
            if nested is None:
                return None
        return builder.build(unit_id=unit_id, name=name, values=values, plan=nested)

    def nested(
        self, unit: UnitModel, at: _Scope, unit_id: str, values: Mapping[str, str]
    ) -> PlanNode | None:
        assert unit.plan is not None
        if at.depth + 1 > MAX_DEPTH:
            self.problem(at.at("plan"), f"plans nest deeper than {MAX_DEPTH} levels")
            return None
        if not isinstance(unit.plan, str):
            inline = replace(at.at("plan"), prefix=unit_id, depth=at.depth + 1)
            return self.plan(unit.plan, inline)
        path = at.file.parent / substitute(unit.plan, values)
        if path.resolve() in at.chain:
            self.problem(at.at("plan"), _loop(at.chain, path))
            return None
        model = self.file(path, "a plan file")
        if model is None:
            return None
        return self.plan(
            model, _Scope(path, (), unit_id, at.depth + 1, (*at.chain, path.resolve()))
        )


def _source(spec: list[str] | ForEachGlob | ForEachLines) -> ItemSource:
    """The plain source of what a ``for_each`` is written as."""
    if isinstance(spec, ForEachGlob):
        return GlobSource(spec.glob)
    if isinstance(spec, ForEachLines):
        return LinesSource(spec.lines)
    return tuple(spec)


def _loop(chain: tuple[Path, ...], again: Path) -> str:
    names = " -> ".join(p.name for p in (*chain, again))
    return f"the plan includes itself: {names}"
