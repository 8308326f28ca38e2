"""The review fixes of #14 seen in this process (the black-box tests run the command as a
child): the dry run of a closer ``failure_mode`` and of a run-time step's ``uses``, the plain
lines of a success halt's cancellations, the halts ``status`` keeps, and ``LiveLimits``'
caps as they are and as they started."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import pytest
from typer.testing import CliRunner

from subplans.cli.halt_lines import current_halts, halt_lines
from subplans.cli.limit_lines import limit_lines
from subplans.cli.limit_requests import LimitRequests
from subplans.cli.typer_app import app
from subplans.engine.dispatcher import ParallelSubplanDispatcher
from subplans.engine.errors import ConfigError, SubplanCancelledError
from subplans.engine.events import SubplanStateChanged
from subplans.engine.limiter import AsyncSemaphoreLimiter
from subplans.engine.states import SubplanExecutionState
from subplans.engine.thresholds import cancelled_by_success
from subplans.execution.live_limits import LiveLimits
from subplans.plans.loader import GlobalConfig, load_global_config, load_plan
from subplans.plans.profiles import ProfileRegistry
from subplans.plans.scheduling import pool_uses
from subplans.plans.tree import PoolSpec
from subplans.plans.yamlfile import ProblemsError
from subplans.sinks.lines import PlainLines
from subplans.store import PlanManifest, RunStore, StepInfo, StoredEvent

from .plans_helpers import write

runner = CliRunner()
NO_CONFIG = GlobalConfig(Path("/nonexistent/config.yaml"), False, ProfileRegistry(), None)
PENDING, RUNNING, FAILED = (
    SubplanExecutionState.PENDING,
    SubplanExecutionState.RUNNING,
    SubplanExecutionState.FAILED,
)


def test_the_dry_run_says_a_closer_failure_mode_left_no_halt_and_shows_later_uses(
    tmp_path: Path, isolated: None
) -> None:
    write(
        tmp_path,
        "plan.yaml",
        "name: p\npools: {api: 2}\nautomation_profile: {halt: 'now,fail=1'}\nsteps:\n"
        "  - name: s\n    failure_mode: continue_on_error\n    uses: [api]\n"
        "    for_each: {command: 'seq 1 2'}\n    subplan: {run: 'true'}\n",
    )
    dry = runner.invoke(app, ["run", "plan.yaml", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "  failure_mode  continue_on_error  step (plan.yaml: steps[0].failure_mode)\n" in (
        dry.stdout
    )
    assert "  halt          none               step (plan.yaml: steps[0].failure_mode, over " in (
        dry.stdout
    )
    assert "its subplans are known then; each subplan uses api=1\n" in dry.stdout


def test_the_plain_lines_say_cancelled_of_what_a_success_halt_stopped() -> None:
    reason = "cancelled because the success threshold was reached (halt now,success=1)"
    stopped = SubplanCancelledError(reason)
    assert cancelled_by_success(stopped)
    assert not cancelled_by_success(SubplanCancelledError("cancelled because 'a' failed"))
    for failures_only, expected in ((False, 2), (True, 0)):
        stream = io.StringIO()
        lines = PlainLines(stream, failures_only=failures_only)
        lines(SubplanStateChanged("s/a", PENDING, RUNNING, 1, time=1.0))
        lines(SubplanStateChanged("s/a", RUNNING, FAILED, 1, stopped, time=2.0))
        assert len(stream.getvalue().splitlines()) == expected
        if not failures_only:
            assert (
                stream.getvalue().splitlines()[1].endswith(f"  cancelled  s/a  (1.00s)  {reason}")
            )


def test_status_keeps_the_halts_of_each_step_s_latest_attempt() -> None:
    def halted(name: str, at: float) -> StoredEvent:
        payload = {"name": name, "threshold": "fail", "policy": "soon,fail=1"}
        return StoredEvent("r", 1, at, "dispatch_halted", None, name, payload)

    steps = [
        StepInfo("again", "completed", 2, 10.0, 11.0, None),
        StepInfo("now", "failed", 2, 10.0, 11.0, None),
        StepInfo("pending", "pending", 2, None, None, None),
    ]
    events = [halted("again", 5.0), halted("now", 10.5), halted("pending", 5.0), halted("x", 1)]
    kept = current_halts(events, steps)
    assert [h["name"] for h in kept] == ["now", "x"]
    assert halt_lines(kept[:1]) == ["step now: its fail threshold was reached (halt soon,fail=1)"]


def test_live_limits_say_each_cap_as_it_is_and_as_it_started(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "plan.yaml",
        "name: p\npools: {api: 3}\nautomation_profile: {max_parallel: 6}\nsteps:\n"
        "  - {name: s, max_parallel: 2, run: 'true'}\n",
    )
    api = AsyncSemaphoreLimiter(3)
    limits = LiveLimits(load_plan(path, config=NO_CONFIG), {"api": api})
    assert limits.set("pool:api", 1) == 3
    assert (limits.current("pool:api"), limits.original("pool:api")) == (1, 3)
    assert (limits.current("max_parallel"), limits.original("max_parallel")) == (6, 6)
    assert (limits.current("step:s"), limits.original("step:s")) == (2, 2)
    limits.set("max_parallel", 1)
    assert (limits.current("step:s"), limits.original("step:s")) == (1, 2)


def test_pools_are_the_run_s_and_their_provenance_names_each_level(tmp_path: Path) -> None:
    config_file = write(
        tmp_path,
        "config.yaml",
        "automation_profile: {pools: {api: 4}}\nprofiles:\n  gpus: {pools: {gpu: 1}}\n",
    )
    config = load_global_config({"SUBPLANS_CONFIG": str(config_file)})
    plan = load_plan(
        write(
            tmp_path, "plan.yaml", "name: p\npools: {db: 1}\nsteps:\n  - {name: s, run: 'true'}\n"
        ),
        config=config,
    )
    assert str(plan.profile.sources["pools"]) == (
        f"plan ({tmp_path / 'plan.yaml'}: pools: db; "
        f"global ({config_file}: automation_profile.pools: api))"
    )
    for step, key in (
        ("pools: {x: 1}", "'pools' is not a step's: pools are the run's"),
        ("automation_profile: gpus", "(profiles.gpus.pools): pools are the run's"),
    ):
        path = write(
            tmp_path, "plan.yaml", f"name: p\nsteps:\n  - name: s\n    run: 'true'\n    {step}\n"
        )
        with pytest.raises(ProblemsError) as caught:
            load_plan(path, config=config)
        assert key in str(caught.value)


def test_status_lines_of_changed_caps_as_they_act(tmp_path: Path) -> None:
    """Review of #14, finding 6: each cap as it acts and as the run started; the run's line
    only once the run's own was asked to change."""
    path = write(
        tmp_path,
        "plan.yaml",
        "name: p\nautomation_profile: {max_parallel: 6}\nsteps:\n"
        "  - {name: work, run: 'true'}\n  - {name: n, plan: {steps: [{name: in, run: 'true'}]}}\n",
    )
    with RunStore.open(tmp_path / "state.db") as store:
        store.start_run("r1", PlanManifest.from_plan(load_plan(path, config=NO_CONFIG)))

        def apply(target: str, value: int, previous: int, started: int) -> None:
            store.request_limit("r1", target, value)
            [record] = store.pending_limits("r1")
            store.record_limit("r1", record, original=previous, current=value, started_with=started)

        def shown() -> list[str]:
            return limit_lines(store.get_run("r1"), store.limits("r1"))

        apply("step:n/in", 5, 6, 6)
        assert shown() == ["step n/in 5 (started with 6)"]
        store.request_limit("r1", "max_parallel", 6)
        assert shown() == [
            "max_parallel 6",
            "max_parallel: 6 asked for, not applied yet",
            "step n/in 5 (started with 6)",
        ]
        [record] = store.pending_limits("r1")
        store.record_limit("r1", record, original=6, current=2, started_with=6)
        apply("step:work", 3, 2, 6)
        assert shown() == [
            "max_parallel 2 (started with 6)",
            "step n/in 5 (started with 6)",  # a nested step: the run's budget bounds it
            "step work 2 (started with 6; set to 3, the run's max_parallel bounds it)",
        ]


