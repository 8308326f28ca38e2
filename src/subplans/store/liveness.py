"""Who owns a run, and is it still alive.

A run records its owner as a ``ProcessIdentity``: pid, host, boot id and the process's start
time (field 22 of ``/proc/<pid>/stat``, in clock ticks since boot), so that a pid reused by
another process, or a reboot, never passes for the owner. Liveness can only be judged on the
owner's own host; from anywhere else it is unknown. Linux only: it reads ``/proc``.
"""

from __future__ import annotations

import functools
import os
import re
import socket
from dataclasses import dataclass
from enum import StrEnum

from subplans.execution.procfs import process_table, read_process

__all__ = [
    "Liveness",
    "ProcessIdentity",
    "boot_id",
    "check_run_id",
    "live_process_groups",
    "owner_liveness",
    "process_start_time",
]

#: A run id names a lock file: nothing that could climb out of the locks folder.
_RUN_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,199}")


def check_run_id(run_id: str) -> str:
    """``run_id`` if it can name a lock file; otherwise ValueError."""
    if not isinstance(run_id, str) or not _RUN_ID.fullmatch(run_id):
        raise ValueError(
            "run_id must be ASCII letters, digits, '-', '_' and '.', not starting with '.' "
            f"or '-', got {run_id!r}"
        )
    return run_id


@functools.cache
def boot_id() -> str:
    """This boot's id (``""`` where the kernel does not say)."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as file:
            return file.read().strip()
    except OSError:  # pragma: no cover - every Linux since 2.6 has it
        return ""


def process_start_time(pid: int) -> int | None:
    """When ``pid`` started, in clock ticks since boot; None if it does not exist."""
    found = read_process(pid)
    return None if found is None else found.start_time


@dataclass(frozen=True, slots=True)
class ProcessIdentity:
    """A process, told apart from a later one that reuses its pid (or lives after a reboot)."""

    pid: int
    host: str
    boot_id: str
    start_time: int | None

    @classmethod
    def current(cls) -> ProcessIdentity:
        """This process."""
        pid = os.getpid()
        return cls(pid, socket.gethostname(), boot_id(), process_start_time(pid))

    def __str__(self) -> str:
        return f"process {self.pid} on {self.host}"


class Liveness(StrEnum):
    """Whether a run's owner still runs: alive, gone, or unknown (another host, or none)."""

    ALIVE = "alive"
    GONE = "gone"
    UNKNOWN = "unknown"


def owner_liveness(owner: ProcessIdentity | None) -> Liveness:
    """Whether ``owner`` still runs; a zombie, a reused pid or an older boot count as gone."""
    if owner is None or owner.host != socket.gethostname():
        return Liveness.UNKNOWN
    if owner.boot_id != boot_id():
        return Liveness.GONE
    found = read_process(owner.pid)
    if found is None or not found.live or found.start_time != owner.start_time:
        return Liveness.GONE
    return Liveness.ALIVE


def live_process_groups() -> dict[int, list[int]]:
    """Every process group with live (non-zombie) members: pgid -> member pids, in one /proc scan."""
    groups: dict[int, list[int]] = {}
    for pid, process in sorted(process_table().items()):
        groups.setdefault(process.pgid, []).append(pid)
    return groups
