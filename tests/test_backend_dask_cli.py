"""``subplans run`` and ``resume`` on a real Dask cluster (issue #12): a scheduler and two worker
processes on 127.0.0.1 that the module starts and stops, the command in processes of its own,
the store a real SQLite file. Few tests, one cluster: the Dask tests stay under a minute."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from subplans.cli.app import app

from .conftest import command_env, wait_until
from .plans_helpers import write
from .process_helpers import alive

pytest.importorskip("distributed")

from .dask_helpers import process_cluster

#: Every command here ends well within this many seconds.
BOUND = 60

runner = CliRunner()


@pytest.fixture(scope="module")
def scheduler() -> Iterator[str]:
    """The address of a scheduler with two worker processes of 2 threads each."""
    with process_cluster(threads=2) as address:
        yield address


def events(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_a_plan_runs_on_the_cluster_and_says_which_worker_ran_what(
    tmp_path: Path, scheduler: str, isolated: None
) -> None:
    write(
        tmp_path,
        "tasks.py",
        """
        import os, pathlib

        def hello(name):
            greeted = pathlib.Path(__file__).with_name("greeted")
            greeted.write_text(f"hello {name} from {os.getpid()}")
        """,
    )
    # By its absolute path: the workers' cwd is not ours (D1 makes relative ones absolute).
    plan = write(
        tmp_path,
        "plan.yaml",
        """
        name: remote
        steps:
          - name: port
            for_each: [a, b, c]
            subplan: {run: "echo porting {item} in run $SUBPLANS_RUN_ID"}
          - name: greet
            call: tasks:hello
            with: {name: world}
          - name: here
            backend: local
            run: echo here
        """,
    )

    # In this process (coverage counts it), as `subplans run` would run it.
    done = runner.invoke(
        app,
        [
            *("run", str(plan), "--scheduler", scheduler, "-j", "8", "--no-progress"),
            *("--events-jsonl", "events.jsonl"),
        ],
    )

    assert done.exit_code == 0, done.output
    # 8 at once asked of 4 worker threads: said before the run, the run goes on.
    assert f"warning: dask {scheduler}: " in done.output
    run_id = events(tmp_path / "events.jsonl")[0]["run_id"]
    logs = tmp_path / ".subplans" / "runs" / str(run_id) / "logs"
    assert f"porting b in run {run_id}" in (logs / "port__b.log").read_text(encoding="utf-8")
    greeted = (tmp_path / "greeted").read_text(encoding="utf-8")
    assert greeted.startswith("hello world from ")
    assert int(greeted.rsplit(" ", 1)[1]) != os.getpid()  # a worker process called it
    workers = {
        event["subplan_id"]: event["worker"]
        for event in events(tmp_path / "events.jsonl")
        if event["event"] == "subplan_process_started"
    }
    # A call unit's function names its worker too (#12 review: it said none).
    assert set(workers) == {"port/a", "port/b", "port/c", "greet", "here"}
    assert workers["here"] is None
    assert all(str(workers[f"port/{item}"]).startswith("tcp://127.0.0.1:") for item in "abc")
    assert str(workers["greet"]).startswith("tcp://127.0.0.1:")


def test_resume_after_a_killed_driver_stops_what_it_left_on_the_workers(
    tmp_path: Path,
    scheduler: str,
    started: list[subprocess.Popen[bytes]],
    isolated: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The first time, the command records its pid and waits; run again, it just ends.
    plan = write(
        tmp_path,
        "plan.yaml",
        """
        name: killed
        steps:
          - name: work
            run: >-
              if [ -e first ]; then echo again; else touch first; echo $$ > pid; exec sleep 60; fi
        """,
    )
    # Named as HOST:PORT here, as tcp://HOST:PORT when resumed: the same cluster, told apart.
    host_port = scheduler.removeprefix("tcp://")
    env = command_env(SUBPLANS_CONFIG=str(tmp_path / "none.yaml"), SUBPLANS_SCHEDULER=host_port)
    driver = subprocess.Popen(
        [sys.executable, "-m", "subplans", "run", str(plan), "--backend", "dask", "-q"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    started.append(driver)
    pid_file = tmp_path / "pid"
    wait_until(lambda: pid_file.exists() and pid_file.read_text().strip(), "the remote command")
    remote = int(pid_file.read_text())
    driver.send_signal(signal.SIGKILL)
    driver.wait(timeout=BOUND)
    assert alive(remote)  # the worker runs it on: nothing told it the driver is gone

    # The run recorded its cluster (the environment's address): resume needs no environment;
    # --scheduler points it at the cluster's new address, recorded for the next resume.
    monkeypatch.delenv("SUBPLANS_SCHEDULER", raising=False)
    recorded = json.loads(runner.invoke(app, ["status", "latest", "--json"]).stdout)
    assert recorded["profile"]["overrides"] == {"backend": "dask", "scheduler": host_port}
    resumed = runner.invoke(
        app,
        [
            *("resume", "latest", "--no-progress", "--events-jsonl", "resumed.jsonl"),
            *("--scheduler", scheduler),
        ],
    )

    assert resumed.exit_code == 0, resumed.output
    assert not alive(remote)
    assert re.search(
        r"^stopped \d+ process(es)? that run \S+ had left running on the Dask cluster$",
        resumed.output,
        re.MULTILINE,
    ), resumed.output
    (again,) = [
        event
        for event in events(tmp_path / "resumed.jsonl")
        if event["event"] == "subplan_process_started"
    ]
    assert str(again["worker"]).startswith("tcp://127.0.0.1:")  # on the cluster again
    # The store says which worker ran it; it kept no process group of another machine's.
    listed = runner.invoke(app, ["status", "latest", "--subplans", "--json"])
    (work,) = json.loads(listed.stdout)["subplans"]
    assert (work["id"], work["state"], work["worker"]) == ("work", "completed", again["worker"])
    table = runner.invoke(app, ["status", "latest", "--subplans"]).stdout.splitlines()
    assert table[0].split() == ["subplan", "state", "attempts", "took", "exit", "code", "worker"]
    assert table[1].split()[-1] == again["worker"]
    status = runner.invoke(app, ["status", "latest"]).stdout
    assert f"backend      dask {scheduler}" in status
    recorded = json.loads(runner.invoke(app, ["status", "latest", "--json"]).stdout)
    assert recorded["profile"]["overrides"]["scheduler"] == scheduler
    logs = next((tmp_path / ".subplans" / "runs").iterdir()) / "logs"
    assert "again" in (logs / "work.log").read_text(encoding="utf-8")


def marked(marker: str) -> list[int]:
    """The live processes whose environment holds ``marker`` (``NAME=VALUE``)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as environ:
                if marker.encode() in environ.read().split(b"\0") and alive(int(entry)):
                    found.append(int(entry))
        except OSError:
            continue
    return found


