"""Helpers for tests of real processes: is one still alive, the live members of a process
group, and waiting in an event loop.

``alive`` reads ``/proc`` itself rather than through ``subplans.execution.procfs``: the tests
check the package's reading of processes, they do not rest on it. ``group_members`` reads
through ``procfs.process_table`` on purpose: ``test_process`` checks that reading with it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from subplans.execution.procfs import process_table


def alive(pid: int) -> bool:
    """True while ``pid`` names a live process (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")
    except (FileNotFoundError, ProcessLookupError):
        return False


def group_members(pgid: int) -> list[int]:
    """The live processes of group ``pgid``, zombies left out (``ProcessInfo.live``), in pid
    order."""
    return sorted(pid for pid, found in process_table().items() if found.pgid == pgid)


async def eventually(predicate: Callable[[], object], timeout: float = 5.0) -> None:
    """Poll ``predicate`` each tick, letting the event loop run, until it holds; fail after
    ``timeout`` seconds (``TimeoutError``). ``conftest.wait_until`` is for synchronous tests."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)
