"""Escape sequences and control characters from subplans are shown, never obeyed, wherever a
terminal reads; the JSONL events and the log files keep the exact text (issue #8, point 18).

A subplan's output or error could set the window title (``ESC]0;...BEL``), clear the screen,
move the cursor, colour everything after it, send C1 controls (``\\x9b`` is a CSI of its own) or
reorder text with bidirectional overrides; Rich would also read ``[bold red]`` in a string as
markup. Before, all of it reached the operator's terminal raw through the failure lines, the
live view, the summary, ``status`` and ``logs``.
"""

from __future__ import annotations

import fcntl
import io
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest
from rich.console import Console

from subplans.cli.app import ExitCode, main
from subplans.cli.reports import write_log
from subplans.cli.session import RunSession
from subplans.engine.errors import CommandFailedError
from subplans.engine.events import (
    PlanStarted,
    StepStateChanged,
    SubplanSkipped,
    SubplanStateChanged,
)
from subplans.engine.progress import Failure, ProgressReporter
from subplans.engine.states import StepState, SubplanExecutionState
from subplans.plans.loader import GlobalConfig, PlanNode, load_plan
from subplans.plans.profiles import ProfileRegistry
from subplans.sinks.formatting import error_text, tail, visible
from subplans.sinks.lines import PlainLines
from subplans.sinks.live import LiveView
from subplans.sinks.plan_progress import PlanProgress, StepView
from subplans.sinks.summary import RunSummary

from .conftest import printed
from .log_headers import unheaded
from .plans_helpers import write

RUNNING = SubplanExecutionState.RUNNING
FAILED = SubplanExecutionState.FAILED

#: A title, a cleared screen, a colour, a carriage return, a C1 CSI, a bidi override, a NUL,
#: DEL, a line separator and Rich markup.
HOSTILE = "\x1b]0;pwned\x07\x1b[2J\x1b[31mred\rover\x9b2Jc1\u202eevil\x00\x7f\u2028[bold red]mk[/]"
SHOWN = (
    "\\x1b]0;pwned\\x07\\x1b[2J\\x1b[31mred\\rover\\x9b2Jc1\\u202eevil\\x00\\x7f\\u2028"
    "[bold red]mk[/]"
)
#: What a terminal obeys: C0 controls but the tab, DEL, C1, separators and bidi controls.
RAW = re.compile(
    "[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]"
)
#: Rich's own styles (Select Graphic Rendition), taken out before looking for raw controls.
STYLES = re.compile("\x1b\\[[0-9;]*m")


def raw_controls(text: str, *, styled: bool = False) -> list[str]:
    """Control characters in ``text`` other than line feeds (and Rich's own styles)."""
    if styled:
        text = STYLES.sub("", text)
    return [found for line in text.split("\n") for found in RAW.findall(line)]


def terminal(width: int = 400) -> Console:
    """A terminal in memory as ``conftest.console`` is, but wider: a hostile id shown as escapes
    is longer than its 100 columns, and a wrapped line would hide what the tests look for."""
    return Console(file=io.StringIO(), force_terminal=True, width=width, highlight=False)


@pytest.fixture
def tree(tmp_path: Path) -> PlanNode:
    path = write(tmp_path, "plan.yaml", "name: tiny\nsteps:\n  - {name: s, run: 'true'}\n")
    config = GlobalConfig(tmp_path / "none.yaml", False, ProfileRegistry(), None)
    return load_plan(path, config=config)


def hostile_failure() -> CommandFailedError:
    return CommandFailedError(
        "exited with code 1",
        exit_code=1,
        log_file=f"/runs/r/logs/s__{HOSTILE}.log",
        output_tail=f"first\n{HOSTILE}",
    )


# --- the one neutraliser --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("char", "shown"),
    [
        ("\x1b", "\\x1b"),
        ("\x07", "\\x07"),
        ("\x00", "\\x00"),
        ("\x08", "\\x08"),
        ("\r", "\\r"),
        ("\n", "\\n"),
        ("\x0b", "\\x0b"),
        ("\x7f", "\\x7f"),
        ("\x85", "\\x85"),
        ("\x9b", "\\x9b"),
        ("\x9f", "\\x9f"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
        ("\u202a", "\\u202a"),
        ("\u202e", "\\u202e"),
        ("\u2066", "\\u2066"),
        ("\u2069", "\\u2069"),
        ("\u200e", "\\u200e"),
        ("\u200f", "\\u200f"),
        ("\u061c", "\\u061c"),
    ],
)
def test_visible_escapes_every_control_a_terminal_obeys(char: str, shown: str) -> None:
    assert visible(f"a{char}b") == f"a{shown}b"


def test_visible_keeps_text_tabs_and_markup_as_they_are() -> None:
    text = "tab\there é 日本 👩\u200d💻 \xa0 [bold]x[/] C:\\x1b\\path"
    assert visible(text) == text
    assert visible(HOSTILE) == SHOWN
    assert visible(SHOWN) == SHOWN  # idempotent: shown twice is shown once
    assert not raw_controls(SHOWN)


