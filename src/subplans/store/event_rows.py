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
from typing import Any, NamedTuple

from subplans.engine.events import Event, SubplanStateChanged, describe_error
from subplans.engine.states import PlanState, StepState, SubplanExecutionState
from subplans.store.liveness import process_start_time

__all__ = ["EventRows", "RowBuilder", "SubplanRow", "encode"]

#: Compact JSON, as the store keeps it.
encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str).encode

_RUNNING = SubplanExecutionState.RUNNING
_PENDING = SubplanExecutionState.PENDING
_RUN_ENDS = frozenset(state.value for state in PlanState)

#: Read in C, in one call; the fields of a state change row after its seq.
_STATE_FIELDS = operator.attrgetter("time", "subplan_id", "previous", "state", "attempt", "error")
#: The payload of an error-free state change is its id and one of a few tails: the same JSON
#: as the event's to_dict() without "event" and "timestamp".
_HEAD = '{"subplan_id":'
_quote = json.encoder.encode_basestring
#: The states as plain strings: sqlite3 binds an enum several times slower than a str.
_STATE_TEXT: dict[SubplanExecutionState, str] = {
    state: state.value for state in SubplanExecutionState
}
#: Compared by identity: a state's text is always the one object in ``_STATE_TEXT``.
_RUNNING_TEXT = _STATE_TEXT[_RUNNING]
_PENDING_TEXT = _STATE_TEXT[_PENDING]
_TEXT: dict[SubplanExecutionState | None, str | None] = {
    None: None,
    **{state: state.value for state in SubplanExecutionState},
}

_Row = tuple[Any, ...]


class SubplanRow(NamedTuple):
    """A subplan's last state in a batch, as its row in ``subplans`` takes it."""

    subplan_id: str
    state: str
    attempts: int
    started: float | None
    finished: float | None
    exit_code: int | None
    #: JSON.
    error: str | None


class EventRows:
    """The rows one batch of events writes."""

    __slots__ = (
        "changes",
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
        #: subplan id -> its last state in the batch.
        self.subplans: dict[str, SubplanRow] = {}
        #: Applied after the state changes, in order.
        self.processes: list[_Row] = []
        self.retries: list[_Row] = []
        self.steps: list[_Row] = []
        self.runs: list[_Row] = []
        #: True when the batch holds a terminal state: of a subplan, a step or the run.
        self.terminal = False


def _tail(previous: SubplanExecutionState | None, state: str, attempt: int) -> str:
    before = "null" if previous is None else f'"{previous.value}"'
    return f',"previous":{before},"state":"{state}","attempt":{attempt},"error":null}}'


class RowBuilder:
    """Numbers a run's events on from ``seq`` and turns them into rows.

    ``known`` are the subplans that have a row already: their pending state needs no write.
    A batch that fails to commit must be forgotten with ``restore`` (see ``mark``).
    """

    __slots__ = ("known", "run_id", "seq", "tails")

    def __init__(self, run_id: str, seq: int, known: set[str]) -> None:
        self.run_id = run_id
        self.seq = seq
        self.known = known
        #: (previous, state, attempt) -> the end of an error-free state change's payload.
        self.tails: dict[tuple[Any, ...], str] = {}

    def mark(self) -> tuple[int, set[str]]:
        """Where the builder is: give it to ``restore`` to forget the batches built since."""
        return self.seq, set(self.known)

    def restore(self, mark: tuple[int, set[str]]) -> None:
        """Back to ``mark``: the batches built since were not written."""
        self.seq, self.known = mark

    def rows(self, events: list[Event]) -> EventRows:
        """The rows of ``events``, numbered on from the last ``seq``."""
        seq, known, fields_of, text = self.seq, self.known, _STATE_FIELDS, _STATE_TEXT
        head, quote, tails = _HEAD, _quote, self.tails
        # Named rows made with tuple.__new__: namedtuple's own __new__ costs five times more.
        row = tuple.__new__
        batch = EventRows()
        subplans, get_entry = batch.subplans, batch.subplans.get
        extend = batch.changes.extend
        terminal = False
        for event in events:
            seq += 1
            if type(event) is not SubplanStateChanged:
                self._other(event, seq, batch)
                continue
            time, subplan_id, previous, state_enum, attempt, error = fields_of(event)
            state = text[state_enum]
            if error is None:
                exit_code = error_json = None
                tail = tails.get((previous, state_enum, attempt))
                if tail is None:
                    tail = tails[previous, state_enum, attempt] = _tail(previous, state, attempt)
                extend((seq, time, subplan_id, head + quote(subplan_id) + tail))
            else:
                described = describe_error(error) or {}
                exit_code, error_json = described.get("exit_code"), encode(described)
                payload = {
                    "subplan_id": subplan_id,
                    "previous": _TEXT[previous],
                    "state": state,
                    "attempt": attempt,
                    "error": described,
                }
                extend((seq, time, subplan_id, encode(payload)))
            if state is _RUNNING_TEXT:
                subplans[subplan_id] = row(
                    SubplanRow, (subplan_id, state, attempt, time, None, None, None)
                )
            elif state is _PENDING_TEXT:
                if subplan_id not in known:
                    known.add(subplan_id)
                    subplans[subplan_id] = row(
                        SubplanRow, (subplan_id, state, 0, None, None, None, None)
                    )
            else:
                terminal = True
                entry = get_entry(subplan_id)
                started = None if entry is None else entry.started
                subplans[subplan_id] = row(
                    SubplanRow, (subplan_id, state, attempt, started, time, exit_code, error_json)
                )
        self.seq = seq
        batch.terminal = batch.terminal or terminal
        return batch

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
            self.known.add(data["subplan_id"])
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
        elif kind == "plan_finished" and data["plan_id"] == "" and data["state"] in _RUN_ENDS:
            batch.terminal = True
            batch.runs.append((data["state"], time, run_id))
