"""``pools`` in plans and profiles, ``uses`` on steps and subplans, ``max_per_second`` in files:
real runs that hold a pool's cap across steps and nested plans, validation errors at their
file:line, provenance, and the plain fast path leaving the new keys to pydantic."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from subplans.plans.loader import GlobalConfig, load_plan
from subplans.plans.plain_plans import plain_plan
from subplans.plans.profiles import ProfileRegistry
from subplans.plans.tree import PoolSpec
from subplans.plans.yamlfile import ProblemsError

from .conftest import command_env, printed
from .plans_helpers import write

NO_CONFIG = GlobalConfig(Path("/nonexistent/config.yaml"), False, ProfileRegistry(), None)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return command_env(SUBPLANS_CONFIG=str(tmp_path / "no-config.yaml"))


def run(tmp_path: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "subplans", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def most_at_once(events: list[dict[str, Any]], ids: set[str]) -> int:
    """The most subplans of ``ids`` running at once, by their state changes in order."""
    now = peak = 0
    for event in events:
        if event["event"] != "subplan_state_changed" or event["subplan_id"] not in ids:
            continue
        if event["state"] == "running":
            now += 1
            peak = max(peak, now)
        elif event["previous"] == "running":
            now -= 1
    return peak


def test_a_pool_caps_its_users_across_nested_plans(tmp_path: Path, env: dict[str, str]) -> None:
    # Two nested plans run side by side; each has three subplans that use the one api unit.
    write(
        tmp_path,
        "inner.yaml",
        "name: inner\nsteps:\n  - name: calls\n    uses: [api]\n    for_each: [x, y, z]\n"
        "    subplan: {run: 'true'}\n",
    )
    write(
        tmp_path,
        "plan.yaml",
        "name: outer\npools: {api: 1}\nautomation_profile: {max_parallel: 8}\nsteps:\n"
        "  - name: fan\n    subplans:\n      - {name: one, plan: inner.yaml}\n"
        "      - {name: two, plan: inner.yaml}\n"
        "      - {name: free, run: 'true'}\n",
    )
    ran = run(tmp_path, env, "run", "plan.yaml", "--quiet", "--events-jsonl", "events.jsonl")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    lines = (tmp_path / "events.jsonl").read_text().splitlines()
    events = [json.loads(line) for line in lines]
    users = {f"fan/{n}/calls/{i}" for n in ("one", "two") for i in "xyz"}
    assert most_at_once(events, users) == 1


def test_pools_and_uses_show_with_their_provenance(tmp_path: Path, env: dict[str, str]) -> None:
    write(
        tmp_path,
        "no-config.yaml",
        "profiles:\n  apis: {pools: {api: {size: 4, max_per_second: 10}}}\n",
    )
    write(
        tmp_path,
        "plan.yaml",
        "name: p\nautomation_profile: {profile: apis, max_per_second: 20}\npools: {db: 1}\n"
        "steps:\n  - name: s\n    uses: {api: 2, db: 1}\n    max_per_second: 2.5\n    run: 'true'\n",
    )
    dry = run(tmp_path, env, "run", "plan.yaml", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    # Pools add up by name; the source shown is the highest level that declares one.
    assert "  pools           api=4 at 10/s, db=1  plan (plan.yaml: pools)\n" in dry.stdout
    assert "  max_per_second  2.5" in dry.stdout
    assert "step (plan.yaml: steps[0].max_per_second)" in dry.stdout
    assert "shell: true  (uses api=2, db=1)" in dry.stdout


def test_a_profile_s_pools_are_the_run_s_pools(tmp_path: Path, env: dict[str, str]) -> None:
    write(
        tmp_path,
        "no-config.yaml",
        "profiles:\n  apis: {pools: {api: {size: 4, max_per_second: 10}}}\n",
    )
    write(
        tmp_path,
        "plan.yaml",
        "name: p\nautomation_profile: apis\nsteps:\n  - name: s\n    uses: {api: 2}\n    run: 'true'\n",
    )
    dry = run(tmp_path, env, "run", "plan.yaml", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    shown = json.loads(dry.stdout)["plan"]
    assert shown["pools"]["value"] == {"api": {"size": 4, "max_per_second": 10.0}}
    assert shown["pools"]["source"]["key"] == "automation_profile = 'apis' (profiles.apis.pools)"
    assert shown["steps"][0]["subplans"][0]["uses"] == {"api": 2}
    ran = run(tmp_path, env, "run", "plan.yaml", "--quiet")
    assert ran.returncode == 0, ran.stderr


@pytest.mark.parametrize(
    ("uses", "where", "message"),
    [
        ("{api: 3}", "6:5: steps[0].uses", "uses 3 units of pool 'api', which has 2"),
        ("[gpu]", "6:5: steps[0].uses", "unknown pool 'gpu'; the run's pools: api"),
        (
            "[api, api]",
            "6:11: steps[0].uses",
            "pool 'api' is listed twice; write {api: 2} for two units",
        ),
        (
            "{api: 0}",
            "6:17: steps[0].uses.api",
            "input should be greater than or equal to 1, got 0 (int)",
        ),
    ],
)
def test_a_bad_uses_is_a_validation_error_at_its_line(
    tmp_path: Path, env: dict[str, str], uses: str, where: str, message: str
) -> None:
    write(
        tmp_path,
        "plan.yaml",
        f"name: p\npools: {{api: 2}}\nsteps:\n  - name: s\n    run: 'true'\n    uses: {uses}\n",
    )
    ran = run(tmp_path, env, "run", "plan.yaml")
    assert ran.returncode == 2
    assert ran.stderr == f"error: plan.yaml:{where}: {message}\n"


def test_a_subplan_s_own_uses_wins_over_its_step_s(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "plan.yaml",
        "name: p\npools: {api: 2, db: 1}\nsteps:\n  - name: s\n    uses: [api]\n    subplans:\n"
        "      - {name: a, run: 'true'}\n      - {name: b, run: 'true', uses: {db: 1}}\n"
        "  - name: t\n    uses: {api: 2}\n    for_each: [x]\n    subplan: {run: 'true'}\n",
    )
    plan = load_plan(path, config=NO_CONFIG)
    assert [dict(u.uses) for u in plan.walk_units()] == [{"api": 1}, {"db": 1}, {"api": 2}]
    assert plan.pools == {"api": PoolSpec(2), "db": PoolSpec(1)}


def test_a_nested_plan_s_pools_join_the_run_s_and_the_outer_declaration_wins(
    tmp_path: Path,
) -> None:
    write(
        tmp_path,
        "inner.yaml",
        "name: inner\npools: {api: 8, gpu: 2}\nsteps:\n  - {name: s, run: 'true', uses: {gpu: 2}}\n",
    )
    path = write(
        tmp_path,
        "plan.yaml",
        "name: outer\npools: {api: 1}\nsteps:\n  - {name: n, plan: inner.yaml}\n",
    )
    plan = load_plan(path, config=NO_CONFIG)
    assert plan.pools == {"api": PoolSpec(1), "gpu": PoolSpec(2)}


@pytest.mark.parametrize(
    ("pools", "message"),
    [
        ("{api: 0}", "pools.api: input should be greater than or equal to 1, got 0 (int)"),
        (
            "{api: {size: 2, max_per_second: 0}}",
            "pools.api.max_per_second: max_per_second must be > 0, got 0",
        ),
        ("{'a b': 1}", "pools.a b: string should match pattern"),
    ],
)
def test_a_bad_pool_is_a_validation_error(tmp_path: Path, pools: str, message: str) -> None:
    path = write(
        tmp_path, "plan.yaml", f"name: p\npools: {pools}\nsteps:\n  - {{name: s, run: 'true'}}\n"
    )
    with pytest.raises(ProblemsError) as caught:
        load_plan(path, config=NO_CONFIG)
    assert message in str(caught.value)


def test_the_plain_fast_path_leaves_pools_and_uses_to_pydantic() -> None:
    step = {"name": "s", "run": "true"}
    assert plain_plan({"name": "p", "pools": {"api": 1}, "steps": [step]}) is None
    assert plain_plan({"name": "p", "steps": [{**step, "uses": ["api"]}]}) is None
    subplans = [{"name": "a", "run": "true", "uses": {"api": 1}}]
    assert plain_plan({"name": "p", "steps": [{"name": "s", "subplans": subplans}]}) is None


async def test_the_live_view_shows_each_pool_s_usage(tmp_path: Path, console: Console) -> None:
    from subplans.engine.events import EventBus
    from subplans.engine.limiter import AsyncSemaphoreLimiter
    from subplans.engine.progress import ProgressReporter
    from subplans.sinks.live import LiveView
    from subplans.sinks.plan_progress import PlanProgress

    path = write(
        tmp_path, "plan.yaml", "name: p\npools: {api: 2}\nsteps:\n  - {name: s, run: 'true'}\n"
    )
    api = AsyncSemaphoreLimiter(2)
    await api.acquire()
    bus = EventBus()
    reporter = ProgressReporter(bus, pools={"api": api})
    view = LiveView(console, reporter, PlanProgress(load_plan(path, config=NO_CONFIG)), run_id="r")
    console.print(view.render())
    assert "pools api 1/2 (0 waiting, peak 1)" in printed(console)
