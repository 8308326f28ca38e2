"""A pool lowered below what a subplan uses (review of #14, finding 1): the subplan fails
without running, with one line saying why, and its dispatch, step and run go on; only a pool
that never had that many units is a ``ConfigError`` before anything runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from subplans import (
    AggregateSubplanError,
    AsyncSemaphoreLimiter,
    ConfigError,
    FailureMode,
    ParallelExecutionConfig,
    ParallelSubplanDispatcher,
    Subplan,
    SubplanExecutionState,
)
from subplans.engine.states import StepState
from subplans.execution.executor import PlanExecutor
from subplans.execution.live_limits import LiveLimits
from subplans.plans.loader import GlobalConfig, load_plan
from subplans.plans.profiles import ProfileRegistry

from .conftest import returning
from .plans_helpers import write

COMPLETED, FAILED = SubplanExecutionState.COMPLETED, SubplanExecutionState.FAILED
NO_CONFIG = GlobalConfig(Path("/nonexistent/config.yaml"), False, ProfileRegistry(), None)


def keep_going() -> ParallelExecutionConfig:
    return ParallelExecutionConfig(max_parallel=2, failure_mode=FailureMode.CONTINUE_ON_ERROR)


async def test_a_list_s_subplan_a_lowered_pool_cannot_serve_fails_without_running() -> None:
    pool = AsyncSemaphoreLimiter(3)
    dispatcher = ParallelSubplanDispatcher(keep_going(), pools={"gpu": pool})
    pool.set_capacity(2)
    ran: list[str] = []

    def job(name: str) -> Subplan:
        async def run() -> None:
            ran.append(name)

        return Subplan(name, run, uses={"gpu": 3 if name == "big" else 1})

    with pytest.raises(AggregateSubplanError) as caught:
        await dispatcher.run([job("big"), job("small")])
    big, small = caught.value.results
    assert (big.state, small.state) == (FAILED, COMPLETED)
    assert ran == ["small"]
    assert str(big.error) == "subplan 'big' uses 3 units of pool 'gpu', more than its capacity of 2"
    assert pool.statistics().in_use == 0


async def test_a_pool_that_never_had_the_units_is_still_refused_before_anything_runs() -> None:
    pool = AsyncSemaphoreLimiter(2)
    pool.set_capacity(1)
    dispatcher = ParallelSubplanDispatcher(keep_going(), pools={"gpu": pool})
    message = r"^subplan 'big' uses 3 units of pool 'gpu', more than its capacity of 2$"
    with pytest.raises(ConfigError, match=message):
        await dispatcher.run([Subplan("big", returning(1), uses={"gpu": 3})])
    assert (pool.original_capacity, pool.capacity) == (2, 1)


async def test_a_step_whose_pool_was_lowered_from_python_fails_and_the_plan_goes_on(
    tmp_path: Path,
) -> None:
    path = write(
        tmp_path,
        "plan.yaml",
        "name: p\npools: {gpu: 3}\nsteps:\n"
        "  - {name: big, uses: {gpu: 3}, run: 'true'}\n"
        "  - {name: after, always: true, run: 'true'}\n",
    )
    executor = PlanExecutor(load_plan(path, config=NO_CONFIG), state_dir=tmp_path / "state")
    executor.limits.pools["gpu"].set_capacity(2)  # not through LiveLimits: nothing refuses it
    result = await executor.run()
    big, after = result.steps
    assert (big.state, after.state) == (StepState.FAILED, StepState.COMPLETED)
    assert str(big.error) == (
        "subplan 'big' failed: ConfigError: subplan 'big' uses 3 units of pool 'gpu', "
        "more than its capacity of 2"
    )


def test_live_limits_refuse_a_pool_below_a_subplan_not_ended_and_allow_it_after(
    tmp_path: Path,
) -> None:
    path = write(
        tmp_path,
        "plan.yaml",
        "name: p\npools: {gpu: 3}\nsteps:\n"
        "  - {name: big, uses: {gpu: 3}, run: 'true'}\n"
        "  - {name: nest, plan: {steps: [{name: in, uses: {gpu: 2}, run: 'true'}]}}\n",
    )
    plan = load_plan(path, config=NO_CONFIG)
    pool = AsyncSemaphoreLimiter(3)
    limits = LiveLimits(plan, {"gpu": pool})
    message = r"^cannot lower pool 'gpu' to 2: subplan 'big', not ended yet, uses 3 units of it$"
    with pytest.raises(ConfigError, match=message):
        limits.set("pool:gpu", 2)
    big = plan.steps[0]
    with (
        limits.running(big, ParallelSubplanDispatcher(), None),
        pytest.raises(ConfigError, match=message),
    ):
        limits.set("pool:gpu", 2)
    assert limits.set("pool:gpu", 2) == 3  # big ended: a nested step needs 2 at most
    nested = r"^cannot lower pool 'gpu' to 1: subplan 'nest/in', not ended yet, uses 2 units"
    with pytest.raises(ConfigError, match=nested):
        limits.set("pool:gpu", 1)
    assert pool.capacity == 2
