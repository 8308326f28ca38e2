"""Dask clusters for the tests of ``subplans.cluster``, each started and stopped by its test
(or module), bounded; and functions the workers import by name (cloudpickle would ship a test
module's functions by value, copies that share nothing with the test).

``in_process_backend``: a cluster whose one worker runs in this process, its tasks on the
test's own event loop (coverage counts the worker side). ``process_cluster``: a scheduler and
two worker processes (with nannies, as ``dask worker`` runs) on 127.0.0.1, for what only real
processes show: a worker SIGKILLed, a worker that does not answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, cast

from subplans.cluster import DaskBackend
from subplans.cluster.connecting import SCHEDULER_HTTP
from subplans.cluster.handover import Outcome
from subplans.cluster.worker_tasks import REGISTRY, stop_attempt

#: Every Dask call of a test is bounded by this many seconds.
BOUND = 20.0

# The tests' process is a driver, even where a test calls a worker task by hand before any
# DaskBackend was made: never a mark in its environment, which every later test's commands
# would inherit (and a watchdog's end would stop).
REGISTRY.driver_here = True


@contextlib.asynccontextmanager
async def in_process_backend(
    threads: int = 8, *, shared_logs: bool | None = None, claim: bool = True
) -> AsyncIterator[DaskBackend]:
    """A ``DaskBackend`` on an in-process cluster of one worker with ``threads`` threads."""
    from distributed import Client, LocalCluster

    async with (
        cast(Any, LocalCluster)(
            processes=False,
            n_workers=1,
            threads_per_worker=threads,
            asynchronous=True,
            dashboard_address=None,
            scheduler_kwargs=SCHEDULER_HTTP,
        ) as cluster,
        cast(Any, Client)(cluster, asynchronous=True, set_as_default=False) as client,
    ):
        try:
            yield DaskBackend(client, shared_logs=shared_logs, claim=claim)
        finally:
            # A test that failed midway may leave an attempt running: a worker waits for its
            # tasks before it closes.
            for token in list(REGISTRY.running):
                await stop_attempt(token)


@contextlib.contextmanager
def process_cluster(threads: int = 4) -> Iterator[str]:
    """A scheduler and two worker processes on 127.0.0.1 (in a thread's event loop of their
    own), configured as ``dask scheduler`` is by default: the task of a killed worker is run
    again on another (which refuses it, its token claimed). Yields the scheduler's address."""
    from distributed import LocalCluster

    with cast(Any, LocalCluster)(
        n_workers=2,
        threads_per_worker=threads,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        scheduler_kwargs=SCHEDULER_HTTP,
    ) as cluster:
        yield str(cluster.scheduler_address)


def worker_pid() -> int:
    """The pid of the worker process that runs this (through ``client.run``)."""
    return os.getpid()


def add(a: int, b: int, *, times: int = 1) -> int:
    """A plain function for ``DaskBackend.subplan`` (run in a worker thread)."""
    return (a + b) * times


async def add_later(a: int, b: int) -> int:
    """An ``async def`` for ``DaskBackend.subplan`` (awaited on the worker's loop)."""
    await asyncio.sleep(0)
    return a + b


#: Set by ``blocks`` once it runs; ``blocks`` returns once ``RELEASE`` is set. Shared with an
#: in-process worker only (this process's module).
BLOCKING = threading.Event()
RELEASE = threading.Event()


def blocks() -> None:
    """A plain function that will not return when cancelled: until ``RELEASE`` is set."""
    BLOCKING.set()
    RELEASE.wait(BOUND)


def fails(message: str) -> Any:
    """A function that raises ``ValueError(message)``."""
    raise ValueError(message)


@contextlib.contextmanager
def external_cluster(
    folder: Path, *, workers: int = 2, threads: int = 1
) -> Iterator[tuple[str, subprocess.Popen[bytes], list[subprocess.Popen[bytes]]]]:
    """A ``dask scheduler`` and ``workers`` ``dask worker --no-nanny`` processes on 127.0.0.1,
    as one starts them by hand (the scheduler's default ``allowed-failures``): what a test may
    SIGKILL, a lone worker that nobody restarts, or the scheduler itself. Yields the address,
    the scheduler's process and the workers'; all are stopped (killed) at the end."""
    dask = str(Path(sys.executable).with_name("dask"))
    file = folder / "scheduler.json"
    # The workers import this module (``worker_pid``) by name, from the tree's root.
    root = str(Path(__file__).resolve().parent.parent)
    path = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
    quiet: dict[str, Any] = {
        "stdout": subprocess.DEVNULL,
        "stderr": subprocess.DEVNULL,
        "env": {**os.environ, "PYTHONPATH": path},
    }
    common = ["--scheduler-file", str(file)]
    scheduler = subprocess.Popen(
        [
            dask,
            "scheduler",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--dashboard-address",
            "127.0.0.1:0",
            *common,
        ],
        **quiet,
    )
    started: list[subprocess.Popen[bytes]] = []
    try:
        _until(file.exists, "the scheduler to write its file")
        address = json.loads(file.read_text())["address"]
        for _ in range(workers):
            started.append(
                subprocess.Popen(
                    [
                        dask,
                        "worker",
                        "--no-nanny",
                        "--nthreads",
                        str(threads),
                        "--host",
                        "127.0.0.1",
                        "--dashboard-address",
                        "127.0.0.1:0",
                        *common,
                    ],
                    **quiet,
                )
            )
        yield address, scheduler, started
    finally:
        for process in [*started, scheduler]:
            process.kill()
            process.wait(BOUND)


def _until(predicate: Callable[[], object], what: str) -> None:
    """Block until ``predicate()`` (a process's readiness), at most ``BOUND`` seconds."""
    deadline = time.monotonic() + BOUND
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.02)


async def workers_up(backend: DaskBackend, count: int) -> None:
    """Wait (bounded) until ``count`` workers have joined ``backend``'s scheduler."""
    async with asyncio.timeout(BOUND):
        while len(backend.workers) < count:
            await asyncio.sleep(0.05)
            await backend.check(max_parallel=1)


def tagged(tag: str) -> list[int]:
    """The live processes whose environment holds ``TAG=<tag>`` (read in ``/proc``)."""
    wanted = f"TAG={tag}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                environ = Path(f"/proc/{entry}/environ").read_bytes()
                state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if state != "Z" and wanted in environ.split(b"\0"):
                found.append(int(entry))
    return found


def refuses(token: str, *, claim: object = False) -> Outcome:
    """A task that ends as a re-run of a lost attempt does: refused."""
    return Outcome("refused", "tcp://gone:1")


def breaks(token: str, *, claim: object = False) -> Outcome:
    """A task that fails in Dask's own way (raised, not inside an ``Outcome``)."""
    raise RuntimeError(f"task {token[:0]}broke")


def worker_mark() -> str | None:
    """The worker's mark a function's children inherit (``SUBPLANS_WORKER``), if any."""
    return os.environ.get("SUBPLANS_WORKER")
