"""run_command against real processes: results, failures, and nothing left running after a cancel."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from subplans.engine.errors import CommandFailedError, SubplanError
from subplans.engine.events import describe_error
from subplans.execution import procfs
from subplans.execution.process import CommandResult, ProcessGroups, run_command
from subplans.execution.stopping import Stopping, stop_async, stop_run_processes

from .process_helpers import eventually, group_members

# Both the shell and its background child ignore SIGTERM (an ignored signal stays ignored
# across fork and exec), so only SIGKILL stops this group of three.
STUBBORN = "trap '' TERM; sleep 30 & sleep 30; wait"


def zombies_of(pgid: int) -> list[int]:
    """The zombie members of group ``pgid`` (those that ``group_members`` leaves out)."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            stat = procfs.read_stat(int(name)) or b""
            fields = stat[stat.rfind(b")") + 2 :].split()
            if fields and fields[0] == b"Z" and int(fields[2]) == pgid:
                found.append(int(name))
    return found


class RecordingGroups(ProcessGroups):
    """Remembers every group ever registered, to check on them after they are unregistered."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[int] = []

    def register(self, pgid: int, label: str, stopping: Stopping) -> None:
        super().register(pgid, label, stopping)
        self.seen.append(pgid)


# --- commands that finish ---------------------------------------------------------------------


async def test_argv_command_succeeds_and_its_output_goes_to_the_log(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "nested" / "echo.log"
    started: list[int] = []

    result = await run_command(["echo", "hello", "world"], log_file=log, on_start=started.append)

    assert result == CommandResult(
        exit_code=0, pid=started[0], log_file=log, output_tail="hello world"
    )
    assert log.read_text() == "hello world\n"
    assert group_members(result.pid) == []


async def test_str_command_runs_through_the_shell_with_stderr_in_the_log(tmp_path: Path) -> None:
    log = tmp_path / "shell.log"

    result = await run_command(
        "echo one | tr a-z A-Z && echo $((1 + 2)) && echo err >&2", log_file=log
    )

    assert result.output_tail == "ONE\n3\nerr"
    assert log.read_text() == "ONE\n3\nerr\n"


async def test_argv_is_never_parsed_by_a_shell(tmp_path: Path) -> None:
    log = tmp_path / "echo.log"

    await run_command(["echo", "x; touch pwned"], log_file=log, cwd=tmp_path)

    assert log.read_text() == "x; touch pwned\n"
    assert not (tmp_path / "pwned").exists()


async def test_env_is_the_complete_environment_of_the_child(tmp_path: Path) -> None:
    env = {"GREETING": "hi there", "PATH": os.environ["PATH"]}

    result = await run_command(
        'echo "$GREETING"; echo "${HOME-unset}"', log_file=tmp_path / "env.log", env=env
    )

    assert result.output_tail == "hi there\nunset"


async def test_cwd_is_the_working_directory_of_the_child(tmp_path: Path) -> None:
    result = await run_command(["pwd"], log_file=tmp_path / "pwd.log", cwd=tmp_path)

    assert result.output_tail == str(tmp_path)


async def test_stdin_is_empty(tmp_path: Path) -> None:
    result = await run_command("cat; echo done", log_file=tmp_path / "cat.log")

    assert result.output_tail == "done"


# --- the output tail --------------------------------------------------------------------------


async def test_tail_is_limited_to_tail_lines(tmp_path: Path) -> None:
    log = tmp_path / "seq.log"

    result = await run_command(["seq", "1", "50"], log_file=log, tail_lines=5)

    assert result.output_tail == "46\n47\n48\n49\n50"
    assert len(log.read_text().splitlines()) == 50


async def test_zero_tail_lines_gives_an_empty_tail(tmp_path: Path) -> None:
    result = await run_command(["seq", "1", "3"], log_file=tmp_path / "seq.log", tail_lines=0)

    assert result.output_tail == ""


async def test_log_is_appended_and_the_tail_holds_only_this_run(tmp_path: Path) -> None:
    log = tmp_path / "run.log"
    log.write_text("earlier run\n")

    result = await run_command(["echo", "this run"], log_file=log)
    silent = await run_command(["true"], log_file=log)

    assert log.read_text() == "earlier run\nthis run\n"
    assert result.output_tail == "this run"
    assert silent.output_tail == ""


async def test_tail_reads_at_most_the_last_64_kib(tmp_path: Path) -> None:
    code = "print('x' * 100_000); print('end')"

    result = await run_command([sys.executable, "-c", code], log_file=tmp_path / "big.log")

    # "\nend\n" takes 5 of the 65536 bytes read; the long line is cut at the start of the window.
    assert result.output_tail == "x" * (64 * 1024 - 5) + "\nend"


async def test_tail_replaces_undecodable_bytes(tmp_path: Path) -> None:
    result = await run_command(r"printf '\377ok\n'", log_file=tmp_path / "bytes.log")

    assert result.output_tail == "\ufffdok"


async def test_tail_is_empty_when_the_log_was_removed(tmp_path: Path) -> None:
    log = tmp_path / "gone.log"

    with pytest.raises(CommandFailedError, match=r"^exited with code 3$") as caught:
        await run_command(["sh", "-c", 'echo gone; rm -- "$0"; exit 3', str(log)], log_file=log)

    assert caught.value.output_tail == ""


# --- failures ---------------------------------------------------------------------------------


async def test_nonzero_exit_raises_with_code_and_tail(tmp_path: Path) -> None:
    log = tmp_path / "fail.log"

    with pytest.raises(CommandFailedError, match=r"^exited with code 3$") as caught:
        await run_command("echo first; echo second >&2; exit 3", log_file=log, tail_lines=1)

    error = caught.value
    assert isinstance(error, SubplanError)
    assert (error.exit_code, error.signal) == (3, None)
    assert error.log_file == str(log)
    assert error.output_tail == "second"
    assert describe_error(error) == {
        "type": "CommandFailedError",
        "message": "exited with code 3",
        "exit_code": 3,
        "log_file": str(log),
        "output_tail": "second",
    }


async def test_killed_by_a_signal_raises_with_its_name(tmp_path: Path) -> None:
    with pytest.raises(CommandFailedError, match=r"^killed by signal SIGKILL$") as caught:
        await run_command("echo dying; kill -9 $$", log_file=tmp_path / "kill.log")

    assert (caught.value.exit_code, caught.value.signal) == (None, "SIGKILL")
    assert caught.value.output_tail == "dying"


async def test_a_real_time_signal_is_named_by_number(tmp_path: Path) -> None:
    number = signal.SIGRTMIN + 1
    code = f"import os; os.kill(os.getpid(), {number})"

    with pytest.raises(CommandFailedError, match=rf"^killed by signal SIG{number}$") as caught:
        await run_command([sys.executable, "-c", code], log_file=tmp_path / "rt.log")

    assert caught.value.signal == f"SIG{number}"


async def test_command_not_found_is_127(tmp_path: Path) -> None:
    log = tmp_path / "missing.log"

    with pytest.raises(
        CommandFailedError, match=r"^cannot run 'nosuchcmd-subplans': No such file or directory$"
    ) as caught:
        await run_command(["nosuchcmd-subplans", "arg"], log_file=log)

    assert caught.value.exit_code == 127
    assert caught.value.log_file == str(log)
    assert isinstance(caught.value.__cause__, FileNotFoundError)
    assert log.read_text() == ""


async def test_command_not_executable_is_126(tmp_path: Path) -> None:
    script = tmp_path / "script.sh"
    script.write_text("echo never\n")
    script.chmod(0o644)

    with pytest.raises(
        CommandFailedError, match=rf"^cannot run {re.escape(repr(str(script)))}: Permission denied$"
    ) as caught:
        await run_command([str(script)], log_file=tmp_path / "script.log")

    assert caught.value.exit_code == 126


async def test_missing_cwd_is_127_and_named(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    message = (
        rf"^cannot run 'echo hi' in {re.escape(repr(str(missing)))}: No such file or directory$"
    )

    with pytest.raises(CommandFailedError, match=message) as caught:
        await run_command("echo hi", log_file=tmp_path / "cwd.log", cwd=missing)

    assert caught.value.exit_code == 127


async def test_command_in_the_shell_that_is_not_found_is_the_shells_127(tmp_path: Path) -> None:
    with pytest.raises(CommandFailedError, match=r"^exited with code 127$") as caught:
        await run_command("nosuchcmd-subplans", log_file=tmp_path / "sh.log")

    assert "nosuchcmd-subplans" in caught.value.output_tail


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"command": []}, r"^command must not be empty$"),
        ({"cancel_grace": -1.0}, r"^cancel_grace must be >= 0, got -1\.0$"),
        ({"cancel_grace": float("nan")}, r"^cancel_grace must be >= 0, got nan$"),
        ({"tail_lines": -1}, r"^tail_lines must be an integer >= 0, got -1$"),
        ({"tail_lines": True}, r"^tail_lines must be an integer >= 0, got True$"),
    ],
)
async def test_invalid_arguments_are_rejected_before_anything_runs(
    tmp_path: Path, options: dict[str, object], message: str
) -> None:
    log = tmp_path / "never" / "run.log"
    command = options.pop("command", ["true"])

    with pytest.raises(ValueError, match=message):
        await run_command(command, log_file=log, **options)  # type: ignore[arg-type]

    assert not log.parent.exists()


# --- nothing is left running ------------------------------------------------------------------


async def test_background_child_of_a_successful_command_is_killed(tmp_path: Path) -> None:
    result = await run_command("sleep 30 & echo $!", log_file=tmp_path / "bg.log")

    background = result.output_tail
    assert group_members(result.pid) == []
    assert procfs.process_table([int(background)]) == {}


async def test_cancel_kills_a_group_that_ignores_sigterm_after_the_grace(tmp_path: Path) -> None:
    started: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    groups = ProcessGroups()
    task = asyncio.create_task(
        run_command(
            STUBBORN,
            log_file=tmp_path / "stubborn.log",
            cancel_grace=0.2,
            groups=groups,
            on_start=started.set_result,
        )
    )
    pgid = await started
    await eventually(lambda: len(group_members(pgid)) == 3)
    assert list(groups) == [(pgid, STUBBORN)]

    began = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert time.monotonic() - began >= 0.2
    assert group_members(pgid) == []
    assert len(groups) == 0


async def test_cancel_stops_a_well_behaved_command_without_waiting_the_grace(
    tmp_path: Path,
) -> None:
    started: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        run_command(
            ["sleep", "30"],
            log_file=tmp_path / "sleep.log",
            cancel_grace=30,
            on_start=started.set_result,
        )
    )
    pgid = await started

    began = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert time.monotonic() - began < 2
    assert group_members(pgid) == []


async def test_a_second_cancel_during_the_grace_kills_at_once(tmp_path: Path) -> None:
    # The leader survives SIGTERM and says so in the log: then it is in the grace period.
    log = tmp_path / "second.log"
    code = (
        "import signal, time\n"
        "signal.signal(signal.SIGTERM, lambda *_: print('term', flush=True))\n"
        "print('ready', flush=True)\n"
        "time.sleep(30)\n"
    )
    started: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        run_command(
            [sys.executable, "-c", code],
            log_file=log,
            cancel_grace=30,
            on_start=started.set_result,
        )
    )
    pgid = await started
    await eventually(lambda: "ready" in log.read_text())

    began = time.monotonic()
    task.cancel()
    await eventually(lambda: "term" in log.read_text())
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert time.monotonic() - began < 2
    assert group_members(pgid) == []


async def test_timeout_raises_timeout_error_and_leaves_nothing(tmp_path: Path) -> None:
    started: list[int] = []

    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.1):
            await run_command(
                STUBBORN,
                log_file=tmp_path / "timeout.log",
                cancel_grace=0.1,
                on_start=started.append,
            )

    assert group_members(started[0]) == []


async def test_cancel_while_starting_still_stops_the_group(tmp_path: Path) -> None:
    # Regression: a start cancelled after the fork would SIGKILL the leader alone.
    groups = RecordingGroups()
    started: list[int] = []
    task = asyncio.create_task(
        run_command(
            STUBBORN,
            log_file=tmp_path / "early.log",
            cancel_grace=0.1,
            groups=groups,
            on_start=started.append,
        )
    )
    await asyncio.sleep(0)  # the task is now starting the child
    task.cancel()

    with pytest.raises(asyncio.CancelledError):
        await task

    assert started == []
    assert len(groups.seen) == 1
    assert group_members(groups.seen[0]) == []
    assert len(groups) == 0


async def test_cancel_while_a_start_fails_raises_the_cancel(tmp_path: Path) -> None:
    task = asyncio.create_task(run_command(["nosuchcmd-subplans"], log_file=tmp_path / "x.log"))
    await asyncio.sleep(0)  # the task is now starting the child
    task.cancel()

    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_raising_on_start_stops_the_command(tmp_path: Path) -> None:
    pids: list[int] = []

    def on_start(pid: int) -> None:
        pids.append(pid)
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match=r"^boom$"):
        await run_command(
            ["sleep", "30"], log_file=tmp_path / "boom.log", cancel_grace=0.1, on_start=on_start
        )

    assert group_members(pids[0]) == []


async def test_members_that_outlive_the_settle_timeout_are_logged(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """What a command's end does (``stop_async``) with a process that SIGKILL does not end."""
    # Signals that never arrive: the straggler lives on, and is given up on at once.
    monkeypatch.setattr(signal, "pidfd_send_signal", lambda fd, sig: None)
    straggler = subprocess.Popen(["sleep", "30"], start_new_session=True)
    stopping = Stopping(lambda: procfs.process_table([straggler.pid]), grace=0, settle_timeout=0)

    try:
        with caplog.at_level(logging.WARNING, logger="subplans"):
            assert await stop_async(stopping) is None

        assert group_members(straggler.pid) == [straggler.pid]
        assert stopping.signalled[straggler.pid].signal is signal.SIGKILL
        message = rf"^processes \[{straggler.pid}\] survived SIGKILL for 0.0 s; giving up on them$"
        assert [r.levelname for r in caplog.records] == ["WARNING"]
        assert re.match(message, caplog.records[0].getMessage())
    finally:
        straggler.kill()
        straggler.wait()
    assert group_members(straggler.pid) == []


