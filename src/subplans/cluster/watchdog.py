"""A worker process's watchdog: when the worker dies, the commands it started die too.

Dask re-runs or fails the task of a worker that was killed, but the command the task started
lives on: an orphan, beside its re-run. So each worker process starts one watchdog, lazily, on
its first command (``Watchdog.ensure``): a small process in a session of its own, holding the
read end of a pipe whose write end only the worker holds. The worker's death, however it comes
(SIGKILL included), closes the pipe; the watchdog then stops every process that carries the
worker's mark (``SUBPLANS_WORKER=<token>`` in its environment, which every command it started
has, and their children inherit) the one way processes are stopped (``execution.stopping``:
SIGTERM, a grace, SIGKILL), and exits. Each command also carries its own ``cancel_grace``
(``SUBPLANS_WORKER_GRACE``), and is killed once that is over, whatever others asked for: so
the driver knows when a lost attempt's processes are surely gone (its grace and a margin after
the worker's death). A process that carries the mark but no grace of its own (started by a
function the worker ran) gets the largest. The worker writes each new grace on a line of the
pipe.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterable

from subplans.cluster.handover import GRACE_VARIABLE, WORKER_VARIABLE
from subplans.execution.finding import Family
from subplans.execution.stopping import Stopping, stop

__all__ = ["Watchdog", "watch"]


#: The watchdog's program (``-c``: ``-m`` of a module its package imports warns).
_MAIN = (
    "import sys; from subplans.cluster.watchdog import watch; watch(sys.argv[1], sys.stdin.buffer)"
)


class Watchdog:
    """The watchdog of this worker process: started on first use, again if it died."""

    __slots__ = ("_graces", "_lock", "_process", "token")

    def __init__(self, token: str) -> None:
        #: The mark of this worker's commands (``SUBPLANS_WORKER``).
        self.token = token
        self._process: subprocess.Popen[bytes] | None = None
        self._graces: set[str] = set()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        running = self._process is not None and self._process.poll() is None
        return f"<Watchdog {self.token} {'running' if running else 'not started'}>"

    @property
    def pid(self) -> int | None:
        """The watchdog's pid, once started."""
        return None if self._process is None else self._process.pid

    def ensure(self, grace: float) -> str:
        """Start the watchdog unless it runs, tell it ``grace`` unless told before; returns
        the mark to give the command (with ``grace_mark(grace)``)."""
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
                self._graces = set()
            told = grace_mark(grace)
            if told not in self._graces:
                assert self._process.stdin is not None
                self._process.stdin.write(f"{told}\n".encode())
                self._process.stdin.flush()
                self._graces.add(told)
        return self.token


def grace_mark(grace: float) -> str:
    """How ``grace`` is written in a command's ``SUBPLANS_WORKER_GRACE`` and on the pipe."""
    return repr(float(grace))


def watch(token: str, lines: Iterable[bytes]) -> int:
    """Wait for the end of ``lines`` (the pipe from the worker), then stop every process that
    carries ``token``, each within its own grace; returns how many were signalled."""
    graces = {line.strip().decode() for line in lines if line.strip()}
    mark = os.fsencode(f"{WORKER_VARIABLE}={token}")
    largest = max((float(grace) for grace in graces), default=0.0)
    # One stop for each grace (its commands killed once it is over), and one for the rest.
    stops = [
        Stopping(
            Family(marker=(mark, os.fsencode(f"{GRACE_VARIABLE}={g}"))).members, grace=float(g)
        )
        for g in sorted(graces)
    ]
    stops.append(Stopping(Family(marker=(mark,)).members, grace=largest))
    threads = [threading.Thread(target=stop, args=(stopping,)) for stopping in stops]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return len({pid for stopping in stops for pid in stopping.signalled})
