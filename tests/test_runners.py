"""Runner details: log file names, environments, and units run without a bus."""

from __future__ import annotations

from pathlib import Path

from subplans.execution.executor import PlanExecutor
from subplans.execution.run_context import RunContext
from subplans.plans.loader import GlobalConfig, load_plan
from subplans.plans.profiles import ProfileRegistry

from .log_headers import unheaded
from .plans_helpers import write


def test_log_file_names_are_unique_and_stable(tmp_path: Path) -> None:
    context = RunContext("run", tmp_path)
    first = context.log_file("a/b")
    assert first == tmp_path / "logs" / "a__b.log"
    assert context.log_file("a__b") == tmp_path / "logs" / "a__b.2.log"
    assert context.log_file("a/b") == first
    assert context.log_file("../..") == tmp_path / "logs" / "subplan.log"
    assert context.log_file("x y/z") == tmp_path / "logs" / "x_y__z.log"


async def test_a_plan_runs_without_a_bus(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "p.yaml",
        """
        name: quiet
        steps:
          - {name: fails, run: "exit 1"}
          - {name: skipped, run: "true"}
          - name: nested
            always: true
            subplans: [{name: inner, plan: {steps: [{name: s, run: "true"}]}}]
        """,
    )
    config = GlobalConfig(tmp_path / "none", False, ProfileRegistry(), None)
    result = await PlanExecutor(load_plan(path, config=config), state_dir=tmp_path / "state").run()
    assert [s.state for s in result.steps] == ["failed", "skipped", "completed"]
    assert result.run_dir.parent == tmp_path / "state" / "runs"


async def test_a_given_run_folder_is_used(tmp_path: Path) -> None:
    path = write(tmp_path, "p.yaml", "name: p\nsteps: [{name: a, run: 'echo hi'}]\n")
    config = GlobalConfig(tmp_path / "none", False, ProfileRegistry(), None)
    executor = PlanExecutor(load_plan(path, config=config), run_dir=tmp_path / "here")
    result = await executor.run()
    assert result.run_dir == tmp_path / "here"
    assert unheaded((tmp_path / "here" / "logs" / "a.log").read_text()) == "hi\n"
