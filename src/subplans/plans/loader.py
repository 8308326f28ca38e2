"""From plan files to a runnable tree: validation with locations, actions, nested plans,
``for_each`` expansion, id checks, and each step's resolved automation profile.

Every problem is collected (not just the first) and raised together as a ``ProblemsError``
before anything runs.
"""

from __future__ import annotations

import difflib
import glob as globbing
import importlib.machinery
import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import ValidationError

from subplans.engine.config import FailureMode
from subplans.plans.models import (
    FIELD_NAMES,
    UNION_TAGS,
    ConfigFile,
    ForEachGlob,
    ForEachLines,
    InlinePlan,
    PlanFile,
    ProfileFields,
    ProfileSpec,
    StepModel,
    SubplanModel,
    SubplanTemplate,
)
from subplans.plans.profiles import (
    Level,
    ProfileError,
    ProfileRegistry,
    ResolvedProfile,
    global_config_path,
)
from subplans.plans.shellquote import PLACEHOLDER, ShellTemplateError, shell_template
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

UnitKind = Literal["run", "call", "plan"]
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class UnitNode:
    """One runnable unit: a command, a callable or a nested plan, with its path id."""

    id: str
    name: str
    kind: UnitKind
    folder: Path
    cwd: Path
    command: str | tuple[str, ...] | None = None
    call: str | None = None
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    plan: PlanNode | None = None
    timeout: float | None = None
    retries: int = 0
    env: Mapping[str, str] = field(default_factory=dict)
    item: str | None = None
    #: False: its work must not run twice; resume asks before running it again.
    idempotent: bool = True


@dataclass(frozen=True, slots=True)
class StepNode:
    """A step of a plan: its units and its resolved profile."""

    id: str
    name: str
    always: bool
    single: bool
    profile: ResolvedProfile
    units: tuple[UnitNode, ...]


@dataclass(frozen=True, slots=True)
class PlanNode:
    """A validated plan (root or nested), ready to execute."""

    id: str
    name: str
    file: Path
    folder: Path
    description: str | None
    profile: ResolvedProfile
    steps: tuple[StepNode, ...]
    depth: int

    def walk_units(self) -> list[UnitNode]:
        """Every unit of the tree, depth first, in plan order."""
        units: list[UnitNode] = []
        for step in self.steps:
            for unit in step.units:
                units.append(unit)
                if unit.plan is not None:
                    units.extend(unit.plan.walk_units())
        return units


@dataclass(frozen=True, slots=True)
class Overrides:
    """Profile values given when a plan is run (the command line); they act at the plan level."""

    max_parallel: int | None = None
    failure_mode: FailureMode | None = None
    profile: str | None = None

    def levels(self) -> list[Level]:
        levels = []
        if self.max_parallel is not None:
            fields = ProfileFields(max_parallel=self.max_parallel)
            levels.append(Level("plan", None, "--max-parallel", fields))
        if self.failure_mode is not None:
            fields = ProfileFields(failure_mode=self.failure_mode)
            levels.append(Level("plan", None, "--failure-mode", fields))
        if self.profile is not None:
            levels.append(Level("plan", None, "--profile", self.profile))
        return levels


@dataclass(frozen=True, slots=True)
class GlobalConfig:
    """The global config file: custom profiles and the global automation profile."""

    path: Path
    exists: bool
    registry: ProfileRegistry
    spec: ProfileSpec | None

    def level(self) -> Level:
        return Level("global", self.path, "automation_profile", self.spec)


def load_global_config(environ: Mapping[str, str] | None = None) -> GlobalConfig:
    """Read the global config file (it need not exist).

    Raises:
        ProblemsError: the file is unreadable or invalid.
    """
    path = global_config_path(environ)
    if not path.exists():
        return GlobalConfig(path, False, ProfileRegistry(), None)
    located = read_yaml(path)
    data = {} if located.data is None else located.data
    model = _validate(ConfigFile, data, located, "a config file")
    try:
        registry = ProfileRegistry(model.profiles, path)
        for name in model.profiles:
            registry.expand(name, f"profiles.{name}")
        if model.automation_profile is not None:
            registry.expand(model.automation_profile, "automation_profile")
    except ProfileError as error:
        raise ProblemsError([Problem(path, "", str(error))]) from None
    return GlobalConfig(path, True, registry, model.automation_profile)


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
    root = loader.root(Path(path))
    if loader.problems or root is None:
        raise ProblemsError(loader.problems)
    return root


