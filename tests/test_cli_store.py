"""The commands about stored runs, in-process: ``run`` recording into the store, ``runs``,
``status``, ``events``, ``logs``, ``resume`` and ``cancel``, and store errors as exit 2."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from subplans.cli.app import ExitCode, app, main
from subplans.cli.session import RunSession
from subplans.engine.errors import StoreError
from subplans.plans.loader import Overrides
from subplans.store import PlanManifest, ProcessIdentity, RunStore
from subplans.store.liveness import boot_id, process_start_time
from subplans.store.resume import run_manifest

from .conftest import wait_until
from .log_headers import unheaded
from .plans_helpers import write
from .process_helpers import group_members
from .store_support import gone_owner, invoke, load, start_group, stop
from .test_store_liveness import record_groups

runner = CliRunner()

RUN_ID = r"\d{8}-\d{6}-[0-9a-f]{6}"


# Every test runs the command isolated from the user's config and store.
pytestmark = pytest.mark.usefixtures("isolated")


@pytest.fixture
def db(tmp_path: Path) -> Iterator[RunStore]:
    """The default store of a plan in ``tmp_path`` (created empty if no run made it yet)."""
    with RunStore.open(tmp_path / ".subplans" / "state.db") as store:
        yield store


def json_of(*args: str) -> Any:
    result = invoke(*args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def last_run_id() -> str:
    found: str = json_of("runs")[0]["id"]
    return found


# A subplan counts its runs in a file; "flaky" fails until the file "fixed" exists.
COUNTING = """
    name: counting
    automation_profile: keep-going
    steps:
      - name: port
        for_each: [a, b, flaky]
        subplan:
          run: "echo {item} | tee -a ran.txt; test {item} != flaky || test -e fixed"
      - name: report
        run: "echo report >> ran.txt"
    """


def ran(folder: Path) -> list[str]:
    return (folder / "ran.txt").read_text().split()


# --- run records into the store -------------------------------------------------------------


def test_run_records_the_run_with_its_overrides(tmp_path: Path, db: RunStore) -> None:
    write(tmp_path, "plan.yaml", COUNTING)

    result = invoke(
        "run", "plan.yaml", "-q", "-j", "1", "--failure-mode", "fail_fast", "-p", "keep-going"
    )

    assert result.exit_code == ExitCode.FAILED
    run_id = re.search(rf"\(run ({RUN_ID})\)", result.stdout)[1]  # type: ignore[index]
    info = db.get_run(run_id)
    assert info.status == "failed"
    assert info.plan_file == str(tmp_path / "plan.yaml")
    assert info.run_dir == str(tmp_path / ".subplans" / "runs" / run_id)
    assert info.counts == {
        "pending": 1,
        "running": 0,
        "completed": 2,
        "failed": 1,
        "interrupted": 0,
    }
    assert info.profile["overrides"] == {
        "max_parallel": 1,
        "failure_mode": "fail_fast",
        "profile": "keep-going",
    }
    assert info.profile["sources"]["max_parallel"]["key"] == "--max-parallel"
    assert db.integrity_check() == []
    # Every event of the run is there, in order, ending with the run's end.
    events = db.events(run_id)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert (events[-1].kind, events[-1].payload["state"]) == ("plan_finished", "failed")


def test_run_honours_subplans_store_and_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, "plan.yaml", "name: x\nsteps:\n  - {name: a, run: 'true'}\n")
    monkeypatch.setenv("SUBPLANS_STORE", str(tmp_path / "env" / "state.db"))

    assert invoke("run", "plan.yaml", "-q").exit_code == 0
    assert invoke("run", "plan.yaml", "-q", "--store", "option.db").exit_code == 0

    with RunStore.open(tmp_path / "env" / "state.db") as env_store:
        assert len(env_store.list_runs()) == 1
    with RunStore.open(tmp_path / "option.db") as option_store:
        assert len(option_store.list_runs()) == 1
    assert not (tmp_path / ".subplans" / "state.db").exists()
    assert len(json_of("runs")) == 1  # the commands without a plan honour it too


def test_an_interrupted_run_is_recorded_cancelled(tmp_path: Path, db: RunStore) -> None:
    write(
        tmp_path,
        "interrupt_store_helper.py",
        """
        import asyncio, os, signal

        async def interrupt():
            os.kill(os.getpid(), signal.SIGINT)
            await asyncio.sleep(30)
        """,
    )
    write(
        tmp_path,
        "plan.yaml",
        "name: s\nsteps:\n  - {name: a, call: 'interrupt_store_helper:interrupt'}\n",
    )

    result = invoke("run", str(tmp_path / "plan.yaml"), "-q")

    assert result.exit_code == ExitCode.INTERRUPTED
    assert db.get_run().status == "cancelled"


def test_a_recorder_that_cannot_start_fails_the_run_before_anything_runs(
    tmp_path: Path, db: RunStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, "plan.yaml", COUNTING)

    def broken(self: RunStore, run_id: str, **options: object) -> None:
        raise StoreError(f"cannot open the store {self.path}: disk I/O error")

    monkeypatch.setattr(RunStore, "recorder", broken)

    result = invoke("run", "plan.yaml")

    assert result.exit_code == ExitCode.INVALID
    assert result.stderr == "error: cannot open the store .subplans/state.db: disk I/O error\n"
    assert result.stdout == ""
    assert not (tmp_path / "ran.txt").exists()
    assert db.get_run().status == "failed"


def test_ctrl_c_before_the_signal_handlers_records_the_run_cancelled(
    tmp_path: Path, db: RunStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, "plan.yaml", COUNTING)

    def interrupted(session: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(RunSession, "run_blocking", interrupted)

    assert main(["run", "plan.yaml", "-q"]) == ExitCode.INTERRUPTED
    assert db.get_run().status == "cancelled"


def test_a_run_that_ended_keeps_its_status_whatever_comes_after(
    tmp_path: Path, db: RunStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, "plan.yaml", COUNTING)
    run = RunSession.run_blocking

    def run_then_interrupt(session: RunSession) -> None:
        run(session)
        raise KeyboardInterrupt

    monkeypatch.setattr(RunSession, "run_blocking", run_then_interrupt)

    assert main(["run", "plan.yaml", "-q"]) == ExitCode.INTERRUPTED
    assert db.get_run().status == "failed"


def test_a_store_that_fails_mid_run_is_a_warning_and_the_run_goes_on(
    tmp_path: Path, db: RunStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    from .writer_support import failing_writer

    write(tmp_path, "plan.yaml", COUNTING)
    failing_writer(monkeypatch, "database or disk is full")

    result = invoke("run", "plan.yaml", "-q")

    assert result.exit_code == ExitCode.FAILED  # the run's own outcome
    assert re.fullmatch(
        r"warning: cannot write to the store \S+: database or disk is full; "
        rf"events of run {RUN_ID} are no longer recorded\n",
        result.stderr,
    )
    assert sorted(ran(tmp_path)) == ["a", "b", "flaky"]
    # Nothing recorded its end: once this process is gone, the run shows as interrupted.
    assert db.get_run().recorded_status == "running"


# --- store errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("store", "message"),
    [
        ("/proc/subplans-test/state.db", r"cannot create the folder /proc/subplans-test: .+"),
        ("a-file/state.db", r"cannot create the folder a-file: File exists"),
        ("a-folder", r"it is a folder, not a file"),
    ],
)
def test_an_unusable_store_path_is_exit_2_and_nothing_runs(
    store: str, message: str, tmp_path: Path
) -> None:
    write(tmp_path, "plan.yaml", COUNTING)
    (tmp_path / "a-file").write_text("not a folder")
    (tmp_path / "a-folder").mkdir()

    result = invoke("run", "plan.yaml", "--store", store)

    assert result.exit_code == ExitCode.INVALID
    assert re.fullmatch(rf"error: cannot open the store {store}: {message}\n", result.stderr)
    assert result.stdout == ""
    assert not (tmp_path / "ran.txt").exists()
    assert not (tmp_path / ".subplans").exists()


def test_a_lock_that_cannot_be_created_is_exit_2_and_nothing_runs(tmp_path: Path) -> None:
    write(tmp_path, "plan.yaml", COUNTING)
    (tmp_path / ".subplans").mkdir()
    (tmp_path / ".subplans" / "locks").write_text("a file where the locks go")

    result = invoke("run", "plan.yaml")

    assert result.exit_code == ExitCode.INVALID
    assert re.fullmatch(
        rf"error: cannot create the lock \.subplans/locks/{RUN_ID}\.lock: File exists\n",
        result.stderr,
    )
    assert not (tmp_path / ".subplans" / "runs").exists()
    assert not (tmp_path / "ran.txt").exists()


GARBAGE = b"this is not a database, " * 200


@pytest.mark.parametrize(
    "args",
    [
        ["run", "plan.yaml"],
        ["runs"],
        ["status"],
        ["events", "r1"],
        ["logs", "r1", "a"],
        ["resume", "r1"],
        ["cancel", "r1"],
    ],
)
def test_a_corrupt_store_is_exit_2_and_left_as_it_was(args: list[str], tmp_path: Path) -> None:
    write(tmp_path, "plan.yaml", COUNTING)
    path = tmp_path / "state.db"
    path.write_bytes(GARBAGE)

    result = invoke(*args, "--store", "state.db")

    assert result.exit_code == ExitCode.INVALID
    assert result.stderr == (
        "error: cannot open the store state.db: not an SQLite database (or a damaged one)\n"
    )
    assert path.read_bytes() == GARBAGE
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plan.yaml", "state.db"]


@pytest.mark.parametrize(
    "args", [["status"], ["events", "r1"], ["logs", "r1", "a"], ["resume", "r1"], ["cancel", "r1"]]
)
def test_commands_about_past_runs_never_create_a_store(args: list[str], tmp_path: Path) -> None:
    result = invoke(*args)

    assert result.exit_code == ExitCode.INVALID
    assert result.stderr == (
        "error: cannot open the store .subplans/state.db: no store there yet "
        f"(looked for {tmp_path}/.subplans/state.db)\n"
    )
    assert not (tmp_path / ".subplans").exists()


@pytest.mark.parametrize("command", ["status", "events", "logs", "resume", "cancel"])
def test_an_unknown_run_is_exit_2(command: str, db: RunStore) -> None:
    args = [command, "nope", "a"] if command == "logs" else [command, "nope"]

    result = invoke(*args)

    assert result.exit_code == ExitCode.INVALID
    assert result.stderr == "error: no run nope in the store .subplans/state.db\n"


@pytest.mark.parametrize("command", ["status", "events", "resume", "cancel"])
def test_a_run_id_that_could_not_be_one_is_a_usage_error(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([command, "../etc"]) == ExitCode.INVALID

    assert re.fullmatch(
        r"error: invalid value for '(\[RUN_ID\]|RUN_ID)': run_id must be ASCII letters, .+ "
        rf"got '../etc' \(see 'subplans {command} --help'\)\n",
        capsys.readouterr().err,
    )


@pytest.mark.parametrize("command", ["runs", "status", "events", "logs", "resume", "cancel"])
def test_every_store_command_has_help_with_an_example(command: str) -> None:
    result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "120"})

    assert result.exit_code == 0
    assert "--store" in result.stdout
    assert re.search(rf"^\s+subplans {command}\b", result.stdout.split("Example")[-1], re.M)


# --- runs -----------------------------------------------------------------------------------


def test_runs_lists_runs_newest_first(tmp_path: Path) -> None:
    write(tmp_path, "plan.yaml", COUNTING)
    invoke("run", "plan.yaml", "-q")
    (tmp_path / "fixed").touch()
    invoke("run", "plan.yaml", "-q")

    found = json_of("runs")

    assert [run["status"] for run in found] == ["completed", "failed"]
    assert found[0]["started_at"] >= found[1]["started_at"]
    for run in found:
        assert re.fullmatch(RUN_ID, run["id"])
        assert run["plan"] == str(tmp_path / "plan.yaml")
        assert run["finished_at"] >= run["started_at"]
        assert set(run["counts"]) == {"pending", "running", "completed", "failed", "interrupted"}
    assert found[0]["counts"]["completed"] == 4
    assert found[1]["counts"]["failed"] == 1
    assert json_of("runs", "--limit", "1") == found[:1]

    lines = invoke("runs").stdout.splitlines()
    assert re.fullmatch(r"run +status +started \(UTC\) +took +active +subplans +plan", lines[0])
    assert re.fullmatch(
        rf"{found[0]['id']}  completed  \d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d +\d+\.\d\ds +\d+\.\d\ds  "
        r"4 total: 4 completed +counting",
        lines[1],
    )
    assert "4 total: 2 completed, 1 failed, 1 pending" in lines[2]


def test_runs_without_a_store_lists_nothing(tmp_path: Path) -> None:
    assert json_of("runs") == []
    assert invoke("runs").stdout == (
        "no runs in the store .subplans/state.db: no store there yet "
        f"(looked for {tmp_path}/.subplans/state.db)\n"
    )
    assert not (tmp_path / ".subplans").exists()


def test_runs_rejects_a_limit_below_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["runs", "--limit", "0"]) == ExitCode.INVALID

    assert re.fullmatch(
        r"error: invalid value for '--limit' / '-n': .*\b1\b.* \(see 'subplans runs --help'\)\n",
        capsys.readouterr().err,
    )


# --- status ---------------------------------------------------------------------------------


def test_status_of_the_latest_run_names_its_failures_and_how_to_resume(tmp_path: Path) -> None:
    write(tmp_path, "plan.yaml", COUNTING)
    invoke("run", "plan.yaml", "-q")
    run_id = last_run_id()

    result = invoke("status")

    assert result.exit_code == 0
    log = tmp_path / ".subplans" / "runs" / run_id / "logs" / "port__flaky.log"
    assert result.stdout.splitlines() == [
        f"run {run_id}  failed",
        f"  plan         counting  ({tmp_path / 'plan.yaml'})",
        result.stdout.splitlines()[2],
        result.stdout.splitlines()[3],
        "  subplans     4 total: 2 completed, 1 failed, 1 not run",
        "  steps        port failed, report skipped",
        f"  failed       port/flaky  exited with code 1  log: {log}",
        f"  resume       subplans resume {run_id}",
    ]
    assert re.fullmatch(
        r"  started      \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC by process \d+ on \S+",
        result.stdout.splitlines()[2],
    )
    assert re.fullmatch(
        r"  ended        \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC, after \d+\.\d\ds",
        result.stdout.splitlines()[3],
    )
    report = json_of("status", run_id)
    assert report["status"] == "failed"
    assert [f["id"] for f in report["failures"]] == ["port/flaky"]
    assert report["failures"][0]["exit_code"] == 1
    assert report["failures"][0]["log_file"] == str(log)
    assert [(s["id"], s["state"]) for s in report["steps"]] == [
        ("port", "failed"),
        ("report", "skipped"),
    ]
    assert report["running"] == report["interrupted"] == report["leftovers"] == []


def test_status_without_runs_is_exit_2(db: RunStore) -> None:
    result = invoke("status")

    assert result.exit_code == ExitCode.INVALID
    assert result.stderr == "error: no runs in the store .subplans/state.db\n"


@pytest.fixture
def interrupted(tmp_path: Path, db: RunStore) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A run of COUNTING whose owner is gone, that left a process group running (port/b)."""
    node = load(tmp_path, COUNTING)
    db.start_run("r1", run_manifest(node, Overrides()), owner=gone_owner())
    leftover = start_group("exec sleep 30")
    try:
        record_groups(db, "r1", {"port/b": leftover.pid})
        yield "r1", leftover
    finally:
        stop(leftover)


