"""Automation profiles: built-in and custom named profiles, the global config file's place, and
field-by-field resolution with provenance (step > plan > action > global > built-in default)
into a ``tree.ResolvedProfile``."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from subplans.engine.config import FailureMode
from subplans.engine.errors import SubplanError
from subplans.engine.values import Value
from subplans.plans.backends import LOCAL
from subplans.plans.plain_models import PlainProfileFields
from subplans.plans.scheduling import RUN_POOLS
from subplans.plans.tree import FIELDS, PoolSpec, ResolvedProfile, Source

if TYPE_CHECKING:
    from subplans.plans.models import ProfileSpec, StepModel

__all__ = [
    "BUILTIN_PROFILES",
    "FIELDS",
    "OPTIONAL_FIELDS",
    "Level",
    "ProfileError",
    "ProfileRegistry",
    "ResolvedProfile",
    "Source",
    "global_config_path",
    "handed_down",
    "pool_specs",
    "step_fields",
]

#: Checked values, without pydantic (``plain_models``): a run of a plain plan never loads it.
BUILTIN_PROFILES: dict[str, PlainProfileFields] = {
    "default": PlainProfileFields(
        {
            "max_parallel": 4,
            "failure_mode": FailureMode.FAIL_FAST,
            "cancel_grace": 5.0,
            "retries": 0,
            "idempotent": True,
        }
    ),
    "serial": PlainProfileFields({"max_parallel": 1, "failure_mode": FailureMode.FAIL_FAST}),
    "keep-going": PlainProfileFields(
        {"max_parallel": 4, "failure_mode": FailureMode.CONTINUE_ON_ERROR}
    ),
    "wide": PlainProfileFields({"max_parallel": 16, "failure_mode": FailureMode.FAIL_FAST}),
    "wide-keep-going": PlainProfileFields(
        {"max_parallel": 16, "failure_mode": FailureMode.CONTINUE_ON_ERROR}
    ),
}

BUILTIN_DESCRIPTIONS = {
    "default": "4 at a time, stop on the first failure",
    "serial": "one at a time, in order, stop on the first failure",
    "keep-going": "4 at a time, run everything and report every failure",
    "wide": "16 at a time, stop on the first failure",
    "wide-keep-going": "16 at a time, run everything and report every failure",
}


#: The fields added by the scheduling controls and the backend: shown only where something
#: sets them.
OPTIONAL_FIELDS = frozenset({"halt", "max_per_second", "pools", "backend"})
#: The fields the built-in ``default`` profile leaves unset, and how that reads.
_UNSET = {
    "timeout": "no timeout",
    "halt": "no halt: failure_mode decides",
    "max_per_second": "no rate limit",
    "pools": "no pools",
    "backend": "local",
}


def pool_specs(pools: Mapping[str, Any]) -> dict[str, PoolSpec]:
    """Pools as a file writes them (``api: 4`` or ``api: {size: 4, max_per_second: 10}``)."""
    specs = {}
    for name, pool in pools.items():
        if isinstance(pool, PoolSpec):
            specs[name] = pool
        elif isinstance(pool, int):
            specs[name] = PoolSpec(pool)
        else:
            specs[name] = PoolSpec(pool.size, pool.max_per_second)
    return specs


class ProfileError(SubplanError):
    """A profile refers to an unknown or circular profile name."""


class Level(Value):
    """One level of precedence: a profile spec given at ``level`` in ``file`` under ``key``."""

    # A plain class: a dataclass costs the command's start half a millisecond to build (#10).
    __slots__ = ("file", "key", "level", "spec")
    _fields = ("level", "file", "key", "spec")

    def __init__(
        self, level: str, file: Path | None, key: str, spec: ProfileSpec | PlainProfileFields | None
    ) -> None:
        self.level: Final = level
        self.file: Final = file
        self.key: Final = key
        self.spec: Final = spec


_Expanded = dict[str, tuple[Any, str]]


class ProfileRegistry:
    """The named profiles: the built-in ones plus the global config file's ``profiles``."""

    def __init__(self, custom: Mapping[str, ProfileSpec] | None = None, file: Path | None = None):
        self.custom = dict(custom or {})
        self.file = file
        for name in self.custom:
            if name in BUILTIN_PROFILES:
                raise ProfileError(
                    f"profiles.{name}: {name!r} is a built-in profile; choose another name"
                )

    def __repr__(self) -> str:
        return f"<ProfileRegistry {len(BUILTIN_PROFILES)} built-in, {len(self.custom)} custom>"

    @property
    def names(self) -> list[str]:
        """Every known profile name: built-in ones first."""
        return [*BUILTIN_PROFILES, *sorted(self.custom)]

    def describe(self, name: str) -> str:
        """A one-line description of a named profile."""
        if name in BUILTIN_DESCRIPTIONS:
            return BUILTIN_DESCRIPTIONS[name]
        return f"custom, from {self.file}"

    def expand(
        self, spec: ProfileSpec | PlainProfileFields, key: str, _seen: tuple[str, ...] = ()
    ) -> _Expanded:
        """The fields ``spec`` sets, each with a description of where it is set.

        Raises:
            ProfileError: an unknown profile name, or profiles that refer to each other in a loop.
        """
        if isinstance(spec, str):
            return self._named(spec, key, _seen)
        expanded: _Expanded = {}
        if spec.profile is not None:
            expanded = self._named(spec.profile, f"{key}.profile", _seen)
        for name in FIELDS:
            value = getattr(spec, name)
            if value is not None:
                # A command-line option names its field itself: "--max-parallel"; a field
                # written at the top of a file is named alone.
                where = key if key.startswith("--") else f"{key}.{name}" if key else name
                expanded[name] = (value, where)
        return expanded

    def _named(self, name: str, key: str, seen: tuple[str, ...]) -> _Expanded:
        if name in seen:
            loop = " -> ".join((*seen, name))
            raise ProfileError(f"{key}: profiles refer to each other in a loop: {loop}")
        if name in BUILTIN_PROFILES:
            fields = BUILTIN_PROFILES[name]
            return {
                field: (getattr(fields, field), f"{key} = {name!r} (built-in)")
                for field in FIELDS
                if getattr(fields, field) is not None
            }
        if name not in self.custom:
            known = ", ".join(self.names)
            raise ProfileError(f"{key}: unknown profile {name!r}; known profiles: {known}")
        inner = self.expand(self.custom[name], f"profiles.{name}", (*seen, name))
        return {
            field: (value, f"{key} = {name!r} ({where})") for field, (value, where) in inner.items()
        }

    def resolve(self, levels: Sequence[Level]) -> ResolvedProfile:
        """Field by field, the first level (highest precedence first) that sets it wins; the
        ``pools`` of every level add up, by name. ``halt`` and ``failure_mode`` are one
        setting: a ``failure_mode`` set closer than the ``halt`` (the step's over the plan's,
        the command line's over the plan file's) leaves no halt; at one level, ``halt`` wins.

        The built-in ``default`` profile is the last level and sets every field.

        Raises:
            ProfileError: an unknown or circular profile name, or pools set by a step (they
                are the run's).
        """
        values: dict[str, Any] = {
            "timeout": None,
            "halt": None,
            "max_per_second": None,
            "pools": {},
            "backend": LOCAL,
        }
        sources: dict[str, Source] = {
            name: Source("default", None, f"built-in profile 'default' ({unset})")
            for name, unset in _UNSET.items()
        }
        everything = [*levels, Level("default", None, "profile", "default")]
        # The levels of one place (a step's keys and its automation_profile; the command
        # line's options) rank as one: the first of them.
        first: dict[tuple[str, Path | None], int] = {}
        for index, level in enumerate(everything):
            first.setdefault((level.level, level.file), index)
        rank: dict[str, int] = {}
        pools_from: dict[str, Source] = {}
        ranked: dict[Source, int] = {}
        for index, level in enumerate(reversed(everything)):
            if level.spec is None:
                continue
            for field, (value, key) in self.expand(level.spec, level.key).items():
                source = Source(level.level, level.file, key)
                if field == "pools":
                    if level.level == "step":
                        raise ProfileError(f"{key}: {RUN_POOLS}")
                    # They add up by name (a higher level's pool of the same name wins).
                    values[field] = {**values[field], **value}
                    pools_from.update(dict.fromkeys(value, source))
                    ranked[source] = -index
                else:
                    values[field] = value
                sources[field] = source
                rank[field] = first[(level.level, level.file)]
        values["pools"] = pool_specs(values["pools"])
        if len(set(pools_from.values())) > 1:
            sources["pools"] = _pools_source(pools_from, ranked)
        if values["halt"] is not None and rank["failure_mode"] < rank["halt"]:
            mode, halt = sources["failure_mode"], sources["halt"]
            values["halt"] = None
            sources["halt"] = Source(mode.level, mode.file, f"{mode.key}, over {halt}")
        return ResolvedProfile(**values, sources=sources)


