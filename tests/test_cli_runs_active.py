"""``subplans runs`` shows the time a run was actually running beside its span (issue #11,
point 13): summed over the run and its resumes, a session killed with SIGKILL counted up to its
last event; from what the store records, with real processes."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from subplans.store import RunStore

from .conftest import command_env, wait_until
from .plans_helpers import write
from .test_cli_process import subplans

# "wait" runs until the file "go" exists: the run can be killed while it runs.
GATED = """
    name: gated
    steps:
      - name: first
        run: "true"
      - name: wait
        run: "while [ ! -e go ]; do sleep 0.01; done"
    """


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return command_env(SUBPLANS_CONFIG=str(tmp_path / "no-config.yaml"))


@pytest.fixture
def gate(tmp_path: Path) -> Iterator[None]:
    """Lets every "wait" subplan go when the test ends, passed or not."""
    yield
    (tmp_path / "go").touch()


def runs_json(cwd: Path, env: dict[str, str]) -> list[dict[str, Any]]:
    done = subplans("runs", "--json", cwd=cwd, env=env)
    assert done.returncode == 0, done.stderr
    found: list[dict[str, Any]] = json.loads(done.stdout)
    return found


def seconds(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def killed_run(tmp_path: Path, env: dict[str, str]) -> str:
    """A run of GATED killed with SIGKILL while "wait" runs; its id."""
    write(tmp_path, "plan.yaml", GATED)
    run = subprocess.Popen(
        [sys.executable, "-m", "subplans", "run", "plan.yaml", "--no-progress"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        store = tmp_path / ".subplans" / "state.db"
        wait_until(store.exists, "the store")
        with RunStore.open(store, readonly=True) as db:
            run_id = wait_until(lambda: next(iter(db.run_ids()), ""), "the run's start")
            wait_until(lambda: db.process_groups(run_id), "'wait' to run")
    finally:
        run.kill()
        run.wait()
    return run_id


@pytest.mark.usefixtures("gate")
def test_a_killed_and_resumed_run_was_running_for_less_than_its_span(
    tmp_path: Path, env: dict[str, str]
) -> None:
    run_id = killed_run(tmp_path, env)
    [interrupted] = runs_json(tmp_path, env)
    listing = subplans("status", "latest", "--subplans", cwd=tmp_path, env=env).stdout
    (tmp_path / "go").touch()
    resumed = subplans("resume", "latest", "-q", cwd=tmp_path, env=env)
    [run] = runs_json(tmp_path, env)
    listed = subplans("runs", cwd=tmp_path, env=env).stdout.splitlines()
    events = [
        json.loads(line)
        for line in subplans("events", run_id, cwd=tmp_path, env=env).stdout.splitlines()
    ]

    assert resumed.returncode == 0, resumed.stderr
    assert (run["id"], run["status"], run["resumes"]) == (run_id, "completed", 1)
    # The killed session: from the run's start to its last event (the run has no end yet).
    starts = [i for i, e in enumerate(events) if e["event"] == "plan_started" and not e["plan_id"]]
    assert len(starts) == 2
    first_end = seconds(events[starts[1] - 1]["timestamp"])
    first = first_end - seconds(run["started_at"])
    assert interrupted["status"] == "interrupted"
    assert interrupted["duration"] is None
    assert interrupted["active"] == pytest.approx(first, abs=1e-5)
    # The subplan the kill cut short counts as the run's counts show it.
    assert re.search(r"^wait +interrupted +1 +\S+ +-$", listing, re.M), listing
    # The resumed session: from its root plan's start to the run's end.
    second = seconds(run["finished_at"]) - seconds(events[starts[1]]["timestamp"])
    assert run["active"] == pytest.approx(first + second, abs=1e-5)
    # The time between the kill and the resume is in the span, not in the active time.
    gap = seconds(events[starts[1]]["timestamp"]) - first_end
    assert gap > 0
    assert run["duration"] == pytest.approx(run["active"] + gap, abs=1e-5)
    assert re.fullmatch(r"run +status +started \(UTC\) +took +active +subplans +plan", listed[0])
    assert listed[1].startswith(f"{run_id}  completed  ")


def test_a_run_of_one_session_was_running_for_its_whole_span(
    tmp_path: Path, env: dict[str, str]
) -> None:
    write(tmp_path, "plan.yaml", "name: once\nsteps:\n  - {name: a, run: 'true'}\n")
    assert subplans("run", "plan.yaml", "-q", cwd=tmp_path, env=env).returncode == 0

    [run] = runs_json(tmp_path, env)

    assert run["active"] == run["duration"]
    assert run["active"] > 0
