"""SIGINT and SIGTERM at any moment of the command: exit 130 and one line, never a traceback,
never a death by the signal (-2, -15), and nothing half-made in the store (issue #8, point 14).

The process tests send real signals to ``python -m subplans`` at many moments of its life:
while it imports, parses, loads the plan, opens the store, registers and runs the plan, and
prints the summary. They wait until the command's guard is in place (the process catches
SIGTERM, as ``/proc/PID/status`` tells): before that the interpreter itself is starting, and
no Python program can answer a signal there.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from subplans.cli.app import ExitCode, main
from subplans.execution import signal_guard
from subplans.execution.signal_guard import SIGNALS, CommandInterrupted, SignalGuard, is_command
from subplans.store import RunStore

from .conftest import command_env, wait_until
from .plans_helpers import write

TINY = """
name: tiny
steps:
  - {name: a, run: "true"}
  - name: b
    subplans:
      - {name: x, run: "true"}
      - {name: y, run: "true"}
"""

#: Seconds after the guard is in place: the first moments (imports) are the ones that broke.
DELAYS = (0.0, 0.005, 0.015, 0.03, 0.06, 0.1, 0.2)


@pytest.fixture
def handlers() -> Iterator[None]:
    """The test process's own handlers, back after the test whatever it installed."""
    before = {sig: signal.getsignal(sig) for sig in SIGNALS}
    yield
    for sig, handler in before.items():
        signal.signal(sig, handler)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return command_env(SUBPLANS_CONFIG=str(tmp_path / "no-config.yaml"))


# --- real processes, real signals ----------------------------------------------------------


def _catches_sigterm(pid: int) -> bool:
    """True once ``pid`` has a handler for SIGTERM (``SigCgt``): the command's guard."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("SigCgt:"):
                return bool(int(line.split()[1], 16) >> (signal.SIGTERM - 1) & 1)
    return False  # pragma: no cover - every Linux status file has the line


def _interrupt_at(
    args: list[str], sig: signal.Signals, delay: float, cwd: Path, env: dict[str, str]
) -> tuple[int, str, bool]:
    """Start the command, send ``sig`` ``delay`` seconds after its guard is in place; its exit
    code, its output (stdout and stderr), and whether the guard was seen in place."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "subplans", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        guarded = False
        while proc.poll() is None and not guarded:
            try:
                guarded = _catches_sigterm(proc.pid)
            except FileNotFoundError:  # pragma: no cover - it ended between two looks
                break
            time.sleep(0.001)  # a look each millisecond: the guard holds for tens of them
        # A chosen moment of the command's life, not a timing assertion.
        time.sleep(delay)
        if proc.poll() is None:
            proc.send_signal(sig)
        out, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:  # pragma: no cover - only when the test failed
            proc.kill()
            proc.wait()
    return proc.returncode, out.decode(errors="replace"), guarded


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=lambda s: s.name)
@pytest.mark.parametrize(
    ("args", "normal"),
    # `--version` ends within a millisecond of its guard, too soon for these moments: its
    # interrupt is tested in test_cli_startup, blocked in its write to a full pipe.
    [(["validate", "plan.yaml"], ExitCode.OK), (["run", "plan.yaml"], ExitCode.OK)],
    ids=["validate", "run"],
)
def test_an_interrupt_at_any_moment_exits_130_with_one_line(
    args: list[str], normal: int, sig: signal.Signals, tmp_path: Path, env: dict[str, str]
) -> None:
    """Pins: in the first second (imports) the command printed a KeyboardInterrupt traceback
    and exited -2, or died by SIGTERM (-15); a SIGTERM as a run ended also killed it."""
    write(tmp_path, "plan.yaml", TINY)
    with ThreadPoolExecutor(max_workers=3) as pool:
        outcomes = list(
            pool.map(lambda delay: _interrupt_at(args, sig, delay, tmp_path, env), DELAYS)
        )

    for code, out, guarded in outcomes:
        assert guarded, f"the guard was never in place:\n{out}"
        assert code in (ExitCode.INTERRUPTED, normal), out
        assert "Traceback" not in out
        assert "Exception ignored" not in out
        if code == ExitCode.INTERRUPTED:
            # Before the run, the guard's line; during it, the run's own.
            lines = out.splitlines()
            told = lines.count(f"interrupted by {sig.name}") + sum(
                line.startswith(f"{sig.name}: stopping; ") for line in lines
            )
            assert told == 1, out
    store = tmp_path / ".subplans" / "state.db"
    if store.exists():
        # Nothing half-made: every run that was registered ended, none is left "running".
        with RunStore.open(store, readonly=True) as db:
            statuses = {run.status for run in db.list_runs(100)}
        assert statuses <= {"completed", "cancelled"}, statuses


