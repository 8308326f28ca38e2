"""Whether a writer that has gone silent is hung, or only busy: the one rule behind every
bound on waiting for a writer (a closing or flushing recorder, a new writer of a run waiting
for the earlier one to let go).

A writer is never taken for hung while it makes progress. It is hung once, for ``bound``
seconds, it gave no sign of life (no ack; for a lock, it did not let go), its CPU time (user
and system, ``/proc/<pid>/stat``) did not move, and it was not in uninterruptible disk wait
(state ``D``); a stopped process (``T``, ``t``: SIGSTOP, a debugger) is hung whatever its CPU
time did. Its CPU time is read when the wait begins and again whenever the bound has run out:
a writer whose CPU time moved gets another ``bound`` (so one that went silent while it was
busy is taken for hung between one and two bounds after its last sign of life).

Standard library only: the writer process imports it (``writer_lock``).
"""

from __future__ import annotations

from time import monotonic

__all__ = ["Watch", "bound_for", "sample"]

#: States of a process that is stopped: it makes no progress until continued.
_STOPPED = frozenset("TtXZ")


def sample(path: str) -> tuple[str, int] | None:
    """The state and CPU time (clock ticks) in the ``stat`` file at ``path``; None if it is
    gone."""
    try:
        with open(path, "rb") as stat:
            text = stat.read()
    except OSError:
        return None
    # After the command's name (in parentheses, which may hold anything): state is the first
    # field, utime and stime the 12th and 13th.
    fields = text[text.rfind(b")") + 2 :].split()
    return fields[0].decode(), int(fields[11]) + int(fields[12])


class Watch:
    """Watches the process whose ``stat`` file is at ``path`` (None: no process to watch, so
    never busy) while one waits for it, from ``restart`` on (a process that is being started
    is not read before: reading its ``stat`` waits for its ``exec``)."""

    __slots__ = ("cpu", "path", "since")

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.since = monotonic()
        self.cpu: int | None = None

    def restart(self) -> None:
        """The wait begins (again) now."""
        self.since = monotonic()
        found = None if self.path is None else sample(self.path)
        self.cpu = None if found is None else found[1]

    def left(self, heard: float, bound: float) -> float | None:
        """Seconds to wait before asking again (the writer was last heard of at ``heard``, a
        ``monotonic()`` time); None once it is hung."""
        now = monotonic()
        left = max(heard, self.since) + bound - now
        if left > 0:
            return left
        found = None if self.path is None else sample(self.path)
        if found is not None:
            state, cpu = found
            if state == "D" or (state not in _STOPPED and cpu != self.cpu):
                self.since, self.cpu = now, cpu  # busy: another bound
                return bound
        return None


def bound_for(timeout: float) -> float:
    """The bound of a recorder whose store ``timeout`` (SQLite's wait for a lock) is given:
    twice that, and a second."""
    return 2 * timeout + 1
