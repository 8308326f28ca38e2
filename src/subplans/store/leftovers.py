"""What a run's dead owner left running: finding those processes, and stopping them.

The processes are found as ``finding.Family`` finds a command's: in the sessions of the run's
recorded process groups whose leaders still run, by descent, and by ``SUBPLANS_RUN_ID`` in
their environment. ``find_leftovers`` only lists them; ``stop_leftover_groups`` stops them.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from subplans.engine.errors import RunBusyError
from subplans.execution.finding import Family, Leader, run_marker
from subplans.execution.procfs import ProcessInfo, command_line, environment, read_process
from subplans.execution.stopping import SETTLE_TIMEOUT, Signalled, Stopping, stop
from subplans.store.liveness import Liveness, ProcessIdentity, boot_id, owner_liveness
from subplans.store.records import RunStatus

if TYPE_CHECKING:
    from subplans.store.records import ProcessGroupRecord, RunInfo
    from subplans.store.store import RunStore

__all__ = ["Leftover", "StoppedGroup", "find_leftovers", "stop_leftover_groups"]

logger = logging.getLogger("subplans")


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
    settle_timeout: float = SETTLE_TIMEOUT,
) -> list[StoppedGroup]:
    """Stop every process that a run whose owner is gone left running (``find_leftovers``).

    Each gets SIGTERM, then SIGKILL after ``grace`` seconds (``stopping.Stopping``, with its
    ``clock`` and ``settle_timeout``); this returns once all are gone, by subplan and process
    group. Every recorded group id of the run is then cleared. Resume calls this before
    re-running anything, so that no subplan ever runs twice at the same time, and so does
    ``subplans cancel`` for an interrupted run; call it holding the run's lock.

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

        stopping = stop(Stopping(find, grace=grace, clock=clock, settle_timeout=settle_timeout))
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
    if run.recorded_status is RunStatus.RUNNING and liveness is not Liveness.GONE:
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
        roots.append(Leader(record.pgid, record.start_time))
    return Family(roots=tuple(roots), marker=run_marker(run.id))


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


def _by_group(signalled: Mapping[int, Signalled], labels: Mapping[int, str]) -> list[StoppedGroup]:
    groups: dict[tuple[str, int], list[tuple[int, signal.Signals]]] = {}
    for pid, last in signalled.items():
        groups.setdefault((labels.get(pid, "?"), last.process.pgid), []).append((pid, last.signal))
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
