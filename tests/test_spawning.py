"""Starting and reaping a command's leader (``spawning``), with and without pidfds, against real
processes; and the reads of ``/proc`` files larger than one read."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from subplans.engine.errors import CommandFailedError
from subplans.execution import procfs, spawning
from subplans.execution.process import run_command
from subplans.execution.spawning import Child, open_log, spawn, start

from .conftest import wait_until
from .process_helpers import eventually, group_members

# Both the shell and its background child ignore SIGTERM: only SIGKILL stops this group.
STUBBORN = "trap '' TERM; sleep 30 & sleep 30; wait"


@pytest.fixture
def no_pidfds(monkeypatch: pytest.MonkeyPatch) -> None:
    """A kernel without pidfds (before 5.3, or a seccomp filter that refuses them)."""

    def refused(pid: int, flags: int = 0) -> int:
        raise OSError(38, "Function not implemented")

    monkeypatch.setattr(os, "pidfd_open", refused)


@pytest.mark.usefixtures("no_pidfds")
async def test_without_pidfds_a_thread_reaps_each_command(tmp_path: Path) -> None:
    result = await run_command(["sh", "-c", "echo hi"], log_file=tmp_path / "ok.log")
    assert (result.exit_code, result.output_tail) == (0, "hi")

    with pytest.raises(CommandFailedError, match="exited with code 3"):
        await run_command(["sh", "-c", "exit 3"], log_file=tmp_path / "three.log")


@pytest.mark.usefixtures("no_pidfds")
async def test_without_pidfds_a_cancelled_command_is_stopped_whole(tmp_path: Path) -> None:
    started: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        run_command(
            STUBBORN,
            log_file=tmp_path / "stubborn.log",
            cancel_grace=0.1,
            on_start=started.set_result,
        )
    )
    pgid = await started
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert group_members(pgid) == []


async def test_a_child_reaped_elsewhere_fails_with_its_status_lost(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fd = os.open(tmp_path / "x.log", os.O_WRONLY | os.O_CREAT, 0o666)
    popen = await spawn(["true"], output=fd, cwd=None, env=None)
    child = Child(popen, asyncio.get_running_loop())
    os.waitpid(popen.pid, 0)  # behind its back, as a SIGCHLD handler or another watcher would

    with caplog.at_level(logging.WARNING, logger="subplans"):
        assert await child.exited == 255
    assert child.returncode == 255
    assert repr(child) == f"<Child {popen.pid} returncode=255>"
    assert f"unknown child process pid {popen.pid}" in caplog.text


async def test_a_child_is_reaped_even_when_its_exit_was_no_longer_awaited(tmp_path: Path) -> None:
    fd = os.open(tmp_path / "x.log", os.O_WRONLY | os.O_CREAT, 0o666)
    popen = await spawn(["true"], output=fd, cwd=None, env=None)
    child = Child(popen, asyncio.get_running_loop())
    child.exited.cancel()  # whoever awaited it directly was cancelled

    await eventually(lambda: child.returncode is not None)
    assert child.returncode == 0
    assert procfs.read_process(child.pid) is None


@pytest.mark.usefixtures("no_pidfds")
def test_without_pidfds_a_child_outliving_its_loop_is_still_reaped() -> None:
    release_r, release_w = os.pipe()
    # The child waits until it is let go: its loop is closed while it runs.
    popen = subprocess.Popen(["sh", "-c", "read line"], stdin=release_r, start_new_session=True)
    os.close(release_r)
    loop = asyncio.new_event_loop()
    child = Child(popen, loop)
    loop.close()
    waiting = next(t for t in threading.enumerate() if t.name == f"subplans wait {child.pid}")
    os.write(release_w, b"go\n")
    os.close(release_w)
    waiting.join(timeout=30)

    assert not waiting.is_alive()
    assert procfs.read_process(child.pid) is None  # reaped, although nobody heard of it
    assert not child.exited.done()
    assert child.returncode == 0


def test_a_start_without_an_event_loop_is_refused_and_closes_the_log(tmp_path: Path) -> None:
    fd = os.open(tmp_path / "x.log", os.O_WRONLY | os.O_CREAT, 0o666)
    with pytest.raises(RuntimeError, match="no running event loop"):
        spawn(["true"], output=fd, cwd=None, env=None)
    with pytest.raises(OSError, match="Bad file descriptor"):
        os.fstat(fd)


def test_an_environment_larger_than_one_read_is_read_whole() -> None:
    big = "x" * 100_000
    child = subprocess.Popen(["sleep", "30"], env={"BIG": big, "LAST": "here"})
    try:
        # Until it has exec'd, the fork shows the environment it came from.
        found = wait_until(lambda: _after_exec(child.pid), "sleep's own environment")
    finally:
        child.kill()
        child.wait()
    assert found is not None
    assert f"BIG={big}".encode() in found
    assert b"LAST=here" in found


def _after_exec(pid: int) -> list[bytes] | None:
    found = procfs.environment(pid)
    return found if found is not None and b"LAST=here" in found else None


def test_a_forked_child_starts_commands_too(tmp_path: Path) -> None:
    # The parent's spawner threads exist (and are idle) before the fork; the child has none.
    assert asyncio.run(run_command(["true"], log_file=tmp_path / "parent.log")).exit_code == 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: forking with threads
        pid = os.fork()
    if pid == 0:  # pragma: no cover - the child: coverage does not follow it
        signal.signal(signal.SIGALRM, signal.SIG_DFL)  # not pytest-timeout's handler
        signal.alarm(20)  # a hang ends the child by SIGALRM, which the parent sees
        try:
            result = asyncio.run(run_command(["true"], log_file=tmp_path / "child.log"))
            os._exit(0 if result.exit_code == 0 else 1)
        except BaseException:
            os._exit(2)
    ends: list[int] = []

    def ended() -> bool:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            ends.append(os.waitstatus_to_exitcode(status))
        return bool(done)

    wait_until(ended, "the forked child's end", timeout=30)
    assert ends == [0]


@pytest.mark.parametrize(
    ("command", "status"), [("exit 7", 7), ("kill -TERM $$", -15), ("kill -KILL $$", -9)]
)
async def test_the_loop_reaps_through_the_pidfd_with_the_status_subprocess_gives(
    tmp_path: Path, command: str, status: int
) -> None:
    output = os.open(tmp_path / "log", os.O_WRONLY | os.O_CREAT)
    popen = await spawn(["sh", "-c", command], output=output, cwd=None, env=None)
    child = Child(popen, asyncio.get_running_loop())
    assert await child.exited == status == child.returncode


async def test_without_waitid_on_pidfds_the_loop_reaps_by_pid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refused(*args: object) -> None:
        raise OSError(22, "Invalid argument")  # Linux 5.3: pidfds, but no P_PIDFD for waitid

    monkeypatch.setattr(os, "waitid", refused)
    output = os.open(tmp_path / "log", os.O_WRONLY | os.O_CREAT)
    popen = await spawn(["sh", "-c", "exit 3"], output=output, cwd=None, env=None)
    assert await Child(popen, asyncio.get_running_loop()).exited == 3


@pytest.mark.usefixtures("no_pidfds")
async def test_without_pidfds_a_child_reaped_elsewhere_fails_with_its_status_lost(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fd = os.open(tmp_path / "x.log", os.O_WRONLY | os.O_CREAT, 0o666)
    popen = await spawn(["true"], output=fd, cwd=None, env=None)
    os.waitpid(popen.pid, 0)  # before the waiting thread could: it finds no child
    with caplog.at_level(logging.WARNING, logger="subplans"):
        child = Child(popen, asyncio.get_running_loop())
        assert await child.exited == 255
    assert f"unknown child process pid {popen.pid}" in caplog.text


async def test_starts_that_end_while_the_loop_is_busy_wake_it_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loop = asyncio.get_running_loop()
    wakes: list[object] = []
    real = loop.call_soon_threadsafe

    def counted(callback: Callable[..., object], *args: object, **kwargs: Any) -> Any:
        wakes.append(callback)
        return real(callback, *args, **kwargs)

    monkeypatch.setattr(loop, "call_soon_threadsafe", counted)
    starts = [start(["true"], log_file=tmp_path / f"{n}.log", cwd=None, env=None) for n in range(6)]
    # The loop's thread stays busy until every start has ended: one wake-up hands them all over.
    wait_until(lambda: len(spawning._ended[loop].ended) == 6, "every start to end")
    begun = await asyncio.gather(*starts)
    assert [b.popen.wait() for b in begun if b.popen is not None] == [0] * 6
    assert len(wakes) == 1


async def test_a_log_that_exists_is_appended_to_from_its_end(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_text("before\n")
    fd, offset = open_log(log, attempt=2)
    os.write(fd, b"after\n")
    os.close(fd)
    assert offset == len(log.read_text()) - len("after\n")
    assert log.read_text().startswith("before\n--- attempt 2, started ")


def test_commands_read_dev_null_as_their_stdin(tmp_path: Path) -> None:
    async def main() -> int:
        log = tmp_path / "out.log"
        begun = await start(
            ["sh", "-c", "cat; ls -l /proc/self/fd/0"], log_file=log, cwd=None, env=None
        )
        assert begun.popen is not None
        return begun.popen.wait()

    assert asyncio.run(main()) == 0
    assert (tmp_path / "out.log").read_text().rstrip().endswith("/dev/null")


def test_a_finished_loop_is_not_kept_for_its_starts(tmp_path: Path) -> None:
    """What hands a loop its ended starts is kept under that loop, weakly: a run's loop is freed
    once the run is over (it was kept for ever, as the value held its own key)."""
    import gc
    import weakref

    async def main() -> int:
        begun = await start(["true"], log_file=tmp_path / "a.log", cwd=None, env=None)
        assert begun.popen is not None
        return begun.popen.wait()

    loops: list[weakref.ref[asyncio.AbstractEventLoop]] = []
    for _ in range(3):
        loop = asyncio.new_event_loop()
        try:
            assert loop.run_until_complete(main()) == 0
            assert loop in spawning._ended
        finally:
            loop.close()
        loops.append(weakref.ref(loop))
        del loop
    gc.collect()
    assert [ref() for ref in loops] == [None, None, None]
