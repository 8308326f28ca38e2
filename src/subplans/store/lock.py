"""``RunLock``: the advisory lock that one process holds while it drives a run."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import socket
from pathlib import Path
from types import TracebackType

from subplans.engine.errors import RunBusyError, StoreError
from subplans.store.liveness import check_run_id

__all__ = ["RunLock"]

logger = logging.getLogger("subplans")


class RunLock:
    """The advisory lock that one process holds while it drives a run.

    ``flock`` on ``<folder>/<run_id>.lock``, taken without waiting: the kernel frees it when the
    holder dies, however it dies, so a stale lock never needs cleaning up. The file holds the
    holder's pid and host, for the message of whoever is refused. The descriptor is
    close-on-exec, so commands never inherit it (a ``fork()`` without ``exec`` would).
    """

    __slots__ = ("_fd", "path", "run_id")

    def __init__(self, folder: Path | str, run_id: str) -> None:
        self.run_id = check_run_id(run_id)
        self.path = Path(folder) / f"{run_id}.lock"
        self._fd: int | None = None

    def __repr__(self) -> str:
        state = "held" if self._fd is not None else "free"
        return f"<RunLock run {self.run_id} {state} at {self.path}>"

    @property
    def held(self) -> bool:
        """True while this object holds the lock."""
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock, or fail at once.

        Raises:
            RunBusyError: another process holds it.
            StoreError: the lock file cannot be created.
            RuntimeError: this object holds it already.
        """
        if self._fd is not None:
            raise RuntimeError("this RunLock is already held")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as error:
            raise StoreError(
                f"cannot create the lock {self.path}: {error.strerror or error}"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").split()
            os.close(fd)
            who = f"process {holder[0]} on {holder[1]}" if len(holder) == 2 else "another process"
            raise RunBusyError(
                f"run {self.run_id} is being driven by {who}; wait for it to end, "
                f"or stop it with `subplans cancel {self.run_id}`"
            ) from None
        self._fd = fd
        line = f"{os.getpid()} {socket.gethostname()}\n".encode()
        try:
            os.ftruncate(fd, 0)
            if os.pwrite(fd, line, 0) != len(line):
                os.ftruncate(fd, 0)  # a name cut short would name someone else
        except OSError:
            # A full disk (or a file size limit): the lock holds all the same; whoever is
            # refused meanwhile is told "another process" instead of our pid.
            logger.debug("cannot write the holder of %s", self.path, exc_info=True)

    def release(self) -> None:
        """Give the lock up.

        Raises:
            RuntimeError: this object does not hold it.
        """
        if self._fd is None:
            raise RuntimeError("this RunLock is not held")
        fd, self._fd = self._fd, None
        # Emptied first: a refused process then never names a pid that no longer holds it.
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()
