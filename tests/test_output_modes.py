"""``subplans run --output files|tag|group`` (#11, point 5): the commands' output on standard
output, each line after ``[ID] ``, as it comes or in one block per subplan; the log files whole
in every mode."""

from __future__ import annotations

import asyncio
import fcntl
import io
import json
import os
import re
import signal
import struct
import subprocess
import sys
import termios
import threading
from collections import defaultdict
from pathlib import Path

import pytest
from rich.console import Console

from subplans.cli.app import ExitCode
from subplans.cli.session import Outcome, RunSession, View
from subplans.engine.events import (
    PlanFinished,
    PlanStarted,
    SubplanProcessStarted,
    SubplanStateChanged,
)
from subplans.engine.states import PlanState, SubplanExecutionState
from subplans.plans.loader import GlobalConfig, load_plan
from subplans.plans.profiles import ProfileRegistry
from subplans.sinks.tagged_output import F_GETPIPE_SZ, OutputMode, TaggedOutput

from .conftest import command_env, printed, wait_until
from .log_headers import attempts, unheaded
from .plans_helpers import write
from .store_support import invoke

pytestmark = pytest.mark.usefixtures("isolated")

#: Writes LINES numbered lines of its id in chunks of every size, many cut mid-line, unbuffered,
#: so that the logs grow by pieces of lines while the sink reads them.
WRITER = """
import os, random, sys
name, lines = sys.argv[1], int(sys.argv[2])
data = b"".join(b"%s %d %s\\n" % (name.encode(), i, b"x" * (i % 97)) for i in range(lines))
pick = random.Random(name).randint
while data:
    size = pick(1, 700)
    os.write(1, data[:size])
    data = data[size:]
"""
ITEMS = [f"w{n}" for n in range(8)]
LINES = 2000


def writers_plan(folder: Path, lines: int = LINES) -> None:
    write(folder, "writer.py", WRITER)
    write(
        folder,
        "plan.yaml",
        f"""
        name: writers
        steps:
          - name: w
            max_parallel: 8
            for_each: {json.dumps(ITEMS)}
            subplan:
              run: ["{sys.executable}", "writer.py", "{{item}}", "{lines}"]
        """,
    )


def expected(name: str, lines: int = LINES) -> str:
    return "".join(f"{name} {i} {'x' * (i % 97)}\n" for i in range(lines))


def tagged_lines(out: str) -> dict[str, list[tuple[int, str]]]:
    """Each subplan's tagged lines: (position in ``out``, text after the tag); every tagged line
    whole: its tag and its text name the same writer."""
    found: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for position, line in enumerate(out.splitlines()):
        if not line.startswith("["):
            continue
        match = re.fullmatch(r"\[w/(w\d)\] (w\d) \d+ x*", line)
        assert match is not None, f"a mixed line: {line!r}"
        assert match[1] == match[2], f"a mixed line: {line!r}"
        found[match[1]].append((position, line.split("] ", 1)[1]))
    return found


def log_of(folder: Path, name: str) -> str:
    (run,) = (folder / ".subplans" / "runs").iterdir()
    return (run / "logs" / f"w__{name}.log").read_text()


@pytest.mark.parametrize("mode", ["tag", "group"])
def test_many_writers_lines_are_whole_and_logs_complete(mode: str, tmp_path: Path) -> None:
    writers_plan(tmp_path)

    done = subprocess.run(
        [sys.executable, "-m", "subplans", "run", "plan.yaml", "--output", mode],
        cwd=tmp_path,
        env=command_env(),
        capture_output=True,
        check=False,
    )

    assert done.returncode == ExitCode.OK, done.stderr
    found = tagged_lines(done.stdout.decode())
    assert sorted(found) == ITEMS
    for name in ITEMS:
        assert "".join(f"{text}\n" for _, text in found[name]) == expected(name)
        assert unheaded(log_of(tmp_path, name)) == expected(name)
        positions = [position for position, _ in found[name]]
        if mode == "group":  # one block: nothing else between its first line and its last
            assert positions == list(range(positions[0], positions[0] + LINES))


