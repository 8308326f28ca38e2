"""Turning a batch of events into the rows they write: the event rows, numbered on from the
last ``seq``, and what they change in the subplans, steps and runs tables.

This runs in the recorder's writer thread, which shares the GIL with the event loop, so the
work per event is kept small: state changes (most events) are read with one ``attrgetter``
call, their payload is put together from cached pieces, and they are kept as plain values,
flattened, for statements that bind many rows at once (``batch_writer``).
"""

from __future__ import annotations

import json
import operator
import os
from typing import Any

from subplans.engine.events import Event, StepItemsRead, SubplanStateChanged
from subplans.engine.states import PlanState, StepState, SubplanExecutionState
from subplans.store.liveness import process_start_time

__all__ = ["EndedRow", "EventRows", "RowBuilder", "SubplanRow", "encode"]

#: Compact JSON, as the store keeps it.
encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str).encode

_RUNNING = SubplanExecutionState.RUNNING
_PENDING = SubplanExecutionState.PENDING
_RUN_ENDS = frozenset(state.value for state in PlanState)

#: Read in C, in one call; the fields of a state change row after its seq.
_STATE_FIELDS = operator.attrgetter("time", "subplan_id", "previous", "state", "attempt", "error")
#: The payload of a state change is the JSON of its to_dict() without "event" and "timestamp";
#: an error-free one's is its id and one of a few tails cut from it (``_kind``).
_HEAD = '{"subplan_id":'
_quote = json.encoder.encode_basestring
#: The states as plain strings: sqlite3 binds an enum several times slower than a str.
_STATE_TEXT: dict[SubplanExecutionState, str] = {
    state: state.value for state in SubplanExecutionState
}

_Row = tuple[Any, ...]


#: A subplan's last state in a batch, as its row in ``subplans`` takes it: subplan id, state,
#: attempts, started, finished, exit code, error (JSON).
SubplanRow = tuple[str, str, int, float | None, float | None, int | None, str | None]
#: The same for a subplan that ended without an error: subplan id, state, attempts, started,
#: finished (the statement that writes it sets exit code and error itself).
EndedRow = tuple[str, str, int, float | None, float]


class EventRows:
    """The rows one batch of events writes."""

    __slots__ = (
        "changes",
        "ended",
        "items",
        "others",
        "processes",
        "retries",
        "runs",
        "steps",
        "subplans",
        "terminal",
    )

    def __init__(self) -> None:
        #: State-change event rows, flattened: seq, time, subplan id, payload.
        self.changes: list[Any] = []
        #: Event rows of every other kind.
        self.others: list[_Row] = []
        #: subplan id -> its last state in the batch, when that is an end without an error
        #: (most are); ``subplans`` has the others. A subplan is in one of the two at most.
        self.ended: dict[str, EndedRow] = {}
        self.subplans: dict[str, SubplanRow] = {}
        #: Applied after the state changes, in order.
        self.processes: list[_Row] = []
        self.retries: list[_Row] = []
        self.steps: list[_Row] = []
        #: The items run-time steps read (``step_items``): run id, step id, source, count,
        #: items (JSON), when.
        self.items: list[_Row] = []
        self.runs: list[_Row] = []
        #: True when the batch holds a terminal state: of a subplan, a step or the run.
        self.terminal = False


#: What a state does to its subplan's row: starts it (running), waits (pending), or ends it.
_STARTS, _WAITS, _ENDS = "starts", "waits", "ends"
_MOVES: dict[SubplanExecutionState, str] = {
    state: _STARTS if state is _RUNNING else _WAITS if state is _PENDING else _ENDS
    for state in SubplanExecutionState
}


def _kind(
    previous: SubplanExecutionState | None, state: SubplanExecutionState, attempt: int
) -> tuple[str, str, str]:
    """An error-free state change's state text, the end of its payload, and its move.

    The tail is cut from ``to_dict()``'s JSON of a template event with an empty id: the one
    serialiser writes it, once per shape, and only the id is put in front per event.
    """
    data = SubplanStateChanged("", previous, state, attempt).to_dict()
    del data["event"], data["timestamp"]
    payload = encode(data)
    head = _HEAD + '""'
    assert payload.startswith(head), "subplan_id comes first in to_dict()"
    return _STATE_TEXT[state], payload[len(head) :], _MOVES[state]


