"""Automation profiles: built-in and custom named profiles, the global config file's place, and
field-by-field resolution with provenance (step > plan > action > global > built-in default)
into a ``tree.ResolvedProfile``."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from subplans.engine.config import FailureMode
from subplans.engine.errors import SubplanError
from subplans.plans.plain_models import PlainProfileFields
from subplans.plans.tree import FIELDS, PoolSpec, ResolvedProfile, Source

if TYPE_CHECKING:
    from subplans.plans.models import ProfileSpec

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
    "pool_specs",
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


#: The fields added by the scheduling controls: shown only where something sets them.
OPTIONAL_FIELDS = frozenset({"halt", "max_per_second", "pools"})
#: The fields the built-in ``default`` profile leaves unset, and how that reads.
_UNSET = {
    "timeout": "no timeout",
    "halt": "no halt: failure_mode decides",
    "max_per_second": "no rate limit",
    "pools": "no pools",
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


@dataclass(frozen=True, slots=True)
class Level:
    """One level of precedence: a profile spec given at ``level`` in ``file`` under ``key``."""

    level: str
    file: Path | None
    key: str
    spec: ProfileSpec | PlainProfileFields | None


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
        ``pools`` of every level add up, by name.

        The built-in ``default`` profile is the last level and sets every field.
        """
        values: dict[str, Any] = {
            "timeout": None,
            "halt": None,
            "max_per_second": None,
            "pools": {},
        }
        sources: dict[str, Source] = {
            name: Source("default", None, f"built-in profile 'default' ({unset})")
            for name, unset in _UNSET.items()
        }
        everything = [*levels, Level("default", None, "profile", "default")]
        for level in reversed(everything):
            if level.spec is None:
                continue
            for field, (value, key) in self.expand(level.spec, level.key).items():
                # Pools add up by name (a higher level's pool of the same name wins).
                values[field] = {**values[field], **value} if field == "pools" else value
                sources[field] = Source(level.level, level.file, key)
        values["pools"] = pool_specs(values["pools"])
        return ResolvedProfile(**values, sources=sources)


def global_config_path(environ: Mapping[str, str] | None = None) -> Path:
    """``$SUBPLANS_CONFIG``, else ``$XDG_CONFIG_HOME/subplans/config.yaml``, else
    ``~/.config/subplans/config.yaml``."""
    env = os.environ if environ is None else environ
    if env.get("SUBPLANS_CONFIG"):
        return Path(env["SUBPLANS_CONFIG"])
    base = Path(env["XDG_CONFIG_HOME"]) if env.get("XDG_CONFIG_HOME") else Path.home() / ".config"
    return base / "subplans" / "config.yaml"