def test_status_lists_what_an_interrupted_run_left_running_and_stops_nothing(
    interrupted: tuple[str, subprocess.Popen[bytes]],
) -> None:
    """Pins #8: status stopped the leftovers of an interrupted run; a status must not kill."""
    _, leftover = interrupted

    report = json_of("status")

    assert report["status"] == "interrupted"
    assert report["counts"]["interrupted"] == 1
    assert [s["id"] for s in report["interrupted"]] == ["port/b"]
    assert report["running"] == []
    assert report["leftovers"] == [
        {"subplan_id": "port/b", "pid": leftover.pid, "pgid": leftover.pid, "command": "sleep 30"}
    ]
    assert group_members(leftover.pid) == [leftover.pid]
    assert json_of("status")["leftovers"] == report["leftovers"]  # still there, still listed


def test_status_lists_the_leftovers_and_how_to_stop_them(
    interrupted: tuple[str, subprocess.Popen[bytes]],
) -> None:
    _, leftover = interrupted

    lines = invoke("status").stdout.splitlines()

    assert lines[-3:] == [
        f"  left over    port/b  pid {leftover.pid}, process group {leftover.pid}: sleep 30",
        "  stop them    subplans cancel r1",
        "  resume       subplans resume r1",
    ]
    assert group_members(leftover.pid) == [leftover.pid]


