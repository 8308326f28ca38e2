"""Issue #11, point 3: the items a run-time ``for_each`` step read are recorded in the run store
when it starts. ``resume`` makes that step's subplans of the recorded items, so that nothing it
completed runs again because a file changed, and reads fresh sources for the steps that had not
started; ``status`` and the events say where each step's items came from and how many.

The killed runs are real: ``subplans run`` in a process of its own, killed with SIGKILL while
a subplan of the run-time step runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from pathlib import Path

import pytest

from subplans import EventBus, StepItemsRead
from subplans.cli.app import ExitCode
from subplans.engine.states import PlanState
from subplans.execution.executor import PlanExecutor
from subplans.execution.step_items import RecordedItems
from subplans.store import RunStore
from subplans.store.resume import units_made
from subplans.store.schema import MIGRATIONS, SCHEMA_VERSION, migrate

from .conftest import Recorder
from .plans_helpers import write
from .store_support import invoke, load
from .test_hardening_resume import killed_while_running, ran, released

pytestmark = pytest.mark.usefixtures("isolated")

# "port" fans out over modules.txt by index: n1 waits while "hold" exists. "check" fans out
# over checks.txt once "port" is done.
FAN = """
    name: fan
    automation_profile: {cancel_grace: 1}
    steps:
      - name: port
        for_each: {lines: modules.txt}
        subplan:
          name: 'n{index}'
          run: "echo {item} >> ran.txt; if [ {index} = 1 ]; then while [ -e hold ]; do sleep 0.01; done; fi"
      - name: check
        for_each: {lines: checks.txt}
        subplan: {run: "echo check-{item} >> ran.txt"}
    """


def store_of(tmp_path: Path) -> RunStore:
    return RunStore.open(tmp_path / ".subplans" / "state.db", readonly=True)


def killed_in_port(tmp_path: Path, text: str = FAN) -> str:
    """The run of ``text`` over modules a and b (checks x), killed while port/n1 runs and
    port/n0 has completed; its processes ended since. Returns the run id."""
    write(tmp_path, "modules.txt", "a\nb\n")
    write(tmp_path, "checks.txt", "x\n")
    run_id = killed_while_running(tmp_path, text, {"port/n1"})
    released(tmp_path, run_id)
    return run_id


def test_resume_makes_a_started_step_of_its_recorded_items_and_reads_the_others_afresh(
    tmp_path: Path,
) -> None:
    run_id = killed_in_port(tmp_path)
    with store_of(tmp_path) as store:
        assert [(s.step_id, s.source, s.count) for s in store.step_items(run_id)] == [
            ("port", "lines of 'modules.txt'", 2)
        ]
        assert store.recorded_items(run_id) == {
            "port": RecordedItems("lines of 'modules.txt'", ("a", "b"))
        }
    # Both files change before the resume: "port" had started, "check" had not.
    write(tmp_path, "modules.txt", "c\nd\ne\n")
    write(tmp_path, "checks.txt", "y\n")

    result = invoke("resume", run_id, "--no-progress", "--events-jsonl", "events.jsonl")

    assert result.exit_code == ExitCode.OK, result.output
    # n0 (a) completed before the kill and is skipped; n1 runs again with its recorded item b;
    # no n2 is made of the changed file; check reads the file as it is now.
    assert ran(tmp_path) == {"a": 1, "b": 2, "check-y": 1}
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    read = [e for e in events if e["event"] == "step_items_read"]
    assert [{k: v for k, v in e.items() if k not in ("timestamp", "run_id")} for e in read] == [
        {
            "event": "step_items_read",
            "step_id": "port",
            "source": "lines of 'modules.txt'",
            "count": 2,
            "recorded": True,
        },
        {
            "event": "step_items_read",
            "step_id": "check",
            "source": "lines of 'checks.txt'",
            "count": 1,
            "recorded": False,
        },
    ]
    with store_of(tmp_path) as store:
        assert store.get_run(run_id).status == "completed"
        assert {s.subplan_id for s in store.subplans(run_id)} == {
            "port/n0",
            "port/n1",
            "check/y",
        }
        assert store.recorded_items(run_id) == {
            "port": RecordedItems("lines of 'modules.txt'", ("a", "b")),
            "check": RecordedItems("lines of 'checks.txt'", ("y",)),
        }
        stored = [e.payload for e in store.events(run_id) if e.kind == "step_items_read"]
    # The stored events say the same, without the items themselves.
    assert [(p["step_id"], p["count"], p["recorded"]) for p in stored] == [
        ("port", 2, False),
        ("port", 2, True),
        ("check", 1, False),
    ]
    assert all("items" not in payload for payload in stored)

    status = invoke("status", run_id)
    assert status.exit_code == ExitCode.OK, status.output
    assert (
        "  items        port  2 items from lines of 'modules.txt'\n"
        "               check  1 item from lines of 'checks.txt'\n"
    ) in status.stdout
    data = json.loads(invoke("status", run_id, "--json").stdout)
    assert [(s["id"], s["items"] and s["items"]["count"]) for s in data["steps"]] == [
        ("port", 2),
        ("check", 1),
    ]
    assert data["steps"][0]["items"]["source"] == "lines of 'modules.txt'"


def test_resume_sees_run_time_subplans_that_must_not_run_twice(tmp_path: Path) -> None:
    text = FAN.replace("name: 'n{index}'", "name: 'n{index}'\n          idempotent: false")
    run_id = killed_in_port(tmp_path, text)

    refused = invoke("resume", run_id)

    assert refused.exit_code == ExitCode.INVALID
    assert (
        f"error: 1 subplan of run {run_id} is marked idempotent: false and may have done its "
        "work before the run stopped: port/n1;"
    ) in refused.stderr

    skipped = invoke("resume", run_id, "--skip-unknown", "--no-progress")

    assert skipped.exit_code == ExitCode.OK, skipped.output
    assert ran(tmp_path) == {"a": 1, "b": 1, "check-x": 1}


def test_a_step_whose_source_changed_reads_it_again_and_records_what_it_read(
    tmp_path: Path,
) -> None:
    write(tmp_path, "modules.txt", "a\nb\n")
    write(tmp_path, "checks.txt", "x\n")
    plan = load(tmp_path, FAN)
    bus = EventBus()
    recorder = Recorder(bus)
    # "port" recorded under another source (the plan changed, resumed with --force): read again.
    items = {
        "port": RecordedItems("lines of 'old.txt'", ("z",)),
        "check": RecordedItems("lines of 'checks.txt'", ("w",)),
    }
    executor = PlanExecutor(plan, bus=bus, state_dir=tmp_path / "state", items=items)

    result = asyncio.run(executor.run())

    assert result.state is PlanState.COMPLETED
    assert ran(tmp_path) == {"a": 1, "b": 1, "check-w": 1}
    read = [e for e in recorder.events if isinstance(e, StepItemsRead)]
    assert [(e.step_id, tuple(e.items), e.recorded) for e in read] == [
        ("port", ("a", "b"), False),
        ("check", ("w",), True),
    ]


def test_units_made_of_recorded_items_are_those_the_step_would_make(tmp_path: Path) -> None:
    plan = load(tmp_path, FAN)
    source = "lines of 'modules.txt'"

    made = units_made(plan, {"port": RecordedItems(source, ("a", "b"))})
    stale = units_made(plan, {"port": RecordedItems("lines of 'old.txt'", ("a", "b"))})
    # Items that make no valid subplans (here, two of one name) make none.
    named = FAN.replace("name: 'n{index}'", "name: '{item}'")
    invalid = units_made(load(tmp_path, named), {"port": RecordedItems(source, ("a", "a"))})

    assert [unit.id for unit in made] == ["port/n0", "port/n1"]
    assert stale == invalid == []


def test_an_executor_without_a_bus_uses_the_recorded_items_all_the_same(tmp_path: Path) -> None:
    write(tmp_path, "modules.txt", "a\n")
    write(tmp_path, "checks.txt", "x\n")
    items = {"port": RecordedItems("lines of 'modules.txt'", ("b", "c"))}
    executor = PlanExecutor(load(tmp_path, FAN), state_dir=tmp_path / "state", items=items)

    result = asyncio.run(executor.run())

    assert result.state is PlanState.COMPLETED
    assert ran(tmp_path) == {"b": 1, "c": 1, "check-x": 1}


def test_a_store_of_the_first_schema_gains_the_table_when_opened(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as db:
        assert migrate(db, MIGRATIONS[:1]) == (0, 1)

    with RunStore.open(path) as store:
        assert store.step_items("r1") == []
        assert store.recorded_items("r1") == {}
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
