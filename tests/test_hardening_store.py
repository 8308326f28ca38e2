"""Issue #8, the store: a plan runs once at a time in a store (points 7), readers work on a full
disk and in a read-only folder (12), and a file that is not ours is never changed (13).

Real processes where the defect was in them: the runs that race are separate processes, the
full disk is a real ``EFBIG`` from ``RLIMIT_FSIZE``, the read-only folder is really unwritable.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import resource
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from subplans.cli.app import ExitCode
from subplans.engine.errors import PlanRunningError, RunBusyError, StoreError
from subplans.store import SCHEMA_VERSION, PlanManifest, RunLock, RunStore

from .conftest import wait_until
from .log_headers import unheaded
from .plans_helpers import write
from .store_support import (
    Child,
    gone_owner,
    invoke,
    load,
    manifest,
    other_host_owner,
    unwritable,
)

RUN_ID = r"\d{8}-\d{6}-[0-9a-f]{6}"

# The command waits for the file "go" (next to the plan): a run that stays live until the
# test lets it finish.
GATED = """
    name: gated
    steps:
      - name: work
        run: "touch started; while [ ! -e go ]; do sleep 0.01; done"
    """


# Every test runs the command isolated from the user's config and store.
pytestmark = pytest.mark.usefixtures("isolated")


def environment(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"FORCE_COLOR", "SUBPLANS_STORE"}}
    env["SUBPLANS_CONFIG"] = str(tmp_path / "config" / "config.yaml")
    return env


def store_path(folder: Path) -> Path:
    return folder / ".subplans" / "state.db"


# Registers a run of the plan file given on its command line in the store next to it, then
# holds it (its owner alive) until its stdin closes.
HOLDER = """
    import sys
    from pathlib import Path
    from subplans.store import PlanManifest, RunStore
    plan = Path(sys.argv[1]).absolute()
    store = RunStore.open(plan.parent / ".subplans" / "state.db")
    store.start_run(sys.argv[2], PlanManifest(file=str(plan), steps=("s",), subplans=(("s", "s"),)))
    print("ready", flush=True)
    sys.stdin.read()
    """


@contextlib.contextmanager
def holding(plan: Path, run_id: str) -> Iterator[Child]:
    """Another live process with a running run ``run_id`` of ``plan`` in its store."""
    code = textwrap.dedent(HOLDER)
    child = Child(f"import sys; sys.argv[1:] = {[str(plan), run_id]!r}\n{code}")
    with child:
        yield child
        child.finish()


def refused_line(run_id: str, pid: int, plan: Path, store: str) -> str:
    return (
        f"error: plan {plan} is already running in the store {store}: run {run_id}, driven by "
        f"process {pid} on \\S+; wait for it to end, stop it with `subplans cancel {run_id}`, "
        "or pass --concurrent to run it anyway\n"
    )


# --- 7. a plan runs once at a time in a store -------------------------------------------------

# Waits for "go" on stdin, then tries to start a run of the plan; says how it went, and keeps
# its run live until its stdin closes.
RACER = """
    import sys
    from subplans.engine.errors import PlanRunningError
    from subplans.store import PlanManifest, RunStore
    path, plan, run_id = sys.argv[1:]
    store = RunStore.open(path)
    print("ready", flush=True)
    sys.stdin.readline()
    try:
        store.start_run(run_id, PlanManifest(file=plan, steps=("s",), subplans=(("s", "s"),)))
    except PlanRunningError as error:
        print(f"refused {error.run_id} {error.pid}", flush=True)
    else:
        print("started", flush=True)
    sys.stdin.read()
    """


def test_of_runs_of_one_plan_started_at_the_same_instant_only_one_goes_ahead(
    tmp_path: Path,
) -> None:
    path, plan = tmp_path / "state.db", str(tmp_path / "plan.yaml")
    RunStore.open(path).close()
    code = textwrap.dedent(RACER)
    racers = [
        Child(f"import sys; sys.argv[1:] = {[str(path), plan, f'r{n}']!r}\n{code}")
        for n in range(6)
    ]
    try:
        for racer in racers:  # every one is waiting: let them all go at once
            assert racer.process.stdin is not None
            racer.process.stdin.write("go\n")
            racer.process.stdin.flush()
        said = []
        for racer in racers:
            assert racer.process.stdout is not None
            said.append(racer.process.stdout.readline().split())
    finally:
        for racer in racers:
            racer.__exit__()

    winners = [n for n, words in enumerate(said) if words == ["started"]]
    assert len(winners) == 1, said
    winner = winners[0]
    expected = ["refused", f"r{winner}", str(racers[winner].pid)]
    assert [words for n, words in enumerate(said) if n != winner] == [expected] * 5
    with RunStore.open(path) as store:
        assert [run.id for run in store.list_runs()] == [f"r{winner}"]


def test_a_killed_or_finished_run_never_blocks_its_plan_and_another_host_does(
    tmp_path: Path,
) -> None:
    with RunStore.open(tmp_path / "state.db") as store:
        store.start_run("killed", manifest("s"), owner=gone_owner())
        store.start_run("done", manifest("s"), owner=gone_owner())
        store.finish_run("done", "completed")
        store.start_run("mine", manifest("s"))  # a killed run's plan runs again
        store.finish_run("mine", "failed")
        store.start_run("elsewhere", manifest("s"), owner=other_host_owner())

        # A run on another host cannot be judged from here: it counts as live.
        with pytest.raises(PlanRunningError) as refused:
            store.start_run("again", manifest("s"), owner=gone_owner())
        assert refused.value.run_id == "elsewhere"
        assert str(refused.value) == (
            f"plan plan.yaml is already running in the store {store.path}: run elsewhere, "
            f"driven by process 1 on {other_host_owner().host}"
        )
        assert isinstance(refused.value, RunBusyError)
        # The same file by another path is the same plan; another file is another plan.
        os.symlink(tmp_path / "plan.yaml", tmp_path / "link.yaml")
        for name in ("plan.yaml", "link.yaml", "./plan.yaml"):
            same = PlanManifest(file=str(tmp_path / name), steps=("s",))
            with pytest.raises(PlanRunningError):
                store.check_plan_free(same.file, owner=gone_owner())
        store.start_run("other", PlanManifest(file="other.yaml"), owner=gone_owner())
        assert {run.id for run in store.list_runs()} == {
            "killed",
            "done",
            "mine",
            "elsewhere",
            "other",
        }


def test_resume_run_of_a_plan_that_runs_in_another_run_is_refused(tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    with (
        RunStore.open(store_path(tmp_path)) as store,
        holding(plan, "live") as child,
    ):
        killed = PlanManifest(file=str(plan), steps=("s",))
        store.start_run("r1", killed, owner=gone_owner(), concurrent=True)
        with pytest.raises(PlanRunningError, match=r": run live, driven by process \d+ on "):
            store.resume_run("r1")
        assert store.get_run("r1").resumes == 0  # refused whole: nothing was written
        assert store.resume_run("r1", concurrent=True).resumes == 1
        assert child.process.poll() is None


def test_a_second_subplans_run_of_a_running_plan_is_refused_with_what_to_do(
    tmp_path: Path,
) -> None:
    plan = write(tmp_path, "plan.yaml", GATED)
    (tmp_path / "events.jsonl").write_text("kept\n")
    first = subprocess.Popen(
        [sys.executable, "-m", "subplans", "run", "plan.yaml", "-q"],
        cwd=tmp_path,
        env=environment(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(lambda: (tmp_path / "started").exists(), timeout=20)
        with RunStore.open(store_path(tmp_path), readonly=True) as store:
            running = store.get_run()

        second = invoke("run", "plan.yaml", "--events-jsonl", "events.jsonl")

        assert second.exit_code == ExitCode.INVALID
        assert running.owner is not None
        pattern = refused_line(running.id, first.pid, plan, ".subplans/state.db")
        assert re.fullmatch(pattern, second.stderr), second.stderr
        assert second.stdout == ""
        # Nothing of the refused run is left: no run folder, no row; the events file is intact.
        assert os.listdir(tmp_path / ".subplans" / "runs") == [running.id]
        assert (tmp_path / "events.jsonl").read_text() == "kept\n"
        with RunStore.open(store_path(tmp_path), readonly=True) as store:
            assert [run.id for run in store.list_runs()] == [running.id]

        anyway = subprocess.Popen(
            [sys.executable, "-m", "subplans", "run", "plan.yaml", "-q", "--concurrent"],
            cwd=tmp_path,
            env=environment(tmp_path),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        with RunStore.open(store_path(tmp_path), readonly=True) as store:
            wait_until(lambda: len(store.list_runs()) == 2, timeout=20)
            assert {run.status for run in store.list_runs()} == {"running"}
    finally:
        (tmp_path / "go").touch()
        _, err = first.communicate(timeout=20)
    assert first.returncode == 0, err
    _, err = anyway.communicate(timeout=20)
    assert anyway.returncode == 0, err


def test_resume_of_a_run_whose_plan_is_running_is_refused_before_anything(
    tmp_path: Path,
) -> None:
    node = load(tmp_path, GATED)
    plan = node.file
    (tmp_path / "go").touch()
    with RunStore.open(store_path(tmp_path)) as store:
        store.start_run("r1", PlanManifest.from_plan(node), owner=gone_owner())
    with holding(plan, "live") as child:
        refused = invoke("resume", "r1", "-q")
        anyway = invoke("resume", "r1", "-q", "--concurrent")

        concurrent = invoke("run", "plan.yaml", "-q", "--concurrent")

    assert refused.exit_code == ExitCode.INVALID
    pattern = refused_line("live", child.pid, plan, ".subplans/state.db")
    assert re.fullmatch(pattern, refused.stderr), refused.stderr
    assert anyway.exit_code == ExitCode.OK, anyway.output
    assert concurrent.exit_code == ExitCode.OK, concurrent.output
    with RunStore.open(store_path(tmp_path), readonly=True) as store:
        assert store.get_run("r1").resumes == 1
        assert len(store.list_runs()) == 3


# --- 12. a full disk, a read-only folder ------------------------------------------------------


@contextlib.contextmanager
def file_size_limit(size: int) -> Iterator[None]:
    """Writes past ``size`` bytes fail with EFBIG, as on a full disk (SIGXFSZ ignored)."""
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)


def on_a_full_disk(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``subplans ARGS`` in a process that cannot write a byte to any file."""

    def no_room() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (0, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

    return subprocess.run(
        [sys.executable, "-m", "subplans", *args],
        cwd=cwd,
        env=environment(cwd),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        preexec_fn=no_room,
    )


@pytest.mark.parametrize("room", [0, 3], ids=["no-byte", "three-bytes"])
def test_a_run_lock_taken_on_a_full_disk_holds_without_naming_its_holder(
    tmp_path: Path, room: int
) -> None:
    lock = RunLock(tmp_path, "r1")
    with file_size_limit(room):
        lock.acquire()  # was: OSError: [Errno 27] File too large, from os.pwrite

    assert lock.held
    assert lock.path.read_bytes() == b""  # never a name cut short
    with pytest.raises(RunBusyError, match=r"^run r1 is being driven by another process; wait "):
        RunLock(tmp_path, "r1").acquire()
    lock.release()


SIMPLE = """
    name: simple
    steps:
      - name: s
        run: "true"
    """


def interrupted_run(tmp_path: Path) -> RunStore:
    """A store with run r1 interrupted while ``s`` ran; returned open (its -shm stays)."""
    node = load(tmp_path, SIMPLE)
    store = RunStore.open(store_path(tmp_path))
    store.start_run("r1", PlanManifest.from_plan(node), owner=gone_owner())
    store._db.execute("UPDATE subplans SET state = 'running', started = 1.0")
    return store


def test_status_and_resume_on_a_full_disk_work_or_fail_in_one_line(tmp_path: Path) -> None:
    with interrupted_run(tmp_path):
        status = on_a_full_disk("status", "r1", cwd=tmp_path)
        resume = on_a_full_disk("resume", "r1", "-q", cwd=tmp_path)

    assert status.returncode == ExitCode.OK, status.stderr
    assert status.stdout.startswith("run r1  interrupted\n")
    assert status.stderr == ""
    assert resume.returncode == ExitCode.INVALID
    assert re.fullmatch(
        r"error: cannot write to the store \.subplans/state\.db: disk I/O error\n", resume.stderr
    ), resume.stderr
    with RunStore.open(store_path(tmp_path), readonly=True) as store:
        assert store.get_run("r1").status == "interrupted"  # the failed resume changed nothing


def test_readers_on_a_full_disk_read_a_store_nobody_has_open(tmp_path: Path) -> None:
    interrupted_run(tmp_path).close()  # the last connection: no -shm left to share

    for args in (["runs"], ["status"], ["events", "r1"]):
        done = on_a_full_disk(*args, cwd=tmp_path)
        assert done.returncode == ExitCode.OK, done.stderr
        assert done.stderr == ""
    assert re.search(r"^r1 +interrupted ", on_a_full_disk("runs", cwd=tmp_path).stdout, re.M)


# Records a run, then closes the store with no room to grow its file: the last connection's
# checkpoint writes the header and fails, so only the -wal holds the store as it is.
HALF_CHECKPOINTED = """
    import os, resource, signal, sys
    from subplans.store import PlanManifest, RunStore
    open(sys.argv[1], "wb").close()  # (made in place: its schema too in the log)
    store = RunStore.open(sys.argv[1])
    store._db.execute("PRAGMA wal_autocheckpoint = 0")
    store.start_run("r1", PlanManifest(file="plan.yaml", steps=("s",), subplans=(("s", "s"),)))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (os.path.getsize(sys.argv[1]), resource.RLIM_INFINITY))
    store.close()
    """


def test_a_store_whose_checkpoint_failed_on_a_full_disk_is_read_from_its_log(
    tmp_path: Path,
) -> None:
    path = store_path(tmp_path)
    path.parent.mkdir()
    code = textwrap.dedent(HALF_CHECKPOINTED)
    subprocess.run([sys.executable, "-c", code, str(path)], check=True, timeout=30)
    with (
        contextlib.closing(sqlite3.connect(f"{path.as_uri()}?immutable=1", uri=True)) as look,
        pytest.raises(sqlite3.DatabaseError, match="malformed"),  # the file alone is stale
    ):
        look.execute("PRAGMA user_version")

    status = invoke("status", "r1")
    assert status.exit_code == ExitCode.OK, status.output
    with RunStore.open(path) as store:
        assert store.get_run("r1").total == 1


@pytest.fixture
def recorded(tmp_path: Path) -> str:
    """A completed run of SIMPLE (with a log) and an interrupted run r1, in the store next to
    the plan; yields the completed run's id."""
    write(tmp_path, "plan.yaml", SIMPLE.replace('"true"', '"echo logged"'))
    assert invoke("run", "plan.yaml", "-q").exit_code == ExitCode.OK
    with RunStore.open(store_path(tmp_path)) as store:
        done = store.get_run().id
        store.start_run("r1", manifest("s"), owner=gone_owner())
    return done


def read_everything(done: str) -> None:
    """Every reader, as on a read-only folder it must: exit 0 with the runs."""
    runs = invoke("runs")
    assert runs.exit_code == ExitCode.OK, runs.output
    assert re.search(rf"^{done}  completed ", runs.stdout, re.M)
    assert re.search(r"^r1 +interrupted ", runs.stdout, re.M)
    status = invoke("status", done)
    assert status.exit_code == ExitCode.OK, status.output
    assert status.stdout.startswith(f"run {done}  completed\n")
    events = invoke("events", done)
    assert events.exit_code == ExitCode.OK, events.output
    assert '"event": "plan_finished"' in events.stdout
    logs = invoke("logs", done, "s")
    assert (logs.exit_code, unheaded(logs.stdout)) == (ExitCode.OK, "logged\n")


def test_readers_show_the_runs_of_a_store_in_a_read_only_folder(
    tmp_path: Path, recorded: str
) -> None:
    folder = tmp_path / ".subplans"
    before = sorted(os.listdir(folder))
    with unwritable(folder):
        read_everything(recorded)  # was: the folder .subplans is not writable, exit 2
        run = invoke("run", "plan.yaml", "-q")
        assert run.exit_code == ExitCode.INVALID
        assert run.stderr == (
            "error: cannot open the store .subplans/state.db: the folder .subplans is not writable\n"
        )
    assert sorted(os.listdir(folder)) == before


def test_readers_show_the_runs_of_a_store_on_a_read_only_mount(
    tmp_path: Path, recorded: str
) -> None:
    folder = tmp_path / ".subplans"
    with unwritable(folder), unwritable(folder / "state.db"):
        read_everything(recorded)


def test_readers_in_a_read_only_folder_see_what_a_killed_writer_left_in_its_log(
    tmp_path: Path,
) -> None:
    # The writer stays open: its -wal holds what it wrote, as a killed owner's would.
    writer = RunStore.open(store_path(tmp_path))
    try:
        writer._db.execute("PRAGMA wal_autocheckpoint = 0")
        writer.start_run("r1", manifest("s"), owner=gone_owner())
        with unwritable(tmp_path / ".subplans"):
            result = invoke("status", "r1")
        assert result.exit_code == ExitCode.OK, result.output
        assert result.stdout.startswith("run r1  interrupted\n")
    finally:
        writer.close()


def test_an_empty_database_in_a_read_only_folder_is_no_store_yet(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    (folder / "state.db").write_bytes(b"")
    with unwritable(folder), pytest.raises(StoreError) as refused:
        RunStore.open(folder / "state.db", readonly=True)
    assert str(refused.value) == (
        f"cannot open the store {folder / 'state.db'}: its schema (version 0) is older than "
        f"this subplans' ({SCHEMA_VERSION}), and it cannot be brought up to date here: it is "
        "read-only"
    )
    assert os.listdir(folder) == ["state.db"]


@pytest.mark.parametrize(
    ("lock", "readonly"),
    [("EXCLUSIVE", False), ("EXCLUSIVE", True), ("IMMEDIATE", False), ("IMMEDIATE", True)],
)
def test_a_store_locked_by_another_writer_is_a_clear_error_not_a_stale_read(
    tmp_path: Path, lock: str, readonly: bool
) -> None:
    # An empty database keeps a rollback journal, so a writer's lock holds readers off (an
    # exclusive one) or writers only (an immediate one: readonly then fails to bring it up to
    # date): neither is taken for a store that cannot be shared.
    path = tmp_path / "state.db"
    path.write_bytes(b"")
    other = sqlite3.connect(path, isolation_level=None)
    other.execute(f"BEGIN {lock}")
    try:
        with pytest.raises(StoreError) as refused:
            RunStore.open(path, readonly=readonly, timeout=0.01)
        assert str(refused.value) == f"cannot open the store {path}: database is locked"
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert path.read_bytes() == b""


# --- 13. a file that is not ours is never changed ----------------------------------------------


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("journal", ["delete", "wal"])
def test_run_and_resume_never_change_another_applications_database(
    tmp_path: Path, journal: str
) -> None:
    write(tmp_path, "plan.yaml", SIMPLE)
    theirs = tmp_path / "theirs.db"
    db = sqlite3.connect(theirs, isolation_level=None)
    db.execute(f"PRAGMA journal_mode = {journal}")
    db.execute("CREATE TABLE notes (text)")
    db.execute("INSERT INTO notes VALUES ('theirs')")
    db.close()
    before, listing = digest(theirs), sorted(os.listdir(tmp_path))

    for args in (("run", "plan.yaml"), ("resume", "r1"), ("runs",), ("status",), ("cancel", "r1")):
        result = invoke(*args, "--store", "theirs.db")
        assert result.exit_code == ExitCode.INVALID, args
        assert result.stderr == (
            "error: cannot open the store theirs.db: not a subplans store (an SQLite database "
            "of another application)\n"
        ), args
        assert digest(theirs) == before, args  # was: switched to WAL by run and resume

    assert sorted(os.listdir(tmp_path)) == listing
    db = sqlite3.connect(theirs)
    assert db.execute("PRAGMA journal_mode").fetchone() == (journal,)
    db.close()