def test_files_is_the_default_and_prints_no_output(tmp_path: Path) -> None:
    writers_plan(tmp_path, lines=3)

    for args in ([], ["--output", "files"]):
        result = invoke("run", "plan.yaml", *args)
        assert result.exit_code == ExitCode.OK, result.output
        assert tagged_lines(result.stdout) == {}
    assert unheaded(log_of_latest(tmp_path, "w__w0")) == expected("w0", 3)


def log_of_latest(folder: Path, name: str) -> str:
    run = max((folder / ".subplans" / "runs").iterdir())
    return (run / "logs" / f"{name}.log").read_text()


def test_tag_streams_before_the_subplan_ends(tmp_path: Path) -> None:
    # The second command waits for a line of the first on standard output: it can only come
    # while the first still runs, so it came as it was written.
    write(
        tmp_path,
        "plan.yaml",
        """
        name: live
        steps:
          - name: s
            subplans:
              - {name: first, run: "echo hello; while test ! -e seen; do sleep 0.01; done"}
        """,
    )
    child = subprocess.Popen(
        [sys.executable, "-m", "subplans", "run", "plan.yaml", "--output", "tag", "-q"],
        cwd=tmp_path,
        env=command_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert child.stdout is not None
    try:
        assert child.stdout.readline() == b"[s/first] hello\n"
    finally:
        (tmp_path / "seen").touch()
        rest, error = child.communicate(timeout=30)
    assert child.returncode == ExitCode.OK, error
    assert rest.startswith(b"plan live completed in ")


def test_a_retry_shows_its_header_and_the_last_line_gets_its_end(tmp_path: Path) -> None:
    write(
        tmp_path,
        "plan.yaml",
        """
        name: retried
        steps:
          - name: s
            subplans:
              - name: flaky
                retries: 1
                run: "echo try; test -e once && exit 0; touch once; printf 'no end'; exit 3"
        """,
    )

    result = invoke("run", "plan.yaml", "--output", "tag", "-q")

    assert result.exit_code == ExitCode.OK, result.output
    shown = [line for line in result.stdout.splitlines() if line.startswith("[")]
    assert shown[:2] == ["[s/flaky] try", "[s/flaky] no end"]
    assert attempts(shown[2] + "\n") == ["2"]
    assert shown[2].startswith("[s/flaky] --- attempt 2")
    assert shown[3:] == ["[s/flaky] try"]


def test_group_prints_a_failed_subplans_block_and_a_resume_only_its_new_output(
    tmp_path: Path,
) -> None:
    write(
        tmp_path,
        "plan.yaml",
        """
        name: resumed
        automation_profile: keep-going
        steps:
          - name: s
            subplans:
              - {name: ok, run: "echo fine"}
              - {name: bad, run: "echo attempt; test -e fixed"}
        """,
    )
    first = invoke("run", "plan.yaml", "--output", "group", "-q")
    assert first.exit_code == ExitCode.FAILED
    assert "[s/bad] attempt\n" in first.stdout
    assert "[s/ok] fine\n" in first.stdout
    run_id = json.loads(invoke("runs", "--json").stdout)[0]["id"]
    (tmp_path / "fixed").touch()

    again = invoke("resume", run_id, "--output", "group", "-q")

    assert again.exit_code == ExitCode.OK, again.output
    assert [line for line in again.stdout.splitlines() if line.startswith("[")] == [
        "[s/bad] attempt"
    ]
    assert attempts(log_of_latest(tmp_path, "s__bad")) == ["1", "1 (resumed)"]


def test_call_subplans_show_nothing_and_nested_units_their_full_ids(tmp_path: Path) -> None:
    write(tmp_path, "quiet_call.py", "def work() -> int:\n    return 1\n")
    write(
        tmp_path,
        "plan.yaml",
        """
        name: outer
        steps:
          - name: s
            subplans:
              - {name: fn, call: "quiet_call:work"}
              - name: inner
                plan:
                  steps:
                    - {name: deep, run: "echo down here"}
        """,
    )

    result = invoke("run", "plan.yaml", "--output", "tag", "-q")

    assert result.exit_code == ExitCode.OK, result.output
    assert [line for line in result.stdout.splitlines() if line.startswith("[")] == [
        "[s/inner/deep] down here"
    ]


def test_output_beside_events_on_stdout_is_refused(tmp_path: Path) -> None:
    write(tmp_path, "plan.yaml", "name: p\nsteps: [{name: a, run: 'echo no'}]\n")
    for mode in ("tag", "group"):
        result = invoke("run", "plan.yaml", "--output", mode, "--events-jsonl", "-")
        assert result.exit_code == ExitCode.INVALID
        assert re.fullmatch(
            rf"error: --output {mode} and --events-jsonl - both write to stdout: write the "
            r"events to a file \(--events-jsonl PATH\)\n",
            result.stderr,
        )
    assert not (tmp_path / ".subplans" / "runs").exists()
    assert invoke("run", "plan.yaml", "--output", "loud").exit_code == ExitCode.INVALID


def test_on_a_terminal_lines_are_printed_visible_above_the_view(
    tmp_path: Path, console: Console
) -> None:
    write(
        tmp_path,
        "plan.yaml",
        r"""
        name: escapes
        steps:
          - {name: e, run: "printf '\\033]0;title\\007red\\r\\n'"}
        """,
    )
    config = GlobalConfig(tmp_path / "none", False, ProfileRegistry(), None)
    node = load_plan(tmp_path / "plan.yaml", config=config)
    session = RunSession(
        node,
        human=io.StringIO(),
        console=console,
        view=View.QUIET,
        state_dir=tmp_path / "state",
        output=OutputMode.TAG,
    )
    session.prepare()

    assert session.run_blocking() is Outcome.COMPLETED
    assert "[e] \\x1b]0;title\\x07red\n" in printed(console)
    assert session.tagged is not None
    assert session.tagged.lines == 1


async def test_a_log_that_cannot_be_read_or_written_is_left_alone(tmp_path: Path) -> None:
    class Closed(io.StringIO):
        def write(self, text: str) -> int:
            raise BrokenPipeError(32, "Broken pipe")

    log = tmp_path / "a.log"
    log.write_text("--- attempt 1, started 2026-11-30T07:00:01.000Z ---\none\n")
    sink = TaggedOutput(OutputMode.GROUP, Closed(), log_dir=tmp_path / "missing")
    sink.start()  # no folder: nothing was there before
    sink(SubplanProcessStarted("gone", 1, str(tmp_path / "none.log"), time=0.0))
    sink(SubplanProcessStarted("folder", 1, str(tmp_path), time=0.0))  # unreadable as a file
    sink(SubplanProcessStarted("a", 1, str(log), time=0.0))
    done = SubplanExecutionState.COMPLETED
    for name in ("folder", "a"):
        sink(SubplanStateChanged(name, SubplanExecutionState.RUNNING, done, time=0.0))
    sink(SubplanProcessStarted("left", 1, str(log), time=0.0))  # never ends: close() reads it
    sink.close()
    assert isinstance(sink.error, BrokenPipeError)
    assert sink.lines == 0
    assert repr(sink) == "<TaggedOutput group following 0, 0 lines>"
    with pytest.raises(RuntimeError, match=r"^--output files writes the log files only"):
        TaggedOutput(OutputMode.FILES, io.StringIO(), log_dir=tmp_path)
    unstarted = TaggedOutput(OutputMode.TAG, io.StringIO(), log_dir=tmp_path)
    with pytest.raises(RuntimeError, match=r"^a tagged output follows logs once start\(\) was"):
        unstarted(SubplanProcessStarted("a", 1, str(log), time=0.0))


async def test_a_flood_is_read_a_chunk_at_a_time(tmp_path: Path) -> None:
    out = io.StringIO()
    header = "--- attempt 1, started 2026-11-30T07:00:01.000Z ---\n"
    body = "".join(f"{i:07d}{'y' * 200}\n" for i in range(12_000))  # past 2 MiB
    big, rest = tmp_path / "big.log", tmp_path / "rest.log"
    big.write_text(header)
    rest.write_text(header)
    sink = TaggedOutput(OutputMode.TAG, out, log_dir=tmp_path / "logs")
    sink.start()
    sink(SubplanProcessStarted("big", 1, str(big), time=0.0))
    with big.open("a") as file:
        file.write(body)
    while sink.lines < 12_000:  # each turn of the loop may read one chunk
        await asyncio.sleep(0)
    assert out.getvalue() == "".join(f"[big] {line}\n" for line in body.splitlines())
    # One that ends with more than a chunk unread, its last line without its end.
    sink(SubplanProcessStarted("rest", 1, str(rest), time=0.0))
    with rest.open("a") as file:
        file.write(body + "last")
    running, done = SubplanExecutionState.RUNNING, SubplanExecutionState.COMPLETED
    sink(SubplanStateChanged("big", running, done, time=0.0))
    sink(SubplanStateChanged("rest", running, done, time=0.0))
    assert repr(sink) == "<TaggedOutput tag following 0, 24001 lines>"
    rest_lines = [*body.splitlines(), "last"]
    assert out.getvalue().endswith("".join(f"[rest] {line}\n" for line in rest_lines))
    assert os.path.getsize(big) == len(header) + len(body)


@pytest.mark.parametrize("mode", ["tag", "group"])
def test_a_flood_keeps_memory_bounded(mode: str, tmp_path: Path) -> None:
    # 100 MB of output: read and written a chunk at a time, never held whole (the log is the
    # buffer), so the run's peak memory stays far below the output's size.
    write(
        tmp_path,
        "plan.yaml",
        """
        name: flood
        steps:
          - {name: f, run: "yes 0123456789 | head -c 100000000"}
        """,
    )
    # Measured by a small process of its own: a child forked from this big one starts with its
    # memory counted (until it execs), so the peak of the run's own children is what it reports.
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, *RUN, "--output", mode, "-q"],
        cwd=tmp_path,
        env=command_env(),
        capture_output=True,
        check=False,
    )
    assert done.returncode == ExitCode.OK, done.stderr
    peak = int(done.stdout)
    assert peak < 120 * 1024, f"peak RSS {peak} KiB"


