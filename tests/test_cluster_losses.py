"""Lost workers, a lost scheduler, a closed backend (issue #12 review): on clusters started by
hand (``dask scheduler`` and ``dask worker --no-nanny`` processes on 127.0.0.1), each stopped
by its test. A lost attempt ends only once its processes are gone, so a retry never runs
beside it; the loss is noticed when the scheduler drops the worker, even when no other worker
has a free thread to run the task again."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from subplans import (
    BackendError,
    CommandResult,
    EventBus,
    ParallelExecutionConfig,
    ParallelSubplanDispatcher,
    Subplan,
    SubplanExecutionError,
    SubplanExecutionState,
    SubplanRetrying,
    WorkerLostError,
)
from subplans.cluster import DaskBackend

from .conftest import Recorder
from .dask_helpers import BOUND, external_cluster, tagged, workers_up
from .process_helpers import eventually

COMPLETED = SubplanExecutionState.COMPLETED

#: A command that will not go quietly: it ignores SIGTERM, and so does a grandchild in a
#: session of its own.
STUBBORN = "trap '' TERM; setsid sh -c \"trap '' TERM; sleep 300\" & sleep 300"


async def test_a_lost_attempt_ends_once_its_processes_are_gone_and_before_any_retry(
    tmp_path: Path,
) -> None:
    flag = tmp_path / "release"
    with external_cluster(tmp_path) as (address, _, workers):
        backend = await DaskBackend.start(address, threads=2)
        async with backend:
            await workers_up(backend, 2)
            seen: dict[str, list[str]] = {"hold": [], "lost": []}
            beside: list[list[int]] = []
            tries = 0

            async def lost() -> CommandResult:
                nonlocal tries
                tries += 1
                first = tries == 1

                def started(pid: int, worker: str) -> None:
                    seen["lost"].append(worker)
                    if not first:  # what of the lost attempt still lives as the retry starts
                        beside.append(tagged(f"lost-{tmp_path.name}"))

                return await backend.run_command(
                    STUBBORN if first else "echo second",
                    log_file=tmp_path / "lost.log",
                    env={"TAG": f"lost-{tmp_path.name}"} if first else {},
                    cancel_grace=0.5,
                    attempt=tries,
                    on_start=started,
                )

            async def hold() -> CommandResult:
                # Keeps the other worker's one thread busy until the loss was reported.
                return await backend.run_command(
                    f"while [ ! -e {flag} ]; do sleep 0.02; done",
                    log_file=tmp_path / "hold.log",
                    on_start=lambda _, worker: seen["hold"].append(worker),
                )

            bus = EventBus()
            recorder = Recorder(bus)
            dispatcher = ParallelSubplanDispatcher(ParallelExecutionConfig(max_parallel=2), bus=bus)
            holding = asyncio.ensure_future(dispatcher.run([Subplan("hold", hold)]))
            await eventually(lambda: seen["hold"], timeout=BOUND)
            running = asyncio.ensure_future(
                ParallelSubplanDispatcher(ParallelExecutionConfig(max_parallel=1), bus=bus).run(
                    [Subplan("lost", lost, retries=1, retry_delay=0)]
                )
            )
            await eventually(
                lambda: seen["lost"] and len(tagged(f"lost-{tmp_path.name}")) >= 3, timeout=BOUND
            )
            assert seen["lost"] != seen["hold"]
            [victim] = [w for w in workers if w.pid not in await _pids(backend, seen["hold"][0])]
            victim.kill()
            # Reported while the other worker is still busy: noticed as the scheduler drops it.
            await eventually(lambda: recorder.of(SubplanRetrying), timeout=BOUND)
            assert not holding.done()
            flag.touch()
            [result] = await asyncio.wait_for(running, BOUND)
            await asyncio.wait_for(holding, BOUND)
            [retrying] = recorder.of(SubplanRetrying)
            assert isinstance(retrying.error, WorkerLostError)
            assert str(retrying.error).startswith(f"worker {seen['lost'][0]} was lost while")
            assert str(retrying.error).endswith("the scheduler lost it")
            assert (result.state, result.value.output_tail) == (COMPLETED, "second")
            assert beside == [[]]
            assert backend.statistics().lost == 1


async def _pids(backend: DaskBackend, worker: str) -> set[int]:
    from .dask_helpers import worker_pid

    return set((await backend.client.run(worker_pid, workers=[worker])).values())


async def test_a_lost_scheduler_is_one_clear_error_and_the_backend_says_so_after(
    tmp_path: Path,
) -> None:
    with external_cluster(tmp_path, workers=1) as (address, scheduler, workers):
        backend = await DaskBackend.start(address, threads=1)
        await workers_up(backend, 1)
        tag = f"sched-{tmp_path.name}"
        tries = 0

        async def run() -> CommandResult:
            nonlocal tries
            tries += 1
            return await backend.run_command(
                "sleep 300", log_file=tmp_path / "s.log", env={"TAG": tag}, cancel_grace=0.2
            )

        running = asyncio.ensure_future(
            ParallelSubplanDispatcher(ParallelExecutionConfig(max_parallel=1)).run(
                [Subplan("s", run, retries=2, retry_delay=0)]
            )
        )
        await eventually(lambda: tagged(tag), timeout=BOUND)
        scheduler.kill()
        with pytest.raises(SubplanExecutionError) as raised:
            await asyncio.wait_for(running, BOUND)
        [result] = raised.value.results
        assert isinstance(result.error, WorkerLostError)
        assert str(result.error).startswith(f"the Dask scheduler {address} ")
        assert result.attempts == 3  # counted by retries, each failing at once
        with pytest.raises(BackendError, match=r"^cannot reach the Dask scheduler at tcp://"):
            await backend.check(max_parallel=1)
        await asyncio.wait_for(backend.aclose(), BOUND)
        # Its worker, without a scheduler, is the user's to stop: its watchdog stops the command.
        for worker in workers:
            worker.kill()
        await eventually(lambda: not tagged(tag), timeout=BOUND)


async def test_aclose_stops_what_is_in_flight_and_a_closed_backend_says_so(
    tmp_path: Path,
) -> None:
    tag = f"close-{tmp_path.name}"
    with external_cluster(tmp_path, workers=1, threads=2) as (address, _, _):
        backend = await DaskBackend.start(address, threads=2)
        await workers_up(backend, 1)
        running = asyncio.ensure_future(
            backend.run_command(
                "sleep 300", log_file=tmp_path / "c.log", env={"TAG": tag}, cancel_grace=0.5
            )
        )
        await eventually(lambda: tagged(tag), timeout=BOUND)
        await asyncio.wait_for(backend.aclose(), BOUND)
        assert not tagged(tag)  # stopped before the client closed: nothing waited for
        with pytest.raises(BackendError, match=r"the backend was closed while running sleep"):
            await running
        with pytest.raises(BackendError, match=r"is closed: cannot run true$"):
            await backend.run_command("true", log_file=tmp_path / "t.log")
        with pytest.raises(BackendError, match=r"is closed$"):
            await backend.check(max_parallel=1)
        assert repr(backend).endswith("closed>")
        await backend.aclose()  # twice is fine


async def test_a_queued_attempt_s_cancel_waits_on_no_frozen_worker_and_paths_go_absolute(
    tmp_path: Path,
) -> None:
    flag = tmp_path / "release"
    with external_cluster(tmp_path, workers=2) as (address, _, workers):
        backend = await DaskBackend.start(address, threads=2)
        async with backend:
            await workers_up(backend, 2)
            where: list[str] = []
            busy = [
                asyncio.ensure_future(
                    backend.run_command(
                        f"while [ ! -e {flag} ]; do sleep 0.02; done",
                        log_file=tmp_path / f"b{i}.log",
                        on_start=lambda _, worker: where.append(worker),
                    )
                )
                for i in range(2)
            ]
            await eventually(lambda: len(where) == 2, timeout=BOUND)
            queued = asyncio.ensure_future(
                backend.run_command("touch ran", log_file=tmp_path / "q.log", cwd=tmp_path)
            )
            await eventually(lambda: backend.statistics().handed_over == 3, timeout=BOUND)
            frozen = next(iter(await _pids(backend, where[0])))
            os.kill(frozen, signal.SIGSTOP)
            try:
                queued.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await asyncio.wait_for(queued, BOUND)
                assert backend.statistics().abandoned == 0
            finally:
                os.kill(frozen, signal.SIGCONT)
            flag.touch()
            await asyncio.wait_for(asyncio.gather(*busy), BOUND)
            # Relative paths are the driver's: sent absolute, whatever the worker's folder.
            driver = tmp_path / "driver"
            driver.mkdir()
            with pytest.MonkeyPatch.context() as patch:
                patch.chdir(driver)
                result = await backend.run_command(
                    "pwd", log_file=Path("rel.log"), cwd=Path("."), tail_lines=1
                )
            assert result.output_tail == str(driver)
            assert (driver / "rel.log").read_text().endswith(f"{driver}\n")
        assert not (tmp_path / "ran").exists()
        del workers
