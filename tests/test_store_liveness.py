"""Run owners and their liveness, the run lock, leftover process groups and cancel, with real
processes: a killed owner shows as interrupted, a second driver is refused, leftovers are
stopped, and a writer killed mid-write leaves a sound database."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sqlite3
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from subplans.engine.events import SubplanProcessStarted, SubplanStateChanged
from subplans.engine.states import SubplanExecutionState
from subplans.execution.procfs import command_line, process_table
from subplans.execution.stopping import send_signal
from subplans.store import (
    Leftover,
    Liveness,
    ProcessIdentity,
    RunBusyError,
    RunLock,
    RunNotFoundError,
    RunNotLiveError,
    RunStore,
    StoppedGroup,
    StoreError,
    cancel_run,
    find_leftovers,
    owner_liveness,
    stop_leftover_groups,
)
from subplans.store.liveness import (
    boot_id,
    check_run_id,
    live_process_groups,
    process_start_time,
)
from subplans.store.writer_lock import RunWriterLock

from .conftest import wait_until
from .process_helpers import group_members
from .store_support import (
    Child,
    gone_owner,
    manifest,
    open_store,
    other_host_owner,
    start_group,
    stop,
)

RUNNING = SubplanExecutionState.RUNNING
PENDING = SubplanExecutionState.PENDING


@pytest.fixture
def store(tmp_path: Path) -> Iterator[RunStore]:
    opened = open_store(tmp_path)
    yield opened
    opened.close()


# --- identities and liveness ----------------------------------------------------------------


def test_this_process_is_alive() -> None:
    me = ProcessIdentity.current()
    assert me.pid == os.getpid()
    assert me.host == socket.gethostname()
    assert me.boot_id == boot_id() != ""
    with open(f"/proc/{os.getpid()}/stat") as stat:
        assert me.start_time == int(stat.read().rsplit(")", 1)[1].split()[19])
    assert str(me) == f"process {me.pid} on {me.host}"
    assert owner_liveness(me) is Liveness.ALIVE


def test_an_owner_is_gone_when_its_pid_is_reused_or_the_machine_rebooted() -> None:
    me = ProcessIdentity.current()
    assert owner_liveness(gone_owner()) is Liveness.GONE
    assert owner_liveness(ProcessIdentity(me.pid, me.host, "another boot", me.start_time)) is (
        Liveness.GONE
    )


def test_an_owner_elsewhere_or_unrecorded_is_unknown() -> None:
    assert owner_liveness(other_host_owner()) is Liveness.UNKNOWN
    assert owner_liveness(None) is Liveness.UNKNOWN


def test_a_dead_or_zombie_owner_is_gone() -> None:
    with Child("print('ready', flush=True); import sys; sys.stdin.read()") as child:
        identity = ProcessIdentity(child.pid, socket.gethostname(), boot_id(), None)
        identity = ProcessIdentity(
            child.pid, identity.host, identity.boot_id, process_start_time(child.pid)
        )
        assert owner_liveness(identity) is Liveness.ALIVE
        child.process.kill()
        wait_until(lambda: owner_liveness(identity) is Liveness.GONE)  # a zombie: not reaped yet
        assert process_start_time(child.pid) is not None
        child.process.wait()
        assert owner_liveness(identity) is Liveness.GONE
        assert process_start_time(child.pid) is None


def test_live_process_groups_lists_our_own() -> None:
    groups = live_process_groups()
    assert os.getpid() in groups[os.getpgrp()]
    assert all(members == sorted(members) for members in groups.values())


@pytest.mark.parametrize("run_id", ["20261127-235721-a1b2c3", "r1", "a.b_c-d", "_x"])
def test_valid_run_ids(run_id: str) -> None:
    assert check_run_id(run_id) == run_id


@pytest.mark.parametrize("run_id", ["", ".", "..", "-r", "a/b", "a b", "x" * 201, 5])
def test_invalid_run_ids(run_id: object) -> None:
    with pytest.raises(ValueError, match=r"^run_id must be ASCII letters, digits, '-', '_' and"):
        check_run_id(run_id)  # type: ignore[arg-type]


# --- a killed owner: interrupted --------------------------------------------------------------

OWNER = """
    import sys
    from subplans.store import RunStore, PlanManifest
    store = RunStore.open(sys.argv[1])
    store.start_run("r1", PlanManifest(file="p.yaml", subplans=(("s/a", "s"), ("s/b", "s"))))
    store._db.execute("UPDATE subplans SET state = 'running' WHERE subplan_id = 's/a'")
    print("ready", flush=True)
    sys.stdin.read()
