"""The shortcuts of the command's run path (#10) decide as the long way would.

The end of a command skips what it knows without reading ``/proc``: the other commands that a
spawner thread started but the loop has not registered yet, the leaders of commands that ended
since it started (while the pid cycle proves no process got their pids again), the environment
of kernel threads (always empty). The garbage collector is paused while the command starts up,
and keeps the start-up's objects out of sight during the run and at exit.
"""

from __future__ import annotations

import asyncio
import gc
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from subplans.cli import app, typer_app
from subplans.cli.gc_pause import (
    freeze_survivors,
    pause_collection,
    restore_collection,
    resume_collection,
)
from subplans.execution import procfs
from subplans.execution.finding import Family
from subplans.execution.process import ProcessGroups, run_command
from subplans.execution.procfs import Window, parse_stat, read_process
from subplans.execution.spawning import Child, spawn
from subplans.sinks.formatting import iso_time

from .plans_helpers import write

MARK = b"SUBPLANS_SHORTCUT_MARK=1"
runner = CliRunner()


async def test_a_spawner_notes_the_pid_before_the_start_is_done(tmp_path: Path) -> None:
    started: set[int] = set()
    seen: list[set[int]] = []
    output = os.open(tmp_path / "log", os.O_WRONLY | os.O_CREAT)
    starting = spawn(["true"], output=output, cwd=None, env=None, started=started)
    starting.add_done_callback(lambda _: seen.append(set(started)))

    popen = await starting
    child = Child(popen, asyncio.get_running_loop())

    assert seen == [{popen.pid}]
    assert await child.exited == 0


async def test_a_command_run_is_starting_then_registered_then_ended(tmp_path: Path) -> None:
    groups = ProcessGroups()
    during: list[tuple[set[int], list[int]]] = []

    def on_start(pid: int) -> None:
        during.append((set(groups.starting), [pgid for pgid, _ in groups]))

    result = await run_command(
        ["true"], log_file=tmp_path / "log", groups=groups, on_start=on_start
    )

    assert during == [(set(), [result.pid])]
    assert groups.starting == set()
    assert list(groups) == []


@pytest.fixture
def marked_sleeper() -> Iterator[tuple[Window, subprocess.Popen[bytes]]]:
    """A marked ``sleep`` in a session of its own, started after the window returned."""
    since = Window.now()
    assert since is not None
    name, value = MARK.decode().split("=")
    with subprocess.Popen(
        ["sleep", "301"], start_new_session=True, env={**os.environ, name: value}
    ) as child:
        try:
            yield since, child
        finally:
            child.kill()


def test_a_marked_process_started_in_the_window_is_found_whatever_its_pid(
    marked_sleeper: tuple[Window, subprocess.Popen[bytes]],
) -> None:
    """Every pid handed out in the window is read, those of other commands' reaped leaders too
    (a leader from before the window may have had the same pid: the review of #10 found a
    leftover that took such a pid and escaped its command's end)."""
    since, child = marked_sleeper
    assert child.pid in Family(marker=(MARK,), since=since).members()
    went_round = Window(since.last_pid, since.forks - procfs.pid_max())
    assert child.pid in Family(marker=(MARK,), since=went_round).members()


def test_a_kernel_thread_is_told_apart_by_its_flags() -> None:
    # kthreadd's stat: flags (field 9) 0x208040 hold PF_KTHREAD (0x200000).
    fields = ["S", "0", "0", "0", "0", "-1", str(0x208040), *["0"] * 12, "5", "0", "0"]
    kthread = parse_stat(2, b"2 (kthreadd) " + " ".join(fields).encode())
    ours = read_process(os.getpid())

    assert kthread is not None
    assert ours is not None
    assert kthread.kernel
    assert not ours.kernel
    assert kthread.start_time == 5
    assert "kernel" not in repr(kthread)


def test_a_kernel_thread_is_never_a_marked_member() -> None:
    kernel = [found for found in procfs.process_table().values() if found.kernel]
    if not kernel:  # pragma: no cover - a pid namespace (a container) shows none
        pytest.skip("no kernel thread is visible here")
    # What the shortcut stands for: there is nothing to read.
    assert all(procfs.environment(found.pid) in (None, [b""]) for found in kernel[:3])
    pids = {found.pid for found in kernel}
    assert not pids & set(Family(marker=(MARK,)).members())


def test_lines_of_one_second_share_its_formatting() -> None:
    assert iso_time(1764467093.0014) == "2025-11-30T01:44:53.001Z"
    assert iso_time(1764467093.9994) == "2025-11-30T01:44:53.999Z"
    assert iso_time(1764467093.9996) == "2025-11-30T01:44:54.000Z"