def test_stopping_refuses_a_negative_settle_timeout() -> None:
    with pytest.raises(ValueError, match=r"^settle_timeout must be >= 0, got -1$"):
        Stopping(dict, grace=0, settle_timeout=-1)


# --- group_members ----------------------------------------------------------------------------


async def test_group_members_of_our_own_group_includes_us() -> None:
    assert os.getpid() in group_members(os.getpgid(0))


async def test_group_members_of_an_empty_group_is_empty(tmp_path: Path) -> None:
    result = await run_command(["true"], log_file=tmp_path / "true.log")

    assert group_members(result.pid) == []


async def test_group_members_leaves_zombies_out(tmp_path: Path) -> None:
    # The shell execs into sleep, which never reaps the short-lived child it inherited.
    started: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        run_command(
            "true & exec sleep 30",
            log_file=tmp_path / "zombie.log",
            cancel_grace=0.1,
            on_start=started.set_result,
        )
    )
    pgid = await started
    await eventually(lambda: len(zombies_of(pgid)) == 1)

    assert group_members(pgid) == [pgid]
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_group_members_reads_names_with_spaces_and_parentheses(tmp_path: Path) -> None:
    # The command name is field 2 of /proc/<pid>/stat: this one looks like a zombie's fields.
    odd = tmp_path / "a) Z 1 (b"
    odd.symlink_to("/bin/sleep")
    started: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        run_command(
            [str(odd), "30"],
            log_file=tmp_path / "odd.log",
            cancel_grace=0.1,
            on_start=started.set_result,
        )
    )
    pgid = await started

    await eventually(lambda: b"a) Z 1 (b" in (procfs.read_stat(pgid) or b""))
    assert group_members(pgid) == [pgid]
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_stat_of_a_process_that_is_gone_is_none() -> None:
    # Reached for real only when a process ends between listing /proc and reading its stat.
    assert procfs.read_stat(0) is None
    assert procfs.process_table([0]) == {}