def test_halt_and_uses_problems_in_process(tmp_path: Path) -> None:
    for step, message in (
        (
            "halt: {when: soon, fail: 2.5}",
            "halt fail must be a count >= 1 or a percentage in (0, 100], got 2.5",
        ),
        ("uses: [api, api]", "pool 'api' is listed twice; write {api: 2} for two units"),
        ("uses: {api: 2, db: 1}", "uses 2 units of pool 'api', which has 1"),
    ):
        path = write(
            tmp_path,
            "plan.yaml",
            f"name: p\npools: {{api: 1}}\nsteps:\n  - name: s\n    run: 'true'\n    {step}\n",
        )
        with pytest.raises(ProblemsError) as caught:
            load_plan(path, config=NO_CONFIG)
        assert str(caught.value.problems[0]).endswith(message)
    assert pool_uses([], {}) == {}
    assert pool_uses(["api"], {"api": PoolSpec(1)}) == {"api": 1}
    with pytest.raises(ValueError, match=r"^unknown pool 'db'; the run's pools: api\nuses 2 "):
        pool_uses({"db": 1, "api": 2}, {"api": PoolSpec(1)})


def test_a_mapping_halt_with_one_threshold_and_pools_of_one_plan_in_process(
    tmp_path: Path,
) -> None:
    path = write(
        tmp_path,
        "plan.yaml",
        "name: p\npools: {db: 1}\nautomation_profile: {pools: {api: 2}}\nsteps:\n"
        "  - name: s\n    halt: {when: soon, success: 2}\n    run: 'true'\n",
    )
    plan = load_plan(path, config=NO_CONFIG)
    step = plan.steps[0]
    assert str(step.profile.halt) == "soon,success=2"
    assert str(plan.profile.sources["pools"]) == (
        f"plan ({path}: pools: db; automation_profile.pools: api)"
    )


