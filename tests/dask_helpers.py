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
import os
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any, cast

from subplans.cluster import DaskBackend
from subplans.cluster.connecting import SCHEDULER_HTTP
from subplans.cluster.worker_tasks import REGISTRY, stop_attempt

#: Every Dask call of a test is bounded by this many seconds.
BOUND = 20.0


@contextlib.asynccontextmanager
async def in_process_backend(
    threads: int = 8, *, shared_logs: bool | None = None
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
            yield DaskBackend(client, shared_logs=shared_logs)
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