# --- ProcessGroups ----------------------------------------------------------------------------


def nothing() -> Stopping:
    """The stopping of a command with no process left."""
    return Stopping(dict, grace=0)


def test_process_groups_register_and_unregister() -> None:
    groups = ProcessGroups()
    groups.register(101, "first", nothing())
    groups.register(102, "second", nothing())

    assert len(groups) == 2
    assert list(groups) == [(101, "first"), (102, "second")]
    assert repr(groups) == "<ProcessGroups 2 live>"

    groups.unregister(101)
    assert list(groups) == [(102, "second")]
    assert repr(groups) == "<ProcessGroups 1 live>"


def test_process_groups_reject_misuse() -> None:
    groups = ProcessGroups()
    groups.register(101, "first", nothing())

    with pytest.raises(RuntimeError, match=r"^process group 101 is already registered$"):
        groups.register(101, "again", nothing())
    with pytest.raises(RuntimeError, match=r"^process group 102 is not registered$"):
        groups.unregister(102)


def test_process_groups_iterate_over_a_snapshot() -> None:
    groups = ProcessGroups()
    groups.register(101, "first", nothing())
    groups.register(102, "second", nothing())

    for pgid, _ in groups:
        groups.unregister(pgid)

    assert len(groups) == 0


async def test_kill_all_kills_live_commands_at_once_and_counts_only_those(
    tmp_path: Path,
) -> None:
    groups = ProcessGroups()
    groups.register(101, "gone", nothing())
    started: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    argv = ["sleep", "30"]
    task = asyncio.create_task(
        run_command(
            argv,
            log_file=tmp_path / "sleep.log",
            groups=groups,
            cancel_grace=60,
            on_start=started.set_result,
        )
    )
    pgid = await started
    assert list(groups) == [(101, "gone"), (pgid, shlex.join(argv))]

    assert groups.kill_all() == 1

    assert groups.hurried.is_set()
    with pytest.raises(CommandFailedError, match=r"^killed by signal SIGKILL$"):
        async with asyncio.timeout(10):  # not the 60 s grace
            await task
    assert list(groups) == [(101, "gone")]
    assert groups.kill_all() == 0


