"""Turning a batch of events into the rows they write: the batch's chunk of events (see
``event_chunks``), and what they change in the subplans,
steps and runs tables.

This runs in the recorder's writer process, on events made plain (``event_pickling``): state
changes are ``RawMove`` tuples whose states are their interned values and whose error is its
description, other events ``[kind, time, payload, extra]`` lists. The work per event is kept
small: an error-free state change (most events) becomes the short form of a chunk event from
cached state texts, and the rows they change are kept as plain values for statements that bind
many rows at once (``batch_writer``), one statement per kind of row so that none binds a
``None``: sqlite3 adapts each ``None`` through its adapter protocol, 360 ns, twenty times
binding a float. It imports nothing of the engine but its states (the process starts quick).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

from subplans.engine.states import PlanState, StepState, SubplanExecutionState
from subplans.store.event_chunks import SCALE, encode

__all__ = ["NO_TIME", "EndedRow", "EventRows", "RowBuilder", "RunningRow", "SubplanRow", "encode"]


#: The states as the batches name them: interned values (``event_pickling``).
_RUNNING = sys.intern(SubplanExecutionState.RUNNING.value)
_PENDING = sys.intern(SubplanExecutionState.PENDING.value)
_RUN_ENDS = frozenset(state.value for state in PlanState)
_quote = json.encoder.encode_basestring

#: A plain item of a batch (``event_pickling``): a state change, or another event.
Item = tuple[float, str, str | None, str, int, dict[str, Any] | None] | list[Any]

_Row = tuple[Any, ...]


#: A subplan's last state in a batch, as its row in ``subplans`` takes it: subplan id, state,
#: attempts, started, finished, exit code, error (JSON).
SubplanRow = tuple[str, str, int, float | None, float | None, int | None, str | None]
#: The same for a subplan that ended without an error: subplan id, state, attempts, started
#: (``NO_TIME`` when its start is not in the batch), finished (the statement that writes it sets
#: exit code and error itself).
EndedRow = tuple[str, str, int, float, float]
#: The same for a subplan running at the end of the batch: subplan id, attempts, started.
RunningRow = tuple[str, int, float]

#: A time the batch does not know, bound where ``None`` would be: SQLite stores a NaN as NULL,
#: and sqlite3 binds it in a seventh of the time it takes for ``None``.
NO_TIME = float("nan")


class EventRows:
    """The rows one batch of events writes."""

    __slots__ = (
        "ended",
        "events",
        "items",
        "processes",
        "retries",
        "running",
        "runs",
        "steps",
        "subplans",
        "terminal",
        "waiting",
    )

    def __init__(self) -> None:
        #: The batch's events as its chunk keeps them (``event_chunks``), each as JSON text,
        #: times in units of ``1 / SCALE`` seconds.
        self.events: list[str] = []
        #: subplan id -> its last state in the batch: an end without an error (most), running
        #: (without an error), or any other (``subplans``: with an error). A subplan is in one
        #: of the three at most.
        self.ended: dict[str, EndedRow] = {}
        self.running: dict[str, RunningRow] = {}
        self.subplans: dict[str, SubplanRow] = {}
        #: The subplans without a row whose pending state (without an error) is in the batch:
        #: a row is made for each, unless another state of the batch makes it.
        self.waiting: list[str] = []
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
_MOVES: dict[str, str] = {
    state.value: _STARTS
    if state.value == _RUNNING
    else _WAITS
    if state.value == _PENDING
    else _ENDS
    for state in SubplanExecutionState
}


#: An error-free state change's state text, the end of its chunk event (what follows its
#: subplan id), its move, and the previous state and attempt it is for.
_Kind = tuple[str, str, str, str | None, int]


def _kind(previous: str | None, state: str, attempt: int) -> _Kind:
    """An error-free state change's ``_Kind``."""
    return state, "," + encode((previous, state, attempt))[1:], _MOVES[state], previous, attempt


def _units(time: float) -> float:
    """``time`` in ``1 / SCALE`` seconds: an integer when it is a whole number of them."""
    units = time * SCALE
    return int(units) if units.is_integer() else units


