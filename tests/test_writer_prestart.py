"""The writer process started before ``subplans run`` loads anything (#10,
``writer_start.prestart``): the run's recorder takes it (no second process is started), one
that exited before it was taken is replaced by a new process, and a run that never records
leaves nothing behind. Real processes throughout."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from subplans import SubplanExecutionState, SubplanStateChanged
from subplans.store import RunStore, writer_start
from subplans.store.writer_thread import WriterThread

from .process_helpers import alive
from .store_support import invoke, manifest

PENDING = SubplanExecutionState.PENDING

#: Runs ``subplans`` in a process of its own and says, as JSON on its last line, which writer
#: processes it started (audit events: real ``Popen`` calls, counted, not replaced), whether
#: the first came before the plan file was opened, and the spare left once the run is over.
_WATCHED_RUN = """\
import json, sys
from subplans.store import writer_start
seen = []
def hook(event, args):
    if event == "subprocess.Popen" and writer_start._BOOT in (args[1] or ()):
        seen.append("writer")
    elif event == "open" and str(args[0]).endswith("plan.yaml") and "plan" not in seen:
        seen.append("plan")
sys.addaudithook(hook)
from subplans.cli.app import main
code = main(sys.argv[1:])
spares = [spare.pid for spare in writer_start._spares]
print(json.dumps({"code": code, "seen": seen, "spares": spares}))
"""


@pytest.fixture
def fresh() -> Iterator[None]:
    """No spare from another test: whatever spare there is was made here."""
    writer_start.retire_spares()
    yield
    writer_start.retire_spares()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[RunStore]:
    with RunStore.open(tmp_path / "state.db") as opened:
        opened.start_run("r1", manifest("a", "b"))
        yield opened


def writers_below_us() -> list[psutil.Process]:
    """The writer processes below this one that still live (zombies count as gone)."""
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if writer_start._BOOT in child.cmdline() and alive(child.pid):
                found.append(child)
        except psutil.NoSuchProcess:
            continue
    return found


def watched_run(*args: str, cwd: Path) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", _WATCHED_RUN, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.stdout, done.stderr
    seen: dict[str, object] = json.loads(done.stdout.splitlines()[-1])
    return seen


def test_a_run_takes_the_writer_started_before_its_plan_was_read(tmp_path: Path) -> None:
    (tmp_path / "plan.yaml").write_text("name: p\nsteps:\n  - name: s\n    run: 'true'\n")
    seen = watched_run("run", "plan.yaml", "--no-progress", cwd=tmp_path)
    assert seen["code"] == 0
    # One writer process in all: started before the plan was read, and taken by the run.
    assert seen["seen"] == ["writer", "plan"]
    assert len(seen["spares"]) == 1  # type: ignore[arg-type]
    with RunStore.open(tmp_path / ".subplans" / "state.db") as recorded:
        run = recorded.get_run()
        assert run.recorded_status == "completed"
        assert [row.state for row in recorded.subplans(run.id)] == ["completed"]


def test_a_resume_takes_the_writer_started_before_its_plan_was_read(tmp_path: Path) -> None:
    (tmp_path / "plan.yaml").write_text(
        "name: p\nsteps:\n  - name: s\n    subplans:\n      - {name: a, run: 'true'}\n"
        "      - {name: b, run: 'false'}\n"
    )
    assert watched_run("run", "plan.yaml", "--no-progress", cwd=tmp_path)["code"] == 1
    with RunStore.open(tmp_path / ".subplans" / "state.db") as recorded:
        run_id = recorded.get_run().id
        before = len(recorded.events(run_id))
    seen = watched_run("resume", run_id, "--no-progress", cwd=tmp_path)
    assert seen["code"] == 1  # b failed again
    assert seen["seen"] == ["writer", "plan"]
    with RunStore.open(tmp_path / ".subplans" / "state.db") as recorded:
        assert len(recorded.events(run_id)) > before  # the resume's, recorded by that writer
        assert recorded.get_run(run_id).recorded_status == "failed"


def test_a_run_that_fails_to_load_starts_its_writer_and_leaves_nothing(tmp_path: Path) -> None:
    (tmp_path / "plan.yaml").write_text("name: p\nsteps: 3\n")
    seen = watched_run("run", "plan.yaml", cwd=tmp_path)
    assert seen["code"] == 2
    assert seen["seen"] == ["writer", "plan"]
    assert seen["spares"] == []  # killed and reaped before the command returned


def test_the_recorder_takes_a_prestarted_writer_before_it_answered(
    store: RunStore, fresh: None
) -> None:
    writer_start.prestart()
    prestarted = writer_start._spares[0].pid
    writer_start.prestart()  # one spare at most
    assert [spare.pid for spare in writer_start._spares] == [prestarted]
    recorder = store.recorder("r1")
    assert recorder._pipe.process.pid == prestarted
    recorder.handle(SubplanStateChanged("a", None, PENDING))
    recorder.close()
    assert recorder.failure is None
    assert [event.subplan_id for event in store.events("r1")] == ["a"]
    # Kept as the spare, as any writer whose session ended well; no longer the prestarted one.
    assert [spare.pid for spare in writer_start._spares] == [prestarted]
    assert writer_start._prestarted is None
    writer_start.forgo_prestarted()
    assert alive(prestarted)


def test_a_prestarted_writer_that_exited_before_it_was_taken_is_replaced(
    store: RunStore, fresh: None
) -> None:
    writer_start.prestart()
    spare = writer_start._spares[0]
    spare.kill()
    spare.wait()
    recorder = store.recorder("r1")
    writer = recorder._pipe.process
    assert not isinstance(writer, WriterThread)  # a new process, no fallback to a thread
    assert writer.pid != spare.pid
    recorder.handle(SubplanStateChanged("a", None, PENDING))
    recorder.close()
    assert recorder.failure is None
    assert [event.subplan_id for event in store.events("r1")] == ["a"]
    assert spare.stdin is not None
    assert spare.stdin.closed


def test_a_failing_run_leaves_no_writer_behind(
    tmp_path: Path, fresh: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "plan.yaml").write_text("name: p\nsteps:\n  - name: s\n    run: 'true'\n")
    (tmp_path / "bad.yaml").write_text("name: p\nsteps: 3\n")
    monkeypatch.chdir(tmp_path)
    assert invoke("run", "bad.yaml").exit_code == 2
    # The events file cannot be opened: refused after the plan was loaded.
    missing = str(tmp_path / "missing" / "events.jsonl")
    assert invoke("run", "plan.yaml", "--events-jsonl", missing).exit_code == 2
    assert invoke("run", "plan.yaml", "--dry-run").exit_code == 0
    assert invoke("resume", "20261130-000000-000000").exit_code == 2  # no such run
    assert writer_start._spares == []
    assert writer_start._prestarted is None
    assert writers_below_us() == []


def test_a_run_s_writer_is_left_as_the_spare(
    tmp_path: Path, fresh: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "plan.yaml").write_text("name: p\nsteps:\n  - name: s\n    run: 'true'\n")
    monkeypatch.chdir(tmp_path)
    assert invoke("run", "plan.yaml", "--no-progress").exit_code == 0
    assert [writer.pid for writer in writers_below_us()] == [
        spare.pid for spare in writer_start._spares
    ]
    assert writer_start._prestarted is None


def test_no_prestart_without_a_python_to_start(
    store: RunStore, fresh: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr("sys.executable", str(tmp_path / "no-python"))
    writer_start.prestart()
    assert writer_start._spares == []
    writer_start.forgo_prestarted()  # nothing to forgo


def test_a_prestarted_writer_retired_meanwhile_is_not_forgone_twice(fresh: None) -> None:
    writer_start.prestart()
    spare = writer_start._spares[0]
    writer_start.retire_spares()  # as a test's fixture does: it exits at the end of its input
    assert spare.returncode == 0
    writer_start.forgo_prestarted()
    assert writer_start._prestarted is None


def test_a_prestarted_writer_ignores_sigterm_while_it_waits(store: RunStore, fresh: None) -> None:
    """As every writer: a nested run's outer run may signal it before the run records."""
    writer_start.prestart()
    spare = writer_start._spares[0]
    recorder = store.recorder("r1")
    recorder.flush_sync()  # it answered: it ignores the signals from here on
    os.kill(spare.pid, signal.SIGTERM)
    recorder.handle(SubplanStateChanged("a", None, PENDING))
    recorder.close()
    assert recorder.failure is None
    assert alive(spare.pid)


def test_a_spare_that_exits_as_it_is_given_a_session_is_replaced(
    store: RunStore, fresh: None
) -> None:
    """A spare that took the session's frame and exited without its ack (as one whose idle
    time ended just then would)."""
    exiting = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.buffer.read(1)"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    writer_start._spares.append(exiting)
    recorder = store.recorder("r1")
    assert recorder._pipe.process.pid != exiting.pid
    assert exiting.returncode == 0  # retired: reaped
    recorder.handle(SubplanStateChanged("a", None, PENDING))
    recorder.close()
    assert [event.subplan_id for event in store.events("r1")] == ["a"]
