"""The runnable tree a plan file becomes: plans, steps, units and their resolved profiles.

Plain frozen dataclasses over the engine's types, so that whatever reads a tree (the executor,
the runners, the store) loads no pydantic and no YAML; only loading a file does.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from subplans.engine.config import FailureMode, ParallelExecutionConfig
from subplans.engine.halting import HaltPolicy
from subplans.plans.backends import LOCAL, Backend

if TYPE_CHECKING:
    from subplans.plans.for_each import ItemSource

__all__ = [
    "FIELDS",
    "PlanNode",
    "PoolSpec",
    "ResolvedProfile",
    "Source",
    "StepItems",
    "StepNode",
    "UnitDraft",
    "UnitKind",
    "UnitNode",
    "inherit",
]

#: The fields a profile sets, in display order.
FIELDS = (
    "max_parallel",
    "failure_mode",
    "cancel_grace",
    "timeout",
    "retries",
    "idempotent",
    "halt",
    "max_per_second",
    "pools",
    "backend",
)

UnitKind = Literal["run", "call", "plan"]


@dataclass(frozen=True, slots=True)
class Source:
    """Where an effective field came from: the level, the file (if any) and the key."""

    level: str
    file: Path | None
    key: str

    def __str__(self) -> str:
        where = f"{self.file}: {self.key}" if self.file is not None else self.key
        return f"{self.level} ({where})"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable copy."""
        return {
            "level": self.level,
            "file": None if self.file is None else str(self.file),
            "key": self.key,
        }


