"""What the commands about stored runs print: ``runs``, ``status`` and ``events``, as plain text or
JSON, from the run store's queries.

Nothing here changes a run; every query reads one consistent snapshot and works while the run
is live in another process. The text is ``visible()``: ids, errors and commands come from plans
and subplans, and no control character in them reaches the terminal raw.
"""

from __future__ import annotations

import json
import shutil
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

from subplans.cli.halt_lines import current_halts, halt_lines
from subplans.cli.limit_lines import limit_lines, max_parallel_of
from subplans.sinks.formatting import duration, visible
from subplans.store import (
    Leftover,
    LimitRecord,
    PoolUsage,
    RunInfo,
    RunStatus,
    RunStore,
    StepInfo,
    StepItemsInfo,
    SubplanInfo,
)
from subplans.store.record_formats import iso

__all__ = [
    "MAX_LISTED",
    "POLL_INTERVAL",
    "StatusReport",
    "cancelled_error",
    "counts_text",
    "own_step_error",
    "run_lines",
    "write_events",
    "write_log",
]

#: Seconds between two looks at the store while following a run.
POLL_INTERVAL = 0.1
#: ``status`` lists at most this many running and failed subplans each, then counts the rest.
MAX_LISTED = 10
#: Events read per query: a long run streams in pieces.
_EVENTS_PER_READ = 5_000
#: Wide enough for every label of ``status`` ("interrupted").
_LABEL_WIDTH = 11
#: The order in which counts are shown (``cancelled`` and ``not run`` as the summary says them).
_COUNT_ORDER = ("completed", "failed", "cancelled", "running", "interrupted", "pending", "not run")
#: The stored error types of a subplan or step that was cancelled (not by its own doing).
_CANCELLED_TYPES = frozenset({"SubplanCancelledError", "ThreadAbandonedError"})
#: The stored error types of a step that failed because subplans did (the summary lists those).
_DISPATCH_TYPES = frozenset({"DispatchError", "SubplanExecutionError", "AggregateSubplanError"})

#: The runs ``status`` suggests resuming.
_RESUMABLE = frozenset({RunStatus.INTERRUPTED, RunStatus.FAILED, RunStatus.CANCELLED})

_encode = json.JSONEncoder(default=str).encode


def counts_text(counts: Mapping[str, int]) -> str:
    """``N total: N completed, N failed, ...`` with the states that have subplans."""
    shown = [f"{counts[state]} {state}" for state in _COUNT_ORDER if counts.get(state)]
    total = sum(counts.values())
    return f"{total} total" + (f": {', '.join(shown)}" if shown else "")


def cancelled_error(error: Mapping[str, Any] | None) -> bool:
    """True when a stored error says a subplan or step was cancelled (the engine records it as
    failed): the summary counts it ``cancelled``, and so does ``status``."""
    return error is not None and error.get("type") in _CANCELLED_TYPES


def own_step_error(error: Mapping[str, Any] | None) -> bool:
    """True when a failed step's stored error is its own (a ``for_each`` source that could not
    be read), not its subplans' failures nor a cancellation."""
    return (
        error is not None
        and error.get("type") not in _DISPATCH_TYPES
        and not cancelled_error(error)
    )


def step_state(step: StepInfo, run: RunInfo) -> str:
    """A step's state in the summary's words: ``cancelled`` for one that failed because it was
    cancelled, ``not run`` for one never started in a run that ended."""
    if step.state == "failed" and cancelled_error(step.error):
        return "cancelled"
    if step.state == "pending" and run.status != RunStatus.RUNNING:
        return "not run"
    return step.state


def _when(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(seconds))


def run_lines(runs: Sequence[RunInfo]) -> list[str]:
    """``subplans runs``: one line per run, newest first, under a header."""
    header = ("run", "status", "started (UTC)", "took", "subplans", "plan")
    rows = [header]
    for run in runs:
        took = "-" if run.duration is None else duration(run.duration)
        rows.append(
            (
                run.id,
                run.status,
                _when(run.started_at),
                took,
                counts_text(run.counts),
                visible(run.plan_name),
            )
        )
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    took_column = header.index("took")  # durations line up on the right
    return [
        "  ".join(
            f"{cell:>{widths[i]}}" if i == took_column else f"{cell:<{widths[i]}}"
            for i, cell in enumerate(row)
        ).rstrip()
        for row in rows
    ]