class RowBuilder:
    """Turns a run's events into rows (``batch_writer`` numbers them as it writes them).

    ``known`` are the subplans that have a row already: their pending state needs no write.
    A batch that fails to commit must be forgotten with ``restore`` (see ``mark``).
    """

    __slots__ = ("added", "kinds", "known", "latest", "run_id")

    def __init__(self, run_id: str, known: set[str]) -> None:
        self.run_id = run_id
        self.known = known
        #: What went into ``known`` since the last ``mark``, so that ``restore`` can take it
        #: out again (cheaper than a copy of ``known`` per batch).
        self.added: list[str] = []
        #: (previous, state, attempt) -> an error-free state change's ``_kind``.
        self.kinds: dict[tuple[Any, ...], _Kind] = {}
        #: state -> the ``_Kind`` last used for it: nearly always the one of the next change
        #: to that state (a dict lookup by the state alone, not by a tuple of three).
        self.latest: dict[str, _Kind] = {}

    def mark(self) -> None:
        """From here on, what ``restore`` forgets."""
        self.added = []

    def restore(self) -> None:
        """Back to the last ``mark``: the batch built since was not written."""
        self.known.difference_update(self.added)
        self.added = []

    def rows(self, events: Sequence[Item]) -> EventRows:
        """The rows of ``events`` (plain, ``event_pickling``)."""
        known, kinds, latest = self.known, self.kinds, self.latest
        add, scale, quote, no_time = self.added.append, SCALE, _quote, NO_TIME
        batch = EventRows()
        ended, running, subplans = batch.ended, batch.running, batch.subplans
        get_ended, pop_ended, pop_running, pop_entry = (
            ended.get,
            ended.pop,
            running.pop,
            subplans.pop,
        )
        append, wait = batch.events.append, batch.waiting.append
        terminal = False
        # A subplan pulled from a lazy input is pending and running at one time (the same
        # time, and id object: pickle keeps a batch's strings shared), one event after the
        # other: its number and quoted id once.
        last_time: object = None
        last_id: object = None
        head = ""
        for event in events:
            if type(event) is not tuple:
                append(self._other(event, batch))  # type: ignore[arg-type]
                continue
            time, subplan_id, previous, state, attempt, error = event
            if error is not None:
                terminal = self._failure(event, batch) or terminal  # type: ignore[arg-type]
                continue
            kind = latest.get(state)
            if kind is None or kind[3] is not previous or kind[4] != attempt:
                kind = kinds.get((previous, state, attempt))
                if kind is None:
                    kind = kinds[previous, state, attempt] = _kind(previous, state, attempt)
                latest[state] = kind
            _, tail, moves, _, _ = kind
            # _units, inline: this runs for most events. Written by hand (a fifth of what the
            # encoder takes for a tuple): a number, the quoted id, and the cached tail.
            if time != last_time or subplan_id is not last_id:
                last_time, last_id, units = time, subplan_id, time * scale
                head = f"[{int(units) if units.is_integer() else units},{quote(subplan_id)}"
            append(head + tail)
            if moves is _ENDS:
                terminal = True
                # Started in this batch (most), or the start its earlier state here kept.
                start = pop_running(subplan_id, None)
                if start is not None:
                    started = start[2]
                else:
                    entry = pop_entry(subplan_id, None) or get_ended(subplan_id)
                    started = no_time if entry is None or entry[3] is None else entry[3]
                ended[subplan_id] = (subplan_id, state, attempt, started, time)
            elif moves is _STARTS:
                running[subplan_id] = (subplan_id, attempt, time)
                pop_ended(subplan_id, None)
                if subplans:
                    pop_entry(subplan_id, None)
            elif subplan_id not in known:
                known.add(subplan_id)
                add(subplan_id)
                wait(subplan_id)
        batch.terminal = batch.terminal or terminal
        return batch

    def _failure(
        self, event: tuple[float, str, str | None, str, int, dict[str, Any]], batch: EventRows
    ) -> bool:
        """A state change with an error (few): its payload is to_dict()'s, written in full.
        Returns whether it is terminal."""
        time, subplan_id, previous, state, attempt, described = event
        payload = {
            "subplan_id": subplan_id,
            "previous": previous,
            "state": state,
            "attempt": attempt,
            "error": described,
        }
        batch.events.append(
            encode((_units(time), "subplan_state_changed", subplan_id, None, payload))
        )
        moves = _MOVES[state]
        if moves is _STARTS:
            row: SubplanRow = (subplan_id, state, attempt, time, None, None, None)
        elif moves is _WAITS:
            if subplan_id in self.known:
                return False
            self.known.add(subplan_id)
            self.added.append(subplan_id)
            row = (subplan_id, state, 0, None, None, None, None)
        else:
            start = batch.running.get(subplan_id)
            entry = batch.subplans.get(subplan_id) or batch.ended.get(subplan_id)
            started = start[2] if start else None if entry is None else entry[3]
            if started != started:  # NO_TIME
                started = None
            exit_code, error_json = described.get("exit_code"), encode(described)
            row = (subplan_id, state, attempt, started, time, exit_code, error_json)
        batch.subplans[subplan_id] = row
        batch.ended.pop(subplan_id, None)
        batch.running.pop(subplan_id, None)
        return moves is _ENDS

    def _other(self, event: list[Any], batch: EventRows) -> str:
        """Records what ``event`` (not a state change: ``[kind, time, payload, extra]``)
        changes in ``batch``; returns its chunk event."""
        run_id = self.run_id
        kind, time, data, extra = event
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
                    # The leader's start time, and the log's absolute path (none for a
                    # ``call`` unit's function on a worker), read where the event was.
                    None if worker else extra[0],
                    extra[1],
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
            batch.items.append((run_id, step_id, data["source"], data["count"], extra, time))
        elif kind == "plan_finished" and data["plan_id"] == "" and data["state"] in _RUN_ENDS:
            batch.terminal = True
            batch.runs.append((data["state"], time, run_id))
        return text
