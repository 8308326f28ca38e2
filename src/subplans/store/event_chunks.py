"""A run's events as the store keeps them since schema version 3: in chunks, one row of
``event_chunks`` per batch the recorder writes, each event an array in the chunk's JSON.

An event is ``[time, kind, subject, step_id, payload]`` (the payload an object: ``to_dict()``
less ``event`` and ``timestamp``), or, for a state change without an error (most events),
``[time, subplan_id, previous, state, attempt]``: the fifth element, an integer, tells it. An
event's ``seq`` is the chunk's ``first_seq`` plus its place; its time is the stored number
times the chunk's ``time_unit``. The view ``events`` (``schema``) shows the same in SQL; this
module is the one place that writes and reads the format in Python.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported where events are read: the writer process only writes chunks
    from subplans.store.run_details import StoredEvent

__all__ = [
    "SCALE",
    "ChunkEvent",
    "encode",
    "events_of_kind",
    "last_seq",
    "payload_of",
    "read_events",
    "scan_events",
    "write_chunk",
]

#: Units per second of a chunk whose times are all whole numbers of them: an event's time (an
#: epoch float since 2004 is a multiple of 2**-22 s) is then an integer, exactly, which JSON
#: writes in a fraction of the time a float takes. Multiplying by a power of two is exact.
SCALE = 4194304.0
_UNIT = 1 / SCALE

#: A chunk event as read: seq, time, kind, subject, step id, and the element it came from.
ChunkEvent = tuple[int, float, str, str | None, str | None, list[Any]]

#: Past every seq.
_NO_END = 2**62

_INSERT = (
    "INSERT INTO event_chunks (run_id, first_seq, last_seq, time_unit, events) "
    "VALUES (?, ?, ?, ?, ?)"
)
#: Compact JSON, as the store keeps it.
encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str).encode


def write_chunk(
    db: sqlite3.Connection, run_id: str, first_seq: int, events: list[str], *, scaled: bool
) -> None:
    """One row for ``events`` (each the JSON text of an array as described above), numbered
    from ``first_seq``; their times in ``SCALE`` units if ``scaled``, else in seconds."""
    unit = _UNIT if scaled else 1.0
    text = f"[{','.join(events)}]"
    db.execute(_INSERT, (run_id, first_seq, first_seq + len(events) - 1, unit, text))


def last_seq(db: sqlite3.Connection, run_id: str) -> int:
    """The seq of the run's last event, 0 when it has none: one seek of the key (chunks never
    overlap, so the last one by ``first_seq`` ends the run). Read inside the writing
    transaction, it is where the batch's events go on from."""
    row = db.execute(
        "SELECT last_seq FROM event_chunks WHERE run_id = ? ORDER BY first_seq DESC LIMIT 1",
        (run_id,),
    ).fetchone()
    return 0 if row is None else int(row[0])


def scan_events(
    db: sqlite3.Connection,
    run_id: str,
    after_seq: int = 0,
    *,
    before: int = _NO_END,
    containing: str = "",
    backwards: bool = False,
) -> Iterator[ChunkEvent]:
    """The run's events with ``after_seq < seq < before``, in order (last first if
    ``backwards``), without building their payloads; only from the chunks whose JSON text has
    ``containing`` in it (SQLite looks, without decoding them)."""
    rows = db.execute(
        "SELECT first_seq, time_unit, events FROM event_chunks WHERE run_id = ? "
        "AND last_seq > ? AND first_seq < ? AND instr(events, ?) > 0 "
        f"ORDER BY first_seq {'DESC' if backwards else 'ASC'}",
        (run_id, after_seq, before, containing),
    )
    for first_seq, unit, text in rows:
        elements = list(enumerate(json.loads(text), first_seq))
        for seq, element in reversed(elements) if backwards else elements:
            if not after_seq < seq < before:
                continue
            if type(element[4]) is int:
                yield seq, element[0] * unit, "subplan_state_changed", element[1], None, element
            else:
                yield seq, element[0] * unit, element[1], element[2], element[3], element


def read_events(
    db: sqlite3.Connection, run_id: str, after_seq: int, limit: int | None
) -> list[StoredEvent]:
    """The run's events with ``seq > after_seq``, in order, at most ``limit`` (a negative
    one: all, as SQL's ``LIMIT``)."""
    from subplans.store.run_details import StoredEvent

    found: list[StoredEvent] = []
    if limit == 0:
        return found
    for seq, time, kind, subject, step_id, element in scan_events(db, run_id, after_seq):
        found.append(StoredEvent(run_id, seq, time, kind, subject, step_id, payload_of(element)))
        if len(found) == limit:
            break
    return found


def events_of_kind(db: sqlite3.Connection, run_id: str, kind: str) -> list[StoredEvent]:
    """The run's events of ``kind`` (a rare kind: only the chunks that name it are read)."""
    from subplans.store.run_details import StoredEvent

    return [
        StoredEvent(run_id, seq, time, found, subject, step_id, payload_of(element))
        for seq, time, found, subject, step_id, element in scan_events(
            db, run_id, containing=f'"{kind}"'
        )
        if found == kind
    ]


def payload_of(element: list[Any]) -> dict[str, Any]:
    """The payload of a chunk event (as ``scan_events`` gives it)."""
    if type(element[4]) is int:
        subplan_id, previous, state, attempt = element[1:5]
        return {
            "subplan_id": subplan_id,
            "previous": previous,
            "state": state,
            "attempt": attempt,
            "error": None,
        }
    payload: Any = element[4]
    if isinstance(payload, str):  # inserted through the view, not a JSON object: as the table
        payload = json.loads(payload)
    return payload  # type: ignore[no-any-return]
