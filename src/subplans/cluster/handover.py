"""What the driver hands a worker for one attempt, and what comes back: plain picklable values.

The worker side (``worker_tasks``) and the driver side (``remote_runs``) share nothing but these
and the names below; exceptions travel inside an ``Outcome``, never raised across the wire, so
that Dask never mistakes a subplan's failure for its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "CLAIMS",
    "GRACE_VARIABLE",
    "LOG_CHUNK",
    "LOG_INLINE",
    "STARTED_TOPIC",
    "WORKER_VARIABLE",
    "CommandSpec",
    "Kind",
    "LogMarker",
    "Outcome",
]

#: The topic a worker announces a started command on (``log_event``), to the driver's handler.
STARTED_TOPIC = "subplans-started"
#: Where the scheduler keeps claimed attempt tokens (``set_metadata``): a task whose token is
#: claimed already is a re-run of an attempt whose worker was lost, and refuses to start.
CLAIMS = "subplans-claims"
#: Output up to this many bytes comes back inside an ``Outcome``; more is fetched from the
#: worker in chunks of ``LOG_CHUNK`` bytes (``log_shipping``).
LOG_INLINE = 1 << 20
LOG_CHUNK = 4 << 20
#: The variable that marks every command a worker process started, for its watchdog, and the
#: one that carries the command's ``cancel_grace`` (the watchdog kills it once that is over).
WORKER_VARIABLE = "SUBPLANS_WORKER"
GRACE_VARIABLE = "SUBPLANS_WORKER_GRACE"


#: How an attempt ended on its worker (``Outcome.kind``).
Kind = Literal["done", "failed", "cancelled", "refused"]


@dataclass(frozen=True, slots=True)
class LogMarker:
    """A file the driver wrote next to its logs, holding ``nonce``: a worker that reads the same
    nonce there sees the driver's file system, and writes the driver's log file directly."""

    path: str
    nonce: str


@dataclass(frozen=True, slots=True)
class CommandSpec:
    """One attempt of a command, as ``execution.process.run_command`` takes it.

    ``env`` is set over the worker's own environment. ``marker`` is None when the logs are
    shipped back (the driver wrote the attempt's header); else the worker writes ``log_file``
    itself if it sees the marker, and ships its output otherwise.
    """

    command: str | tuple[str, ...]
    log_file: str
    cwd: str | None
    env: dict[str, str]
    cancel_grace: float
    attempt: int | None
    tail_lines: int
    marker: LogMarker | None
    #: Whether to claim the token on the scheduler first (a scheduler that may re-run tasks):
    #: True, or where (the metadata keys); the task's own ``claim`` argument overrides it.
    claim: bool | tuple[str, ...]
    #: The attempts of the nested plans it runs in, beyond their first (its log header's).
    within: str = ""


@dataclass(frozen=True, slots=True)
class Outcome:
    """How an attempt ended on its worker.

    ``done``: ``value`` is the output tail (a command) or the function's value; ``failed``:
    ``error`` is the command's or function's error; ``cancelled``: stopped through the cancel
    channel (``error``: a ``ThreadAbandonedError`` if a function's thread ran on); ``refused``:
    never started (its token was claimed or cancelled before). ``log``: the output written on
    the worker, when it could not write the driver's file (None: written there directly), up to
    ``LOG_INLINE`` bytes; ``log_rest``: the size of a larger one, left on the worker for the
    driver to fetch in chunks (``log`` then None).
    """

    kind: Kind
    worker: str
    pid: int | None = None
    value: Any = None
    error: BaseException | None = None
    log: bytes | None = None
    log_rest: int = 0
