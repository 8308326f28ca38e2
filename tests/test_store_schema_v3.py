"""Schema 3 (issue #10): events kept in chunks behind a view named ``events``. A store of
schema 2, written by the old statements, is brought up to date when opened, and every command
keeps working on it; SQL against ``events`` reads (and inserts) as it did."""

from __future__ import annotations

import os
import re
import sqlite3
from pathlib import Path

import pytest

from subplans.cli.exits import ExitCode
from subplans.store import RunStore, StoredEvent
from subplans.store.event_chunks import read_events
from subplans.store.schema import MIGRATIONS, SCHEMA_VERSION, migrate

from .plans_helpers import write
from .store_support import invoke

pytestmark = pytest.mark.usefixtures("isolated")

COUNTING = """
    name: counting
    automation_profile: keep-going
    steps:
      - name: port
        for_each: [a, b, flaky]
        subplan:
          run: "echo {item} | tee -a ran.txt; test {item} != flaky || test -e fixed"
      - name: report
        run: "echo report >> ran.txt"
    """
TABLES = ("runs", "steps", "subplans", "step_items")


def store_path(folder: Path) -> Path:
    return folder / ".subplans" / "state.db"


def as_schema_2(path: Path) -> None:
    """Rewrite the store at ``path`` as schema 2 kept it: its tables made by the migrations of
    then, its events a row each in the ``events`` table."""
    old = path.with_name("v2.db")
    db = sqlite3.connect(old, isolation_level=None)
    migrate(db, MIGRATIONS[:2])
    db.execute("ATTACH ? AS new", (str(path),))
    for table in TABLES:
        # The columns schema 2 had: later migrations add some (subplans.worker).
        columns = ", ".join(row[1] for row in db.execute(f"PRAGMA main.table_info({table})"))
        db.execute(f"INSERT INTO main.{table} SELECT {columns} FROM new.{table}")
    db.execute("INSERT INTO main.events SELECT * FROM new.events")
    db.execute("DETACH new")
    assert db.execute("PRAGMA user_version").fetchone() == (2,)
    db.close()
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    os.replace(old, path)


def stored(path: Path, run_id: str) -> list[StoredEvent]:
    with RunStore.open(path, readonly=True) as store:
        return store.events(run_id)


def test_a_schema_2_store_is_migrated_on_open_and_every_command_works_on_it(
    tmp_path: Path,
) -> None:
    write(tmp_path, "plan.yaml", COUNTING)
    assert invoke("run", "plan.yaml", "-q").exit_code == ExitCode.FAILED
    path = store_path(tmp_path)
    with RunStore.open(path) as store:
        (run_id,) = store.run_ids()
    before = stored(path, run_id)
    as_schema_2(path)
    raw = sqlite3.connect(path)
    assert raw.execute("SELECT count(*) FROM events").fetchone() == (len(before),)
    raw.close()

    # Every reading command opens it (and brings it up to date: the file is writable).
    assert invoke("runs").exit_code == ExitCode.OK
    raw = sqlite3.connect(path)
    assert raw.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    raw.close()
    assert stored(path, run_id) == before
    status = invoke("status", run_id)
    assert status.exit_code == ExitCode.OK, status.output
    assert "flaky" in status.stdout
    assert invoke("events", run_id).stdout.count("\n") == len(before)
    logs = invoke("logs", run_id, "port/a")
    assert (logs.exit_code, logs.stdout.splitlines()[-1:]) == (ExitCode.OK, ["a"])

    cancelled = invoke("cancel", run_id)
    assert (cancelled.exit_code, cancelled.stderr) == (
        ExitCode.INVALID,
        f"error: run {run_id} has already ended (failed)\n",
    )

    # A resumed run does not redo what the schema 2 store recorded completed.
    (tmp_path / "fixed").touch()
    (tmp_path / "ran.txt").unlink()
    resumed = invoke("resume", run_id)
    assert resumed.exit_code == ExitCode.OK, resumed.output
    assert sorted((tmp_path / "ran.txt").read_text().split()) == ["flaky", "report"]
    assert re.search(r"skipped    2 subplans of step port", resumed.stdout)
    after = stored(path, run_id)
    assert after[: len(before)] == before
    assert [e.seq for e in after] == list(range(1, len(after) + 1))


def test_the_events_view_reads_and_inserts_as_the_table_did(tmp_path: Path) -> None:
    write(tmp_path, "plan.yaml", COUNTING)
    invoke("run", "plan.yaml", "-q")
    path = store_path(tmp_path)
    with RunStore.open(path) as store:
        (run_id,) = store.run_ids()
    db = sqlite3.connect(path, isolation_level=None)
    rows = db.execute(
        "SELECT seq, time, kind, subplan_id, step_id, payload FROM events "
        "WHERE run_id = ? ORDER BY seq",
        (run_id,),
    ).fetchall()
    assert [row[:5] for row in rows] == [
        (e.seq, e.time, e.kind, e.subplan_id, e.step_id) for e in stored(path, run_id)
    ]
    (last,) = db.execute("SELECT max(seq) FROM events WHERE run_id = ?", (run_id,)).fetchone()
    # An insert is a chunk of one; a payload that is not a JSON object is kept as its text.
    db.execute(
        "INSERT INTO events VALUES (?, ?, 5, 'note', NULL, 'port', '{\"a\": [1]}')",
        (run_id, last + 1),
    )
    db.execute("INSERT INTO events VALUES (?, ?, 6.5, 'note', 's', NULL, '7')", (run_id, last + 2))
    with pytest.raises(sqlite3.IntegrityError, match="UNIQUE constraint failed: events"):
        db.execute("INSERT INTO events VALUES (?, 3, 7.0, 'x', NULL, NULL, '{}')", (run_id,))
    assert db.execute(
        "SELECT seq, time, kind, subplan_id, step_id, payload FROM events "
        "WHERE run_id = ? AND seq > ?",
        (run_id, last),
    ).fetchall() == [
        (last + 1, 5.0, "note", None, "port", '{"a":[1]}'),
        (last + 2, 6.5, "note", "s", None, "7"),
    ]
    assert [(e.seq, e.time, e.payload) for e in read_events(db, run_id, last, None)] == [
        (last + 1, 5.0, {"a": [1]}),
        (last + 2, 6.5, 7),
    ]
    db.close()


def test_events_are_read_after_a_seq_and_up_to_a_limit(tmp_path: Path) -> None:
    write(tmp_path, "plan.yaml", COUNTING)
    invoke("run", "plan.yaml", "-q")
    with RunStore.open(store_path(tmp_path), readonly=True) as store:
        (run_id,) = store.run_ids()
        every = store.events(run_id)
        assert len(every) > 4
        assert store.events(run_id, after_seq=2, limit=2) == every[2:4]
        assert store.events(run_id, limit=0) == []
        assert store.events(run_id, limit=-1) == every  # as SQL's LIMIT -1
        assert store.events(run_id, after_seq=every[-1].seq) == []
