"""A running run's caps changed from another process (``subplans limit``), through the store:
the requests and what came of them (``LimitRecord``), and their SQL; ``change_limit`` asks.

The asking side records the request in the ``limits`` table (one row per run and target: the
whole run's ``max_parallel``, one step's, or a pool's capacity), then signals the run's owner
with ``LIMIT_SIGNAL`` once it is proven to be the recorded process, as ``cancel_run`` does. The
owner reads the requests it has not acted on (``pending_limits``), applies them, and records
what it did (``record_limit``): the cap before the first change, the cap now, or why it
refused. A request made before the owner listens is not lost: it reads them when it starts to.
"""

from __future__ import annotations

import signal
import sqlite3
from dataclasses import dataclass
from typing import Any

from subplans.engine.config import MAX_PARALLEL_LIMIT

__all__ = [
    "LIMIT_SIGNAL",
    "RUN_TARGET",
    "LimitRecord",
    "check_limit",
    "limit_target",
    "pending_limits",
    "read_limits",
    "write_applied",
    "write_request",
]

#: What tells a run's owner that a request waits in the store.
LIMIT_SIGNAL = signal.SIGUSR1
#: The target of the whole run's ``max_parallel``.
RUN_TARGET = "max_parallel"


@dataclass(frozen=True, slots=True)
class LimitRecord:
    """A target's last request and what the run made of it."""

    target: str
    requested: int
    requested_at: float
    #: Which request of the target this is (1, 2, ...); ``applied`` is the last acted on.
    request: int
    applied: int | None
    original: int | None
    current: int | None
    applied_at: float | None
    error: str | None

    @property
    def pending(self) -> bool:
        """Whether the run has not acted on the last request yet."""
        return self.applied is None or self.applied < self.request

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable copy."""
        return {
            "target": self.target,
            "requested": self.requested,
            "requested_at": self.requested_at,
            "pending": self.pending,
            "original": self.original,
            "current": self.current,
            "applied_at": self.applied_at,
            "error": self.error,
        }


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

_COLUMNS = "target, requested, requested_at, request, applied, original, current, applied_at, error"


def read_limits(db: sqlite3.Connection, run_id: str) -> list[LimitRecord]:
    """Every target of ``run_id`` that was asked to change, by target."""
    rows = db.execute(
        f"SELECT {_COLUMNS} FROM limits WHERE run_id = ? ORDER BY target", (run_id,)
    ).fetchall()
    return [LimitRecord(*row) for row in rows]


def pending_limits(db: sqlite3.Connection, run_id: str) -> list[LimitRecord]:
    """The requests of ``run_id`` the run has not acted on, by target."""
    return [record for record in read_limits(db, run_id) if record.pending]


def write_request(db: sqlite3.Connection, run_id: str, target: str, limit: int, now: float) -> None:
    """Record a request: the target's next one."""
    db.execute(
        "INSERT INTO limits (run_id, target, requested, requested_at, request) "
        "VALUES (?, ?, ?, ?, 1) ON CONFLICT (run_id, target) DO UPDATE SET "
        "requested = excluded.requested, requested_at = excluded.requested_at, "
        "request = request + 1",
        (run_id, target, limit, now),
    )


def write_applied(
    db: sqlite3.Connection,
    record: LimitRecord,
    run_id: str,
    *,
    original: int | None,
    current: int | None,
    error: str | None,
    now: float,
) -> None:
    """Record what the run made of ``record``'s request: the cap before the first change
    (kept from the first time), the cap now, or why it refused it."""
    db.execute(
        "UPDATE limits SET applied = ?, original = coalesce(original, ?), "
        "current = coalesce(?, current), applied_at = ?, error = ? "
        "WHERE run_id = ? AND target = ?",
        (record.request, original, current, now, error, run_id, record.target),
    )
