"""Shared test helpers: event recorders and gated subplans that reach a known interleaving."""

from __future__ import annotations

import asyncio
import inspect
import io
import logging
import os
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from rich.console import Console

from subplans import Event, EventBus, SubplanExecutionState, SubplanStateChanged

T = TypeVar("T")


class Recorder:
    """Records every event and checks the running count against a cap as it goes."""

    def __init__(self, bus: EventBus) -> None:
        self.events: list[Event] = []
        self.running = 0
        self.peak_running = 0
        bus.subscribe(self)

    def __call__(self, event: Event) -> None:
        self.events.append(event)
        if isinstance(event, SubplanStateChanged):
            if event.state is SubplanExecutionState.RUNNING:
                self.running += 1
                self.peak_running = max(self.peak_running, self.running)
            elif event.previous is SubplanExecutionState.RUNNING:
                self.running -= 1

    def states(self, subplan_id: str) -> list[SubplanExecutionState]:
        """Every state ``subplan_id`` went through, in order."""
        return [
            e.state
            for e in self.events
            if isinstance(e, SubplanStateChanged) and e.subplan_id == subplan_id
        ]

    def of(self, kind: type[Any]) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]


@pytest.fixture
def bus() -> EventBus:
    return EventBus()


@pytest.fixture
def recorder(bus: EventBus) -> Recorder:
    return Recorder(bus)


def returning(value: Any) -> Callable[[], Awaitable[Any]]:
    async def run() -> Any:
        await asyncio.sleep(0)
        return value

    return run


def raising(error: BaseException) -> Callable[[], Awaitable[Any]]:
    async def run() -> Any:
        await asyncio.sleep(0)
        raise error

    return run


def waiting(
    gate: asyncio.Event, started: asyncio.Event | None = None
) -> Callable[[], Awaitable[str]]:
    """A subplan that signals ``started`` and then waits for ``gate``."""

    async def run() -> str:
        if started is not None:
            started.set()
        await gate.wait()
        return "opened"

    return run


def no_tasks_left() -> bool:
    """True when the only task alive is the test's own."""
    return asyncio.all_tasks() == {asyncio.current_task()}


def wait_until(
    predicate: Callable[[], T],
    what: str | None = None,
    *,
    timeout: float = 10.0,
    interval: float = 0.01,
) -> T:
    """Poll ``predicate`` until it returns something truthy and return that; fail the test after
    ``timeout`` seconds, naming ``what`` was awaited (default: the predicate's source line).

    For synchronous tests whose condition another process or thread makes true."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what or _source(predicate)}")
        time.sleep(interval)
    return value


def _source(predicate: Callable[[], object]) -> str:
    try:
        return inspect.getsource(predicate).strip()
    except (OSError, TypeError):
        return repr(predicate)


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """For the command's tests: no user config, no user store; every run folder and the
    store land in ``tmp_path``."""
    monkeypatch.setenv("SUBPLANS_CONFIG", str(tmp_path / "config" / "config.yaml"))
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "COLUMNS", "SUBPLANS_STORE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


def command_env(**variables: str) -> dict[str, str]:
    """The environment of a ``subplans`` child process: ours without anything that makes Rich
    see a terminal and without a user store, plus ``variables``."""
    found = {
        k: v
        for k, v in os.environ.items()
        if k
        not in {"FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "COLUMNS", "SUBPLANS_STORE"}
    }
    found.update(variables)
    return found


@pytest.fixture
def console() -> Console:
    """A terminal in memory for what Rich renders: 100 columns, no colour; ``printed()`` reads
    it."""
    return Console(file=io.StringIO(), force_terminal=True, width=100, color_system=None)


def printed(console: Console) -> str:
    """Everything written to ``console`` (the ``console`` fixture) so far."""
    assert isinstance(console.file, io.StringIO)
    return console.file.getvalue()


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes a test starts; any still running at its end is killed (a failed test)."""
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


class LogRecords(logging.Handler):
    """The messages the ``subplans`` logger gave, debug ones included."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())

    def count(self, part: str) -> int:
        """How many messages have ``part`` in them."""
        return sum(part in message for message in self.messages)


@pytest.fixture
def records() -> Iterator[LogRecords]:
    """Every message of the ``subplans`` logger while the test runs (its level set to debug)."""
    handler = LogRecords()
    logger = logging.getLogger("subplans")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


#: The processes tests stopped with SIGSTOP (``stop``): any still stopped after its test is
#: killed, so that a failing test leaves no stopped writer behind.
_STOPPED: list[int] = []


def stop(pid: int) -> None:
    """SIGSTOP ``pid``; killed after the test if it is still stopped then."""
    _STOPPED.append(pid)
    os.kill(pid, signal.SIGSTOP)


@pytest.fixture(autouse=True)
def _no_process_left_stopped() -> Iterator[None]:
    yield
    while _STOPPED:
        pid = _STOPPED.pop()
        try:
            with open(f"/proc/{pid}/stat", "rb") as stat:
                stopped = stat.read().rsplit(b")", 1)[1].split()[0] in (b"T", b"t")
        except OSError:
            continue
        if stopped:
            os.kill(pid, signal.SIGKILL)
