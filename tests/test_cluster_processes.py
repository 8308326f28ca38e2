"""``DaskBackend`` across processes (issue #12): a scheduler and two worker processes on
127.0.0.1. What only real processes show: fail-fast stops the remote process groups (read in
``/proc``), a worker SIGKILLed mid-run leaves no orphan (its watchdog) and its subplan is
retried after a ``WorkerLostError``, a worker that does not answer leaves its subplan
abandoned, a ``call`` unit and a picklable function run in a worker process, and the local
cluster ``DaskBackend.start(None)`` makes for a run."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from subplans import (
    CommandResult,
    DispatchError,
    EventBus,
    FailureMode,
    ParallelExecutionConfig,
    ParallelSubplanDispatcher,
    Subplan,
    SubplanCancelledError,
    SubplanExecutionState,
    SubplanRetrying,
    WorkerLostError,
)
from subplans.cluster import DaskBackend

from .conftest import Recorder
from .dask_helpers import BOUND, add, process_cluster, worker_mark, worker_pid
from .plans_helpers import write
from .process_helpers import alive, eventually, group_members

COMPLETED, FAILED = SubplanExecutionState.COMPLETED, SubplanExecutionState.FAILED


@pytest.fixture(scope="module")
def scheduler() -> Iterator[str]:
    with process_cluster(threads=4) as address:
        yield address


async def connected(address: str) -> DaskBackend:
    """A backend on the module's cluster once both its workers are up (a killed one is
    restarted by its nanny)."""
    backend = await DaskBackend.start(address, threads=8)
    async with asyncio.timeout(BOUND):
        while len(backend.workers) < 2:
            await asyncio.sleep(0.05)
            await backend.check(max_parallel=1)
    return backend


async def test_fail_fast_stops_the_remote_process_groups(scheduler: str, tmp_path: Path) -> None:
    started: list[tuple[int, str]] = []
    members: list[int] = []

    def remote(name: str) -> Subplan:
        async def run() -> CommandResult:
            return await backend.run_command(
                "sleep 30 & sleep 30 & wait",
                log_file=tmp_path / f"{name}.log",
                cancel_grace=2,
                on_start=lambda pid, worker: started.append((pid, worker)),
            )

        return Subplan(name, run)

    async def fails_once_both_run() -> None:
        await eventually(
            lambda: len(started) == 2 and all(len(group_members(p)) == 3 for p, _ in started),
            timeout=BOUND,
        )
        members.extend(pid for pgid, _ in started for pid in group_members(pgid))
        raise RuntimeError("boom")

    backend = await connected(scheduler)
    async with backend:
        config = ParallelExecutionConfig(max_parallel=3, failure_mode=FailureMode.FAIL_FAST)
        dispatcher = ParallelSubplanDispatcher(config)
        task = asyncio.ensure_future(
            dispatcher.run([remote("a"), remote("b"), Subplan("boom", fails_once_both_run)])
        )
        await eventually(lambda: len(started) == 2, timeout=BOUND)
        with pytest.raises(DispatchError) as raised:
            await task
        assert len(members) == 6
        assert [r.state for r in raised.value.results] == [FAILED] * 3
        assert isinstance(raised.value.results[0].error, SubplanCancelledError)
        assert {worker for _, worker in started} <= set(backend.workers)
        assert backend.statistics().stopped == 2
    # Every process of both groups is gone once the dispatch has ended: nothing waited.
    assert [pid for pid in members if alive(pid)] == []
    assert [pgid for pgid, _ in started if group_members(pgid)] == []


async def test_a_worker_killed_mid_run_leaves_no_orphan_and_its_subplan_is_retried(
    scheduler: str, tmp_path: Path
) -> None:
    flag, log = tmp_path / "flag", tmp_path / "lost.log"
    command = f"if [ -e {flag} ]; then echo second; else touch {flag}; exec sleep 30; fi"
    started: list[tuple[int, str]] = []
    tries = 0

    async def run() -> CommandResult:
        nonlocal tries
        tries += 1
        return await backend.run_command(
            command,
            log_file=log,
            cancel_grace=1,
            attempt=tries,
            on_start=lambda pid, worker: started.append((pid, worker)),
        )

    backend = await connected(scheduler)
    async with backend:
        bus = EventBus()
        recorder = Recorder(bus)
        dispatcher = ParallelSubplanDispatcher(ParallelExecutionConfig(max_parallel=1), bus=bus)
        task = asyncio.ensure_future(
            dispatcher.run([Subplan("lost", run, retries=1, retry_delay=0.01)])
        )
        await eventually(lambda: started, timeout=BOUND)
        orphan, worker = started[0]
        pids = await backend.client.run(worker_pid, workers=[worker])
        os.kill(pids[worker], signal.SIGKILL)
        [result] = await asyncio.wait_for(task, BOUND)
        assert backend.statistics().lost == 1
    assert (result.state, result.attempts, result.value.output_tail) == (COMPLETED, 2, "second")
    [retrying] = recorder.of(SubplanRetrying)
    assert isinstance(retrying.error, WorkerLostError)
    assert retrying.error.worker == worker
    assert str(retrying.error).startswith(f"worker {worker} was lost while running if [ -e")
    assert str(retrying.error).endswith("the scheduler lost it")
    # The dead worker's watchdog stops its command (SIGTERM): never left running beside the retry.
    await eventually(lambda: not alive(orphan), timeout=BOUND)


async def test_a_worker_that_does_not_answer_leaves_its_subplan_abandoned(
    scheduler: str, tmp_path: Path
) -> None:
    started: list[tuple[int, str]] = []
    backend = await connected(scheduler)
    async with backend:
        task = asyncio.ensure_future(
            backend.run_command(
                "sleep 30",
                log_file=tmp_path / "s.log",
                cancel_grace=0.2,
                on_start=lambda pid, worker: started.append((pid, worker)),
            )
        )
        await eventually(lambda: started, timeout=BOUND)
        command, worker = started[0]
        stopped = (await backend.client.run(worker_pid, workers=[worker]))[worker]
        os.kill(stopped, signal.SIGSTOP)
        try:
            task.cancel()
            with pytest.raises(SubplanCancelledError, match=r"abandoned$") as raised:
                await task
            assert raised.value.abandoned
            assert backend.statistics().abandoned == 1
        finally:
            os.kill(stopped, signal.SIGCONT)
        # Once it answers again, the stop it was sent reaches it.
        await eventually(lambda: not alive(command), timeout=BOUND)


async def test_a_call_unit_and_a_function_run_in_a_worker_process(
    scheduler: str, tmp_path: Path
) -> None:
    write(tmp_path, "where_calls.py", "import os\n\ndef pid():\n    return os.getpid()\n")
    backend = await connected(scheduler)
    async with backend:
        pid = await backend.call("where_calls:pid", tmp_path, {}, cancel_grace=1, label="w")
        worker_pids = set((await backend.client.run(worker_pid)).values())
        value = await backend.subplan("add", add, 2, 3, times=2).run()
        # A worker process marks its own environment: what a function starts there carries
        # the mark its watchdog stops when the worker dies.
        mark = await backend.subplan("mark", worker_mark).run()
    assert pid in worker_pids
    assert value == 10
    assert mark is not None
    assert len(mark) == 16
    assert worker_mark() is None  # never this driver's


async def test_a_local_cluster_is_started_for_a_run_and_stopped_after(tmp_path: Path) -> None:
    """The cluster ``start(None)`` makes fails a killed worker's task at once (Dask's
    ``allowed-failures`` 0): a ``WorkerLostError``, and the watchdog stops its command."""
    backend = await DaskBackend.start(None, threads=4)
    async with backend:
        assert len(backend.workers) == min(2, os.cpu_count() or 1)
        assert sum(backend.workers.values()) >= 4
        assert await backend.check(max_parallel=4) == []
        # No dashboard on 8787 (another cluster's): its HTTP server is on a free local port.
        http = backend._cluster.scheduler.http_server
        assert http.port != 8787
        assert {socket.getsockname()[0] for socket in http._sockets.values()} == {"127.0.0.1"}
        result = await backend.run_command("echo here", log_file=tmp_path / "l.log")
        assert result.output_tail == "here"
        started: list[tuple[int, str]] = []
        task = asyncio.ensure_future(
            backend.run_command(
                "sleep 30",
                log_file=tmp_path / "k.log",
                cancel_grace=0.5,  # the loss is reported once the watchdog's grace is over
                on_start=lambda pid, worker: started.append((pid, worker)),
            )
        )
        await eventually(lambda: started, timeout=BOUND)
        command, worker = started[0]
        pids = await backend.client.run(worker_pid, workers=[worker])
        os.kill(pids[worker], signal.SIGKILL)
        lost = r"was lost while running sleep 30: the scheduler lost it$"
        with pytest.raises(WorkerLostError, match=lost):
            await task
        cluster = backend._cluster
    assert cluster is not None
    assert cluster.status.name == "closed"
    await eventually(lambda: not alive(command), timeout=BOUND)
