"""The semantics of command subplans, the same on both backends (issue #12): each test runs
against ``execution.process.run_command`` here and ``DaskBackend.run_command`` on an
in-process Dask cluster: results, failures, the output and its log, cancellation that stops
the whole process group, timeouts, retries and fail-fast through the dispatcher."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from subplans import (
    CommandFailedError,
    CommandResult,
    DispatchError,
    FailureMode,
    ParallelExecutionConfig,
    ParallelSubplanDispatcher,
    Subplan,
    SubplanCancelledError,
    SubplanExecutionState,
)
from subplans.cluster import DaskBackend
from subplans.execution.process import run_command

from .dask_helpers import BOUND, in_process_backend
from .log_headers import attempts, unheaded
from .process_helpers import alive, eventually, group_members

COMPLETED = SubplanExecutionState.COMPLETED
FAILED = SubplanExecutionState.FAILED


@dataclass
class Runner:
    """One backend's ``run_command``, called the same way; ``started``: each pid it started."""

    name: str
    backend: DaskBackend | None
    started: list[int] = field(default_factory=list)
    workers: list[str | None] = field(default_factory=list)

    async def run(
        self,
        command: str | Sequence[str],
        *,
        log_file: Path,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        cancel_grace: float = 5.0,
        attempt: int = 1,
    ) -> CommandResult:
        if self.backend is None:

            def here(pid: int) -> None:
                self.started.append(pid)
                self.workers.append(None)

            full = None if env is None else {**os.environ, **env}
            return await run_command(
                command,
                log_file=log_file,
                cwd=cwd,
                env=full,
                cancel_grace=cancel_grace,
                attempt=attempt,
                on_start=here,
            )

        def there(pid: int, worker: str) -> None:
            self.started.append(pid)
            self.workers.append(worker)

        return await self.backend.run_command(
            command,
            log_file=log_file,
            cwd=cwd,
            env=env,
            cancel_grace=cancel_grace,
            attempt=attempt,
            on_start=there,
        )

    def runs(self, command: str, log_file: Path) -> Callable[[], Awaitable[CommandResult]]:
        attempt = 0

        async def run() -> CommandResult:
            nonlocal attempt
            attempt += 1
            return await self.run(command, log_file=log_file, attempt=attempt)

        return run


@pytest.fixture(params=["local", "dask"])
async def runner(request: pytest.FixtureRequest) -> AsyncIterator[Runner]:
    if request.param == "local":
        yield Runner("local", None)
        return
    async with in_process_backend() as backend:
        yield Runner("dask", backend)


async def test_a_command_that_exits_0_gives_its_result_and_its_log(
    runner: Runner, tmp_path: Path
) -> None:
    log = tmp_path / "logs" / "a.log"
    result = await runner.run("echo one; echo two >&2", log_file=log)
    assert result.exit_code == 0
    assert result.pid == runner.started[0]
    assert result.log_file == log
    assert result.output_tail == "one\ntwo"
    assert unheaded(log.read_text()) == "one\ntwo\n"
    if runner.name == "dask":
        assert str(runner.workers[0]).startswith("inproc://")


async def test_a_failing_command_raises_with_its_exit_code_and_tail(
    runner: Runner, tmp_path: Path
) -> None:
    log = tmp_path / "b.log"
    with pytest.raises(CommandFailedError, match=r"^exited with code 3$") as raised:
        await runner.run("echo out; exit 3", log_file=log)
    assert raised.value.exit_code == 3
    assert raised.value.signal is None
    assert raised.value.output_tail == "out"
    assert raised.value.log_file == str(log)


async def test_a_command_killed_by_a_signal_names_it(runner: Runner, tmp_path: Path) -> None:
    with pytest.raises(CommandFailedError, match=r"^killed by signal SIGKILL$") as raised:
        await runner.run("kill -9 $$", log_file=tmp_path / "k.log")
    assert raised.value.exit_code is None
    assert raised.value.signal == "SIGKILL"


