"""Who owns a run and is it still alive; the run lock; stopping what a dead owner left running.

A run records its owner as a ``ProcessIdentity``: pid, host, boot id and the process's start
time (field 22 of ``/proc/<pid>/stat``, in clock ticks since boot), so that a pid reused by
another process, or a reboot, never passes for the owner. Liveness can only be judged on the
owner's own host; from anywhere else it is unknown. Linux only: it reads ``/proc``.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import logging
import os
import re
import signal
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from subplans.errors import RunBusyError, RunNotLiveError, StoreError
from subplans.process import proc_stat, processes_of_run

if TYPE_CHECKING:
    from subplans.store.records import ProcessGroupRecord
    from subplans.store.store import RunStore

__all__ = [
    "Liveness",
    "ProcessIdentity",
    "RunLock",
    "StoppedGroup",
    "cancel_run",
    "check_run_id",
    "live_process_groups",
    "owner_liveness",
    "process_start_time",
    "stop_leftover_groups",
]

logger = logging.getLogger("subplans")

#: After SIGKILL, how long to wait for a leftover group's members to vanish.
_KILL_SETTLE = 5.0
_POLL = 0.01
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
    found = proc_stat(pid)
    return None if found is None else found[2]


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
    found = proc_stat(owner.pid)
    if found is None or found[0] in ("Z", "X") or found[2] != owner.start_time:
        return Liveness.GONE
    return Liveness.ALIVE


def live_process_groups() -> dict[int, list[int]]:
    """Every process group with live (non-zombie) members: pgid -> member pids, in one /proc scan."""
    groups: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            found = proc_stat(int(name))
            if found is not None and found[0] not in ("Z", "X"):
                groups.setdefault(found[1], []).append(int(name))
    for members in groups.values():
        members.sort()
    return groups


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
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Give the lock up.

        Raises:
            RuntimeError: this object does not hold it.
        """
        if self._fd is None:
            raise RuntimeError("this RunLock is not held")
        fd, self._fd = self._fd, None
        # Emptied first: a refused process then never names a pid that no longer holds it.
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


@dataclass(frozen=True, slots=True)
class StoppedGroup:
    """A leftover process group that was stopped: whose, its members, the last signal sent."""

    subplan_id: str
    pgid: int
    members: tuple[int, ...]
    signal: str


def stop_leftover_groups(
    store: RunStore,
    run_id: str,
    *,
    grace: float = 5.0,
    clock: Callable[[], float] = time.monotonic,
) -> list[StoppedGroup]:
    """Stop every process group that a run whose owner is gone left running.

    Each recorded group that still has live members and is provably the one recorded (its
    leader is gone, or is the same process by start time: a group id cannot be reused while
    the group has members) gets SIGTERM, then SIGKILL after ``grace`` seconds; this returns
    once all are gone. Every recorded group id of the run is then cleared. Resume calls this
    before re-running anything, so that no subplan ever runs twice at the same time; call it
    holding the run's lock (``status`` too: if the lock is refused, someone is resuming).

    Raises:
        RunBusyError: the run's owner is alive (or on another host): its groups are its own.
        RunNotFoundError: no such run.
    """
    if not grace >= 0:
        raise ValueError(f"grace must be >= 0, got {grace!r}")
    run, records = store.leftovers(run_id)
    liveness = owner_liveness(run.owner)
    if run.recorded_status == "running" and liveness is not Liveness.GONE:
        raise RunBusyError(_busy_message(run_id, run.owner, liveness))
    if run.owner is not None and run.owner.boot_id != boot_id():
        targets: list[tuple[ProcessGroupRecord, list[int]]] = []  # a reboot ended them all
    else:
        live = live_process_groups()
        targets = _verified(records, live)
        # A command started just before its run was killed may not have reached the store: its
        # processes still carry the run's id in their environment, so find them there too.
        targets += _unrecorded(run_id, {record.pgid for record in records}, live)
    stopped = _stop(targets, grace, clock)
    if records:
        store.clear_process_groups(run_id, records)
    return stopped


def _unrecorded(
    run_id: str, recorded: set[int], live: dict[int, list[int]]
) -> list[tuple[ProcessGroupRecord, list[int]]]:
    """Process groups that belong to ``run_id`` by their environment but were never recorded.

    Only a group every live member of which carries the run's id: a group shared with
    something else (the shell that started the run) is never signalled as a whole.
    """
    from subplans.store.records import ProcessGroupRecord  # records imports this module

    ours = os.getpgrp()
    targets = []
    for pgid, marked in sorted(processes_of_run(run_id).items()):
        members = live.get(pgid, [])
        if pgid in recorded or pgid == ours or sorted(p for p, _ in marked) != members:
            continue
        targets.append((ProcessGroupRecord(marked[0][1], pgid, None), members))
    return targets


