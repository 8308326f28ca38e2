"""A run's subplans in plan order, the run-time ones included.

The store gives every step and subplan the plan names when it is loaded a ``position`` (depth
first); those a run-time ``for_each`` makes when its step starts (and the steps of the plans
nested in them) have none. Each is placed by its id's path: under its step or nested plan (the
longest start of its id, at a ``/``, that the store knows), among its siblings in the order
they first appeared in the run's events (units start in item order; the steps of a nested plan
one after the other). The events are read only when the run has such subplans.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Protocol, TypeVar

from subplans.store.event_chunks import scan_events

__all__ = ["in_plan_order"]

#: Where a sibling goes: stored positions first, in order; then in order of appearance.
_Rank = tuple[int, float, str]


class _Placed(Protocol):
    @property
    def subplan_id(self) -> str: ...


_T = TypeVar("_T", bound=_Placed)


def in_plan_order(
    db: sqlite3.Connection, run_id: str, found: Sequence[_T], positions: Sequence[int | None]
) -> list[_T]:
    """``found`` (with its stored ``positions``) in plan order, the run-time subplans under
    the step or nested plan their ids start with; as they are when every one has a position."""
    if all(position is not None for position in positions):
        return list(found)
    ranks: dict[str, _Rank] = {}
    seen, steps_seen = _first_seen(db, run_id)
    for item, position in zip(found, positions, strict=True):
        name = item.subplan_id
        ranks[name] = _rank(position, seen.get(name), name)
    # Steps after subplans: a single-unit step and its unit share an id, and siblings of one
    # level are all steps (a plan's) or all units (a step's), so the step's rank must win.
    for step_id, position in db.execute(
        "SELECT step_id, position FROM steps WHERE run_id = ?", (run_id,)
    ):
        ranks[step_id] = _rank(position, steps_seen.get(step_id), step_id)

    def key(item: _T) -> list[_Rank]:
        parts = item.subplan_id.split("/")
        prefixes = ("/".join(parts[: end + 1]) for end in range(len(parts)))
        return [ranks[prefix] for prefix in prefixes if prefix in ranks]

    return sorted(found, key=key)


def _first_seen(db: sqlite3.Connection, run_id: str) -> tuple[dict[str, int], dict[str, int]]:
    """The seq of the first event of each subplan, and of each step, of the run: the order in
    which they appeared."""
    subplans: dict[str, int] = {}
    steps: dict[str, int] = {}
    for seq, _, _, subject, step_id, _ in scan_events(db, run_id):
        if subject is not None and subject not in subplans:
            subplans[subject] = seq
        if step_id is not None and step_id not in steps:
            steps[step_id] = seq
    return subplans, steps


def _rank(position: int | None, appeared: int | None, name: str) -> _Rank:
    if position is not None:
        return (0, float(position), "")
    return (1, float("inf") if appeared is None else float(appeared), name)