class RowBuilder:
    """Numbers a run's events on from ``seq`` and turns them into rows.

    ``known`` are the subplans that have a row already: their pending state needs no write.
    A batch that fails to commit must be forgotten with ``restore`` (see ``mark``).
    """

    __slots__ = ("added", "kinds", "known", "run_id", "seq")

    def __init__(self, run_id: str, seq: int, known: set[str]) -> None:
        self.run_id = run_id
        self.seq = seq
        self.known = known
        #: What went into ``known`` since the last ``mark``, so that ``restore`` can take it
        #: out again (cheaper than a copy of ``known`` per batch).
        self.added: list[str] = []
        #: (previous, state, attempt) -> an error-free state change's ``_kind``.
        self.kinds: dict[tuple[Any, ...], tuple[str, str, str]] = {}

    def mark(self) -> int:
        """Where the builder is: give it to ``restore`` to forget the batch built since."""
        self.added = []
        return self.seq

    def restore(self, mark: int) -> None:
        """Back to ``mark``: the batch built since was not written."""
        self.seq = mark
        self.known.difference_update(self.added)
        self.added = []

    def rows(self, events: list[Event]) -> EventRows:
        """The rows of ``events``, numbered on from the last ``seq``."""
        known, fields_of, kinds = self.known, _STATE_FIELDS, self.kinds
        head, quote, add = _HEAD, _quote, self.added.append
        batch = EventRows()
        ended, subplans = batch.ended, batch.subplans
        get_ended, pop_ended, pop_entry = ended.get, ended.pop, subplans.pop
        extend = batch.changes.extend
        terminal = False
        seq = self.seq
        for seq, event in enumerate(events, self.seq + 1):
            if type(event) is not SubplanStateChanged:
                self._other(event, seq, batch)
                continue
            time, subplan_id, previous, state_enum, attempt, error = fields_of(event)
            if error is not None:
                terminal = self._failure(event, seq, batch) or terminal
                continue
            kind = kinds.get((previous, state_enum, attempt))
            if kind is None:
                kind = kinds[previous, state_enum, attempt] = _kind(previous, state_enum, attempt)
            state, tail, moves = kind
            extend((seq, time, subplan_id, f"{head}{quote(subplan_id)}{tail}"))
            if moves is _ENDS:
                terminal = True
                entry = pop_entry(subplan_id, None) or get_ended(subplan_id)
                started = None if entry is None else entry[3]
                ended[subplan_id] = (subplan_id, state, attempt, started, time)
            elif moves is _STARTS:
                subplans[subplan_id] = (subplan_id, state, attempt, time, None, None, None)
                pop_ended(subplan_id, None)
            elif subplan_id not in known:
                known.add(subplan_id)
                add(subplan_id)
                subplans[subplan_id] = (subplan_id, state, 0, None, None, None, None)
                pop_ended(subplan_id, None)
        self.seq = seq
        batch.terminal = batch.terminal or terminal
        return batch

    def _failure(self, event: SubplanStateChanged, seq: int, batch: EventRows) -> bool:
        """A state change with an error (few): its payload is to_dict()'s, written in full.
        Returns whether it is terminal."""
        subplan_id, time = event.subplan_id, event.time
        payload = event.to_dict()
        del payload["event"], payload["timestamp"]
        described = payload["error"]
        batch.changes.extend((seq, time, subplan_id, encode(payload)))
        state, moves = _STATE_TEXT[event.state], _MOVES[event.state]
        if moves is _STARTS:
            row: SubplanRow = (subplan_id, state, event.attempt, time, None, None, None)
        elif moves is _WAITS:
            if subplan_id in self.known:
                return False
            self.known.add(subplan_id)
            self.added.append(subplan_id)
            row = (subplan_id, state, 0, None, None, None, None)
        else:
            entry = batch.subplans.get(subplan_id) or batch.ended.get(subplan_id)
            started = None if entry is None else entry[3]
            exit_code, error_json = described.get("exit_code"), encode(described)
            row = (subplan_id, state, event.attempt, started, time, exit_code, error_json)
        batch.subplans[subplan_id] = row
        batch.ended.pop(subplan_id, None)
        return moves is _ENDS

    def _other(self, event: Event, seq: int, batch: EventRows) -> None:
        run_id, kind, time = self.run_id, event.kind, event.time
        data = event.to_dict()
        del data["event"], data["timestamp"]
        subject: str | None = data.get("subplan_id") or data.get("plan_id") or None
        step_id: str | None = data.get("step_id")
        if kind in ("dispatch_started", "dispatch_finished"):
            step_id = data["name"]
        batch.others.append((run_id, seq, time, kind, subject, step_id, encode(data)))
        if kind == "subplan_process_started":
            pid = data["pid"]
            if data["subplan_id"] not in self.known:
                self.known.add(data["subplan_id"])
                self.added.append(data["subplan_id"])
            batch.processes.append(
                (
                    run_id,
                    data["subplan_id"],
                    pid,
                    process_start_time(pid),
                    os.path.abspath(data["log_file"]),
                )
            )
        elif kind == "subplan_retrying":
            batch.retries.append((data["attempt"] + 1, run_id, data["subplan_id"]))
        elif kind == "step_state_changed":
            running = data["state"] == StepState.RUNNING
            batch.terminal = batch.terminal or not running
            error = data["error"]
            batch.steps.append(
                (
                    run_id,
                    step_id,
                    data["state"],
                    data["total"],
                    time if running else None,
                    None if running else time,
                    None if error is None else encode(error),
                )
            )
        elif kind == "step_items_read" and not data["recorded"]:
            assert isinstance(event, StepItemsRead)
            items = encode(list(event.items))
            batch.items.append((run_id, step_id, data["source"], data["count"], items, time))
        elif kind == "plan_finished" and data["plan_id"] == "" and data["state"] in _RUN_ENDS:
            batch.terminal = True
            batch.runs.append((data["state"], time, run_id))
