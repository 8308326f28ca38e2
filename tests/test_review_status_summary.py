"""What the review of issue #11 found in the outputs, end to end with real processes: a step
whose ``for_each`` source fails says why in the summary (every output mode) and ``status``, and
``subplans logs RUN STEP`` prints its command's log; ``status`` uses the summary's words
(``cancelled``, ``not run``); ``status --subplans`` and ``logs --all`` list run-time subplans
in plan order; ``logs --all | head`` ends quietly."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console

from subplans.cli.app import main
from subplans.engine.errors import CommandFailedError, DispatchError, SubplanCancelledError
from subplans.engine.events import StepStateChanged, SubplanProcessStarted, SubplanStateChanged
from subplans.engine.progress import ProgressReporter
from subplans.engine.states import StepState, SubplanExecutionState
from subplans.plans.loader import load_plan
from subplans.sinks.lines import PlainLines
from subplans.sinks.live import LiveView
from subplans.sinks.plan_progress import PlanProgress
from subplans.sinks.summary import RunSummary
from subplans.store import RunStore, StoreError
from subplans.store.manifest import PlanManifest

from .conftest import command_env, printed, wait_until
from .plans_helpers import write
from .store_support import GATED, gone_owner, invoke, manifest, no_config
from .test_cli_process import subplans

FAILING_COMMAND = """
    name: f
    steps:
      - name: c
        for_each: {command: "echo the real error >&2; exit 3"}
        subplan: {run: "echo {item}"}
      - name: d
        run: "true"
    """
NO_COUNTS = dict.fromkeys(SubplanExecutionState, 0)
MESSAGE = (
    "step c: for_each command 'echo the real error >&2; exit 3' exited with code 3: the real error"
)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """No user config, no terminal; the store in the plan's folder."""
    return command_env(SUBPLANS_CONFIG=str(tmp_path / "no-config.yaml"))


def latest(tmp_path: Path) -> str | None:
    try:
        with RunStore.open(tmp_path / ".subplans" / "state.db", readonly=True) as db:
            return db.get_run().id
    except StoreError:
        return None


@pytest.mark.parametrize("mode", ["--no-progress", "-q"])
def test_a_failed_command_source_says_why_in_the_summary_and_status(
    tmp_path: Path, env: dict[str, str], mode: str
) -> None:
    write(tmp_path, "plan.yaml", FAILING_COMMAND)

    ran = subplans("run", "plan.yaml", mode, cwd=tmp_path, env=env)

    run_id = latest(tmp_path)
    # As the summary shows paths (from where the run started); status shows the absolute path
    # kept with the step's error, for status and logs run from anywhere.
    log = f".subplans/runs/{run_id}/logs/c.items.log"
    assert ran.returncode == 1
    lines = ran.stdout.splitlines()
    assert lines[-5:] == [
        "  subplans  1 total, 0 completed, 0 failed, 1 not run",
        "  steps     c failed, d skipped",
        f"  error     {MESSAGE}",
        f"            log: {log}",
        f"  logs      .subplans/runs/{run_id}/logs",
    ]
    # --no-progress prints failures as they happen: this one too; -q only the summary.
    assert len(lines) == (7 if mode == "--no-progress" else 6)
    assert lines[0].endswith(f"  failed     {MESSAGE}") == (mode == "--no-progress")
    status = subplans("status", cwd=tmp_path, env=env).stdout.splitlines()
    assert status[4:8] == [
        "  subplans     1 total: 1 not run",
        "  steps        c failed, d skipped",
        f"  error        {MESSAGE}",
        f"               log: {tmp_path / log}",
    ]
    # The step's own log: its command's standard error.
    printed_log = subplans("logs", "latest", "c", cwd=tmp_path, env=env)
    assert (printed_log.returncode, printed_log.stdout) == (0, "the real error\n")


def test_the_log_of_a_step_whose_command_worked_is_found_by_the_steps_id(
    tmp_path: Path, env: dict[str, str]
) -> None:
    write(
        tmp_path,
        "plan.yaml",
        """
        name: o
        steps:
          - name: c
            for_each: {command: "echo warned >&2; echo x; echo y"}
            subplan: {run: "echo {item}"}
        """,
    )
    assert subplans("run", "plan.yaml", "-q", cwd=tmp_path, env=env).returncode == 0

    assert subplans("logs", "latest", "c", cwd=tmp_path, env=env).stdout == "warned\n"
    # A step without an items log is no subplan either.
    missing = subplans("logs", "latest", "nothing", cwd=tmp_path, env=env)
    assert missing.returncode == 2
    assert "has no subplan 'nothing'" in missing.stderr