def test_a_run_leaves_the_collector_as_it_found_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``main([...])`` called by a program: its own frozen objects stay frozen, and nothing of
    the command's is frozen (only the program itself, ``main()``, freezes)."""
    write(tmp_path, "plan.yaml", 'name: p\nsteps:\n  - name: s\n    run: ["true"]\n')
    monkeypatch.chdir(tmp_path)
    mine: list[object] = []  # a tracked object of the caller's, frozen by the caller
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        assert app.main(["run", "plan.yaml", "-q"]) == app.ExitCode.OK
        assert app.main(["validate", "plan.yaml"]) == app.ExitCode.OK
        assert gc.isenabled()
        assert gc.get_freeze_count() <= frozen  # nothing more frozen (some frozen ones freed)
        collected = (gc.get_objects(generation) for generation in range(3))
        assert not any(found is mine for objects in collected for found in objects)  # still frozen
    finally:
        gc.unfreeze()


@pytest.fixture
def paused() -> Iterator[None]:
    """The collector paused, as ``main([...])`` pauses it; restored after."""
    pause_collection(program=False)
    try:
        yield
    finally:
        restore_collection()


def test_the_program_pauses_then_resumes_with_the_start_up_frozen() -> None:
    assert gc.isenabled()
    pause_collection(program=True)
    try:
        assert not gc.isenabled()
        resume_collection()
        assert gc.isenabled()
        assert gc.get_freeze_count() > 0
        restore_collection()
        assert gc.isenabled()
    finally:
        gc.unfreeze()


def test_a_caller_of_main_gets_nothing_frozen() -> None:
    pause_collection(program=False)
    resume_collection()
    freeze_survivors()
    assert gc.isenabled()
    assert gc.get_freeze_count() == 0
    restore_collection()


def test_a_collector_that_was_off_stays_off() -> None:
    gc.disable()
    try:
        pause_collection(program=False)
        resume_collection()
        assert not gc.isenabled()
        restore_collection()
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_a_command_that_never_began_its_work_restores_the_collector() -> None:
    pause_collection(program=True)
    restore_collection()
    assert gc.isenabled()
    assert gc.get_freeze_count() == 0


def test_the_program_still_finalises_a_run_s_garbage_at_exit(tmp_path: Path) -> None:
    """A ``call`` that leaves a temporary file in a reference cycle: the file is gone once the
    command has exited (nothing frozen at exit keeps the cycle from being collected)."""
    write(
        tmp_path,
        "cyclic.py",
        "import tempfile\n\n"
        "def leave():\n"
        "    holder = {}\n"
        "    holder['self'] = holder\n"
        "    holder['file'] = tempfile.NamedTemporaryFile(dir='.', prefix='left-', delete=True)\n",
    )
    write(tmp_path, "plan.yaml", "name: p\nsteps:\n  - {name: s, call: 'cyclic:leave'}\n")
    done = subprocess.run(
        [sys.executable, "-m", "subplans", "run", "plan.yaml", "-q"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert list(tmp_path.glob("left-*")) == []


@pytest.mark.usefixtures("paused")
def test_the_commands_resume_the_collector_as_their_work_begins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, "gc_probe_helper.py", "import gc\n\ndef probe():\n    assert gc.isenabled()\n")
    write(tmp_path, "plan.yaml", "name: p\nsteps:\n  - {name: s, call: 'gc_probe_helper:probe'}\n")
    monkeypatch.chdir(tmp_path)

    # A usage error: the command's work never began.
    assert runner.invoke(typer_app.app, ["run", "--no-such-option"]).exit_code != 0
    assert not gc.isenabled()
    # `run` resumes it before it reads the plan: the called function runs with it on.
    result = runner.invoke(typer_app.app, ["run", "plan.yaml", "-q", "--store", "s.db"])
    assert result.exit_code == app.ExitCode.OK, result.output
    assert gc.isenabled()


@pytest.mark.usefixtures("paused")
def test_the_other_commands_resume_the_collector_as_typer_calls_them() -> None:
    assert runner.invoke(typer_app.app, ["profile", "list"]).exit_code == 0
    assert gc.isenabled()


async def test_a_log_that_cannot_be_opened_fails_the_command_as_it_is(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    groups = ProcessGroups()

    # Opened in the spawner's thread: its error comes out as it would from the loop.
    with pytest.raises(FileExistsError) as raised:
        await run_command(["true"], log_file=tmp_path / "file" / "x.log", groups=groups)

    assert raised.value.filename == str(tmp_path / "file")
    assert groups.starting == set()
    assert len(groups) == 0
