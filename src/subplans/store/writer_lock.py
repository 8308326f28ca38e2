"""The lock a writer holds on its run while it holds the run's session: one byte, at an offset
made of the run id, of one file beside the store (``<store>-writers``, created empty on
demand).

A new writer of a run waits for it before it reads where the run's events end, so that two
writers never number a run's events alike: after a ``kill -9`` of a run, its writer process
(a session of its own, SIGTERM ignored) still commits the run's backlog while ``subplans
resume`` starts the run's next recorder. The kernel frees the lock when its holder dies,
however it dies; runs never wait for each other (an offset of 62 bits each); the file stays
empty, whatever the number of runs.

POSIX record locks (``fcntl.lockf``) belong to a process, and closing any descriptor of the
file frees every one it holds there: a process opens the file once while it uses it (shared by
every ``RunWriterLock`` of it) and keeps its own holders apart itself (the kernel never tells a
process that it holds a lock). Standard library only: the writer process imports it.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import struct
import threading
import time
from collections.abc import Callable

from subplans.store.writer_watch import Watch

__all__ = ["RunWriterLock", "held_message", "wait_out"]

logger = logging.getLogger("subplans")

#: Seconds between tries while another writer holds the run.
_POLL = 0.02
#: ``struct flock`` on Linux (64-bit offsets): type, whence, start, length, pid.
_FLOCK = struct.Struct("@hhqqi4x")


class _File:
    __slots__ = ("fd", "held", "users")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.users = 0
        #: The offsets this process holds.
        self.held: set[int] = set()


_files: dict[str, _File] = {}
_guard = threading.Lock()


def _forked() -> None:
    """In a child made by ``fork()``: the parent's locks are not the child's."""
    global _guard
    _files.clear()
    _guard = threading.Lock()


os.register_at_fork(after_in_child=_forked)


class RunWriterLock:
    """The writers' lock of run ``run_id`` in the store at ``store`` (a path), not yet taken.

    Raises:
        OSError: the lock file cannot be opened or created (a read-only folder): the caller
            goes on without it, and SQLite says what is wrong with the store.
    """

    __slots__ = ("file", "name", "offset", "taken")

    def __init__(self, store: str, run_id: str) -> None:
        self.name = f"{os.path.abspath(store)}-writers"
        digest = hashlib.blake2b(run_id.encode(), digest_size=8).digest()
        self.offset = int.from_bytes(digest, "little") >> 2
        self.taken = False
        with _guard:
            file = _files.get(self.name)
            if file is None:
                flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC
                file = _files[self.name] = _File(os.open(self.name, flags, 0o666))
            file.users += 1
        self.file = file

    def take(self) -> int | None:
        """Take the lock if it is free (None); else the pid of its holder (0: unknown)."""
        with _guard:
            if self.offset in self.file.held:
                return os.getpid()  # another recorder of this process holds it
            try:
                fcntl.lockf(self.file.fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, self.offset)
            except OSError:
                return _holder(self.file.fd, self.offset)
            self.file.held.add(self.offset)
            self.taken = True
            return None

    def wait(self, bound: float, tick: Callable[[], None] | None = None) -> int | None:
        """``take`` the lock, waiting while its holder makes progress (``writer_watch``):
        None once taken; the holder's pid once it was hung for ``bound`` seconds. ``tick``
        is called between tries."""
        watched, watch = -1, Watch(None)
        while True:
            holder = self.take()
            if holder is None:
                return None
            if holder != watched:  # a new holder: a bound of its own
                own = holder in (0, os.getpid())
                watched, watch = holder, Watch(None if own else f"/proc/{holder}/stat")
                watch.restart()
            if watch.left(0.0, bound) is None:
                return holder
            if tick is not None:
                tick()
            time.sleep(_POLL)

    def close(self) -> None:
        """Let the lock go (if taken), and the file once this process uses it no more."""
        with _guard:
            file = self.file
            if self.taken:
                self.taken = False
                file.held.discard(self.offset)
                fcntl.lockf(file.fd, fcntl.LOCK_UN, 1, self.offset)
            file.users -= 1
            if not file.users and _files.get(self.name) is file:
                del _files[self.name]
                os.close(file.fd)


def wait_out(
    path: str, name: str, run_id: str, bound: float, tick: Callable[[], None] | None = None
) -> tuple[RunWriterLock | None, str | None]:
    """Take ``run_id``'s lock in the store at ``path`` (``name``: as its recorder was given
    it), waiting while an earlier writer of the run holds it and makes progress: the lock, or
    None if no lock file can be made (SQLite then says what is wrong with the store); and the
    failure if that writer was hung for ``bound`` seconds (the lock None then)."""
    try:
        lock = RunWriterLock(path, run_id)
    except OSError:
        return None, None
    holder = lock.take()
    if holder is not None:
        logger.debug(
            "run %s of the store %s is held by an earlier writer (process %s): waiting",
            run_id,
            name,
            holder,
        )
        holder = lock.wait(bound, tick)
    if holder is None:
        return lock, None
    lock.close()
    return None, held_message(name, run_id, holder, bound)


def _holder(fd: int, offset: int) -> int:
    """The pid of the process that holds ``offset`` (0: unknown, or free by now)."""
    query = _FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, offset, 1, 0)
    kind, _, _, _, pid = _FLOCK.unpack(fcntl.fcntl(fd, fcntl.F_GETLK, query))
    return 0 if kind == fcntl.F_UNLCK else int(pid)


def held_message(name: str, run_id: str, holder: int, bound: float) -> str:
    """Why a recorder of ``run_id`` cannot start: an earlier writer holds the run."""
    who = f"writer process {holder}" if holder else "the writer"
    return (
        f"cannot record run {run_id} in the store {name}: {who} of an earlier recorder of "
        f"the run still holds it and made no progress for {bound:g} seconds (is it stopped?)"
    )