"""


def test_a_run_whose_owner_was_killed_is_interrupted(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with (
        Child(OWNER.replace("sys.argv[1]", repr(str(path)))) as child,
        RunStore.open(path, readonly=True) as store,
    ):
        run = store.get_run("r1")
        assert (run.status, run.owner.pid if run.owner else None) == ("running", child.pid)
        assert run.counts["running"] == 1
        assert child.kill() == -signal.SIGKILL
        run = store.get_run("r1")
        assert (run.status, run.recorded_status) == ("interrupted", "running")
        assert (run.counts["running"], run.counts["interrupted"]) == (0, 1)
        assert [r.status for r in store.list_runs()] == ["interrupted"]
        assert run.to_dict()["status"] == "interrupted"


# --- the run lock -----------------------------------------------------------------------------

HOLDER = """
    import sys
    from subplans.store import RunLock
    lock = RunLock(sys.argv[1], "r1")
    lock.acquire()
    print("ready", flush=True)
    sys.stdin.read()
"""


def test_a_second_process_is_refused_the_lock_until_the_holder_dies(tmp_path: Path) -> None:
    locks = tmp_path / "locks"
    with Child(HOLDER.replace("sys.argv[1]", repr(str(locks)))) as child:
        lock = RunLock(locks, "r1")
        expected = (
            f"run r1 is being driven by process {child.pid} on {socket.gethostname()}; wait for "
            "it to end, or stop it with `subplans cancel r1`"
        )
        with pytest.raises(RunBusyError, match=f"^{expected}$"):
            lock.acquire()
        assert not lock.held
        child.kill()
    with lock:
        assert lock.held
        assert (locks / "r1.lock").read_text() == f"{os.getpid()} {socket.gethostname()}\n"
    assert (locks / "r1.lock").read_text() == ""


def test_the_lock_is_exclusive_within_a_process_too(store: RunStore) -> None:
    first, second = store.lock("r1"), store.lock("r1")
    assert repr(first) == f"<RunLock run r1 free at {store.locks_folder / 'r1.lock'}>"
    first.acquire()
    assert repr(first) == f"<RunLock run r1 held at {store.locks_folder / 'r1.lock'}>"
    with pytest.raises(RunBusyError, match=rf"^run r1 is being driven by process {os.getpid()} "):
        second.acquire()
    with pytest.raises(RuntimeError, match=r"^this RunLock is already held$"):
        first.acquire()
    first.release()
    with pytest.raises(RuntimeError, match=r"^this RunLock is not held$"):
        first.release()
    with second:
        pass


def test_a_refusal_without_a_holder_note_says_another_process(tmp_path: Path) -> None:
    import fcntl

    lock = RunLock(tmp_path, "r1")
    fd = os.open(tmp_path / "r1.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        with pytest.raises(RunBusyError, match=r"^run r1 is being driven by another process;"):
            lock.acquire()
    finally:
        os.close(fd)


def test_a_lock_folder_that_cannot_be_created_is_a_store_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(StoreError, match=r"^cannot create the lock .*r1\.lock: Not a directory$"):
        RunLock(tmp_path / "file" / "locks", "r1").acquire()


# --- leftover process groups ------------------------------------------------------------------


def record_groups(store: RunStore, run_id: str, groups: dict[str, int]) -> None:
    with store.recorder(run_id) as recorder:
        for subplan_id, pgid in groups.items():
            recorder.handle(SubplanStateChanged(subplan_id, PENDING, RUNNING, 1))
            recorder.handle(SubplanProcessStarted(subplan_id, pgid, f"/logs/{subplan_id}.log"))


def test_leftover_groups_of_a_dead_owner_get_sigterm_then_sigkill(store: RunStore) -> None:
    store.start_run("r1", manifest("s/polite", "s/stubborn", "s/gone"), owner=gone_owner())
    polite = start_group("exec sleep 30")
    # Both the shell and its background child ignore SIGTERM: only SIGKILL stops them.
    stubborn = start_group("trap '' TERM; sleep 30 & sleep 30; wait")
    finished = start_group("true")
    finished.wait()
    try:
        wait_until(lambda: len(group_members(stubborn.pid)) == 3)
        record_groups(
            store,
            "r1",
            {"s/polite": polite.pid, "s/stubborn": stubborn.pid, "s/gone": finished.pid},
        )
        # Time stands still until the polite group is gone, then the grace is over at once.
        readings = iter([0.0, 0.0])  # the first look (the grace starts), a second within it

        def clock() -> float:
            return next(readings, 0.0 if group_members(polite.pid) else 100.0)

        stopped = stop_leftover_groups(store, "r1", grace=5.0, clock=clock)
        assert stopped == [
            StoppedGroup("s/polite", polite.pid, (polite.pid,), "SIGTERM"),
            StoppedGroup("s/stubborn", stubborn.pid, stopped[1].members, "SIGKILL"),
        ]
        assert len(stopped[1].members) == 3
        assert polite.wait() == -signal.SIGTERM
        assert stubborn.wait() == -signal.SIGKILL
        assert group_members(polite.pid) == group_members(stubborn.pid) == []
        assert store.process_groups("r1") == []
        assert stop_leftover_groups(store, "r1") == []
    finally:
        stop(polite)
        stop(stubborn)


def test_a_group_that_never_reached_the_store_is_found_by_its_environment(
    store: RunStore,
) -> None:
    """Pins: a command started just before its run was killed had no recorded group, so resume
    could run that subplan again beside it."""
    store.start_run("r1", manifest("s/late", "s/other"), owner=gone_owner())
    env = {**os.environ, "SUBPLANS_RUN_ID": "r1", "SUBPLANS_SUBPLAN": "s/late"}
    late = subprocess.Popen(["/bin/sh", "-c", "exec sleep 30"], start_new_session=True, env=env)
    other_env = {**os.environ, "SUBPLANS_RUN_ID": "r10", "SUBPLANS_SUBPLAN": "s/other"}
    other = subprocess.Popen(
        ["/bin/sh", "-c", "exec sleep 30"], start_new_session=True, env=other_env
    )
    try:
        # Until it has exec'd, a child's environment is still ours, without the marker.
        wait_until(
            lambda: all(
                b"SUBPLANS_SUBPLAN=" in Path(f"/proc/{child.pid}/environ").read_bytes()
                for child in (late, other)
            )
        )
        (stopped,) = stop_leftover_groups(store, "r1", grace=5.0)
        assert stopped == StoppedGroup("s/late", late.pid, (late.pid,), "SIGTERM")
        assert late.wait() == -signal.SIGTERM
        assert group_members(other.pid) == [other.pid]  # another run's: left alone
    finally:
        stop(late)
        stop(other)


def test_a_group_whose_leader_is_gone_holds_only_what_carries_the_runs_marker(
    store: RunStore,
) -> None:
    """Pins: a recorded leader that no longer existed made its whole session id the run's.
    Once that id was handed out again (to a daemon that called setsid, and whose leader then
    exited), `status` listed the daemon's processes as leftovers, and `cancel` and `resume`
    sent them SIGTERM. Nothing proves a session without its leader is still the run's: only
    what carries the run's marker is."""
    run_id = f"r-{uuid.uuid4().hex[:8]}"  # a marker no other test's processes carry
    store.start_run(run_id, manifest("s/a"), owner=gone_owner())
    script = f"sleep 30 & echo $!; SUBPLANS_RUN_ID={run_id} sleep 30 & echo $!; read x; true"
    found: list[int] = []
    try:
        with subprocess.Popen(
            ["setsid", "sh", "-c", script],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={"PATH": os.environ["PATH"]},
        ) as leader:
            assert leader.stdout is not None
            found += [int(leader.stdout.readline()), int(leader.stdout.readline())]
            # A child forked but not yet exec'd has neither its command nor its environment.
            wait_until(lambda: all(command_line(pid) == "sleep 30" for pid in found))
            record_groups(store, run_id, {"s/a": leader.pid})  # its start time, as it runs
        plain, ours = found
        assert leader.returncode == 0

        assert find_leftovers(store, run_id) == [Leftover("s/a", ours, leader.pid, "sleep 30")]
        stopped = stop_leftover_groups(store, run_id, grace=5.0)

        assert stopped == [StoppedGroup("s/a", leader.pid, (ours,), "SIGTERM")]
        wait_until(lambda: process_table(found).keys() == {plain})
    finally:
        for pid in found:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_a_reused_group_id_is_left_alone(store: RunStore, caplog: pytest.LogCaptureFixture) -> None:
    store.start_run("r1", manifest("s/a"), owner=gone_owner())
    stranger = start_group("exec sleep 30")
    try:
        record_groups(store, "r1", {"s/a": stranger.pid})
        store._db.execute("UPDATE subplans SET pgid_start = pgid_start - 1")  # another process
        with caplog.at_level(logging.INFO, logger="subplans"):
            assert stop_leftover_groups(store, "r1", grace=0) == []
        assert f"process group {stranger.pid} of subplan s/a was reused" in caplog.text
        assert group_members(stranger.pid) == [stranger.pid]
        assert store.process_groups("r1") == []
    finally:
        stop(stranger)


