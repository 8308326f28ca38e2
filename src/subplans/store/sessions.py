"""A run's sessions, read from the events the store keeps: the run's start and each resume, each
until its end; and the time the run was running, their sum.

A session starts where the root plan's ``plan_started`` is recorded (the first one at the run's
``started_at``) and ends at the root plan's ``plan_finished``, at the run's end (the last
session), or, for a session whose process was killed (``kill -9``), at its last event. Only a
resumed run's events are read: a run of one session is timed from its own row.
"""

from __future__ import annotations

import sqlite3

from subplans.store.event_chunks import payload_of, scan_events
from subplans.store.records import RunInfo

__all__ = ["active_time"]

_EDGES = ("plan_started", "plan_finished")
_NO_END = 2**62


def active_time(db: sqlite3.Connection, run: RunInfo, now: float | None) -> float | None:
    """Seconds ``run`` was running, summed over its sessions; ``now`` (a run that runs) ends
    the last one. None when nothing tells when a session of an unfinished run ended."""
    starts: list[tuple[int, float]] = []
    finishes: list[tuple[int, float]] = []
    if run.resumes:
        # The root plan's starts and ends (nested plans have a ``plan_id``): a handful per run.
        for seq, time, kind, _, _, element in scan_events(db, run.id, containing='"plan_'):
            if kind in _EDGES and payload_of(element).get("plan_id") == "":
                (starts if kind == "plan_started" else finishes).append((seq, time))
    if not starts:  # one session (or none recorded as such): the run's own start and end
        end = _end(run, now)
        if end is None:
            end = _last_event(db, run.id, 0, _NO_END)
        return None if end is None else max(0.0, end - run.started_at)
    total = 0.0
    for index, (seq, time) in enumerate(starts):
        begin = run.started_at if index == 0 else time
        following = starts[index + 1][0] if index + 1 < len(starts) else _NO_END
        finished = [at for at_seq, at in finishes if seq < at_seq < following]
        end = _end(run, now) if following == _NO_END else None
        if end is None:
            end = finished[-1] if finished else _last_event(db, run.id, seq, following)
        total += max(0.0, (begin if end is None else end) - begin)
    return total


def _end(run: RunInfo, now: float | None) -> float | None:
    """The end of the run's last session, where its row says it: its end, or now if it runs."""
    return run.finished_at if run.finished_at is not None else now


def _last_event(db: sqlite3.Connection, run_id: str, after: int, before: int) -> float | None:
    """The time of the last event with ``after <= seq < before``. The ``subplan_skipped``
    events a resume writes before its session starts (``--skip-unknown``) are the resume's,
    not the killed session's."""
    for _, time, kind, _, _, _ in scan_events(db, run_id, after - 1, before=before, backwards=True):
        if kind != "subplan_skipped":
            return time
    return None
