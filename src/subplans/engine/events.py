"""Structured events and their one serialiser (``to_dict``); ``bus`` carries them to
subscribers (views, logs, stores)."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from enum import Enum
from typing import TYPE_CHECKING, Any, ClassVar

from subplans.engine.clock import utc
from subplans.engine.states import SubplanExecutionState

if TYPE_CHECKING:
    from subplans.engine.config import ParallelExecutionConfig
    from subplans.engine.states import PlanState, StepState

__all__ = [
    "DispatchFinished",
    "DispatchStarted",
    "Event",
    "PlanFinished",
    "PlanStarted",
    "StepItemsRead",
    "StepStateChanged",
    "SubplanProcessStarted",
    "SubplanRetrying",
    "SubplanSkipped",
    "SubplanStateChanged",
    "describe_error",
    "json_ready",
    "state_changed",
]


def describe_error(error: BaseException | None) -> dict[str, Any] | None:
    """A JSON-serialisable description of ``error`` (type, message and known details)."""
    if error is None:
        return None
    described: dict[str, Any] = {"type": type(error).__name__, "message": str(error)}
    for detail in ("exit_code", "signal", "abandoned", "log_file", "output_tail"):
        value = getattr(error, detail, None)
        if value is not None:
            described[detail] = value
    return described


def json_ready(value: object) -> Any:
    """``value`` as JSON types: an enum as its value, an exception described (``describe_error``),
    a mapping with its keys and values converted, a value object (the config) as its
    ``to_dict()``; anything else as it is."""
    if value is None or type(value) in _PLAIN:
        return value
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, BaseException):
        return describe_error(value)
    if isinstance(value, Mapping):
        return {json_ready(key): json_ready(item) for key, item in value.items()}
    to_dict = getattr(value, "to_dict", None)
    return to_dict() if callable(to_dict) else value


_PLAIN = frozenset({str, int, float, bool})


def _payload_fields(cls: type[Event]) -> tuple[str, ...]:
    """The fields an event type puts in its dict: all but ``time`` (given as ``timestamp``)."""
    names = _PAYLOAD_FIELDS.get(cls)
    if names is None:
        names = _PAYLOAD_FIELDS[cls] = tuple(
            f.name for f in fields(cls) if f.name != "time" and not f.metadata.get("local")
        )
    return names


_PAYLOAD_FIELDS: dict[type[Event], tuple[str, ...]] = {}


# Events are created several times per subplan on the hot path, so they are plain slotted
# dataclasses (a frozen one costs four times as much to build); treat them as read-only.
@dataclass(slots=True, kw_only=True)
class Event:
    """Base of every event: what happened and when (``time`` in epoch seconds)."""

    kind: ClassVar[str] = "event"
    time: float = field(default_factory=time.time)

    @property
    def timestamp(self) -> datetime:
        """When it happened, as a UTC datetime."""
        return utc(self.time)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict: ``event`` (the type), ``timestamp`` (ISO 8601, UTC), fields.

        Every field but ``time`` follows in order, converted by ``json_ready``: one serialiser
        for every event type, so that JSON lines and stored events cannot drift apart.
        """
        data: dict[str, Any] = {"event": self.kind, "timestamp": self.timestamp.isoformat()}
        for name in _payload_fields(type(self)):
            value = getattr(self, name)
            # Most values are plain already: spare them a call (this runs for every event).
            data[name] = value if value is None or type(value) in _PLAIN else json_ready(value)
        return data


@dataclass(slots=True)
class SubplanStateChanged(Event):
    """A subplan moved to ``state``; ``previous`` is None for its first (pending) event."""

    kind: ClassVar[str] = "subplan_state_changed"
    subplan_id: str
    previous: SubplanExecutionState | None
    state: SubplanExecutionState
    attempt: int = 0
    error: BaseException | None = None