async def test_a_program_that_does_not_exist_exits_127(runner: Runner, tmp_path: Path) -> None:
    with pytest.raises(CommandFailedError, match=r"^cannot run '/no/such/program'") as raised:
        await runner.run(["/no/such/program"], log_file=tmp_path / "n.log")
    assert raised.value.exit_code == 127


async def test_env_and_cwd_reach_the_command(runner: Runner, tmp_path: Path) -> None:
    log = tmp_path / "e.log"
    result = await runner.run(
        "echo $GREETING; pwd", log_file=log, cwd=tmp_path, env={"GREETING": "hello"}
    )
    assert result.output_tail == f"hello\n{tmp_path}"


async def test_cancelling_stops_the_whole_process_group(runner: Runner, tmp_path: Path) -> None:
    task = asyncio.ensure_future(
        runner.run("sleep 30 & sleep 30 & wait", log_file=tmp_path / "c.log", cancel_grace=2)
    )
    await eventually(
        lambda: runner.started and len(group_members(runner.started[0])) == 3, timeout=BOUND
    )
    members = group_members(runner.started[0])
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert [pid for pid in members if alive(pid)] == []


async def test_a_command_that_ignores_sigterm_is_killed_after_the_grace(
    runner: Runner, tmp_path: Path
) -> None:
    log = tmp_path / "t.log"
    # The shell says it is ready once its trap is set: SIGTERM before that would end it.
    task = asyncio.ensure_future(
        runner.run("trap '' TERM; echo ready; sleep 30; sleep 30", log_file=log, cancel_grace=0.2)
    )
    await eventually(
        lambda: runner.started and log.exists() and "ready" in log.read_text(), timeout=BOUND
    )
    members = group_members(runner.started[0])
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert [pid for pid in members if alive(pid)] == []


async def test_a_timeout_stops_the_command_and_fails_the_subplan(
    runner: Runner, tmp_path: Path
) -> None:
    dispatcher = ParallelSubplanDispatcher(ParallelExecutionConfig(max_parallel=2))
    subplan = Subplan("slow", runner.runs("sleep 30", tmp_path / "slow.log"), timeout=0.5)
    with pytest.raises(DispatchError) as raised:
        await dispatcher.run([subplan])
    [result] = raised.value.results
    assert result.state is FAILED
    assert isinstance(result.error, TimeoutError)
    assert not alive(runner.started[0])


async def test_retries_run_the_command_again_under_a_new_header(
    runner: Runner, tmp_path: Path
) -> None:
    log = tmp_path / "r.log"
    flag = tmp_path / "flag"
    command = f"if [ -e {flag} ]; then echo second; else touch {flag}; echo first; exit 1; fi"
    dispatcher = ParallelSubplanDispatcher(ParallelExecutionConfig(max_parallel=1))
    subplan = Subplan("again", runner.runs(command, log), retries=1, retry_delay=0.01)
    [result] = await dispatcher.run([subplan])
    assert result.state is COMPLETED
    assert result.attempts == 2
    assert attempts(log.read_text()) == ["1", "2"]
    assert unheaded(log.read_text(), 2) == "first\nsecond\n"


async def test_fail_fast_stops_the_commands_still_running(runner: Runner, tmp_path: Path) -> None:
    running = asyncio.Event()

    async def fail_once_running() -> None:
        await eventually(lambda: len(runner.started) == 2, timeout=BOUND)
        running.set()
        raise RuntimeError("boom")

    slow = [Subplan(f"slow{i}", runner.runs("sleep 30", tmp_path / f"s{i}.log")) for i in range(2)]
    config = ParallelExecutionConfig(max_parallel=3, failure_mode=FailureMode.FAIL_FAST)
    dispatcher = ParallelSubplanDispatcher(config)
    with pytest.raises(DispatchError) as raised:
        await dispatcher.run([*slow, Subplan("boom", fail_once_running)])
    assert running.is_set()
    results = raised.value.results
    assert [r.state for r in results] == [FAILED, FAILED, FAILED]
    assert [type(r.error) for r in results[:2]] == [SubplanCancelledError] * 2
    assert [pid for pid in runner.started if alive(pid)] == []
