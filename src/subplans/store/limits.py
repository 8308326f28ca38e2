"""A running run's caps changed from another process (``subplans limit``), through the store:
the requests and what came of them (``LimitRecord``, in ``run_details``: loaded on first use
of the name here, or once a request is read: a run that gets none never builds one), and their
SQL; ``change_limit`` asks.

The asking side records the request in the ``limits`` table (one row per run and target: the
whole run's ``max_parallel``, one step's, or a pool's capacity), then signals the run's owner
with ``LIMIT_SIGNAL`` once it is proven to be the recorded process, as ``cancel_run`` does. The
owner reads the requests it has not acted on (``pending_limits``), applies them, and records
what it did (``record_limit``): the cap before the first change, the cap now, or why it
refused. A request made before the owner listens is not lost: it reads them when it starts to.
Request 0 of a target, once one was applied, holds in ``requested`` the cap it had as the run
started (a step's may differ from its cap just before the first change: ``limit RUN N``
bounds every root step).
"""

from __future__ import annotations

import signal
import sqlite3
from typing import TYPE_CHECKING, Any

from subplans.engine.config import MAX_PARALLEL_LIMIT

if TYPE_CHECKING:
    from subplans.store.run_details import LimitRecord

__all__ = [
    "LIMIT_SIGNAL",
    "RUN_TARGET",
    "LimitRecord",
    "check_limit",
    "limit_target",
    "pending_limits",
    "read_limits",
    "read_listener",
    "read_request",
    "write_applied",
    "write_listener",
    "write_request",
]

#: What tells a run's owner that a request waits in the store.
LIMIT_SIGNAL = signal.SIGUSR1
#: The target of the whole run's ``max_parallel``.
RUN_TARGET = "max_parallel"


def __getattr__(name: str) -> object:
    if name != "LimitRecord":
        raise AttributeError(f"module 'subplans.store.limits' has no attribute {name!r}")
    from subplans.store.run_details import LimitRecord

    globals()[name] = LimitRecord
    return LimitRecord


def limit_target(*, step: str | None = None, pool: str | None = None) -> str:
    """The target of a step's cap (``step:ID``), a pool's (``pool:NAME``), or the run's."""
    if step is not None and pool is not None:
        raise ValueError("a limit is of a step or of a pool, not both")
    if step is not None:
        return f"step:{step}"
    return RUN_TARGET if pool is None else f"pool:{pool}"


def check_limit(target: str, limit: object) -> int:
    """``limit`` if it is a cap ``target`` may have: 1..32 for ``max_parallel`` (the run's or
    a step's), >= 1 for a pool.

    Raises:
        ValueError: it is not.
    """
    if target.startswith("pool:"):
        if type(limit) is not int or limit < 1:
            raise ValueError(f"a pool's capacity must be an integer >= 1, got {limit!r}")
        return limit
    if type(limit) is not int or not 1 <= limit <= MAX_PARALLEL_LIMIT:
        raise ValueError(f"max_parallel must be between 1 and {MAX_PARALLEL_LIMIT}, got {limit!r}")
    return limit


# --- the SQL (RunStore and RunReader call these inside their transactions) ---------------

_COLUMNS = "target, requested, requested_at, request, applied_at, previous, current, error"


def _request(row: tuple[Any, ...]) -> LimitRecord:
    from subplans.store.run_details import LimitRecord

    target, requested, requested_at, request, applied_at, previous, current, error = row
    applied = None if applied_at is None else request
    return LimitRecord(
        target,
        requested,
        requested_at,
        request,
        applied,
        previous,
        current,
        applied_at,
        error,
        previous=previous,
    )


