"""What the driver hears from the cluster while attempts are in flight: the starts workers
announce (``STARTED_TOPIC``), and the workers the scheduler removes (each worker's own topic,
which the scheduler tells of its removal, pushed to the client at once: a lost worker is
noticed when the scheduler drops it, not when Dask gets round to running its task again).
A worker's topic carries nothing per task (the scheduler's ``all`` topic would carry every
gather): listening costs nothing while nothing is lost.

A client keeps one handler a topic, so one ``Hearing`` per client serves every backend on it.
"""

from __future__ import annotations

import asyncio
import functools
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from subplans.cluster.handover import STARTED_TOPIC

# distributed's types are loose and partly untyped: its objects are ``Any`` here.

__all__ = ["CLOSING", "Followed", "Hearing", "hearing"]

#: An alarm that is no worker: the backend is closing.
CLOSING = ""
#: How many tokens stopped before they were seen to start are remembered (``late``).
LATE_TOKENS = 1024


@dataclass(slots=True)
class Followed:
    """An attempt in flight: its Dask key, where it runs once known, who wants to hear of its
    start, and an alarm raised with the address of a removed worker that may have run it (or
    ``CLOSING``)."""

    key: str
    on_start: Callable[[int, str], None] | None
    claim: tuple[str, ...] | None
    alarm: asyncio.Future[str]
    worker: str | None = None
    pid: int | None = None

    def started(self, pid: int | None, worker: str) -> None:
        """Heard: it started on ``worker`` (``pid``: its command's; None for a function)."""
        self.worker = worker
        if self.pid is None and pid is not None:
            self.pid = pid
            if self.on_start is not None:
                self.on_start(pid, worker)

    def alert(self, reason: str) -> None:
        if not self.alarm.done():
            self.alarm.set_result(reason)


class Hearing:
    """The attempts in flight of every backend on one client, and the handlers that update them."""

    def __init__(self, client: Any) -> None:
        self._client = weakref.ref(client)
        #: The workers whose topic is heard.
        self.workers: set[str] = set()
        self.listeners: list[dict[str, Followed]] = []
        #: Tokens stopped while nobody knew where they ran: a start heard for one is stopped
        #: (through the callback) at once.
        self.late: dict[str, Callable[[str], None]] = {}

    def hear(self, workers: Iterable[str]) -> None:
        """Hear of the removal of each of ``workers`` (subscribed once each)."""
        client = self._client()
        for worker in workers:
            if worker not in self.workers and client is not None:
                self.workers.add(worker)
                client.subscribe_topic(worker, functools.partial(self.worker_event, worker))

    def stop_if_started(self, token: str, stop: Callable[[str], None]) -> None:
        """Call ``stop(worker)`` if a start of ``token`` is heard from now on."""
        self.late[token] = stop
        while len(self.late) > LATE_TOKENS:
            del self.late[next(iter(self.late))]

    def started(self, event: tuple[float, dict[str, Any]]) -> None:
        message = event[1]
        token = message["token"]
        self.hear([message["worker"]])
        for followed in self.listeners:
            found = followed.get(token)
            if found is not None:
                found.started(message["pid"], message["worker"])
                return
        stop = self.late.pop(token, None)
        if stop is not None:
            stop(message["worker"])

    def worker_event(self, worker: str, event: tuple[float, Any]) -> None:
        """An event of ``worker``'s topic: its removal fails the attempts that ran there."""
        message = event[1]
        if not isinstance(message, dict) or message.get("action") != "remove-worker":
            return
        keys = set(message.get("processing-tasks") or ())
        for followed in self.listeners:
            for attempt in followed.values():
                if attempt.worker == worker or (attempt.worker is None and attempt.key in keys):
                    attempt.alert(worker)


_HEARINGS: weakref.WeakKeyDictionary[Any, Hearing] = weakref.WeakKeyDictionary()


def hearing(client: Any, followed: dict[str, Followed]) -> Hearing:
    """The ``Hearing`` of ``client`` (subscribed on first use), with ``followed`` heard."""
    found = _HEARINGS.get(client)
    if found is None:
        found = _HEARINGS[client] = Hearing(client)
        client.subscribe_topic(STARTED_TOPIC, found.started)
    found.listeners.append(followed)
    return found
