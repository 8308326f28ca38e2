"""Stand-ins for the plan models, without pydantic: what ``plain_plans`` makes of a plan of the
common shape, and the built-in profiles.

Importing pydantic takes about 40 ms, a fifth of a run's start, and a plan that ``plain_plans``
takes needs none of it. The loader only reads a model's fields (and ``model_fields_set``), so a
stand-in carries the same fields, by the same names, with the values pydantic would give them
(``tests/test_plain_plans.py`` holds them equal) and the keys written in ``model_fields_set``.
They are typed as the models they stand for where they are handed on (``plain_plans``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from subplans.engine.config import FailureMode
    from subplans.engine.halting import HaltPolicy
    from subplans.plans.backends import Backend
    from subplans.plans.models import PoolFields

from subplans.plans.tree import FIELDS

__all__ = [
    "PlainCommand",
    "PlainGlob",
    "PlainLines",
    "PlainPlan",
    "PlainProfileFields",
    "PlainStep",
    "PlainSubplan",
    "PlainTemplate",
]


class _Plain:
    """A model's fields as attributes (each absent one at its model's default), and the names
    of those given in ``model_fields_set``."""

    __slots__ = ("model_fields_set",)
    model_fields_set: set[str]
    #: Every field of the model, in its order, with its default.
    DEFAULTS: ClassVar[dict[str, Any]] = {}

    def __init__(self, fields: dict[str, Any]) -> None:
        setter = object.__setattr__  # frozen, as the models are
        setter(self, "model_fields_set", set(fields))
        for name, default in self.DEFAULTS.items():
            setter(self, name, fields.get(name, default))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is frozen, as its model is")

    __delattr__ = __setattr__  # type: ignore[assignment]

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.DEFAULTS)
        return f"{type(self).__name__}({shown})"

    def __eq__(self, other: object) -> bool:
        # Equal to its model of the same values too, as the model was to itself.
        kind = type(other)
        if kind is not type(self) and not (
            kind.__module__ == "subplans.plans.models" and kind.__name__ == _MODEL[type(self)]
        ):
            return NotImplemented
        return all(getattr(self, name) == getattr(other, name) for name in self.DEFAULTS)

    def __hash__(self) -> int:
        """The model's hash (a frozen pydantic model's: its values'), so that a stand-in and
        its model that are equal hash alike; unhashable where a value is, as the model's."""
        return hash(tuple(getattr(self, name) for name in self.DEFAULTS))


_UNIT = {
    "run": None,
    "call": None,
    "plan": None,
    "with_": None,
    "timeout": None,
    "retries": None,
    "env": None,
    "cwd": None,
    "idempotent": None,
    "uses": None,
}


class PlainSubplan(_Plain):
    """``models.SubplanModel``."""

    DEFAULTS: ClassVar[dict[str, Any]] = {**_UNIT, "name": None}
    __slots__ = tuple(DEFAULTS)


class PlainTemplate(_Plain):
    """``models.SubplanTemplate``."""

    DEFAULTS: ClassVar[dict[str, Any]] = {**_UNIT, "name": "{item}"}
    __slots__ = tuple(DEFAULTS)


class PlainStep(_Plain):
    """``models.StepModel``."""

    DEFAULTS: ClassVar[dict[str, Any]] = {
        **_UNIT,
        "name": None,
        "subplans": None,
        "for_each": None,
        "subplan": None,
        "always": False,
        "max_parallel": None,
        "failure_mode": None,
        "halt": None,
        "max_per_second": None,
        "backend": None,
        "automation_profile": None,
    }
    __slots__ = tuple(DEFAULTS)


class PlainPlan(_Plain):
    """``models.PlanFile``."""

    DEFAULTS: ClassVar[dict[str, Any]] = {
        "schema_": None,
        "name": None,
        "description": None,
        "action": None,
        "automation_profile": None,
        "pools": None,
        "steps": None,
    }
    __slots__ = tuple(DEFAULTS)


class PlainGlob(_Plain):
    """``models.ForEachGlob``."""

    DEFAULTS: ClassVar[dict[str, Any]] = {"glob": None, "exclude": None, "allow_empty": False}
    __slots__ = tuple(DEFAULTS)


class PlainLines(_Plain):
    """``models.ForEachLines``."""

    DEFAULTS: ClassVar[dict[str, Any]] = {"lines": None, "allow_empty": False}
    __slots__ = tuple(DEFAULTS)


class PlainCommand(_Plain):
    """``models.ForEachCommand``."""

    DEFAULTS: ClassVar[dict[str, Any]] = {"command": None, "allow_empty": False}
    __slots__ = tuple(DEFAULTS)


class PlainProfileFields(_Plain):
    """``models.ProfileFields``: for values checked already (the built-in profiles, a step's
    own fields)."""

    profile: str | None
    max_parallel: int | None
    failure_mode: FailureMode | None
    cancel_grace: float | None
    timeout: float | None
    retries: int | None
    idempotent: bool | None
    halt: HaltPolicy | None
    max_per_second: float | None
    pools: dict[str, int | PoolFields] | None
    backend: Backend | None
    #: ``tree.FIELDS``, the one list of them (``tests/test_plain_models.py`` ties both to the
    #: model's).
    DEFAULTS: ClassVar[dict[str, Any]] = {"profile": None, **dict.fromkeys(FIELDS)}
    __slots__ = tuple(DEFAULTS)


#: The model each stand-in stands for, by its name in ``models`` (not imported: pydantic).
_MODEL: dict[type[_Plain], str] = {
    PlainPlan: "PlanFile",
    PlainStep: "StepModel",
    PlainSubplan: "SubplanModel",
    PlainTemplate: "SubplanTemplate",
    PlainGlob: "ForEachGlob",
    PlainLines: "ForEachLines",
    PlainCommand: "ForEachCommand",
    PlainProfileFields: "ProfileFields",
}