def test_backend_dask_alone_starts_a_cluster_for_the_run_and_stops_it_after(
    tmp_path: Path,
) -> None:
    plan = write(
        tmp_path,
        "plan.yaml",
        """
        name: alone
        steps:
          - name: port
            for_each: [a, b]
            subplan: {run: "echo {item} $SUBPLANS_TEST_MARK"}
        """,
    )
    # Everything the command starts inherits this: its cluster's scheduler and workers too.
    marker = f"SUBPLANS_TEST_MARK={tmp_path.name}"
    env = command_env(SUBPLANS_CONFIG=str(tmp_path / "none.yaml"), SUBPLANS_TEST_MARK=tmp_path.name)
    env.pop("SUBPLANS_SCHEDULER", None)

    done = subprocess.run(
        [sys.executable, "-m", "subplans", "run", str(plan), "--backend", "dask", "-q"],
        capture_output=True,
        text=True,
        timeout=BOUND,
        cwd=tmp_path,
        env=env,
    )

    assert done.returncode == 0, done.stderr
    assert "2 total, 2 completed" in done.stdout
    listed = json.loads(
        subprocess.run(
            [sys.executable, "-m", "subplans", "status", "latest", "--subplans", "--json"],
            capture_output=True,
            text=True,
            timeout=BOUND,
            cwd=tmp_path,
            env=env,
        ).stdout
    )
    workers = {subplan["worker"] for subplan in listed["subplans"]}
    assert all(str(worker).startswith("tcp://127.0.0.1:") for worker in workers)
    # The workers had the mark (their commands print it): none of them is left.
    (log,) = (tmp_path / ".subplans" / "runs").glob("*/logs/port__a.log")
    assert f"a {tmp_path.name}" in log.read_text(encoding="utf-8")
    wait_until(lambda: not marked(marker), "the run's cluster to be gone")


def test_a_call_and_a_command_that_cannot_start_name_their_worker(
    tmp_path: Path, scheduler: str, isolated: None
) -> None:
    write(tmp_path, "tasks.py", "import os\n\ndef pid():\n    return os.getpid()\n")
    plan = write(
        tmp_path,
        "plan.yaml",
        f"""
        name: named
        automation_profile: {{failure_mode: continue_on_error}}
        steps:
          - name: both
            subplans:
              - {{name: greet, call: "tasks:pid"}}
              - {{name: nowhere, run: "echo never", cwd: "{tmp_path / "gone"}"}}
        """,
    )

    done = runner.invoke(
        app,
        [
            *("run", str(plan), "--scheduler", scheduler, "--no-progress"),
            *("--events-jsonl", "events.jsonl"),
        ],
    )

    assert done.exit_code == 1, done.output
    started = {
        event["subplan_id"]: event
        for event in events(tmp_path / "events.jsonl")
        if event["event"] == "subplan_process_started"
    }
    greet = started["both/greet"]
    assert str(greet["worker"]).startswith("tcp://127.0.0.1:")
    assert (greet["log_file"], greet["pid"] != os.getpid()) == ("", True)  # the worker's pid
    listed = json.loads(runner.invoke(app, ["status", "latest", "--subplans", "--json"]).stdout)
    rows = {row["id"]: row for row in listed["subplans"]}
    assert (rows["both/greet"]["state"], rows["both/greet"]["worker"]) == (
        "completed",
        greet["worker"],
    )
    failed = [e for e in events(tmp_path / "events.jsonl") if e["event"] == "subplan_state_changed"]
    (error,) = [
        e["error"]["message"]  # type: ignore[index]
        for e in failed
        if e["subplan_id"] == "both/nowhere" and e["error"]
    ]
    assert re.fullmatch(
        rf"cannot run .* in '{re.escape(str(tmp_path / 'gone'))}': .* \(on worker tcp://127\.0\.0\.1:\d+\)",
        str(error),
    ), error