@dataclass(frozen=True, slots=True)
class StatusReport:
    """``subplans status``: a run, its steps (and where run-time steps' items came from), what
    runs now, what failed, what is left over."""

    run: RunInfo
    steps: Sequence[StepInfo]
    #: Subplans recorded as running: running now, or (an interrupted run) when its owner died.
    running: Sequence[SubplanInfo]
    failures: Sequence[SubplanInfo]
    #: Processes the run's dead owner left running (shown, never stopped, by ``status``).
    leftovers: Sequence[Leftover] = ()
    #: The run-time ``for_each`` steps that read their items, in the order they did.
    items: Sequence[StepItemsInfo] = ()
    #: Which ``halt`` threshold stopped which step (``dispatch_halted`` payloads).
    halted: Sequence[Mapping[str, Any]] = ()
    #: The caps asked to change while it ran (``subplans limit``).
    limits: Sequence[LimitRecord] = ()
    #: The run's pools: size, capacity now, units in use, waiting and peak.
    pools: Sequence[PoolUsage] = ()

    @classmethod
    def collect(
        cls, store: RunStore, run: RunInfo, leftovers: Sequence[Leftover] = ()
    ) -> StatusReport:
        """The report of ``run`` from ``store``."""
        steps = store.steps(run.id)
        return cls(
            run,
            steps,
            store.running_subplans(run.id),
            store.failures(run.id),
            tuple(leftovers),
            store.step_items(run.id),
            current_halts(store.events_of_kind(run.id, "dispatch_halted"), steps),
            store.limits(run.id),
            store.pool_usage(run.id),
        )

    @property
    def interrupted(self) -> bool:
        """True when the run's owner is gone without finishing it."""
        return self.run.status == RunStatus.INTERRUPTED

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable, as ``subplans status --json`` shows it: ``RunInfo.to_dict()`` plus
        ``steps`` (a run-time step's ``items``: its source and how many it read), ``running``,
        ``interrupted`` (the subplans that were running when the owner died), ``failures`` and
        ``leftovers``."""
        running = [subplan.to_dict() for subplan in self.running]
        read = {found.step_id: found for found in self.items}
        return {
            **self.run.to_dict(),
            "steps": [
                {
                    "id": step.step_id,
                    "state": step.state,
                    "total": step.total,
                    "started_at": iso(step.started),
                    "finished_at": iso(step.finished),
                    "error": step.error,
                    "items": _items_dict(read.get(step.step_id)),
                    "shown_state": step_state(step, self.run),
                }
                for step in self.steps
            ],
            "running": [] if self.interrupted else running,
            "interrupted": running if self.interrupted else [],
            "failures": [subplan.to_dict() for subplan in self.failures],
            "shown_counts": self.shown_counts(),
            "halted": [dict(halted) for halted in self.halted],
            "max_parallel": self.max_parallel(),
            "limits": [limit.to_dict() for limit in self.limits],
            "pools": [pool.to_dict() for pool in self.pools],
            "leftovers": [
                {
                    "subplan_id": left.subplan_id,
                    "pid": left.pid,
                    "pgid": left.pgid,
                    "command": left.command,
                }
                for left in self.leftovers
            ],
        }

    def max_parallel(self) -> dict[str, int | None]:
        """The run's ``max_parallel``: as it started and as it is now (``subplans limit``)."""
        return max_parallel_of(self.run, self.limits)

    def shown_counts(self) -> dict[str, int]:
        """The run's subplan counts in the summary's words: a failed subplan that was cancelled
        is ``cancelled``; a pending one of a run that ended is ``not run``."""
        counts = dict(self.run.counts)
        cancelled = sum(1 for s in self.failures if cancelled_error(s.error))
        if cancelled:
            counts["failed"] = counts.get("failed", 0) - cancelled
            counts["cancelled"] = cancelled
        if self.run.status != RunStatus.RUNNING and counts.get("pending"):
            counts["not run"] = counts.pop("pending")
        return counts

    def lines(self) -> list[str]:
        """The report as plain text."""
        run = self.run
        started = f"{_when(run.started_at)} UTC"
        if run.owner is not None:
            started += f" by {run.owner}"
        if run.resumes:
            started += f", resumed {run.resumes} time{'' if run.resumes == 1 else 's'}"
        found = [f"run {run.id}  {run.status}"]
        found += _labelled("plan", [f"{run.plan_name}  ({run.plan_file})"])
        found += _labelled("started", [started])
        backend = (run.profile.get("values") or {}).get("backend", "local")
        if backend != "local":  # the plan's (a step's own: in --subplans, by worker)
            from subplans.plans.backends import Backend

            found += _labelled("backend", [str(Backend.from_value(backend))])
        if run.finished_at is not None:
            took = duration(run.finished_at - run.started_at)
            found += _labelled("ended", [f"{_when(run.finished_at)} UTC, after {took}"])
        found += _labelled("subplans", [counts_text(self.shown_counts())])
        if self.steps:
            states = ", ".join(f"{s.step_id} {step_state(s, run)}" for s in self.steps)
            found += _labelled("steps", [states])
        found += _labelled("limits", limit_lines(self.run, self.limits))
        width = max((len(pool.name) for pool in self.pools), default=0)
        found += _labelled("pools", [_pool_line(pool, run, width) for pool in self.pools])
        found += _labelled("halted", halt_lines(self.halted))
        found += _labelled("error", [line for s in self.steps for line in _step_error(s)])
        found += _labelled("items", [_items_line(read) for read in self.items])
        found += _labelled(
            "interrupted" if self.interrupted else "running",
            [f"{s.subplan_id}  {duration(s.elapsed or 0.0)}" for s in self.running],
        )
        failed = [s for s in self.failures if not cancelled_error(s.error)]
        found += _labelled("failed", [_failure(s) for s in failed])
        reasons = Counter(
            _message(s.error) for s in self.failures if cancelled_error(s.error)
        ).most_common()
        found += _labelled("cancelled", [f"{n}  {reason}" for reason, n in reasons])
        found += _labelled(
            "left over",
            [
                f"{left.subplan_id}  pid {left.pid}, process group {left.pgid}: "
                f"{_cut(left.command)}"
                for left in self.leftovers
            ],
        )
        if self.leftovers:
            found += _labelled("stop them", [f"subplans cancel {run.id}"])
        if run.status in _RESUMABLE:
            found += _labelled("resume", [f"subplans resume {run.id}"])
        return [visible(line) for line in found]


def _pool_line(pool: PoolUsage, run: RunInfo, width: int) -> str:
    """``api  size 2 (started with 4): 1 in use, 3 waiting, peak 4``; the peak only once the
    run is not running."""
    size = f"size {pool.current}"
    if pool.current != pool.size:
        size += f" (started with {pool.size})"
    if pool.max_per_second is not None:
        size += f", at most {pool.max_per_second:g}/s"
    if run.status != RunStatus.RUNNING:
        return f"{pool.name:<{width}}  {size}: peak {pool.peak}"
    usage = f"{pool.in_use} in use, {pool.waiting} waiting, peak {pool.peak}"
    return f"{pool.name:<{width}}  {size}: {usage}"


def _items_dict(read: StepItemsInfo | None) -> dict[str, Any] | None:
    if read is None:
        return None
    return {"source": read.source, "count": read.count, "read_at": iso(read.read_at)}


def _items_line(read: StepItemsInfo) -> str:
    """``port  12 items from lines of 'modules.txt'``."""
    return f"{read.step_id}  {read.count} item{'' if read.count == 1 else 's'} from {read.source}"


def _cut(text: str, width: int = 80) -> str:
    """A command line cut to ``width`` characters."""
    return text if len(text) <= width else f"{text[: width - 3]}..."


def _message(error: Mapping[str, Any] | None) -> str:
    """A stored error's message (or type) on one line."""
    found = error or {}
    return " ".join(str(found.get("message") or found.get("type") or "failed").split())


def _failure(subplan: SubplanInfo) -> str:
    log = f"  log: {subplan.log_file}" if subplan.log_file else ""
    return f"{subplan.subplan_id}  {_message(subplan.error)}{log}"


def _step_error(step: StepInfo) -> list[str]:
    """A step that failed by itself: its error on one line that names it, then its items log,
    whole, on a line of its own (nothing for other steps)."""
    if step.state != "failed" or not own_step_error(step.error):
        return []
    text = _message(step.error)
    if not text.startswith(f"step {step.step_id}:"):
        text = f"step {step.step_id}: {text}"
    log = (step.error or {}).get("log_file")
    return [text, *([f"log: {log}"] if log else [])]


def _labelled(label: str, items: Sequence[str]) -> list[str]:
    """``  label  first item``, the others below it: at most ``MAX_LISTED``, then how many more;
    nothing when there are no items."""
    shown = [*items[:MAX_LISTED]]
    if len(items) > MAX_LISTED:
        shown.append(f"+{len(items) - MAX_LISTED} more")
    return [
        f"  {label if index == 0 else '':<{_LABEL_WIDTH}}  {item}".rstrip()
        for index, item in enumerate(shown)
    ]


def write_events(
    store: RunStore,
    run_id: str,
    write: Callable[[str], None],
    *,
    follow: bool = False,
    poll: float = POLL_INTERVAL,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Write the run's stored events, one JSON line each (``StoredEvent.to_dict()``), in order;
    with ``follow``, go on writing new ones until the run is no longer running and none is left.
    Returns how many were written.

    Raises:
        RunNotFoundError: no such run.
    """
    store.get_run(run_id)
    last = written = 0
    while True:
        # The status first, the events second: once a read shows the run ended, the events
        # read after it hold every event it wrote (its end commits with its last event).
        live = follow and store.get_run(run_id).status == RunStatus.RUNNING
        batch = store.events(run_id, after_seq=last, limit=_EVENTS_PER_READ)
        if batch:
            write("".join(_encode(event.to_dict()) + "\n" for event in batch))
            last, written = batch[-1].seq, written + len(batch)
            continue
        if not live:
            return written
        sleep(poll)


def write_log(source: BinaryIO, target: BinaryIO, *, terminal: bool) -> None:
    """Copy a subplan's log from ``source`` to ``target``: byte for byte, or for a
    ``terminal`` line by line, ``visible()`` (a CRLF line end stays one line end)."""
    if not terminal:
        shutil.copyfileobj(source, target)
        return
    for raw in source:
        line = raw.removesuffix(b"\n")
        ended = len(line) < len(raw)
        text = visible(line.removesuffix(b"\r").decode(errors="backslashreplace"))
        target.write(f"{text}\n".encode() if ended else text.encode())
