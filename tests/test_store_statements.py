"""Many rows per statement (``statements``), the row builder's rollback, and registering a big
plan: the store's speed-ups of issue #10 keep every row as it was."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from subplans import SubplanExecutionState, SubplanStateChanged
from subplans.store import PlanManifest, RunStore
from subplans.store.batch_writer import BatchWriter
from subplans.store.event_pickling import plain
from subplans.store.event_rows import RowBuilder
from subplans.store.statements import execute_rows

from .store_support import open_store

PENDING = SubplanExecutionState.PENDING
RUNNING = SubplanExecutionState.RUNNING

_TEMPLATE = "INSERT INTO t (tag, a, b) VALUES {rows}"


@pytest.fixture
def table() -> Iterator[tuple[sqlite3.Connection, list[int]]]:
    """A table and the row count of every INSERT executed into it."""
    connection = sqlite3.connect(":memory:", isolation_level=None)
    connection.execute("CREATE TABLE t (tag TEXT, a INTEGER, b TEXT)")
    sizes: list[int] = []

    def trace(statement: str) -> None:
        # SQLite traces the statement with its values bound: one "('x', " per row.
        if statement.startswith("INSERT"):
            sizes.append(statement.count("('x', "))

    connection.set_trace_callback(trace)
    yield connection, sizes
    connection.close()


@pytest.mark.parametrize(
    ("rows", "chunk", "sizes"),
    [
        (0, 4, []),
        (1, 4, [1]),
        (4, 4, [4]),
        (7, 4, [4, 2, 1]),
        (13, 4, [4, 4, 4, 1]),
        (10, 3, [3, 3, 3, 1]),
        (6, 256, [4, 2]),
    ],
)
def test_rows_go_in_chunks_then_powers_of_two(
    table: tuple[sqlite3.Connection, list[int]], rows: int, chunk: int, sizes: list[int]
) -> None:
    connection, executed = table
    flat = [value for i in range(rows) for value in (i, f"v{i}")]
    execute_rows(connection, _TEMPLATE, "(?1, ?, ?)", 2, ("x",), flat, chunk=chunk)
    assert executed == sizes
    assert connection.execute("SELECT tag, a, b FROM t ORDER BY a").fetchall() == [
        ("x", i, f"v{i}") for i in range(rows)
    ]


def test_a_statement_binds_no_more_values_than_sqlite_allows(
    table: tuple[sqlite3.Connection, list[int]],
) -> None:
    connection, executed = table
    connection.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 9)
    flat = [value for i in range(5) for value in (i, f"v{i}")]
    execute_rows(connection, _TEMPLATE, "(?1, ?, ?)", 2, ("x",), flat, chunk=256)
    assert executed == [4, 1]  # (9 - 1) // 2 rows at most
    assert connection.execute("SELECT count(*) FROM t").fetchone() == (5,)


def test_restore_forgets_the_batch_built_since_mark() -> None:
    builder = RowBuilder("r1", {"old"})
    builder.rows(plain([SubplanStateChanged("first", None, PENDING)]))
    builder.mark()
    batch = builder.rows(
        plain(
            [SubplanStateChanged("new", None, PENDING), SubplanStateChanged("old", None, PENDING)]
        )
    )
    assert batch.waiting == ["new"]  # "old" has a row: its pending state needs none
    assert builder.known == {"old", "first", "new"}
    builder.restore()
    assert builder.known == {"old", "first"}
    again = builder.rows(plain([SubplanStateChanged("new", None, PENDING)]))
    assert again.waiting == ["new"]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[RunStore]:
    opened = open_store(tmp_path)
    yield opened
    opened.close()


def test_a_big_plan_is_registered_in_plan_order(store: RunStore) -> None:
    steps = tuple(f"step{i}" for i in range(300))
    subplans = tuple((f"s{i}", steps[i % 300]) for i in range(1000))
    store.start_run("r1", PlanManifest(file="big.yaml", steps=steps, subplans=subplans))
    stored = store.subplans("r1")
    assert [(s.subplan_id, s.step_id, s.state) for s in stored] == [
        (subplan_id, step_id, "pending") for subplan_id, step_id in subplans
    ]
    assert [s.step_id for s in store.steps("r1")] == list(steps)


class _Failing:
    """An aggregate that fails: stands in for an SQLite built without its JSON functions."""

    def step(self, value: int, /) -> object:
        raise RuntimeError("no such function")

    def finalize(self) -> int:
        return 0


def test_the_subplans_with_a_row_are_read_with_or_without_sqlites_json(store: RunStore) -> None:
    ids = ("a", 'q"uote', "ü/\x01", "back\\slash")
    store.start_run(
        "r1", PlanManifest(file="p.yaml", steps=("s",), subplans=tuple((i, "s") for i in ids))
    )
    store.start_run(
        "r2", PlanManifest(file="q.yaml", steps=("s",), subplans=(("other", "s"),)), concurrent=True
    )
    with closing(sqlite3.connect(store.path, isolation_level=None)) as connection:
        assert BatchWriter(connection, "r1", chunk=4).builder.known == set(ids)
        connection.create_aggregate("json_group_array", 1, _Failing)
        assert BatchWriter(connection, "r1", chunk=4).builder.known == set(ids)
