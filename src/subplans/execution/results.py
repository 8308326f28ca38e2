"""How a plan and its steps ended: the results the executor returns and nested plans raise.

A module of its own so that the runners (a nested plan's result is a subplan's value) and the
executor both read them, and neither imports the other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from subplans.engine.errors import SubplanError
from subplans.engine.results import SubplanResult
from subplans.engine.states import PlanState, StepState
from subplans.execution.process import CommandResult

__all__ = ["PlanFailedError", "PlanResult", "StepResult", "exit_code"]


@dataclass(slots=True)
class StepResult:
    """How a step ended: completed, failed or skipped, with its subplans' results."""

    id: str
    name: str
    state: StepState
    subplans: list[SubplanResult] = field(default_factory=list)
    started: float | None = None
    finished: float | None = None
    error: BaseException | None = None


@dataclass(slots=True)
class PlanResult:
    """How a plan ended, with every step's result; nested plans' results are subplan values."""

    id: str
    name: str
    file: Path
    run_id: str
    run_dir: Path
    state: PlanState
    steps: list[StepResult]
    started: float
    finished: float

    @property
    def elapsed(self) -> float:
        """``finished - started``: the difference of two wall-clock stamps (``clock.now()``),
        which a wall clock set meanwhile bends; ``PlanFinished.elapsed`` is the same span on
        the monotonic clock."""
        return self.finished - self.started

    def subplans(self) -> list[SubplanResult]:
        """Every subplan result of the tree, depth first, in plan order."""
        found: list[SubplanResult] = []
        for step in self.steps:
            for result in step.subplans:
                found.append(result)
                if isinstance(result.value, PlanResult):
                    found.extend(result.value.subplans())
                nested = getattr(result.error, "result", None)
                if isinstance(nested, PlanResult):
                    found.extend(nested.subplans())
        return found

    def counts(self) -> dict[str, int]:
        """How many subplans of the whole tree ended in each state."""
        counts = dict.fromkeys(("completed", "failed"), 0)
        for result in self.subplans():
            counts[result.state.value] = counts.get(result.state.value, 0) + 1
        return counts


class PlanFailedError(SubplanError):
    """A nested plan failed; ``result`` is its plan result."""

    def __init__(self, result: PlanResult) -> None:
        failed = [s.name for s in result.steps if s.state is StepState.FAILED]
        super().__init__(f"nested plan {result.name!r} failed at step {', '.join(failed) or '?'}")
        self.result = result


def exit_code(result: SubplanResult) -> int | None:
    """The exit code of a command subplan (None for other kinds or when killed by a signal)."""
    if isinstance(result.value, CommandResult):
        return result.value.exit_code
    return getattr(result.error, "exit_code", None)
