"""``RunStore``: the SQLite file that keeps every run: opening it and the owner's writes, over
the queries the CLI asks of it (``RunReader``, in ``reader``).

One writer at a time (SQLite's write lock, waited on up to ``timeout`` seconds), any number of
readers alongside it (WAL mode), from any process. A ``RunStore`` is for one thread; the
``RunRecorder`` writes events through a connection of its own, in its own thread. Each method
is one transaction: the SQL is in ``queries`` (reading) and ``writes`` (the owner's writes),
opening the file in ``opening``.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable, Collection, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Literal

import subplans.store.limits as limits
import subplans.store.queries as queries
import subplans.store.writes as writes
from subplans.engine.errors import RunNotFoundError, StoreError
from subplans.store.checking import quick_check
from subplans.store.liveness import ProcessIdentity, check_run_id
from subplans.store.lock import RunLock
from subplans.store.manifest import PlanManifest
from subplans.store.opening import open_connection
from subplans.store.reader import RunReader
from subplans.store.recorder import RecorderSettings, RunRecorder, wait_for_writer
from subplans.store.records import RUN_ENDS, RunInfo, RunStatus
from subplans.store.writer_watch import bound_for

if TYPE_CHECKING:
    from subplans.engine.bus import EventBus
    from subplans.store.run_details import LimitRecord, ProcessGroupRecord

__all__ = ["RunStore"]


class RunStore(RunReader):
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

        ``check`` checks an existing file in time that does not grow with it: its schema and
        both ends of every b-tree; every page (``PRAGMA quick_check``) only if its schema is
        not this version's (see ``checking``). ``readonly`` opens an existing store for
        queries only. A
        store that did not exist before and could not be created is removed again, so no
        half-written database is ever left behind.

        Raises:
            StoreError: the path cannot be created or written, or holds something other than a
                healthy store of a version we know; the one-line message says which.
        """
        path = Path(path)
        connection = open_connection(path, readonly=readonly, check=check, timeout=timeout)
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
        settings: RecorderSettings | None = None,
    ) -> RunRecorder:
        """A ``RunRecorder`` writing ``run_id``'s events into this store (see its options;
        ``timeout`` defaults to the store's)."""
        return RunRecorder(
            self.path,
            run_id,
            bus=bus,
            durable=durable,
            batch_delay=batch_delay,
            max_batch=max_batch,
            timeout=self.timeout if timeout is None else timeout,
            settings=RecorderSettings() if settings is None else settings,
            # Open, the store was checked as it opened: the recorder need not open it again.
            _opened=self._connection is not None,
        )

    def wait_for_writer(self, run_id: str) -> None:
        """Return once no earlier recorder of ``run_id`` is still writing: after a ``kill -9``
        of a run, its writer process first commits what it was handed, and what a resume
        decides from the store (what to skip, what to stop) must see it.

        Raises:
            StoreError: that writer made no progress for twice the store's ``timeout`` and a
                second (``RunRecorder``: when a writer counts as hung).
        """
        wait_for_writer(self.path, run_id, bound_for(self.timeout))

    # --- transactions ---------------------------------------------------------------------

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

    def _check_every_page(self) -> None:
        """``PRAGMA quick_check``, before building on a run that did not end cleanly (its
        process, or the machine, may have died mid-write): opening checks less (``checking``).

        Raises:
            StoreError: the database is damaged.
        """
        try:
            quick_check(self._db)
        except sqlite3.Error as error:
            problem = f"the database is corrupt: {error}" if "malformed" in str(error) else error
            raise StoreError(f"cannot write to the store {self.path}: {problem}") from None

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
                queries.refuse_a_second_run(db, self.path, run_id, manifest.file, owner)
            writes.insert_run(db, run_id, manifest, owner=owner, run_dir=run_dir, started=started)
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
        ones are for the executor to skip (``completed_subplans``). With ``manifest`` (a changed
        plan resumed with ``--force``), the run takes the new plan's hash and profile, new
        subplans are added as pending, and the rows of subplans no longer in the plan are
        dropped (their events stay). Call it holding the run's lock, after
        ``stop_leftover_groups``.

        The subplans in ``assume_completed`` (typically those the owner left running when it
        died, whose outcome is unknown, and what nested plans among them hold) are recorded
        completed, as the operator asserts, each with a ``subplan_skipped`` event that keeps
        ``reason``. Unless ``concurrent``, it is refused while another run of the same plan
        file is live, as ``start_run`` is. A run that did not end cleanly (recorded
        ``running``) is resumed only once every page of the store has passed
        ``PRAGMA quick_check``.

        Raises:
            RunBusyError: the run's owner is alive, or a recorded process group still lives.
            PlanRunningError: another run of the plan's file is running, and its owner lives.
            RunNotFoundError: no such run.
            StoreError: the store is damaged, or cannot be written.
        """
        owner = owner if owner is not None else ProcessIdentity.current()
        run = self.get_run(run_id)
        queries.refuse_a_busy_resume(run, owner, self.process_groups(run_id))
        if run.recorded_status is RunStatus.RUNNING:
            self._check_every_page()
        with self._writing() as db:
            if not concurrent:
                plan_file = run.plan_file if manifest is None else manifest.file
                queries.refuse_a_second_run(db, self.path, run_id, plan_file, owner)
            writes.assume_completed(db, run_id, assume_completed, reason, self._clock())
            writes.reopen_run(db, run_id, owner)
            if manifest is not None:
                writes.replan_run(db, run_id, manifest)
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
            queries.refuse_a_second_run(db, self.path, run_id or "", plan_file, owner)

    def finish_run(
        self,
        run_id: str,
        status: RunStatus | Literal["completed", "failed", "cancelled"],
        *,
        finished_at: float | None = None,
    ) -> None:
        """Record how a run ended, durably. The recorder does it too, from the root plan's
        ``plan_finished`` event; this is for runs that end without one."""
        if status not in RUN_ENDS:
            raise ValueError(f"status must be 'completed', 'failed' or 'cancelled', got {status!r}")
        finished = self._clock() if finished_at is None else finished_at
        with self._writing() as db:
            updated = writes.finish_run(db, run_id, RunStatus(status), finished)
        if not updated:
            raise RunNotFoundError(f"no run {run_id} in the store {self.path}")

    def request_limit(self, run_id: str, target: str, limit: int) -> int:
        """Record a request to change a running run's cap (``limits.limit_run`` asks); returns
        its number, which ``limit_request`` reads the outcome of."""
        with self._writing() as db:
            return limits.write_request(db, run_id, target, limit, self._clock())

    def listen_for_limits(self, run_id: str) -> None:
        """Record that this process, the run's owner, handles ``LIMIT_SIGNAL`` from now on."""
        with self._writing() as db:
            limits.write_listener(db, run_id, os.getpid(), self._clock())

    def pending_limits(self, run_id: str) -> list[LimitRecord]:
        """The requests to change ``run_id``'s caps that it has not acted on yet."""
        with self._reading() as db:
            return limits.pending_limits(db, run_id)

    def record_limit(
        self,
        run_id: str,
        record: LimitRecord,
        *,
        original: int | None = None,
        current: int | None = None,
        error: str | None = None,
        started_with: int | None = None,
    ) -> None:
        """Record what the run made of ``record``'s request: its cap before and after, or
        why it refused it; ``started_with``: the cap its target had as the run started."""
        with self._writing() as db:
            limits.write_applied(
                db,
                record,
                run_id,
                original=original,
                current=current,
                error=error,
                now=self._clock(),
                started_with=started_with,
            )

    def process_groups(self, run_id: str) -> list[ProcessGroupRecord]:
        """The process groups recorded for ``run_id`` that may still live."""
        with self._reading() as db:
            return queries.process_groups(db, run_id)

    def leftovers(self, run_id: str) -> tuple[RunInfo, list[ProcessGroupRecord]]:
        """The run and its recorded process groups, read together: when this shows an owner
        that is gone, every group in it is that owner's (a resume records its owner first).

        Raises:
            RunNotFoundError: no such run.
        """
        with self._reading() as db:
            return queries.read_run(db, self.path, run_id), queries.process_groups(db, run_id)

    def clear_process_groups(self, run_id: str, groups: Iterable[ProcessGroupRecord]) -> None:
        """Forget these process groups (they are gone); a group recorded since is kept."""
        with self._writing() as db:
            writes.clear_process_groups(db, run_id, groups)
