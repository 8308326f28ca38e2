"""From plan files to a runnable tree: actions merged, nested plans loaded, ``for_each``
expanded, ids checked, and each plan's and step's automation profile resolved.

Every problem is collected (not just the first) and raised together as a ``ProblemsError``
before anything runs. A ``for_each`` over a source read when its step starts (a glob, a lines
file, a command) is checked here as far as it can be without its items; its units are made
when the step starts, by the same rules (``StepItems.expand``, an ``_Expansion``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from subplans.plans.call_modules import CallModules
from subplans.plans.load_scope import Scope, collector_paused, include_loop
from subplans.plans.nesting import MAX_DEPTH, NestedPlans
from subplans.plans.placeholders import find_placeholders
from subplans.plans.plain_models import PlainProfileFields
from subplans.plans.plain_plans import plain_plan
from subplans.plans.pool_uses import PoolUses
from subplans.plans.profiles import Level, ProfileError, ResolvedProfile, handed_down, step_fields
from subplans.plans.run_settings import GlobalConfig, Overrides, load_global_config
from subplans.plans.step_defaults import step_defaults_problems
from subplans.plans.tree import PlanNode, PoolSpec, StepItems, StepNode, UnitNode
from subplans.plans.units import UnitBuilder
from subplans.plans.yamlfile import Located, Problem, ProblemsError, format_location, read_yaml

if TYPE_CHECKING:
    from subplans.plans.for_each import ItemSource

    # Pydantic is loaded only for a plan that plain_plans leaves to it.
    from subplans.plans.models import InlinePlan, PlanFile, StepModel

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
    with collector_paused():
        root = loader.root(Path(path))
    loader.check_uses()
    if loader.problems or root is None:
        raise ProblemsError(loader.problems)
    return root


class _Loader(NestedPlans, PoolUses):
    def __init__(self, config: GlobalConfig, overrides: Overrides) -> None:
        self.config = config
        self.overrides = overrides
        self.problems: list[Problem] = []
        #: Where each unit id was given (many ids of a for_each share their template's place).
        self.ids: dict[str, Scope] = {}
        self.located: dict[Path, Located] = {}
        self.modules = CallModules()
        # The run's pools, and the units' uses to check against them (``PoolUses``).
        self.pools: dict[str, PoolSpec] = {}
        self.used: list[tuple[Mapping[str, int], Scope]] = []
        #: The profile of the unit whose nested plan is being loaded: its backend is handed
        #: down (``profiles.handed_down``).
        self.outer: ResolvedProfile | None = None

    def root(self, path: Path) -> PlanNode | None:
        model = self.file(path, "a plan file")
        if model is None:
            return None
        return self.plan(model, Scope(path, (), "", 0, (path.resolve(),)), root=True)

    def file(self, path: Path, what: str) -> PlanFile | None:
        try:
            located = read_yaml(path)
            if located.data is None:
                raise ProblemsError(
                    [Problem(path, "", "the file is empty; a plan needs name and steps")]
                )
            model = plain_plan(located.data) if isinstance(located.data, dict) else None
            if model is None:
                from subplans.plans.models import PlanFile
                from subplans.plans.validation import validate

                model = validate(PlanFile, located.data, located, what)
        except ProblemsError as error:
            self.problems.extend(error.problems)
            return None
        self.located[path] = located
        return model

    def problem(self, at: Scope, message: str, *, at_key: bool = False) -> None:
        # Every file reaches here only after file() read it, so its positions can be found.
        self.problems.append(self.located[at.file].problem(at.loc, message, at_key=at_key))

    def plan(
        self, model: PlanFile | InlinePlan, at: Scope, *, root: bool = False
    ) -> PlanNode | None:
        steps = model.steps
        plan_level = Level(
            "plan",
            at.file,
            format_location((*at.loc, "automation_profile")),
            model.automation_profile,
        )
        # ``pools:`` beside the steps: the plan's own, above its automation profile.
        pools = None if model.pools is None else PlainProfileFields({"pools": model.pools})
        pools_level = Level("plan", at.file, format_location(at.loc), pools)
        action_level = Level("action", None, "automation_profile", None)
        action_file = getattr(model, "action", None)  # a PlanFile's: an InlinePlan has none
        if action_file is not None:
            action_path = at.file.parent / action_file
            if action_path.resolve() in at.chain:
                self.problem(at.at("action"), include_loop(at.chain, action_path), at_key=True)
                return None
            action = self.file(action_path, "an action file")
            if action is None:
                return None
            if action.action is not None:
                self.problem(
                    at.in_file(action_path, ("action",)),
                    "an action cannot build on another action",
                    at_key=True,
                )
            action_level = Level(
                "action", action_path, "automation_profile", action.automation_profile
            )
            if steps is None:
                steps = action.steps
                at = at.in_file(action_path, ())
        if not steps:
            self.problem(at.at("steps"), "required: a plan needs steps (or an action with steps)")
            return None
        plan_levels = [
            *(self.overrides.levels() if root else []),
            pools_level,
            plan_level,
            action_level,
            self.config.level(),
        ]
        profile = self.resolve(plan_levels, at.file)
        if profile is None:
            return None
        for name, pool in profile.pools.items():
            self.pools.setdefault(name, pool)
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
            self.pools,
        )

    def resolve(self, levels: list[Level], file: Path) -> ResolvedProfile | None:
        try:
            profile = self.config.registry.resolve(levels)
        except ProfileError as error:
            self.problems.append(Problem(file, "", str(error)))
            return None
        overrides = self.overrides
        return handed_down(profile, self.outer, overrides.scheduler, overrides.scheduler_from)

    def step(self, step: StepModel, at: Scope, plan_levels: list[Level]) -> StepNode | None:
        levels = [
            Level("step", at.file, format_location(at.loc), step_fields(step)),
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
        items: StepItems | None = None
        single = step.subplans is None and step.for_each is None
        # A step's unit keys are its subplans' defaults: what cannot reach them is refused.
        refused = [] if single else step_defaults_problems(step)
        for where, message in refused:
            self.problem(at.at(*where), message)
        if step.subplans is not None:
            names: set[str] = set()
            for index, sub in enumerate(step.subplans):
                sub_at = at.at("subplans", index)
                if sub.name in names:
                    self.problem(sub_at.at("name"), f"duplicate subplan name {sub.name!r}")
                    continue
                names.add(sub.name)
                uses = self.uses(sub.uses if sub.uses is not None else step.uses, sub_at)
                builder = UnitBuilder(
                    sub, folder=at.file.parent, profile=profile, uses=uses, step=step
                )
                units.append(self.unit(builder, sub.name, f"{step_id}/{sub.name}", sub_at))
        elif step.for_each is not None:
            # Loaded for a for_each only: a plan without one never needs it (#10).
            from subplans.plans.for_each import item_source

            assert step.subplan is not None
            source = item_source(step.for_each)
            template_uses = step.subplan.uses if step.subplan.uses is not None else step.uses
            uses = self.uses(template_uses, at.at("subplan"))
            if isinstance(source, tuple):  # written out: known now
                expanded = self.for_each(list(source), step, at, step_id, profile, uses)
                if expanded is None:
                    return None
                units.extend(expanded)
            else:
                items = self.runtime(source, step, at, step_id, profile, uses)
                if items is None:
                    return None
        else:
            uses = self.uses(step.uses, at)
            builder = UnitBuilder(step, folder=at.file.parent, profile=profile, uses=uses)
            units.append(self.unit(builder, step.name, step_id, at))
        if refused or any(u is None for u in units):
            return None
        return StepNode(
            step_id,
            step.name,
            step.always,
            single,
            profile,
            tuple(u for u in units if u is not None),
            items,
        )

    def template(
        self,
        step: StepModel,
        at: Scope,
        profile: ResolvedProfile,
        uses: Mapping[str, int],
    ) -> UnitBuilder | None:
        """The builder of a ``for_each`` step's units; None if its template is refused."""
        template = step.subplan
        assert template is not None
        if isinstance(template.run, str):
            from subplans.plans.shellquote import ShellTemplateError, shell_template

            try:  # placeholders of a run string must stand where they can be quoted
                shell_template(template.run)
            except ShellTemplateError as error:
                for message in error.problems:
                    self.problem(at.at("run"), message)
                return None
        # Worked out once for every item: a million items cost about a million nodes.
        return UnitBuilder(template, folder=at.file.parent, profile=profile, uses=uses, step=step)

    def for_each(
        self,
        items: Sequence[str],
        step: StepModel,
        at: Scope,
        step_id: str,
        profile: ResolvedProfile,
        uses: Mapping[str, int],
    ) -> list[UnitNode | None] | None:
        """The units of a ``for_each`` step, one per item; None if its template is refused."""
        builder = self.template(step, at.at("subplan"), profile, uses)
        return None if builder is None else self.expand(builder, items, at.at("subplan"), step_id)

    def expand(
        self, builder: UnitBuilder, items: Sequence[str], at: Scope, step_id: str
    ) -> list[UnitNode | None]:
        """One unit per item of ``builder``'s template (at ``at``)."""
        template = builder.unit
        name = template.name if "name" in template.model_fields_set else None
        from subplans.plans.for_each import named_values

        units: list[UnitNode | None] = []
        for named in named_values(items, name):
            if isinstance(named, str):
                self.problem(at.at("name"), named)
                continue
            unit_name, values = named
            unit_id = f"{step_id}/{unit_name}"
            units.append(self.unit(builder, unit_name, unit_id, at, values))
        return units

    def runtime(
        self,
        source: ItemSource,
        step: StepModel,
        at: Scope,
        step_id: str,
        profile: ResolvedProfile,
        uses: Mapping[str, int],
    ) -> StepItems | None:
        """A ``for_each`` whose items are read when its step starts, checked as far as it can
        be without them; None if it is refused."""
        from subplans.plans.for_each import check_source

        problem = check_source(source)
        if problem is not None:
            self.problem(at.at("for_each", problem.key), problem.message)
            return None
        template_at = at.at("subplan")
        builder = self.template(step, template_at, profile, uses)
        if builder is None or not self.template_ok(builder, template_at, step_id):
            return None
        config, located, modules, pools = self.config, self.located, self.modules, self.pools
        scheduler = self.overrides.scheduler

        def units(items: Sequence[str]) -> tuple[UnitNode, ...]:
            """The step's units of ``items``, by the loader's rules; its problems (an invalid
            or duplicate name, a nested plan that cannot be loaded) raised as a
            ``ProblemsError`` at the template's place in the plan file."""
            loader = _Loader(config, Overrides(scheduler=scheduler))
            loader.located, loader.modules, loader.pools = located, modules, pools
            with collector_paused():
                made = loader.expand(builder, items, template_at, step_id)
            loader.check_uses()
            if loader.problems:
                raise ProblemsError(loader.problems)
            return tuple(u for u in made if u is not None)

        return StepItems(source, at.file.parent, units, uses=uses)

    def unit(
        self,
        builder: UnitBuilder,
        name: str,
        unit_id: str,
        at: Scope,
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
            outer, self.outer = self.outer, builder.profile
            try:
                nested = self.nested(unit, at, unit_id, values)
            finally:
                self.outer = outer
            if nested is None:
                return None
        return builder.build(unit_id=unit_id, name=name, values=values, plan=nested)
