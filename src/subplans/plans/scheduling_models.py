"""The plan format's scheduling fields (issue #14) as pydantic models and types: ``halt``,
``max_per_second``, ``pools`` and ``uses``; ``models`` puts them in profiles, plans and steps.
Their checks beyond types are ``scheduling``'s and the engine's."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    model_validator,
)

from subplans.engine.config import check_rate
from subplans.engine.halting import check_threshold
from subplans.plans.scheduling import check_uses, halt_policy

__all__ = ["Halt", "HaltFields", "MaxPerSecond", "PoolFields", "Pools", "Uses"]


class _Fields(BaseModel):
    # As ``models._Strict``: built on first use.
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True, defer_build=True)


def _text_or_fields(value: object) -> str:
    """Union members told apart by the input's type (as ``models._by_type``)."""
    if isinstance(value, str):
        return "text"
    return "list" if isinstance(value, list) else "fields"


MaxPerSecond = Annotated[
    float,
    Field(gt=0, description="How many subplans start per second at most, evenly spaced."),
    BeforeValidator(check_rate),
]
PoolName = Annotated[
    str,
    Field(pattern=r"^[A-Za-z_][A-Za-z0-9_.-]*$", description="A pool's name."),
]
PoolSize = Annotated[int, Field(strict=True, ge=1, description="How many units the pool has.")]
PoolUnits = Annotated[
    int, Field(strict=True, ge=1, description="How many units of the pool a subplan holds.")
]


class HaltFields(_Fields):
    """When a dispatch stops early: ``when`` (soon: start nothing new; now: also cancel the
    running subplans) a ``fail`` or ``success`` count (N) or share ("P%") is reached."""

    when: Literal["now", "soon"]
    fail: int | str | None = None
    success: int | str | None = None

    @model_validator(mode="before")
    @classmethod
    def _thresholds(cls, value: object) -> object:
        """Each threshold by the engine's one rule, before pydantic would read ``true`` or
        ``1.0`` as the count 1, or say 2.5 is neither an int nor a string."""
        if isinstance(value, dict):
            for name in ("fail", "success"):
                if name in value:
                    value = {**value, name: check_threshold(name, value[name])}
        return value


Halt = Annotated[
    Annotated[str, Tag("text")] | Annotated[HaltFields, Tag("fields")],
    Discriminator(_text_or_fields),
    AfterValidator(halt_policy),
    Field(
        description='GNU parallel\'s form, "soon,fail=3%" or "now,success=10", '
        "or a mapping {when, fail, success}."
    ),
]


class PoolFields(_Fields):
    """A pool with a rate limit besides its size."""

    size: PoolSize
    max_per_second: MaxPerSecond | None = None


def _pool_kind(value: object) -> str:
    return "fields" if isinstance(value, dict) else "pool-size"


Pools = Annotated[
    dict[
        PoolName,
        Annotated[
            Annotated[PoolSize, Tag("pool-size")] | Annotated[PoolFields, Tag("fields")],
            Discriminator(_pool_kind),
        ],
    ],
    Field(
        description="Named pools shared by every step and nested plan of the run: "
        "{api: 4} or {api: {size: 4, max_per_second: 10}}."
    ),
]
Uses = Annotated[
    Annotated[dict[PoolName, PoolUnits], Tag("fields")] | Annotated[list[PoolName], Tag("list")],
    Discriminator(_text_or_fields),
    AfterValidator(check_uses),
    Field(
        description="The pool units a subplan holds while it runs: {api: 1} or [api] "
        "(one unit of each); {} or [] holds none (a subplan's own wins over its step's)."
    ),
]
