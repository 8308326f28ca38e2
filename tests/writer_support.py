"""Making the recorder's writer process fail as a full disk makes it fail, for tests of what a
run does then: its batches raise the error SQLite gives (the process runs apart, so this is
said in its start-up code, not patched in this process)."""

from __future__ import annotations

import pytest

from subplans.store import writer_start

_FAIL = """\
import sqlite3
from subplans.store.batch_writer import BatchWriter
def _failing(self, events, *, durable):
    raise sqlite3.OperationalError({message!r})
BatchWriter.write_plain = _failing
"""


def failing_writer(monkeypatch: pytest.MonkeyPatch, message: str) -> None:
    """From now on in the test, a new writer process fails every batch with ``message`` (the
    spare is ended: it would not)."""
    writer_start.retire_spares()
    start = "from subplans.store.writer_process import main"
    boot = writer_start._BOOT.replace(start, _FAIL.format(message=message) + start)
    monkeypatch.setattr(writer_start, "_BOOT", boot)