def _pools_source(pools_from: Mapping[str, Source], ranked: Mapping[Source, int]) -> Source:
    """Where pools merged from several levels come from: each level with its pools' names,
    the closest first."""
    by_source: dict[Source, list[str]] = {}
    for name, source in pools_from.items():
        by_source.setdefault(source, []).append(name)
    ordered = sorted(by_source.items(), key=lambda item: ranked[item[0]])
    (closest, names), *others = ordered
    key = f"{closest.key}: {', '.join(names)}"
    for source, names in others:
        where = f"{source.key}: {', '.join(names)}"
        if (source.level, source.file) == (closest.level, closest.file):
            key += f"; {where}"
        else:
            key += f"; {Source(source.level, source.file, where)}"
    return Source(closest.level, closest.file, key)


def step_fields(step: StepModel) -> PlainProfileFields:
    """The profile fields a step sets itself, beside its ``automation_profile`` (checked
    already, by its model). Its ``timeout`` and ``retries`` are its units' (its own, or its
    subplans' defaults: ``UnitBuilder``), so the step's resolved profile shows them."""
    return PlainProfileFields(
        {
            "max_parallel": step.max_parallel,
            "failure_mode": step.failure_mode,
            "timeout": step.timeout,
            "retries": step.retries,
            "idempotent": step.idempotent,
            "halt": step.halt,
            "max_per_second": step.max_per_second,
            "backend": step.backend,
        }
    )


