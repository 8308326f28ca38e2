"""What a run is given besides its plan: the global config file and the command line's
overrides, each a level of profile precedence."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from subplans.engine.config import MAX_PARALLEL_LIMIT, FailureMode
from subplans.engine.halting import HaltPolicy
from subplans.plans.backends import Backend
from subplans.plans.plain_models import PlainProfileFields
from subplans.plans.profiles import Level, ProfileError, ProfileRegistry, global_config_path
from subplans.plans.yamlfile import Problem, ProblemsError, read_yaml

if TYPE_CHECKING:
    from subplans.plans.models import ProfileFields, ProfileSpec

__all__ = ["GlobalConfig", "Overrides", "load_global_config"]


@dataclass(frozen=True, slots=True)
class Overrides:
    """Profile values given when a plan is run (the command line); they act at the plan level."""

    max_parallel: int | None = None
    failure_mode: FailureMode | None = None
    profile: str | None = None
    #: ``--halt``: a policy or its string form (``"soon,fail=3%"``).
    halt: HaltPolicy | str | None = None
    #: ``--backend``: ``local`` or ``dask`` for the whole plan (a step's own setting still wins).
    backend: Literal["local", "dask"] | None = None
    #: The run's cluster (``--scheduler``, else ``$SUBPLANS_SCHEDULER``): where a ``dask``
    #: backend that names no scheduler runs; None: a local cluster started for the run.
    scheduler: str | None = None
    #: What set ``backend`` and named ``scheduler``, as provenance shows them (``--scheduler``
    #: alone asks for ``dask``; ``$SUBPLANS_SCHEDULER`` names the cluster).
    backend_from: str = "--backend"
    scheduler_from: str = "--scheduler"

    def levels(self) -> list[Level]:
        levels = []
        if self.max_parallel is not None:
            fields = _fields("max_parallel", self.max_parallel)
            levels.append(Level("plan", None, "--max-parallel", fields))
        if self.failure_mode is not None:
            fields = _fields("failure_mode", self.failure_mode)
            levels.append(Level("plan", None, "--failure-mode", fields))
        if self.halt is not None:
            fields = PlainProfileFields({"halt": HaltPolicy.from_value(self.halt, "--halt")})
            levels.append(Level("plan", None, "--halt", fields))
        if self.backend is not None:
            backend, key = Backend.from_value(self.backend).at(self.scheduler), self.backend_from
            if backend.scheduler is not None and self.scheduler_from != key:
                key = f"{key}, {self.scheduler_from}"
            levels.append(Level("plan", None, key, PlainProfileFields({"backend": backend})))
        if self.profile is not None:
            levels.append(Level("plan", None, "--profile", self.profile))
        return levels


def _fields(name: str, value: object) -> ProfileFields | PlainProfileFields:
    """One profile field as ``ProfileFields`` holds it: a value it keeps as it is without
    pydantic (a run of a plain plan never loads it), any other value checked by it."""
    plain = (
        type(value) is int and 1 <= value <= MAX_PARALLEL_LIMIT
        if name == "max_parallel"
        else isinstance(value, FailureMode)
    )
    if plain:
        return PlainProfileFields({name: value})
    from subplans.plans.models import ProfileFields

    return ProfileFields.model_validate({name: value})


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
    from subplans.plans.models import ConfigFile
    from subplans.plans.validation import validate

    located = read_yaml(path)
    data = {} if located.data is None else located.data
    model = validate(ConfigFile, data, located, "a config file")
    try:
        registry = ProfileRegistry(model.profiles, path)
        for name in model.profiles:
            registry.expand(name, f"profiles.{name}")
        if model.automation_profile is not None:
            registry.expand(model.automation_profile, "automation_profile")
    except ProfileError as error:
        raise ProblemsError([Problem(path, "", str(error))]) from None
    return GlobalConfig(path, True, registry, model.automation_profile)
