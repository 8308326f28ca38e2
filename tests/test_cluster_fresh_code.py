"""Second review of issue #12: a ``call`` unit runs its plan's current code on a long-lived
worker (an edited module, another plan's module of the same name), an address that accepts
connections but speaks no Dask is given up on within the bound, a run whose scheduler was
killed prints no Dask traceback, and fail-fast never waits on a dead worker."""

from __future__ import annotations

import asyncio
import re
import socket
import subprocess
import sys
import time
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

from subplans import (
    BackendError,
    ParallelExecutionConfig,
    ParallelSubplanDispatcher,
    Subplan,
    SubplanCancelledError,
    SubplanExecutionError,
    ThreadAbandonedError,
    WorkerLostError,
)
from subplans.cli.app import ExitCode
from subplans.cli.run_backends import CALLS_WAIT, RunBackends
from subplans.cluster import DaskBackend
from subplans.cluster.worker_tasks import REGISTRY
from subplans.execution.process import CommandResult
from subplans.plans.backends import DASK

from .conftest import command_env, wait_until
from .dask_helpers import (
    BLOCKING,
    BOUND,
    RELEASE,
    external_cluster,
    in_process_backend,
    tagged,
    workers_up,
)
from .plans_helpers import write
from .process_helpers import eventually


@pytest.fixture
def clean_modules() -> Iterator[None]:
    """The plan modules the tests import here leave this process as they found it."""
    path = list(sys.path)
    yield
    for name in ("where", "helper", "extra", "libmod"):
        sys.modules.pop(name, None)
    sys.path[:] = path


async def test_a_call_runs_its_plans_current_code_never_another_plans(
    tmp_path: Path, clean_modules: None
) -> None:
    p1, p2 = tmp_path / "p1", tmp_path / "p2"
    write(p1, "helper.py", "NAME = 'one'\n")
    write(p1, "where.py", "from helper import NAME\n\ndef who():\n    return f'p1 {NAME}'\n")
    write(p2, "where.py", "def who():\n    return 'p2'\n")
    # A module of the same name the worker imported from elsewhere is not the plan's.
    planted = types.ModuleType("where")
    planted.__file__ = str(tmp_path / "elsewhere" / "where.py")
    sys.modules["where"] = planted

    async with in_process_backend() as backend:

        async def who(folder: Path) -> str:
            value = await backend.call("where:who", folder, {}, cancel_grace=1, label="w")
            return str(value)

        seen = [await who(p1), await who(p2), await who(p1)]
        # Edited between runs (another size: a same-size edit within a second could meet
        # Python's own cached bytecode); a module it imports, edited too.
        write(p1, "helper.py", "NAME = 'two, edited'\n")
        seen += [await who(p1), await who(p2)]
        write(p2, "where.py", "def who():\n    return 'p2 edited'\n")
        seen += [await who(p2), await who(p2)]  # unchanged: nothing imported again
        # A module of the plan's that imports one from elsewhere (not the plan's: kept), then
        # a module of the plan's removed.
        write(tmp_path / "lib", "libmod.py", "NAME = 'lib'\n")
        sys.path.append(str(tmp_path / "lib"))
        write(p2, "extra.py", "X = 1\n")
        write(p2, "where.py", "import extra, libmod\n\ndef who():\n    return libmod.NAME\n")
        seen.append(await who(p2))
        (p2 / "extra.py").unlink()
        write(p2, "where.py", "def who():\n    return 'p2 without extra'\n")
        seen.append(await who(p2))
        assert re.fullmatch(
            r"<PlanImports \d+ modules of \d+ plan folders>", repr(REGISTRY.imports)
        )

    assert seen == [
        "p1 one",
        "p2",
        "p1 one",
        "p1 two, edited",
        "p2",
        "p2 edited",
        "p2 edited",
        "lib",
        "p2 without extra",
    ]
    assert sum(entry in {str(p1), str(p2)} for entry in sys.path) == 1  # only the last one


async def test_a_server_that_speaks_no_dask_is_given_up_on_within_the_bound() -> None:
    # A listening socket that never answers: the kernel accepts the connection for it.
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        address = f"tcp://127.0.0.1:{server.getsockname()[1]}"
        started = time.monotonic()
        with pytest.raises(BackendError) as raised:
            await DaskBackend.start(address, threads=1, timeout=1)
    assert str(raised.value) == f"{address} did not answer as a Dask scheduler within 1s"
    assert time.monotonic() - started < 1 + BOUND / 4