def test_after_a_reboot_recorded_groups_are_only_forgotten(store: RunStore) -> None:
    owner = gone_owner()
    store.start_run("r1", manifest("s/a"), owner=ProcessIdentity(1, owner.host, "old boot", 1))
    bystander = start_group("exec sleep 30")
    try:
        record_groups(store, "r1", {"s/a": bystander.pid})
        assert stop_leftover_groups(store, "r1") == []
        assert group_members(bystander.pid) == [bystander.pid]
        assert store.process_groups("r1") == []
    finally:
        stop(bystander)


def test_a_group_that_survives_sigkill_is_given_up_on(
    store: RunStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    store.start_run("r1", manifest("s/a"), owner=gone_owner())
    unkillable = start_group("exec sleep 30")
    # Signals that never arrive: it lives on, and is given up on at once.
    monkeypatch.setattr(signal, "pidfd_send_signal", lambda fd, sig: None)
    try:
        record_groups(store, "r1", {"s/a": unkillable.pid})
        with caplog.at_level(logging.WARNING, logger="subplans"):
            (stopped,) = stop_leftover_groups(store, "r1", grace=0.0, settle_timeout=0.0)
        assert stopped.signal == "SIGKILL"
        assert f"processes [{unkillable.pid}] survived SIGKILL for 0.0 s; giving up" in caplog.text
    finally:
        stop(unkillable)


def test_the_groups_of_a_live_run_are_its_own(store: RunStore) -> None:
    store.start_run("r1", manifest("s/a"))
    with pytest.raises(RunBusyError, match=r"^run r1 is still being driven by process \d+ on "):
        stop_leftover_groups(store, "r1")
    store.start_run("r2", manifest("s/a"), owner=other_host_owner(), concurrent=True)
    with pytest.raises(RunBusyError, match=r"^run r2 is driven from not-.*; its processes cannot"):
        stop_leftover_groups(store, "r2")
    store._db.execute("UPDATE runs SET owner_pid = NULL WHERE id = 'r2'")
    with pytest.raises(RunBusyError, match=r"^run r2 is driven by an unknown process; its"):
        stop_leftover_groups(store, "r2")
    with pytest.raises(RunNotFoundError):
        stop_leftover_groups(store, "r9")
    with pytest.raises(ValueError, match=r"^grace must be >= 0, got -1$"):
        stop_leftover_groups(store, "r1", grace=-1)


def test_a_finished_runs_stray_groups_are_stopped_even_if_its_owner_lives(
    store: RunStore,
) -> None:
    store.start_run("r1", manifest("s/a"))
    stray = start_group("exec sleep 30")
    try:
        record_groups(store, "r1", {"s/a": stray.pid})
        store.finish_run("r1", "failed")
        (stopped,) = stop_leftover_groups(store, "r1", grace=5.0)
        assert stopped.pgid == stray.pid
        assert stray.wait() == -signal.SIGTERM
    finally:
        stop(stray)


# --- cancel from another process --------------------------------------------------------------

CANCELLABLE = """
    import signal, sys
    from subplans.store import RunStore, PlanManifest
    store = RunStore.open(sys.argv[1])
    store.start_run("r1", PlanManifest(file="p.yaml"))
    def stop(signum, frame):
        print(signal.Signals(signum).name, flush=True)
        sys.exit(0)
    signal.signal(signal.SIGTERM, stop)
    print("ready", flush=True)
    sys.stdin.read()
"""


def test_cancel_signals_the_live_owner(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with (
        Child(CANCELLABLE.replace("sys.argv[1]", repr(str(path)))) as child,
        RunStore.open(path) as store,
    ):
        owner = cancel_run(store, "r1")
        assert owner.pid == child.pid
        out, _ = child.finish()
        assert out == "SIGTERM\n"
        message = rf"^run r1 was interrupted: its process {child.pid} on .* is gone; resume"
        with pytest.raises(RunNotLiveError, match=message):
            cancel_run(store, "r1")


def test_cancel_refuses_runs_without_a_live_owner_here(store: RunStore) -> None:
    store.start_run("r1", manifest())
    store.finish_run("r1", "completed")
    with pytest.raises(RunNotLiveError, match=r"^run r1 has already ended \(completed\)$"):
        cancel_run(store, "r1")
    store.start_run("r2", manifest(), owner=other_host_owner())
    with pytest.raises(RunNotLiveError, match=r"^run r2 is driven on not-.*; cancel it there$"):
        cancel_run(store, "r2")
    store._db.execute("UPDATE runs SET owner_pid = NULL WHERE id = 'r2'")
    with pytest.raises(RunNotLiveError, match=r"^run r2 is driven by an unknown process; cancel"):
        cancel_run(store, "r2")
    store.start_run("r3", manifest(), owner=gone_owner(), concurrent=True)
    with pytest.raises(RunNotLiveError, match=r"^run r3 was interrupted: "):
        cancel_run(store, "r3")


def test_the_signal_never_reaches_a_process_that_reused_the_pid(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with Child("print('ready', flush=True); import sys; sys.stdin.read()") as child:
        real = ProcessIdentity(child.pid, socket.gethostname(), boot_id(), None)
        real = ProcessIdentity(real.pid, real.host, real.boot_id, process_start_time(child.pid))
        impostor = ProcessIdentity(real.pid, real.host, real.boot_id, (real.start_time or 0) - 1)
        assert not send_signal(impostor.pid, impostor.start_time, signal.SIGTERM)
        assert child.process.poll() is None

        def vanished(fd: int, sig: int) -> None:
            raise ProcessLookupError

        monkeypatch.setattr(signal, "pidfd_send_signal", vanished)
        assert not send_signal(real.pid, real.start_time, signal.SIGTERM)
        child.kill()
        assert not send_signal(real.pid, real.start_time, signal.SIGTERM)  # no such pid at all


# --- a writer killed mid-write ----------------------------------------------------------------

WRITER = """
    import sys
    from subplans.engine.events import SubplanStateChanged
    from subplans.engine.states import SubplanExecutionState as S
    from subplans.store import RunStore, PlanManifest
    store = RunStore.open(sys.argv[1])
    store.start_run("r1", PlanManifest(file="p.yaml"))
    recorder = store.recorder("r1", batch_delay=0, max_batch=50)
    print("ready", flush=True)
    i = 0
    while True:
        i += 1
        recorder.handle(SubplanStateChanged(f"s{i}", None, S.PENDING))
        recorder.handle(SubplanStateChanged(f"s{i}", S.PENDING, S.RUNNING, 1))
        recorder.handle(SubplanStateChanged(f"s{i}", S.RUNNING, S.COMPLETED, 1))
        if i % 100 == 0:
            recorder.flush_sync()
"""


def test_a_writer_killed_mid_write_leaves_a_sound_database(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with Child(WRITER.replace("sys.argv[1]", repr(str(path)))) as child:
        watcher = sqlite3.connect(path)

        def written() -> int:
            return int(watcher.execute("SELECT count(*) FROM events").fetchone()[0])

        wait_until(lambda: written() > 3000)
        watcher.close()
        assert child.kill() == -signal.SIGKILL
    # Its writer process outlives it, committing what it was handed: wait for it as a new
    # recorder of the run would (the run's writer lock), then read.
    lock = RunWriterLock(str(path), "r1")
    assert lock.wait(60.0) is None
    lock.close()
    with RunStore.open(path) as store:
        assert store.integrity_check() == []
        events = store.events("r1")
        assert len(events) > 3000
        assert [e.seq for e in events] == list(range(1, len(events) + 1))
        run = store.get_run("r1")
        assert run.status == "interrupted"
        # Every completed state has its event, in the same transaction.
        completed = store.completed_subplans("r1")
        finished = {e.subplan_id for e in events if e.payload.get("state") == "completed"}
        assert completed == finished
