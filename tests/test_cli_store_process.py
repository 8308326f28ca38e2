"""Durable runs with real processes: ``subplans run`` killed with SIGKILL and resumed, ``status``
and ``events --follow`` from a second process during a live run, a second ``resume`` refused,
``cancel`` from another process, and unusable stores, all through ``python -m subplans``."""

from __future__ import annotations

import collections
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from subplans.store import RunStore, StoreError

from .conftest import command_env, wait_until
from .plans_helpers import write
from .store_support import GATED
from .test_cli_process import processes_of_run, subplans


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """No user config, no terminal; the store named by SUBPLANS_STORE, as a user may set it."""
    return command_env(
        SUBPLANS_CONFIG=str(tmp_path / "no-config.yaml"),
        SUBPLANS_STORE=str(tmp_path / "store" / "state.db"),
    )


@pytest.fixture
def started(tmp_path: Path) -> Iterator[list[subprocess.Popen[str]]]:
    """Processes a test starts; any still running at its end is stopped (a failed test), and
    the subplans of the plans below, which wait on files, are let go."""
    procs: list[subprocess.Popen[str]] = []
    yield procs
    (tmp_path / "go").touch()
    (tmp_path / "hold").unlink(missing_ok=True)
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def start(
    started: list[subprocess.Popen[str]], *args: str, cwd: Path, env: dict[str, str]
) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "subplans", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    started.append(proc)
    return proc


def store_of(env: dict[str, str]) -> Path:
    return Path(env["SUBPLANS_STORE"])


def latest_run(env: dict[str, str]) -> str | None:
    """The id of the latest run, once the run has created the store and recorded its start."""
    try:
        with RunStore.open(store_of(env), readonly=True) as db:
            return db.get_run().id
    except StoreError:
        return None


def status_json(run_id: str, cwd: Path, env: dict[str, str]) -> dict[str, Any]:
    done = subplans("status", run_id, "--json", cwd=cwd, env=env)
    assert done.returncode == 0, done.stderr
    found: dict[str, Any] = json.loads(done.stdout)
    return found


def process_groups_of_run(run_id: str) -> set[int]:
    """The process groups of the live processes that carry ``SUBPLANS_RUN_ID=run_id``."""
    groups = set()
    for pid in processes_of_run(run_id):
        try:
            groups.add(os.getpgid(pid))
        except ProcessLookupError:
            continue
    return groups


def one_error_line(done: subprocess.CompletedProcess[str], pattern: str) -> None:
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert re.fullmatch(rf"error: {pattern}\n", done.stderr), done.stderr


# --- killed and resumed -----------------------------------------------------------------------

# Each subplan waits while the file "hold" exists, then appends its id to ran.txt, works a
# moment and appends "done ID". The test holds new work back before the kill, so that every
# process the run leaves behind is one the store has recorded.
FORTY = """
    name: forty
    automation_profile: {max_parallel: 4, cancel_grace: 1}
    steps:
      - name: work
        for_each: {lines: items.txt}
        subplan:
          run: >-
            while [ -e hold ]; do sleep 0.01; done;
            echo "$SUBPLANS_SUBPLAN" >> ran.txt; sleep 0.2; echo "done $SUBPLANS_SUBPLAN" >> ran.txt
    """


def lines_of(path: Path) -> list[str]:
    try:
        return path.read_text().splitlines()
    except FileNotFoundError:
        return []


