"""The plan executor with real processes, real files and real threads."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

import pytest

from subplans import EventBus, SubplanExecutionState, SubplanSkipped, SubplanStateChanged
from subplans.engine.clock import Clock
from subplans.engine.events import PlanFinished, StepStateChanged
from subplans.engine.states import PlanState, StepState
from subplans.execution.executor import PlanExecutor
from subplans.execution.process import CommandFailedError
from subplans.execution.results import PlanFailedError, PlanResult, exit_code
from subplans.execution.runners import ThreadAbandonedError, call_function
from subplans.plans.loader import GlobalConfig, load_plan
from subplans.plans.profiles import ProfileRegistry

from .conftest import Recorder
from .log_headers import unheaded
from .plans_helpers import write
from .process_helpers import alive, group_members

COMPLETED, FAILED = SubplanExecutionState.COMPLETED, SubplanExecutionState.FAILED


@pytest.fixture
def config(tmp_path: Path) -> GlobalConfig:
    return GlobalConfig(tmp_path / "no-config.yaml", False, ProfileRegistry(), None)


async def execute(path: Path, config: GlobalConfig) -> tuple[PlanResult, Recorder]:
    bus = EventBus()
    recorder = Recorder(bus)
    plan = load_plan(path, config=config)
    result = await PlanExecutor(plan, bus=bus).run()
    return result, recorder


async def test_steps_run_in_order_and_wait_for_every_subplan(
    tmp_path: Path, config: GlobalConfig
) -> None:
    path = write(
        tmp_path,
        "p.yaml",
        """
        name: ordered
        steps:
          - name: fan
            max_parallel: 3
            for_each: ["1", "2", "3", "4", "5"]
            subplan: {run: "sleep 0.0{item}; echo end {item} >> trace.txt"}
          - name: next
            run: "echo next >> trace.txt"
        """,
    )
    result, recorder = await execute(path, config)
    assert result.state == "completed"
    lines = (tmp_path / "trace.txt").read_text().split("\n")
    assert sorted(lines[:5]) == [f"end {i}" for i in range(1, 6)]
    assert lines[5] == "next"
    steps = recorder.of(StepStateChanged)
    assert [(s.step_id, s.state) for s in steps] == [
        ("fan", "running"),
        ("fan", "completed"),
        ("next", "running"),
        ("next", "completed"),
    ]
    assert result.counts() == {"completed": 6, "failed": 0}
    assert result.elapsed >= 0
    assert result.run_dir.parent.parent == tmp_path / ".subplans"


async def test_a_failed_step_skips_the_rest_but_always_steps(
    tmp_path: Path, config: GlobalConfig
) -> None:
    path = write(
        tmp_path,
        "p.yaml",
        """
        name: failing
        steps:
          - name: first
            run: "echo about to fail; echo on stderr >&2; exit 3"
          - name: skipped
            run: "touch skipped.txt"
          - name: finally
            always: true
            run: "touch finally.txt"
        """,
    )
    result, recorder = await execute(path, config)
    assert result.state == "failed"
    assert [s.state for s in result.steps] == ["failed", "skipped", "completed"]
    assert not (tmp_path / "skipped.txt").exists()
    assert (tmp_path / "finally.txt").exists()
    (failed,) = result.steps[0].subplans
    assert exit_code(failed) == 3
    assert exit_code(result.steps[2].subplans[0]) == 0
    error = failed.error
    assert isinstance(error, CommandFailedError)
    assert error.output_tail == "about to fail\non stderr"
    assert error.log_file is not None
    assert unheaded(Path(error.log_file).read_text()) == "about to fail\non stderr\n"
    assert recorder.of(PlanFinished)[-1].state == "failed"


async def test_items_never_run_as_shell_code(tmp_path: Path, config: GlobalConfig) -> None:
    path = write(
        tmp_path,
        "p.yaml",
        """
        name: safe
        steps:
          - name: shell
            for_each: ["x; touch pwned", "$(touch pwned2)", "`touch pwned3`"]
            subplan: {name: "s{index}", run: "echo {item} >> shell.txt"}
          - name: argv
            for_each: ["y; touch pwned4", "a b"]
            subplan: {name: "a{index}", run: ["sh", "-c", "printf '%s|' \\"$@\\" >> argv.txt", "sh", "{item}", "--{item}--"]}
        """,
    )
    result, _ = await execute(path, config)
    assert result.state == "completed"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("pwned")) == []
    assert sorted((tmp_path / "shell.txt").read_text().splitlines()) == sorted(
        ["x; touch pwned", "$(touch pwned2)", "`touch pwned3`"]
    )
    assert set((tmp_path / "argv.txt").read_text().split("|")[:-1]) == {
        "y; touch pwned4",
        "--y; touch pwned4--",
        "a b",
        "--a b--",
    }


async def test_environment_variables(tmp_path: Path, config: GlobalConfig) -> None:
    path = write(
        tmp_path,
        "p.yaml",
        """
        name: env
        steps:
          - name: each
            for_each: [alpha]
            subplan:
              run: 'echo "$SUBPLANS_RUN_ID $SUBPLANS_SUBPLAN $SUBPLANS_ITEM $EXTRA" > env-{item}.txt'
              env: {EXTRA: "x-{item}"}
          - name: single
            run: 'echo "${SUBPLANS_ITEM-none}" > single.txt'
        """,
    )
    bus = EventBus()
    plan = load_plan(path, config=config)
    executor = PlanExecutor(plan, bus=bus, environ={**os.environ, "SUBPLANS_ITEM": "leaked"})
    result = await executor.run()
    assert result.state == "completed"
    assert (tmp_path / "env-alpha.txt").read_text().split() == [
        executor.run_id,
        "each/alpha",
        "alpha",
        "x-alpha",
    ]
    assert (tmp_path / "single.txt").read_text() == "none\n"
    assert repr(executor) == f"<PlanExecutor 'env' run {executor.run_id}>"


async def test_a_tree_shares_the_root_budget(tmp_path: Path, config: GlobalConfig) -> None:
    """3 levels, 4 wide at each, root at max_parallel 2: never more than 2 commands at once."""
    (tmp_path / "running").mkdir()
    leaf = (
        'mkdir "running/$SUBPLANS_RUN_ID-$(echo $SUBPLANS_SUBPLAN | tr / _)" && '
        "ls running | wc -l >> widths.txt && "
        'rmdir "running/$SUBPLANS_RUN_ID-$(echo $SUBPLANS_SUBPLAN | tr / _)"'
    )
    write(tmp_path, "leaf.sh", leaf)
    write(
        tmp_path,
        "level2.yaml",
        """
        name: level2
        automation_profile: {max_parallel: 4}
        steps:
          - name: leaves
            for_each: [a, b, c, d]
            subplan: {run: ["sh", "leaf.sh"]}
        """,
    )
    write(
        tmp_path,
        "level1.yaml",
        """
        name: level1
        automation_profile: {max_parallel: 4}
        steps:
          - name: mid
            for_each: [a, b, c, d]
            subplan: {plan: level2.yaml}
        """,
    )
    path = write(
        tmp_path,
        "root.yaml",
        """
        name: root
        automation_profile: {max_parallel: 2}
        steps:
          - name: top
            for_each: [a, b, c, d]
            subplan: {plan: level1.yaml}
        """,
    )
    bus = EventBus()
    running: set[str] = set()
    widest = 0

    def watch(event: object) -> None:
        nonlocal widest
        # Leaf commands are six names deep: top/a/mid/b/leaves/c.
        if not isinstance(event, SubplanStateChanged) or event.subplan_id.count("/") != 5:
            return
        if event.state is SubplanExecutionState.RUNNING:
            running.add(event.subplan_id)
            widest = max(widest, len(running))
        else:
            running.discard(event.subplan_id)

    bus.subscribe(watch)
    result = await PlanExecutor(load_plan(path, config=config), bus=bus).run()
    assert result.state == "completed"
    assert result.counts()["completed"] == 4 + 16 + 64
    widths = [int(w) for w in (tmp_path / "widths.txt").read_text().split()]
    assert len(widths) == 64
    assert max(widths) <= 2
    assert widest == 2


async def test_fail_fast_kills_a_term_ignoring_command_and_its_grandchild(
    tmp_path: Path, config: GlobalConfig
) -> None:
    write(
        tmp_path,
        "stubborn.sh",
        """
        trap '' TERM
        sh -c 'trap "" TERM; echo $$ > grandchild.pid; while :; do sleep 1; done' &
        echo $$ > child.pid
        while :; do sleep 1; done
        """,
    )
    path = write(
        tmp_path,
        "p.yaml",
        """
        name: kill
        automation_profile: {cancel_grace: 0.2}
        steps:
          - name: pair
            subplans:
              - {name: stubborn, run: ["sh", "stubborn.sh"]}
              - name: fails
                run: "while [ ! -s grandchild.pid ] || [ ! -s child.pid ]; do sleep 0.01; done; exit 1"
        """,
    )
    result, _ = await execute(path, config)
    assert result.state == "failed"
    stubborn, fails = result.steps[0].subplans
    assert exit_code(fails) == 1
    assert stubborn.state is FAILED
    assert "cancelled because subplan 'pair/fails' failed" in str(stubborn.error)
    child = int((tmp_path / "child.pid").read_text())
    grandchild = int((tmp_path / "grandchild.pid").read_text())
    assert not alive(child)
    assert not alive(grandchild)
    assert group_members(child) == []


async def test_nested_failure_fails_the_parent_subplan(
    tmp_path: Path, config: GlobalConfig
) -> None:
    path = write(
        tmp_path,
        "p.yaml",
        """
        name: outer
        steps:
          - name: wrap
            subplans:
              - name: inner
                plan:
                  name: inner
                  steps: [{name: boom, run: "exit 2"}]
        """,
    )
    result, recorder = await execute(path, config)
    (inner,) = result.steps[0].subplans
    assert isinstance(inner.error, PlanFailedError)
    assert str(inner.error) == "nested plan 'inner' failed at step boom"
    assert result.counts() == {"completed": 0, "failed": 2}
    assert [e.state for e in recorder.of(PlanFinished)] == ["failed", "failed"]


async def test_callables_async_and_sync(tmp_path: Path, config: GlobalConfig) -> None:
    write(
        tmp_path,
        "work.py",
        """
        import asyncio, threading

        async def double(x):
            await asyncio.sleep(0)
            return x * 2

        def where(x):
            return (x, threading.current_thread().name)

        def fails():
            raise ValueError("bad input")
        """,
    )
    path = write(
        tmp_path,
        "p.yaml",
        """
        name: calls
        automation_profile: keep-going
        steps:
          - name: calls
            subplans:
              - {name: a, call: "work:double", with: {x: 21}}
              - {name: s, call: "work:where", with: {x: 1}}
              - {name: f, call: "work:fails"}
              - {name: missing, call: "work:nope"}
        """,
    )
    result, _ = await execute(path, config)
    a, s, f, missing = result.steps[0].subplans
    assert a.value == 42
    assert s.value == (1, "subplans calls/s")
    assert isinstance(f.error, ValueError)
    assert str(missing.error) == "'work' has no function 'nope'"


async def test_import_errors_are_reported(tmp_path: Path, config: GlobalConfig) -> None:
    write(tmp_path, "broken.py", "raise ImportError('broken on purpose')\n")
    path = write(tmp_path, "p.yaml", "name: p\nsteps: [{name: c, call: 'broken:f'}]\n")
    result, _ = await execute(path, config)
    assert str(result.steps[0].subplans[0].error) == "cannot import 'broken': broken on purpose"


async def test_a_sync_function_that_outlives_its_timeout_is_abandoned() -> None:
    release = threading.Event()

    async def run() -> None:
        await call_function(release.wait, {"timeout": 10}, cancel_grace=0.01)

    with pytest.raises(ThreadAbandonedError) as caught:
        async with asyncio.timeout(0.01):
            await run()
    assert caught.value.abandoned
    release.set()


async def test_a_sync_function_that_returns_within_grace_is_cancelled_cleanly() -> None:
    gate = threading.Event()

    def slow() -> str:
        gate.wait(5)
        return "done"

    task = asyncio.create_task(call_function(slow, {}, cancel_grace=5))
    await asyncio.sleep(0)
    task.cancel()
    await asyncio.sleep(0)
    gate.set()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_sync_function_returning_an_awaitable_is_awaited() -> None:
    async def inner() -> int:
        return 5

    def outer() -> object:
        return inner()

    assert await call_function(outer, {}, cancel_grace=1) == 5


async def test_cancelling_a_run_stops_everything(tmp_path: Path, config: GlobalConfig) -> None:
    path = write(
        tmp_path,
        "p.yaml",
        """
        name: long
        automation_profile: {cancel_grace: 0.2}
        steps:
          - name: sleepers
            for_each: [a, b]
            subplan: {run: "echo $$ > {item}.pid; sleep 30"}
          - name: finally
            always: true
            run: "touch finally.txt"
        """,
    )
    bus = EventBus()
    recorder = Recorder(bus)
    executor = PlanExecutor(load_plan(path, config=config), bus=bus)
    task = asyncio.create_task(executor.run())
    for _ in range(500):
        if (tmp_path / "a.pid").exists() and (tmp_path / "b.pid").exists():
            break
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for name in ("a", "b"):
        assert not alive(int((tmp_path / f"{name}.pid").read_text()))
    assert not (tmp_path / "finally.txt").exists()
    assert recorder.of(PlanFinished)[-1].state == "cancelled"
    assert [s.state for s in recorder.of(StepStateChanged)] == ["running", "failed"]
    assert len(executor.context.groups) == 0


async def test_skipping_completed_subplans_on_resume(tmp_path: Path, config: GlobalConfig) -> None:
    path = write(
        tmp_path,
        "p.yaml",
        """
        name: resumable
        steps:
          - name: fan
            for_each: [a, b, c]
            subplan: {run: "echo {item} >> ran.txt"}
          - name: single
            run: "echo single >> ran.txt"
          - name: nested
            subplans:
              - name: inner
                plan: {steps: [{name: s, subplans: [{name: x, run: "echo x >> ran.txt"}, {name: y, run: "echo y >> ran.txt"}]}]}
        """,
    )
    bus = EventBus()
    recorder = Recorder(bus)
    plan = load_plan(path, config=config)
    skip = {"fan/a", "fan/c", "single", "nested/inner/s/x"}
    result = await PlanExecutor(plan, bus=bus, skip=skip).run()
    assert result.state == "completed"
    assert sorted((tmp_path / "ran.txt").read_text().split()) == ["b", "y"]
    assert [e.subplan_id for e in recorder.of(SubplanSkipped)] == [
        "fan/a",
        "fan/c",
        "single",
        "nested/inner/s/x",
    ]
    fan = result.steps[0].subplans
    assert [(r.subplan_id, r.state, r.attempts) for r in fan] == [
        ("fan/a", COMPLETED, 0),
        ("fan/b", COMPLETED, 1),
        ("fan/c", COMPLETED, 0),
    ]
    assert recorder.states("fan/a") == []
    assert result.counts() == {"completed": 7, "failed": 0}


async def test_a_sync_function_raising_stop_iteration_fails_cleanly() -> None:
    """Pins: StopIteration cannot be set on a future; the subplan hung forever."""

    def stops() -> None:
        next(iter([]))

    with pytest.raises(RuntimeError, match=r"^the function raised StopIteration$"):
        await call_function(stops, {}, cancel_grace=1)


async def test_sys_exit_in_a_sync_function_fails_only_that_subplan() -> None:
    def exits() -> None:
        raise SystemExit(3)

    with pytest.raises(RuntimeError, match=r"^the function raised SystemExit\(3\)$"):
        await call_function(exits, {}, cancel_grace=1)


async def test_a_nested_plan_does_not_take_the_profile_retries(
    tmp_path: Path, config: GlobalConfig
) -> None:
    """Pins: profile default retries re-ran a whole nested plan, completed subplans included."""
    path = write(
        tmp_path,
        "p.yaml",
        """
        name: outer
        automation_profile: {retries: 1, timeout: 30}
        steps:
          - name: wrap
            subplans:
              - name: inner
                plan:
                  automation_profile: keep-going
                  steps: [{name: s, subplans: [{name: ok, run: "echo ok >> ran.txt"}, {name: bad, run: "exit 3"}]}]
        """,
    )
    plan = load_plan(path, config=config)
    (unit,) = plan.steps[0].units
    assert (unit.retries, unit.timeout) == (0, None)
    result, _ = await execute(path, config)
    assert result.state == "failed"
    assert (tmp_path / "ran.txt").read_text() == "ok\n"


async def test_a_second_interrupt_cuts_a_threads_grace_short() -> None:
    """Pins: after a second Ctrl-C the run still waited out a blocked function's grace."""
    from subplans.execution.process import ProcessGroups

    release = threading.Event()
    groups = ProcessGroups()
    task = asyncio.create_task(
        call_function(release.wait, {"timeout": 30}, cancel_grace=30, hurried=groups.hurried)
    )
    await asyncio.sleep(0)
    task.cancel()
    await asyncio.sleep(0)
    assert groups.kill_all() == 0
    with pytest.raises(ThreadAbandonedError) as caught:
        await asyncio.wait_for(task, 5)
    assert str(caught.value) == (
        "the function was still running in its worker thread after cancellation; abandoned"
    )
    release.set()


