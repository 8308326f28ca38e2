"""Where the store's file is, and opening it: looked at before anything is written to it, switched to WAL, its
schema brought up to date, and proven writable; or refused with one line that says why.

A file that is not a store of ours is never changed, not one byte; a store that did not exist
and could not be created is removed again, so no half-written database is ever left behind. A
new store is made under a name of its own and linked into place once ready: a reader opening
it meanwhile (``subplans status`` as a run starts) sees no store or a whole one, never one
half made, so neither fails the other. A draft whose maker was killed before it linked it is
removed by the next maker.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Mapping
from contextlib import closing, suppress
from pathlib import Path

from subplans.engine.errors import StoreError
from subplans.store.checking import check_soundness
from subplans.store.liveness import process_start_time
from subplans.store.schema import SCHEMA_VERSION, SchemaError, check_store, migrate

__all__ = ["default_store_path", "open_connection"]


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


def open_connection(
    path: Path, *, readonly: bool, check: bool, timeout: float
) -> sqlite3.Connection:
    """A connection to the store at ``path`` in autocommit mode, creating it (and its folder)
    unless ``readonly`` (see ``RunStore.open``).

    Raises:
        StoreError: the path cannot be created or written, or holds something other than a
            healthy store of a version we know; the one-line message says which.
    """
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
    if not existed and not readonly:
        existed = _made(path, timeout)
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
            check_soundness(connection)
        if not readonly:
            _prepare(connection)
    except (sqlite3.Error, SchemaError) as error:
        if connection is not None:
            connection.close()
        if not existed:
            _remove_database(path)
        raise StoreError(_cannot_open(path, _explain(error, path))) from None
    return connection


def _made(path: Path, timeout: float) -> bool:
    """Make a new store at ``path`` whole, then link it into place (unless another process
    made one there first: then that one is opened); False where links cannot be made (the
    store is then made in place)."""
    _remove_stale_drafts(path)
    draft = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.new")
    try:
        with closing(sqlite3.connect(draft, timeout=timeout, isolation_level=None)) as made:
            _prepare(made)
        # Closed: its log is in the file, which is in WAL mode for good.
        os.link(draft, path)
    except FileExistsError:
        pass  # another process made the store meanwhile
    except (OSError, sqlite3.Error):
        return path.exists()  # (no links here, or no room: made in place as before)
    finally:
        _remove_database(Path(draft))
    return True


def _remove_stale_drafts(path: Path) -> None:
    """Remove the drafts of ``path`` left by makers killed between making and linking (their
    process is gone); a live maker's draft is left alone."""
    head = f".{path.name}."
    with suppress(OSError):
        for entry in os.scandir(path.parent):
            name = entry.name
            if not (name.startswith(head) and name.endswith(".new")):
                continue
            pid = name[len(head) :].partition(".")[0]
            if pid.isdigit() and process_start_time(int(pid)) is None:
                _remove_database(Path(entry.path))


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
        connection.execute("PRAGMA cell_size_check = ON")  # as in _prepare
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
    # Opening checks only part of the file: a damaged page is refused as it is read, never
    # written into (``checking``).
    connection.execute("PRAGMA cell_size_check = ON")
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