def test_processes_of_a_run_are_found_by_environment_and_stopped() -> None:
    import uuid

    run_id = f"run-{uuid.uuid4().hex}"  # never another test's, running at the same time
    env = {**os.environ, "SUBPLANS_RUN_ID": run_id, "SUBPLANS_SUBPLAN": "s/a"}
    polite = subprocess.Popen(["sleep", "30"], env=env)
    stubborn = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(30)",
        ],
        env={**env, "SUBPLANS_SUBPLAN": "s/b"},
        stdout=subprocess.PIPE,
    )
    other = subprocess.Popen(["sleep", "30"], env={**env, "SUBPLANS_RUN_ID": f"{run_id}-y"})
    try:
        assert stubborn.stdout is not None
        assert stubborn.stdout.readline() == b"ready\n"
        assert stop_run_processes(run_id, grace=0.1) == 2
        assert polite.wait(timeout=5) == -signal.SIGTERM
        assert stubborn.wait(timeout=5) == -signal.SIGKILL
        assert other.poll() is None  # another run's
        assert stop_run_processes(run_id, grace=0) == 0  # already gone: nothing to do
    finally:
        for child in (polite, stubborn, other):
            child.kill()
            child.wait()
        assert stubborn.stdout is not None
        stubborn.stdout.close()


