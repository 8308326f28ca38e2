"""The edges of ``subplans.cluster`` (issue #12): the watchdog on its own, arguments refused up
front, ``check()``'s other answers, two backends on one client, a task the cluster itself
cancels, and tasks that refuse to start."""

from __future__ import annotations

import asyncio
import os
import subprocess
import threading
from pathlib import Path
from typing import Any, cast

import pytest

from subplans import BackendError, WorkerLostError
from subplans.cluster import DaskBackend
from subplans.cluster.connecting import SCHEDULER_HTTP, check_cluster
from subplans.cluster.handover import WORKER_VARIABLE, CommandSpec, LogMarker
from subplans.cluster.watchdog import Watchdog, watch
from subplans.cluster.worker_tasks import REGISTRY, call_task, command_task, function_task

from .dask_helpers import BOUND, add, in_process_backend
from .process_helpers import alive, eventually


def marked(token: str) -> subprocess.Popen[bytes]:
    """A ``sleep 30`` carrying a worker's mark, in a session of its own."""
    env = {**os.environ, WORKER_VARIABLE: token}
    return subprocess.Popen(["sleep", "30"], env=env, start_new_session=True)


def test_the_watchdog_stops_the_marked_commands_once_its_pipe_ends() -> None:
    command = marked("tok-watch")
    try:
        assert watch("tok-watch", iter([b"0.5\n", b"0.2\n"])) == 1
        assert command.wait(BOUND) == -15  # SIGTERM, within the grace
    finally:
        command.kill()
        command.wait()


async def test_a_worker_s_watchdog_starts_once_and_again_if_it_died() -> None:
    watchdog = Watchdog("tok-restart")
    assert repr(watchdog) == "<Watchdog tok-restart not started>"
    assert watchdog.pid is None
    assert watchdog.ensure(0.2) == "tok-restart"
    first = watchdog._process
    assert first is not None
    watchdog.ensure(0.1)  # no larger grace: nothing written, the same process
    assert watchdog._process is first
    assert repr(watchdog) == "<Watchdog tok-restart running>"
    command = marked("tok-restart")
    try:
        assert first.stdin is not None
        first.stdin.close()  # what the worker's death does
        await eventually(lambda: command.poll() is not None, timeout=BOUND)
        assert command.returncode == -15
        await asyncio.to_thread(first.wait, BOUND)
        watchdog.ensure(0.3)
        assert watchdog.pid is not None
        assert watchdog.pid != first.pid
    finally:
        command.kill()
        command.wait()
        process = watchdog._process
        assert process is not None
        assert process.stdin is not None
        process.stdin.close()
        await asyncio.to_thread(process.wait, BOUND)


async def test_bad_arguments_are_refused_before_anything_is_handed_over(tmp_path: Path) -> None:
    async with in_process_backend() as backend:
        with pytest.raises(ValueError, match=r"^command must not be empty$"):
            await backend.run_command([], log_file=tmp_path / "x.log")
        with pytest.raises(ValueError, match=r"^cancel_grace must be >= 0, got -1$"):
            await backend.run_command("true", log_file=tmp_path / "x.log", cancel_grace=-1)
        assert backend.statistics().handed_over == 0


async def test_check_refuses_another_version_and_warns_of_no_worker() -> None:
    async with in_process_backend() as backend:
        with pytest.raises(
            BackendError,
            match=r"^worker inproc://\S+ runs subplans \S+, this driver 0\.0\.0: install the same "
            r"version on every worker$",
        ):
            await check_cluster(backend.client, max_parallel=1, folders=[], version="0.0.0")
    from distributed import Client, LocalCluster

    async with (
        cast(Any, LocalCluster)(
            processes=False,
            n_workers=0,
            asynchronous=True,
            dashboard_address=None,
            scheduler_kwargs=SCHEDULER_HTTP,
        ) as cluster,
        cast(Any, Client)(cluster, asynchronous=True, set_as_default=False) as client,
    ):
        warnings = await DaskBackend(client).check(max_parallel=4)
    assert warnings == ["the Dask cluster has no worker yet: subplans wait until one joins"]