def test_errors_and_output_tails_are_visible() -> None:
    # One line: whitespace (the carriage return, the line separator) is a space.
    assert error_text(RuntimeError(HOSTILE)) == (
        "RuntimeError: \\x1b]0;pwned\\x07\\x1b[2J\\x1b[31mred over\\x9b2Jc1\\u202eevil\\x00\\x7f "
        "[bold red]mk[/]"
    )
    # A carriage return starts a line of its own, as the terminal would have shown it.
    assert tail(hostile_failure()) == [
        "first",
        "\\x1b]0;pwned\\x07\\x1b[2J\\x1b[31mred",
        "over\\x9b2Jc1\\u202eevil\\x00\\x7f",
        "[bold red]mk[/]",
    ]


# --- the sinks ------------------------------------------------------------------------------


def test_plain_lines_show_ids_errors_and_output_as_escapes() -> None:
    stream = io.StringIO()
    lines = PlainLines(stream)
    lines(PlanStarted(plan_id="", name=HOSTILE, file=HOSTILE, run_id="R1", steps=1))
    lines(StepStateChanged(step_id=HOSTILE, previous=None, state=StepState.RUNNING, total=1))
    lines(SubplanStateChanged(subplan_id=HOSTILE, previous=None, state=RUNNING))
    lines(
        SubplanStateChanged(
            subplan_id=HOSTILE, previous=RUNNING, state=FAILED, error=hostile_failure()
        )
    )
    lines(SubplanSkipped(subplan_id=HOSTILE, reason=HOSTILE))
    lines.flush()  # issue #11: skipped subplans are told per step, once the step's are all in

    text = stream.getvalue()
    assert raw_controls(text) == []
    assert f"running    {SHOWN}\n" in text
    assert "    | over\\x9b2Jc1\\u202eevil\\x00\\x7f\n" in text
    assert text.count(SHOWN) == 7


def test_the_live_view_shows_failures_and_running_ids_as_escapes(tree: PlanNode) -> None:
    reporter = ProgressReporter()
    progress = PlanProgress(tree)
    console = terminal()
    view = LiveView(console, reporter, progress, run_id="R1")
    for event in (
        SubplanStateChanged(subplan_id=HOSTILE, previous=None, state=RUNNING),
        SubplanStateChanged(subplan_id="s/other", previous=None, state=RUNNING),
        SubplanStateChanged(
            subplan_id="s/other", previous=RUNNING, state=FAILED, error=hostile_failure()
        ),
    ):
        reporter.handle(event)
        view(event)
    console.print(view.render())

    text = printed(console)
    assert raw_controls(text, styled=True) == []
    assert f"  {SHOWN}" in text  # the running subplan
    assert "    │ over\\x9b2Jc1\\u202eevil\\x00\\x7f" in text
    assert f"    log: /runs/r/logs/s__{SHOWN}.log" in text
    assert "[bold red]mk[/]" in text  # markup shown, not obeyed


def test_the_summary_shows_failures_as_escapes_and_never_reads_markup(tmp_path: Path) -> None:
    counts = dict.fromkeys(SubplanExecutionState, 0)
    counts[FAILED] = 2
    summary = RunSummary(
        plan=HOSTILE,
        run_id="R1",
        log_dir=tmp_path / HOSTILE,
        outcome="failed",
        elapsed=1.0,
        total=2,
        counts=counts,
        failures=(
            Failure(HOSTILE, hostile_failure(), 0.0),
            Failure("s/call", RuntimeError(f"[bold red]{HOSTILE}"), 0.0),
        ),
        steps=(StepView("s", HOSTILE, 0, 4, "failed"),),
    )
    console = terminal(width=1000)
    console.print(summary.render())

    for text in ("\n".join(summary.lines()), printed(console)):
        assert raw_controls(text, styled=True) == []
        assert f"plan {SHOWN} failed in 1.00s" in STYLES.sub("", text)
        assert f"{SHOWN} failed" in STYLES.sub("", text)  # the step
        assert "RuntimeError: [bold red]\\x1b]0;pwned" in STYLES.sub("", text)


def test_a_session_says_what_it_quotes_as_escapes(tree: PlanNode) -> None:
    human = io.StringIO()
    RunSession(tree, human=human).say(f"stopped: {HOSTILE}")
    assert human.getvalue() == f"stopped: {SHOWN}\n"


def test_logs_on_a_terminal_are_escapes_and_exact_elsewhere() -> None:
    log = f"plain\r\n{HOSTILE}\nno end".encode()

    exact, shown = io.BytesIO(), io.BytesIO()
    write_log(io.BytesIO(log), exact, terminal=False)
    write_log(io.BytesIO(log), shown, terminal=True)

    assert exact.getvalue() == log
    assert shown.getvalue().decode() == f"plain\n{SHOWN}\nno end"