async def test_a_nested_plan_per_item_gets_the_item(tmp_path: Path, config: GlobalConfig) -> None:
    """One nested plan per module: its commands see the module through env and SUBPLANS_ITEM."""
    write(
        tmp_path,
        "one.yaml",
        """
        name: one
        steps:
          - name: port
            run: 'echo "$SUBPLANS_ITEM $MODULE $SUBPLANS_SUBPLAN" >> ran.txt'
          - name: deeper
            plan: {steps: [{name: check, run: 'echo "check $MODULE" >> ran.txt'}]}
        """,
    )
    path = write(
        tmp_path,
        "p.yaml",
        """
        name: all
        steps:
          - name: modules
            for_each: [alpha, beta]
            subplan: {plan: one.yaml, env: {MODULE: "mod-{item}"}}
        """,
    )
    result, _ = await execute(path, config)
    assert result.state == "completed"
    assert sorted((tmp_path / "ran.txt").read_text().splitlines()) == [
        "alpha mod-alpha modules/alpha/port",
        "beta mod-beta modules/beta/port",
        "check mod-alpha",
        "check mod-beta",
    ]


# --- time: read from the executor's clock (issue #9) ------------------------------------------


async def test_the_executor_reads_stamps_and_elapsed_times_from_its_clock(
    tmp_path: Path, config: GlobalConfig
) -> None:
    """Stamps come from ``clock.now()``, elapsed times from ``clock.monotonic()``: a wall clock
    that stands still (or jumps) does not bend them."""
    path = write(
        tmp_path,
        "p.yaml",
        """
        name: timed
        steps:
          - {name: first, run: "true"}
          - {name: broken, run: "exit 3"}
          - {name: never, run: "true"}
        """,
    )
    ticks = iter(range(0, 10_000, 5))
    clock = Clock(now=lambda: 1_700_000_000.0, monotonic=lambda: float(next(ticks)))
    bus = EventBus()
    recorder = Recorder(bus)
    executor = PlanExecutor(load_plan(path, config=config), bus=bus, clock=clock)

    result = await executor.run()

    assert executor.run_id.startswith("20231114-221320-")
    assert (result.started, result.finished, result.elapsed) == (1_700_000_000.0,) * 2 + (0.0,)
    assert [(s.started, s.finished) for s in result.steps] == [(1_700_000_000.0,) * 2] * 2 + [
        (None, None)
    ]
    assert {r.started for r in result.subplans()} == {1_700_000_000.0}
    (finished,) = recorder.of(PlanFinished)
    assert finished.elapsed > 0
    assert finished.elapsed % 5 == 0
    assert result.state is PlanState.FAILED
    assert [s.state for s in result.steps] == [
        StepState.COMPLETED,
        StepState.FAILED,
        StepState.SKIPPED,
    ]
    assert [e.state for e in recorder.of(StepStateChanged)] == [
        StepState.RUNNING,
        StepState.COMPLETED,
        StepState.RUNNING,
        StepState.FAILED,
        StepState.SKIPPED,
    ]
    # Every event is stamped by the executor's clock, not by time.time() (issue #9 review).
    kinds = {event.kind for event in recorder.events}
    assert kinds >= {
        "plan_started",
        "step_state_changed",
        "subplan_process_started",
        "subplan_state_changed",
        "plan_finished",
    }
    assert {event.time for event in recorder.events} == {1_700_000_000.0}


async def test_skipped_subplans_are_stamped_by_the_executors_clock(
    tmp_path: Path, config: GlobalConfig
) -> None:
    path = write(tmp_path, "p.yaml", "name: s\nsteps:\n  - {name: done, run: 'true'}\n")
    clock = Clock(now=lambda: 1_700_000_000.0, monotonic=lambda: 0.0)
    bus = EventBus()
    recorder = Recorder(bus)

    await PlanExecutor(load_plan(path, config=config), bus=bus, skip={"done"}, clock=clock).run()

    (skipped,) = recorder.of(SubplanSkipped)
    assert skipped.time == 1_700_000_000.0
    assert {event.time for event in recorder.events} == {1_700_000_000.0}
