"""The writer's loop (``writer_process.serve``) in a thread of this process: the writer when
no process can be started, or one did not answer its start (``writer_start``); and the size of
the pipes to a writer.
"""

from __future__ import annotations

import fcntl
import os
import threading
from typing import IO

__all__ = ["WriterThread", "enlarge"]

#: The pipe's size, at most; the system's limit is read from ``_PIPE_MAX``.
_PIPE_SIZE = 1 << 20
_PIPE_MAX = "/proc/sys/fs/pipe-max-size"


class WriterThread:
    """``writer_process.serve`` in a thread of this process, over a pair of pipes, its session
    ``frame`` sent: the writer when no process can be started, or one did not answer its
    start. It ends with this process (as
    the writer thread of old did) and cannot be killed, so it is never taken for hung; it is
    never lent as the spare. Has what the recorder uses of a ``Popen``."""

    def __init__(self, frame: bytes) -> None:
        read_fd, feed = os.pipe()
        acks, ack_end = os.pipe()
        self.pid = os.getpid()
        self.stdin: IO[bytes] = os.fdopen(feed, "wb")
        self.stdout: IO[bytes] = os.fdopen(acks, "rb")
        enlarge(feed)
        os.write(feed, frame)  # smaller than a pipe's atomic write, into an empty pipe
        os.set_blocking(feed, False)
        self.thread = threading.Thread(
            target=self._serve,
            args=(read_fd, ack_end),
            name="subplans recorder writer",
            daemon=True,
        )
        self.thread.start()

    def _serve(self, read_fd: int, ack_end: int) -> None:
        try:
            # (Imported here: the writer's modules are this process's only for a thread.)
            from subplans.store.writer_process import serve

            serve(read_fd, ack_end, 0.0, parent=0)  # one session; no parent to watch
        finally:
            os.close(read_fd)
            os.close(ack_end)

    def kill(self) -> None:
        """Nothing: a thread cannot be killed (and is never taken for hung)."""

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the thread's end (it cannot be killed: ``timeout`` is not applied); 0."""
        self.thread.join()
        return 0


def enlarge(fd: int) -> None:
    """Make the pipe at ``fd`` hold up to ``_PIPE_SIZE`` bytes, if the system allows: a busy
    writer then seldom leaves frames waiting."""
    try:
        with open(_PIPE_MAX) as limit:
            size = min(_PIPE_SIZE, int(limit.read()))
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, size)
    # The default size works, with more waits; AttributeError: not Linux.
    except (OSError, ValueError, AttributeError):  # pragma: no cover
        pass