def state_changed(
    subplan_id: str,
    previous: SubplanExecutionState | None,
    state: SubplanExecutionState,
    attempt: int,
    error: BaseException | None,
    time: float,
) -> SubplanStateChanged:
    """``SubplanStateChanged(subplan_id, previous, state, attempt, error, time=time)``, built in
    half the time: the dispatcher builds three per subplan (a test keeps the two equal)."""
    event = _new(SubplanStateChanged)
    event.time = time
    event.subplan_id = subplan_id
    event.previous = previous
    event.state = state
    event.attempt = attempt
    event.error = error
    return event


_new = object.__new__


@dataclass(slots=True)
class SubplanRetrying(Event):
    """Attempt ``attempt`` of a subplan failed; it runs again after ``delay`` seconds."""

    kind: ClassVar[str] = "subplan_retrying"
    subplan_id: str
    attempt: int
    error: BaseException
    delay: float


@dataclass(slots=True)
class DispatchStarted(Event):
    """A dispatch of ``total`` subplans began under ``config``; ``name`` labels it (e.g. a step).

    ``total`` is None when the count is not known up front: a group (``dispatcher.open()``)
    or a lazy input (a generator, an async iterable) for ``run()`` or ``stream()``.
    """

    kind: ClassVar[str] = "dispatch_started"
    name: str | None
    total: int | None
    config: ParallelExecutionConfig
    #: Which dispatch (in this process): pairs a start with its end whatever the names (0
    #: when unknown). Not in ``to_dict()``.
    dispatch: int = field(default=0, kw_only=True, compare=False, metadata={"local": True})


@dataclass(slots=True)
class DispatchFinished(Event):
    """A dispatch ended: how many subplans ended in each state, and how long it took."""

    kind: ClassVar[str] = "dispatch_finished"
    name: str | None
    counts: Mapping[SubplanExecutionState, int]
    elapsed: float
    #: The ``dispatch`` of its ``DispatchStarted``. Not in ``to_dict()``.
    dispatch: int = field(default=0, kw_only=True, compare=False, metadata={"local": True})


@dataclass(slots=True)
class SubplanSkipped(Event):
    """A subplan was not run because it already completed (``subplans resume``)."""

    kind: ClassVar[str] = "subplan_skipped"
    subplan_id: str
    reason: str


@dataclass(slots=True)
class SubplanProcessStarted(Event):
    """A command subplan started a process group ``pid``, on cluster ``worker`` (None: here)."""

    kind: ClassVar[str] = "subplan_process_started"
    subplan_id: str
    pid: int
    log_file: str
    worker: str | None = None


@dataclass(slots=True)
class PlanStarted(Event):
    """A plan (the root, or a nested one whose ``plan_id`` is its subplan's id) began."""

    kind: ClassVar[str] = "plan_started"
    plan_id: str
    name: str
    file: str
    run_id: str
    steps: int


@dataclass(slots=True)
class PlanFinished(Event):
    """A plan ended: ``state`` is completed, failed or cancelled."""

    kind: ClassVar[str] = "plan_finished"
    plan_id: str
    state: PlanState
    elapsed: float


@dataclass(slots=True)
class StepStateChanged(Event):
    """A step moved to ``state``: running, completed, failed or skipped."""

    kind: ClassVar[str] = "step_state_changed"
    step_id: str
    previous: StepState | None
    state: StepState
    total: int = 0
    error: BaseException | None = None


@dataclass(slots=True)
class StepItemsRead(Event):
    """A run-time ``for_each`` step has its items, as it starts: ``count`` of them from
    ``source`` (``lines of 'files.txt'``). ``recorded`` is True when a resumed run reused the
    items the step read when it first started, rather than reading its source again.

    ``items`` are carried for the store (which records them, for ``resume``) but left out of
    ``to_dict()``: the JSON lines say where the items came from and how many there were.
    """

    kind: ClassVar[str] = "step_items_read"
    step_id: str
    source: str
    count: int
    recorded: bool = False
    items: Sequence[str] = ()


_PAYLOAD_FIELDS[StepItemsRead] = ("step_id", "source", "count", "recorded")