def test_a_glob_that_matches_nothing_and_a_missing_nested_plan_name_their_step(
    tmp_path: Path, env: dict[str, str]
) -> None:
    write(
        tmp_path,
        "plan.yaml",
        """
        name: g
        automation_profile: keep-going
        steps:
          - name: n
            for_each: {glob: "nothing*.x"}
            subplan: {run: "echo {item}"}
        """,
    )
    write(
        tmp_path,
        "nested.yaml",
        """
        name: np
        steps:
          - name: p
            for_each: {command: "echo missing"}
            subplan: {plan: "{item}/plan.yaml"}
        """,
    )

    glob = subplans("run", "plan.yaml", "-q", cwd=tmp_path, env=env).stdout.splitlines()
    nested = subplans("run", "nested.yaml", "-q", cwd=tmp_path, env=env).stdout.splitlines()

    assert glob[3].startswith("  error     step n: ")
    assert "'nothing*.x' matches no files" in glob[3]
    assert nested[3].startswith("  error     step p: ")
    assert "missing/plan.yaml" in nested[3]
    status = subplans("status", cwd=tmp_path, env=env).stdout
    assert "\n  error        step p: " in status


def test_on_a_terminal_the_error_is_shown_and_its_log_path_whole(console: Console) -> None:
    log = "/very/long/folder/" + "x" * 120 + "/c.items.log"
    error = CommandFailedError("step c: for_each command 'x' exited with code 3", log_file=log)
    summary = RunSummary(
        "f", "R", Path("/logs"), "failed", 0.1, 0, NO_COUNTS, (), (), step_errors=[("c", error)]
    )

    summary.show(console)

    text = printed(console)
    assert "step c: for_each command 'x' exited with code 3" in text
    assert f"log: {log}" in text  # one line for the terminal to wrap softly


def test_many_failed_steps_are_counted_past_twenty() -> None:
    errors = [(f"s{n}", ValueError("bad")) for n in range(23)]
    summary = RunSummary(
        "f", "R", Path("/logs"), "failed", 0.1, 0, NO_COUNTS, (), (), step_errors=errors
    )

    lines = summary.lines()

    assert "  error     step s0: ValueError: bad" in lines
    assert lines[-2] == "            +3 more failed steps: see --events-jsonl"