def global_config_path(environ: Mapping[str, str] | None = None) -> Path:
    """``$SUBPLANS_CONFIG``, else ``$XDG_CONFIG_HOME/subplans/config.yaml``, else
    ``~/.config/subplans/config.yaml``."""
    env = os.environ if environ is None else environ
    if env.get("SUBPLANS_CONFIG"):
        return Path(env["SUBPLANS_CONFIG"])
    base = Path(env["XDG_CONFIG_HOME"]) if env.get("XDG_CONFIG_HOME") else Path.home() / ".config"
    return base / "subplans" / "config.yaml"


#: Where a backend set by nothing closer to a nested plan than the global config comes from.
_FAR = frozenset({"global", "default"})


def handed_down(
    profile: ResolvedProfile,
    outer: ResolvedProfile | None,
    scheduler: str | None,
    scheduler_from: str = "--scheduler",
) -> ResolvedProfile:
    """``profile`` with the backend of the unit around its plan (``outer``) unless the plan,
    its action or its step set one, and ``scheduler`` (credited to ``scheduler_from``) where a
    ``dask`` backend names none: a nested plan's subplans go where ``--backend dask`` or the
    outer step sends its own."""
    backend, sources = profile.backend, profile.sources
    given = None if outer is None else outer.sources["backend"]
    if given is not None and given.level not in _FAR and sources["backend"].level in _FAR:
        backend, sources = outer.backend, {**sources, "backend": given}  # type: ignore[union-attr]
    named = backend.at(scheduler)
    if named is not backend:
        source = sources["backend"]
        credited = Source(source.level, source.file, f"{source.key}, {scheduler_from}")
        backend, sources = named, {**sources, "backend": credited}
    if backend is profile.backend and sources is profile.sources:
        return profile
    return replace(profile, backend=backend, sources=sources)
