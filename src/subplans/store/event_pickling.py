"""What crosses the pipe to the recorder's writer process: a batch of events, pickled plain.

The writer process imports none of the engine (its start must be quick, ``writer_process``),
so nothing it unpickles may name an engine class. A batch is pickled in C with a dispatch
table that makes, per type met (a Python call only for the rare kinds):

- a subplan state (``SubplanExecutionState``, a str enum) its interned value: pickle memoizes
  it, so a batch names each state once, and the writer compares states by identity;
- an exception (a state change's error) its description as ``to_dict()`` gives it;
- a ``SubplanStateChanged`` the tuple a ``RawMove`` is (a dispatch's moves come as tuples
  already, ``EventBus._subscribe_raw``);
- any other event a list: ``[kind, time, payload, extra]``, the payload ``to_dict()`` less
  ``event`` and ``timestamp``, made plain JSON types; ``extra`` a started process's
  leader's start time (read here, while it runs) and its log's absolute path, or a step's
  items as JSON text.

``plain(events)`` is the same round trip in one process (``BatchWriter.write``'s callers).
"""

from __future__ import annotations

import io
import json
import os
import pickle
import sys
from collections.abc import Callable, Sequence
from typing import Any

from subplans.engine.bus import RawMove
from subplans.engine.events import Event, StepItemsRead, SubplanStateChanged, describe_error
from subplans.engine.states import SubplanExecutionState
from subplans.store.event_chunks import encode
from subplans.store.liveness import process_start_time

__all__ = ["BatchPickler", "plain"]

_Reduced = tuple[Callable[..., object], tuple[Any, ...]]


def _state(state: SubplanExecutionState) -> _Reduced:
    return sys.intern, (state.value,)


def _error(error: BaseException) -> _Reduced:
    return dict, (_plain(describe_error(error)),)


def _plain(value: Any) -> Any:
    """``value`` as JSON reads it back: the same text when encoded again."""
    return json.loads(encode(value))


def _move(event: SubplanStateChanged) -> _Reduced:
    fields = (event.time, event.subplan_id, event.previous, event.state, event.attempt)
    return tuple, ((*fields, event.error),)


def _event(event: Event) -> _Reduced:
    data = event.to_dict()
    del data["event"], data["timestamp"]
    extra: object = None
    if event.kind == "subplan_process_started":
        # Read here: the leader runs now, and the log's path is relative to our folder.
        started = None if data.get("worker") else process_start_time(data["pid"])
        extra = (started, os.path.abspath(data["log_file"]) if data["log_file"] else None)
    elif type(event) is StepItemsRead and not event.recorded:
        extra = encode(list(event.items))
    return list, ([event.kind, event.time, _plain(data), extra],)


class _Reducers(dict[type, Callable[[Any], _Reduced]]):
    """The pickler's dispatch table: found per type the first time it is met."""

    def __missing__(self, kind: type) -> Callable[[Any], _Reduced]:
        if issubclass(kind, SubplanStateChanged):
            reducer: Callable[[Any], _Reduced] = _move
        elif issubclass(kind, Event):
            reducer = _event
        elif issubclass(kind, BaseException):
            reducer = _error
        else:
            raise KeyError(kind)  # pickled as pickle does
        self[kind] = reducer
        return reducer


class BatchPickler:
    """Pickles batches of events and raw moves as the writer process takes them."""

    __slots__ = ("_buffer", "_pickler")

    def __init__(self) -> None:
        self._buffer = io.BytesIO()
        self._pickler = pickle.Pickler(self._buffer, protocol=pickle.HIGHEST_PROTOCOL)
        table = _Reducers()
        table[SubplanExecutionState] = _state
        self._pickler.dispatch_table = table

    def dumps(self, batch: Sequence[Event | RawMove]) -> bytes:
        buffer, pickler = self._buffer, self._pickler
        buffer.seek(0)
        buffer.truncate()
        pickler.clear_memo()
        pickler.dump(batch)
        return buffer.getvalue()


def plain(events: Sequence[Event | RawMove]) -> list[Any]:
    """``events`` as the writer process gets them."""
    return pickle.loads(BatchPickler().dumps(events))  # type: ignore[no-any-return]
