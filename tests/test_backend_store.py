"""The store's side of the backend (issue #12): the worker each subplan ran on (schema 6),
no process group of another machine's ever recorded, the backend given on the command line
recorded with the run and given back to resume."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from subplans.engine.events import SubplanProcessStarted, SubplanStateChanged
from subplans.engine.states import SubplanExecutionState
from subplans.plans.loader import Overrides, load_plan
from subplans.store import SCHEMA_VERSION, PlanManifest, RunStore
from subplans.store.resume import recorded_overrides, run_manifest
from subplans.store.schema import MIGRATIONS, migrate

from .plans_helpers import write
from .store_support import manifest, no_config, open_store

RUNNING = SubplanExecutionState.RUNNING
PENDING = SubplanExecutionState.PENDING
COMPLETED = SubplanExecutionState.COMPLETED


def test_a_subplan_on_a_worker_records_the_worker_and_no_process_group(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    store.start_run("r1", manifest("here", "there"))
    # The remote pid is one of this machine's too: it must never be taken for ours.
    pid = os.getpid()
    with store.recorder("r1") as recorder:
        for subplan_id, worker in (("here", None), ("there", "tcp://10.0.0.2:4001")):
            recorder.handle(SubplanStateChanged(subplan_id, PENDING, RUNNING, 1))
            recorder.handle(
                SubplanProcessStarted(subplan_id, pid, f"logs/{subplan_id}.log", worker)
            )

    groups = store.process_groups("r1")
    assert [(group.subplan_id, group.pgid) for group in groups] == [("here", pid)]
    listed = {info.subplan_id: info for info in store.subplans("r1")}
    assert (listed["here"].worker, listed["there"].worker) == (None, "tcp://10.0.0.2:4001")
    assert listed["there"].pgid is None
    assert listed["there"].to_dict()["worker"] == "tcp://10.0.0.2:4001"

    # It stays once the subplan ended (status --subplans tells where it ran)...
    with store.recorder("r1") as recorder:
        recorder.handle(SubplanStateChanged("there", RUNNING, COMPLETED, 1))
    (there,) = [info for info in store.subplans("r1") if info.subplan_id == "there"]
    assert (there.state, there.worker) == (COMPLETED, "tcp://10.0.0.2:4001")
    store.close()


def test_a_resumed_subplan_forgets_where_it_ran(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    store.start_run("r1", manifest("a"))
    with store.recorder("r1") as recorder:
        recorder.handle(SubplanStateChanged("a", PENDING, RUNNING, 1))
        recorder.handle(SubplanProcessStarted("a", os.getpid(), "logs/a.log", "tcp://h:1"))
    db = sqlite3.connect(store.path)
    db.execute("UPDATE runs SET status = 'failed'")  # as if it ended; its owner is us
    db.commit()
    db.close()

    store.resume_run("r1")

    (again,) = store.subplans("r1")
    assert (again.state, again.worker) == (PENDING, None)
    store.close()


def test_a_store_of_schema_5_gains_the_worker_column_and_keeps_its_runs(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    db = sqlite3.connect(path, isolation_level=None)
    assert migrate(db, MIGRATIONS[:5]) == (0, 5)
    db.close()
    with RunStore.open(path) as store:
        store.start_run("r1", PlanManifest("plan.yaml", subplans=(("a", "s"),), steps=("s",)))
        (a,) = store.subplans("r1")
        assert a.worker is None
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    columns = [row[1] for row in db.execute("PRAGMA table_info(subplans)")]
    assert columns[-1] == "worker"
    db.close()


def test_the_backend_options_are_recorded_for_resume(tmp_path: Path) -> None:
    given = Overrides(backend="dask", scheduler="tcp://h:1", max_parallel=3)
    path = write(tmp_path, "plan.yaml", "name: p\nsteps: [{name: a, run: 'true'}]\n")
    node = load_plan(path, config=no_config(tmp_path), overrides=given)

    recorded = run_manifest(node, given)

    assert recorded.profile["overrides"] == {
        "max_parallel": 3,
        "backend": "dask",
        "scheduler": "tcp://h:1",
    }
    store = open_store(tmp_path)
    store.start_run("r1", recorded)
    again = recorded_overrides(store.get_run("r1"))
    assert (again.backend, again.scheduler, again.max_parallel) == ("dask", "tcp://h:1", 3)
    assert store.get_run("r1").profile["values"]["backend"] == {
        "kind": "dask",
        "scheduler": "tcp://h:1",
    }
    store.close()
