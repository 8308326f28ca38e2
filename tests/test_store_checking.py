"""What opening a store checks (its schema and both ends of every b-tree, in time that does not
grow with the store) and where every page is checked (a changed or older schema, and resuming
a run that did not end cleanly), with real, deliberately damaged SQLite files (issue #10)."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest

from subplans.store import RunStatus, RunStore, StoreError
from subplans.store.checking import (
    _ENDS,
    BTREE_NAMES,
    SCHEMA_DIGEST,
    schema_digest,
)
from subplans.store.schema import MIGRATIONS, migrate

from .store_support import gone_owner, manifest


def raw(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None)


def big_run(path: Path, *, owner_gone: bool = False) -> None:
    """A run of 600 subplans with long ids (the subplans table spans many leaf pages), ended
    unless its owner is gone."""
    with RunStore.open(path) as store:
        owner = gone_owner() if owner_gone else None
        store.start_run("r1", manifest(*(f"s{i:04d}-{'x' * 100}" for i in range(600))), owner=owner)
        if not owner_gone:
            store.finish_run("r1", "completed")


def leaves(path: Path, name: str) -> list[int]:
    """The leaf pages of the b-tree ``name``, in key order (``dbstat``'s paths sort so)."""
    db = raw(path)
    rows = db.execute(
        "SELECT pageno FROM dbstat WHERE name = ? AND pagetype = 'leaf' ORDER BY path", (name,)
    ).fetchall()
    db.close()  # the last connection: the log goes into the file
    return [row[0] for row in rows]


def damage(path: Path, page: int) -> None:
    db = raw(path)
    (page_size,) = db.execute("PRAGMA page_size").fetchone()
    db.close()
    with path.open("r+b") as file:
        file.seek((page - 1) * page_size)
        file.write(b"\xff\x00\x13\x37" * (page_size // 4))


def test_the_schema_digest_is_that_of_a_new_store(tmp_path: Path) -> None:
    with RunStore.open(tmp_path / "state.db") as store:
        db = store._db
        assert schema_digest(db) == SCHEMA_DIGEST
        btrees = db.execute("SELECT name FROM sqlite_master WHERE rootpage > 0").fetchall()
    assert {row[0] for row in btrees} == BTREE_NAMES


def test_each_end_is_read_through_its_own_btree_without_sorting(tmp_path: Path) -> None:
    with RunStore.open(tmp_path / "state.db") as store:
        plan = " | ".join(row[3] for row in store._db.execute(f"EXPLAIN QUERY PLAN {_ENDS}"))
    assert "TEMP B-TREE" not in plan
    tables = (
        "runs",
        "steps",
        "subplans",
        "step_items",
        "event_chunks",
        "limits",
        "pools",
        "pool_uses",
    )
    for name in BTREE_NAMES - set(tables):
        assert plan.count(f"USING COVERING INDEX {name}") == 2
    for table in tables:
        assert plan.count(f"SCAN {table} |") + plan.endswith(f"SCAN {table}") == 2


@pytest.mark.parametrize("end", [0, -1], ids=["first", "last"])
@pytest.mark.parametrize("btree", ["runs", "subplans", "sqlite_autoindex_runs_1"])
def test_a_damaged_end_of_a_btree_is_refused_when_opened(
    btree: str, end: int, tmp_path: Path
) -> None:
    path = tmp_path / "state.db"
    big_run(path)
    with RunStore.open(path) as store:
        store.start_run("r2", manifest("a"))
    damage(path, leaves(path, btree)[end])
    with pytest.raises(
        StoreError,
        match=rf"^cannot open the store {re.escape(str(path))}: the database is corrupt: "
        r"database disk image is malformed$",
    ):
        RunStore.open(path, readonly=True)


def test_a_damaged_middle_page_fails_the_read_that_reaches_it_and_an_interrupted_resume(
    tmp_path: Path,
) -> None:
    """Opening does not read every page: damage between the ends of a b-tree is found by the
    query that reaches it, and by the full check before a run that did not end cleanly is
    resumed; a run that ended cleanly is resumed without it."""
    path = tmp_path / "state.db"
    big_run(path)
    with RunStore.open(path) as store:
        store.start_run("r2", manifest("a"), owner=gone_owner())
        store.start_run("r3", manifest("b"))
        store.finish_run("r3", "failed")
    middle = leaves(path, "subplans")
    assert len(middle) > 2
    damage(path, middle[len(middle) // 2])  # a page of r1's subplans
    with RunStore.open(path) as store:
        with pytest.raises(
            StoreError, match=r"^cannot read the store .*: database disk image is malformed$"
        ):
            store.subplans("r1")
        assert store.get_run("r2").status is RunStatus.INTERRUPTED
        expected = (
            f"cannot write to the store {path}: the database is corrupt: database disk image "
            "is malformed"
        )
        with pytest.raises(StoreError, match=f"^{re.escape(expected)}( \\(.+\\))?$"):
            store.resume_run("r2")
        assert store.get_run("r2").resumes == 0
        assert store.resume_run("r3").resumes == 1


def test_a_sound_interrupted_run_is_resumed_after_the_full_check(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    big_run(path, owner_gone=True)
    with RunStore.open(path) as store:
        assert store.resume_run("r1").resumes == 1


def test_a_store_of_an_older_schema_is_checked_in_full_before_it_is_migrated(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.db"
    big_run(path)
    db = raw(path)
    db.execute("PRAGMA user_version = 2")  # as if: the schema differs from this version's
    db.execute("PRAGMA writable_schema = ON")
    db.execute("UPDATE sqlite_master SET sql = replace(sql, 'TEXT', 'text') WHERE name = 'runs'")
    db.close()
    damage(path, leaves(path, "subplans")[1])  # between the ends: only the full check sees it
    with pytest.raises(StoreError, match=r"^cannot open the store .*: the database is corrupt: .+"):
        RunStore.open(path)


def test_a_store_migrated_from_an_older_version_has_this_versions_schema(tmp_path: Path) -> None:
    """Else every later open of it would read every page."""
    db = raw(tmp_path / "state.db")
    migrate(db, MIGRATIONS[:2])
    assert schema_digest(db) != SCHEMA_DIGEST
    migrate(db)
    assert schema_digest(db) == SCHEMA_DIGEST
    db.close()