def test_live_limits_reach_nested_steps_running_below_a_root_step(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "plan.yaml",
        "name: p\npools: {api: 3}\nautomation_profile: {max_parallel: 4}\nsteps:\n"
        "  - {name: one, run: 'true'}\n"
        "  - name: two\n    subplans:\n"
        "      - {name: n, plan: {steps: [{name: in, uses: {api: 2}, run: 'true'}]}}\n",
    )
    plan = load_plan(path, config=NO_CONFIG)
    _, two = plan.steps
    nested = two.units[0].plan
    assert nested is not None
    limits = LiveLimits(plan, {"api": AsyncSemaphoreLimiter(3)})
    root, inner = ParallelSubplanDispatcher(), ParallelSubplanDispatcher()
    with limits.running(two, root, AsyncSemaphoreLimiter(4)):
        with limits.running(nested.steps[0], inner, None):
            assert limits.original("step:two/n/in") == 4
            assert limits.set("max_parallel", 2) == 4
            assert (root.config.max_parallel, inner.config.max_parallel) == (2, 4)
            with pytest.raises(ConfigError, match=r"^cannot lower pool 'api' to 1: subplan "):
                limits.set("pool:api", 1)
        assert limits.set("pool:api", 1) == 3  # the nested step ended


def test_a_resume_keeps_a_pool_a_step_still_needs_whole_and_records_it(tmp_path: Path) -> None:
    """Review of #14, finding 1: a resumed run does not set again a pool below what a step
    still to run uses, and records the size it keeps, so that ``status`` says it."""
    path = write(
        tmp_path,
        "plan.yaml",
        "name: p\npools: {api: 2}\nsteps:\n  - {name: s, uses: {api: 2}, run: 'true'}\n",
    )
    plan = load_plan(path, config=NO_CONFIG)
    said: list[str] = []
    with RunStore.open(tmp_path / "state.db") as store:
        store.start_run("r1", PlanManifest.from_plan(plan))
        store.request_limit("r1", "pool:api", 1)
        [record] = store.pending_limits("r1")
        store.record_limit("r1", record, original=2, current=1, started_with=2)
        api = AsyncSemaphoreLimiter(2)
        requests = LimitRequests(store, "r1", LiveLimits(plan, {"api": api}), said.append)
        loop = asyncio.new_event_loop()
        with requests.followed(loop):
            pass
        loop.close()
        [kept] = store.limits("r1")
    assert said[0] == (
        "limit: pool api 1 not set again: cannot lower pool 'api' to 1: subplan 's', "
        "not ended yet, uses 2 units of it"
    )
    assert api.capacity == 2
    assert (kept.original, kept.previous, kept.current, kept.pending) == (2, 1, 2, False)