def test_an_invalid_file_name_is_quoted_as_escapes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "no\x1b[2Jplan.yaml"]) == ExitCode.INVALID
    err = capsys.readouterr().err
    assert err.startswith("error: no\\x1b[2Jplan.yaml")
    assert raw_controls(err) == []


# --- the whole command ----------------------------------------------------------------------

PLAN = r"""
name: hostile
automation_profile: keep-going
steps:
  - name: s
    subplans:
      - name: evil
        run: "printf '\\033]0;pwned\\007\\033[2J\\033[31mred [bold red]mk[/] \\302\\233C1 \\342\\200\\256bidi\\n'; printf '\\033]0;pwned\\007\\033[2Jerr\\n' >&2; exit 1"
      - name: call
        call: "hostile_call:boom"
"""
CALL = """
def boom():
    raise RuntimeError("[bold red]mk[/] \\x1b]0;pwned\\x07\\x1b[2J\\u202eevil")
"""
#: The subplan's exact stdout, as its log file and the JSONL events keep it.
EXACT = "\x1b]0;pwned\x07\x1b[2J\x1b[31mred [bold red]mk[/] \x9bC1 \u202ebidi"


@pytest.fixture
def hostile(tmp_path: Path) -> Path:
    write(tmp_path, "hostile_call.py", CALL)
    return write(tmp_path, "plan.yaml", PLAN)


def test_a_hostile_run_reaches_stdout_status_and_runs_as_escapes(
    hostile: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events = tmp_path / "events.jsonl"
    store = str(tmp_path / "state.db")

    code = main(
        ["run", str(hostile), "--no-progress", "--events-jsonl", str(events), "--store", store]
    )

    assert code == ExitCode.FAILED
    out = capsys.readouterr().out
    assert raw_controls(out) == []
    assert (
        "    | \\x1b]0;pwned\\x07\\x1b[2J\\x1b[31mred [bold red]mk[/] \\x9bC1 \\u202ebidi\n" in out
    )
    assert "RuntimeError: [bold red]mk[/] \\x1b]0;pwned\\x07\\x1b[2J\\u202eevil" in out
    # The JSONL stream and the log file keep the exact text.
    failed = [
        e["error"]
        for e in map(json.loads, events.read_text().splitlines())
        if e["event"] == "subplan_state_changed" and e["state"] == "failed"
    ]
    evil = next(error for error in failed if error["type"] == "CommandFailedError")
    assert EXACT in evil["output_tail"]
    assert EXACT.encode() in Path(evil["log_file"]).read_bytes()

    for command in (["status", "--store", store], ["runs", "--store", store]):
        assert main(command) == ExitCode.OK
        text = capsys.readouterr().out
        assert raw_controls(text) == []
    assert main(["status", "--store", store]) == ExitCode.OK
    assert "[bold red]mk[/] \\x1b]0;pwned\\x07\\x1b[2J\\u202eevil" in capsys.readouterr().out


def on_terminal(args: list[str], cwd: Path) -> tuple[int, bytes]:
    """Run ``python -m subplans ARGS`` on a pseudo-terminal; its exit code and what it wrote."""
    env = {k: v for k, v in os.environ.items() if k not in {"FORCE_COLOR", "NO_COLOR"}}
    env.update(TERM="xterm-256color", COLUMNS="300", SUBPLANS_CONFIG=str(cwd / "none.yaml"))
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 300, 0, 0))
    proc = subprocess.Popen(
        [sys.executable, "-m", "subplans", *args],
        cwd=cwd,
        env=env,
        stdin=follower,
        stdout=follower,
        stderr=follower,
    )
    os.close(follower)
    chunks = []
    try:
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: every process on the terminal has closed it
                break
            if not chunk:  # pragma: no cover - some kernels say EOF instead
                break
            chunks.append(chunk)
    finally:
        os.close(leader)
    return proc.wait(timeout=20), b"".join(chunks)


def test_on_a_real_terminal_the_live_view_and_logs_show_escapes(
    hostile: Path, tmp_path: Path
) -> None:
    """Pins: the live view, the summary and `logs` wrote the subplan's escape sequences to the
    terminal raw (a new window title, a cleared screen)."""
    code, shown = on_terminal(["run", "plan.yaml"], tmp_path)
    assert code == ExitCode.FAILED, shown
    text = shown.decode()
    assert "\\x1b]0;pwned\\x07\\x1b[2J\\x1b[31mred [bold red]mk[/] \\x9bC1 \\u202ebidi" in text

    run_id = json.loads(
        subprocess.run(
            [sys.executable, "-m", "subplans", "runs", "--json"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )[0]["id"]
    code, logged = on_terminal(["logs", run_id, "s/evil"], tmp_path)
    assert code == ExitCode.OK
    assert unheaded(logged.decode()).startswith("\\x1b]0;pwned\\x07\\x1b[2J")

    for output in (shown, logged):
        for sequence in ("\x1b]0;pwned", "\x07", "\x1b[2J", "\x9b", "\u202e", "[1;31mmk"):
            assert sequence.encode() not in output