def test_resume_refuses_while_an_abandoned_calls_thread_runs_on_unless_forced(
    tmp_path: Path, scheduler: str, isolated: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The first call blocks (a thread nothing stops) until ``release`` exists; later ones end.
    write(
        tmp_path,
        "slow_calls.py",
        """
        import pathlib, time

        def slow():
            here = pathlib.Path(__file__).parent
            first = not (here / "calls").exists()
            with (here / "calls").open("a") as calls:
                calls.write("start\\n")
            deadline = time.monotonic() + 30
            while first and not (here / "release").exists() and time.monotonic() < deadline:
                time.sleep(0.02)
            with (here / "calls").open("a") as calls:
                calls.write("end\\n")
        """,
    )
    plan = write(
        tmp_path,
        "plan.yaml",
        """
        name: slow
        automation_profile: {timeout: 0.5, cancel_grace: 0.1}
        steps:
          - {name: slow, call: "slow_calls:slow"}
        """,
    )
    monkeypatch.setattr("subplans.cli.run_backends.CALLS_WAIT", 0.3)
    calls = tmp_path / "calls"
    try:
        done = runner.invoke(app, ["run", str(plan), "--scheduler", scheduler, "--no-progress"])
        assert done.exit_code == 1, done.output
        assert calls.read_text().split() == ["start"]  # abandoned, and running on

        refused = runner.invoke(app, ["resume", "latest", "--no-progress"])

        assert refused.exit_code == 2, refused.output
        run_id = json.loads(runner.invoke(app, ["status", "latest", "--json"]).stdout)["id"]
        lines = refused.output.splitlines()
        assert (
            f"waiting up to 0.3s for 1 call of run {run_id} still running on the Dask cluster "
            "to end" in lines
        ), lines
        assert re.fullmatch(
            rf"error: run {run_id}: call subplans still running on the Dask cluster \(a function "
            r"in a thread cannot be stopped\): slow on tcp://127\.0\.0\.1:\d+; resume once they "
            r"end, or with --force to run them again",
            lines[-1],
        ), lines
        assert calls.read_text().split() == ["start"]  # nothing ran again

        forced = runner.invoke(app, ["resume", "latest", "--no-progress", "--force"])

        assert forced.exit_code == 0, forced.output
        assert "; resuming anyway (--force)" in forced.output
        assert calls.read_text().split() == ["start", "start", "end"]  # beside, as asked
    finally:
        (tmp_path / "release").touch()
    wait_until(lambda: calls.read_text().split().count("end") == 2, "the first call's end")


def test_cancel_of_an_interrupted_run_stops_what_it_left_on_the_cluster(
    tmp_path: Path,
    scheduler: str,
    started: list[subprocess.Popen[bytes]],
    isolated: None,
) -> None:
    # Its workers' processes are out of this machine's sight: cancel stops them through the
    # cluster the run recorded, before this machine's, as resume does.
    plan = write(
        tmp_path,
        "plan.yaml",
        """
        name: killed
        steps:
          - name: work
            run: echo $$ > pid; exec sleep 60
        """,
    )
    env = command_env(SUBPLANS_CONFIG=str(tmp_path / "none.yaml"))
    driver = subprocess.Popen(
        [sys.executable, "-m", "subplans", "run", str(plan), "--scheduler", scheduler, "-q"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    started.append(driver)
    pid_file = tmp_path / "pid"
    wait_until(lambda: pid_file.exists() and pid_file.read_text().strip(), "the remote command")
    wait_until(
        lambda: (
            '"worker": "tcp://' in runner.invoke(app, ["status", "latest", "--json"]).stdout
            or "tcp://" in runner.invoke(app, ["status", "latest", "--subplans"]).stdout
        ),
        "the worker recorded",
    )
    remote = int(pid_file.read_text())
    driver.send_signal(signal.SIGKILL)
    driver.wait(timeout=BOUND)
    assert alive(remote)

    cancelled = runner.invoke(app, ["cancel", "latest"])

    assert cancelled.exit_code == 0, cancelled.output
    assert "left nothing running" not in cancelled.output
    assert not alive(remote)
    assert re.search(
        rf"^stopped [1-9]\d* process(es)? that run \S+ had left running on the Dask cluster at "
        rf"{re.escape(scheduler)}$",
        cancelled.output,
        re.MULTILINE,
    ), cancelled.output
