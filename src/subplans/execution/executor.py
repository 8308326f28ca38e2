"""The plan executor: runs a plan's steps in order, each step's units through the dispatcher."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Collection, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from subplans.engine.bus import EventBus
from subplans.engine.clock import SYSTEM_CLOCK, Clock
from subplans.engine.dispatcher import ParallelSubplanDispatcher
from subplans.engine.errors import DispatchError, SubplanCancelledError, SubplanError
from subplans.engine.events import (
    PlanFinished,
    PlanStarted,
    StepItemsRead,
    StepStateChanged,
    SubplanSkipped,
)
from subplans.engine.limiter import AsyncSemaphoreLimiter
from subplans.engine.results import SubplanResult
from subplans.engine.states import PlanState, StepState, SubplanExecutionState
from subplans.engine.thresholds import check_success_halt
from subplans.execution.live_limits import LiveLimits
from subplans.execution.process import ProcessGroups
from subplans.execution.results import PlanFailedError, PlanResult, StepResult
from subplans.execution.run_context import RemoteBackend, RunContext
from subplans.execution.runners import build_subplan
from subplans.plans.backends import Backend
from subplans.plans.tree import PlanNode, StepNode

if TYPE_CHECKING:
    from subplans.execution.step_items import RecordedItems

__all__ = ["KILL_MARGIN", "PlanExecutor", "new_run_id"]

#: Seconds the dispatcher waits beyond ``cancel_grace`` for a runner to SIGKILL and reap. With
#: what the end of a run takes, a stopped run exits within ``cancel_grace`` + 2 s.
KILL_MARGIN = 1.0

_COMPLETED = SubplanExecutionState.COMPLETED


def new_run_id(clock: Clock = SYSTEM_CLOCK) -> str:
    """A sortable, unique run id: UTC time (``clock.now()``) plus a random suffix."""
    return f"{datetime.fromtimestamp(clock.now(), UTC):%Y%m%d-%H%M%S}-{os.urandom(3).hex()}"


class PlanExecutor:
    """Runs a loaded plan tree; ``await executor.run()`` returns a ``PlanResult``.

    A step with units goes through ``ParallelSubplanDispatcher`` under the step's resolved
    profile; the plan never moves past a step until every subplan of it is terminal. A failed step
    fails the plan and later steps are skipped, except ``always`` ones. Stamps are read from
    ``clock.now()``, elapsed times from ``clock.monotonic()``. ``backends``: where the units
    of each non-local backend run (a started ``subplans.cluster.DaskBackend`` per ``Backend``).
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
        clock: Clock = SYSTEM_CLOCK,
        items: Mapping[str, RecordedItems] | None = None,
        backends: Mapping[Backend, RemoteBackend] | None = None,
    ) -> None:
        self.plan = plan
        self.clock = clock
        #: The items run-time steps read in an earlier session of the run (a resumed run), by
        #: step id: such a step makes its subplans of them instead of reading its source again.
        self.items: Mapping[str, RecordedItems] = items if items is not None else {}
        #: Ids of subplans not to run again (a resumed run): reported as skipped, counted completed.
        self.skip = frozenset(skip)
        self.skip_reason = skip_reason
        self.bus = bus
        self.run_id = run_id or new_run_id(clock)
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
            clock=clock,
            backends=backends if backends is not None else {},
        )
        #: What ``{lines: -}`` read from standard input, read once (by the first such step).
        self._stdin: str | None = None
        pools = {
            name: AsyncSemaphoreLimiter(
                pool.size, max_per_second=pool.max_per_second, clock=clock.monotonic
            )
            for name, pool in plan.pools.items()
        }
        #: The caps that may change while the run runs, and the run's pools (shared by every
        #: step and nested plan).
        self.limits = LiveLimits(plan, pools)

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
        if result.state is not PlanState.COMPLETED:
            raise PlanFailedError(result)
        return result

    async def _run_plan(self, plan: PlanNode, context: RunContext) -> PlanResult:
        bus, started, since = self.bus, self.clock.now(), self.clock.monotonic()
        if bus is not None:
            bus.publish(
                PlanStarted(
                    plan.id, plan.name, str(plan.file), self.run_id, len(plan.steps), time=started
                )
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
                failed = failed or result.state is StepState.FAILED
        except (asyncio.CancelledError, KeyboardInterrupt):
            # KeyboardInterrupt: a subplan or a subscriber raised it, and the step stopped.
            if bus is not None:
                elapsed = self.clock.monotonic() - since
                cancelled = PlanState.CANCELLED
                bus.publish(PlanFinished(plan.id, cancelled, elapsed, time=self.clock.now()))
            raise
        state = PlanState.FAILED if failed else PlanState.COMPLETED
        finished = self.clock.now()
        if bus is not None:
            elapsed = self.clock.monotonic() - since
            bus.publish(PlanFinished(plan.id, state, elapsed, time=finished))
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
            skipped = StepStateChanged(
                step.id, None, StepState.SKIPPED, len(step.units), time=self.clock.now()
            )
            self.bus.publish(skipped)
        return StepResult(step.id, step.name, StepState.SKIPPED)

    async def _read_stdin(self) -> str:
        if self._stdin is None:
            from subplans.execution.step_items import read_stdin

            self._stdin = await read_stdin()
        return self._stdin

    async def _expand(self, step: StepNode, context: RunContext) -> StepNode | StepResult:
        """``step`` with the units of the items its source gives now; or, if it gives none,
        the step failed (the error in its events and result)."""
        from subplans.execution.step_items import read_step_items  # items steps only

        assert step.items is not None
        started = self.clock.now()
        recorded = self.items.get(step.id)
        reuse = recorded is not None and recorded.fits(step.items)
        try:
            if recorded is not None and reuse:
                items: list[str] | tuple[str, ...] = recorded.items
            else:
                items = await read_step_items(
                    step.items,
                    context,
                    step_id=step.id,
                    cancel_grace=step.profile.cancel_grace,
                    stdin=self._read_stdin,
                )
            units = step.items.units(items)
        except SubplanError as error:  # ProblemsError, CommandFailedError: the source's fault
            self._source_failed(step, started, error)
            return StepResult(
                step.id, step.name, StepState.FAILED, [], started, self.clock.now(), error
            )
        except (asyncio.CancelledError, KeyboardInterrupt):
            self._source_failed(step, started, SubplanCancelledError("the run was cancelled"))
            raise
        if self.bus is not None:  # the store records the items: a resumed run reuses them
            source = str(step.items)
            read = StepItemsRead(step.id, source, len(items), reuse, items, time=started)
            self.bus.publish(read)
        return replace(step, units=units)

    def _source_failed(self, step: StepNode, started: float, error: BaseException) -> None:
        """The events of a step that ran no subplan: its source gave no items."""
        if self.bus is not None:
            running, failed = StepState.RUNNING, StepState.FAILED
            self.bus.publish(StepStateChanged(step.id, None, running, 0, time=started))
            ended = StepStateChanged(step.id, running, failed, 0, error, time=self.clock.now())
            self.bus.publish(ended)

    async def _run_step(self, step: StepNode, context: RunContext) -> StepResult:
        if step.items is not None:  # its items are read now
            expanded = await self._expand(step, context)
            if isinstance(expanded, StepResult):
                return expanded
            step = expanded
        bus, started, total = self.bus, self.clock.now(), len(step.units)
        if bus is not None:
            bus.publish(StepStateChanged(step.id, None, StepState.RUNNING, total, time=started))
        grace = step.profile.cancel_grace
        root = context.budget is None
        max_parallel = self.limits.max_parallel(step, root=root)
        if root:
            # A root step: its max_parallel is the budget of the whole tree below it.
            context = context.with_budget(AsyncSemaphoreLimiter(max_parallel))
        skipped = [unit for unit in step.units if unit.id in self.skip]
        todo = [unit for unit in step.units if unit.id not in self.skip]
        for unit in skipped:
            if bus is not None:
                bus.publish(SubplanSkipped(unit.id, self.skip_reason, time=started))
        subplans = [build_subplan(unit, context, cancel_grace=grace) for unit in todo]
        config = step.profile.config(extra_grace=KILL_MARGIN)
        if max_parallel != config.max_parallel:
            config = replace(config, max_parallel=max_parallel)
        dispatcher = ParallelSubplanDispatcher(
            config,
            bus=bus,
            budget=context.budget,
            clock=self.clock,
            pools=self.limits.pools or None,
        )
        error: BaseException | None = None
        try:
            with self.limits.running(step, dispatcher, context.budget if root else None):
                results = await dispatcher.run(subplans, name=step.id) if subplans else []
            check_success_halt(results, config.halt_policy)  # what failed besides fails the step
            state = StepState.COMPLETED
        except DispatchError as failure:
            results, state, error = failure.results, StepState.FAILED, failure
        except (asyncio.CancelledError, KeyboardInterrupt):
            if bus is not None:
                reason = SubplanCancelledError("the run was cancelled")
                failed, now = StepState.FAILED, self.clock.now()
                bus.publish(
                    StepStateChanged(step.id, StepState.RUNNING, failed, total, reason, time=now)
                )
            raise
        finished = self.clock.now()
        if bus is not None:
            ended = StepStateChanged(step.id, StepState.RUNNING, state, total, error, time=finished)
            bus.publish(ended)
        if skipped:
            done = {r.subplan_id: r for r in results}
            done.update((u.id, SubplanResult(u.id, _COMPLETED)) for u in skipped)
            results = [done[u.id] for u in step.units]
        return StepResult(step.id, step.name, state, results, started, finished, error)
