"""``DaskBackend`` on an in-process cluster (issue #12): the seam (``PlanExecutor(backends=)``),
logs shipped or written directly, ``call`` units, ``backend.subplan``, ``check()``,
``stop_run``, the cancel channel before a task starts, the claim that refuses a re-run, and
what ``import subplans`` does not import."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

from subplans import (
    BackendError,
    CallTargetError,
    DispatchError,
    EventBus,
    ParallelExecutionConfig,
    ParallelSubplanDispatcher,
    PlanExecutor,
    SubplanExecutionState,
    SubplanProcessStarted,
    ThreadAbandonedError,
    WorkerLostError,
)
from subplans.cluster import DaskBackend
from subplans.cluster.handover import CommandSpec, LogMarker
from subplans.cluster.worker_tasks import command_task
from subplans.plans.backends import Backend
from subplans.plans.loader import GlobalConfig, load_plan
from subplans.plans.profiles import ProfileRegistry
from subplans.plans.tree import PlanNode

from .conftest import Recorder
from .dask_helpers import (
    BLOCKING,
    BOUND,
    RELEASE,
    add,
    add_later,
    blocks,
    fails,
    in_process_backend,
)
from .log_headers import attempts, unheaded
from .plans_helpers import write
from .process_helpers import alive, eventually

DASK = Backend("dask", "tcp://scheduler.example:8786")
COMPLETED, FAILED = SubplanExecutionState.COMPLETED, SubplanExecutionState.FAILED


def on_backend(plan: PlanNode, backend: Backend) -> PlanNode:
    """``plan`` with every unit on ``backend``, nested plans' units too."""
    steps = []
    for step in plan.steps:
        units = tuple(
            dataclasses.replace(
                unit,
                backend=backend,
                plan=None if unit.plan is None else on_backend(unit.plan, backend),
            )
            for unit in step.units
        )
        steps.append(dataclasses.replace(step, units=units))
    return dataclasses.replace(plan, steps=tuple(steps))


def load(path: Path) -> PlanNode:
    config = GlobalConfig(path.parent / "no-config.yaml", False, ProfileRegistry(), None)
    return load_plan(path, config=config)


async def test_a_plan_runs_on_the_cluster_through_the_executor(tmp_path: Path) -> None:
    write(
        tmp_path,
        "inner.yaml",
        """
        name: inner
        steps:
          - name: deep
            run: "echo deep $SUBPLANS_SUBPLAN"
        """,
    )
    write(tmp_path, "tasks.py", "def double(n):\n    return 2 * n\n")
    path = write(
        tmp_path,
        "p.yaml",
        """
        name: remote
        steps:
          - name: fan
            max_parallel: 2
            subplans:
              - {name: a, run: "echo a $GREETING"}
              - {name: b, call: "tasks:double", with: {n: 21}}
              - {name: nested, plan: inner.yaml}
          - name: each
            for_each: ["x"]
            subplan: {run: "echo item $SUBPLANS_ITEM"}
        """,
    )
    plan = on_backend(load(path), DASK)
    bus = EventBus()
    recorder = Recorder(bus)
    async with in_process_backend() as backend:
        executor = PlanExecutor(
            plan, bus=bus, backends={DASK: backend}, environ={"GREETING": "hello"}
        )
        result = await executor.run()
    assert result.state.value == "completed"
    step, each = result.steps
    assert [r.state for r in step.subplans] == [COMPLETED] * 3
    assert step.subplans[1].value == 42
    assert each.subplans[0].value.output_tail == "item x"
    started = recorder.of(SubplanProcessStarted)
    # The call unit's start names its worker too (#12 second review), with no log file.
    assert sorted(e.subplan_id for e in started) == ["each/x", "fan/a", "fan/b", "fan/nested/deep"]
    assert [e.log_file for e in started if e.subplan_id == "fan/b"] == [""]
    assert all(e.worker is not None and e.worker.startswith("inproc://") for e in started)
    logs = executor.run_dir / "logs"
    assert unheaded((logs / "fan__a.log").read_text()) == "a hello\n"
    assert unheaded((logs / "fan__nested__deep.log").read_text()) == "deep fan/nested/deep\n"


async def test_a_unit_on_a_backend_the_executor_was_not_given_fails_clearly(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, "p.yaml", "name: p\nsteps:\n  - {name: a, run: 'true'}\n")
    plan = on_backend(load(path), DASK)
    async with in_process_backend() as backend:  # and without a bus, given it: it runs
        ran = await PlanExecutor(plan, backends={DASK: backend}).run()
    assert ran.state.value == "completed"
    result = await PlanExecutor(plan).run()
    [result_a] = result.steps[0].subplans
    assert result_a.state is FAILED
    assert isinstance(result_a.error, BackendError)
    assert str(result_a.error).startswith(
        "a: no dask tcp://scheduler.example:8786 backend was given to run it on: start a "
    )


