"""The caps of a running run that can change while it runs (``subplans limit``): the run's
``max_parallel`` (the budget of its root steps), one step's ``max_parallel``, a pool's capacity.

``LiveLimits`` keeps the run's pools and the dispatchers of the steps running now; a change
acts at once on those (the engine's ``set_max_parallel`` and ``set_capacity``: raising starts
waiting subplans, lowering cancels nothing) and on every step that starts later.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

from subplans.engine.config import check_max_parallel
from subplans.engine.dispatcher import ParallelSubplanDispatcher
from subplans.engine.errors import ConfigError
from subplans.engine.limiter import AsyncSemaphoreLimiter
from subplans.plans.tree import PlanNode, StepNode

__all__ = ["LiveLimits"]


@dataclass(slots=True)
class _Running:
    step: StepNode
    dispatcher: ParallelSubplanDispatcher
    #: The budget of the tree below it, if it is a root step.
    budget: AsyncSemaphoreLimiter | None


@dataclass(slots=True)
class LiveLimits:
    """The run's changeable caps: ``pools`` by name, and what ``set()`` changed so far."""

    plan: PlanNode
    pools: Mapping[str, AsyncSemaphoreLimiter] = field(default_factory=dict)
    #: The run's ``max_parallel`` as changed (None: each root step's own).
    run_limit: int | None = None
    #: Steps' ``max_parallel`` as changed, by step id.
    step_limits: dict[str, int] = field(default_factory=dict)
    _running: list[_Running] = field(default_factory=list)

    def max_parallel(self, step: StepNode, *, root: bool) -> int:
        """The cap a step starts with: as changed for it, else the run's as changed (a root step
        without a ``max_parallel`` of its own), else its own."""
        limit = self.step_limits.get(step.id)
        if limit is None and root and _follows_the_run(step):
            limit = self.run_limit
        return step.profile.max_parallel if limit is None else limit

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
        roots = [
            entry
            for entry in self._running
            if entry.budget is not None
            and entry.step.id not in self.step_limits
            and _follows_the_run(entry.step)
        ]
        previous = (
            roots[0].dispatcher.config.max_parallel
            if roots
            else self.run_limit or self.plan.profile.max_parallel
        )
        self.run_limit = limit
        for entry in roots:
            _resize(entry, limit)
        return previous

    def _set_step(self, step_id: str, limit: int) -> int:
        live = [entry for entry in self._running if entry.step.id == step_id]
        known = {step.id: step for step in self.plan.walk_steps()}
        if not live and step_id not in known:
            raise ConfigError(f"no step {step_id!r} in the run")
        if live:
            previous = live[0].dispatcher.config.max_parallel
        else:
            root = step_id in {step.id for step in self.plan.steps}
            previous = self.max_parallel(known[step_id], root=root)
        self.step_limits[step_id] = limit
        for entry in live:
            _resize(entry, limit)
        return previous

    def _set_pool(self, name: str, limit: int) -> int:
        pool = self.pools.get(name)
        if pool is None:
            known = ", ".join(sorted(self.pools)) or "none"
            raise ConfigError(f"no pool {name!r} in the run; its pools: {known}")
        if type(limit) is not int or limit < 1:
            raise ConfigError(f"a pool's capacity must be an integer >= 1, got {limit!r}")
        previous = pool.capacity
        pool.set_capacity(limit)
        return previous


def _follows_the_run(step: StepNode) -> bool:
    """Whether the run's cap is the step's: a step that sets its own keeps it."""
    source = step.profile.sources.get("max_parallel")  # a tree built by hand may have none
    return source is None or source.level != "step"


def _resize(entry: _Running, limit: int) -> None:
    entry.dispatcher.set_max_parallel(limit)
    if entry.budget is not None:  # a root step: the cap of the whole tree below it too
        entry.budget.set_capacity(limit)
