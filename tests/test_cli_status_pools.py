"""``subplans status`` shows a run's pools (issue #14): each pool's size as it started and as
``subplans limit`` changed it, the units in use and the subplans waiting while it runs, and the
peak, told from the store by another process. Each gated subplan waits on a FIFO of its own,
which the test opens to let it end."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from subplans.cli.app import main
from subplans.cli.exits import ExitCode
from subplans.cli.typer_app import app
from subplans.store import SCHEMA_VERSION, PlanManifest, RunStore
from subplans.store.schema import MIGRATIONS, migrate

from .conftest import command_env, wait_until
from .plans_helpers import write

runner = CliRunner()


@pytest.fixture
def env(tmp_path: Path, isolated: None) -> dict[str, str]:
    """The run's environment; ``status`` runs in this process, ``isolated`` in ``tmp_path``."""
    return command_env(SUBPLANS_CONFIG=str(tmp_path / "no-config.yaml"))


def subplans(*args: str) -> str:
    """``subplans ARGS`` in this process; its output (it must succeed)."""
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.stdout


def pools() -> dict[str, dict[str, Any]]:
    """``status --json``'s pools of the latest run, by name."""
    shown = json.loads(subplans("status", "--json"))
    return {pool.pop("name"): pool for pool in shown["pools"]}


def in_use(pool: str) -> int:
    """The units of ``pool`` in use now; 0 before the run has made its store."""
    result = runner.invoke(app, ["status", "--json"])
    if result.exit_code:
        return 0
    found = {p["name"]: p for p in json.loads(result.stdout)["pools"]}
    return int(found[pool]["in_use"]) if pool in found else 0


def release(tmp_path: Path, item: str) -> None:
    """Let ``item``'s command end: open its FIFO for writing (waits for the reader), close it."""
    os.close(os.open(tmp_path / f"{item}.fifo", os.O_WRONLY))


