"""Events of the scheduling controls: a limit changed while running, a dispatch halted.

Kept beside ``events`` (whose ``Event`` and serialiser they use) so that the per-subplan
events stay in one module of their own size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from subplans.engine.events import Event

__all__ = ["DispatchHalted", "LimitChanged"]


@dataclass(slots=True)
class LimitChanged(Event):
    """A cap changed while running: a dispatch's ``max_parallel`` (``pool`` None; ``name`` is
    the dispatch's, e.g. a step), or the capacity of the pool named ``pool``.

    ``previous`` and ``limit`` are the old and the new cap; lowering it cancels nothing.
    """

    kind: ClassVar[str] = "limit_changed"
    name: str | None
    pool: str | None
    previous: int
    limit: int


@dataclass(slots=True)
class DispatchHalted(Event):
    """A dispatch reached a threshold of its ``HaltPolicy``: ``threshold`` is "fail" or
    "success", ``policy`` its string form (``soon,fail=3%``), ``reason`` what the subplans it
    did not start (or cancelled) were told."""

    kind: ClassVar[str] = "dispatch_halted"
    name: str | None
    threshold: str
    policy: str
    reason: str
