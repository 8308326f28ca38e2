"""The reads a command's end spares (#10): the pids of reaped leaders that the pid cycle proves
name no process, and ``/proc/loadavg`` and ``/proc/stat`` read through descriptors kept open.
Whatever is spared, a leftover is still found. Real processes throughout."""

from __future__ import annotations

import asyncio
import os
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from subplans.execution import finding, process, procfs
from subplans.execution.finding import Family, Leader
from subplans.execution.process import ProcessGroups, run_command
from subplans.execution.procfs import ProcessInfo, Window, forks_so_far, read_process
from subplans.execution.spawning import Child
from subplans.execution.stopping import Stopping

from .process_helpers import alive

#: Carried by the processes of ``marked_session`` (our own value: no other test's match).
MARK_VALUE = os.urandom(4).hex()
MARK = f"FINDING_WINDOW_MARK={MARK_VALUE}".encode()


@pytest.fixture
def marked_session() -> Iterator[tuple[Window, int, int]]:
    """A moment, then a shell leading a session of its own and a ``sleep`` in that session,
    both carrying ``MARK``: the moment and their pids (the shell's is the session's id)."""
    since = Window.now()
    assert since is not None
    env = {"PATH": os.environ["PATH"], "FINDING_WINDOW_MARK": MARK_VALUE}
    with subprocess.Popen(
        ["sh", "-c", "sleep 301 & echo $!; exec sleep 302"],
        stdout=subprocess.PIPE,
        env=env,
        start_new_session=True,
    ) as leader:
        assert leader.stdout is not None
        member = int(leader.stdout.readline())
        yield since, leader.pid, member
        os.kill(member, signal.SIGKILL)
        leader.kill()


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every pid ``Family.members`` reads from now on, in order."""
    seen: list[int] = []

    def reading(pid: int) -> ProcessInfo | None:
        seen.append(pid)
        return read_process(pid)

    monkeypatch.setattr(finding, "read_process", reading)
    return seen


def test_a_reaped_pid_in_both_windows_is_not_read_and_its_session_is_another_familys(
    marked_session: tuple[Window, int, int], reads: list[int]
) -> None:
    since, leader, member = marked_session
    family = Family(marker=(MARK,), since=since)
    assert {leader, member} <= set(family.members())

    # Said to be reaped, created after a fork count whose window has not gone round: its pid
    # named it alone, so it is not read, and what lives in its session is another family's.
    reads.clear()
    found = family.members(reaped={leader: since.forks}.get)

    assert leader not in reads
    assert member in reads
    assert leader not in found
    assert member not in found


@pytest.mark.parametrize("which", ["the family's", "the process's own"])
def test_a_reaped_pid_is_read_once_either_window_may_have_gone_round(
    marked_session: tuple[Window, int, int], which: str
) -> None:
    since, leader, member = marked_session
    round_ago = since.forks - procfs.pid_max()
    if which == "the family's":
        family = Family(marker=(MARK,), since=Window(since.last_pid, round_ago))
        forks = since.forks
    else:
        family, forks = Family(marker=(MARK,), since=since), round_ago

    found = family.members(reaped={leader: forks}.get)

    assert {leader, member} <= set(found)


def test_nothing_is_skipped_when_no_pid_cycle_proves_anything(
    marked_session: tuple[Window, int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    since, leader, member = marked_session
    monkeypatch.setattr(procfs, "pid_max", lambda: 0)  # every window may have gone round

    found = Family(marker=(MARK,), since=since).members(reaped={leader: since.forks}.get)

    assert {leader, member} <= set(found)


def test_a_root_created_before_the_window_is_read_whatever_is_said_of_it(
    marked_session: tuple[Window, int, int], reads: list[int]
) -> None:
    _, leader, _ = marked_session
    found = read_process(leader)
    assert found is not None
    later = Window.now()  # begins after the leader: its pid is not among those looked at
    assert later is not None
    family = Family((Leader(leader, found.start_time),), since=later)

    family.members(reaped={leader: later.forks}.get)

    # Not among the window's pids: nothing proves it was handed out in the window.
    assert leader in reads


def test_a_pid_that_is_not_said_to_be_reaped_is_read(
    marked_session: tuple[Window, int, int],
) -> None:
    since, leader, member = marked_session

    found = Family(marker=(MARK,), since=since).members(reaped={leader + 10**6: 0}.get)

    assert {leader, member} <= set(found)


# --- what a run's groups know of each other ---------------------------------------------------


def nothing() -> Stopping:
    return Stopping(dict, grace=0)


async def reaped_child(argv: list[str]) -> Child:
    child = Child(subprocess.Popen(argv), asyncio.get_running_loop())
    await child.exited
    return child


async def test_neighbours_skip_only_leaders_not_reaped_and_remember_the_reaped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(process, "_REAPED_KEPT", 2)
    groups = ProcessGroups()
    own = Child(subprocess.Popen(["sleep", "301"]), asyncio.get_running_loop())
    running = Child(subprocess.Popen(["sleep", "301"]), asyncio.get_running_loop())
    try:
        ended = [await reaped_child(["true"]) for _ in range(3)]
        for forks, child in enumerate([own, running, *ended], start=100):
            groups.register(child.pid, "x", nothing())
            groups.lead(child, forks)
        groups.starting.add(4_000_000)
        neighbours = groups.neighbours(own, 100)

        # Not reaped: each pid names its leader, whose session is its own.
        assert running.pid in neighbours
        assert 4_000_000 in neighbours
        assert own.pid not in neighbours  # its own session is never another's
        assert (neighbours.reaped(own.pid), neighbours.reaped(running.pid)) == (None, None)
        # Reaped, still registered: no longer excluded as such; the fork count says when.
        assert [pid in neighbours for pid in (c.pid for c in ended)] == [False] * 3
        assert [neighbours.reaped(c.pid) for c in ended] == [102, 103, 104]

        for child in ended:
            groups.unregister(child.pid)
        # The last two are remembered (``_REAPED_KEPT``): the first is read again.
        assert [neighbours.reaped(c.pid) for c in ended] == [None, 103, 104]
        assert neighbours.reaped(12_345_678) is None
    finally:
        for child in (own, running):
            os.kill(child.pid, signal.SIGKILL)  # not reaped yet: the pid is still its own
            await child.exited
    assert neighbours.reaped(own.pid) is None  # reaped now, but its own leader is always read
    groups.unregister(running.pid)  # reaped: remembered too
    assert neighbours.reaped(running.pid) == 101


async def test_a_group_registered_without_a_leader_is_excluded_as_before() -> None:
    groups = ProcessGroups()
    own = await reaped_child(["true"])
    groups.register(12_345_678, "registered by hand", nothing())

    neighbours = groups.neighbours(own, forks_so_far())

    assert 12_345_678 in neighbours
    assert "12345678" not in neighbours
    assert neighbours.reaped(12_345_678) is None


async def test_a_commands_end_skips_later_leaders_and_still_stops_its_leftover(
    tmp_path: Path, reads: list[int]
) -> None:
    """Other commands start and end while the first runs; as it ends, it leaves a daemon in a
    session of its own (the marker kept). Its end reads none of the later leaders' pids (its
    own leader's it reads) and stops the daemon."""
    gate = tmp_path / "gate"
    os.mkfifo(gate)
    groups = ProcessGroups()
    env = {**os.environ, "SUBPLANS_RUN_ID": "window", "SUBPLANS_SUBPLAN": "first"}
    pgid: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    first = asyncio.create_task(
        run_command(
            f"read _ < {shlex.quote(str(gate))}; setsid sleep 301 & echo $! > daemon",
            log_file=tmp_path / "first.log",
            cwd=tmp_path,
            env=env,
            groups=groups,
            on_start=pgid.set_result,
            cancel_grace=5,
        )
    )
    leader = await pgid
    later = []
    for index in range(3):
        env["SUBPLANS_SUBPLAN"] = f"later-{index}"
        result = await run_command(
            ["true"], log_file=tmp_path / f"{index}.log", env=env, groups=groups
        )
        later.append(result.pid)
    reads.clear()

    await asyncio.to_thread(gate.write_text, "go\n")
    await first

    daemon = int((tmp_path / "daemon").read_text())
    stopped = not alive(daemon)
    if not stopped:
        os.kill(daemon, signal.SIGKILL)  # a failed test leaves nothing behind
    assert stopped
    assert daemon in reads
    assert set(reads).isdisjoint(later)  # each pid named its leader alone
    assert leader in reads  # its own is read: a pid handed out again is not taken for it


