"""Interrupts: the first signal cancels the run, a second SIGKILLs every process group."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from subplans.engine.clock import Clock
from subplans.execution.interrupts import SIGNALS, Interrupts
from subplans.execution.process import ProcessGroups


class FakeGroups(ProcessGroups):
    """Counts the kills asked for instead of killing."""

    def __init__(self, live: int) -> None:
        super().__init__()
        self.live = live
        self.kills = 0

    def kill_all(self) -> int:
        self.kills += 1
        return self.live


async def test_the_first_signal_cancels_the_run_and_says_so() -> None:
    task = asyncio.create_task(asyncio.sleep(30))
    told: list[str] = []
    interrupts = Interrupts(task, FakeGroups(2), notify=told.append)

    interrupts.handle(signal.SIGINT)

    with pytest.raises(asyncio.CancelledError, match=r"^interrupted by SIGINT$"):
        await task
    assert interrupts.interrupted
    assert interrupts.first is signal.SIGINT
    assert told == [
        "SIGINT: stopping; running subplans get SIGTERM, then SIGKILL after their cancel_grace "
        "(interrupt again to kill them now)"
    ]


async def test_a_second_signal_kills_every_process_group_at_once() -> None:
    task = asyncio.create_task(asyncio.sleep(30))
    groups = FakeGroups(2)
    told: list[str] = []
    interrupts = Interrupts(task, groups, notify=told.append)

    interrupts.handle(signal.SIGTERM)
    interrupts.handle(signal.SIGINT)
    groups.live = 1
    interrupts.handle(signal.SIGINT)

    assert groups.kills == 2
    assert told[1:] == [
        "SIGINT again: killed 2 process groups",
        "SIGINT again: killed 1 process group",
    ]
    assert repr(interrupts) == "<Interrupts 3 received, first SIGTERM, 0 live groups>"
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_without_notify_it_stays_quiet() -> None:
    task = asyncio.create_task(asyncio.sleep(30))
    interrupts = Interrupts(task, FakeGroups(0))
    assert repr(interrupts) == "<Interrupts 0 received, first none, 0 live groups>"

    interrupts.handle(signal.SIGINT)
    interrupts.handle(signal.SIGINT)

    assert task.cancelling() == 1
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_installed_handles_real_signals_and_restores_the_previous_handlers() -> None:
    loop = asyncio.get_running_loop()
    task = asyncio.create_task(asyncio.sleep(30))
    handled = asyncio.Event()
    interrupts = Interrupts(task, FakeGroups(0), notify=lambda _: handled.set())
    before = {sig: signal.getsignal(sig) for sig in SIGNALS}

    with interrupts.installed(loop):
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(handled.wait(), 5)

    assert interrupts.first is signal.SIGTERM
    # Not the defaults, which asyncio's own removal passes through: SIGTERM's kills (-15).
    assert {sig: signal.getsignal(sig) for sig in SIGNALS} == before
    assert SIGNALS == (signal.SIGINT, signal.SIGTERM)
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_what_is_left_of_the_grace_after_a_signal() -> None:
    # Regression: the run's end gave processes left by `call` functions a fresh cancel_grace
    # after the drain had used it up, so an interrupted run could outlive grace + 2 s.
    task = asyncio.create_task(asyncio.sleep(30))
    interrupts = Interrupts(task, FakeGroups(0))
    assert interrupts.grace_left(5.0) == 5.0  # not interrupted: all of it

    interrupts.handle(signal.SIGINT)
    assert interrupts.first_at is not None
    interrupts.first_at -= 3.0  # the drain used 3 s of it
    assert 0.0 < interrupts.grace_left(5.0) <= 2.0
    interrupts.first_at -= 10.0
    assert interrupts.grace_left(5.0) == 0.0  # used up: never negative

    interrupts.handle(signal.SIGINT)
    assert interrupts.grace_left(5.0) == 0.0  # a second signal: none left
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_the_grace_left_is_measured_on_the_clock_it_is_given() -> None:
    now = [100.0]
    task = asyncio.create_task(asyncio.sleep(30))
    interrupts = Interrupts(task, FakeGroups(0), clock=Clock(monotonic=lambda: now[0]))

    interrupts.handle(signal.SIGINT)
    now[0] += 3.0

    assert interrupts.first_at == 100.0
    assert interrupts.grace_left(5.0) == 2.0
    with pytest.raises(asyncio.CancelledError):
        await task
