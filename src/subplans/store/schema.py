"""The store's schema: numbered migrations, applied in order, each in its own transaction.

``PRAGMA user_version`` holds the number of migrations applied; ``PRAGMA application_id`` marks
the file as a subplans store. A database with a higher version than ``SCHEMA_VERSION`` was
written by a newer subplans and is refused rather than misread. Migrations only ever append:
never edit one that has shipped, add the next.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Final

from subplans.engine.values import Value

__all__ = [
    "APPLICATION_ID",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "Migration",
    "SchemaError",
    "check_store",
    "migrate",
]

#: "SPLN" in ASCII: marks the file as ours (``file state.db`` shows it too).
APPLICATION_ID = 0x53504C4E


class Migration(Value):
    """The statements that take the schema from version ``n - 1`` to ``n``."""

    __slots__ = ("description", "statements")
    _fields = ("description", "statements")

    def __init__(self, description: str, statements: tuple[str, ...]) -> None:
        self.description: Final = description
        self.statements: Final = statements

    def __repr__(self) -> str:
        return f"<Migration {self.description!r}: {len(self.statements)} statements>"


class SchemaError(Exception):
    """The file is not a store this version can use; the message says why (no path)."""


# Foreign keys are declared for the reader but not enforced (PRAGMA foreign_keys stays off):
# enforcing them would cost a lookup per inserted event.
_INITIAL = Migration(
    "runs, steps, subplans and events",
    (
        """
        CREATE TABLE runs (
            id            TEXT PRIMARY KEY,
            plan_file     TEXT NOT NULL,
            plan_name     TEXT NOT NULL DEFAULT '',
            plan_hash     TEXT NOT NULL DEFAULT '',
            profile       TEXT NOT NULL DEFAULT '{}',  -- JSON: values and their provenance
            run_dir       TEXT,
            status        TEXT NOT NULL
                          CHECK (status IN ('running', 'completed', 'failed', 'cancelled')),
            started_at    REAL NOT NULL,               -- epoch seconds
            finished_at   REAL,
            resumes       INTEGER NOT NULL DEFAULT 0,
            owner_pid     INTEGER,
            owner_host    TEXT,
            owner_boot_id TEXT,                        -- /proc/sys/kernel/random/boot_id
            owner_start   INTEGER                      -- field 22 of /proc/<pid>/stat
        )
        """,
        "CREATE INDEX runs_by_start ON runs (started_at DESC, id DESC)",
        """
        CREATE TABLE steps (
            run_id   TEXT NOT NULL REFERENCES runs (id),
            step_id  TEXT NOT NULL,
            position INTEGER,                          -- plan order
            state    TEXT NOT NULL,                    -- pending, running, completed, failed, skipped
            total    INTEGER NOT NULL DEFAULT 0,
            started  REAL,
            finished REAL,
            error    TEXT,                             -- JSON
            PRIMARY KEY (run_id, step_id)
        ) WITHOUT ROWID
        """,
        """
        CREATE TABLE subplans (
            run_id     TEXT NOT NULL REFERENCES runs (id),
            subplan_id TEXT NOT NULL,
            step_id    TEXT,
            position   INTEGER,                        -- plan order, depth first
            state      TEXT NOT NULL,                  -- pending, running, completed, failed
            attempts   INTEGER NOT NULL DEFAULT 0,
            started    REAL,
            finished   REAL,
            exit_code  INTEGER,
            error      TEXT,                           -- JSON
            log_file   TEXT,
            pgid       INTEGER,                        -- set while its process group may live
            pgid_start INTEGER,                        -- the group leader's start time
            PRIMARY KEY (run_id, subplan_id)
        ) WITHOUT ROWID
        """,
        """
        CREATE TABLE events (
            run_id     TEXT NOT NULL REFERENCES runs (id),
            seq        INTEGER NOT NULL,               -- 1, 2, ... per run, in publish order
            time       REAL NOT NULL,
            kind       TEXT NOT NULL,
            subplan_id TEXT,
            step_id    TEXT,
            payload    TEXT NOT NULL,                  -- JSON: to_dict() less event, timestamp
            PRIMARY KEY (run_id, seq)
        ) WITHOUT ROWID
        """,
    ),
)

# The items each run-time ``for_each`` step read when it started, so that a resumed run makes
# the same subplans of them (section 14 of the specification).
_STEP_ITEMS = Migration(
    "the items of run-time for_each steps",
    (
        """
        CREATE TABLE step_items (
            run_id   TEXT NOT NULL REFERENCES runs (id),
            step_id  TEXT NOT NULL,
            source   TEXT NOT NULL,                    -- the source, as the plan gives it
            count    INTEGER NOT NULL,
            items    TEXT NOT NULL,                    -- JSON: the items, in order
            read_at  REAL NOT NULL,                    -- epoch seconds
            PRIMARY KEY (run_id, step_id)
        ) WITHOUT ROWID
        """,
    ),
)

# The view and the trigger are written tersely: SQLite parses the schema's text at every open.
_EVENTS_VIEW = """(run_id,seq,time,kind,subplan_id,step_id,payload) AS SELECT run_id,seq,t,
CASE WHEN s THEN 'subplan_state_changed' ELSE json_extract(v,'$[1]') END,
json_extract(v,CASE WHEN s THEN '$[1]' ELSE '$[2]' END),
CASE WHEN s THEN NULL ELSE json_extract(v,'$[3]') END,
CASE WHEN s THEN json_object('subplan_id',json_extract(v,'$[1]'),'previous',
json_extract(v,'$[2]'),'state',json_extract(v,'$[3]'),'attempt',json_extract(v,'$[4]'),
'error',NULL) ELSE json_extract(v,'$[4]') END
FROM (SELECT c.run_id,c.first_seq+e.key AS seq,json_extract(e.value,'$[0]')*c.time_unit AS t,
e.value AS v,json_type(e.value,'$[4]')='integer' AS s FROM event_chunks c,json_each(c.events) e)"""
# One event's time as a chunk keeps it: in 2**-22 s, an integer, when it is a whole number of
# those (SQLite writes a float in JSON with 15 digits: an epoch time would lose its last ones).
_WHOLE = "{t}*4194304.0=CAST({t}*4194304.0 AS INTEGER)"
_TIME_UNIT = f"CASE WHEN {_WHOLE} THEN 1/4194304.0 ELSE 1.0 END"
_TIME_UNITS = f"CASE WHEN {_WHOLE} THEN CAST({{t}}*4194304.0 AS INTEGER) ELSE {{t}} END"
# A payload that is not a JSON object is kept as the text it is.
_PAYLOAD = "CASE WHEN json_valid({p}) AND json_type({p})='object' THEN json({p}) ELSE {p} END"
#: An event inserted into the view (as into the table of versions 1 and 2) is a chunk of one.
_EVENTS_INSERT = """BEGIN
SELECT RAISE(ABORT,'UNIQUE constraint failed: events.run_id, events.seq') WHERE EXISTS
(SELECT 1 FROM event_chunks WHERE run_id=NEW.run_id AND NEW.seq BETWEEN first_seq AND last_seq);
INSERT INTO event_chunks VALUES(NEW.run_id,NEW.seq,NEW.seq,{unit},json_array(json_array({units},
NEW.kind,NEW.subplan_id,NEW.step_id,{payload})));
END"""

# Events kept in chunks, a row per batch the recorder writes rather than a row per event
# (issue #10: three rows per subplan cost more than the dispatch itself); the view ``events``
# shows them as the table of versions 1 and 2 did, and takes inserts as that table did. Each
# event of a chunk is a JSON array: ``[time, kind, subject, step_id, payload]`` (payload a JSON
# object, or the text of anything else), or, for a state change without an error (most),
# ``[time, subplan_id, previous, state, attempt]``, told apart by the type of the fifth element
# (an integer: the attempt). ``seq`` is ``first_seq`` plus the event's place in the chunk;
# ``time`` is the stored number times ``time_unit`` (the recorder's: 2**-22 s, in which an
# epoch time since 2004 is an integer, written briefly and exactly; see ``event_chunks``).
_EVENT_CHUNKS = Migration(
    "events in chunks, a row per batch, behind a view named events",
    (
        # run_id, the seq of the first event, first_seq + its events - 1, seconds per unit of
        # its times, JSON: an array per event (see above).
        "CREATE TABLE event_chunks (run_id TEXT NOT NULL REFERENCES runs (id), "
        "first_seq INTEGER NOT NULL, last_seq INTEGER NOT NULL, time_unit REAL NOT NULL, "
        "events TEXT NOT NULL, PRIMARY KEY (run_id, first_seq))",
        """
        INSERT INTO event_chunks (run_id, first_seq, last_seq, time_unit, events)
        SELECT run_id, seq, seq, {unit}, json_array(json_array({units}, kind, subplan_id,
            step_id, {payload}))
        FROM events
        """.format(
            unit=_TIME_UNIT.format(t="time"),
            units=_TIME_UNITS.format(t="time"),
            payload=_PAYLOAD.format(p="payload"),
        ),
        "DROP TABLE events",
        f"CREATE VIEW events {_EVENTS_VIEW}",
        "CREATE TRIGGER events_insert INSTEAD OF INSERT ON events "
        + _EVENTS_INSERT.format(
            unit=_TIME_UNIT.format(t="NEW.time"),
            units=_TIME_UNITS.format(t="NEW.time"),
            payload=_PAYLOAD.format(p="NEW.payload"),
        ),
    ),
)

# A running run's caps changed from another process (``subplans limit``, issue #14): one row per
# request (each caller is told what came of its own) and what the run made of it;
# ``store.limits`` reads and writes it. Request 0 of target ``listener`` is no request: the owner
# whose pid is its ``requested`` handles LIMIT_SIGNAL (a subplans before `limit` dies of it, and
# is never sent it).
_LIMITS = Migration(
    "caps changed while a run runs",
    (
        """
        CREATE TABLE limits (
            run_id       TEXT NOT NULL REFERENCES runs (id),
            target       TEXT NOT NULL,            -- max_parallel, step:STEP_ID or pool:NAME
            request      INTEGER NOT NULL,         -- 1, 2, ...: which request of the target
            requested    INTEGER NOT NULL,         -- the limit asked for (request 0: see below)
            requested_at REAL NOT NULL,            -- epoch seconds
            applied_at   REAL,                     -- when the run acted on it (NULL: not yet)
            previous     INTEGER,                  -- the cap just before it
            current      INTEGER,                  -- the cap after it
            error        TEXT,                     -- why the run refused it
            PRIMARY KEY (run_id, target, request)
        ) WITHOUT ROWID
        """,
    ),
)

# The run's pools and the units each subplan takes of them (issue #14), so that ``status`` tells
# a pool's usage from the subplans' states; ``store.pool_usage`` reads them. A run without pools
# writes no row here. A run-time ``for_each`` step's subplans are known only when it starts:
# the units its template takes are recorded under the step's id, kind ``template``, with
# ``below`` the path of the subplan under each item's unit ('' for the unit itself, ``s/x``
# for a subplan of the nested plan it runs).
_POOLS = Migration(
    "the run's pools and the units its subplans use",
    (
        """
        CREATE TABLE pools (
            run_id         TEXT NOT NULL REFERENCES runs (id),
            name           TEXT NOT NULL,
            size           INTEGER NOT NULL,       -- its capacity as the plan sets it
            max_per_second REAL,
            PRIMARY KEY (run_id, name)
        ) WITHOUT ROWID
        """,
        """
        CREATE TABLE pool_uses (
            run_id   TEXT NOT NULL REFERENCES runs (id),
            subject  TEXT NOT NULL,                -- a subplan id, or a run-time step's id
            kind     TEXT NOT NULL CHECK (kind IN ('subplan', 'template')),
            below    TEXT NOT NULL,                -- kind template: see above; else ''
            pool     TEXT NOT NULL,
            units    INTEGER NOT NULL,
            PRIMARY KEY (run_id, kind, subject, below, pool)
        ) WITHOUT ROWID
        """,
    ),
)

# Which cluster worker ran each subplan (issue #12): its address as the subplan's process
# started there (``SubplanProcessStarted.worker``), NULL for one that ran here. Such a process
# is on another machine: its group is never recorded in pgid (nothing here may signal it).
_WORKERS = Migration(
    "the cluster worker that ran each subplan",
    ("ALTER TABLE subplans ADD COLUMN worker TEXT",),
)

#: Every migration, in order: add the next at the end (never edit one that has shipped).
MIGRATIONS: tuple[Migration, ...] = (
    _INITIAL,
    _STEP_ITEMS,
    _EVENT_CHUNKS,
    _LIMITS,
    _POOLS,
    _WORKERS,
)

#: The schema version this subplans writes: the number of migrations.
SCHEMA_VERSION = len(MIGRATIONS)


def migrate(
    connection: sqlite3.Connection, migrations: Sequence[Migration] = MIGRATIONS
) -> tuple[int, int]:
    """Bring the schema up to ``len(migrations)``; returns the versions before and after.

    ``connection`` must be in autocommit mode (``isolation_level=None``). Each migration runs in
    one ``BEGIN IMMEDIATE`` transaction together with the version bump, so a failed one leaves
    the previous version intact; two processes migrating at once serialise on the write lock.

    Raises:
        SchemaError: the file was written by a newer version, or by another application.
        sqlite3.Error: a statement failed (the transaction was rolled back).
    """
    latest = len(migrations)
    before = _version(connection)
    _check(connection, before, latest)
    version = before
    while version < latest:
        connection.execute("BEGIN IMMEDIATE")
        try:
            # Another process may have migrated between our look and the write lock.
            version = _version(connection)
            _check(connection, version, latest)
            if version < latest:
                for statement in migrations[version].statements:
                    connection.execute(statement)
                version += 1
                connection.execute(f"PRAGMA user_version = {version}")
                connection.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise
    return before, version


def check_store(
    connection: sqlite3.Connection, migrations: Sequence[Migration] = MIGRATIONS
) -> int:
    """The schema version of the database, once it is known to be one we may use; reads only.

    Raises:
        SchemaError: the file was written by a newer version, or by another application.
    """
    version = _version(connection)
    _check(connection, version, len(migrations))
    return version


def _version(connection: sqlite3.Connection) -> int:
    row = connection.execute("PRAGMA user_version").fetchone()
    return int(row[0])


def _check(connection: sqlite3.Connection, version: int, latest: int) -> None:
    application = int(connection.execute("PRAGMA application_id").fetchone()[0])
    if application not in (0, APPLICATION_ID) or (
        application == 0 and (version != 0 or _has_tables(connection))
    ):
        raise SchemaError("not a subplans store (an SQLite database of another application)")
    if version > latest:
        raise SchemaError(
            f"written by a newer subplans (schema version {version}; "
            f"this version knows up to {latest}); upgrade subplans to read it"
        )


def _has_tables(connection: sqlite3.Connection) -> bool:
    row = connection.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table'").fetchone()
    return bool(row[0])