# --- /proc/loadavg and /proc/stat through descriptors kept open --------------------------------


def test_window_now_reads_afresh_once_a_kept_descriptor_reads_another_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As if the descriptor kept for /proc/stat had been closed and its number reused."""
    other = tmp_path / "other"
    other.write_text("not /proc/stat\n")
    reused = {
        "/proc/loadavg": os.open("/proc/loadavg", os.O_RDONLY),
        "/proc/stat": os.open(other, os.O_RDONLY),
    }
    monkeypatch.setattr(procfs, "_kept", dict(reused))
    try:
        first = Window.now()
        assert first is not None
        assert procfs._kept == {}  # forgotten (not closed: the numbers may be another's)
        second = Window.now()  # kept afresh
        assert second is not None
        assert second.forks >= first.forks > 0
        assert sorted(procfs._kept) == ["/proc/loadavg", "/proc/stat"]
    finally:
        for fd in [*reused.values(), *procfs._kept.values()]:
            os.close(fd)


def test_read_again_reads_a_long_file_whole_and_survives_a_closed_descriptor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(procfs, "_kept", {})
    long = tmp_path / "long"
    long.write_bytes(b"x" * (procfs._CHUNK + 10))

    assert procfs._read_again(str(long)) == long.read_bytes()
    assert procfs._read_again(str(tmp_path / "missing")) is None

    os.close(procfs._kept.pop(str(long)))
    short = tmp_path / "short"
    short.write_bytes(b"short")
    assert procfs._read_again(str(short)) == b"short"
    os.close(procfs._kept[str(short)])  # closed under it: read afresh
    assert procfs._read_again(str(short)) == b"short"


def test_a_thread_of_a_process_in_the_window_is_not_a_process_of_its_own() -> None:
    """/proc/<tid> can be read though it is not listed: the window's range reads it."""
    window = Window.now()
    env = {**os.environ, "SUBPLANS_RUN_ID": "threads", "SUBPLANS_SUBPLAN": "one"}
    script = (
        "import threading, sys; stop = threading.Event();"
        "t = threading.Thread(target=stop.wait); t.start();"
        "print(t.native_id, flush=True); sys.stdin.read(); stop.set()"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script],
        env=env,
        start_new_session=True,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert child.stdout is not None
        thread = int(child.stdout.readline())
        marker = (b"SUBPLANS_RUN_ID=threads", b"SUBPLANS_SUBPLAN=one")
        found = Family(marker=marker, since=window).members()
        assert read_process(thread) is None  # a thread, not a process
        assert list(found) == [child.pid]
    finally:
        child.kill()
        child.communicate()