def _substitute(text: str, values: Mapping[str, str]) -> str:
    """``text`` with the placeholders replaced as they are (not for a ``run`` string)."""
    if not values:  # outside for_each; placeholders there are reported by the loader
        return text
    return PLACEHOLDER.sub(lambda match: values[match.group(1)], text)


_NUL_ITEM = (
    "a for_each item has a NUL byte, which no command, environment variable or path can hold"
)


def _placeholders(value: Any) -> list[str]:
    """Every placeholder written in ``value`` (strings, lists and mappings, recursively)."""
    if isinstance(value, str):
        return [f"{{{name}}}" for name in PLACEHOLDER.findall(value)]
    if isinstance(value, list | tuple):
        return [found for v in value for found in _placeholders(v)]
    if isinstance(value, dict):
        return [found for v in value.values() for found in _placeholders(v)]
    return []


def _substitute_any(value: Any, values: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        return _substitute(value, values)
    if isinstance(value, list):
        return [_substitute_any(v, values) for v in value]
    if isinstance(value, dict):
        return {k: _substitute_any(v, values) for k, v in value.items()}
    return value


_FRIENDLY = {
    "run": "must be a command string or a non-empty list of argument strings",
    "plan": "must be a plan file path or an inline plan with steps",
    "automation_profile": "must be a profile name or a mapping of profile fields",
    "for_each": "must be a list of strings, {glob: PATTERN} or {lines: FILE}",
    "call": "must look like package.module:function",
    "name": "must be a non-empty name without '/'",
    "idempotent": "must be true or false",
}


def _unknown_key(key: str) -> str:
    """Why a key is refused where it stands, and how to write it instead."""
    if key in ProfileFields.model_fields:
        # A profile field written beside the steps: the commonest slip, so name the fix.
        return (
            f"{key!r} is a profile field: write it under automation_profile, "
            f"e.g. automation_profile: {{{key}: ...}}"
        )
    if key in FIELD_NAMES:
        return f"key {key!r} is not allowed here"
    close = difflib.get_close_matches(key, sorted(FIELD_NAMES), n=1)
    return f"unknown key {key!r}" + (f"; did you mean {close[0]!r}?" if close else "")


def _message(error: Mapping[str, Any], loc: Loc) -> str:
    kind, last = error["type"], loc[-1] if loc else ""
    if kind == "extra_forbidden":
        return _unknown_key(str(last))
    if kind == "missing":
        return "required"
    if kind == "value_error":
        return str(error["ctx"]["error"])
    if kind == "too_short":
        return "must not be empty"
    shown = f"{error['input']!r} ({type(error['input']).__name__})"
    if isinstance(last, str) and last in _FRIENDLY:
        return f"{_FRIENDLY[last]}, got {shown}"
    message: str = error["msg"]
    return f"{message[0].lower()}{message[1:]}, got {shown}"


def _validate(model: Any, data: Any, located: Located, what: str) -> Any:
    if not isinstance(data, dict):
        raise ProblemsError(
            [located.problem((), f"{what} must be a mapping, got {type(data).__name__}")]
        )
    try:
        return model.model_validate(data)
    except ValidationError as error:
        problems = []
        for item in error.errors():
            # A mapping key's own error (an env name) ends in "[key]": shown at the key.
            at_key = item["type"] == "extra_forbidden" or item["loc"][-1:] == ("[key]",)
            loc = tuple(p for p in item["loc"] if p not in UNION_TAGS and p != "[key]")
            problems.append(located.problem(loc, _message(item, loc), at_key=at_key))
        problems.sort(key=lambda p: (p.line or 0, p.column or 0))
        raise ProblemsError(problems) from None


class _Loader:
    def __init__(self, config: GlobalConfig, overrides: Overrides) -> None:
        self.config = config
        self.overrides = overrides
        self.problems: list[Problem] = []
        self.ids: dict[str, tuple[Path, str]] = {}
        self.located: dict[Path, Located] = {}
        self.modules: dict[str, Path] = {}

    def root(self, path: Path) -> PlanNode | None:
        model = self.file(path, "a plan file")
        if model is None:
            return None
        return self.plan(model, path, (), "", 0, (path.resolve(),), root=True)

    def file(self, path: Path, what: str) -> PlanFile | None:
        try:
            located = read_yaml(path)
            if located.data is None:
                raise ProblemsError(
                    [Problem(path, "", "the file is empty; a plan needs name and steps")]
                )
            model: PlanFile = _validate(PlanFile, located.data, located, what)
        except ProblemsError as error:
            self.problems.extend(error.problems)
            return None
        self.located[path] = located
        return model

    def problem(self, file: Path, loc: Loc, message: str, *, at_key: bool = False) -> None:
        # Every file reaches here only after file() parsed it, so its positions are known.
        self.problems.append(self.located[file].problem(loc, message, at_key=at_key))

    def plan(
        self,
        model: PlanFile | InlinePlan,
        file: Path,
        loc: Loc,
        prefix: str,
        depth: int,
        chain: tuple[Path, ...],
        *,
        root: bool = False,
    ) -> PlanNode | None:
        folder = file.parent
        steps = model.steps
        plan_level = Level(
            "plan", file, format_location((*loc, "automation_profile")), model.automation_profile
        )
        action_level = Level("action", None, "automation_profile", None)
        if isinstance(model, PlanFile) and model.action is not None:
            action_path = folder / model.action
            if action_path.resolve() in chain:
                self.problem(file, (*loc, "action"), _loop(chain, action_path), at_key=True)
                return None
            action = self.file(action_path, "an action file")
            if action is None:
                return None
            if action.action is not None:
                self.problem(
                    action_path,
                    ("action",),
                    "an action cannot build on another action",
                    at_key=True,
                )
            action_level = Level(
                "action", action_path, "automation_profile", action.automation_profile
            )
            if steps is None:
                steps = action.steps
                file, folder, loc = action_path, action_path.parent, ()
        if not steps:
            self.problem(
                file, (*loc, "steps"), "required: a plan needs steps (or an action with steps)"
            )
            return None
        plan_levels = [
            *(self.overrides.levels() if root else []),
            plan_level,
            action_level,
            self.config.level(),
        ]
        profile = self.resolve(plan_levels, file, loc)
        if profile is None:
            return None
        names: set[str] = set()
        nodes = []
        for index, step in enumerate(steps):
            step_loc = (*loc, "steps", index)
            if step.name in names:
                self.problem(file, (*step_loc, "name"), f"duplicate step name {step.name!r}")
                continue
            names.add(step.name)
            node = self.step(step, file, step_loc, prefix, depth, chain, plan_levels)
            if node is not None:
                nodes.append(node)
        name = model.name or (prefix.rsplit("/", 1)[-1] if prefix else file.stem)
        return PlanNode(prefix, name, file, folder, model.description, profile, tuple(nodes), depth)

    def resolve(self, levels: list[Level], file: Path, loc: Loc) -> ResolvedProfile | None:
        try:
            return self.config.registry.resolve(levels)
        except ProfileError as error:
            self.problems.append(Problem(file, "", str(error)))
            return None

    def step(
        self,
        step: StepModel,
        file: Path,
        loc: Loc,
        prefix: str,
        depth: int,
        chain: tuple[Path, ...],
        plan_levels: list[Level],
    ) -> StepNode | None:
        direct = ProfileFields(
            max_parallel=step.max_parallel,
            failure_mode=step.failure_mode,
            idempotent=step.idempotent,
        )
        levels = [
            Level("step", file, format_location(loc), direct),
            Level(
                "step", file, format_location((*loc, "automation_profile")), step.automation_profile
            ),
            *plan_levels,
        ]
        profile = self.resolve(levels, file, loc)
        if profile is None:
            return None
        step_id = f"{prefix}/{step.name}" if prefix else step.name
        folder = file.parent
        units: list[UnitNode | None] = []
        if step.subplans is not None:
            names: set[str] = set()
            for index, sub in enumerate(step.subplans):
                sub_loc = (*loc, "subplans", index)
                if sub.name in names:
                    self.problem(file, (*sub_loc, "name"), f"duplicate subplan name {sub.name!r}")
                    continue
                names.add(sub.name)
                units.append(
                    self.unit(
                        sub, sub.name, f"{step_id}/{sub.name}", file, sub_loc, depth, chain, profile
                    )
                )
        elif step.for_each is not None:
            assert step.subplan is not None
            items = self.items(step.for_each, folder, file, (*loc, "for_each"))
            if not self.template_checks(step.subplan, file, (*loc, "subplan")):
                return None
            names = set()
            for index, item in enumerate(items or []):
                values = {"item": item, "index": str(index), "stem": Path(item).stem}
                template = step.subplan
                if "name" in template.model_fields_set:
                    name = _substitute(template.name, values)
                    if "/" in name or not name.strip():
                        self.problem(
                            file,
                            (*loc, "subplan", "name"),
                            f"for_each item {item!r} gives the name {name!r}; a name must be "
                            "non-empty, without '/' (try {stem} or {index})",
                        )
                        continue
                else:
                    # The default name is the item, with '/' (a glob's folders) made '_'.
                    name = item.replace("/", "_") or str(index)
                if name in names:
                    self.problem(
                        file,
                        (*loc, "subplan", "name"),
                        f"for_each item {item!r} gives the duplicate name {name!r}",
                    )
                    continue
                names.add(name)
                units.append(
                    self.unit(
                        template,
                        name,
                        f"{step_id}/{name}",
                        file,
                        (*loc, "subplan"),
                        depth,
                        chain,
                        profile,
                        values,
                    )
                )
        else:
            units.append(self.unit(step, step.name, step_id, file, loc, depth, chain, profile))
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

    def template_checks(self, template: SubplanTemplate, file: Path, loc: Loc) -> bool:
        """False when placeholders of a ``run`` string stand where they cannot be quoted."""
        if not isinstance(template.run, str):
            return True
        try:
            shell_template(template.run)
        except ShellTemplateError as error:
            for message in error.problems:
                self.problem(file, (*loc, "run"), message)
            return False
        return True

    def find_module(self, dotted: str, folder: Path) -> str | None:
        """A problem with a ``call`` module, or None; plans of one run share one import system,
        so two plan folders that each hold a top-level ``tools`` would shadow each other."""
        home, problem = _module_origin(dotted, folder)
        if problem is not None:
            return problem
        top = dotted.split(".")[0]
        if home is not None:
            seen = self.modules.setdefault(top, home)
            if seen != home:
                return (
                    f"module {top!r} is in both {seen} and {home}; plans of one run share "
                    "their imports, so give one of them another name"
                )
        return None

    def items(self, spec: object, folder: Path, file: Path, loc: Loc) -> list[str] | None:
        if isinstance(spec, ForEachGlob):
            if Path(spec.glob).is_absolute():
                self.problem(file, (*loc, "glob"), "must be relative to the plan's folder")
                return None
            found = sorted(globbing.glob(spec.glob, root_dir=folder, recursive=True))
            if not found:
                self.problem(file, (*loc, "glob"), f"{spec.glob!r} matches no files in {folder}")
                return None
            return found
        if isinstance(spec, ForEachLines):
            source = folder / spec.lines
            try:
                text = source.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as error:
                reason = getattr(error, "strerror", None) or str(error)
                self.problem(file, (*loc, "lines"), f"cannot read {source}: {reason}")
                return None
            lines = text.splitlines()
            for number, line in enumerate(lines, start=1):
                if "\x00" in line:
                    column = line.index("\x00") + 1
                    self.problems.append(
                        Problem(source, "", f"{_NUL_ITEM} ({line.strip()!r})", number, column)
                    )
                    return None
            stripped = (line.strip() for line in lines)
            return [line for line in stripped if line and not line.startswith("#")]
        assert isinstance(spec, list)
        return list(spec)

    def unit(
        self,
        unit: SubplanModel | SubplanTemplate | StepModel,
        name: str,
        unit_id: str,
        file: Path,
        loc: Loc,
        depth: int,
        chain: tuple[Path, ...],
        profile: ResolvedProfile,
        values: Mapping[str, str] | None = None,
    ) -> UnitNode | None:
        if unit_id in self.ids:
            first_file, first_loc = self.ids[unit_id]
            self.problem(
                file, loc, f"duplicate subplan id {unit_id!r} (also at {first_file}: {first_loc})"
            )
            return None
        self.ids[unit_id] = (file, format_location(loc))
        folder = file.parent
        values = values or {}
        if not values:
            written = _placeholders([unit.run, unit.cwd, unit.env, unit.with_, unit.plan])
            if written:
                shown = ", ".join(sorted(set(written)))
                self.problem(file, loc, f"{shown} is only replaced under for_each")
                return None
        env = {k: _substitute(v, values) for k, v in (unit.env or {}).items()}
        cwd = folder / _substitute(unit.cwd, values) if unit.cwd else folder
        kind: UnitKind
        command: str | tuple[str, ...] | None = None
        kwargs: dict[str, Any] = {}
        nested: PlanNode | None = None
        if unit.run is not None:
            kind = "run"
            if isinstance(unit.run, str):
                # Checked by template_checks: each value goes in quoted for its place.
                command = shell_template(unit.run).render(values) if values else unit.run
            else:
                command = tuple(_substitute(arg, values) for arg in unit.run)
        elif unit.call is not None:
            kind = "call"
            problem = self.find_module(unit.call.split(":")[0], folder)
            if problem is not None:
                self.problem(file, (*loc, "call"), problem)
                return None
            kwargs = _substitute_any(unit.with_ or {}, values)
        else:
            kind = "plan"
            if unit.cwd is not None:
                self.problem(
                    file, (*loc, "cwd"), "has no effect on a nested plan; set it on its subplans"
                )
                return None
            nested = self.nested(unit, file, loc, unit_id, depth, chain, values)
            if nested is None:
                return None
            if env or values.get("item") is not None:
                # What the plan subplan was given reaches the work inside: "one nested plan per
                # module" gets its module through env and SUBPLANS_ITEM.
                nested = _inherit(nested, env, values.get("item"))
        return UnitNode(
            id=unit_id,
            name=name,
            kind=kind,
            folder=folder,
            cwd=cwd,
            command=command,
            call=unit.call,
            kwargs=kwargs,
            plan=nested,
            # A profile's defaults are for the work itself; a nested plan's own subplans get
            # them, so retrying or timing the whole nested plan happens only when asked for.
            timeout=_own_or_default(unit.timeout, None if kind == "plan" else profile.timeout),
            retries=_own_or_default(unit.retries, 0 if kind == "plan" else profile.retries),
            env=env,
            item=values.get("item"),
            idempotent=_own_or_default(unit.idempotent, profile.idempotent),
        )

    def nested(
        self,
        unit: SubplanModel | SubplanTemplate | StepModel,
        file: Path,
        loc: Loc,
        unit_id: str,
        depth: int,
        chain: tuple[Path, ...],
        values: Mapping[str, str],
    ) -> PlanNode | None:
        assert unit.plan is not None
        if depth + 1 > MAX_DEPTH:
            self.problem(file, (*loc, "plan"), f"plans nest deeper than {MAX_DEPTH} levels")
            return None
        if not isinstance(unit.plan, str):
            return self.plan(unit.plan, file, (*loc, "plan"), unit_id, depth + 1, chain)
        path = file.parent / _substitute(unit.plan, values)
        if path.resolve() in chain:
            self.problem(file, (*loc, "plan"), _loop(chain, path))
            return None
        model = self.file(path, "a plan file")
        if model is None:
            return None
        return self.plan(model, path, (), unit_id, depth + 1, (*chain, path.resolve()))


def _loop(chain: tuple[Path, ...], again: Path) -> str:
    names = " -> ".join(p.name for p in (*chain, again))
    return f"the plan includes itself: {names}"


def _inherit(plan: PlanNode, env: Mapping[str, str], item: str | None) -> PlanNode:
    """``plan`` with ``env`` under each of its units' own env, and ``item`` where they have none."""
    steps = []
    for step in plan.steps:
        units = []
        for unit in step.units:
            nested = None if unit.plan is None else _inherit(unit.plan, env, item)
            units.append(
                replace(
                    unit,
                    env={**env, **unit.env},
                    item=unit.item if unit.item is not None else item,
                    plan=nested,
                )
            )
        steps.append(replace(step, units=tuple(units)))
    return replace(plan, steps=tuple(steps))


def _own_or_default(own: _T | None, default: _T) -> _T:
    return own if own is not None else default


def _module_origin(dotted: str, folder: Path) -> tuple[Path | None, str | None]:
    """Where ``dotted`` would be imported from, found without importing (or running) anything.

    Returns the folder its top-level package or module comes from (None for one on sys.path
    other than ``folder``), or a problem.
    """
    parts = dotted.split(".")
    top = importlib.machinery.PathFinder.find_spec(parts[0], [str(folder.resolve())])
    home: Path | None = folder.resolve()
    if top is None:
        home = None
        try:
            top = importlib.util.find_spec(parts[0])
        except (ImportError, ValueError):  # pragma: no cover - a broken package on sys.path
            top = None
    if top is None:
        return None, f"cannot find module {parts[0]!r} (looked in {folder} and sys.path)"
    spec = top
    for depth, part in enumerate(parts[1:], start=2):
        locations = spec.submodule_search_locations
        found = (
            importlib.machinery.PathFinder.find_spec(part, list(locations)) if locations else None
        )
        if found is None:
            return None, f"cannot find module {'.'.join(parts[:depth])!r}"
        spec = found
    return home, None
