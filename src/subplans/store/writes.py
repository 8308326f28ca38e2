"""The run owner's writes: a run started, resumed or finished, its process groups forgotten.

Each function writes through a connection inside a write transaction its caller holds (the
``RunStore``), so that a check and the write it allows commit together. The recorder writes
what events change (``recorder``, ``batch_writer``); these are the writes no event makes.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection, Iterable
from itertools import chain, count
from operator import itemgetter
from pathlib import Path
from typing import TYPE_CHECKING

from subplans.store.event_chunks import encode, last_seq, write_chunk
from subplans.store.liveness import ProcessIdentity
from subplans.store.manifest import PlanManifest
from subplans.store.records import RunStatus
from subplans.store.statements import execute_rows

if TYPE_CHECKING:
    from subplans.store.run_details import ProcessGroupRecord

__all__ = [
    "assume_completed",
    "clear_process_groups",
    "finish_run",
    "insert_run",
    "register",
    "reopen_run",
    "replan_run",
]

_OWNER = "owner_pid, owner_host, owner_boot_id, owner_start"


def _owner_values(owner: ProcessIdentity) -> tuple[int, str, str, int | None]:
    return owner.pid, owner.host, owner.boot_id, owner.start_time


def insert_run(
    db: sqlite3.Connection,
    run_id: str,
    manifest: PlanManifest,
    *,
    owner: ProcessIdentity,
    run_dir: Path | str | None,
    started: float,
) -> None:
    """A new ``running`` run owned by ``owner``, every step and subplan of ``manifest`` pending."""
    db.execute(
        "INSERT INTO runs (id, plan_file, plan_name, plan_hash, profile, run_dir, status, "
        f"started_at, finished_at, resumes, {_OWNER}) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL, 0, ?, ?, ?, ?)",
        (
            run_id,
            manifest.file,
            manifest.name,
            manifest.hash,
            json.dumps(manifest.profile),
            None if run_dir is None else str(run_dir),
            RunStatus.RUNNING.value,
            started,
            *_owner_values(owner),
        ),
    )
    register(db, run_id, manifest)


_REGISTER_STEPS = (
    "INSERT INTO steps (run_id, step_id, position, state) VALUES {rows} "
    "ON CONFLICT DO UPDATE SET position = excluded.position"
)
_REGISTER_SUBPLANS = (
    "INSERT INTO subplans (run_id, subplan_id, step_id, position, state) VALUES {rows} "
    "ON CONFLICT DO UPDATE SET step_id = excluded.step_id, position = excluded.position"
)
_REGISTER_USES = "INSERT OR REPLACE INTO pool_uses VALUES {rows}"
#: Rows per statement when registering (see ``statements``).
_CHUNK = 256


def register(db: sqlite3.Connection, run_id: str, manifest: PlanManifest) -> None:
    """Every step and subplan of ``manifest`` pending, unless it has a row (which then takes
    its place in plan order)."""
    steps = list(chain.from_iterable(zip(manifest.steps, count())))
    execute_rows(db, _REGISTER_STEPS, "(?1, ?, ?, 'pending')", 2, (run_id,), steps, chunk=_CHUNK)
    # In the order of the table's key (stable: of an id given twice, the last still wins),
    # SQLite inserts each row next to the previous one: a fifth fewer instructions than in
    # plan order, which need not be the key's ("s10" sorts before "s9").
    rows = sorted(
        (
            (subplan_id, step_id, position)
            for position, (subplan_id, step_id) in enumerate(manifest.subplans)
        ),
        key=itemgetter(0),
    )
    subplans = list(chain.from_iterable(rows))
    execute_rows(
        db, _REGISTER_SUBPLANS, "(?1, ?, ?, ?, 'pending')", 3, (run_id,), subplans, chunk=_CHUNK
    )
    if manifest.pools:  # a run without pools writes nothing more
        db.executemany(
            "INSERT OR REPLACE INTO pools VALUES (?, ?, ?, ?)",
            [(run_id, *pool) for pool in manifest.pools],
        )
        uses = list(chain.from_iterable(manifest.uses))
        execute_rows(db, _REGISTER_USES, "(?1, ?, ?, ?, ?, ?)", 5, (run_id,), uses, chunk=_CHUNK)


def reopen_run(db: sqlite3.Connection, run_id: str, owner: ProcessIdentity) -> None:
    """The run running again under ``owner``; every subplan and step but the completed ones
    pending again."""
    db.execute(
        "UPDATE runs SET status = ?, finished_at = NULL, resumes = resumes + 1, "
        "owner_pid = ?, owner_host = ?, owner_boot_id = ?, owner_start = ? WHERE id = ?",
        (RunStatus.RUNNING.value, *_owner_values(owner), run_id),
    )
    db.execute(
        "UPDATE subplans SET state = 'pending', attempts = 0, started = NULL, "
        "finished = NULL, exit_code = NULL, error = NULL, pgid = NULL, pgid_start = NULL, "
        "worker = NULL WHERE run_id = ? AND state <> 'completed'",
        (run_id,),
    )
    db.execute(
        "UPDATE steps SET state = 'pending', started = NULL, finished = NULL, error = NULL "
        "WHERE run_id = ? AND state <> 'completed'",
        (run_id,),
    )


def replan_run(db: sqlite3.Connection, run_id: str, manifest: PlanManifest) -> None:
    """The run takes ``manifest``'s plan: its hash and profile, its new subplans pending, the
    rows of those no longer in it dropped (their events stay)."""
    db.execute(
        "UPDATE runs SET plan_file = ?, plan_name = ?, plan_hash = ?, profile = ? WHERE id = ?",
        (manifest.file, manifest.name, manifest.hash, json.dumps(manifest.profile), run_id),
    )
    keep = set(manifest.subplan_ids)
    stored = db.execute("SELECT subplan_id FROM subplans WHERE run_id = ?", (run_id,)).fetchall()
    db.executemany(
        "DELETE FROM subplans WHERE run_id = ? AND subplan_id = ?",
        # A step made when it starts holds what it recorded: its rows stay.
        [(run_id, sid) for (sid,) in stored if sid not in keep and not manifest.made_later(sid)],
    )
    # The new plan's pools and uses replace the old ones.
    db.execute("DELETE FROM pools WHERE run_id = ?", (run_id,))
    db.execute("DELETE FROM pool_uses WHERE run_id = ?", (run_id,))
    register(db, run_id, manifest)


def assume_completed(
    db: sqlite3.Connection, run_id: str, subplan_ids: Collection[str], reason: str, now: float
) -> None:
    """Record these subplans completed (those not yet), each with an event that says why."""
    skipped: list[str] = []
    for subplan_id in subplan_ids:
        row = db.execute(
            "SELECT step_id FROM subplans "
            "WHERE run_id = ? AND subplan_id = ? AND state <> 'completed'",
            (run_id, subplan_id),
        ).fetchone()
        if row is None:
            continue
        (step_id,) = row
        db.execute(
            "UPDATE subplans SET state = 'completed', finished = ?, error = NULL, pgid = NULL, "
            "pgid_start = NULL WHERE run_id = ? AND subplan_id = ?",
            (now, run_id, subplan_id),
        )
        # The steps of a nested plan recorded completed: its work is asserted done too.
        inside = f"{subplan_id}/"
        db.execute(
            "UPDATE steps SET state = 'completed', finished = ?, error = NULL "
            "WHERE run_id = ? AND substr(step_id, 1, ?) = ? AND state <> 'completed'",
            (now, run_id, len(inside), inside),
        )
        payload = {"subplan_id": subplan_id, "reason": reason}
        skipped.append(encode((now, "subplan_skipped", subplan_id, step_id, payload)))
    if skipped:
        write_chunk(db, run_id, last_seq(db, run_id) + 1, skipped, scaled=False)


def finish_run(db: sqlite3.Connection, run_id: str, status: RunStatus, finished: float) -> bool:
    """Record how the run ended; False if there is no such run."""
    updated = db.execute(
        "UPDATE runs SET status = ?, finished_at = ? WHERE id = ?",
        (status.value, finished, run_id),
    ).rowcount
    return bool(updated)


def clear_process_groups(
    db: sqlite3.Connection, run_id: str, groups: Iterable[ProcessGroupRecord]
) -> None:
    """Forget these process groups (they are gone); a group recorded since is kept."""
    db.executemany(
        "UPDATE subplans SET pgid = NULL, pgid_start = NULL "
        "WHERE run_id = ? AND subplan_id = ? AND pgid = ?",
        [(run_id, group.subplan_id, group.pgid) for group in groups],
    )
