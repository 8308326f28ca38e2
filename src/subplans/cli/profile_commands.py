"""``subplans profile list|show|resolve``: the named automation profiles, and the effective
profile of a plan and its steps with where each value comes from."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from subplans.cli.exits import invalid, invalid_input
from subplans.cli.options import (
    CONTEXT,
    BackendOption,
    FailureModeOption,
    HaltOption,
    MaxParallelOption,
    PlanArgument,
    ProfileOption,
    SchedulerOption,
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
    from subplans.plans.profiles import Level, ProfileError

    registry = _registry()
    if name not in registry.names:
        invalid([f"unknown profile {name!r}; known profiles: {', '.join(registry.names)}"])
    file = registry.file if name in registry.custom else None
    try:
        resolved = registry.resolve([Level("profile", file, "profile", name)])
    except ProfileError as error:  # pragma: no cover - the config loader expanded every profile
        invalid([error])
    typer.echo(f"{name}: {registry.describe(name)}")
    values = _shown_fields(resolved)
    width = max(len(v) for v in values.values())
    label = max(12, *map(len, values))
    for field, value in values.items():
        source = resolved.sources[field]
        where = "not set: built-in default"
        if source.level == "profile":
            where = source.key if source.file is None else f"{source.key} ({source.file})"
        typer.echo(f"  {field:<{label}}  {value:<{width}}  {where}")


@profile_app.command(
    "resolve",
    epilog=example("subplans profile resolve plan.yaml --max-parallel 8"),
)
def profile_resolve(
    plan: PlanArgument,
    max_parallel: MaxParallelOption = None,
    failure_mode: FailureModeOption = None,
    profile: ProfileOption = None,
    halt: HaltOption = None,
    backend: BackendOption = None,
    scheduler: SchedulerOption = None,
) -> None:
    """Print each effective profile field of a plan and its steps, with where it came from.

    Takes the same overrides as `subplans run`; nested plans follow their step. The backend is
    shown where something sets it (a dask backend with its scheduler, or `local cluster`).
    """
    from subplans.cli.loading import load
    from subplans.cli.overrides import command_overrides

    with invalid_input():
        overrides = command_overrides(
            max_parallel=max_parallel,
            failure_mode=failure_mode,
            profile=profile,
            halt=halt,
            backend=backend,
            scheduler=scheduler,
        )
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
    values = _shown_fields(profile)
    width = max(len(v) for v in values.values())
    label = max(12, *map(len, values))
    for name, value in values.items():
        typer.echo(f"  {name:<{label}}  {value:<{width}}  {profile.sources[name]}")


def _shown_fields(profile: ResolvedProfile) -> dict[str, str]:
    """Every field's value as text; the scheduling controls (``halt``, ``max_per_second``,
    ``pools``) only where something sets them."""
    from subplans.plans.profiles import FIELDS, OPTIONAL_FIELDS

    return {
        name: _value(getattr(profile, name))
        for name in FIELDS
        if name not in OPTIONAL_FIELDS or profile.sources[name].level != "default"
    }


def _value(value: object) -> str:
    if value is None:
        return "none"
    if isinstance(value, dict):  # pools
        return ", ".join(f"{name}={pool}" for name, pool in value.items()) or "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, FailureMode):
        return value.value
    return str(value)