def test_status_lists_the_leftovers_whoever_holds_the_lock(
    interrupted: tuple[str, subprocess.Popen[bytes]], db: RunStore
) -> None:
    run_id, leftover = interrupted

    with db.lock(run_id):
        report = json_of("status")

    assert report["status"] == "interrupted"
    assert [left["pid"] for left in report["leftovers"]] == [leftover.pid]
    assert group_members(leftover.pid) == [leftover.pid]


def test_status_needs_no_lock_to_list_the_leftovers(
    interrupted: tuple[str, subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    _, leftover = interrupted
    (tmp_path / ".subplans" / "locks").write_text("a file where the locks go")

    result = invoke("status")

    assert result.exit_code == 0
    assert result.stderr == ""
    assert result.stdout.startswith("run r1  interrupted\n")
    assert f"  left over    port/b  pid {leftover.pid}," in result.stdout
    assert group_members(leftover.pid) == [leftover.pid]


# --- events and logs ------------------------------------------------------------------------


def test_events_prints_every_stored_event_as_a_json_line(tmp_path: Path, db: RunStore) -> None:
    write(tmp_path, "plan.yaml", COUNTING)
    invoke("run", "plan.yaml", "-q", "--events-jsonl", "live.jsonl")
    run_id = last_run_id()

    result = invoke("events", run_id)

    assert result.exit_code == 0
    stored = [json.loads(line) for line in result.stdout.splitlines()]
    assert stored == [event.to_dict() for event in db.events(run_id)]
    live = [json.loads(line) for line in (tmp_path / "live.jsonl").read_text().splitlines()]
    # The same events as the live stream, in the same order, numbered.
    assert [(e["event"], e["timestamp"]) for e in stored] == [
        (e["event"], e["timestamp"]) for e in live
    ]
    assert [e["seq"] for e in stored] == list(range(1, len(live) + 1))
    assert invoke("events", run_id, "--follow").stdout == result.stdout  # it has ended


class ClosedPipe(io.StringIO):
    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")


def test_events_to_a_reader_that_went_away_ends_quietly(
    tmp_path: Path, db: RunStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, "plan.yaml", COUNTING)
    invoke("run", "plan.yaml", "-q")
    run_id = last_run_id()
    monkeypatch.setattr("sys.stdout", ClosedPipe())

    assert main(["events", run_id]) == ExitCode.OK


def test_logs_prints_a_subplans_output(tmp_path: Path) -> None:
    write(tmp_path, "plan.yaml", COUNTING)
    invoke("run", "plan.yaml", "-q")
    run_id = last_run_id()

    result = invoke("logs", run_id, "port/flaky")

    assert result.exit_code == 0
    assert unheaded(result.stdout) == "flaky\n"


def test_logs_of_a_subplan_without_one_is_exit_2(tmp_path: Path) -> None:
    write(tmp_path, "plan.yaml", COUNTING)
    invoke("run", "plan.yaml", "-q")
    run_id = last_run_id()

    unknown = invoke("logs", run_id, "port/nope")
    never_ran = invoke("logs", run_id, "report")
    (tmp_path / ".subplans" / "runs" / run_id / "logs" / "port__a.log").unlink()
    deleted = invoke("logs", run_id, "port/a")

    assert unknown.exit_code == never_ran.exit_code == deleted.exit_code == ExitCode.INVALID
    assert unknown.stderr == f"error: run {run_id} has no subplan 'port/nope'\n"
    assert never_ran.stderr == (
        f"error: subplan 'report' of run {run_id} has no log: it started no command\n"
    )
    assert re.fullmatch(
        r"error: cannot read the log of 'port/a': \S+/port__a\.log: No such file or directory\n",
        deleted.stderr,
    )


# --- resume ---------------------------------------------------------------------------------


def test_resume_runs_what_did_not_complete_and_skips_the_rest(tmp_path: Path, db: RunStore) -> None:
    write(tmp_path, "plan.yaml", COUNTING)
    invoke("run", "plan.yaml", "-q", "-j", "3")
    run_id = last_run_id()
    (tmp_path / "fixed").touch()

    result = invoke("resume", run_id)

    assert result.exit_code == ExitCode.OK, result.output
    assert sorted(ran(tmp_path)) == ["a", "b", "flaky", "flaky", "report"]
    out = result.stdout
    assert re.search(r"  skipped    2 subplans of step port  \(already completed\)$", out, re.M)
    assert re.search(rf"^plan counting completed in \S+  \(run {run_id}\)$", out, re.M)
    assert "  subplans  4 total, 2 completed, 0 failed, 2 already completed\n" in out
    info = db.get_run(run_id)
    assert (info.status, info.resumes) == ("completed", 1)
    # The original command line's overrides apply again.
    assert info.profile["values"]["max_parallel"] == 3
    assert info.profile["sources"]["max_parallel"]["key"] == "--max-parallel"
    # The same run folder: the flaky subplan's log has both attempts' output appended.
    assert len(list((tmp_path / ".subplans" / "runs").iterdir())) == 1
    events = db.events(run_id)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert [e.subplan_id for e in events if e.kind == "subplan_skipped"] == ["port/a", "port/b"]


def test_resume_takes_the_output_options_of_run(tmp_path: Path) -> None:
    write(tmp_path, "plan.yaml", COUNTING)
    invoke("run", "plan.yaml", "-q")
    run_id = last_run_id()

    result = invoke("resume", run_id, "--events-jsonl", "-", "--no-progress")

    assert result.exit_code == ExitCode.FAILED
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert {e["run_id"] for e in events} == {run_id}
    assert "  subplans  4 total, 0 completed, 1 failed, 2 already completed, 1 not run\n" in (
        result.stderr
    )


def test_resume_refuses_a_plan_whose_subplans_changed_unless_forced(
    tmp_path: Path, db: RunStore
) -> None:
    write(tmp_path, "plan.yaml", COUNTING)
    invoke("run", "plan.yaml", "-q")
    run_id = last_run_id()
    write(tmp_path, "plan.yaml", COUNTING.replace("[a, b, flaky]", "[a, c, flaky]"))

    refused = invoke("resume", run_id, "--events-jsonl", "refused.jsonl")
    forced = invoke("resume", run_id, "--force")

    assert refused.exit_code == ExitCode.INVALID
    assert refused.stderr == (
        f"error: the plan's subplans changed since run {run_id}: 1 subplan added (port/c) and "
        "1 subplan removed (port/b); resume with --force to run the plan as it is now\n"
    )
    assert not (tmp_path / "refused.jsonl").exists()  # refused before anything was opened
    assert forced.exit_code == ExitCode.FAILED  # flaky still fails
    assert forced.stdout.startswith(
        f"the plan's subplans changed since run {run_id}: 1 subplan added (port/c) and "
        "1 subplan removed (port/b); resuming anyway (--force)\n"
    )
    assert ran(tmp_path).count("c") == 1
    assert ran(tmp_path).count("a") == 1
    assert {s.subplan_id for s in db.subplans(run_id)} == {
        "port/a",
        "port/c",
        "port/flaky",
        "report",
    }


def test_resume_says_when_only_the_plans_content_changed(tmp_path: Path) -> None:
    write(tmp_path, "plan.yaml", COUNTING)
    invoke("run", "plan.yaml", "-q")
    run_id = last_run_id()
    write(tmp_path, "plan.yaml", COUNTING.replace("echo report", "echo REPORT"))

    result = invoke("resume", run_id, "-q")

    assert result.exit_code == ExitCode.FAILED
    assert result.stdout.startswith(
        f"the plan's content changed since run {run_id}, but not its subplans\n"
    )


def test_resume_of_a_run_driven_by_another_process_is_refused(tmp_path: Path, db: RunStore) -> None:
    write(tmp_path, "plan.yaml", COUNTING)
    invoke("run", "plan.yaml", "-q")
    run_id = last_run_id()

    with db.lock(run_id):
        result = invoke("resume", run_id)

    assert result.exit_code == ExitCode.INVALID
    assert re.fullmatch(
        rf"error: run {run_id} is being driven by process {os.getpid()} on \S+; wait for it "
        rf"to end, or stop it with `subplans cancel {run_id}`\n",
        result.stderr,
    )
    assert sorted(ran(tmp_path)) == ["a", "b", "flaky"]


def test_resume_refuses_a_live_owner_that_holds_no_lock(tmp_path: Path, db: RunStore) -> None:
    node = load(tmp_path, COUNTING)
    db.start_run("r1", PlanManifest.from_plan(node))  # owned by this process, alive

    result = invoke("resume", "r1")

    assert result.exit_code == ExitCode.INVALID
    assert re.fullmatch(
        rf"error: run r1 is still being driven by process {os.getpid()} on \S+; its processes "
        "are its own\n",
        result.stderr,
    )


def test_resume_stops_the_leftovers_first_and_says_so(
    interrupted: tuple[str, subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    run_id, leftover = interrupted
    (tmp_path / "fixed").touch()

    result = invoke("resume", run_id, "--no-progress")

    assert result.exit_code == ExitCode.OK, result.output
    assert result.stdout.startswith(
        f"stopped 1 process group that run r1 left running: port/b (process group "
        f"{leftover.pid}, SIGTERM)\n"
    )
    assert leftover.wait(timeout=5) < 0
    assert sorted(ran(tmp_path)) == ["a", "b", "flaky", "report"]


def test_resume_of_a_run_recorded_without_a_run_folder_or_overrides(
    tmp_path: Path, db: RunStore
) -> None:
    node = load(tmp_path, COUNTING)
    db.start_run("r1", PlanManifest.from_plan(node), owner=gone_owner())

    result = invoke("resume", "r1", "-q")

    assert result.exit_code == ExitCode.FAILED
    assert (tmp_path / ".subplans" / "runs" / "r1" / "logs" / "port__a.log").exists()


def test_resume_when_the_plan_file_is_gone_is_exit_2(tmp_path: Path) -> None:
    write(tmp_path, "plan.yaml", COUNTING)
    invoke("run", "plan.yaml", "-q")
    (tmp_path / "plan.yaml").unlink()

    result = invoke("resume", last_run_id())

    assert result.exit_code == ExitCode.INVALID
    assert result.stderr == f"error: {tmp_path / 'plan.yaml'}: no such file\n"


# --- cancel ---------------------------------------------------------------------------------


@pytest.mark.parametrize("wait", [True, False])
def test_cancel_signals_the_owner_and_waits_for_the_run_to_stop(
    wait: bool, tmp_path: Path, db: RunStore
) -> None:
    owner_process = subprocess.Popen(["sleep", "30"])
    try:
        wait_until(lambda: process_start_time(owner_process.pid) is not None)
        host = ProcessIdentity.current().host
        owner = ProcessIdentity(
            owner_process.pid, host, boot_id(), process_start_time(owner_process.pid)
        )
        db.start_run("r1", PlanManifest(file="plan.yaml"), owner=owner)

        result = invoke("cancel", "r1", *(["--wait"] if wait else []))

        assert result.exit_code == 0, result.output
        # A bare "sleep" dies of SIGTERM: it never ends the run, which shows as interrupted.
        assert result.stdout == (
            f"asked run r1 to stop: sent SIGTERM to process {owner_process.pid} on {host}\n"
            + ("run r1 interrupted\n" if wait else "")
        )
        assert owner_process.wait(timeout=5) < 0
    finally:
        owner_process.kill()
        owner_process.wait()


def test_cancel_of_a_run_that_ended_is_exit_2(tmp_path: Path) -> None:
    write(tmp_path, "plan.yaml", COUNTING)
    invoke("run", "plan.yaml", "-q")
    run_id = last_run_id()

    result = invoke("cancel", run_id)

    assert result.exit_code == ExitCode.INVALID
    assert result.stderr == f"error: run {run_id} has already ended (failed)\n"


def test_an_unusable_store_keeps_the_events_file(tmp_path: Path) -> None:
    """Pins: the --events-jsonl file was emptied before the store was found unusable."""
    write(tmp_path, "plan.yaml", COUNTING)
    (tmp_path / "events.jsonl").write_text('{"kept": true}\n')
    (tmp_path / "garbage.db").write_bytes(b"not a database at all" * 100)

    result = invoke(
        "run", "plan.yaml", "-q", "--events-jsonl", "events.jsonl", "--store", "garbage.db"
    )

    assert result.exit_code == ExitCode.INVALID
    assert (tmp_path / "events.jsonl").read_text() == '{"kept": true}\n'
    (tmp_path / "fixed").write_text("")  # the plan's flaky subplan passes now
    assert invoke("run", "plan.yaml", "-q", "--events-jsonl", "events.jsonl").exit_code == 0
    lines = (tmp_path / "events.jsonl").read_text().splitlines()
    assert json.loads(lines[0])["event"] == "plan_started"


def test_cancel_of_an_interrupted_run_that_left_nothing_says_so(
    tmp_path: Path, db: RunStore
) -> None:
    node = load(tmp_path, COUNTING)
    db.start_run("r1", PlanManifest.from_plan(node), owner=gone_owner())

    result = invoke("cancel", "r1")

    assert result.exit_code == 0, result.output
    assert result.stdout == (
        "run r1 was interrupted and left nothing running\n"
        "run r1 stays interrupted: resume it with `subplans resume r1`\n"
    )
    assert db.get_run("r1").status == "interrupted"