RUN = [sys.executable, "-m", "subplans", "run", "plan.yaml"]
#: Runs its arguments, output to /dev/null, and prints the peak RSS of what it ran (KiB).
MEASURE = """
import resource, subprocess, sys
code = subprocess.call(sys.argv[1:], stdout=subprocess.DEVNULL)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
sys.exit(code)
"""


@pytest.mark.parametrize("mode", ["tag", "group"])
def test_a_pipe_nobody_reads_holds_neither_the_run_nor_ctrl_c(mode: str, tmp_path: Path) -> None:
    # 3 MB of output, more than the pipe holds, and standard output never read: the run still
    # hears SIGINT, stops its command, and exits 130, as with --output files.
    write(
        tmp_path,
        "plan.yaml",
        """
        name: stuck
        steps:
          - {name: f, run: "yes 0123456789 | head -c 3000000; exec sleep 60"}
        """,
    )
    with (tmp_path / "stderr").open("wb") as errors:
        child = subprocess.Popen(
            [sys.executable, "-m", "subplans", "run", "plan.yaml", "--output", mode, "-q"],
            cwd=tmp_path,
            env=command_env(),
            stdout=subprocess.PIPE,
            stderr=errors,
        )
    assert child.stdout is not None
    pipe = child.stdout.fileno()
    try:
        logs = tmp_path / ".subplans" / "runs"
        wait_until(lambda: sum(log.stat().st_size for log in logs.glob("*/logs/f.log")) > 3e6)
        if mode == "tag":  # the pipe is full: a blocking write would hold the run here
            size = fcntl.fcntl(pipe, F_GETPIPE_SZ)
            wait_until(lambda: queued(pipe) >= size - (32 << 10))
        child.send_signal(signal.SIGINT)
        assert child.wait(timeout=15) == ExitCode.INTERRUPTED, (tmp_path / "stderr").read_text()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdout.close()