def test_a_signal_as_the_summary_is_printed_changes_nothing(
    tmp_path: Path, env: dict[str, str]
) -> None:
    """Pins: once the run's handlers were gone, a SIGTERM (a late `subplans cancel`) in the
    last milliseconds of a finished run killed the process with -15."""
    write(tmp_path, "plan.yaml", TINY)
    write(
        tmp_path,
        "late.py",
        """
        import io, os, signal, sys

        from subplans.cli.app import main

        class Late(io.StringIO):
            def write(self, text):
                if "plan tiny completed" in text:
                    os.kill(os.getpid(), signal.SIGTERM)
                    os.kill(os.getpid(), signal.SIGINT)
                return sys.__stdout__.write(text)

        sys.stdout = Late()
        code = main(["run", "plan.yaml", "-q"])
        sys.stdout = sys.__stdout__
        print("exit", code)
        """,
    )

    done = subprocess.run(
        [sys.executable, "late.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    assert "plan tiny completed in " in done.stdout
    assert done.stdout.endswith("exit 0\n")
    assert done.stderr == ""


# --- the guard, in this process -------------------------------------------------------------


class Signalling(io.StringIO):
    """A stdout that sends ``sig`` to this process on its first write."""

    def __init__(self, sig: signal.Signals) -> None:
        super().__init__()
        self.sig: signal.Signals | None = sig

    def write(self, text: str) -> int:
        if self.sig is not None:
            sig, self.sig = self.sig, None
            os.kill(os.getpid(), sig)
        return super().write(text)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=lambda s: s.name)
def test_main_called_from_python_returns_130_with_one_line(
    sig: signal.Signals,
    handlers: None,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    before = {s: signal.getsignal(s) for s in SIGNALS}
    monkeypatch.setattr(sys, "stdout", Signalling(sig))

    assert main(["--version"]) == ExitCode.INTERRUPTED

    assert capfd.readouterr().err == f"interrupted by {sig.name}\n"
    assert {s: signal.getsignal(s) for s in SIGNALS} == before


def test_the_guard_holds_inside_guarded_and_gives_the_handlers_back(
    handlers: None, capfd: pytest.CaptureFixture[str]
) -> None:
    guard = SignalGuard()
    before = {sig: signal.getsignal(sig) for sig in SIGNALS}
    assert repr(guard) == "<SignalGuard not held>"

    inside: list[str] = []

    def interrupted() -> None:
        with guard.guarded():
            inside.append(repr(guard))
            os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(CommandInterrupted) as raised:
        interrupted()

    assert inside == ["<SignalGuard held>"]

    assert raised.value.code == ExitCode.INTERRUPTED
    assert raised.value.signum == signal.SIGTERM
    assert capfd.readouterr().err == "interrupted by SIGTERM\n"
    assert {sig: signal.getsignal(sig) for sig in SIGNALS} == before
    assert not guard.held


def test_a_second_signal_is_not_a_second_line(
    handlers: None, capfd: pytest.CaptureFixture[str]
) -> None:
    guard = SignalGuard()
    with guard.guarded():
        for sig in (signal.SIGINT, signal.SIGTERM):
            with pytest.raises(CommandInterrupted):
                os.kill(os.getpid(), sig)
    assert capfd.readouterr().err == "interrupted by SIGINT\n"


def test_a_guard_already_held_is_left_to_whoever_installed_it(handlers: None) -> None:
    guard = SignalGuard()
    with guard.guarded():
        with guard.guarded():
            pass
        assert guard.held
    assert not guard.held


def test_once_settled_a_signal_changes_nothing(
    handlers: None, capfd: pytest.CaptureFixture[str]
) -> None:
    guard = SignalGuard()
    with guard.guarded():
        guard.settle()
        assert repr(guard) == "<SignalGuard ended>"
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGINT)
    assert capfd.readouterr().err == ""


def test_the_command_process_ignores_both_signals_once_main_returns(handlers: None) -> None:
    guard = SignalGuard(command=True)
    assert guard.held  # from its creation: the package's first statement
    assert callable(signal.getsignal(signal.SIGTERM))
    assert repr(guard) == "<SignalGuard held, command>"

    with guard.guarded():
        pass

    # SIG_IGN, not a Python handler: the interpreter resets those to the default (SIGTERM's
    # kills) while it shuts down.
    assert [signal.getsignal(sig) for sig in SIGNALS] == [signal.SIG_IGN, signal.SIG_IGN]
    assert guard.ended


def test_signals_while_registering_are_noted_then_end_the_command(
    handlers: None, capfd: pytest.CaptureFixture[str]
) -> None:
    guard = SignalGuard()
    before = {sig: signal.getsignal(sig) for sig in SIGNALS}

    inside: list[int] = []

    def registering() -> None:
        with guard.deferred() as noted:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGTERM)
            inside.extend(noted)  # not acted on: registering goes on

    with pytest.raises(CommandInterrupted) as raised:
        registering()

    assert inside == [signal.SIGINT, signal.SIGTERM]

    assert raised.value.signum == signal.SIGINT
    assert capfd.readouterr().err == "interrupted by SIGINT\n"
    assert {sig: signal.getsignal(sig) for sig in SIGNALS} == before


