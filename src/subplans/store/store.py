"""``RunStore``: the SQLite file that keeps every run, and the queries the CLI asks of it.

One writer at a time (SQLite's write lock, waited on up to ``timeout`` seconds), any number of
readers alongside it (WAL mode), from any process. A ``RunStore`` is for one thread; the
``RunRecorder`` writes events through a connection of its own, in its own thread.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import closing, contextmanager, suppress
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

from subplans.engine.errors import PlanRunningError, RunBusyError, RunNotFoundError, StoreError
from subplans.store.liveness import (
    Liveness,
    ProcessIdentity,
    RunLock,
    check_run_id,
    live_process_groups,
    owner_liveness,
)
from subplans.store.manifest import PlanManifest
from subplans.store.records import (
    SUBPLAN_STATES,
    PlanDiff,
    ProcessGroupRecord,
    RunInfo,
    StepInfo,
    StoredEvent,
    SubplanInfo,
    from_json,
    some,
)
from subplans.store.schema import SCHEMA_VERSION, SchemaError, check_store, migrate

if TYPE_CHECKING:
    from subplans.engine.events import EventBus
    from subplans.store.recorder import RunRecorder

__all__ = ["RunStore", "default_store_path"]


def default_store_path(
    plan_file: Path | str | None = None, environ: Mapping[str, str] | None = None
) -> Path:
    """``$SUBPLANS_STORE`` if set, else ``.subplans/state.db`` next to ``plan_file`` (or in the
    current folder, for commands that name no plan)."""
    env = os.environ if environ is None else environ
    if env.get("SUBPLANS_STORE"):
        return Path(env["SUBPLANS_STORE"]).expanduser()
    folder = Path(plan_file).parent if plan_file is not None else Path()
    return folder / ".subplans" / "state.db"


_RUN_COLUMNS = (
    "id, plan_file, plan_name, plan_hash, profile, run_dir, status, started_at, finished_at, "
    "resumes, owner_pid, owner_host, owner_boot_id, owner_start"
)
_SUBPLAN_COLUMNS = (
    "subplan_id, step_id, state, attempts, started, finished, exit_code, error, log_file, pgid"
)

# --- the store ---------------------------------------------------------------------------------


class RunStore:
    """The run store at ``path``: open it with ``RunStore.open(path)``."""

    def __init__(
        self,
        path: Path,
        connection: sqlite3.Connection,
        *,
        timeout: float,
        clock: Callable[[], float],
    ) -> None:
        self.path = path
        self.timeout = timeout
        self._connection: sqlite3.Connection | None = connection
        self._clock = clock

    @classmethod
    def open(
        cls,
        path: Path | str,
        *,
        readonly: bool = False,
        check: bool = True,
        timeout: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> RunStore:
        """Open the store at ``path``, creating it (and its folder) unless ``readonly``.

        ``check`` runs ``PRAGMA quick_check`` on an existing file (linear in its size: about
        20 ms per 100,000 events). ``readonly`` opens an existing store for queries only. A
        store that did not exist before and could not be created is removed again, so no
        half-written database is ever left behind.

        Raises:
            StoreError: the path cannot be created or written, or holds something other than a
                healthy store of a version we know; the one-line message says which.
        """
        path = Path(path)
        if path.is_dir():
            raise StoreError(_cannot_open(path, "it is a folder, not a file"))
        existed = path.exists()
        if not existed:
            if readonly:
                raise StoreError(_cannot_open(path, "no store there yet"))
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                problem = f"cannot create the folder {path.parent}: {error.strerror or error}"
                raise StoreError(_cannot_open(path, problem)) from None
        connection: sqlite3.Connection | None = None
        try:
            if existed:
                # Looked at through a read-only connection first: a file that is not a store of
                # ours is never changed, not one byte (not even switched to WAL).
                connection = _inspected(path, timeout=timeout)
                if readonly:
                    connection = _for_reading(path, connection, timeout=timeout)
                else:
                    connection.close()
                    connection = None
            if connection is None:
                connection = sqlite3.connect(path, timeout=timeout, isolation_level=None)
            if check and existed:
                _quick_check(connection)
            if not readonly:
                _prepare(connection)
        except (sqlite3.Error, SchemaError) as error:
            if connection is not None:
                connection.close()
            if not existed:
                _remove_database(path)
            raise StoreError(_cannot_open(path, _explain(error, path))) from None
        return cls(path, connection, timeout=timeout, clock=clock)

    def __repr__(self) -> str:
        state = "open" if self._connection is not None else "closed"
        return f"<RunStore {str(self.path)!r} {state}>"

    def close(self) -> None:
        """Close the connection (idempotent)."""
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def __enter__(self) -> RunStore:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def locks_folder(self) -> Path:
        """Where run locks live: ``locks/`` next to the database."""
        return self.path.parent / "locks"

    def lock(self, run_id: str) -> RunLock:
        """The lock of ``run_id`` (not yet acquired)."""
        return RunLock(self.locks_folder, run_id)

    def recorder(
        self,
        run_id: str,
        *,
        bus: EventBus | None = None,
        durable: bool = True,
        batch_delay: float = 0.05,
        max_batch: int = 20_000,
        timeout: float | None = None,
    ) -> RunRecorder:
        """A ``RunRecorder`` writing ``run_id``'s events into this store (see its options;
        ``timeout`` defaults to the store's)."""
        from subplans.store.recorder import RunRecorder

        return RunRecorder(
            self.path,
            run_id,
            bus=bus,
            durable=durable,
            batch_delay=batch_delay,
            max_batch=max_batch,
            timeout=self.timeout if timeout is None else timeout,
        )

    # --- transactions ---------------------------------------------------------------------

    @property
    def _db(self) -> sqlite3.Connection:
        if self._connection is None:
            raise RuntimeError("the store is closed")
        return self._connection

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """One consistent snapshot (a read transaction)."""
        db = self._db
        try:
            db.execute("BEGIN")
            try:
                yield db
            finally:
                db.execute("COMMIT")
        except sqlite3.Error as error:
            raise StoreError(f"cannot read the store {self.path}: {error}") from None

    @contextmanager
    def _writing(self) -> Iterator[sqlite3.Connection]:
        """One durable write transaction (synchronous=FULL: fsynced when it commits)."""
        db = self._db
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        except sqlite3.Error as error:
            raise StoreError(f"cannot write to the store {self.path}: {error}") from None

    # --- the owner's writes ---------------------------------------------------------------

    def start_run(
        self,
        run_id: str,
        manifest: PlanManifest,
        *,
        owner: ProcessIdentity | None = None,
        run_dir: Path | str | None = None,
        started_at: float | None = None,
        concurrent: bool = False,
    ) -> RunInfo:
        """Record a new run as ``running`` and owned by ``owner`` (this process by default),
        with every step and subplan of ``manifest`` pending. Durable once it returns.

        Unless ``concurrent``, a plan file runs once at a time in a store: the check and the new
        row are one write transaction, so of two runs started at the same instant one wins.

        Raises:
            PlanRunningError: another run of the same plan file is running, and its owner
                lives (or runs on another host).
            StoreError: a run with this id exists, or the store cannot be written.
        """
        check_run_id(run_id)
        owner = owner if owner is not None else ProcessIdentity.current()
        started = self._clock() if started_at is None else started_at
        with self._writing() as db:
            if db.execute("SELECT 1 FROM runs WHERE id = ?", (run_id,)).fetchone():
                raise StoreError(f"cannot write to the store {self.path}: run {run_id} exists")
            if not concurrent:
                _refuse_a_second_run(db, self.path, run_id, manifest.file, owner)
            db.execute(
                f"INSERT INTO runs ({_RUN_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, 'running', ?, "
                "NULL, 0, ?, ?, ?, ?)",
                (
                    run_id,
                    manifest.file,
                    manifest.name,
                    manifest.hash,
                    json.dumps(manifest.profile),
                    None if run_dir is None else str(run_dir),
                    started,
                    *_owner_row(owner),
                ),
            )
            _register(db, run_id, manifest)
        return self.get_run(run_id)

    def resume_run(
        self,
        run_id: str,
        manifest: PlanManifest | None = None,
        *,
        owner: ProcessIdentity | None = None,
        concurrent: bool = False,
        assume_completed: Collection[str] = (),
        reason: str = "recorded completed by the operator",
    ) -> RunInfo:
        """Make ``run_id`` running again under ``owner`` (this process by default).

        Every subplan but the completed ones becomes pending again: failed and cancelled ones,
        and those left running by an interrupted owner, run again (at-least-once); completed
        ones are for the executor to skip (``completed_subplans``). With ``manifest`` (a changed plan resumed with ``--force``), the
        run takes the new plan's hash and profile, new subplans are added as pending, and the
        rows of subplans no longer in the plan are dropped (their events stay). Call it holding
        the run's lock, after ``stop_leftover_groups``.

        The subplans in ``assume_completed`` (typically those the owner left running when it
        died, whose outcome is unknown, and what nested plans among them hold) are recorded
        completed, as the operator asserts, each with a ``subplan_skipped`` event that keeps
        ``reason``. Unless ``concurrent``, it is refused while another run of the same plan
        file is live, as ``start_run`` is.

        Raises:
            RunBusyError: the run's owner is alive, or a recorded process group still lives.
            PlanRunningError: another run of the plan's file is running, and its owner lives.
            RunNotFoundError: no such run.
        """
        owner = owner if owner is not None else ProcessIdentity.current()
        run = self.get_run(run_id)
        if run.recorded_status == "running" and run.owner != owner:
            liveness = owner_liveness(run.owner)
            if liveness is not Liveness.GONE:
                who = run.owner if liveness is Liveness.ALIVE else "a process on another host"
                raise RunBusyError(f"run {run_id} is still being driven by {who}")
        live = live_process_groups()
        alive = [r for r in self.process_groups(run_id) if r.pgid in live]
        if alive:
            raise RunBusyError(
                f"run {run_id} left process groups running ({some([str(r.pgid) for r in alive])})"
                "; stop them first (stop_leftover_groups)"
            )
        with self._writing() as db:
            if not concurrent:
                plan_file = run.plan_file if manifest is None else manifest.file
                _refuse_a_second_run(db, self.path, run_id, plan_file, owner)
            _assume_completed(db, run_id, assume_completed, reason, self._clock())
            db.execute(
                "UPDATE runs SET status = 'running', finished_at = NULL, resumes = resumes + 1, "
                "owner_pid = ?, owner_host = ?, owner_boot_id = ?, owner_start = ? WHERE id = ?",
                (*_owner_row(owner), run_id),
            )
            db.execute(
                "UPDATE subplans SET state = 'pending', attempts = 0, started = NULL, "
                "finished = NULL, exit_code = NULL, error = NULL, pgid = NULL, pgid_start = NULL "
                "WHERE run_id = ? AND state <> 'completed'",
                (run_id,),
            )
            db.execute(
                "UPDATE steps SET state = 'pending', started = NULL, finished = NULL, error = NULL "
                "WHERE run_id = ? AND state <> 'completed'",
                (run_id,),
            )
            if manifest is not None:
                db.execute(
                    "UPDATE runs SET plan_file = ?, plan_name = ?, plan_hash = ?, profile = ? "
                    "WHERE id = ?",
                    (
                        manifest.file,
                        manifest.name,
                        manifest.hash,
                        json.dumps(manifest.profile),
                        run_id,
                    ),
                )
                keep = set(manifest.subplan_ids)
                stored = db.execute(
                    "SELECT subplan_id FROM subplans WHERE run_id = ?", (run_id,)
                ).fetchall()
                db.executemany(
                    "DELETE FROM subplans WHERE run_id = ? AND subplan_id = ?",
                    [(run_id, sid) for (sid,) in stored if sid not in keep],
                )
                _register(db, run_id, manifest)
        return self.get_run(run_id)

    def check_plan_free(
        self,
        plan_file: str,
        *,
        run_id: str | None = None,
        owner: ProcessIdentity | None = None,
    ) -> None:
        """Refuse early what ``start_run`` and ``resume_run`` refuse (unless ``concurrent``):
        a run other than ``run_id`` of ``plan_file`` that is running, driven by a live process
        other than ``owner`` (this process by default). Only a look: those two check again in
        the transaction that starts the run.

        Raises:
            PlanRunningError: such a run is in the store.
        """
        owner = owner if owner is not None else ProcessIdentity.current()
        with self._reading() as db:
            _refuse_a_second_run(db, self.path, run_id or "", plan_file, owner)

    def finish_run(
        self,
        run_id: str,
        status: Literal["completed", "failed", "cancelled"],
        *,
        finished_at: float | None = None,
    ) -> None:
        """Record how a run ended, durably. The recorder does it too, from the root plan's
        ``plan_finished`` event; this is for runs that end without one."""
        if status not in ("completed", "failed", "cancelled"):
            raise ValueError(f"status must be 'completed', 'failed' or 'cancelled', got {status!r}")
        finished = self._clock() if finished_at is None else finished_at
        with self._writing() as db:
            updated = db.execute(
                "UPDATE runs SET status = ?, finished_at = ? WHERE id = ?",
                (status, finished, run_id),
            ).rowcount
        if not updated:
            raise RunNotFoundError(f"no run {run_id} in the store {self.path}")

    def process_groups(self, run_id: str) -> list[ProcessGroupRecord]:
        """The process groups recorded for ``run_id`` that may still live."""
        with self._reading() as db:
            return _process_groups(db, run_id)

    def leftovers(self, run_id: str) -> tuple[RunInfo, list[ProcessGroupRecord]]:
        """The run and its recorded process groups, read together: when this shows an owner
        that is gone, every group in it is that owner's (a resume records its owner first).

        Raises:
            RunNotFoundError: no such run.
        """
        with self._reading() as db:
            return self._run(db, run_id), _process_groups(db, run_id)

    def clear_process_groups(self, run_id: str, groups: Iterable[ProcessGroupRecord]) -> None:
        """Forget these process groups (they are gone); a group recorded since is kept."""
        with self._writing() as db:
            db.executemany(
                "UPDATE subplans SET pgid = NULL, pgid_start = NULL "
                "WHERE run_id = ? AND subplan_id = ? AND pgid = ?",
                [(run_id, group.subplan_id, group.pgid) for group in groups],
            )

    # --- queries --------------------------------------------------------------------------

    def list_runs(self, limit: int = 20) -> list[RunInfo]:
        """The ``limit`` most recent runs, newest first."""
        if type(limit) is not int or limit < 1:
            raise ValueError(f"limit must be an integer >= 1, got {limit!r}")
        with self._reading() as db:
            rows = db.execute(
                f"SELECT {_RUN_COLUMNS} FROM runs ORDER BY started_at DESC, id DESC LIMIT ?",
                (limit,),
            ).fetchall()
            return [_run_info(row, _counts(db, row[0])) for row in rows]

    def get_run(self, run_id: str | None = None) -> RunInfo:
        """The run ``run_id``, or the most recent one.

        Raises:
            RunNotFoundError: no such run (or no run at all).
        """
        with self._reading() as db:
            return self._run(db, run_id)

    def _run(self, db: sqlite3.Connection, run_id: str | None) -> RunInfo:
        if run_id is None:
            row = db.execute(
                f"SELECT {_RUN_COLUMNS} FROM runs ORDER BY started_at DESC, id DESC LIMIT 1"
            ).fetchone()
        else:
            row = db.execute(f"SELECT {_RUN_COLUMNS} FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            what = "no runs" if run_id is None else f"no run {run_id}"
            raise RunNotFoundError(f"{what} in the store {self.path}")
        return _run_info(row, _counts(db, row[0]))

    def steps(self, run_id: str) -> list[StepInfo]:
        """Every step of the run, in plan order."""
        with self._reading() as db:
            rows = db.execute(
                "SELECT step_id, state, total, started, finished, error FROM steps "
                "WHERE run_id = ? ORDER BY position IS NULL, position, started",
                (run_id,),
            ).fetchall()
        return [StepInfo(r[0], r[1], r[2], r[3], r[4], from_json(r[5])) for r in rows]

    def subplans(self, run_id: str, *, state: str | None = None) -> list[SubplanInfo]:
        """The run's subplans in plan order, or only those in ``state``."""
        where, args = ("", (run_id,)) if state is None else (" AND state = ?", (run_id, state))
        with self._reading() as db:
            rows = db.execute(
                f"SELECT {_SUBPLAN_COLUMNS} FROM subplans WHERE run_id = ?{where} "
                "ORDER BY position IS NULL, position, started, subplan_id",
                args,
            ).fetchall()
        now = self._clock()
        return [_subplan_info(row, now) for row in rows]

    def running_subplans(self, run_id: str) -> list[SubplanInfo]:
        """The subplans running now, longest-running first, each with its elapsed time."""
        return sorted(self.subplans(run_id, state="running"), key=lambda s: s.started or 0.0)

    def failures(self, run_id: str) -> list[SubplanInfo]:
        """The failed subplans, in the order they failed, each with its error and log file."""
        found = self.subplans(run_id, state="failed")
        return sorted(found, key=lambda s: s.finished or 0.0)

    def completed_subplans(self, run_id: str) -> frozenset[str]:
        """The ids resume must skip: every subplan recorded as completed."""
        with self._reading() as db:
            rows = db.execute(
                "SELECT subplan_id FROM subplans WHERE run_id = ? AND state = 'completed'",
                (run_id,),
            ).fetchall()
        return frozenset(subplan_id for (subplan_id,) in rows)

    def log_file(self, run_id: str, subplan_id: str) -> Path | None:
        """Where a subplan's output went; None if it never started a process.

        Raises:
            RunNotFoundError: no such run, or no such subplan in it.
        """
        with self._reading() as db:
            row = db.execute(
                "SELECT log_file FROM subplans WHERE run_id = ? AND subplan_id = ?",
                (run_id, subplan_id),
            ).fetchone()
        if row is None:
            self.get_run(run_id)  # names a missing run rather than the subplan
            raise RunNotFoundError(f"run {run_id} has no subplan {subplan_id!r}")
        return None if row[0] is None else Path(row[0])

    def events(
        self, run_id: str, *, after_seq: int = 0, limit: int | None = None
    ) -> list[StoredEvent]:
        """The run's events with ``seq > after_seq``, in order: poll with the last seq seen to
        follow a live run."""
        with self._reading() as db:
            rows = db.execute(
                "SELECT seq, time, kind, subplan_id, step_id, payload FROM events "
                "WHERE run_id = ? AND seq > ? ORDER BY seq LIMIT ?",
                (run_id, after_seq, -1 if limit is None else limit),
            ).fetchall()
        return [StoredEvent(run_id, r[0], r[1], r[2], r[3], r[4], json.loads(r[5])) for r in rows]

    def plan_diff(self, run_id: str, manifest: PlanManifest) -> PlanDiff:
        """How ``manifest``'s subplan ids differ from those the run recorded."""
        run = self.get_run(run_id)
        with self._reading() as db:
            rows = db.execute(
                "SELECT subplan_id FROM subplans WHERE run_id = ? "
                "ORDER BY position IS NULL, position, subplan_id",
                (run_id,),
            ).fetchall()
        stored = [subplan_id for (subplan_id,) in rows]
        known, planned = set(stored), set(manifest.subplan_ids)
        return PlanDiff(
            run_id,
            tuple(i for i in manifest.subplan_ids if i not in known),
            tuple(i for i in stored if i not in planned),
            run.plan_hash != manifest.hash,
        )

    def integrity_check(self) -> list[str]:
        """``PRAGMA integrity_check``: ``[]`` when the database is sound, else its findings."""
        with self._reading() as db:
            rows = db.execute("PRAGMA integrity_check").fetchall()
        found = [str(row[0]) for row in rows]
        return [] if found == ["ok"] else found


# --- opening ------------------------------------------------------------------------------------


def _inspected(path: Path, *, timeout: float) -> sqlite3.Connection:
    """A read-only connection to the existing file at ``path``, once it has shown to be a store
    we may use (or an empty database): looking changes nothing in the file.

    The first look reads the file as it is on disk (``immutable``: no lock, no ``-wal`` or
    ``-shm`` file created next to it), so another application's file is refused untouched.
    That look may be stale (what a store's ``-wal`` holds is not in it yet), so it only ever
    refuses; the read-only connection after it decides. Where SQLite cannot create the
    ``-shm`` file that WAL readers share (a read-only folder or mount, a full disk), the file is
    then read as it is on disk: nothing can be writing it here.
    """
    uri = f"{path.absolute().as_uri()}?mode=ro"
    with closing(_connect(f"{uri}&immutable=1", timeout)) as look, suppress(sqlite3.Error):
        _identify(look)
    connection = _connect(uri, timeout)
    try:
        _identify(connection)
    except BaseException as error:
        connection.close()
        if not (isinstance(error, sqlite3.OperationalError) and _cannot_share(error)):
            raise
        connection = _connect(f"{uri}&immutable=1", timeout)
    return connection


def _connect(uri: str, timeout: float) -> sqlite3.Connection:
    return sqlite3.connect(uri, uri=True, timeout=timeout, isolation_level=None)


def _identify(connection: sqlite3.Connection) -> None:
    connection.execute("PRAGMA application_id").fetchone()  # "file is not a database" here
    check_store(connection)


def _quick_check(connection: sqlite3.Connection) -> None:
    rows = connection.execute("PRAGMA quick_check").fetchall()
    if [row[0] for row in rows] != ["ok"]:
        raise sqlite3.DatabaseError(f"database disk image is malformed ({rows[0][0]})")


def _cannot_share(error: sqlite3.OperationalError) -> bool:
    """True when SQLite could not open or create what WAL readers share, or write at all
    (not: the database is locked, which a moment later it may not be)."""
    name = error.sqlite_errorname
    return name.startswith(("SQLITE_CANTOPEN", "SQLITE_READONLY", "SQLITE_IOERR_SHM"))


def _for_reading(
    path: Path, inspected: sqlite3.Connection, *, timeout: float
) -> sqlite3.Connection:
    """A normal connection where the store can be written (a reader may still clear what it
    stopped), else the read-only one it was inspected with."""
    connection = sqlite3.connect(path, timeout=timeout, isolation_level=None)
    try:
        connection.execute("PRAGMA synchronous = FULL")
        migrate(connection)
    except BaseException as error:
        connection.close()
        if not (isinstance(error, sqlite3.OperationalError) and _cannot_share(error)):
            inspected.close()
            raise
        version = check_store(inspected)
        if version < SCHEMA_VERSION:
            raise SchemaError(
                f"its schema (version {version}) is older than this subplans' "
                f"({SCHEMA_VERSION}), and it cannot be brought up to date here: it is read-only"
            ) from None
        return inspected
    inspected.close()
    return connection


def _prepare(connection: sqlite3.Connection) -> None:
    """Switch a store (new, or inspected) to WAL, bring its schema up to date and prove that
    it can be written."""
    connection.execute("PRAGMA journal_mode = WAL").fetchone()
    # The owner's own writes (run start and end) are rare and must survive a power cut.
    connection.execute("PRAGMA synchronous = FULL")
    migrate(connection)
    # Fail now, not at the first write, on a file we may read but not write.
    connection.execute("BEGIN IMMEDIATE")
    try:
        version = connection.execute("PRAGMA user_version").fetchone()[0]
        connection.execute(f"PRAGMA user_version = {int(version)}")
    finally:
        connection.execute("ROLLBACK")


def _explain(error: sqlite3.Error | SchemaError, path: Path) -> str:
    text = str(error)
    if isinstance(error, SchemaError):
        return text
    if "file is not a database" in text:
        return "not an SQLite database (or a damaged one)"
    if "malformed" in text:
        return f"the database is corrupt: {text}"
    if "readonly" in text:
        return f"read-only: {text}"
    if "unable to open" in text and not os.access(path.parent, os.W_OK):
        return f"the folder {path.parent} is not writable"
    return text


def _cannot_open(path: Path, problem: str) -> str:
    return f"cannot open the store {path}: {problem}"


def _remove_database(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        with suppress(FileNotFoundError):
            os.unlink(f"{path}{suffix}")


# --- rows ---------------------------------------------------------------------------------------


def _owner_row(owner: ProcessIdentity) -> tuple[int, str, str, int | None]:
    return owner.pid, owner.host, owner.boot_id, owner.start_time


def _register(db: sqlite3.Connection, run_id: str, manifest: PlanManifest) -> None:
    db.executemany(
        "INSERT INTO steps (run_id, step_id, position, state) VALUES (?, ?, ?, 'pending') "
        "ON CONFLICT DO UPDATE SET position = excluded.position",
        [(run_id, step_id, position) for position, step_id in enumerate(manifest.steps)],
    )
    db.executemany(
        "INSERT INTO subplans (run_id, subplan_id, step_id, position, state) "
        "VALUES (?, ?, ?, ?, 'pending') "
        "ON CONFLICT DO UPDATE SET step_id = excluded.step_id, position = excluded.position",
        [
            (run_id, subplan_id, step_id, position)
            for position, (subplan_id, step_id) in enumerate(manifest.subplans)
        ],
    )


def _refuse_a_second_run(
    db: sqlite3.Connection, path: Path, run_id: str, plan_file: str, owner: ProcessIdentity
) -> None:
    """PlanRunningError if a run of ``plan_file`` other than ``run_id`` is running and its
    owner is another process that lives, or cannot be judged from here (another host); a
    killed owner never blocks. (One process that drives a plan twice knows it does.)"""
    target = os.path.realpath(plan_file)
    rows = db.execute(
        "SELECT id, plan_file, owner_pid, owner_host, owner_boot_id, owner_start FROM runs "
        "WHERE status = 'running' AND id <> ? ORDER BY started_at, id",
        (run_id,),
    ).fetchall()
    for other, file, pid, host, boot, start in rows:
        if os.path.realpath(file) != target:
            continue
        driver = None if pid is None else ProcessIdentity(pid, host, boot, start)
        if driver == owner or owner_liveness(driver) is Liveness.GONE:
            continue
        raise PlanRunningError(
            f"plan {plan_file} is already running in the store {path}: run {other}, driven by "
            f"{driver or 'an unknown process'}",
            run_id=other,
            plan_file=plan_file,
            pid=pid,
            host=host,
        )


def _assume_completed(
    db: sqlite3.Connection, run_id: str, subplan_ids: Collection[str], reason: str, now: float
) -> None:
    """Record these subplans completed (those not yet), each with an event that says why."""
    (seq,) = db.execute(
        "SELECT coalesce(max(seq), 0) FROM events WHERE run_id = ?", (run_id,)
    ).fetchone()
    for subplan_id in subplan_ids:
        row = db.execute(
            "SELECT step_id FROM subplans "
            "WHERE run_id = ? AND subplan_id = ? AND state <> 'completed'",
            (run_id, subplan_id),
        ).fetchone()
        if row is None:
            continue
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
        seq += 1
        db.execute(
            "INSERT INTO events (run_id, seq, time, kind, subplan_id, step_id, payload) "
            "VALUES (?, ?, ?, 'subplan_skipped', ?, ?, ?)",
            (
                run_id,
                seq,
                now,
                subplan_id,
                row[0],
                json.dumps({"subplan_id": subplan_id, "reason": reason}),
            ),
        )


def _process_groups(db: sqlite3.Connection, run_id: str) -> list[ProcessGroupRecord]:
    rows = db.execute(
        "SELECT subplan_id, pgid, pgid_start FROM subplans "
        "WHERE run_id = ? AND pgid IS NOT NULL ORDER BY position, subplan_id",
        (run_id,),
    ).fetchall()
    return [ProcessGroupRecord(*row) for row in rows]


def _counts(db: sqlite3.Connection, run_id: str) -> dict[str, int]:
    counts = dict.fromkeys(SUBPLAN_STATES, 0)
    for state, n in db.execute(
        "SELECT state, count(*) FROM subplans WHERE run_id = ? GROUP BY state", (run_id,)
    ):
        counts[state] = n
    return counts


def _run_info(row: Sequence[Any], counts: dict[str, int]) -> RunInfo:
    (run_id, plan_file, plan_name, plan_hash, profile, run_dir, status, started, finished) = row[:9]
    resumes, pid, host, boot, start = row[9:]
    owner = None if pid is None else ProcessIdentity(pid, host, boot, start)
    effective = status
    if status == "running" and owner_liveness(owner) is Liveness.GONE:
        effective = "interrupted"
        counts["interrupted"], counts["running"] = counts["running"], 0
    return RunInfo(
        run_id,
        plan_file,
        plan_name,
        plan_hash,
        json.loads(profile),
        run_dir,
        effective,
        status,
        started,
        finished,
        resumes,
        owner,
        counts,
    )


def _subplan_info(row: Sequence[Any], now: float) -> SubplanInfo:
    subplan_id, step_id, state, attempts, started, finished, exit_code, error, log, pgid = row
    elapsed = None if started is None else (now if finished is None else finished) - started
    return SubplanInfo(
        subplan_id,
        step_id,
        state,
        attempts,
        started,
        finished,
        elapsed,
        exit_code,
        from_json(error),
        log,
        pgid,
    )