def test_a_killed_scheduler_prints_no_dask_traceback(tmp_path: Path) -> None:
    write(
        tmp_path, "plan.yaml", "name: demo\nsteps:\n  - {name: a, run: 'touch started; sleep 60'}\n"
    )
    with external_cluster(tmp_path, workers=1) as (address, scheduler, _):
        run = subprocess.Popen(
            [sys.executable, "-m", "subplans", "run", "plan.yaml", "--scheduler", address],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            # Not in asyncio's debug mode (CI's): it reports Dask's slow client start on stderr.
            env=command_env(SUBPLANS_CONFIG=str(tmp_path / "none.yaml"), PYTHONASYNCIODEBUG=""),
        )
        try:
            wait_until((tmp_path / "started").exists, timeout=BOUND)
            scheduler.kill()
            out, err = run.communicate(timeout=BOUND)
        finally:
            run.kill()
    assert run.returncode == ExitCode.FAILED
    assert f"the Dask scheduler {address} was lost while running" in out
    assert "Traceback" not in out + err, err
    assert err == ""


async def test_fail_fast_with_a_killed_worker_waits_on_nothing_dead(tmp_path: Path) -> None:
    tag = f"dead-{tmp_path.name}"
    with external_cluster(tmp_path, workers=1, threads=2) as (address, _, workers):
        async with await DaskBackend.start(address, threads=2) as backend:
            await workers_up(backend, 1)
            started: list[int] = []

            def sleeper(name: str, grace: float) -> Subplan:
                async def run() -> CommandResult:
                    return await backend.run_command(
                        "sleep 300",
                        log_file=tmp_path / f"{name}.log",
                        env={"TAG": tag},
                        cancel_grace=grace,
                        on_start=lambda pid, _: started.append(pid),
                    )

                return Subplan(name, run)

            dispatcher = ParallelSubplanDispatcher(ParallelExecutionConfig(max_parallel=2))
            running = asyncio.ensure_future(dispatcher.run([sleeper("a", 5), sleeper("b", 0.5)]))
            await eventually(lambda: len(started) == 2, timeout=BOUND)
            workers[0].kill()
            killed = time.monotonic()
            with pytest.raises(SubplanExecutionError) as raised:
                await asyncio.wait_for(running, BOUND)
            took = time.monotonic() - killed
            assert not tagged(tag)  # the watchdog stopped both (a within b's wait, or after)
            stats = backend.statistics()
    errors = {result.subplan_id: result.error for result in raised.value.results}
    assert isinstance(errors["b"], WorkerLostError)
    # Cancelled by fail-fast once b was lost (0.5s and the watchdog's margin), not abandoned
    # after a's 5s grace on a worker that is gone.
    assert isinstance(errors["a"], SubplanCancelledError)
    assert not errors["a"].abandoned
    assert stats.abandoned == 0
    assert took < 5


async def test_an_attempt_cancelled_as_its_worker_is_removed_is_not_waited_on(
    tmp_path: Path,
) -> None:
    async with in_process_backend() as backend:
        started: list[str] = []
        attempt = asyncio.ensure_future(
            backend.run_command(
                "sleep 30",
                log_file=tmp_path / "a.log",
                cancel_grace=BOUND,
                on_start=lambda _, worker: started.append(worker),
            )
        )
        await eventually(lambda: started, timeout=BOUND)
        hearing = backend._attempts._hearing
        assert hearing is not None
        removed = {"action": "remove-worker", "processing-tasks": []}
        # Its removal and its cancellation come together: nobody is asked to stop it.
        hearing.worker_event(started[0], (0.0, removed))
        attempt.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(attempt, BOUND / 4)
        assert backend.statistics().abandoned == 0


async def test_resume_waits_for_a_calls_thread_that_runs_on(clean_modules: None) -> None:
    root = Path(__file__).resolve().parent.parent
    BLOCKING.clear()
    RELEASE.clear()
    async with in_process_backend() as backend:
        call = asyncio.ensure_future(
            backend.call(
                "tests.dask_helpers:blocks", root, {}, cancel_grace=0.05, label="c", run_id="r1"
            )
        )
        await asyncio.to_thread(BLOCKING.wait, BOUND)
        call.cancel()
        with pytest.raises(ThreadAbandonedError):
            await call
        # Abandoned, its thread runs on: named for its run only.
        await backend.check(max_parallel=1)
        (worker,) = backend.workers
        assert await backend.running_calls("r1") == {worker: ["c"]}
        assert await backend.running_calls("r2") == {}
        backends = RunBackends({})
        backends.started = {DASK: backend}
        said: list[str] = []

        def waiting(line: str) -> None:
            said.append(line)
            RELEASE.set()  # it ends while resume waits

        backends.waiting = waiting
        assert await backends.stop_run("r1") == 0
        assert backends.calls_left == []
        assert said == [
            f"waiting up to {CALLS_WAIT:g}s for 1 call of run r1 still running on the Dask "
            "cluster to end"
        ]
