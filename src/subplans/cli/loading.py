"""Plans and profiles as the command reads them: the global config file, the command-line
overrides checked, and the plan loaded with them; every problem is one line of a refusal
(``exits.refuse``)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

from subplans.cli.exits import refuse
from subplans.engine.config import check_max_parallel
from subplans.engine.errors import ConfigError
from subplans.engine.halting import HaltPolicy

if TYPE_CHECKING:
    from subplans.plans.loader import GlobalConfig, Overrides, PlanNode
    from subplans.plans.profiles import ProfileRegistry

__all__ = ["load", "registry"]


def _global_config() -> GlobalConfig:
    from subplans.plans.loader import load_global_config
    from subplans.plans.yamlfile import ProblemsError

    try:
        return load_global_config()
    except ProblemsError as error:
        refuse(error.problems)


def registry() -> ProfileRegistry:
    """The named profiles: the built-in ones and those of the global config file; refused if
    that file is invalid."""
    return _global_config().registry


def _checked(config: GlobalConfig, overrides: Overrides) -> tuple[Overrides, list[str]]:
    """The command-line overrides that are valid, and a problem for each one that is not."""
    problems: list[str] = []
    max_parallel, profile = overrides.max_parallel, overrides.profile
    if max_parallel is not None:
        try:
            check_max_parallel(max_parallel, "--max-parallel")
        except ConfigError as error:
            problems.append(str(error))
            max_parallel = None
    names = config.registry.names
    if profile is not None and profile not in names:
        problems.append(
            f"--profile: unknown profile {profile!r}; known profiles: {', '.join(names)}"
        )
        profile = None
    halt = overrides.halt
    if halt is not None:
        try:
            halt = HaltPolicy.from_value(halt, "--halt")
        except ConfigError as error:
            problems.append(str(error))
            halt = None
    checked = dataclasses.replace(overrides, max_parallel=max_parallel, profile=profile, halt=halt)
    return checked, problems


def load(path: Path, overrides: Overrides | None = None) -> PlanNode:
    """The plan at ``path`` with the command-line ``overrides``; refused with every problem of
    the options and the files, one line each."""
    from subplans.plans.loader import Overrides, load_plan
    from subplans.plans.yamlfile import ProblemsError

    config = _global_config()
    checked, problems = _checked(config, overrides or Overrides())
    try:
        node = load_plan(path, config=config, overrides=checked)
    except ProblemsError as error:
        refuse([*problems, *error.problems])
    if problems:
        refuse(problems)
    return node
