"""``subplans profile list|show|resolve``: the named automation profiles, and the effective
profile of a plan and its steps with where each value comes from."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from subplans.cli.exits import invalid, invalid_input
from subplans.cli.options import (
    CONTEXT,
    FailureModeOption,
    MaxParallelOption,
    PlanArgument,
    ProfileOption,
    example,
)
from subplans.engine.config import FailureMode

if TYPE_CHECKING:
    from subplans.plans.loader import PlanNode
    from subplans.plans.profiles import ProfileRegistry, ResolvedProfile

__all__ = ["profile_app"]

profile_app = typer.Typer(
    name="profile",
    no_args_is_help=True,
    context_settings=CONTEXT,
    rich_markup_mode="markdown",
    help="Automation profiles: list them, show one, or resolve a plan's effective settings.",
    epilog=example("subplans profile resolve plan.yaml --profile wide"),
)


def _registry() -> ProfileRegistry:
    from subplans.cli.loading import registry

    with invalid_input():
        return registry()


@profile_app.command("list", epilog=example("subplans profile list"))
def profile_list() -> None:
    """List the named profiles: the built-in ones, then those of the global config file."""
    registry = _registry()
    width = max(len(name) for name in registry.names)
    for name in registry.names:
        typer.echo(f"{name:<{width}}  {registry.describe(name)}")


@profile_app.command("show", epilog=example("subplans profile show keep-going"))
def profile_show(
    name: Annotated[str, typer.Argument(metavar="NAME", help="A profile name.")],
) -> None:
    """Show every field of a named profile and where its value comes from."""
    from subplans.plans.profiles import FIELDS, Level, ProfileError

    registry = _registry()
    if name not in registry.names:
        invalid([f"unknown profile {name!r}; known profiles: {', '.join(registry.names)}"])
    file = registry.file if name in registry.custom else None
    try:
        resolved = registry.resolve([Level("profile", file, "profile", name)])
    except ProfileError as error:  # pragma: no cover - the config loader expanded every profile
        invalid([error])
    typer.echo(f"{name}: {registry.describe(name)}")
    values = {field: _value(getattr(resolved, field)) for field in FIELDS}
    width = max(len(v) for v in values.values())
    for field in FIELDS:
        source = resolved.sources[field]
        where = "not set: built-in default"
        if source.level == "profile":
            where = source.key if source.file is None else f"{source.key} ({source.file})"
        typer.echo(f"  {field:<12}  {values[field]:<{width}}  {where}")


@profile_app.command(
    "resolve",
    epilog=example("subplans profile resolve plan.yaml --max-parallel 8"),
)
def profile_resolve(
    plan: PlanArgument,
    max_parallel: MaxParallelOption = None,
    failure_mode: FailureModeOption = None,
    profile: ProfileOption = None,
) -> None:
    """Print each effective profile field of a plan and its steps, with where it came from.

    Takes the same overrides as `subplans run`; nested plans follow their step.
    """
    from subplans.cli.loading import load
    from subplans.plans.loader import Overrides

    overrides = Overrides(max_parallel=max_parallel, failure_mode=failure_mode, profile=profile)
    with invalid_input():
        node = load(plan, overrides)
    _echo_plan(node)


def _echo_plan(node: PlanNode) -> None:
    label = f"plan {node.id}" if node.id else "plan"
    typer.echo(f"{label}: {node.name}  ({node.file})")
    _echo_fields(node.profile)
    for step in node.steps:
        typer.echo(f"step {step.id}")
        _echo_fields(step.profile)
        for unit in step.units:
            if unit.plan is not None:
                _echo_plan(unit.plan)


def _echo_fields(profile: ResolvedProfile) -> None:
    from subplans.plans.profiles import FIELDS

    values = {name: _value(getattr(profile, name)) for name in FIELDS}
    width = max(len(v) for v in values.values())
    for name in FIELDS:
        typer.echo(f"  {name:<12}  {values[name]:<{width}}  {profile.sources[name]}")


def _value(value: object) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, FailureMode):
        return value.value
    return str(value)