@dataclass(frozen=True, slots=True)
class PoolSpec:
    """A named pool shared by a whole run: how many units it has, and how fast they start."""

    size: int
    max_per_second: float | None = None

    def __str__(self) -> str:
        return (
            str(self.size)
            if self.max_per_second is None
            else f"{self.size} at {self.max_per_second:g}/s"
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable copy."""
        return {"size": self.size, "max_per_second": self.max_per_second}


@dataclass(frozen=True, slots=True)
class ResolvedProfile:
    """Every profile field's effective value, with where each came from."""

    max_parallel: int
    failure_mode: FailureMode
    cancel_grace: float
    timeout: float | None
    retries: int
    #: False: subplans must not run twice (resume asks before running one again).
    idempotent: bool
    sources: Mapping[str, Source]
    #: When a dispatch stops early (None: as ``failure_mode`` says).
    halt: HaltPolicy | None = None
    #: How many subplans start per second at most (None: no rate limit).
    max_per_second: float | None = None
    #: The pools the plan declares, by name (the run shares them: ``PlanNode.pools``).
    pools: Mapping[str, PoolSpec] = field(default_factory=dict)
    #: Where its ``run`` and ``call`` subplans run (issue #12).
    backend: Backend = LOCAL

    def config(self, *, extra_grace: float = 0.0) -> ParallelExecutionConfig:
        """The dispatcher configuration; ``extra_grace`` leaves runners time to SIGKILL and reap."""
        return ParallelExecutionConfig(
            max_parallel=self.max_parallel,
            failure_mode=self.failure_mode,
            cancel_grace=self.cancel_grace + extra_grace,
            halt=self.halt,
            max_per_second=self.max_per_second,
        )

    def to_dict(self) -> dict[str, Any]:
        """Values and provenance, JSON-serialisable."""
        values = {name: getattr(self, name) for name in FIELDS}
        values["failure_mode"] = self.failure_mode.value
        values["halt"] = None if self.halt is None else str(self.halt)
        values["pools"] = {name: pool.to_dict() for name, pool in self.pools.items()}
        values["backend"] = self.backend.to_dict()
        return {
            "values": values,
            "sources": {name: self.sources[name].to_dict() for name in FIELDS},
        }


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
    #: Units of the run's pools it holds while it runs, by pool name.
    uses: Mapping[str, int] = field(default_factory=dict)
    #: Where a ``run`` or ``call`` unit's work runs (a nested plan runs on the driver).
    backend: Backend = LOCAL


class UnitDraft:
    """A ``UnitNode`` being built: its fields, in its order, every one given, not frozen.

    ``finished()`` turns it into the ``UnitNode`` it describes, in place. A frozen dataclass's
    ``__init__`` sets each field through ``object.__setattr__``, about five times the cost of
    these plain assignments, and a million-item ``for_each`` builds a million nodes. The two
    classes must keep the same slots in the same order: Python refuses the change of class
    otherwise, and a test compares them. A plain class: building it as a dataclass took a
    command's start 1.5 ms (#10).
    """

    __slots__ = (  # noqa: RUF023  # UnitNode's slots, in its order
        "id",
        "name",
        "kind",
        "folder",
        "cwd",
        "command",
        "call",
        "kwargs",
        "plan",
        "timeout",
        "retries",
        "env",
        "item",
        "idempotent",
        "uses",
        "backend",
    )

    def __init__(
        self,
        id: str,
        name: str,
        kind: UnitKind,
        folder: Path,
        cwd: Path,
        command: str | tuple[str, ...] | None,
        call: str | None,
        kwargs: Mapping[str, Any],
        plan: PlanNode | None,
        timeout: float | None,
        retries: int,
        env: Mapping[str, str],
        item: str | None,
        idempotent: bool,
        uses: Mapping[str, int],
        backend: Backend,
    ) -> None:
        self.id = id
        self.name = name
        self.kind = kind
        self.folder = folder
        self.cwd = cwd
        self.command = command
        self.call = call
        self.kwargs = kwargs
        self.plan = plan
        self.timeout = timeout
        self.retries = retries
        self.env = env
        self.item = item
        self.idempotent = idempotent
        self.uses = uses
        self.backend = backend

    def finished(self) -> UnitNode:
        """This very object, now the frozen ``UnitNode`` of the same fields."""
        self.__class__ = UnitNode  # type: ignore[assignment]  # same slots: same layout
        return self  # type: ignore[return-value]


@dataclass(frozen=True, slots=True)
class StepItems:
    """A ``for_each`` source read when its step starts, and how its items become units.

    ``expand`` makes the step's units of the items read (raising ``ProblemsError`` for an item
    that gives an invalid or duplicate name, or a nested plan that cannot be loaded); ``env``
    and ``item`` are what a nested plan around the step handed down (``inherit``); ``uses``
    the pool units each of its subplans will take.
    """

    source: ItemSource
    folder: Path
    expand: Callable[[Sequence[str]], tuple[UnitNode, ...]]
    env: Mapping[str, str] = field(default_factory=dict)
    item: str | None = None
    uses: Mapping[str, int] = field(default_factory=dict)

    def __str__(self) -> str:
        from subplans.plans.for_each import describe_source  # for_each steps only (#10)

        return describe_source(self.source)

    def units(self, items: Sequence[str]) -> tuple[UnitNode, ...]:
        """The step's units, one per item, with what nested plans around it handed down."""
        units = self.expand(items)
        if not self.env and self.item is None:
            return units
        return tuple(_handed_down(unit, self.env, self.item) for unit in units)


@dataclass(frozen=True, slots=True)
class StepNode:
    """A step of a plan: its units and its resolved profile.

    ``items`` is set when they come from a source read when the step starts: ``units`` is then
    empty until the executor expands the step (``StepItems.units``).
    """

    id: str
    name: str
    always: bool
    single: bool
    profile: ResolvedProfile
    units: tuple[UnitNode, ...]
    items: StepItems | None = None


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
    #: The pools its subplans may use: its own and those of the plans around it (theirs win).
    pools: Mapping[str, PoolSpec] = field(default_factory=dict)

    def walk_steps(self) -> list[StepNode]:
        """Every step of the tree known now, depth first, in plan order (a nested plan's steps
        after its unit's step)."""
        steps: list[StepNode] = []
        for step in self.steps:
            steps.append(step)
            for unit in step.units:
                if unit.plan is not None:
                    steps.extend(unit.plan.walk_steps())
        return steps

    def walk_units(self) -> list[UnitNode]:
        """Every unit of the tree, depth first, in plan order."""
        units: list[UnitNode] = []
        for step in self.steps:
            for unit in step.units:
                units.append(unit)
                if unit.plan is not None:
                    units.extend(unit.plan.walk_units())
        return units


def inherit(plan: PlanNode, env: Mapping[str, str], item: str | None) -> PlanNode:
    """``plan`` with ``env`` under each of its units' own env, and ``item`` where they have none."""
    steps = []
    for step in plan.steps:
        units = tuple(_handed_down(unit, env, item) for unit in step.units)
        items = step.items
        if items is not None:  # its units, once made, get the same
            items = replace(
                items,
                env={**env, **items.env},
                item=items.item if items.item is not None else item,
            )
        steps.append(replace(step, units=units, items=items))
    return replace(plan, steps=tuple(steps))


def _handed_down(unit: UnitNode, env: Mapping[str, str], item: str | None) -> UnitNode:
    nested = None if unit.plan is None else inherit(unit.plan, env, item)
    return replace(
        unit,
        env={**env, **unit.env},
        item=unit.item if unit.item is not None else item,
        plan=nested,
    )