def test_a_killed_run_is_interrupted_and_resume_finishes_it_without_rerunning_anything_done(
    tmp_path: Path, env: dict[str, str], started: list[subprocess.Popen[str]]
) -> None:
    write(tmp_path, "plan.yaml", FORTY)
    (tmp_path / "items.txt").write_text("".join(f"{n}\n" for n in range(1, 41)))
    ran = tmp_path / "ran.txt"
    run = start(started, "run", "plan.yaml", "--quiet", cwd=tmp_path, env=env)

    wait_until(lambda: sum(line.startswith("done ") for line in lines_of(ran)) >= 8, "8 done")
    (tmp_path / "hold").touch()
    run_id = latest_run(env)
    assert run_id is not None
    db = RunStore.open(store_of(env), readonly=True)

    def settled() -> bool:
        # Nothing mid-work, every end recorded, and the four held processes recorded.
        found = lines_of(ran)
        began = {line for line in found if not line.startswith("done ")}
        done = {line[5:] for line in found if line.startswith("done ")}
        recorded = {group.pgid for group in db.process_groups(run_id)}
        return (
            began == done
            and db.completed_subplans(run_id) == done
            and len(recorded) == 4
            and process_groups_of_run(run_id) == recorded
        )

    wait_until(settled, "the run to settle with 4 held subplans", timeout=10)
    completed_before = db.completed_subplans(run_id)
    assert 8 <= len(completed_before) < 40

    run.send_signal(signal.SIGKILL)
    assert run.wait(timeout=5) == -signal.SIGKILL
    assert len(processes_of_run(run_id)) >= 4  # the held subplans outlive their owner...

    report = status_json(run_id, tmp_path, env)

    assert report["status"] == "interrupted"
    assert report["counts"]["interrupted"] == 4
    assert report["counts"]["completed"] == len(completed_before)
    # Status lists what the run left running (the held shells, each with a short sleep that
    # comes and goes), and stops none of it (#8)...
    listed = {
        entry["subplan_id"]: entry for entry in report["leftovers"] if entry["pgid"] == entry["pid"]
    }
    assert len(listed) == 4
    assert all(entry["command"].startswith("/bin/sh -c while") for entry in listed.values())
    assert {entry["pid"] for entry in listed.values()} <= set(processes_of_run(run_id))
    # ...until cancel stops them.
    cancelled = subplans("cancel", run_id, cwd=tmp_path, env=env)
    assert cancelled.returncode == 0, cancelled.stderr
    assert cancelled.stdout.startswith(f"stopped 4 process groups that run {run_id} left running")
    assert processes_of_run(run_id) == []
    assert status_json(run_id, tmp_path, env)["status"] == "interrupted"

    (tmp_path / "hold").unlink()
    resumed = subplans("resume", run_id, "--quiet", cwd=tmp_path, env=env)

    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"{len(completed_before)} already completed" in resumed.stdout
    final = status_json(run_id, tmp_path, env)
    assert final["status"] == "completed"
    assert final["counts"]["completed"] == 40
    assert final["resumes"] == 1
    runs_done = collections.Counter(line[5:] for line in lines_of(ran) if line.startswith("done "))
    assert set(runs_done) == {f"work/{n}" for n in range(1, 41)}
    assert {subplan: runs_done[subplan] for subplan in completed_before} == dict.fromkeys(
        completed_before, 1
    )
    assert processes_of_run(run_id) == []
    db.close()
    with sqlite3.connect(store_of(env)) as check:
        assert check.execute("PRAGMA integrity_check").fetchall() == [("ok",)]


# --- a live run, seen from other processes ------------------------------------------------------


def start_gated(
    tmp_path: Path, env: dict[str, str], started: list[subprocess.Popen[str]]
) -> tuple[subprocess.Popen[str], str]:
    """A live run of GATED with two subplans running (and recorded as such)."""
    write(tmp_path, "plan.yaml", GATED)
    run = start(started, "run", "plan.yaml", "--no-progress", cwd=tmp_path, env=env)
    wait_until(lambda: latest_run(env) is not None, "the run to start")
    with RunStore.open(store_of(env), readonly=True) as db:
        run_id = db.get_run().id
        wait_until(lambda: len(db.process_groups(run_id)) == 2, "two running subplans")
    return run, run_id


def test_status_events_follow_and_a_second_resume_during_a_live_run(
    tmp_path: Path, env: dict[str, str], started: list[subprocess.Popen[str]]
) -> None:
    run, run_id = start_gated(tmp_path, env, started)

    report = status_json(run_id, tmp_path, env)
    text = subplans("status", cwd=tmp_path, env=env).stdout
    refused = subplans("resume", run_id, cwd=tmp_path, env=env)
    follower = start(started, "events", run_id, "--follow", cwd=tmp_path, env=env)
    assert follower.stdout is not None
    assert follower.stderr is not None
    first = json.loads(follower.stdout.readline())  # it is following now
    (tmp_path / "go").touch()
    rest = follower.stdout.read()  # until it exits
    follower_errors = follower.stderr.read()
    follower.wait(timeout=10)
    out, errors = run.communicate(timeout=10)

    assert report["status"] == "running"
    assert report["owner"]["pid"] == run.pid
    assert report["counts"] == {
        "pending": 2,
        "running": 2,
        "completed": 0,
        "failed": 0,
        "interrupted": 0,
    }
    assert sorted(s["id"] for s in report["running"]) == ["work/a", "work/b"]
    assert all(s["elapsed"] >= 0 for s in report["running"])
    assert re.search(r"^  running      work/[ab]  \d+\.\d\ds$", text, re.M)
    one_error_line(
        refused,
        rf"run {run_id} is being driven by process {run.pid} on \S+; wait for it to end, "
        rf"or stop it with `subplans cancel {run_id}`",
    )
    assert run.returncode == 0, out + errors
    assert follower.returncode == 0, follower_errors
    events = [first, *(json.loads(line) for line in rest.splitlines())]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert (first["event"], first["plan_id"]) == ("plan_started", "")
    assert [(e["event"], e.get("state")) for e in events[-3:]] == [
        ("dispatch_finished", None),
        ("step_state_changed", "completed"),
        ("plan_finished", "completed"),
    ]
    # Following saw exactly what the store holds once the run ended.
    after = subplans("events", run_id, cwd=tmp_path, env=env)
    assert [json.loads(line) for line in after.stdout.splitlines()] == events


