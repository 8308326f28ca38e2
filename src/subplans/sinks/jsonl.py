"""The JSONL sink: every event as one JSON object per line, written and flushed as it happens."""

from __future__ import annotations

import json
from typing import TextIO

from subplans.engine.events import Event

__all__ = ["JsonlSink"]


class JsonlSink:
    """A bus subscriber writing ``event.to_dict()`` plus ``run_id``, one line per event.

    A write that fails (a closed pipe, a full disk) is remembered in ``error`` and ends the
    stream: the run goes on, and the command reports it at the end.
    """

    __slots__ = ("_encode", "_stream", "error", "run_id", "written")

    def __init__(self, stream: TextIO, *, run_id: str) -> None:
        self._stream = stream
        self.run_id = run_id
        #: How many lines were written.
        self.written = 0
        #: The first write error, if any; nothing is written after it.
        self.error: OSError | None = None
        # Anything a to_dict() cannot encode (never expected) becomes its str, not a crash.
        self._encode = json.JSONEncoder(default=str).encode

    def __repr__(self) -> str:
        broken = f", failed: {self.error}" if self.error is not None else ""
        return f"<JsonlSink run {self.run_id}, {self.written} written{broken}>"

    def __call__(self, event: Event) -> None:
        if self.error is not None:
            return
        record = event.to_dict()
        record["run_id"] = self.run_id
        try:
            self._stream.write(self._encode(record) + "\n")
            self._stream.flush()
        except OSError as error:
            self.error = error
            return
        self.written += 1