async def test_shipped_logs_come_back_at_the_end_with_their_header(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "s.log"
    log.parent.mkdir()
    log.write_text("before, no end of line")  # a resumed run's log: appended after
    async with in_process_backend(shared_logs=False) as backend:
        result = await backend.run_command("echo shipped", log_file=log, attempt=1)
        assert result.output_tail == "shipped"
        from subplans import CommandFailedError

        with pytest.raises(CommandFailedError) as raised:
            await backend.run_command("echo again; exit 4", log_file=log, attempt=2)
    assert raised.value.log_file == str(log)
    assert raised.value.output_tail == "again"
    text = log.read_text()
    assert text.startswith("before, no end of line\n--- attempt 1 (resumed), started ")
    assert attempts(text) == ["1 (resumed)", "2"]
    assert text.endswith("---\nshipped\n") is False
    assert text.splitlines()[-1] == "again"
    assert not (log.parent / ".subplans-driver").exists()


async def test_a_worker_that_does_not_see_the_marker_ships_its_output(tmp_path: Path) -> None:
    """The driver believed the folder shared; the worker reads another nonce (another file
    system): it writes its own copy, header included, and ships it."""
    log = tmp_path / "m.log"
    marker = tmp_path / "marker"
    marker.write_text("driver's nonce")
    spec = CommandSpec(
        "echo mine",
        str(log),
        None,
        {},
        1.0,
        3,
        20,
        LogMarker(str(marker), "another nonce"),
        False,
    )
    async with in_process_backend() as backend:
        # Its backend listens to the starts: one of a task it did not hand over is ignored.
        await backend.run_command("true", log_file=tmp_path / "first.log")
        outcome = await backend.client.submit(command_task, "tok-marker", spec)
    assert outcome.kind == "done"
    assert outcome.log is not None
    assert attempts(outcome.log.decode()) == ["3"]
    assert unheaded(outcome.log.decode()) == "mine\n"
    assert not log.exists()


async def test_the_logs_folder_is_found_shared_once(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "a.log"
    async with in_process_backend() as backend:
        first = await backend.run_command("echo 1", log_file=log, attempt=1)
        second = await backend.run_command("echo 2", log_file=log, attempt=2)
    assert (first.output_tail, second.output_tail) == ("1", "2")
    assert (log.parent / ".subplans-driver").read_text()  # the marker, with its nonce
    assert unheaded(log.read_text(), 2) == "1\n2\n"


async def test_a_call_unit_is_imported_on_the_worker(tmp_path: Path) -> None:
    write(tmp_path, "remote_calls.py", "async def hello(name):\n    return f'hi {name}'\n")
    async with in_process_backend() as backend:
        value = await backend.call(
            "remote_calls:hello", tmp_path, {"name": "x"}, cancel_grace=1, label="c"
        )
        with pytest.raises(CallTargetError, match=r"^cannot import 'nowhere_at_all'"):
            await backend.call("nowhere_at_all:f", tmp_path, {}, cancel_grace=1, label="d")
    assert value == "hi x"


async def test_backend_subplan_runs_a_picklable_function_under_a_dispatcher() -> None:
    async with in_process_backend() as backend:
        subplans = [
            backend.subplan("plain", add, 1, 2, times=3),
            backend.subplan("awaited", add_later, 4, 5),
            backend.subplan("failing", fails, "no", retries=1),
        ]
        dispatcher = ParallelSubplanDispatcher(ParallelExecutionConfig(max_parallel=3))
        with pytest.raises(DispatchError) as raised:
            await dispatcher.run(subplans)
        assert backend.statistics().handed_over == 4
        assert backend.statistics().running == 0
    results = raised.value.results
    assert [r.value for r in results[:2]] == [9, 9]
    assert (results[2].state, results[2].attempts) == (FAILED, 2)
    assert repr(results[2].error) == "ValueError('no')"


async def test_a_cancelled_function_in_a_thread_is_abandoned_after_the_grace() -> None:
    async with in_process_backend() as backend:
        try:
            task = asyncio.ensure_future(backend.subplan("held", blocks, cancel_grace=0.1).run())
            await asyncio.to_thread(BLOCKING.wait, BOUND)
            task.cancel()
            with pytest.raises(ThreadAbandonedError, match=r"abandoned$"):
                await task
            assert backend.statistics().stopped == 1
        finally:
            RELEASE.set()


async def test_check_says_what_is_wrong_in_one_line(tmp_path: Path) -> None:
    async with in_process_backend(threads=2) as backend:
        warnings = await backend.check(max_parallel=2, folders=[tmp_path])
        assert warnings == []
        assert list(backend.workers.values()) == [2]
        warnings = await backend.check(max_parallel=5)
        assert warnings == [
            "the Dask cluster has 2 worker threads, fewer than max_parallel 5: at most 2 "
            "subplans run at once"
        ]
        missing = tmp_path / "missing"
        with pytest.raises(BackendError, match=rf"^plan folder {missing} is not reachable on "):
            await backend.check(max_parallel=1, folders=[missing])
        assert repr(backend).startswith(f"<DaskBackend {backend.scheduler} 1 workers, 2 threads")


async def test_stop_run_stops_what_a_run_left_on_the_workers(tmp_path: Path) -> None:
    async with in_process_backend() as backend:
        started: list[int] = []
        env = {"SUBPLANS_RUN_ID": "run-left", "SUBPLANS_SUBPLAN": "x"}
        task = asyncio.ensure_future(
            backend.run_command(
                "sleep 30",
                log_file=tmp_path / "l.log",
                env=env,
                on_start=lambda pid, _: started.append(pid),
            )
        )
        await eventually(lambda: started, timeout=BOUND)
        assert await backend.stop_run("run-left", grace=1) >= 1
        from subplans import CommandFailedError

        with pytest.raises(CommandFailedError, match="SIGTERM"):
            await task
        assert not alive(started[0])


@pytest.mark.parametrize("claim", [True, False], ids=["claimed", "unclaimed"])
async def test_an_attempt_cancelled_before_it_starts_never_runs(
    tmp_path: Path, claim: bool
) -> None:
    # Without claims (the local cluster's way) the queue's own cancel must do it alone.
    async with in_process_backend(threads=1, claim=claim) as backend:
        started: list[int] = []
        hold = asyncio.ensure_future(
            backend.run_command(
                "sleep 30", log_file=tmp_path / "h.log", on_start=lambda p, _: started.append(p)
            )
        )
        await eventually(lambda: started, timeout=BOUND)
        queued = asyncio.ensure_future(
            backend.run_command("touch ran", log_file=tmp_path / "q.log", cwd=tmp_path)
        )
        await eventually(lambda: backend.statistics().handed_over == 2, timeout=BOUND)
        queued.cancel()
        with pytest.raises(asyncio.CancelledError):
            await queued
        hold.cancel()
        with pytest.raises(asyncio.CancelledError):
            await hold
        assert backend.statistics().stopped == 2
    assert not (tmp_path / "ran").exists()


async def test_a_task_run_again_after_its_claim_is_refused_as_lost(tmp_path: Path) -> None:
    spec = CommandSpec(
        "touch ran", str(tmp_path / "c.log"), str(tmp_path), {}, 1, 1, 20, None, True
    )
    async with in_process_backend() as backend:
        first = await backend.client.submit(command_task, "tok-claim", spec, key="first")
        again = await backend.client.submit(command_task, "tok-claim", spec, key="again")
    assert (first.kind, again.kind) == ("done", "refused")
    assert isinstance(WorkerLostError("x", worker="w"), Exception)


def test_import_subplans_and_a_local_run_import_no_dask(tmp_path: Path) -> None:
    code = (
        "import sys, asyncio, subplans, subplans.cluster\n"
        "from subplans.execution.process import run_command\n"
        "from pathlib import Path\n"
        f"asyncio.run(run_command('true', log_file=Path({str(tmp_path / 'x.log')!r})))\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')))\n"
    )
    found = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=BOUND
    )
    assert found.stdout == "[]\n", found.stderr


def test_without_distributed_starting_a_backend_says_how_to_install_it() -> None:
    code = (
        "import sys, asyncio\n"
        "sys.modules['distributed'] = None\n"
        "from subplans.cluster import DaskBackend\n"
        "from subplans import BackendError\n"
        "try:\n"
        "    asyncio.run(DaskBackend.start(None, threads=1))\n"
        "except BackendError as error:\n"
        "    print(error)\n"
    )
    found = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=BOUND
    )
    assert found.stdout == (
        "the dask backend needs the distributed package: pip install 'subplans[dask]'\n"
    ), found.stderr


async def test_an_unreachable_scheduler_is_one_clear_error() -> None:
    with pytest.raises(
        BackendError, match=r"^cannot reach the Dask scheduler at tcp://127.0.0.1:9: "
    ):
        # Dask's own bound (80% of it) must come first: half a second of room for a loaded machine
        # (at 0.2 s, Dask's retries once overran it in CI and the whole bound expired first).
        await DaskBackend.start("tcp://127.0.0.1:9", threads=1, timeout=2.5)


def test_the_environment_of_a_remote_command_is_the_overrides_only() -> None:
    assert "PATH" in os.environ  # the driver's own stays here; the worker's is used there