def test_cancel_from_another_process_stops_a_live_run_cleanly(
    tmp_path: Path, env: dict[str, str], started: list[subprocess.Popen[str]]
) -> None:
    run, run_id = start_gated(tmp_path, env, started)

    cancelled = subplans("cancel", run_id, "--wait", cwd=tmp_path, env=env)

    assert cancelled.returncode == 0, cancelled.stderr
    assert re.fullmatch(
        rf"asked run {run_id} to stop: sent SIGTERM to process {run.pid} on \S+\n"
        rf"run {run_id} cancelled\n",
        cancelled.stdout,
    )
    out, _ = run.communicate(timeout=10)
    assert run.returncode == 130
    assert "SIGTERM: stopping" in out
    assert "plan gated interrupted in " in out
    assert processes_of_run(run_id) == []
    assert status_json(run_id, tmp_path, env)["status"] == "cancelled"
    one_error_line(
        subplans("cancel", run_id, cwd=tmp_path, env=env),
        rf"run {run_id} has already ended \(cancelled\)",
    )


def test_ctrl_c_while_following_exits_130(
    tmp_path: Path, env: dict[str, str], started: list[subprocess.Popen[str]]
) -> None:
    _, run_id = start_gated(tmp_path, env, started)
    follower = start(started, "events", run_id, "--follow", cwd=tmp_path, env=env)
    assert follower.stdout is not None
    follower.stdout.readline()

    follower.send_signal(signal.SIGINT)

    _, errors = follower.communicate(timeout=5)
    assert follower.returncode == 130
    assert errors == "interrupted by SIGINT\n"  # one line, no traceback


# --- stores that cannot be used -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("store", "problem"),
    [
        ("/proc/subplans-test/state.db", r"cannot create the folder /proc/subplans-test: .+"),
        ("plan.yaml/state.db", r"cannot create the folder plan\.yaml: File exists"),
    ],
)
def test_an_unwritable_store_is_one_error_line_and_nothing_runs(
    store: str, problem: str, tmp_path: Path, env: dict[str, str]
) -> None:
    write(tmp_path, "plan.yaml", "name: x\nsteps:\n  - {name: a, run: 'touch ran'}\n")

    done = subplans("run", "plan.yaml", "--store", store, cwd=tmp_path, env=env)

    one_error_line(done, rf"cannot open the store {re.escape(store)}: {problem}")
    assert done.stdout == ""
    assert sorted(path.name for path in tmp_path.iterdir()) == ["plan.yaml"]


@pytest.mark.parametrize("args", [["run", "plan.yaml"], ["runs"], ["status"], ["resume", "r1"]])
def test_a_corrupt_store_is_one_error_line_and_left_unchanged(
    args: list[str], tmp_path: Path, env: dict[str, str]
) -> None:
    write(tmp_path, "plan.yaml", "name: x\nsteps:\n  - {name: a, run: 'touch ran'}\n")
    garbage = os.urandom(8192)
    path = store_of(env)
    path.parent.mkdir()
    path.write_bytes(garbage)

    done = subplans(*args, cwd=tmp_path, env=env)

    one_error_line(
        done, rf"cannot open the store {re.escape(str(path))}: not an SQLite database .+"
    )
    assert path.read_bytes() == garbage
    assert sorted(p.name for p in path.parent.iterdir()) == ["state.db"]
    assert not (tmp_path / "ran").exists()
