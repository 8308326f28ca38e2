"""A worker process's watchdog: when the worker dies, the commands it started die too.

Dask re-runs or fails the task of a worker that was killed, but the command the task started
lives on: an orphan, beside its re-run. So each worker process starts one watchdog, lazily, on
its first command (``Watchdog.ensure``): a small process in a session of its own, holding the
read end of a pipe whose write end only the worker holds. The worker's death, however it comes
(SIGKILL included), closes the pipe; the watchdog then stops every process that carries the
worker's mark (``SUBPLANS_WORKER=<token>`` in its environment, which every command it started
has, and their children inherit) the one way processes are stopped (``execution.stopping``:
SIGTERM, the largest ``cancel_grace`` the worker asked for, SIGKILL), and exits. The worker
writes each larger grace on a line of the pipe.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterable

from subplans.cluster.handover import WORKER_VARIABLE
from subplans.execution.finding import Family
from subplans.execution.stopping import Stopping, stop

__all__ = ["Watchdog", "watch"]


#: The watchdog's program (``-c``: ``-m`` of a module its package imports warns).
_MAIN = (
    "import sys; from subplans.cluster.watchdog import watch; watch(sys.argv[1], sys.stdin.buffer)"
)


class Watchdog:
    """The watchdog of this worker process: started on first use, again if it died."""

    __slots__ = ("_grace", "_lock", "_process", "token")

    def __init__(self, token: str) -> None:
        #: The mark of this worker's commands (``SUBPLANS_WORKER``).
        self.token = token
        self._process: subprocess.Popen[bytes] | None = None
        self._grace = -1.0
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        running = self._process is not None and self._process.poll() is None
        return f"<Watchdog {self.token} {'running' if running else 'not started'}>"

    @property
    def pid(self) -> int | None:
        """The watchdog's pid, once started."""
        return None if self._process is None else self._process.pid

    def ensure(self, grace: float) -> str:
        """Start the watchdog unless it runs, tell it ``grace`` if larger than any before;
        returns the mark to give the command."""
        with self._lock:
            if self._process is None or self._process.poll() is not None:
                self._process = subprocess.Popen(
                    [sys.executable, "-c", _MAIN, self.token],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.DEVNULL,
                    # Its own session: a Ctrl-C or a group signal that kills the worker must
                    # leave the watchdog to clean up after it.
                    start_new_session=True,
                )
                self._grace = -1.0
            if grace > self._grace:
                assert self._process.stdin is not None
                self._process.stdin.write(f"{grace!r}\n".encode())
                self._process.stdin.flush()
                self._grace = grace
        return self.token


def watch(token: str, lines: Iterable[bytes]) -> int:
    """Wait for the end of ``lines`` (the pipe from the worker), then stop every process that
    carries ``token``; returns how many were signalled."""
    grace = 0.0
    for line in lines:
        grace = max(grace, float(line))
    family = Family(marker=(os.fsencode(f"{WORKER_VARIABLE}={token}"),))
    return len(stop(Stopping(family.members, grace=grace)).signalled)
