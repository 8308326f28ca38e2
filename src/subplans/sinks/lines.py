"""The plain sink: one timestamped line per state change, for logs, pipes and CI.

::

    2026-11-28T00:04:53.101Z  running    step port  (30 subplans)
    2026-11-28T00:04:53.102Z  running    port/m0
    2026-11-28T00:04:53.202Z  completed  port/m0  (0.10s)
    2026-11-28T00:04:53.302Z  failed     port/m3  (0.20s)  exited with code 1
        | SyntaxError: invalid syntax

A failure is followed by the last lines of its output, indented. With ``failures_only`` it
writes only failures (not those cancelled before they started; a step that failed by itself
too), for ``--no-progress``. Text
from plans and subplans (ids, names, errors, output) is ``visible()``: no control character
reaches the stream raw.
"""

from __future__ import annotations

from typing import TextIO

from subplans.engine.events import (
    Event,
    PlanFinished,
    PlanStarted,
    StepStateChanged,
    SubplanRetrying,
    SubplanSkipped,
    SubplanStateChanged,
)
from subplans.engine.states import StepState, SubplanExecutionState
from subplans.engine.thresholds import cancelled_by_success
from subplans.sinks.formatting import (
    duration,
    error_text,
    iso_time,
    own_failure,
    tail,
    visible,
)

__all__ = ["PlainLines"]

_RUNNING = SubplanExecutionState.RUNNING
_FAILED = SubplanExecutionState.FAILED
_PENDING = SubplanExecutionState.PENDING


class PlainLines:
    """A bus subscriber writing one line per state change to ``stream``, flushed at once."""

    __slots__ = (
        "_current_step",
        "_plan",
        "_skipped",
        "_started",
        "_stream",
        "error",
        "failures_only",
        "written",
    )

    def __init__(self, stream: TextIO, *, failures_only: bool = False) -> None:
        self._stream = stream
        self.failures_only = failures_only
        # When each running subplan started (epoch seconds), for the duration on its last line.
        self._started: dict[str, float] = {}
        self._plan = ""
        # The root or nested step that started last: a resumed step's skipped subplans follow
        # its start at once, and are told in one line (the count, the reason, when) when the
        # next event comes.
        self._current_step = ""
        self._skipped: tuple[int, str, float] | None = None
        #: How many lines were written.
        self.written = 0
        #: The first write error (a closed pipe: ``subplans run ... | head``); nothing is
        #: written after it, and the run goes on.
        self.error: OSError | None = None

    def __repr__(self) -> str:
        what = "failures" if self.failures_only else "every state change"
        return f"<PlainLines {what}, {self.written} written, {len(self._started)} running>"

    def __call__(self, event: Event) -> None:
        if self.error is not None:
            return
        if self._skipped is not None and not isinstance(event, SubplanSkipped):
            self._write_skipped(*self._skipped)
        if isinstance(event, SubplanStateChanged):
            self._subplan(event)
        elif self.failures_only:
            # A step that failed by itself is a failure too (no subplan's failure says why).
            if isinstance(event, StepStateChanged) and own_failure(event.error):
                self._step(event)
            return
        elif isinstance(event, StepStateChanged):
            self._step(event)
        elif isinstance(event, SubplanSkipped):
            self._skip(event)
        elif isinstance(event, SubplanRetrying):
            self._write(
                event.time,
                "retrying",
                f"{visible(event.subplan_id)}  attempt {event.attempt} failed: "
                f"{error_text(event.error)}; next in {duration(event.delay)}",
            )
        elif isinstance(event, PlanStarted) and not event.plan_id:
            # The root plan only: a nested plan's start and end are its subplan's lines.
            self._plan = visible(event.name)
            self._write(
                event.time,
                "started",
                f"plan {self._plan}  ({visible(event.file)}, run {event.run_id})",
            )
        elif isinstance(event, PlanFinished) and not event.plan_id:
            self._write(event.time, event.state, f"plan {self._plan}  ({duration(event.elapsed)})")

    def flush(self) -> None:
        """Write what is held back: the skipped subplans of the step that started last (the
        next event writes them otherwise; a run always has one)."""
        if self._skipped is not None and self.error is None:
            self._write_skipped(*self._skipped)

    def _subplan(self, event: SubplanStateChanged) -> None:
        state = event.state
        if state is _PENDING:
            return
        if state is _RUNNING:
            self._started[event.subplan_id] = event.time
            if not self.failures_only:
                self._write(event.time, state.value, visible(event.subplan_id))
            return
        began = self._started.pop(event.subplan_id, None)
        never_started = event.previous is _PENDING
        # Cancelled as its dispatch had what it needed: no failure, so not said to be one.
        label = state.value
        if state is _FAILED and cancelled_by_success(event.error):
            label = "cancelled"
        if self.failures_only and (label != "failed" or never_started):
            return
        took = "not started" if began is None else duration(event.time - began)
        text = f"{visible(event.subplan_id)}  ({took})"
        if state is _FAILED:
            text += f"  {error_text(event.error)}"
            text += "".join(f"\n    | {line}" for line in tail(event.error))
        self._write(event.time, label, text)

    def _skip(self, event: SubplanSkipped) -> None:
        """Count a skipped subplan in its step's line (issue #11: one line per step, not one per
        subplan, so a resumed run of thousands does not scroll them by)."""
        if self._skipped is None:
            self._skipped = (1, event.reason, event.time)
        elif self._skipped[1] != event.reason:
            self._write_skipped(*self._skipped)
            self._skipped = (1, event.reason, event.time)
        else:
            self._skipped = (self._skipped[0] + 1, event.reason, self._skipped[2])

    def _write_skipped(self, count: int, reason: str, at: float) -> None:
        self._skipped = None
        what = f"{count} subplan{'' if count == 1 else 's'}"
        if self._current_step:
            what += f" of step {visible(self._current_step)}"
        self._write(at, "skipped", f"{what}  ({visible(reason)})")

    def _step(self, event: StepStateChanged) -> None:
        text = f"step {visible(event.step_id)}"
        if event.state == StepState.RUNNING:
            self._current_step = event.step_id
            text += f"  ({event.total} subplan{'' if event.total == 1 else 's'})"
        elif event.state == StepState.FAILED and event.error is not None:
            why = error_text(event.error)
            # A message that names the step (a for_each source's) is not prefixed again.
            text = why if why.startswith(f"{text}:") else f"{text}  {why}"
        self._write(event.time, event.state, text)

    def _write(self, at: float, state: str, text: str) -> None:
        try:
            self._stream.write(f"{iso_time(at)}  {state:<9}  {text}\n")
            self._stream.flush()
        except OSError as error:
            self.error = error
            return
        self.written += 1
