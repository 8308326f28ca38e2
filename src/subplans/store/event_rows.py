"""Turning a batch of events into the rows they write: the batch's chunk of events (see
``event_chunks``), numbered on from the last ``seq``, and what they change in the subplans,
steps and runs tables.

This runs in the recorder's writer thread, which shares the GIL with the event loop, so the
work per event is kept small: state changes (most events) are read with one ``attrgetter``
call, become the short form of a chunk event from cached state texts, and the rows they change
are kept as plain values for statements that bind many rows at once (``batch_writer``).
"""

from __future__ import annotations

import json
import operator
import os
from typing import Any

from subplans.engine.events import Event, StepItemsRead, SubplanStateChanged
from subplans.engine.states import PlanState, StepState, SubplanExecutionState
from subplans.store.event_chunks import SCALE, encode
from subplans.store.liveness import process_start_time

__all__ = ["EndedRow", "EventRows", "RowBuilder", "SubplanRow", "encode"]


_RUNNING = SubplanExecutionState.RUNNING
_PENDING = SubplanExecutionState.PENDING
_RUN_ENDS = frozenset(state.value for state in PlanState)

#: Read in C, in one call; the fields of a state change row after its seq.
_STATE_FIELDS = operator.attrgetter("time", "subplan_id", "previous", "state", "attempt", "error")
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
        "ended",
        "events",
        "items",
        "processes",
        "retries",
        "runs",
        "steps",
        "subplans",
        "terminal",
    )

    def __init__(self) -> None:
        #: The batch's events as its chunk keeps them (``event_chunks``), each as JSON text,
        #: times in units of ``1 / SCALE`` seconds.
        self.events: list[str] = []
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
    """An error-free state change's state text, the end of its chunk event (what follows its
    subplan id), and its move."""
    texts = (None if previous is None else _STATE_TEXT[previous], _STATE_TEXT[state], attempt)
    return _STATE_TEXT[state], "," + encode(texts)[1:], _MOVES[state]


def _units(time: float) -> float:
    """``time`` in ``1 / SCALE`` seconds: an integer when it is a whole number of them."""
    units = time * SCALE
    return int(units) if units.is_integer() else units


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
        add, scale, quote = self.added.append, SCALE, _quote
        batch = EventRows()
        ended, subplans = batch.ended, batch.subplans
        get_ended, pop_ended, pop_entry = ended.get, ended.pop, subplans.pop
        append = batch.events.append
        terminal = False
        for event in events:
            if type(event) is not SubplanStateChanged:
                append(self._other(event, batch))
                continue
            time, subplan_id, previous, state_enum, attempt, error = fields_of(event)
            if error is not None:
                terminal = self._failure(event, batch) or terminal
                continue
            kind = kinds.get((previous, state_enum, attempt))
            if kind is None:
                kind = kinds[previous, state_enum, attempt] = _kind(previous, state_enum, attempt)
            state, tail, moves = kind
            # _units, inline: this runs for most events. Written by hand (a fifth of what the
            # encoder takes for a tuple): a number, the quoted id, and the cached tail.
            units = time * scale
            append(f"[{int(units) if units.is_integer() else units},{quote(subplan_id)}{tail}")
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
        self.seq += len(events)
        batch.terminal = batch.terminal or terminal
        return batch

    def _failure(self, event: SubplanStateChanged, batch: EventRows) -> bool:
        """A state change with an error (few): its payload is to_dict()'s, written in full.
        Returns whether it is terminal."""
        subplan_id, time = event.subplan_id, event.time
        payload = event.to_dict()
        del payload["event"], payload["timestamp"]
        described = payload["error"]
        batch.events.append(encode((_units(time), event.kind, subplan_id, None, payload)))
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

    def _other(self, event: Event, batch: EventRows) -> str:
        """Records what ``event`` (not a state change) changes in ``batch``; returns its chunk
        event."""
        run_id, kind, time = self.run_id, event.kind, event.time
        data = event.to_dict()
        del data["event"], data["timestamp"]
        subject: str | None = data.get("subplan_id") or data.get("plan_id") or None
        step_id: str | None = data.get("step_id")
        if kind in ("dispatch_started", "dispatch_finished"):
            step_id = data["name"]
        text = encode((_units(time), kind, subject, step_id, data))
        if kind == "subplan_process_started":
            pid = data["pid"]
            if data["subplan_id"] not in self.known:
                self.known.add(data["subplan_id"])
                self.added.append(data["subplan_id"])
            # A process on a cluster worker is another machine's: no group of ours to record.
            worker = data.get("worker")
            batch.processes.append(
                (
                    run_id,
                    data["subplan_id"],
                    None if worker else pid,
                    None if worker else process_start_time(pid),
                    # A ``call`` unit's function on a worker has no log file.
                    os.path.abspath(data["log_file"]) if data["log_file"] else None,
                    worker,
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
        return text
