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
    # Pools add up by name; the source says where each comes from, the closest first.
    assert (
        "  pools           api=4 at 10/s, db=1  plan (plan.yaml: pools: db; "
        "automation_profile.profile = 'apis' (profiles.apis.pools): api)\n" in dry.stdout
    )
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
    from subplans.engine.bus import EventBus
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


@pytest.mark.parametrize(
    ("step", "config", "where"),
    [
        ("    pools: {zzz: 1}\n", "", "6:5: steps[0].pools: 'pools' is not a step's: "),
        (
            "    automation_profile: {pools: {zzz: 1}}\n",
            "",
            "steps[0].automation_profile.pools: ",
        ),
        (
            "    automation_profile: gpus\n",
            "profiles:\n  gpus: {pools: {zzz: 1}}\n",
            "steps[0].automation_profile = 'gpus' (profiles.gpus.pools): ",
        ),
    ],
)
def test_pools_set_by_a_step_are_refused_saying_where_pools_go(
    tmp_path: Path, env: dict[str, str], step: str, config: str, where: str
) -> None:
    """Review of #14, finding 2: a step's ``pools`` was refused with advice to write it under
    ``automation_profile``, where it then did nothing (and ``profile resolve`` showed it as
    the step's); pools are the run's."""
    write(tmp_path, "no-config.yaml", config or "{}\n")
    write(
        tmp_path,
        "plan.yaml",
        f"name: p\nsteps:\n  - name: s\n    run: 'true'\n    uses: [zzz]\n{step}",
    )
    rule = (
        "pools are the run's, shared by every step: declare them in the plan's `pools` (or its "
        "automation_profile) or in the global profile, and take units with `uses`"
    )
    for args in (("run", "plan.yaml"), ("profile", "resolve", "plan.yaml")):
        refused = run(tmp_path, env, *args)
        assert refused.returncode == 2, refused.stdout
        [line] = refused.stderr.splitlines()
        assert line.startswith("error: plan.yaml")
        assert line.endswith(f"{where}{rule}")


def test_every_bad_pool_of_a_uses_is_said_among_the_pools_of_the_whole_run(
    tmp_path: Path, env: dict[str, str]
) -> None:
    """Review of #14, finding 5: only the first problem of a ``uses`` was said, a pool a nested
    plan loaded later declares was unknown to the steps before it, and ``uses: {}`` meant no
    pool while ``uses: []`` was refused."""
    write(
        tmp_path,
        "plan.yaml",
        "name: p\npools: {api: 1}\nsteps:\n"
        "  - name: a\n    uses: {api: 2, gpu: 3, zzz: 1}\n    run: 'true'\n"
        "  - name: b\n    uses: [gpu]\n    plan: {pools: {gpu: 2}, steps: [{name: in, run: 'true'}]}\n",
    )
    ran = run(tmp_path, env, "run", "plan.yaml")
    assert ran.returncode == 2
    assert ran.stderr.splitlines() == [
        "error: plan.yaml:5:5: steps[0].uses: uses 2 units of pool 'api', which has 1",
        "error: plan.yaml:5:5: steps[0].uses: uses 3 units of pool 'gpu', which has 2",
        "error: plan.yaml:5:5: steps[0].uses: unknown pool 'zzz'; the run's pools: api, gpu",
    ]
    path = write(
        tmp_path,
        "plan.yaml",
        "name: p\npools: {api: 1}\nsteps:\n  - name: s\n    uses: [api]\n    subplans:\n"
        "      - {name: a, run: 'true', uses: []}\n      - {name: b, run: 'true', uses: {}}\n"
        "      - {name: c, run: 'true'}\n",
    )
    plan = load_plan(path, config=NO_CONFIG)
    assert [dict(u.uses) for u in plan.walk_units()] == [{}, {}, {"api": 1}]


def test_pools_merged_from_the_global_profile_say_so(tmp_path: Path, env: dict[str, str]) -> None:
    """Review of #14, finding 9a: ``profile resolve`` said the plan's ``pools`` declared a pool
    that came from the global profile."""
    write(tmp_path, "no-config.yaml", "automation_profile: {pools: {api: 4}}\n")
    write(
        tmp_path,
        "plan.yaml",
        "name: p\npools: {gpu: 2}\nsteps:\n  - {name: s, run: 'true', uses: [api, gpu]}\n",
    )
    resolved = run(tmp_path, env, "profile", "resolve", "plan.yaml")
    assert resolved.returncode == 0, resolved.stderr
    config = tmp_path / "no-config.yaml"
    assert (
        f"  pools         api=4, gpu=2  plan (plan.yaml: pools: gpu; "
        f"global ({config}: automation_profile.pools: api))\n" in resolved.stdout
    )


def test_a_dry_run_shows_the_uses_of_a_step_whose_items_come_later(
    tmp_path: Path, env: dict[str, str]
) -> None:
    """Review of #14, finding 9b: a run-time ``for_each``'s ``uses`` was not shown."""
    write(
        tmp_path,
        "plan.yaml",
        "name: p\npools: {api: 2}\nsteps:\n  - name: s\n    uses: {api: 2}\n"
        "    for_each: {command: 'seq 1 3'}\n    subplan: {run: 'true'}\n",
    )
    dry = run(tmp_path, env, "run", "plan.yaml", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert (
        "  for_each      would run 'seq 1 3' when the step starts; its subplans are known "
        "then; each subplan uses api=2\n" in dry.stdout
    )
    shown = json.loads(run(tmp_path, env, "run", "plan.yaml", "--dry-run", "--json").stdout)
    assert shown["plan"]["steps"][0]["items"]["uses"] == {"api": 2}