def read_limits(db: sqlite3.Connection, run_id: str) -> list[LimitRecord]:
    """Every target of ``run_id`` that was asked to change, by target: its last request, the
    cap before the first change applied (``original``) and the cap now (``current``)."""
    rows = db.execute(
        f"SELECT {_COLUMNS} FROM limits WHERE run_id = ? AND request > 0 ORDER BY target, request",
        (run_id,),
    ).fetchall()
    if not rows:
        return []  # the common case: nothing was asked (and no record type to load)
    from dataclasses import replace

    from subplans.store.run_details import LimitRecord

    started_with = dict(
        db.execute(
            "SELECT target, requested FROM limits WHERE run_id = ? AND request = 0 AND target <> ?",
            (run_id, _LISTENER),
        ).fetchall()
    )
    by_target: dict[str, LimitRecord] = {}
    for row in rows:
        record = _request(row)
        before = by_target.get(record.target)
        if before is None:
            original = started_with.get(record.target, record.original)
            by_target[record.target] = replace(record, original=original)
            continue
        applied = record.applied if record.applied is not None else before.applied
        done = record.applied is not None and record.error is None
        by_target[record.target] = LimitRecord(
            record.target,
            record.requested,
            record.requested_at,
            record.request,
            applied,
            before.original if before.original is not None else record.original,
            record.current if done else before.current,
            record.applied_at if record.applied is not None else before.applied_at,
            record.error if record.applied is not None else before.error,
            previous=record.previous if record.applied is not None else before.previous,
        )
    return list(by_target.values())


def read_request(
    db: sqlite3.Connection, run_id: str, target: str, request: int
) -> LimitRecord | None:
    """One request of ``target``, and what the run made of it."""
    row = db.execute(
        f"SELECT {_COLUMNS} FROM limits WHERE run_id = ? AND target = ? AND request = ?",
        (run_id, target, request),
    ).fetchone()
    return None if row is None else _request(row)


def pending_limits(db: sqlite3.Connection, run_id: str) -> list[LimitRecord]:
    """The requests of ``run_id`` the run has not acted on, by target, in the order asked."""
    rows = db.execute(
        f"SELECT {_COLUMNS} FROM limits WHERE run_id = ? AND request > 0 AND applied_at IS NULL "
        "ORDER BY target, request",
        (run_id,),
    ).fetchall()
    return [_request(row) for row in rows]


def write_request(db: sqlite3.Connection, run_id: str, target: str, limit: int, now: float) -> int:
    """Record a request: the target's next one; returns its number."""
    row = db.execute(
        "INSERT INTO limits (run_id, target, request, requested, requested_at) "
        "SELECT ?, ?, coalesce(max(request), 0) + 1, ?, ? FROM limits "
        "WHERE run_id = ? AND target = ? RETURNING request",
        (run_id, target, limit, now, run_id, target),
    ).fetchone()
    return int(row[0])


def write_applied(
    db: sqlite3.Connection,
    record: LimitRecord,
    run_id: str,
    *,
    original: int | None,
    current: int | None,
    error: str | None,
    now: float,
    started_with: int | None = None,
) -> None:
    """Record what the run made of ``record``'s request: the cap just before it
    (``original``) and after it, or why it refused it; and, once, the cap its target had as
    the run started (``started_with``)."""
    db.execute(
        "UPDATE limits SET applied_at = ?, previous = ?, current = ?, error = ? "
        "WHERE run_id = ? AND target = ? AND request = ?",
        (now, original, current, error, run_id, record.target, record.request),
    )
    if started_with is not None:
        db.execute(
            "INSERT OR IGNORE INTO limits (run_id, target, request, requested, requested_at, "
            "applied_at) VALUES (?, ?, 0, ?, ?, ?)",
            (run_id, record.target, started_with, now, now),
        )


#: The target of the row (request 0) that says which owner of the run listens for requests.
_LISTENER = "listener"


def write_listener(db: sqlite3.Connection, run_id: str, pid: int, now: float) -> None:
    """Record that ``pid``, the run's owner, listens for the requests from now on."""
    db.execute(
        "INSERT OR REPLACE INTO limits (run_id, target, request, requested, requested_at, "
        "applied_at) VALUES (?, ?, 0, ?, ?, ?)",
        (run_id, _LISTENER, pid, now, now),
    )


def read_listener(db: sqlite3.Connection, run_id: str) -> int | None:
    """The pid of the run's owner that listens for the requests, if one does."""
    row = db.execute(
        "SELECT requested FROM limits WHERE run_id = ? AND target = ? AND request = 0",
        (run_id, _LISTENER),
    ).fetchone()
    return None if row is None else int(row[0])