def test_a_running_run_s_pool_in_use_waiting_peak_and_a_changed_size(
    tmp_path: Path, env: dict[str, str], started: list[subprocess.Popen[bytes]]
) -> None:
    items = ["a", "b", "c"]
    for item in items:
        os.mkfifo(tmp_path / f"{item}.fifo")
    write(
        tmp_path,
        "plan.yaml",
        "name: gated\npools: {api: 2, idle: {size: 3, max_per_second: 20}}\n"
        "automation_profile: {max_parallel: 4}\nsteps:\n  - name: work\n    uses: [api]\n"
        f"    for_each: {json.dumps(items)}\n    subplan: {{run: 'cat {{item}}.fifo'}}\n"
        # Not started yet, so not waiting for the pool: its step has not begun.
        "  - {name: after, uses: [api], run: 'true'}\n",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "subplans", "run", "plan.yaml"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    started.append(proc)
    # Two hold the pool's two units; the third waits for one (its step has slots to spare).
    wait_until(lambda: in_use("api") == 2, "two subplans to hold the pool")
    shown = pools()
    assert shown["api"] == {
        "size": 2,
        "current": 2,
        "max_per_second": None,
        "in_use": 2,
        "waiting": 1,
        "peak": 2,
    }
    assert shown["idle"] | {"max_per_second": 20.0} == shown["idle"]
    assert (shown["idle"]["in_use"], shown["idle"]["waiting"], shown["idle"]["peak"]) == (0, 0, 0)
    text = subplans("status")
    assert "  pools        api   size 2: 2 in use, 1 waiting, peak 2\n" in text
    assert "               idle  size 3, at most 20/s: 0 in use, 0 waiting, peak 0\n" in text

    subplans("limit", "latest", "3", "--pool", "api")
    wait_until(lambda: in_use("api") == 3, "the third to start")
    assert pools()["api"] | {"current": 3, "waiting": 0, "peak": 3} == pools()["api"]
    assert "api   size 3 (started with 2): 3 in use, 0 waiting, peak 3\n" in subplans("status")

    for item in items:
        release(tmp_path, item)
    assert proc.wait(timeout=30) == 0
    ended = pools()["api"]
    assert (ended["size"], ended["current"], ended["in_use"], ended["waiting"]) == (2, 3, 0, 0)
    assert ended["peak"] == 3
    assert "  pools        api   size 3 (started with 2): peak 3\n" in subplans("status")


def test_a_finished_run_s_peak_counts_run_time_and_nested_subplans(
    tmp_path: Path, isolated: None
) -> None:
    # The nested plan's api: 9 yields to the outer plan's api: 2 (the run's pools are shared).
    write(tmp_path, "names.txt", "a\nb\nc\nd\n")
    write(
        tmp_path,
        "plan.yaml",
        "name: p\npools: {api: 2, db: 1}\nautomation_profile: {max_parallel: 8}\nsteps:\n"
        "  - name: read\n    for_each: {lines: names.txt}\n"
        "    subplan: {uses: {api: 1}, run: 'true {item}'}\n"
        "  - name: both\n    uses: {api: 2, db: 1}\n    run: 'true'\n"
        "  - {name: plain, run: 'true'}\n"
        "  - name: inner\n    plan:\n      name: inner\n      pools: {api: 9, gpu: 3}\n"
        "      steps:\n        - name: g\n          uses: {gpu: 2}\n"
        "          for_each: [x, y]\n          subplan: {run: 'true'}\n"
        # Each item runs a nested plan whose subplan takes the whole gpu pool.
        "  - name: each\n    for_each: {lines: names.txt}\n    subplan: {plan: gpu.yaml}\n"
        # A plan an item names is read when its step starts: the store knows none of its uses.
        "  - name: named\n    for_each: {lines: plans.txt}\n    subplan: {plan: '{item}.yaml'}\n"
        "  - {name: last, uses: [db], run: 'false'}\n",
    )
    write(tmp_path, "plans.txt", "plain\n")
    write(tmp_path, "plain.yaml", "name: plain\nsteps:\n  - {name: s, run: 'true'}\n")
    write(tmp_path, "gpu.yaml", "name: g\nsteps:\n  - {name: s, uses: {gpu: 3}, run: 'true'}\n")
    # In this process: what the run records of its plan is covered too.
    assert main(["run", "plan.yaml", "-q"]) == ExitCode.FAILED  # the last step, after the others
    shown = pools()
    assert {name: (p["size"], p["peak"], p["in_use"]) for name, p in shown.items()} == {
        "api": (2, 2, 0),
        "db": (1, 1, 0),
        "gpu": (3, 3, 0),  # each/ITEM/s take all three (inner/g/x and y two each)
    }
    text = subplans("status")
    assert "  pools        api  size 2: peak 2\n" in text
    assert "               gpu  size 3: peak 3\n" in text


def test_a_run_without_pools_shows_none(tmp_path: Path, env: dict[str, str]) -> None:
    write(tmp_path, "plan.yaml", "name: p\nsteps:\n  - name: s\n    run: 'true'\n")
    done = subprocess.run(
        [sys.executable, "-m", "subplans", "run", "plan.yaml"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(subplans("status", "--json"))["pools"] == []
    assert "  pools  " not in subplans("status")


def test_a_store_of_schema_4_gains_the_pool_tables_and_keeps_its_runs(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    db = sqlite3.connect(path, isolation_level=None)
    assert migrate(db, MIGRATIONS[:4]) == (0, 4)
    db.close()
    with RunStore.open(path) as store:  # brings it up to date
        store.start_run("20261130-000000-aaaaaa", PlanManifest("plan.yaml"))
        assert store.pool_usage("20261130-000000-aaaaaa") == []
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION >= 5
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
    assert {"pools", "pool_uses"} <= tables
    db.close()


def test_waiting_counts_the_subplans_of_running_steps_that_do_not_fit(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    run_id = "20261130-000000-bbbbbb"
    subplans = (("s/a", "s"), ("s/b", "s"), ("s/c", "s"), ("later/x", "later"))
    uses = [
        (sid, "subplan", "", "api", n) for (sid, _), n in zip(subplans, (1, 2, 1, 1), strict=True)
    ]
    manifest = PlanManifest(
        "plan.yaml",
        steps=("s", "later"),
        subplans=subplans,
        pools=(("api", 3, None),),
        uses=tuple(uses),
    )
    with RunStore.open(path) as store:
        store.start_run(run_id, manifest)

        def mark(table: str, key: str, ids: tuple[str, ...]) -> None:
            with sqlite3.connect(path) as db:
                db.executemany(
                    f"UPDATE {table} SET state = 'running' WHERE {key} = ?", [(i,) for i in ids]
                )

        mark("steps", "step_id", ("s",))
        mark("subplans", "subplan_id", ("s/a",))
        # b (2 units) and c (1) fit in the two free units: neither waits for the pool.
        [usage] = store.pool_usage(run_id)
        assert (usage.in_use, usage.waiting, usage.peak) == (1, 0, 1)
        mark("subplans", "subplan_id", ("s/b",))
        # c needs one more than is free; later/x too, but its step has not started.
        [usage] = store.pool_usage(run_id)
        assert (usage.size, usage.current, usage.in_use, usage.waiting) == (3, 3, 3, 1)
        assert usage.peak == 3  # no event says so yet: at least what is in use now