def queued(pipe: int) -> int:
    """How many bytes ``pipe`` holds, unread."""
    (count,) = struct.unpack("i", fcntl.ioctl(pipe, termios.FIONREAD, b"\0\0\0\0"))
    return int(count)


async def test_a_full_pipe_is_written_as_it_drains_and_given_up_on_interrupt(
    tmp_path: Path,
) -> None:
    header = "--- attempt 1, started 2026-11-30T07:00:01.000Z ---\n"
    body = "".join(f"{i:07d}{'z' * 90}\n" for i in range(30_000))  # ~3 MB: more than a pipe
    huge = "h" * (2 << 20)  # one line longer than the pipe: written alone, once it is empty
    logs = {name: tmp_path / f"{name}.log" for name in ("a", "b", "c")}
    for log in logs.values():
        log.write_text(header + body)
    logs["c"].write_text(header + huge + "\n" + body)
    running, done = SubplanExecutionState.RUNNING, SubplanExecutionState.COMPLETED
    read, written = os.pipe()
    stream = open(written, "w")  # noqa: SIM115 - closed below
    try:
        sink = TaggedOutput(OutputMode.TAG, stream, log_dir=tmp_path / "none")
        sink.start()
        size = fcntl.fcntl(read, F_GETPIPE_SZ)
        sink(PlanStarted("", "p", "p.yaml", "r", 1, time=0.0))
        sink(SubplanProcessStarted("a", 1, str(logs["a"]), time=0.0))
        while queued(read) < size - (32 << 10):  # nobody reads: the pipe fills, the loop goes on
            await asyncio.sleep(0)
        sink(SubplanStateChanged("a", running, done, time=0.0))  # waits a little, in vain
        sink(SubplanProcessStarted("b", 1, str(logs["b"]), time=0.0))
        sink(SubplanStateChanged("b", running, done, time=0.0))  # stuck: does not wait again
        sink(PlanFinished("", PlanState.CANCELLED, 1.0, time=0.0))
        sink.close()  # interrupted: what is left is in the logs
        assert 0 < sink.lines < 30_000

        # Not interrupted: close waits for a reader, however slow, and writes everything.
        slow_read, slow_written = os.pipe()
        drained = bytearray()
        reader = threading.Thread(target=lambda: drain_into(slow_read, drained))
        reader.start()
        with open(slow_written, "w") as slow:
            sink = TaggedOutput(OutputMode.GROUP, slow, log_dir=tmp_path / "none")
            sink.start()
            sink(SubplanProcessStarted("c", 1, str(logs["c"]), time=0.0))
            sink.close()
        reader.join()
        assert sink.lines == 30_001
        assert drained == f"[c] {huge}\n".encode() + b"".join(
            b"[c] " + line.encode() + b"\n" for line in body.splitlines()
        )

        # A signal while close waits for a reader that never comes ends the wait.
        sink = TaggedOutput(OutputMode.GROUP, stream, log_dir=tmp_path / "none")
        sink.start()
        sink(SubplanProcessStarted("b", 1, str(logs["b"]), time=0.0))
        original = signal.getsignal(signal.SIGINT)
        waiting = threading.Thread(target=lambda: interrupt_once_replaced(original))
        waiting.start()
        sink.close()
        waiting.join()
        assert signal.getsignal(signal.SIGINT) is original
        assert sink.lines < 30_000
        await asyncio.to_thread(sink.close)  # from another thread: no signal to note there
    finally:
        stream.close()
        os.close(read)


def drain_into(pipe: int, into: bytearray) -> None:
    """Read ``pipe`` into ``into`` until its end, then close it."""
    with open(pipe, "rb", buffering=0) as source:
        while chunk := source.read(1 << 16):
            into += chunk


def interrupt_once_replaced(original: object) -> None:
    """SIGINT ourselves once somebody replaced ``original``, SIGINT's handler."""
    wait_until(lambda: signal.getsignal(signal.SIGINT) is not original)
    os.kill(os.getpid(), signal.SIGINT)
