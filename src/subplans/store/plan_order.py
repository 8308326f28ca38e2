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

__all__ = ["in_plan_order"]

#: The first event of each subplan or step of a run: the order in which they appeared.
_FIRST_SEEN = (
    "SELECT {column}, min(seq) FROM events WHERE run_id = ? AND {column} IS NOT NULL "
    "GROUP BY {column}"
)
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
    seen = dict(db.execute(_FIRST_SEEN.format(column="subplan_id"), (run_id,)).fetchall())
    for item, position in zip(found, positions, strict=True):
        name = item.subplan_id
        ranks[name] = _rank(position, seen.get(name), name)
    # Steps after subplans: a single-unit step and its unit share an id, and siblings of one
    # level are all steps (a plan's) or all units (a step's), so the step's rank must win.
    seen = dict(db.execute(_FIRST_SEEN.format(column="step_id"), (run_id,)).fetchall())
    for step_id, position in db.execute(
        "SELECT step_id, position FROM steps WHERE run_id = ?", (run_id,)
    ):
        ranks[step_id] = _rank(position, seen.get(step_id), step_id)

    def key(item: _T) -> list[_Rank]:
        parts = item.subplan_id.split("/")
        prefixes = ("/".join(parts[: end + 1]) for end in range(len(parts)))
        return [ranks[prefix] for prefix in prefixes if prefix in ranks]

    return sorted(found, key=key)


def _rank(position: int | None, appeared: int | None, name: str) -> _Rank:
    if position is not None:
        return (0, float(position), "")
    return (1, float("inf") if appeared is None else float(appeared), name)
