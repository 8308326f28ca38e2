"""The caps of a running run that can change while it runs (``subplans limit``): the run's
``max_parallel`` (the budget of its root steps), one step's ``max_parallel``, a pool's capacity.

``LiveLimits`` keeps the run's pools and the dispatchers of the steps running now; a change
acts at once on those (the engine's ``set_max_parallel`` and ``set_capacity``: raising starts
waiting subplans, lowering cancels nothing) and on every step that starts later. The run's
cap so set bounds every root step's (it is the budget of the whole run, as a root step's
budget bounds the plans nested below it); a pool is never lowered below the units a subplan
of a step not ended yet uses, which could then never start.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from subplans.engine.config import check_max_parallel
from subplans.engine.dispatcher import ParallelSubplanDispatcher
from subplans.engine.errors import ConfigError
from subplans.engine.limiter import AsyncSemaphoreLimiter
from subplans.engine.values import Shown
from subplans.plans.tree import PlanNode, StepNode

__all__ = ["LiveLimits"]


class _Running(Shown):
    __slots__ = ("budget", "dispatcher", "step")
    _fields = ("step", "dispatcher", "budget")

    def __init__(
        self,
        step: StepNode,
        dispatcher: ParallelSubplanDispatcher,
        budget: AsyncSemaphoreLimiter | None,
    ) -> None:
        self.step, self.dispatcher = step, dispatcher
        #: The budget of the tree below it, if it is a root step.
        self.budget = budget


class LiveLimits:
    """The run's changeable caps: ``pools`` by name, and what ``set()`` changed so far."""

    __slots__ = ("_ended", "_running", "plan", "pools", "run_limit", "step_limits")

    def __init__(
        self,
        plan: PlanNode,
        pools: Mapping[str, AsyncSemaphoreLimiter] | None = None,
        run_limit: int | None = None,
        step_limits: dict[str, int] | None = None,
    ) -> None:
        self.plan = plan
        self.pools: Mapping[str, AsyncSemaphoreLimiter] = {} if pools is None else pools
        #: The run's ``max_parallel`` as changed (None: each root step's own).
        self.run_limit = run_limit
        #: Steps' ``max_parallel`` as changed, by step id.
        self.step_limits: dict[str, int] = {} if step_limits is None else step_limits
        self._running: list[_Running] = []
        #: The steps whose dispatch ended: their subplans need no pool unit any more.
        self._ended: set[str] = set()

    def __repr__(self) -> str:
        return (
            f"<LiveLimits of {self.plan.name!r}: run {self.run_limit}, steps {self.step_limits}, "
            f"pools {sorted(self.pools)}, {len(self._running)} steps running>"
        )

    def max_parallel(self, step: StepNode, *, root: bool) -> int:
        """The cap a step runs with: its own (as changed for it, else the run's as changed for
        a root step without a ``max_parallel`` of its own, else its profile's); a root step's
        bounded by the run's as changed, which is the budget of the whole run."""
        limit = self.step_limits.get(step.id)
        if limit is None and root and _follows_the_run(step):
            limit = self.run_limit
        if limit is None:
            limit = step.profile.max_parallel
        if root and self.run_limit is not None and self.run_limit < limit:
            return self.run_limit
        return limit

    @contextmanager
    def running(
        self,
        step: StepNode,
        dispatcher: ParallelSubplanDispatcher,
        budget: AsyncSemaphoreLimiter | None,
    ) -> Iterator[None]:
        """While ``step`` runs through ``dispatcher`` (``budget``: a root step's), a change
        reaches them."""
        entry = _Running(step, dispatcher, budget)
        self._running.append(entry)
        try:
            yield
        finally:
            self._running.remove(entry)
            self._ended.add(step.id)

    def set(self, target: str, limit: int) -> int:
        """Change the cap of ``target`` (``max_parallel``, ``step:ID`` or ``pool:NAME``) to
        ``limit`` now and for what starts later; returns the cap it had.

        Raises:
            ConfigError: an unknown step or pool, or ``limit`` out of range.
        """
        kind, _, name = target.partition(":")
        if kind == "pool":
            return self._set_pool(name, limit)
        check_max_parallel(limit)
        if kind == "step":
            return self._set_step(name, limit)
        previous = self.current(target)
        self.run_limit = limit
        for entry in self._running:
            if entry.budget is not None:  # a root step: it follows the run, or is bounded by it
                _resize(entry, self.max_parallel(entry.step, root=True))
        return previous

    def current(self, target: str) -> int:
        """The cap of ``target`` now (a step's as it runs, or would start).

        Raises:
            ConfigError: an unknown step or pool.
        """
        kind, _, name = target.partition(":")
        if kind == "pool":
            return self._pool(name).capacity
        if kind != "step":
            return self.run_limit or self.plan.profile.max_parallel
        live = [entry for entry in self._running if entry.step.id == name]
        if live:
            return live[0].dispatcher.config.max_parallel
        step = self._step(name)
        return self.max_parallel(step, root=any(root is step for root in self.plan.steps))

    def original(self, target: str) -> int:
        """The cap of ``target`` as the run started (``subplans status``: "started with").

        Raises:
            ConfigError: an unknown step or pool.
        """
        kind, _, name = target.partition(":")
        if kind == "pool":
            return self._pool(name).original_capacity
        if kind == "step":
            return self._step(name).profile.max_parallel
        return self.plan.profile.max_parallel

    def _step(self, step_id: str) -> StepNode:
        for entry in self._running:  # a run-time step's nested plans: made as it started
            for step in _walk(entry.step):
                if step.id == step_id:
                    return step
        for step in self.plan.walk_steps():
            if step.id == step_id:
                return step
        raise ConfigError(f"no step {step_id!r} in the run")

    def _pool(self, name: str) -> AsyncSemaphoreLimiter:
        pool = self.pools.get(name)
        if pool is None:
            known = ", ".join(sorted(self.pools)) or "none"
            raise ConfigError(f"no pool {name!r} in the run; its pools: {known}")
        return pool

    def _set_step(self, step_id: str, limit: int) -> int:
        previous = self.current(f"step:{step_id}")
        self.step_limits[step_id] = limit
        for entry in self._running:
            if entry.step.id == step_id:
                _resize(entry, self.max_parallel(entry.step, root=entry.budget is not None))
        return previous

    def _set_pool(self, name: str, limit: int) -> int:
        pool = self._pool(name)
        if type(limit) is not int or limit < 1:
            raise ConfigError(f"a pool's capacity must be an integer >= 1, got {limit!r}")
        units, unit_id = self._largest_use(name)
        if units > limit:
            raise ConfigError(
                f"cannot lower pool {name!r} to {limit}: subplan {unit_id!r}, not ended yet, "
                f"uses {units} units of it"
            )
        previous = pool.capacity
        pool.set_capacity(limit)
        return previous

    def _largest_use(self, name: str) -> tuple[int, str]:
        """The most units of pool ``name`` that one subplan of a step not ended yet uses, and
        its id ((0, "") if none does). A step whose subplans are read as it starts counts
        once it runs; before, the engine fails what a lowered pool cannot give."""
        steps = self.plan.walk_steps()
        for entry in self._running:  # with the units a run-time step made as it started
            steps.extend(_walk(entry.step))
        largest = (0, "")
        for step in steps:
            if step.id in self._ended:
                continue
            for unit in step.units:
                units = unit.uses.get(name, 0)
                if units > largest[0]:
                    largest = (units, unit.id)
        return largest


def _walk(step: StepNode) -> list[StepNode]:
    """``step`` and every step of the plans nested in its units."""
    steps = [step]
    for unit in step.units:
        if unit.plan is not None:
            steps.extend(unit.plan.walk_steps())
    return steps


def _follows_the_run(step: StepNode) -> bool:
    """Whether the run's cap is the step's: a step that sets its own keeps it."""
    source = step.profile.sources.get("max_parallel")  # a tree built by hand may have none
    return source is None or source.level != "step"


def _resize(entry: _Running, limit: int) -> None:
    entry.dispatcher.set_max_parallel(limit)
    if entry.budget is not None:  # a root step: the cap of the whole tree below it too
        entry.budget.set_capacity(limit)
