"""Named resource pools (issue #14, point 3): ``pools=`` and ``Subplan(uses=...)``."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from subplans import (
    AggregateSubplanError,
    AsyncSemaphoreLimiter,
    ConfigError,
    FailureMode,
    LimiterStatistics,
    ParallelExecutionConfig,
    ParallelSubplanDispatcher,
    ProgressReporter,
    Subplan,
    SubplanExecutionError,
    SubplanExecutionState,
)
from subplans.engine.limiter import acquire_all
from subplans.engine.subplan import _VALID_USES

from .conftest import no_tasks_left, returning

PENDING, RUNNING, COMPLETED, FAILED = SubplanExecutionState
CONTINUE = FailureMode.CONTINUE_ON_ERROR


def dispatcher(pools: dict[str, AsyncSemaphoreLimiter], max_parallel: int = 8) -> Any:
    config = ParallelExecutionConfig(max_parallel=max_parallel, failure_mode=CONTINUE)
    return ParallelSubplanDispatcher(config, pools=pools)


class Watch:
    """Counts what runs in each pool and fails the test if a pool's cap is ever exceeded."""

    def __init__(self, pools: dict[str, AsyncSemaphoreLimiter]) -> None:
        self.pools = pools
        self.using: dict[str, int] = dict.fromkeys(pools, 0)
        self.peak: dict[str, int] = dict.fromkeys(pools, 0)

    def job(
        self, uses: dict[str, int], gate: asyncio.Event | None = None
    ) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            for name, units in uses.items():
                self.using[name] += units
                assert self.using[name] <= self.pools[name].capacity
                self.peak[name] = max(self.peak[name], self.using[name])
            try:
                if gate is not None:
                    await gate.wait()
                await asyncio.sleep(0)
            finally:
                for name, units in uses.items():
                    self.using[name] -= units

        return run


async def test_a_pool_caps_the_subplans_that_use_it() -> None:
    pools = {"api": AsyncSemaphoreLimiter(2)}
    watch = Watch(pools)
    subplans = [Subplan(f"s{i}", watch.job({"api": 1}), uses=["api"]) for i in range(10)]
    subplans += [Subplan(f"free{i}", returning(i)) for i in range(3)]
    results = await dispatcher(pools).run(subplans)
    assert all(r.state is COMPLETED for r in results)
    assert watch.peak["api"] == 2
    assert pools["api"].peak == 2
    assert pools["api"].in_use == 0
    assert no_tasks_left()


async def test_several_units_of_one_pool() -> None:
    pools = {"gpu": AsyncSemaphoreLimiter(4)}
    watch = Watch(pools)
    subplans = [Subplan(f"s{i}", watch.job({"gpu": 3}), uses={"gpu": 3}) for i in range(4)]
    await dispatcher(pools).run(subplans)
    assert watch.peak["gpu"] == 3  # two of 3 units never fit in 4


async def test_a_waiting_subplan_holds_nothing() -> None:
    """'both' waits for 'b' (held by 'holder'); meanwhile it holds no unit of 'a', so 'just_a'
    runs."""
    pools = {"a": AsyncSemaphoreLimiter(1), "b": AsyncSemaphoreLimiter(1)}
    gate, started = asyncio.Event(), asyncio.Event()

    async def holder() -> None:
        started.set()
        await gate.wait()

    ran_a = asyncio.Event()

    async def just_a() -> None:
        ran_a.set()

    subplans = [
        Subplan("holder", holder, uses=["b"]),
        Subplan("both", returning(1), uses=["a", "b"]),
    ]
    # (Within one dispatch subplans start in input order: "just_a" comes from another one.)
    task = asyncio.create_task(dispatcher(pools, max_parallel=3).run(subplans))
    await started.wait()
    await dispatcher(pools).run([Subplan("just_a", just_a, uses=["a"])])
    assert ran_a.is_set()
    assert pools["a"].in_use == 0
    assert pools["b"].waiting == 1
    gate.set()
    results = await task
    assert all(r.state is COMPLETED for r in results)


