"""A run's pools as ``status`` shows them, told from the store: each pool's size (as the plan
set it, and as ``subplans limit`` changed it), the units in use, the subplans waiting for it and
the peak.

Nothing is recorded per subplan for it while the run runs: the pools and the units each subplan
takes are written once, with the plan (``writes.register``); the units in use are those of the
subplans recorded running, and the peak is replayed from the subplans' state changes. A
subplan's units are its own, else those its run-time step's template gives it (kind
``template``, the nested plan an item runs included); only a run-time step inside the nested
plan of another run-time step's item is not known to the store (its subplans count none).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from subplans.store.event_chunks import scan_events

__all__ = ["PoolUsage", "pool_usage"]


@dataclass(frozen=True, slots=True)
class PoolUsage:
    """One pool of a run, as the store tells it."""

    name: str
    #: Its capacity as the plan set it.
    size: int
    max_per_second: float | None
    #: Its capacity now (``subplans limit`` may have changed it).
    current: int
    #: Units held by the subplans running now (0 once the run is not running).
    in_use: int
    #: Subplans of running steps, not started, that need more of its units than are free.
    waiting: int
    #: The most units held at once, over the whole run (its resumes included).
    peak: int

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable copy."""
        return {
            "name": self.name,
            "size": self.size,
            "current": self.current,
            "max_per_second": self.max_per_second,
            "in_use": self.in_use,
            "waiting": self.waiting,
            "peak": self.peak,
        }


def pool_usage(
    db: sqlite3.Connection, run_id: str, capacities: Mapping[str, int], *, running: bool
) -> list[PoolUsage]:
    """The pools of ``run_id`` by name; ``capacities`` are those changed while it ran, by pool
    name, and ``running`` whether it runs now (else nothing is in use or waiting)."""
    pools = db.execute(
        "SELECT name, size, max_per_second FROM pools WHERE run_id = ? ORDER BY name", (run_id,)
    ).fetchall()
    if not pools:
        return []
    own: dict[str, dict[str, int]] = {}
    #: By run-time step, then by path below each item's unit.
    templates: dict[str, dict[str, dict[str, int]]] = {}
    for subject, kind, below, pool, units in db.execute(
        "SELECT subject, kind, below, pool, units FROM pool_uses WHERE run_id = ?", (run_id,)
    ):
        if kind == "subplan":
            own.setdefault(subject, {})[pool] = units
        else:
            templates.setdefault(subject, {}).setdefault(below, {})[pool] = units

    def units_of(subplan_id: str) -> Mapping[str, int]:
        found = own.get(subplan_id)
        if found is not None or not templates:
            return found or _NONE
        # A run-time subplan: STEP/ITEM_UNIT[/BELOW], its step the longest such start.
        parts = subplan_id.split("/")
        for end in range(len(parts) - 1, 0, -1):
            template = templates.get("/".join(parts[:end]))
            if template is not None:
                return template.get("/".join(parts[end + 1 :]), _NONE)
        return _NONE

    capacity = {name: capacities.get(name, size) for name, size, _ in pools}
    in_use = dict.fromkeys(capacity, 0)
    waiting = dict.fromkeys(capacity, 0)
    if running and (own or templates):
        steps = {
            step_id
            for (step_id,) in db.execute(
                "SELECT step_id FROM steps WHERE run_id = ? AND state = 'running'", (run_id,)
            )
        }
        pending = []
        for subplan_id, step_id, state in db.execute(
            "SELECT subplan_id, step_id, state FROM subplans WHERE run_id = ? "
            "AND state IN ('running', 'pending')",
            (run_id,),
        ):
            if state == "running":
                _add(in_use, units_of(subplan_id), 1)
            # A run-time subplan's row has no step: its id is under its step's.
            elif (step_id or subplan_id.rpartition("/")[0]) in steps:
                pending.append(units_of(subplan_id))
        for units in pending:
            for pool, n in units.items():
                if n > capacity.get(pool, 0) - in_use.get(pool, 0):
                    waiting[pool] = waiting.get(pool, 0) + 1
    peak = _peak(db, run_id, units_of) if own or templates else {}
    return [
        PoolUsage(
            name,
            size,
            rate,
            capacity[name],
            in_use[name],
            waiting[name],
            max(peak.get(name, 0), in_use[name]),
        )
        for name, size, rate in pools
    ]


_NONE: Mapping[str, int] = {}


def _add(total: dict[str, int], units: Mapping[str, int], sign: int) -> None:
    for pool, n in units.items():
        total[pool] = total.get(pool, 0) + sign * n


def _peak(
    db: sqlite3.Connection, run_id: str, units_of: Callable[[str], Mapping[str, int]]
) -> dict[str, int]:
    """The most units of each pool held at once, replayed from the subplans' state changes: a
    subplan holds its units while it is running. A root ``plan_started`` (the run, or a resume)
    starts afresh: what an interrupted owner left running holds nothing since."""
    held: dict[str, Mapping[str, int]] = {}
    now: dict[str, int] = {}
    peak: dict[str, int] = {}
    for subject, running in _changes(scan_events(db, run_id)):
        if subject is None:
            held.clear()
            now.clear()
            continue
        if running:
            units = _NONE if subject in held else units_of(subject)
            held[subject] = held.get(subject) or units
            _add(now, units, 1)
            for pool in units:
                peak[pool] = max(peak.get(pool, 0), now[pool])
        elif subject in held:
            _add(now, held.pop(subject), -1)
    return peak


def _changes(events: Iterable[tuple[Any, ...]]) -> Iterable[tuple[str | None, bool]]:
    """Each subplan state change as (subplan id, running now), and (None, False) where the root
    plan starts."""
    for _, _, kind, subject, _, element in events:
        if kind == "subplan_state_changed":
            if type(element[4]) is int:  # compact: [time, subplan_id, previous, state, attempt]
                yield subject, element[3] == "running"
            else:  # one with an error: [time, kind, subject, step_id, payload]
                yield subject, element[4]["state"] == "running"
        elif kind == "plan_started" and not subject:
            yield None, False
