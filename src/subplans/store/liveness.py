"""Who owns a run and is it still alive; the run lock; what a dead owner left running.

A run records its owner as a ``ProcessIdentity``: pid, host, boot id and the process's start
time (field 22 of ``/proc/<pid>/stat``, in clock ticks since boot), so that a pid reused by
another process, or a reboot, never passes for the owner. Liveness can only be judged on the
owner's own host; from anywhere else it is unknown. Linux only: it reads ``/proc``.

The processes a dead owner left running are found as ``stopping.Family`` finds a command's:
in the sessions of its recorded process groups whose leaders still run, by descent, and by
``SUBPLANS_RUN_ID`` in their environment. ``find_leftovers`` only lists them;
``stop_leftover_groups`` stops them.
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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from subplans.engine.errors import RunBusyError, RunNotLiveError, StoreError
from subplans.execution.stopping import (
    Family,
    ProcessInfo,
    Stopping,
    command_line,
    environment,
    process_table,
    read_process,
    send_signal,
    stop,
)

if TYPE_CHECKING:
    from subplans.store.records import ProcessGroupRecord, RunInfo
    from subplans.store.store import RunStore

__all__ = [
    "Leftover",
    "Liveness",
    "ProcessIdentity",
    "RunLock",
    "StoppedGroup",
    "cancel_run",
    "check_run_id",
    "find_leftovers",
    "live_process_groups",
    "owner_liveness",
    "process_start_time",
    "stop_leftover_groups",
]

logger = logging.getLogger("subplans")

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


@dataclass(frozen=True, slots=True)
class StoppedGroup:
    """Leftover processes of one subplan in one process group, stopped: the last signal sent."""

    subplan_id: str
    pgid: int
    members: tuple[int, ...]
    signal: str


@dataclass(frozen=True, slots=True, order=True)
class Leftover:
    """A process that a run whose owner is gone left running: whose, its group, what it runs."""

    subplan_id: str
    pid: int
    pgid: int
    command: str


def find_leftovers(store: RunStore, run_id: str) -> list[Leftover]:
    """Every process that the gone owner of ``run_id`` left running, by subplan and pid; it
    touches none.

    A process is the run's when it lives in the session of a process group the run recorded
    whose leader is still the recorded process (same start time), when its environment carries
    ``SUBPLANS_RUN_ID`` (a command started just before its run was killed may not have reached
    the store), or when it descends from one that is. Once a leader is gone, its session's id
    may have been handed out again (a daemon that called ``setsid``): only the marked
    processes in it, and their descendants, are the run's.

    Raises:
        RunBusyError: the run's owner is alive (or on another host): its processes are its own.
        RunNotFoundError: no such run.
    """
    run, records = store.leftovers(run_id)
    family = _family(run, records)
    if family is None:
        return []
    found = family.members()
    labels = _labels(found, records)
    return sorted(
        Leftover(labels[pid], pid, process.pgid, command_line(pid))
        for pid, process in found.items()
    )


def stop_leftover_groups(
    store: RunStore,
    run_id: str,
    *,
    grace: float = 5.0,
    clock: Callable[[], float] = time.monotonic,
) -> list[StoppedGroup]:
    """Stop every process that a run whose owner is gone left running (``find_leftovers``).

    Each gets SIGTERM, then SIGKILL after ``grace`` seconds (``stopping.Stopping``); this
    returns once all are gone, by subplan and process group. Every recorded group id of the run
    is then cleared. Resume calls this before re-running anything, so that no subplan ever runs
    twice at the same time, and so does ``subplans cancel`` for an interrupted run; call it
    holding the run's lock.

    Raises:
        RunBusyError: the run's owner is alive (or on another host): its processes are its own.
        RunNotFoundError: no such run.
    """
    if not grace >= 0:
        raise ValueError(f"grace must be >= 0, got {grace!r}")
    run, records = store.leftovers(run_id)
    family = _family(run, records)
    stopped: list[StoppedGroup] = []
    if family is not None:
        labels: dict[int, str] = {}

        def find() -> dict[int, ProcessInfo]:
            found = family.members()
            labels.update(_labels(found, records, labels))
            return found

        stopping = stop(Stopping(find, grace=grace, clock=clock))
        stopped = _by_group(stopping.signalled, labels)
    if records:
        store.clear_process_groups(run_id, records)
    return stopped


def _family(run: RunInfo, records: Sequence[ProcessGroupRecord]) -> Family | None:
    """What makes a process ``run``'s; None when none can be left (a reboot ended them all).

    Raises:
        RunBusyError: the run's owner is alive or unknown.
    """
    liveness = owner_liveness(run.owner)
    if run.recorded_status == "running" and liveness is not Liveness.GONE:
        raise RunBusyError(_busy_message(run.id, run.owner, liveness))
    if run.owner is not None and run.owner.boot_id != boot_id():
        return None
    roots = []
    for record in records:
        leader = read_process(record.pgid)
        if leader is not None and leader.start_time != record.start_time:
            # The group id now belongs to a new leader: some unrelated process group.
            logger.info(
                "process group %d of subplan %s was reused by another process; leaving it",
                record.pgid,
                record.subplan_id,
            )
            continue
        # A gone leader's session counts for the marked processes alone (no ``since``: a
        # stored run cannot prove its session ids were not handed out again).
        roots.append((record.pgid, record.start_time))
    return Family(roots=tuple(roots), marker=(f"SUBPLANS_RUN_ID={run.id}".encode(),))


def _labels(
    found: Mapping[int, ProcessInfo],
    records: Sequence[ProcessGroupRecord],
    known: Mapping[int, str] | None = None,
) -> dict[int, str]:
    """The subplan of each process found: its recorded session's, else the one its environment
    names, else its nearest found ancestor's, else "?"."""
    sessions = {record.pgid: record.subplan_id for record in records}
    labels = dict(known or {})
    prefix = b"SUBPLANS_SUBPLAN="

    def label(pid: int) -> str:
        if pid not in labels:
            labels[pid] = "?"  # a guard against a loop in the parent chain
            process = found[pid]
            named = next((v for v in environment(pid) or () if v.startswith(prefix)), None)
            if process.sid in sessions:
                labels[pid] = sessions[process.sid]
            elif named is not None:
                labels[pid] = named[len(prefix) :].decode(errors="replace")
            elif process.ppid in found:
                labels[pid] = label(process.ppid)
        return labels[pid]

    for pid in found:
        label(pid)
    return labels


def _by_group(
    signalled: Mapping[int, tuple[ProcessInfo, signal.Signals]], labels: Mapping[int, str]
) -> list[StoppedGroup]:
    groups: dict[tuple[str, int], list[tuple[int, signal.Signals]]] = {}
    for pid, (process, sig) in signalled.items():
        groups.setdefault((labels.get(pid, "?"), process.pgid), []).append((pid, sig))
    return [
        StoppedGroup(
            subplan_id,
            pgid,
            tuple(sorted(pid for pid, _ in members)),
            max((sig for _, sig in members), key=lambda sig: sig == signal.SIGKILL).name,
        )
        for (subplan_id, pgid), members in sorted(groups.items())
    ]


def _busy_message(run_id: str, owner: ProcessIdentity | None, liveness: Liveness) -> str:
    if liveness is Liveness.ALIVE:
        return f"run {run_id} is still being driven by {owner}; its processes are its own"
    where = f"from {owner.host}" if owner is not None else "by an unknown process"
    return f"run {run_id} is driven {where}; its processes cannot be checked from here"


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
    return send_signal(owner.pid, owner.start_time, sig)
