"""The run store with real SQLite files: opening, the schema and its migrations, clear errors
for unwritable and corrupt paths, the owner's writes and the queries the CLI asks."""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from subplans.store import (
    RUN_STATUSES,
    SCHEMA_VERSION,
    PlanManifest,
    ProcessIdentity,
    RunBusyError,
    RunNotFoundError,
    RunStatus,
    RunStore,
    StoreError,
    default_store_path,
    plan_hash,
)
from subplans.store import opening as opening_module
from subplans.store.schema import (
    APPLICATION_ID,
    MIGRATIONS,
    Migration,
    SchemaError,
    migrate,
)

from .store_support import (
    gone_owner,
    load,
    manifest,
    open_store,
    other_host_owner,
    start_group,
    stop,
    unwritable,
)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[RunStore]:
    opened = open_store(tmp_path)
    yield opened
    opened.close()


def raw(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None)


# --- where the store lives ------------------------------------------------------------------


def test_default_store_path_is_next_to_the_plan_unless_the_environment_says() -> None:
    assert default_store_path("work/plan.yaml", {}) == Path("work/.subplans/state.db")
    assert default_store_path(None, {}) == Path(".subplans/state.db")
    assert default_store_path("plan.yaml", {"SUBPLANS_STORE": "/x/s.db"}) == Path("/x/s.db")
    assert default_store_path("plan.yaml", {"SUBPLANS_STORE": ""}) == Path(".subplans/state.db")
    home = Path.home()
    assert default_store_path(None, {"SUBPLANS_STORE": "~/s.db"}) == home / "s.db"


def test_default_store_path_reads_the_process_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SUBPLANS_STORE", "/elsewhere/state.db")
    assert default_store_path("plan.yaml") == Path("/elsewhere/state.db")


# --- opening and the schema -----------------------------------------------------------------


def test_open_creates_the_folder_and_the_schema_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "state.db"
    with RunStore.open(path) as store:
        assert repr(store) == f"<RunStore {str(path)!r} open>"
        assert store.locks_folder == path.parent / "locks"
    assert repr(store) == f"<RunStore {str(path)!r} closed>"
    store.close()  # idempotent
    db = raw(path)
    assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    assert db.execute("PRAGMA application_id").fetchone() == (APPLICATION_ID,)
    assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert tables == {
        "runs",
        "steps",
        "subplans",
        "event_chunks",
        "step_items",
        "limits",
        "pools",
        "pool_uses",
    }
    views = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='view'")}
    assert views == {"events"}  # schema 3: the events, a row each, over their chunks
    db.close()
    with RunStore.open(path, readonly=True) as again:
        assert again.list_runs() == []


def test_a_closed_store_refuses_queries(store: RunStore) -> None:
    store.close()
    with pytest.raises(RuntimeError, match=r"^the store is closed$"):
        store.list_runs()


