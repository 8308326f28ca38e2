"""The plan executor: runs a plan's steps in order, each step's units through the dispatcher."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

from subplans.engine.dispatcher import ParallelSubplanDispatcher, SubplanResult
from subplans.engine.errors import (
    AggregateSubplanError,
    SubplanCancelledError,
    SubplanError,
    SubplanExecutionError,
)
from subplans.engine.events import (
    EventBus,
    PlanFinished,
    PlanStarted,
    StepStateChanged,
    SubplanSkipped,
)
from subplans.engine.limiter import AsyncSemaphoreLimiter
from subplans.engine.states import SubplanExecutionState
from subplans.execution.process import CommandResult, ProcessGroups
from subplans.execution.runners import RunContext, build_subplan
from subplans.plans.loader import PlanNode, StepNode

__all__ = [
    "KILL_MARGIN",
    "PlanExecutor",
    "PlanFailedError",
    "PlanResult",
    "StepResult",
    "new_run_id",
]

#: Seconds the dispatcher waits beyond ``cancel_grace`` for a runner to SIGKILL and reap. With
#: what the end of a run takes, a stopped run exits within ``cancel_grace`` + 2 s.
KILL_MARGIN = 1.0

_FAILED = SubplanExecutionState.FAILED
_COMPLETED = SubplanExecutionState.COMPLETED


def new_run_id() -> str:
    """A sortable, unique run id: UTC time plus a random suffix."""
    return f"{datetime.now(UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


@dataclass(slots=True)
class StepResult:
    """How a step ended: completed, failed or skipped, with its subplans' results."""

    id: str
    name: str
    state: str
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
    state: str
    steps: list[StepResult]
    started: float
    finished: float

    @property
    def elapsed(self) -> float:
        """Wall time in seconds."""
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
        failed = [s.name for s in result.steps if s.state == "failed"]
        super().__init__(f"nested plan {result.name!r} failed at step {', '.join(failed) or '?'}")
        self.result = result


def exit_code(result: SubplanResult) -> int | None:
    """The exit code of a command subplan (None for other kinds or when killed by a signal)."""
    if isinstance(result.value, CommandResult):
        return result.value.exit_code
    return getattr(result.error, "exit_code", None)


class PlanExecutor:
    """Runs a loaded plan tree; ``await executor.run()`` returns a ``PlanResult``.

    A step with units goes through ``ParallelSubplanDispatcher`` under the step's resolved
    profile; the plan never moves past a step until every subplan of it is terminal. A failed step
    fails the plan and later steps are skipped, except ``always`` ones.
    """

    def __init__(
        self,
        plan: PlanNode,
        *,
        bus: EventBus | None = None,
        run_id: str | None = None,
        state_dir: Path | None = None,
        run_dir: Path | None = None,
        groups: ProcessGroups | None = None,
        environ: Mapping[str, str] | None = None,
        skip: Collection[str] = frozenset(),
        skip_reason: str = "already completed",
    ) -> None:
        self.plan = plan
        #: Ids of subplans not to run again (a resumed run): reported as skipped, counted completed.
        self.skip = frozenset(skip)
        self.skip_reason = skip_reason
        self.bus = bus
        self.run_id = run_id or new_run_id()
        if run_dir is None:
            base = state_dir if state_dir is not None else plan.folder / ".subplans"
            run_dir = base / "runs" / self.run_id
        #: Where logs go; a resumed run passes the folder of the run it continues.
        self.run_dir = run_dir
        self.context = RunContext(
            self.run_id,
            self.run_dir,
            bus=bus,
            groups=groups if groups is not None else ProcessGroups(),
            environ=environ,
            run_plan=self._run_nested,
        )

    def __repr__(self) -> str:
        return f"<PlanExecutor {self.plan.name!r} run {self.run_id}>"

    async def run(self) -> PlanResult:
        """Run the plan to its end.

        Raises:
            asyncio.CancelledError: the run was cancelled; every subplan was stopped first.
            KeyboardInterrupt: a subplan or an event subscriber raised it; every subplan was
                stopped first, as on cancellation.
        """
        (self.run_dir / "logs").mkdir(parents=True, exist_ok=True)
        return await self._run_plan(self.plan, self.context)

    async def _run_nested(self, plan: PlanNode, context: RunContext) -> PlanResult:
        result = await self._run_plan(plan, context)
        if result.state != "completed":
            raise PlanFailedError(result)
        return result

    async def _run_plan(self, plan: PlanNode, context: RunContext) -> PlanResult:
        bus, started = self.bus, time.time()
        if bus is not None:
            bus.publish(
                PlanStarted(plan.id, plan.name, str(plan.file), self.run_id, len(plan.steps))
            )
        failed = False
        steps: list[StepResult] = []
        try:
            for step in plan.steps:
                if failed and not step.always:
                    steps.append(self._skip(step))
                    continue
                result = await self._run_step(step, context)
                steps.append(result)
                failed = failed or result.state == "failed"
        except (asyncio.CancelledError, KeyboardInterrupt):
            # KeyboardInterrupt: a subplan or a subscriber raised it, and the step stopped.
            if bus is not None:
                bus.publish(PlanFinished(plan.id, "cancelled", time.time() - started))
            raise
        state = "failed" if failed else "completed"
        finished = time.time()
        if bus is not None:
            bus.publish(PlanFinished(plan.id, state, finished - started))
        return PlanResult(
            plan.id,
            plan.name,
            plan.file,
            self.run_id,
            self.run_dir,
            state,
            steps,
            started,
            finished,
        )

    def _skip(self, step: StepNode) -> StepResult:
        if self.bus is not None:
            self.bus.publish(StepStateChanged(step.id, None, "skipped", len(step.units)))
        return StepResult(step.id, step.name, "skipped")

    async def _run_step(self, step: StepNode, context: RunContext) -> StepResult:
        bus, started = self.bus, time.time()
        if bus is not None:
            bus.publish(StepStateChanged(step.id, None, "running", len(step.units)))
        grace = step.profile.cancel_grace
        if context.budget is None:
            # A root step: its max_parallel is the budget of the whole tree below it.
            context = replace(context, budget=AsyncSemaphoreLimiter(step.profile.max_parallel))
        skipped = [unit for unit in step.units if unit.id in self.skip]
        todo = [unit for unit in step.units if unit.id not in self.skip]
        for unit in skipped:
            if bus is not None:
                bus.publish(SubplanSkipped(unit.id, self.skip_reason))
        subplans = [build_subplan(unit, context, cancel_grace=grace) for unit in todo]
        dispatcher = ParallelSubplanDispatcher(
            step.profile.config(extra_grace=KILL_MARGIN), bus=bus, budget=context.budget
        )
        error: BaseException | None = None
        try:
            results = await dispatcher.run(subplans, name=step.id) if subplans else []
            state = "completed"
        except (SubplanExecutionError, AggregateSubplanError) as failure:
            results, state, error = failure.results, "failed", failure
        except (asyncio.CancelledError, KeyboardInterrupt):
            if bus is not None:
                reason = SubplanCancelledError("the run was cancelled")
                bus.publish(StepStateChanged(step.id, "running", "failed", len(step.units), reason))
            raise
        if bus is not None:
            bus.publish(StepStateChanged(step.id, "running", state, len(step.units), error))
        if skipped:
            done = {r.subplan_id: r for r in results}
            done.update((u.id, SubplanResult(u.id, _COMPLETED)) for u in skipped)
            results = [done[u.id] for u in step.units]
        return StepResult(step.id, step.name, state, results, started, time.time(), error)