async def test_asking_more_than_a_pool_has_is_an_error_before_anything_runs() -> None:
    ran: list[str] = []

    async def run() -> None:
        ran.append("x")

    pools = {"db": AsyncSemaphoreLimiter(1)}
    with pytest.raises(
        ConfigError,
        match=r"^subplan 'big' uses 2 units of pool 'db', more than its capacity of 1$",
    ):
        await dispatcher(pools).run([Subplan("ok", run), Subplan("big", run, uses={"db": 2})])
    with pytest.raises(
        ConfigError,
        match=re.escape(
            "subplan 'x' uses pool 'api', which the dispatcher does not have (its pools: db)"
        ),
    ):
        await dispatcher(pools).run([Subplan("x", run, uses=["api"])])
    with pytest.raises(ConfigError, match=r"\(its pools: none\)$"):
        await ParallelSubplanDispatcher().run([Subplan("x", run, uses=["api"])])
    assert ran == []


async def test_a_lazy_input_or_a_group_with_a_bad_demand() -> None:
    pools = {"db": AsyncSemaphoreLimiter(1)}

    def source() -> Iterator[Subplan]:
        yield Subplan("big", returning(1), uses={"db": 2})
        yield Subplan("ok", returning(2), uses=["db"])

    with pytest.raises(AggregateSubplanError) as caught:
        await dispatcher(pools).run(source())
    big, ok = caught.value.results
    assert big.state is FAILED
    assert isinstance(big.error, ConfigError)
    assert big.attempts == 0
    assert ok.state is COMPLETED

    def unpooled() -> Iterator[Subplan]:
        yield Subplan("api", returning(1), uses=["api"])

    with pytest.raises(AggregateSubplanError):
        await ParallelSubplanDispatcher(ParallelExecutionConfig(failure_mode=CONTINUE)).run(
            unpooled()
        )
    async with dispatcher(pools).open() as group:
        with pytest.raises(ConfigError, match=r"^subplan 'big' uses 2 units"):
            group.submit(Subplan("big", returning(1), uses={"db": 2}))


def test_pools_are_checked() -> None:
    with pytest.raises(ConfigError, match=r"^pools must be a mapping of names to limiters"):
        ParallelSubplanDispatcher(pools=3)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"^pool names must be non-empty strings, got ''$"):
        ParallelSubplanDispatcher(pools={"": AsyncSemaphoreLimiter(1)})
    with pytest.raises(ConfigError, match=r"^pool 'a' must be an AsyncSemaphoreLimiter, got 4$"):
        ParallelSubplanDispatcher(pools={"a": 4})  # type: ignore[dict-item]


