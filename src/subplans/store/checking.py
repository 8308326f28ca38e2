"""Checking a store's soundness: at every open, in time that does not grow with the store, and
in full (``PRAGMA quick_check``, every page) only where there is a reason to.

``PRAGMA quick_check`` reads the whole file: 0.7 ms for a store of one run of 1,000 subplans,
31 ms for one of 200 such runs, paid by every command that opens it. At open, what
SQLite reads first is checked instead: the header (SQLite refuses a file that is not a
database), the schema, which must be exactly the one this version writes (else the full check
runs, and its finding is the message), and both ends of every b-tree, read from its root: the
pages any query starts from, and those the latest writes went to. SQLite checks each page's
structure as it reads it (the connections that write, every cell: ``cell_size_check``), so
damage elsewhere fails the read that reaches it, with one clear line (``cannot read the store
P: database disk image is malformed``), and is never written into.

The full check runs where there is reason: a schema other than this version's (a store of an
older version, before it is migrated, or a changed one) and before ``resume_run`` takes over
a run whose owner is gone (a run that did not end cleanly, after a crash of its process or of
the machine).
"""

from __future__ import annotations

import sqlite3
import zlib

__all__ = [
    "BTREE_NAMES",
    "SCHEMA_DIGEST",
    "check_ends",
    "check_soundness",
    "quick_check",
    "schema_digest",
]

#: ``schema_digest`` of a store of the current schema (version 6); a test keeps it honest.
SCHEMA_DIGEST = 408801288

#: Each b-tree of schema 5 (a table, a ``WITHOUT ROWID`` table's key, an index), what reads it
#: in order and its key; the first entry and the last are read, each from the root down.
_BTREES = (
    ("runs", "runs NOT INDEXED", ("rowid",)),
    ("sqlite_autoindex_runs_1", "runs INDEXED BY sqlite_autoindex_runs_1", ("id",)),
    ("runs_by_start", "runs INDEXED BY runs_by_start", ("started_at", "id")),
    ("steps", "steps", ("run_id", "step_id")),
    ("subplans", "subplans", ("run_id", "subplan_id")),
    ("step_items", "step_items", ("run_id", "step_id")),
    ("limits", "limits", ("run_id", "target")),
    ("pools", "pools", ("run_id", "name")),
    ("pool_uses", "pool_uses", ("run_id", "kind", "subject", "below", "pool")),
    ("event_chunks", "event_chunks NOT INDEXED", ("rowid",)),
    (
        "sqlite_autoindex_event_chunks_1",
        "event_chunks INDEXED BY sqlite_autoindex_event_chunks_1",
        ("run_id", "first_seq"),
    ),
)


def _end(source: str, key: tuple[str, ...], order: str) -> str:
    return f"SELECT 1 FROM {source} ORDER BY {', '.join(f'{k} {order}' for k in key)} LIMIT 1"


#: The names ``_BTREES`` covers, and one statement that reads both ends of each (one statement:
#: preparing sixteen would cost more than running them).
BTREE_NAMES = frozenset(name for name, _, _ in _BTREES)
_ENDS = "SELECT " + ", ".join(
    f"({_end(source, key, order)})" for _, source, key in _BTREES for order in ("ASC", "DESC")
)


def schema_digest(connection: sqlite3.Connection) -> int:
    """A checksum of the schema's text (every table, index, view and trigger, by name)."""
    rows = connection.execute(
        "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY name"
    ).fetchall()
    return zlib.crc32(repr(rows).encode())


def check_soundness(connection: sqlite3.Connection) -> None:
    """What opening checks: the schema and the ends of every b-tree if the schema is this
    version's, else every page.

    Raises:
        sqlite3.DatabaseError: the database is damaged ("database disk image is malformed").
    """
    if schema_digest(connection) == SCHEMA_DIGEST:
        check_ends(connection)
    else:
        quick_check(connection)


def check_ends(connection: sqlite3.Connection) -> None:
    """Read the first and the last entry of every b-tree of the current schema."""
    connection.execute(_ENDS).fetchone()


def quick_check(connection: sqlite3.Connection) -> None:
    """``PRAGMA quick_check``: every page read, every row's constraints checked.

    Raises:
        sqlite3.DatabaseError: its first finding, as "database disk image is malformed (...)".
    """
    rows = connection.execute("PRAGMA quick_check").fetchall()
    if [row[0] for row in rows] != ["ok"]:
        raise sqlite3.DatabaseError(f"database disk image is malformed ({rows[0][0]})")