def _busy_message(run_id: str, owner: ProcessIdentity | None, liveness: Liveness) -> str:
    if liveness is Liveness.ALIVE:
        return f"run {run_id} is still being driven by {owner}; its processes are its own"
    where = f"from {owner.host}" if owner is not None else "by an unknown process"
    return f"run {run_id} is driven {where}; its processes cannot be checked from here"


def _verified(
    records: Iterable[ProcessGroupRecord], live: dict[int, list[int]]
) -> list[tuple[ProcessGroupRecord, list[int]]]:
    targets = []
    for record in records:
        members = live.get(record.pgid)
        if not members:
            continue
        leader = proc_stat(record.pgid)
        if leader is not None and (record.start_time is None or leader[2] != record.start_time):
            # The group id now belongs to a new leader: some unrelated process group.
            logger.info(
                "process group %d of subplan %s was reused by another process; leaving it",
                record.pgid,
                record.subplan_id,
            )
            continue
        targets.append((record, members))
    return targets


def _stop(
    targets: list[tuple[ProcessGroupRecord, list[int]]],
    grace: float,
    clock: Callable[[], float],
) -> list[StoppedGroup]:
    last: dict[int, str] = {}
    for record, _ in targets:
        _killpg(record.pgid, signal.SIGTERM)
        last[record.pgid] = "SIGTERM"
    pgids = set(last)
    deadline = clock() + grace
    killed = False
    while pgids:
        pgids &= set(live_process_groups())
        if not pgids:
            break
        now = clock()
        if now >= deadline:
            if killed:
                logger.warning("process groups %s survived SIGKILL; giving up", sorted(pgids))
                break
            for pgid in pgids:
                _killpg(pgid, signal.SIGKILL)
                last[pgid] = "SIGKILL"
            killed, deadline = True, now + _KILL_SETTLE
        time.sleep(_POLL)
    return [
        StoppedGroup(record.subplan_id, record.pgid, tuple(members), last[record.pgid])
        for record, members in targets
    ]


def _killpg(pgid: int, sig: int) -> None:
    # Gone meanwhile, or a member we may not signal (setuid): nothing more we can do.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def cancel_run(store: RunStore, run_id: str, *, sig: int = signal.SIGTERM) -> ProcessIdentity:
    """Ask the live owner of a run to stop, as Ctrl-C would: send it ``sig`` (SIGTERM).

    The owner is signalled only once it is proven to be the recorded process (pid, host, boot
    and start time); with a pidfd the check and the signal cannot race a pid reuse. The owner
    must treat SIGTERM like Ctrl-C (the CLI does). Returns the owner signalled.

    Raises:
        RunNotLiveError: the run has ended, its owner is gone, or it runs on another host.
        RunNotFoundError: no such run.
    """
    run = store.get_run(run_id)
    owner = run.owner
    if run.recorded_status != "running":
        raise RunNotLiveError(f"run {run_id} has already ended ({run.recorded_status})")
    liveness = owner_liveness(owner)
    if owner is None or liveness is Liveness.UNKNOWN:
        where = f"on {owner.host}" if owner is not None else "by an unknown process"
        raise RunNotLiveError(f"run {run_id} is driven {where}; cancel it there")
    if liveness is Liveness.GONE or not _signal(owner, sig):
        raise RunNotLiveError(
            f"run {run_id} was interrupted: its {owner} is gone; "
            f"resume it with `subplans resume {run_id}`"
        )
    return owner


def _signal(owner: ProcessIdentity, sig: int) -> bool:
    """Send ``sig`` to ``owner`` if it is still that process; False if it is gone."""
    try:
        fd = os.pidfd_open(owner.pid)
    except ProcessLookupError:
        return False
    try:
        # Opened first, checked second: if the start time still matches now, the pidfd refers to
        # the owner, and the signal cannot reach a process that reused its pid.
        if process_start_time(owner.pid) != owner.start_time:
            return False
        signal.pidfd_send_signal(fd, sig)
    except ProcessLookupError:
        return False
    finally:
        os.close(fd)
    return True