def test_a_database_from_a_newer_subplans_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    RunStore.open(path).close()
    db = raw(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    expected = (
        f"cannot open the store {path}: written by a newer subplans (schema version "
        f"{SCHEMA_VERSION + 1}; this version knows up to {SCHEMA_VERSION}); upgrade subplans "
        "to read it"
    )
    with pytest.raises(StoreError, match=f"^{re.escape(expected)}$"):
        RunStore.open(path)
    assert path.exists()  # it existed before: never removed


def test_another_applications_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "theirs.db"
    db = raw(path)
    db.execute("CREATE TABLE notes (text)")
    db.close()
    with pytest.raises(StoreError, match=r"not a subplans store \(an SQLite database of another"):
        RunStore.open(path)
    db = raw(path)
    db.execute("PRAGMA application_id = 7")
    db.close()
    with pytest.raises(StoreError, match=r"not a subplans store"):
        RunStore.open(path)


def test_migrations_run_in_order_each_in_one_transaction(tmp_path: Path) -> None:
    db = raw(tmp_path / "m.db")
    first = Migration("one", ("CREATE TABLE a (x)", "INSERT INTO a VALUES (1)"))
    second = Migration("two", ("CREATE TABLE b (y)",))
    assert migrate(db, [first]) == (0, 1)
    assert migrate(db, [first, second]) == (1, 2)
    assert migrate(db, [first, second]) == (2, 2)
    assert db.execute("SELECT x FROM a").fetchall() == [(1,)]
    broken = Migration("three", ("CREATE TABLE c (z)", "INSERT INTO nowhere VALUES (1)"))
    with pytest.raises(sqlite3.OperationalError, match="no such table: nowhere"):
        migrate(db, [first, second, broken])
    assert db.execute("PRAGMA user_version").fetchone() == (2,)
    assert db.execute("SELECT count(*) FROM sqlite_master WHERE name = 'c'").fetchone() == (0,)
    with pytest.raises(SchemaError, match=r"schema version 2; this version knows up to 1"):
        migrate(db, [first])
    db.close()


def test_a_migration_done_meanwhile_by_another_process_is_not_applied_again(
    tmp_path: Path,
) -> None:
    db, other = raw(tmp_path / "m.db"), raw(tmp_path / "m.db")
    only = Migration("one", ("CREATE TABLE a (x)",))

    def meanwhile(statement: str) -> None:
        # The other process migrates after our first look, before we hold the write lock.
        if statement == "BEGIN IMMEDIATE":
            db.set_trace_callback(None)
            assert migrate(other, [only]) == (0, 1)

    db.set_trace_callback(meanwhile)
    assert migrate(db, [only]) == (0, 1)
    assert db.execute("SELECT count(*) FROM sqlite_master WHERE name = 'a'").fetchone() == (1,)
    db.close()
    other.close()


def test_the_shipped_migrations_build_the_current_schema() -> None:
    assert len(MIGRATIONS) == SCHEMA_VERSION
    db = sqlite3.connect(":memory:", isolation_level=None)
    assert migrate(db) == (0, SCHEMA_VERSION)
    db.close()


# --- unwritable and corrupt paths: one clear line, no traceback, no half-written file --------


def test_a_store_under_a_file_cannot_be_created(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    path = tmp_path / "file" / "sub" / "state.db"
    expected = f"cannot open the store {path}: cannot create the folder {path.parent}: "
    with pytest.raises(StoreError, match=f"^{re.escape(expected)}Not a directory$"):
        RunStore.open(path)


def test_a_folder_is_not_a_store(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match=r": it is a folder, not a file$"):
        RunStore.open(tmp_path)


def test_readonly_opening_needs_an_existing_store(tmp_path: Path) -> None:
    path = tmp_path / "missing" / "state.db"
    with pytest.raises(StoreError, match=r"^cannot open the store .*: no store there yet$"):
        RunStore.open(path, readonly=True)
    assert not path.parent.exists()


def test_an_unwritable_folder_is_a_clear_error(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    with unwritable(locked):
        expected = (
            f"cannot open the store {locked / 'state.db'}: the folder {locked} is not writable"
        )
        with pytest.raises(StoreError, match=f"^{re.escape(expected)}$"):
            RunStore.open(locked / "state.db")
    assert os.listdir(locked) == []


def test_a_read_only_store_can_be_read_but_not_opened_for_writing(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with RunStore.open(path) as store:
        store.start_run("r1", manifest("s/a"))
    with unwritable(path):
        expected = f"cannot open the store {path}: read-only: attempt to write a readonly database"
        with pytest.raises(StoreError, match=f"^{re.escape(expected)}$"):
            RunStore.open(path)
        with RunStore.open(path, readonly=True) as store:
            assert store.get_run("r1").total == 1


def test_a_file_that_is_not_sqlite_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    path.write_bytes(b"certainly not a database\n" * 100)
    with pytest.raises(
        StoreError, match=r"^cannot open the store .*: not an SQLite database \(or a damaged one\)$"
    ):
        RunStore.open(path)
    assert path.read_bytes() == b"certainly not a database\n" * 100


def corrupt(path: Path) -> None:
    """Overwrite every page of a store but the schema's (the first, with the header, and since
    schema 3 a few more: SQLite's ``dbstat`` names them)."""
    with RunStore.open(path) as store:
        store.start_run("r1", manifest(*(f"s{i}-{'x' * 200}" for i in range(100))))
    db = raw(path)
    (page_size,) = db.execute("PRAGMA page_size").fetchone()
    (pages,) = db.execute("PRAGMA page_count").fetchone()
    schema = {
        row[0] for row in db.execute("SELECT pageno FROM dbstat WHERE name = 'sqlite_schema'")
    }
    db.close()  # the last connection: the log goes into the file
    assert 1 in schema
    with path.open("r+b") as file:
        for page in range(2, pages + 1):
            if page not in schema:
                file.seek((page - 1) * page_size)
                file.write(b"\xff\x00\x13\x37" * (page_size // 4))


def test_a_damaged_database_is_refused_when_opened(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    corrupt(path)
    with pytest.raises(StoreError, match=r"^cannot open the store .*: the database is corrupt: "):
        RunStore.open(path)


def test_a_database_that_fails_its_quick_check_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with RunStore.open(path) as store:
        store.start_run("r1", manifest("a"))
    db = raw(path)
    # A row that breaks a constraint: the b-trees are sound, quick_check still says no.
    db.execute("PRAGMA writable_schema = ON")
    (sql,) = db.execute("SELECT sql FROM sqlite_master WHERE name = 'runs'").fetchone()
    sql = sql.replace("'running', 'completed'", "'completed'")
    db.execute("UPDATE sqlite_master SET sql = ? WHERE name = 'runs'", (sql,))
    db.close()
    expected = (
        f"cannot open the store {path}: the database is corrupt: database disk image is "
        "malformed (CHECK constraint failed in runs)"
    )
    with pytest.raises(StoreError, match=f"^{re.escape(expected)}$"):
        RunStore.open(path)


def test_a_damaged_database_opened_unchecked_fails_clearly_when_read(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    corrupt(path)
    with (
        RunStore.open(path, check=False) as store,
        pytest.raises(StoreError, match=r"^cannot read the store .*malformed"),
    ):
        store.subplans("r1")


def test_a_failed_creation_leaves_no_file_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(connection: sqlite3.Connection) -> tuple[int, int]:
        connection.execute("CREATE TABLE half (x)")
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(opening_module, "migrate", broken)
    path = tmp_path / "state.db"
    with pytest.raises(StoreError, match=r"^cannot open the store .*: disk I/O error$"):
        RunStore.open(path)
    assert os.listdir(tmp_path) == []


def test_a_locked_store_is_a_clear_write_error(store: RunStore) -> None:
    store.timeout = 0.01
    busy = sqlite3.connect(store.path, isolation_level=None, timeout=0.01)
    busy.execute("PRAGMA busy_timeout = 10")
    store._db.execute("PRAGMA busy_timeout = 10")
    busy.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StoreError, match=r"^cannot write to the store .*: database is locked$"):
            store.start_run("r1", manifest("a"))
    finally:
        busy.execute("ROLLBACK")
        busy.close()
    assert store.list_runs() == []


# --- the owner's writes -----------------------------------------------------------------------


def test_start_run_records_the_run_its_owner_and_every_subplan_pending(store: RunStore) -> None:
    me = ProcessIdentity.current()
    run = store.start_run("r1", manifest("step/a", "step/b"), run_dir="/runs/r1", started_at=1000.0)
    assert run.id == "r1"
    assert run.status == run.recorded_status == "running"
    assert run.owner == me
    assert run.plan_file == "plan.yaml"
    assert run.plan_hash == "h1"
    assert run.profile == {"values": {"max_parallel": 4}}
    assert run.run_dir == "/runs/r1"
    assert run.started_at == 1000.0
    assert run.finished_at is None
    assert run.duration is None
    assert run.counts == {"pending": 2, "running": 0, "completed": 0, "failed": 0, "interrupted": 0}
    assert run.total == 2
    assert [s.step_id for s in store.steps("r1")] == ["step"]
    assert [(s.subplan_id, s.step_id, s.state) for s in store.subplans("r1")] == [
        ("step/a", "step", "pending"),
        ("step/b", "step", "pending"),
    ]
    data = run.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["id"] == "r1"
    assert data["status"] == "running"
    assert data["plan"] == "plan.yaml"
    assert data["started_at"] == "1970-01-01T00:16:40+00:00"
    assert data["finished_at"] is None
    assert data["owner"] == {"pid": me.pid, "host": me.host}


def test_a_run_id_is_recorded_once(store: RunStore) -> None:
    store.start_run("r1", manifest())
    with pytest.raises(StoreError, match=r"^cannot write to the store .*: run r1 exists$"):
        store.start_run("r1", manifest())


@pytest.mark.parametrize("run_id", ["", "../x", ".hidden", "a/b", "-x", "é"])
def test_a_run_id_must_be_a_safe_file_name(store: RunStore, run_id: str) -> None:
    with pytest.raises(ValueError, match=r"^run_id must be ASCII letters, digits"):
        store.start_run(run_id, manifest())


def test_finish_run_records_the_end(store: RunStore) -> None:
    store.start_run("r1", manifest(), started_at=10.0)
    store.finish_run("r1", "failed", finished_at=15.5)
    run = store.get_run("r1")
    assert (run.status, run.finished_at, run.duration) == ("failed", 15.5, 5.5)
    with pytest.raises(ValueError, match=r"^status must be 'completed', 'failed' or 'cancelled'"):
        store.finish_run("r1", "running")  # type: ignore[arg-type]
    with pytest.raises(RunNotFoundError, match=r"^no run r2 in the store "):
        store.finish_run("r2", "completed")


def test_finish_run_uses_the_clock(tmp_path: Path) -> None:
    with open_store(tmp_path, clock=lambda: 42.0) as store:
        store.start_run("r1", manifest())
        store.finish_run("r1", "completed")
        run = store.get_run("r1")
        assert (run.started_at, run.finished_at) == (42.0, 42.0)


# --- queries ----------------------------------------------------------------------------------


def fill(store: RunStore) -> None:
    """Three runs; r2 with a subplan of every kind of state."""
    store.start_run("r1", manifest("s/a"), started_at=100.0)
    store.finish_run("r1", "completed", finished_at=110.0)
    store.start_run("r2", manifest("s/a", "s/b", "s/c", "s/d"), started_at=200.0)
    db = store._db
    db.executescript(
        """
        UPDATE subplans SET state = 'running', attempts = 1, started = 201.0, pgid = 4242
            WHERE run_id = 'r2' AND subplan_id = 's/a';
        UPDATE subplans SET state = 'running', attempts = 2, started = 200.5
            WHERE run_id = 'r2' AND subplan_id = 's/b';
        UPDATE subplans SET state = 'failed', attempts = 1, started = 202.0, finished = 204.0,
            exit_code = 3, error = '{"type": "CommandFailedError", "message": "exited with code 3"}',
            log_file = '/logs/c.log' WHERE run_id = 'r2' AND subplan_id = 's/c';
        UPDATE subplans SET state = 'completed', attempts = 1, started = 201.0, finished = 203.0
            WHERE run_id = 'r2' AND subplan_id = 's/d';
        INSERT INTO events VALUES ('r2', 1, 200.0, 'plan_started', NULL, NULL, '{"plan_id": ""}');
        INSERT INTO events VALUES ('r2', 2, 200.1, 'subplan_state_changed', 's/a', NULL,
            '{"subplan_id": "s/a", "state": "pending"}');
        INSERT INTO events VALUES ('r2', 3, 200.2, 'step_state_changed', NULL, 's', '{}');
        """
    )
    store.start_run("r3", manifest(), started_at=300.0, owner=other_host_owner(), concurrent=True)


def test_list_runs_newest_first_with_counts(tmp_path: Path) -> None:
    with open_store(tmp_path, clock=lambda: 205.0) as store:
        fill(store)
        runs = store.list_runs()
        assert [r.id for r in runs] == ["r3", "r2", "r1"]
        assert [r.status for r in runs] == ["running", "running", "completed"]
        assert runs[1].counts == {
            "pending": 0,
            "running": 2,
            "completed": 1,
            "failed": 1,
            "interrupted": 0,
        }
        assert [r.id for r in store.list_runs(limit=2)] == ["r3", "r2"]
        for limit in (0, 1.5, True):
            with pytest.raises(ValueError, match=r"^limit must be an integer >= 1, got "):
                store.list_runs(limit=limit)  # type: ignore[arg-type]


def test_get_run_by_id_or_the_latest(store: RunStore) -> None:
    with pytest.raises(RunNotFoundError, match=r"^no runs in the store "):
        store.get_run()
    fill(store)
    assert store.get_run().id == "r3"
    assert store.get_run("r1").status == "completed"
    with pytest.raises(RunNotFoundError, match=r"^no run nope in the store "):
        store.get_run("nope")


def test_status_queries_running_failures_and_completed(tmp_path: Path) -> None:
    with open_store(tmp_path, clock=lambda: 205.0) as store:
        fill(store)
        running = store.running_subplans("r2")
        assert [(s.subplan_id, s.elapsed, s.attempts) for s in running] == [
            ("s/b", 4.5, 2),
            ("s/a", 4.0, 1),
        ]
        assert running[1].pgid == 4242
        assert running[1].started_at is not None
        assert running[1].started_at.timestamp() == 201.0
        (failed,) = store.failures("r2")
        assert failed.subplan_id == "s/c"
        assert failed.elapsed == 2.0
        assert failed.exit_code == 3
        assert failed.log_file == "/logs/c.log"
        assert failed.error == {"type": "CommandFailedError", "message": "exited with code 3"}
        data = failed.to_dict()
        assert json.loads(json.dumps(data)) == data
        assert data["finished_at"] == "1970-01-01T00:03:24+00:00"
        assert store.completed_subplans("r2") == frozenset({"s/d"})
        assert store.completed_subplans("r1") == frozenset()
        assert store.subplans("nope") == []
        assert store.subplans("r2", state="pending") == []


def test_log_file_of_a_subplan(store: RunStore) -> None:
    fill(store)
    assert store.log_file("r2", "s/c") == Path("/logs/c.log")
    assert store.log_file("r2", "s/a") is None
    with pytest.raises(RunNotFoundError, match=r"^run r2 has no subplan 's/x'$"):
        store.log_file("r2", "s/x")
    with pytest.raises(RunNotFoundError, match=r"^no run r9 in the store"):
        store.log_file("r9", "s/a")


def test_events_are_polled_after_a_seq(store: RunStore) -> None:
    fill(store)
    events = store.events("r2")
    assert [e.seq for e in events] == [1, 2, 3]
    assert [e.seq for e in store.events("r2", after_seq=1)] == [2, 3]
    assert [e.seq for e in store.events("r2", after_seq=1, limit=1)] == [2]
    assert store.events("r2", after_seq=3) == []
    assert events[1].to_dict() == {
        "run_id": "r2",
        "seq": 2,
        "event": "subplan_state_changed",
        "timestamp": "1970-01-01T00:03:20.100000+00:00",
        "subplan_id": "s/a",
        "state": "pending",
    }
    assert events[2].step_id == "s"


def test_steps_in_plan_order(store: RunStore) -> None:
    many = PlanManifest(file="p.yaml", steps=("b", "a"), subplans=())
    store.start_run("r1", many)
    store._db.execute(
        "INSERT INTO steps (run_id, step_id, state, started, error) "
        "VALUES ('r1', 'unplanned', 'failed', 1.0, '{\"type\": \"X\"}')"
    )
    steps = store.steps("r1")
    assert [(s.step_id, s.state) for s in steps] == [
        ("b", "pending"),
        ("a", "pending"),
        ("unplanned", "failed"),
    ]
    assert steps[2].error == {"type": "X"}


def test_integrity_check_is_empty_when_sound(store: RunStore) -> None:
    fill(store)
    assert store.integrity_check() == []


def test_integrity_check_reports_findings(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with RunStore.open(path) as store:
        store.start_run("r1", manifest("a"))
    db = raw(path)
    # An index that no longer matches its table: quick_check passes, integrity_check does not.
    db.execute("PRAGMA writable_schema = ON")
    db.execute(
        "UPDATE sqlite_master SET sql = 'CREATE INDEX runs_by_start ON runs (plan_hash, id)' "
        "WHERE name = 'runs_by_start'"
    )
    db.close()
    with RunStore.open(path) as store:
        assert store.integrity_check() == ["row 1 missing from index runs_by_start"]


def test_integrity_check_of_a_wrecked_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    corrupt(path)
    with (
        RunStore.open(path, check=False) as store,
        pytest.raises(
            StoreError, match=r"^cannot read the store .*: database disk image is malformed$"
        ),
    ):
        store.integrity_check()


# --- resume -----------------------------------------------------------------------------------


def test_resume_run_takes_over_an_interrupted_run(store: RunStore) -> None:
    store.start_run("r1", manifest("s/a", "s/b", "s/c"), owner=gone_owner())
    store._db.executescript(
        """
        UPDATE subplans SET state = 'completed' WHERE subplan_id = 's/a';
        UPDATE subplans SET state = 'running', pgid = 999999999, started = 5.0
            WHERE subplan_id = 's/b';
        """
    )
    assert store.get_run("r1").status == "interrupted"
    assert store.get_run("r1").counts["interrupted"] == 1
    run = store.resume_run("r1")
    assert run.status == "running"
    assert run.owner == ProcessIdentity.current()
    assert run.resumes == 1
    assert run.counts == {"pending": 2, "running": 0, "completed": 1, "failed": 0, "interrupted": 0}
    b = next(s for s in store.subplans("r1") if s.subplan_id == "s/b")
    assert (b.state, b.pgid) == ("pending", None)
    # The owner resuming again (after its own crash) is fine too.
    assert store.resume_run("r1").resumes == 2


def test_resume_run_with_a_changed_plan(store: RunStore) -> None:
    store.start_run("r1", manifest("s/a", "s/b"), owner=gone_owner())
    store._db.execute("UPDATE subplans SET state = 'completed' WHERE subplan_id = 's/a'")
    changed = PlanManifest(
        file="new.yaml",
        name="new",
        hash="h2",
        profile={"values": {}},
        steps=("s",),
        subplans=(("s/a", "s"), ("s/c", "s")),
    )
    diff = store.plan_diff("r1", changed)
    assert (diff.added, diff.removed, diff.hash_changed, diff.ids_match) == (
        ("s/c",),
        ("s/b",),
        True,
        False,
    )
    assert str(diff) == (
        "the plan's subplans changed since run r1: 1 subplan added (s/c) and "
        "1 subplan removed (s/b)"
    )
    run = store.resume_run("r1", changed)
    assert (run.plan_file, run.plan_hash, run.profile) == ("new.yaml", "h2", {"values": {}})
    assert [(s.subplan_id, s.state) for s in store.subplans("r1")] == [
        ("s/a", "completed"),
        ("s/c", "pending"),
    ]
    assert store.plan_diff("r1", changed).ids_match


def test_plan_diff_wording(store: RunStore) -> None:
    store.start_run("r1", manifest(*(f"s/{i}" for i in range(8))))
    same = manifest(*(f"s/{i}" for i in range(8)))
    assert str(store.plan_diff("r1", same)) == "the plan is unchanged since run r1"
    edited = PlanManifest(file="p", hash="other", subplans=same.subplans)
    assert str(store.plan_diff("r1", edited)) == (
        "the plan's content changed since run r1, but not its subplans"
    )
    fewer = manifest()
    assert str(store.plan_diff("r1", fewer)) == (
        "the plan's subplans changed since run r1: 8 subplans removed "
        "(s/0, s/1, s/2, s/3, s/4, and 3 more)"
    )


def test_resume_run_refuses_a_live_owner(store: RunStore) -> None:
    store.start_run("r1", manifest())
    stranger = ProcessIdentity(1, "elsewhere", "b", 1)
    with pytest.raises(RunBusyError, match=r"^run r1 is still being driven by process \d+ on "):
        store.resume_run("r1", owner=stranger)
    store.start_run("r2", manifest(), owner=other_host_owner(), concurrent=True)
    with pytest.raises(
        RunBusyError, match=r"^run r2 is still being driven by a process on another"
    ):
        store.resume_run("r2")


def test_resume_run_refuses_while_a_recorded_group_lives(store: RunStore) -> None:
    store.start_run("r1", manifest("s/a"), owner=gone_owner())
    leftover = start_group("exec sleep 30")
    try:
        store._db.execute(
            "UPDATE subplans SET state = 'running', pgid = ? WHERE subplan_id = 's/a'",
            (leftover.pid,),
        )
        with pytest.raises(
            RunBusyError, match=rf"^run r1 left process groups running \({leftover.pid}\); stop"
        ):
            store.resume_run("r1")
    finally:
        stop(leftover)
    assert store.resume_run("r1").status == "running"


# --- what a run records about its plan --------------------------------------------------------

PLAN = """
name: port
steps:
  - name: prepare
    run: "echo prepare"
  - name: modules
    for_each: [net, io]
    subplan:
      run: ["port", "{item}"]
      env: {MODULE: "{item}"}
  - name: nested
    subplans:
      - name: inner
        plan:
          steps:
            - name: one
              subplans:
                - {name: a, call: "helpers:work", with: {when: 2024-01-02, keys: {1: x}, n: [1, 2.5]}}
                - {name: b, run: "true", cwd: sub}
"""


def plan_folder(tmp_path: Path, name: str = "a") -> Path:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "helpers.py").write_text("def work(**kwargs):\n    return kwargs\n")
    (folder / "sub").mkdir()
    return folder


def test_a_manifest_lists_every_step_and_subplan_in_plan_order(tmp_path: Path) -> None:
    plan = load(plan_folder(tmp_path), PLAN)
    found = PlanManifest.from_plan(plan)
    assert found.file == str(plan.file)
    assert found.name == "port"
    assert found.hash == plan_hash(plan)
    assert found.profile == plan.profile.to_dict()
    assert found.steps == ("prepare", "modules", "nested", "nested/inner/one")
    assert found.subplan_ids == (
        "prepare",
        "modules/net",
        "modules/io",
        "nested/inner",
        "nested/inner/one/a",
        "nested/inner/one/b",
    )
    assert found.subplans[-1] == ("nested/inner/one/b", "nested/inner/one")


def test_the_plan_hash_follows_the_work_not_the_policy_or_the_folder(tmp_path: Path) -> None:
    first = plan_hash(load(plan_folder(tmp_path, "a"), PLAN))
    assert re.fullmatch(r"[0-9a-f]{64}", first)
    assert plan_hash(load(plan_folder(tmp_path, "b"), PLAN)) == first  # moved
    policy = PLAN.replace("name: port\n", "name: port\nautomation_profile: {max_parallel: 9}\n")
    assert plan_hash(load(plan_folder(tmp_path, "c"), policy)) == first
    edited = PLAN.replace('"echo prepare"', '"echo prepared"')
    assert plan_hash(load(plan_folder(tmp_path, "d"), edited)) != first
    kwargs = PLAN.replace("n: [1, 2.5]", "n: [1, 2.6]")
    assert plan_hash(load(plan_folder(tmp_path, "e"), kwargs)) != first
    outside = plan_folder(tmp_path, "f")
    shutil.rmtree(outside / "sub")
    away = PLAN.replace("cwd: sub", f"cwd: {tmp_path / 'a' / 'sub'}")
    assert plan_hash(load(outside, away)) != first


def test_the_store_exports_every_public_name_once() -> None:
    import subplans.store

    names = subplans.store.__all__
    assert len(names) == len(set(names))
    # Loaded on first use (#10): each name is in the package's namespace once it was asked for.
    assert all(getattr(subplans.store, name) is not None for name in names)
    public = {
        name
        for name, value in vars(subplans.store).items()
        if not name.startswith("_") and not isinstance(value, ModuleType)
    }
    assert public - {"annotations"} == set(names)


def test_clearing_groups_keeps_one_recorded_since(store: RunStore) -> None:
    store.start_run("r1", manifest("s/a", "s/b"), owner=gone_owner())
    store._db.execute("UPDATE subplans SET state = 'running', pgid = 111, pgid_start = 5")
    run, seen = store.leftovers("r1")
    assert run.status == "interrupted"
    assert [(g.subplan_id, g.pgid, g.start_time) for g in seen] == [
        ("s/a", 111, 5),
        ("s/b", 111, 5),
    ]
    # A resume elsewhere restarted s/b meanwhile: its new group must stay recorded.
    store._db.execute("UPDATE subplans SET pgid = 222 WHERE subplan_id = 's/b'")
    store.clear_process_groups("r1", seen)
    assert [(g.subplan_id, g.pgid) for g in store.process_groups("r1")] == [("s/b", 222)]
    with pytest.raises(RunNotFoundError):
        store.leftovers("r9")


# --- run statuses -----------------------------------------------------------------------------


def test_a_runs_status_is_a_run_status_with_the_stored_strings(store: RunStore) -> None:
    assert tuple(RunStatus) == RUN_STATUSES
    assert list(RUN_STATUSES) == ["running", "completed", "failed", "cancelled", "interrupted"]
    run = store.start_run("r1", manifest("s/a"))
    assert run.status is run.recorded_status is RunStatus.RUNNING
    store.finish_run("r1", RunStatus.FAILED)
    run = store.get_run("r1")
    assert run.status is RunStatus.FAILED
    assert json.loads(json.dumps(run.to_dict()))["status"] == "failed"
    store.start_run("r2", manifest("s/a"), owner=gone_owner(), concurrent=True)
    interrupted = store.get_run("r2")
    assert (interrupted.status, interrupted.recorded_status) == (
        RunStatus.INTERRUPTED,
        RunStatus.RUNNING,
    )
    with pytest.raises(ValueError, match=r"^status must be 'completed', 'failed' or 'cancelled'"):
        store.finish_run("r1", RunStatus.INTERRUPTED)
