"""Reaching a Dask cluster: the scheduler at an address, or a local cluster started for a run;
and checking, before anything runs, that its workers can run the plan.

``distributed`` is imported here on first use only (``require_distributed``): ``import
subplans``, the command and a local run never import it, and without the ``dask`` extra the
one error says how to install it.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
from collections.abc import Iterable
from typing import Any, cast

import subplans.cluster.worker_tasks as worker_tasks
from subplans.engine.errors import BackendError

# distributed's types are loose and partly untyped: its objects are ``Any`` here.

__all__ = [
    "INSTALL_HINT",
    "SCHEDULER_HTTP",
    "check_cluster",
    "open_client",
    "require_distributed",
    "worker_threads",
]

#: How to get the backend, said by every error that finds it missing.
INSTALL_HINT = "pip install 'subplans[dask]'"
#: What a scheduler we start listens on for HTTP (metrics, no dashboard): a free port of
#: 127.0.0.1, never 8787, which another cluster may hold (Dask then warns, and moves).
SCHEDULER_HTTP = {"dashboard_address": "127.0.0.1:0"}
#: Seconds to reach a scheduler (its handshake included) before giving up on it.
CONNECT_TIMEOUT = 10.0
#: The share of ``CONNECT_TIMEOUT`` Dask gets to connect (the rest: the handshake).
DASK_SHARE = 0.8
#: Seconds a half-made client gets to close.
CLOSE_QUIETLY = 2.0


def require_distributed() -> None:
    """Import ``distributed``, or say how to install it.

    Raises:
        BackendError: it is not installed.
    """
    try:
        import distributed  # noqa: F401
    except ImportError as error:  # pragma: no cover - tested in a process without it
        raise BackendError(
            f"the dask backend needs the distributed package: {INSTALL_HINT}"
        ) from error


async def open_client(
    scheduler: str | None, *, threads: int, timeout: float = CONNECT_TIMEOUT
) -> tuple[Any, Any]:
    """A client of the scheduler at ``scheduler`` (reached within ``timeout`` seconds); or
    (None) of a local cluster on 127.0.0.1 with at least ``threads`` worker threads in all,
    returned too (the caller closes it).

    Raises:
        BackendError: ``distributed`` is missing, or the scheduler cannot be reached.
    """
    require_distributed()
    import dask
    from distributed import Client, LocalCluster

    cluster: Any = None
    if scheduler is None:
        workers = max(1, min(2, os.cpu_count() or 1))
        # A killed worker fails its task at once (KilledWorker), never re-runs it elsewhere.
        with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
            cluster = await cast(Any, LocalCluster)(
                n_workers=workers,
                threads_per_worker=max(1, math.ceil(threads / workers)),
                processes=True,
                host="127.0.0.1",
                dashboard_address=None,
                scheduler_kwargs=SCHEDULER_HTTP,
                asynchronous=True,
            )
        address: Any = cluster
    else:
        address = scheduler
    # Dask bounds the connection, not the handshake: a server that accepts it but speaks no
    # Dask (an HTTP server) would be waited for forever. The whole connect is bounded here;
    # Dask's own bound comes first, so that an address nobody listens on says so.
    connect = timeout * DASK_SHARE
    client = cast(Any, Client)(address, asynchronous=True, timeout=connect, set_as_default=False)
    bound = asyncio.timeout(timeout)
    try:
        async with bound:
            await client
    except BaseException as error:
        # A failed or cancelled connect leaves a half-made client: closed here, not at exit.
        await _close_quietly(client)
        if cluster is not None:  # pragma: no cover - our own cluster was just reachable
            await _close_quietly(cluster)
        if bound.expired():
            raise BackendError(
                f"{scheduler} did not answer as a Dask scheduler within {timeout:g}s"
            ) from error
        if isinstance(error, (OSError, TimeoutError, ValueError)):  # ValueError: foo://bar
            # An older Dask gives up on a peer that never answers its handshake (a worker)
            # with a TimeoutError that says nothing.
            said = str(error) or "it did not answer as a Dask scheduler (a worker's address?)"
            raise BackendError(f"cannot reach the Dask scheduler at {scheduler}: {said}") from error
        raise
    return client, cluster


async def _close_quietly(closable: Any) -> None:
    # It never got far enough to close cleanly; a peer that speaks no Dask may never answer.
    with contextlib.suppress(Exception):
        async with asyncio.timeout(CLOSE_QUIETLY):
            await closable.close()


async def worker_threads(client: Any) -> dict[str, int]:
    """Each worker's address and number of threads, asked of the scheduler now."""
    identity = await client.scheduler.identity()  # every worker (older Dask: no argument)
    workers = identity.get("workers", {})
    return {address: int(info.get("nthreads", 0)) for address, info in sorted(workers.items())}


async def check_cluster(
    client: Any, *, max_parallel: int, folders: Iterable[str], version: str | None = None
) -> tuple[dict[str, int], list[str]]:
    """Check that the workers can run the plan; returns the workers (their threads) and the
    warnings to show. ``version``: the driver's (None: the one installed here).

    Raises:
        BackendError: a worker runs another version of subplans, or cannot see one of
            ``folders`` (the plan folders ``call`` units import from).
    """
    driver = worker_tasks.subplans_version() if version is None else version
    versions: dict[str, str] = await client.run(worker_tasks.subplans_version)
    for address, theirs in sorted(versions.items()):
        if theirs != driver:
            raise BackendError(
                f"worker {address} runs subplans {theirs}, this driver {driver}: "
                "install the same version on every worker"
            )
    wanted = sorted({str(folder) for folder in folders})
    if wanted:
        missing: dict[str, list[str]] = await client.run(worker_tasks.missing_folders, wanted)
        for address, gone in sorted(missing.items()):
            if gone:
                raise BackendError(
                    f"plan folder {gone[0]} is not reachable on worker {address}: call units "
                    "import their functions from it (share it, or install the same tree there)"
                )
    workers = await worker_threads(client)
    warnings: list[str] = []
    threads = sum(workers.values())
    if not workers:
        warnings.append("the Dask cluster has no worker yet: subplans wait until one joins")
    elif threads < max_parallel:
        warnings.append(
            f"the Dask cluster has {threads} worker threads, fewer than max_parallel "
            f"{max_parallel}: at most {threads} subplans run at once"
        )
    return workers, warnings