async def test_two_backends_on_one_client_each_hear_of_their_starts(tmp_path: Path) -> None:
    async with in_process_backend(shared_logs=True) as first:
        second = DaskBackend(first.client, shared_logs=True)
        heard: list[tuple[str, int]] = []
        release = tmp_path / "release"
        command = f"while [ ! -e {release} ]; do sleep 0.01; done"

        async def run(name: str, backend: DaskBackend) -> None:
            await backend.run_command(
                command,
                log_file=tmp_path / f"{name}.log",
                on_start=lambda pid, _: heard.append((name, pid)),
            )

        async with second:  # it wraps the caller's client: closing it leaves that open
            both = asyncio.gather(run("a", first), run("b", second))
            # Each hears its own start while the commands still run (not from the outcome).
            await eventually(lambda: len(heard) == 2, timeout=BOUND)
            release.touch()
            await both
        assert first.client.status == "running"
    assert sorted(name for name, _ in heard) == ["a", "b"]


async def test_a_task_the_cluster_cancels_fails_as_lost_and_its_command_is_stopped(
    tmp_path: Path,
) -> None:
    from distributed import Future

    async with in_process_backend() as backend:
        started: list[int] = []
        task = asyncio.ensure_future(
            backend.run_command(
                "sleep 30", log_file=tmp_path / "c.log", on_start=lambda p, _: started.append(p)
            )
        )
        await eventually(lambda: started, timeout=BOUND)
        [key] = [key for key in backend.client.futures if str(key).startswith("subplans ")]
        await backend.client.cancel([Future(key, backend.client)])
        with pytest.raises(WorkerLostError, match=r"the cluster cancelled its task$"):
            await task
        await eventually(lambda: not alive(started[0]), timeout=BOUND)


async def test_tasks_refuse_to_start_on_a_token_claimed_or_stopped_before(tmp_path: Path) -> None:
    spec = CommandSpec("true", str(tmp_path / "l.log"), None, {}, 1, 1, 20, None, True)
    async with in_process_backend() as backend:
        submit = backend.client.submit
        assert (await submit(call_task, "tok-c", "m:f", str(tmp_path), {}, 1, "c")).kind == (
            "failed"
        )
        again = await submit(call_task, "tok-c", "m:f", str(tmp_path), {}, 1, "c", key="c2")
        function = await submit(function_task, "tok-c", add, (1, 2), {}, 1, "f")
        REGISTRY.cancel("tok-stopped")
        stopped = await submit(command_task, "tok-stopped", spec)
    assert (again.kind, function.kind, stopped.kind) == ("refused",) * 3
    assert repr(REGISTRY).startswith("<worker registry 0 running, <Watchdog ")
    assert not REGISTRY.sees(LogMarker(str(tmp_path / "no marker here"), "nonce"))


def test_no_thread_of_ours_is_left_behind() -> None:
    """The in-process clusters above ended with their tests: no spawner or waiter of ours is
    left but the daemon threads the package keeps by design."""
    names = [thread.name for thread in threading.enumerate()]
    assert not [name for name in names if name.startswith("subplans wait")]


def test_a_remote_environment_names_the_unit_as_a_local_one_does(tmp_path: Path) -> None:
    from subplans.execution.run_context import RunContext
    from subplans.plans.tree import UnitNode

    context = RunContext("r1", tmp_path, environ={"SUBPLANS_ITEM": "stale", "KEEP": "1"})
    plain = UnitNode("s/a", "a", "run", tmp_path, tmp_path, command="true", env={"X": "2"})
    item = UnitNode("s/b", "b", "run", tmp_path, tmp_path, command="true", item="mod")

    remote = context.remote_environment(plain)
    assert remote == {"KEEP": "1", "X": "2", "SUBPLANS_RUN_ID": "r1", "SUBPLANS_SUBPLAN": "s/a"}
    assert context.environment(plain) == remote  # here the same, over the same environ
    assert context.remote_environment(item)["SUBPLANS_ITEM"] == "mod"