async def test_run_command_logs_members_that_outlive_its_settle_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """End to end through ``run_command(settle_timeout=...)``: the command's end gives up on a
    background process that SIGKILL does not end, with one warning, and returns."""
    # Signals that never arrive: the straggler lives on, and is given up on at once.
    monkeypatch.setattr(signal, "pidfd_send_signal", lambda fd, sig: None)

    with caplog.at_level(logging.WARNING, logger="subplans"):
        result = await run_command(
            "sleep 30 & echo $!", log_file=tmp_path / "bg.log", cancel_grace=0, settle_timeout=0
        )

    straggler = int(result.output_tail)
    try:
        assert group_members(result.pid) == [straggler]
        message = rf"^processes \[{straggler}\] survived SIGKILL for 0.0 s; giving up on them$"
        assert [r.levelname for r in caplog.records] == ["WARNING"]
        assert re.match(message, caplog.records[0].getMessage())
    finally:
        os.kill(straggler, signal.SIGKILL)
    await eventually(lambda: group_members(result.pid) == [])


async def test_run_command_refuses_a_negative_settle_timeout_before_it_starts(
    tmp_path: Path,
) -> None:
    with pytest.raises(ValueError, match=r"^settle_timeout must be >= 0, got -1$"):
        await run_command("touch started", log_file=tmp_path / "x.log", settle_timeout=-1)
    assert not (tmp_path / "x.log").exists()