@pytest.fixture
def started(tmp_path: Path) -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    (tmp_path / "go").touch()
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def test_after_sigterm_status_says_cancelled_and_not_run_as_the_summary_does(
    tmp_path: Path, env: dict[str, str], started: list[subprocess.Popen[str]]
) -> None:
    write(tmp_path, "plan.yaml", GATED)
    run = subprocess.Popen(
        [sys.executable, "-m", "subplans", "run", "plan.yaml", "--no-progress"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    started.append(run)
    found = wait_until(lambda: latest(tmp_path), "the run to start")
    assert found is not None
    run_id: str = found
    with RunStore.open(tmp_path / ".subplans" / "state.db", readonly=True) as db:
        wait_until(lambda: len(db.process_groups(run_id)) == 2, "two running subplans")

    os.kill(run.pid, signal.SIGTERM)
    out, _ = run.communicate(timeout=20)

    assert run.returncode == 130
    assert "  subplans  4 total, 0 completed, 0 failed, 3 cancelled, 1 not run" in out
    assert "  steps     work cancelled, after not run" in out
    status = subplans("status", cwd=tmp_path, env=env).stdout.splitlines()
    assert status[4:7] == [
        "  subplans     4 total: 3 cancelled, 1 not run",
        "  steps        work cancelled, after not run",
        "  cancelled    3  interrupted by SIGTERM",
    ]
    listed = subplans("status", "latest", "--subplans", cwd=tmp_path, env=env).stdout
    assert [line.split()[:2] for line in listed.splitlines()[1:]] == [
        ["work/a", "cancelled"],
        ["work/b", "cancelled"],
        ["work/c", "cancelled"],
        ["after", "not"],
    ]
    report = json.loads(subplans("status", "--json", cwd=tmp_path, env=env).stdout)
    assert [(s["id"], s["state"], s["shown_state"]) for s in report["steps"]] == [
        ("work", "failed", "cancelled"),
        ("after", "pending", "not run"),
    ]
    assert report["shown_counts"]["cancelled"] == 3
    assert report["counts"]["failed"] == 3  # the stored counts stay as they were
    rows = json.loads(
        subplans("status", "latest", "--subplans", "--json", cwd=tmp_path, env=env).stdout
    )["subplans"]
    assert [(s["state"], s["shown_state"]) for s in rows] == [
        ("failed", "cancelled"),
        ("failed", "cancelled"),
        ("failed", "cancelled"),
        ("pending", "not run"),
    ]


def test_run_time_subplans_are_listed_and_logged_in_plan_order(
    tmp_path: Path, env: dict[str, str]
) -> None:
    inner = """
        name: inner
        steps:
          - name: build
            for_each: [x, y]
            subplan: {run: "echo {item}"}
          - name: t
            for_each: {command: "printf 'p\\\\nq\\\\n'"}
            subplan: {run: "echo {item}"}
        """
    write(tmp_path, "mods/m1/plan.yaml", inner)
    write(tmp_path, "mods/m2/plan.yaml", inner)
    write(
        tmp_path,
        "plan.yaml",
        """
        name: outer
        automation_profile: {max_parallel: 4}
        steps:
          - name: first
            run: "true"
          - name: port
            for_each: {glob: "mods/*/plan.yaml"}
            subplan: {name: "{index}", plan: "{item}"}
          - name: last
            for_each: [z, a]
            subplan: {run: "echo {item}"}
        """,
    )
    ran = subplans("run", "plan.yaml", "-q", cwd=tmp_path, env=env)
    assert ran.returncode == 0, ran.stdout + ran.stderr

    listed = subplans("status", "latest", "--subplans", cwd=tmp_path, env=env).stdout
    ids = [line.split()[0] for line in listed.splitlines()[1:]]
    nested = [f"port/{n}/{s}" for n in (0, 1) for s in ("build/x", "build/y", "t/p", "t/q")]
    assert ids == [
        "first",
        "port/0",
        *nested[:4],
        "port/1",
        *nested[4:],
        "last/z",
        "last/a",
    ]
    logged = subplans("logs", "latest", "--all", cwd=tmp_path, env=env).stdout
    tags = dict.fromkeys(line.split("]")[0][1:] for line in logged.splitlines())
    assert list(tags) == [i for i in ids if i not in ("port/0", "port/1")]


def test_logs_all_into_a_reader_that_goes_away_ends_quietly(
    tmp_path: Path, env: dict[str, str]
) -> None:
    write(
        tmp_path,
        "plan.yaml",
        """
        name: m
        steps:
          - name: w
            for_each: [a, b, c, d]
            subplan: {run: "seq 1 40000"}
        """,
    )
    assert subplans("run", "plan.yaml", "-q", cwd=tmp_path, env=env).returncode == 0
    reader = subprocess.Popen(
        [sys.executable, "-m", "subplans", "logs", "latest", "--all"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert reader.stdout is not None
    assert reader.stdout.readline().startswith(b"[w/a] ")
    reader.stdout.close()  # as `| head -1` does

    _, errors = reader.communicate(timeout=30)

    assert (reader.returncode, errors) == (0, b"")


# --- the same, in this process, from rows recorded here -------------------------------------

RUNNING, FAILED = SubplanExecutionState.RUNNING, SubplanExecutionState.FAILED


def cancelled_run(folder: Path) -> Path:
    """A run whose owner is gone: step ``s`` cancelled (s/a cancelled, s/b never started),
    step ``src`` failed by its command source, whose log is ``src.items.log``."""
    store = folder / "state.db"
    log = folder / "src.items.log"
    log.write_text("why it failed\n")
    cancel = SubplanCancelledError("interrupted by SIGTERM")
    source = CommandFailedError("for_each command 'x' exited with code 3", log_file=str(log))
    two = PlanManifest("plan.yaml", "plan", "h1", {}, ("s", "src"), (("s/a", "s"), ("s/b", "s")))
    with RunStore.open(store) as db:
        db.start_run("r1", two, owner=gone_owner())
        with db.recorder("r1") as recorder:
            recorder.handle(SubplanStateChanged("s/a", None, RUNNING, 1))
            recorder.handle(SubplanStateChanged("s/a", RUNNING, FAILED, 1, cancel))
            recorder.handle(StepStateChanged("s", StepState.RUNNING, StepState.FAILED, 2, cancel))
            recorder.handle(StepStateChanged("src", None, StepState.RUNNING, 0))
            recorder.handle(StepStateChanged("src", StepState.RUNNING, StepState.FAILED, 0, source))
    return store


@pytest.mark.usefixtures("isolated")
def test_status_in_this_process_says_cancelled_not_run_and_why_a_step_failed(
    tmp_path: Path,
) -> None:
    cancelled_run(tmp_path)

    shown = invoke("status", "r1", "--store", "state.db").stdout.splitlines()
    listed = invoke("status", "r1", "--subplans", "--store", "state.db").stdout.splitlines()
    step_log = invoke("logs", "r1", "src", "--store", "state.db")

    assert shown[3:8] == [
        "  subplans     2 total: 1 cancelled, 1 not run",
        "  steps        s cancelled, src failed",
        "  error        step src: for_each command 'x' exited with code 3",
        f"               log: {tmp_path / 'src.items.log'}",
        "  cancelled    1  interrupted by SIGTERM",
    ]
    assert [line.split()[:2] for line in listed[1:]] == [["s/a", "cancelled"], ["s/b", "not"]]
    assert (step_log.exit_code, step_log.stdout) == (0, "why it failed\n")


@pytest.mark.usefixtures("isolated")
def test_a_step_without_an_items_log_is_not_a_log(tmp_path: Path) -> None:
    with RunStore.open(tmp_path / "state.db") as db:
        db.start_run("r1", manifest("step/a"), owner=gone_owner())

    found = invoke("logs", "r1", "step", "--store", "state.db")

    # No run folder to look in: "step" is then the start of a subplan's id, as before.
    assert found.exit_code == 2
    assert "no log: it started no command" in found.stderr


@pytest.mark.usefixtures("isolated")
@pytest.mark.parametrize("selection", [["s/a"], ["--all"]])
def test_logs_into_a_closed_pipe_end_quietly_in_this_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, selection: list[str]
) -> None:
    log = tmp_path / "a.log"
    log.write_bytes(b"line\n" * 50_000)
    with RunStore.open(tmp_path / "state.db") as db:
        db.start_run("r1", manifest("s/a"), owner=gone_owner())
        with db.recorder("r1") as recorder:
            recorder.handle(SubplanStateChanged("s/a", None, RUNNING, 1))
            recorder.handle(SubplanProcessStarted("s/a", os.getpid(), str(log)))
    read, written = os.pipe()
    os.close(read)  # the reader has gone, as after `| head -1`
    closed = open(written, "w", encoding="utf-8")  # noqa: SIM115 - closed below
    monkeypatch.setattr(sys, "stdout", closed)
    try:
        code = main(["logs", "r1", *selection, "--store", "state.db"])
    finally:
        monkeypatch.undo()
        with contextlib.suppress(OSError):
            closed.close()

    assert code == 0


@pytest.mark.usefixtures("isolated")
def test_run_time_subplans_go_under_their_step_in_the_order_they_appeared(
    tmp_path: Path,
) -> None:
    steps = PlanManifest(
        "plan.yaml", "plan", "h1", {}, ("a", "port", "z"), (("a", "a"), ("z", "z"))
    )
    with RunStore.open(tmp_path / "state.db") as db:
        db.start_run("r1", steps, owner=gone_owner())
        with db.recorder("r1") as recorder:
            for subplan_id in ("a", "port/m2", "port/m1", "port/m2/s/x", "port/m1/s/x", "z"):
                recorder.handle(SubplanStateChanged(subplan_id, None, RUNNING, 1))
            recorder.handle(StepStateChanged("port/m2/s", None, StepState.RUNNING, 1))
            glob = ValueError("step port/m2/s: glob 'x*' matches no files")
            recorder.handle(
                StepStateChanged("port/m2/s", StepState.RUNNING, StepState.FAILED, 1, glob)
            )
        listed = [s.subplan_id for s in db.subplans("r1")]

    shown = invoke("status", "r1", "--store", "state.db").stdout

    assert listed == ["a", "port/m2", "port/m2/s/x", "port/m1", "port/m1/s/x", "z"]
    # A step's own error without a log: its line alone, naming the step.
    assert "\n  error        step port/m2/s: glob 'x*' matches no files\n  interrupted" in shown


def test_the_live_view_and_failure_lines_say_why_a_step_failed_by_itself(
    tmp_path: Path, console: Console
) -> None:
    write(tmp_path, "plan.yaml", FAILING_COMMAND)
    plan = load_plan(tmp_path / "plan.yaml", config=no_config(tmp_path))
    progress = PlanProgress(plan)
    view = LiveView(console, ProgressReporter(), progress, run_id="R1")
    stream = io.StringIO()
    lines = PlainLines(stream, failures_only=True)
    log = "/runs/R1/logs/c.items.log"
    own = CommandFailedError("step c: for_each command 'x' exited with code 3", log_file=log)
    for event in (
        StepStateChanged("c", None, StepState.RUNNING, 0),
        StepStateChanged("c", StepState.RUNNING, StepState.FAILED, 0, own),
        # Not by itself: its subplans failed, or it was cancelled; those say so elsewhere.
        StepStateChanged("d", StepState.RUNNING, StepState.FAILED, 1, DispatchError("1 failed")),
        StepStateChanged("d", StepState.RUNNING, StepState.FAILED, 1, SubplanCancelledError("c")),
        StepStateChanged("e", StepState.RUNNING, StepState.FAILED, 0, ValueError("no items")),
    ):
        progress(event)
        view(event)
        lines(event)

    assert printed(console).splitlines() == [
        "✗ step c: for_each command 'x' exited with code 3",
        f"    log: {log}",
        "✗ step e: ValueError: no items",
    ]
    assert [line.split("  ", 1)[1] for line in stream.getvalue().splitlines()] == [
        "failed     step c: for_each command 'x' exited with code 3",
        "failed     step e  ValueError: no items",
    ]
    assert list(progress.step_errors) == ["c", "e"]