def test_signals_the_run_took_or_that_came_after_it_ended_are_not_acted_on_again(
    handlers: None, capfd: pytest.CaptureFixture[str]
) -> None:
    guard = SignalGuard()
    with guard.deferred() as noted:
        os.kill(os.getpid(), signal.SIGTERM)
        noted.pop()  # the run handled it
    with guard.deferred():
        guard.settle()
        os.kill(os.getpid(), signal.SIGTERM)  # after the run: changes nothing
    assert capfd.readouterr().err == ""


def test_off_the_main_thread_the_guard_installs_nothing(handlers: None) -> None:
    guard = SignalGuard()
    held: list[bool] = []
    thread = threading.Thread(target=lambda: held.append(guard.hold()))
    thread.start()
    thread.join()
    assert held == [False]
    assert not guard.held


@pytest.mark.parametrize(
    ("argv", "orig_argv", "expected"),
    [
        (["/venv/bin/subplans", "run"], ["/venv/bin/python", "/venv/bin/subplans", "run"], True),
        (["-m"], ["python", "-X", "dev", "-m", "subplans", "run"], True),
        (["-m"], ["python", "-msubplans", "--version"], True),
        (["-m"], ["python", "-m", "subplans.plans.schemas", "schemas"], False),
        (["-m"], ["python", "-m"], False),
        (["/venv/bin/pytest", "-q"], ["python", "/venv/bin/pytest", "-q"], False),
        ([], ["python"], False),
    ],
)
def test_only_the_command_holds_its_signals_from_the_first_import(
    argv: list[str], orig_argv: list[str], expected: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "argv", argv)
    monkeypatch.setattr(sys, "orig_argv", orig_argv)
    assert is_command() is expected


def test_importing_the_library_changes_no_handler() -> None:
    assert not signal_guard.GUARD.command
    assert not signal_guard.GUARD.held


def test_a_signal_ignored_on_entry_stays_ignored(tmp_path: Path, env: dict[str, str]) -> None:
    # A script's background job starts with SIGINT ignored, so that Ctrl-C at the terminal is
    # not for it (as sh's `cmd &`): the guard and the run must not take that back; SIGTERM
    # still stops the run.
    write(
        tmp_path,
        "plan.yaml",
        """
        name: bg
        steps:
          - {name: a, run: "touch started; while [ ! -e go ]; do sleep 0.01; done"}
        """,
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "subplans", "run", "plan.yaml", "--no-progress"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    try:
        wait_until(lambda: (tmp_path / "started").exists(), "the run to start", timeout=20)
        proc.send_signal(signal.SIGINT)  # ignored: the run goes on
        (tmp_path / "go").touch()
        out, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:  # pragma: no cover - only when the test failed
            proc.kill()
            proc.wait()
    assert proc.returncode == ExitCode.OK, out.decode()
    assert b"SIGINT" not in out