@pytest.mark.parametrize(
    ("uses", "message"),
    [
        ({"a": 0}, "subplan 'x': uses 'a' must be an integer >= 1, got 0"),
        (
            "api",
            "subplan 'x': uses must be a mapping of pool names to units or a list of pool "
            "names, got 'api'",
        ),
        ([""], "subplan 'x': uses must name pools by non-empty strings, got ''"),
    ],
)
def test_a_subplans_uses_are_checked(uses: object, message: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{re.escape(message)}$"):
        Subplan("x", returning(1), uses=uses)  # type: ignore[arg-type]


def test_uses_is_kept_as_pairs() -> None:
    assert Subplan("x", returning(1), uses=["api", "db"]).uses == (("api", 1), ("db", 1))
    assert Subplan("x", returning(1), uses={"gpu": 2}).uses == (("gpu", 2),)
    assert Subplan("x", returning(1), uses=[]).uses is None


async def test_nested_dispatches_share_pools_without_deadlock() -> None:
    """A planner that uses the pool its children use lends its unit while it waits."""
    pools = {"db": AsyncSemaphoreLimiter(1)}
    watch = Watch(pools)
    inner = dispatcher(pools, max_parallel=4)

    async def planner() -> None:
        await inner.run([Subplan(f"c{i}", watch.job({"db": 1}), uses=["db"]) for i in range(3)])

    outer = dispatcher(pools, max_parallel=2)
    results = await asyncio.wait_for(
        outer.run([Subplan(f"p{i}", planner, uses=["db"]) for i in range(2)]), 10
    )
    assert all(r.state is COMPLETED for r in results)
    assert pools["db"].in_use == 0
    assert watch.peak["db"] == 1


async def test_pool_usage_in_the_progress_snapshot() -> None:
    pools = {"api": AsyncSemaphoreLimiter(2)}
    gate = asyncio.Event()
    reporter = ProgressReporter(pools=pools)
    assert reporter.snapshot().pools == {"api": LimiterStatistics(2, 0, 0, 0)}
    watch = Watch(pools)
    subplans = [Subplan(f"s{i}", watch.job({"api": 1}, gate), uses=["api"]) for i in range(3)]
    task = asyncio.create_task(dispatcher(pools).run(subplans))
    for _ in range(10):
        await asyncio.sleep(0)
    assert reporter.snapshot().pools["api"] == LimiterStatistics(2, 2, 2, 1)
    gate.set()
    await task
    assert reporter.snapshot().pools["api"] == LimiterStatistics(2, 0, 2, 0)
    assert ProgressReporter().snapshot().pools == {}


async def test_acquire_all_takes_everything_or_nothing_and_a_cancelled_wait_takes_none() -> None:
    a, b = AsyncSemaphoreLimiter(2), AsyncSemaphoreLimiter(1)
    await b.acquire()
    waiter = asyncio.create_task(acquire_all(((a, 2), (b, 1))))
    await asyncio.sleep(0)
    assert (a.in_use, b.waiting) == (0, 1)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert (a.in_use, b.in_use, b.waiting) == (0, 1, 0)
    waiter = asyncio.create_task(acquire_all(((a, 2), (b, 1))))
    await asyncio.sleep(0)
    b.release()
    await waiter
    assert (a.in_use, b.in_use) == (2, 1)
    with pytest.raises(ValueError, match=r"^units asks 3, more than the capacity of 2$"):
        await a.acquire(3)
    with pytest.raises(ValueError, match=r"^units must be an integer >= 1, got 0$"):
        await a.acquire(0)


async def test_a_waiter_granted_as_it_is_cancelled_gives_everything_back() -> None:
    a = AsyncSemaphoreLimiter(1)
    await a.acquire()
    waiter = asyncio.create_task(a.acquire())
    await asyncio.sleep(0)
    a.release()  # granted: the future has its result
    waiter.cancel()  # ... and the task is cancelled before it resumes
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert (a.in_use, a.waiting) == (0, 0)


# --- no deadlock, caps never exceeded, whatever the nesting and the demands ------------------

# Each node: (uses, children).
demand = st.dictionaries(st.sampled_from(["a", "b", "c"]), st.integers(1, 2), max_size=2)
trees: st.SearchStrategy[Any] = st.recursive(
    st.tuples(demand, st.just([])),
    lambda children: st.tuples(demand, st.lists(children, max_size=3)),
    max_leaves=12,
)


@settings(max_examples=60, deadline=None)
@given(
    forest=st.lists(trees, min_size=1, max_size=4),
    caps=st.tuples(*[st.integers(2, 3)] * 3),
    width=st.integers(1, 4),
)
def test_random_nestings_and_demands_never_deadlock_nor_exceed_a_cap(
    forest: list[Any], caps: tuple[int, int, int], width: int
) -> None:
    async def main() -> None:
        pools = {name: AsyncSemaphoreLimiter(cap) for name, cap in zip("abc", caps, strict=True)}
        watch = Watch(pools)
        counter = iter(range(10**6))

        def subplan(node: Any) -> Subplan:
            uses, children = node
            job = watch.job(uses)

            async def run() -> None:
                await job()
                if children:
                    await dispatcher(pools, width).run([subplan(c) for c in children])

            return Subplan(f"n{next(counter)}", run, uses=uses or None)

        await asyncio.wait_for(dispatcher(pools, width).run([subplan(n) for n in forest]), 10)
        assert all(p.in_use == 0 and p.waiting == 0 for p in pools.values())

    asyncio.run(main())


async def test_a_waiter_cancelled_before_the_wake_is_skipped() -> None:
    a = AsyncSemaphoreLimiter(1)
    await a.acquire()
    first = asyncio.create_task(a.acquire())
    second = asyncio.create_task(a.acquire())
    await asyncio.sleep(0)
    first.cancel()
    await asyncio.sleep(0)  # the cancellation reached the future, not yet the waiter's code
    a.release()
    await second
    with pytest.raises(asyncio.CancelledError):
        await first
    assert (a.in_use, a.waiting) == (1, 0)
    with pytest.raises(ValueError, match=r"^units must be an integer >= 1, got 1\.5$"):
        await a.acquire(1.5)  # type: ignore[arg-type]


@pytest.mark.parametrize("shape", ["list", "generator", "async", "stream", "group"])
async def test_every_shape_of_dispatch_keeps_the_pool_and_rate_caps(shape: str) -> None:
    pools = {"api": AsyncSemaphoreLimiter(2, max_per_second=10_000)}
    watch = Watch(pools)
    subplans = [Subplan(f"s{i}", watch.job({"api": 1}), uses=["api"]) for i in range(12)]
    config = ParallelExecutionConfig(max_parallel=4, max_per_second=10_000)
    dispatcher = ParallelSubplanDispatcher(config, pools=pools)

    async def agen() -> AsyncIterator[Subplan]:
        for subplan in subplans:
            yield subplan

    if shape == "list":
        results = await dispatcher.run(subplans)
    elif shape == "generator":
        results = await dispatcher.run(iter(subplans))
    elif shape == "async":
        results = await dispatcher.run(agen())
    elif shape == "stream":
        results = [r async for r in dispatcher.stream(iter(subplans))]
    else:
        async with dispatcher.open() as group:
            for subplan in subplans:
                group.submit(subplan)
        results = group.results
    assert [r.state for r in results] == [COMPLETED] * 12
    assert 1 <= watch.peak["api"] <= 2  # (Watch checks the cap at every start)
    assert pools["api"].in_use == 0
    assert no_tasks_left()


async def test_cancelling_the_caller_while_a_subplan_waits_for_a_pool_leaks_nothing() -> None:
    pool = AsyncSemaphoreLimiter(1)
    await pool.acquire()  # someone else holds the pool
    dispatcher = ParallelSubplanDispatcher(ParallelExecutionConfig(), pools={"db": pool})
    task = asyncio.create_task(dispatcher.run([Subplan("waits", returning(1), uses=["db"])]))
    for _ in range(5):
        await asyncio.sleep(0)
    assert pool.waiting == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (pool.in_use, pool.waiting) == (1, 0)
    pool.release()
    assert no_tasks_left()


async def test_a_fail_fast_stop_while_a_subplan_waits_for_a_pool() -> None:
    pool = AsyncSemaphoreLimiter(1)
    gate, started = asyncio.Event(), asyncio.Event()

    async def holder() -> None:
        started.set()
        await gate.wait()

    async def fails() -> None:
        await started.wait()
        raise ValueError("boom")

    dispatcher = ParallelSubplanDispatcher(ParallelExecutionConfig(), pools={"db": pool})
    subplans = [
        Subplan("holder", holder, uses=["db"]),
        Subplan("fails", fails),
        Subplan("waits", returning(1), uses=["db"]),
    ]
    with pytest.raises(SubplanExecutionError) as caught:
        await dispatcher.run(subplans)
    assert [r.attempts for r in caught.value.results] == [1, 1, 0]
    assert (pool.in_use, pool.waiting) == (0, 0)


def test_the_same_uses_again_and_many_distinct_ones() -> None:
    uses = {"api": 1}
    assert Subplan("a", returning(1), uses=uses).uses == Subplan("b", returning(1), uses=uses).uses
    uses["api"] = 2  # changed in place: checked anew
    assert Subplan("c", returning(1), uses=uses).uses == (("api", 2),)
    for i in range(1100):  # more distinct ones than are remembered
        assert Subplan("d", returning(1), uses=[f"p{i}"]).uses == ((f"p{i}", 1),)
    with pytest.raises(ConfigError, match=r"uses must name pools by non-empty strings, got \["):
        Subplan("e", returning(1), uses=[["a"]])  # type: ignore[list-item]


async def test_a_bad_demand_reaching_the_feeder_fails_that_subplan() -> None:
    pool = AsyncSemaphoreLimiter(1)
    gate, started = asyncio.Event(), asyncio.Event()

    async def holder() -> None:
        started.set()
        await gate.wait()

    def source() -> Iterator[Subplan]:
        yield Subplan("holder", holder, uses=["db"])
        yield Subplan("waits", returning(1), uses=["db"])  # the feeder waits for it
        yield Subplan("bad", returning(2), uses=["nope"])

    task = asyncio.create_task(dispatcher({"db": pool}).run(source()))
    await started.wait()
    gate.set()
    with pytest.raises(AggregateSubplanError) as caught:
        await task
    assert [r.state for r in caught.value.results] == [COMPLETED, COMPLETED, FAILED]
    assert isinstance(caught.value.results[2].error, ConfigError)


async def test_lowering_a_pool_below_a_waiters_units_is_refused() -> None:
    # A waiter that could never get its units would wait forever: the lowering is refused.
    pool = AsyncSemaphoreLimiter(2)
    gate, started = asyncio.Event(), asyncio.Event()

    async def holder() -> None:
        started.set()
        await gate.wait()

    subplans = [Subplan("a", holder, uses={"gpu": 1}), Subplan("b", returning(2), uses={"gpu": 2})]
    task = asyncio.create_task(dispatcher({"gpu": pool}).run(subplans))
    await started.wait()
    await asyncio.sleep(0)  # the feeder queues "b"
    assert pool.waiting == 1
    message = "cannot lower the capacity to 1: a waiting subplan needs 2 units of it at once"
    with pytest.raises(ConfigError, match=f"^{message}$"):
        pool.set_capacity(1)
    with pytest.raises(ValueError, match="cannot lower"):  # a ConfigError is a ValueError
        pool.set_capacity(1)
    assert pool.capacity == 2  # nothing changed
    pool.set_capacity(3)  # above it is fine, and so is back down to what it needs
    pool.set_capacity(2)
    gate.set()
    assert [r.state for r in await task] == [COMPLETED, COMPLETED]
    pool.set_capacity(1)  # no waiter any more
    assert (pool.in_use, pool.waiting, pool.capacity) == (0, 0, 1)


async def test_a_waiter_queued_at_another_pool_is_counted_too() -> None:
    # "b" waits in the queue of "cpu" (its first blocker) but needs 2 of "gpu" as well.
    cpu, gpu = AsyncSemaphoreLimiter(1), AsyncSemaphoreLimiter(2)
    gate, started = asyncio.Event(), asyncio.Event()

    async def holder() -> None:
        started.set()
        await gate.wait()

    subplans = [
        Subplan("a", holder, uses=["cpu"]),
        Subplan("b", returning(2), uses={"cpu": 1, "gpu": 2}),
    ]
    task = asyncio.create_task(dispatcher({"cpu": cpu, "gpu": gpu}).run(subplans))
    await started.wait()
    await asyncio.sleep(0)
    assert (cpu.waiting, gpu.waiting) == (1, 0)
    with pytest.raises(ConfigError, match="needs 2 units"):
        gpu.set_capacity(1)
    gate.set()
    assert [r.state for r in await task] == [COMPLETED, COMPLETED]


async def test_a_subplan_asking_more_than_a_lowered_pool_fails_without_running() -> None:
    # Lowered before "b" waits (no waiter then): "b" fails at once, naming pool, size, units.
    pool = AsyncSemaphoreLimiter(2)
    gate, started = asyncio.Event(), asyncio.Event()
    ran: list[str] = []

    async def holder() -> None:
        started.set()
        await gate.wait()

    async def big() -> None:
        ran.append("b")

    subplans = [Subplan("a", holder, uses={"gpu": 2}), Subplan("b", big, uses={"gpu": 2})]
    task = asyncio.create_task(dispatcher({"gpu": pool}, max_parallel=1).run(subplans))
    await started.wait()
    pool.set_capacity(1)  # "b" waits for a slot, not for the pool: allowed
    gate.set()
    with pytest.raises(AggregateSubplanError) as caught:
        await task
    a, b = caught.value.results
    assert (a.state, b.state, b.attempts, ran) == (COMPLETED, FAILED, 0, [])
    assert str(b.error) == "subplan 'b' uses 2 units of pool 'gpu', more than its capacity of 1"
    assert (pool.in_use, pool.waiting) == (0, 0)


async def test_acquire_all_refuses_more_units_than_the_capacity_it_would_wait_for() -> None:
    pool = AsyncSemaphoreLimiter(2)
    await pool.acquire()
    pool.set_capacity(1)
    with pytest.raises(ConfigError, match=r"^2 units asked, more than the capacity of 1$"):
        await acquire_all(((pool, 2),))
    pool.release()
    assert (pool.in_use, pool.waiting) == (0, 0)


async def test_a_take_back_beyond_a_lowered_pool_is_skipped() -> None:
    # A parent lends its 2 units to a nested dispatch; the pool is lowered to 1 meanwhile: the
    # parent cannot wait for 2 units again, so it goes on without them (no hang).
    pool = AsyncSemaphoreLimiter(2)
    outer = dispatcher({"gpu": pool})

    async def child() -> None:
        pool.set_capacity(1)

    async def parent() -> int:
        inner = dispatcher({"gpu": pool})
        await inner.run([Subplan("child", child)])
        return pool.in_use

    [result] = await asyncio.wait_for(outer.run([Subplan("p", parent, uses={"gpu": 2})]), 5)
    assert (result.state, result.value) == (COMPLETED, 0)
    assert (pool.in_use, pool.waiting, pool.capacity) == (0, 0, 1)


@pytest.mark.parametrize(
    ("uses", "message"),
    [
        (["gpu", "gpu"], "uses lists pool 'gpu' twice; write {'gpu': 2} for two units"),
        ((("gpu", 1), ("gpu", 2)), "uses lists pool 'gpu' twice"),
        ({"gpu": True}, "uses 'gpu' must be an integer >= 1, got True"),
        ({"gpu": 1.0}, "uses 'gpu' must be an integer >= 1, got 1.0"),
    ],
)
def test_uses_plan_files_refuse_are_refused_in_python_too(uses: Any, message: str) -> None:
    _VALID_USES.clear()  # (full after an earlier test: then nothing more is remembered)
    Subplan("ok", returning(1), uses={"gpu": 1})  # remembered valid: True == 1 must not pass
    with pytest.raises(ConfigError, match=re.escape(f"subplan 'a': {message}")):
        Subplan("a", returning(1), uses=uses)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: AsyncSemaphoreLimiter(0), "capacity must be an integer >= 1, got 0"),
        (lambda: AsyncSemaphoreLimiter(1, max_per_second="1"), "max_per_second"),  # type: ignore[arg-type]
        (lambda: AsyncSemaphoreLimiter(2).check_units(3), "units asks 3, more than the"),
        (lambda: AsyncSemaphoreLimiter(2).check_units(0), "units must be an integer >= 1"),
        (lambda: AsyncSemaphoreLimiter(2).set_capacity(0), "capacity must be an integer"),
    ],
)
def test_a_limiters_bad_arguments_are_all_config_errors(
    make: Callable[[], Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)) as caught:
        make()
    assert isinstance(caught.value, ValueError)
