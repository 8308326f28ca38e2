"""``LiveLimits`` (the caps ``subplans limit`` changes) and the store's ``limits`` records,
without a command: changes before a step starts, refusals, and what is recorded."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from subplans.engine.dispatcher import ParallelSubplanDispatcher
from subplans.engine.errors import ConfigError, RunNotFoundError, RunNotLiveError
from subplans.engine.limiter import AsyncSemaphoreLimiter
from subplans.execution.live_limits import LiveLimits
from subplans.plans.loader import GlobalConfig, load_plan
from subplans.plans.profiles import ProfileRegistry
from subplans.plans.tree import PlanNode
from subplans.store import PlanManifest, RunStore, limit_run, limit_target
from subplans.store.limits import check_limit

from .plans_helpers import write

NO_CONFIG = GlobalConfig(Path("/nonexistent/config.yaml"), False, ProfileRegistry(), None)


def two_steps(tmp_path: Path) -> PlanNode:
    path = write(
        tmp_path,
        "plan.yaml",
        "name: p\npools: {api: 2}\nautomation_profile: {max_parallel: 4}\nsteps:\n"
        "  - {name: one, run: 'true'}\n"
        "  - {name: two, max_parallel: 3, subplans: [{name: n, plan: {steps: [{name: in, run: 'true'}]}}]}\n",
    )
    return load_plan(path, config=NO_CONFIG)


def test_a_change_before_a_step_starts_is_the_cap_it_starts_with(tmp_path: Path) -> None:
    plan = two_steps(tmp_path)
    limits = LiveLimits(plan)
    one, two = plan.steps
    assert limits.set("max_parallel", 8) == 4
    assert limits.max_parallel(one, root=True) == 8
    assert limits.set("step:two", 2) == 3  # its own max_parallel wins over the run's
    assert limits.max_parallel(two, root=True) == 2
    nested = two.units[0].plan
    assert nested is not None
    assert limits.set("step:two/n/in", 1) == 4
    assert limits.max_parallel(nested.steps[0], root=False) == 1
    assert limits.set("max_parallel", 6) == 8


async def test_a_change_reaches_the_running_step_s_dispatcher_and_budget(tmp_path: Path) -> None:
    plan = two_steps(tmp_path)
    api = AsyncSemaphoreLimiter(2)
    limits = LiveLimits(plan, {"api": api})
    dispatcher = ParallelSubplanDispatcher()
    budget = AsyncSemaphoreLimiter(4)
    with limits.running(plan.steps[0], dispatcher, budget):
        assert limits.set("max_parallel", 7) == 4
        assert (dispatcher.config.max_parallel, budget.capacity) == (7, 7)
        assert limits.set("step:one", 5) == 7
        assert (dispatcher.config.max_parallel, budget.capacity) == (5, 5)
        assert limits.set("max_parallel", 9) == 7  # the run's; the step's own change wins
        assert dispatcher.config.max_parallel == 5
    assert limits.set("pool:api", 3) == 2
    assert api.capacity == 3


@pytest.mark.parametrize(
    ("target", "limit", "message"),
    [
        ("pool:gpu", 1, "no pool 'gpu' in the run; its pools: api"),
        ("pool:api", 0, "a pool's capacity must be an integer >= 1, got 0"),
        ("step:nope", 2, "no step 'nope' in the run"),
        ("max_parallel", 33, "max_parallel must be between 1 and 32, got 33"),
    ],
)
def test_what_cannot_change_is_refused(
    tmp_path: Path, target: str, limit: int, message: str
) -> None:
    limits = LiveLimits(two_steps(tmp_path), {"api": AsyncSemaphoreLimiter(2)})
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
        limits.set(target, limit)


def test_targets_and_their_ranges() -> None:
    assert limit_target() == "max_parallel"
    assert limit_target(step="a/b") == "step:a/b"
    assert limit_target(pool="api") == "pool:api"
    with pytest.raises(ValueError, match=r"^a limit is of a step or of a pool, not both$"):
        limit_target(step="a", pool="b")
    assert check_limit("pool:api", 100) == 100
    with pytest.raises(ValueError, match=r"^max_parallel must be between 1 and 32, got True$"):
        check_limit("max_parallel", True)


def test_requests_and_answers_are_recorded(tmp_path: Path) -> None:
    with RunStore.open(tmp_path / "state.db") as store:
        store.start_run("r1", PlanManifest.from_plan(two_steps(tmp_path)))
        store.request_limit("r1", "pool:api", 3)
        [pending] = store.pending_limits("r1")
        assert (pending.requested, pending.request, pending.pending) == (3, 1, True)
        store.record_limit("r1", pending, original=2, current=3)
        assert store.pending_limits("r1") == []
        store.request_limit("r1", "pool:api", 5)
        [again] = store.pending_limits("r1")
        store.record_limit("r1", again, error="no pool")
        [record] = store.limits("r1")
        assert record.to_dict() | {"requested_at": 0, "applied_at": 0} == {
            "target": "pool:api",
            "requested": 5,
            "requested_at": 0,
            "pending": False,
            "original": 2,
            "current": 3,
            "applied_at": 0,
            "error": "no pool",
        }


def test_limit_run_refuses_a_run_that_is_not_live(tmp_path: Path) -> None:
    with RunStore.open(tmp_path / "state.db") as store:
        with pytest.raises(RunNotFoundError):
            limit_run(store, "nope", "max_parallel", 2)
        store.start_run("r1", PlanManifest.from_plan(two_steps(tmp_path)))
        store.finish_run("r1", "completed")
        with pytest.raises(RunNotLiveError, match=r"has already ended \(completed\)"):
            limit_run(store, "r1", "max_parallel", 2)
        with pytest.raises(ValueError, match="between 1 and 32"):
            limit_run(store, "r1", "max_parallel", 0)
        assert store.limits("r1") == []


def test_a_run_in_this_process_applies_a_request_when_signalled(
    tmp_path: Path, isolated: None
) -> None:
    """The running side in-process: ``subplans run`` in the main thread, ``limit_run`` from
    another thread once the first subplan runs; its FIFO is opened once the change is recorded."""
    import os
    import threading

    from typer.testing import CliRunner

    from subplans.cli.typer_app import app

    from .conftest import wait_until

    for item in ("a", "b"):
        os.mkfifo(tmp_path / f"{item}.fifo")
    write(
        tmp_path,
        "plan.yaml",
        "name: p\nautomation_profile: {max_parallel: 1}\nsteps:\n  - name: s\n"
        "    for_each: [a, b]\n    subplan: {run: 'cat {item}.fifo > /dev/null'}\n",
    )
    store_path = tmp_path / ".subplans" / "state.db"
    answers: list[str] = []

    def operator() -> None:
        def running() -> bool:
            if not store_path.exists():
                return False
            with RunStore.open(store_path, readonly=True) as look:
                runs = look.list_runs()
                return bool(runs) and bool(look.running_subplans(runs[0].id))

        wait_until(running, "the first subplan to run")
        with RunStore.open(store_path) as store:
            run_id = store.list_runs()[0].id
            limit_run(store, run_id, "max_parallel", 2)
            limit_run(store, run_id, "pool:none", 2)
            wait_until(lambda: not any(r.pending for r in store.limits(run_id)), "the answers")
            answers.extend(f"{r.target} {r.current} {r.error}" for r in store.limits(run_id))
        for item in ("a", "b"):
            os.close(os.open(tmp_path / f"{item}.fifo", os.O_WRONLY))

    helper = threading.Thread(target=operator)
    helper.start()
    result = CliRunner().invoke(app, ["run", "plan.yaml"])
    helper.join()
    assert result.exit_code == 0, result.output
    assert "limit: max_parallel 1 -> 2\n" in result.stdout
    assert "limit: pool none 2 refused: no pool 'none' in the run; its pools: none\n" in (
        result.stdout
    )
    assert answers == [
        "max_parallel 2 None",
        "pool:none None no pool 'none' in the run; its pools: none",
    ]


def test_the_running_side_outside_the_main_thread_or_without_its_store(tmp_path: Path) -> None:
    import asyncio
    import threading

    from subplans.cli.limit_requests import LimitRequests

    said: list[str] = []
    with RunStore.open(tmp_path / "state.db") as store:
        store._db.execute("DROP TABLE limits")  # a store that fails to be read
        requests = LimitRequests(store, "r1", LiveLimits(two_steps(tmp_path)), said.append)
        assert repr(requests) == "<LimitRequests run r1>"
        requests.apply()
    assert said == [
        f"limit: cannot read the requests: cannot read the store {tmp_path / 'state.db'}: "
        "no such table: limits"
    ]

    def elsewhere() -> None:
        loop = asyncio.new_event_loop()
        with requests.followed(loop):  # no signal handler outside the main thread
            pass
        loop.close()

    thread = threading.Thread(target=elsewhere)
    thread.start()
    thread.join()


def test_a_resumed_run_sets_again_what_was_changed_and_says_what_it_cannot(
    tmp_path: Path,
) -> None:
    import asyncio

    from subplans.cli.limit_requests import LimitRequests

    said: list[str] = []
    plan = two_steps(tmp_path)
    with RunStore.open(tmp_path / "state.db") as store:
        store.start_run("r1", PlanManifest.from_plan(plan))
        for target, value in (("max_parallel", 2), ("step:two", 1), ("pool:gone", 3)):
            store.request_limit("r1", target, value)
        for record in store.pending_limits("r1"):
            store.record_limit("r1", record, original=4, current=record.requested)
        store.request_limit("r1", "pool:api", 1)  # refused: no cap to set again
        [refused] = store.pending_limits("r1")
        store.record_limit("r1", refused, error="no")
        limits = LiveLimits(plan, {"api": AsyncSemaphoreLimiter(2)})
        requests = LimitRequests(store, "r1", limits, said.append)
        loop = asyncio.new_event_loop()
        with requests.followed(loop):
            assert store.limit_listener("r1") == os.getpid()
        loop.close()
    assert (limits.run_limit, limits.step_limits) == (2, {"two": 1})
    assert said == [
        "limit: max_parallel 2, as `subplans limit` set it",
        "limit: pool gone 3 not set again: no pool 'gone' in the run; its pools: api",
        "limit: step two 1, as `subplans limit` set it",
    ]


def test_a_store_that_fails_when_the_run_starts_to_listen_is_said(tmp_path: Path) -> None:
    import asyncio

    from subplans.cli.limit_requests import LimitRequests

    said: list[str] = []
    with RunStore.open(tmp_path / "state.db") as store:
        store._db.execute("DROP TABLE limits")
        requests = LimitRequests(store, "r1", LiveLimits(two_steps(tmp_path)), said.append)
        loop = asyncio.new_event_loop()
        with requests.followed(loop):
            pass
        loop.close()
    cannot = f"cannot read the store {tmp_path / 'state.db'}: no such table: limits"
    assert said[0] == f"limit: cannot read the caps changed earlier: {cannot}"
    assert said[1].startswith("limit: cannot listen for changes: cannot ")


@pytest.mark.parametrize("pooled", [False, True])
async def test_a_raised_cap_is_published_before_the_subplans_it_starts(pooled: bool) -> None:
    """Review of #14, finding 8: after ``set_max_parallel(3)`` from 1, the RUNNING events of
    the subplans the raise started came before ``limit_changed``: the cap seemed broken."""
    import asyncio

    from subplans import Event, EventBus, LimitChanged, ParallelExecutionConfig, Subplan
    from subplans.engine.events import SubplanStateChanged
    from subplans.engine.states import SubplanExecutionState

    bus, seen, over = EventBus(), [], []
    cap, running = 1, 0

    def watch(event: Event) -> None:
        nonlocal cap, running
        if isinstance(event, LimitChanged) and event.pool is None:
            cap = event.limit
            seen.append("limit_changed")
        elif isinstance(event, SubplanStateChanged):
            if event.state is SubplanExecutionState.RUNNING:
                if running >= cap:
                    over.append(event.subplan_id)
                running += 1
                seen.append(event.subplan_id)
            elif event.previous is SubplanExecutionState.RUNNING:
                running -= 1

    bus.subscribe(watch)
    gate = asyncio.Event()

    async def wait() -> None:
        await gate.wait()

    pools = {"api": AsyncSemaphoreLimiter(4)} if pooled else None
    uses = {"api": 1} if pooled else None
    config = ParallelExecutionConfig(max_parallel=1)
    dispatcher = ParallelSubplanDispatcher(config, bus=bus, pools=pools)
    subplans = [Subplan(f"s{i}", wait, uses=uses) for i in range(4)]
    task = asyncio.create_task(dispatcher.run(subplans, name="step"))
    for _ in range(20):
        await asyncio.sleep(0)
    assert seen == ["s0"]
    dispatcher.set_max_parallel(3)
    for _ in range(20):
        await asyncio.sleep(0)
    assert seen == ["s0", "limit_changed", "s1", "s2"]
    assert over == []
    gate.set()
    await task


async def test_a_root_step_s_cap_is_bounded_by_the_run_s_as_changed(tmp_path: Path) -> None:
    """Review of #14, finding 6: the run's cap set by ``limit`` bounds every root step, as the
    budget of the whole run; a step's own cap acts below it."""
    plan = two_steps(tmp_path)
    one, two = plan.steps
    limits = LiveLimits(plan)
    dispatcher, budget = ParallelSubplanDispatcher(), AsyncSemaphoreLimiter(4)
    with limits.running(one, dispatcher, budget):
        assert limits.set("max_parallel", 2) == 4
        assert limits.set("step:one", 3) == 2
        assert (dispatcher.config.max_parallel, budget.capacity) == (2, 2)
        assert (limits.current("step:one"), limits.original("step:one")) == (2, 4)
        assert limits.set("max_parallel", 8) == 2
        assert (dispatcher.config.max_parallel, budget.capacity) == (3, 3)  # its own acts
    assert limits.max_parallel(two, root=True) == 3  # its own 3, under the run's 8
    assert limits.set("max_parallel", 1) == 8
    assert limits.max_parallel(two, root=True) == 1
    nested = two.units[0].plan
    assert nested is not None  # bounded by the root step's budget, not by its own cap
    assert limits.max_parallel(nested.steps[0], root=False) == 4
    assert (limits.current("max_parallel"), limits.original("max_parallel")) == (1, 4)
    assert (limits.original("step:two/n/in"), limits.current("step:two/n/in")) == (4, 4)
    with pytest.raises(ConfigError, match=r"^no step 'nope' in the run$"):
        limits.original("step:nope")
