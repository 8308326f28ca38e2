"""``run --dry-run`` shows the scheduling that applies (issue #14): a ``halt`` replaces
``failure_mode``, and a nested plan's ``pools`` are shown as the run has them (the run's pools
are shared: of a name, the first plan to declare it, outer plans first, wins)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from subplans.cli.app import main

from .plans_helpers import write

pytestmark = pytest.mark.usefixtures("isolated")


def dry_run(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert main(["run", "plan.yaml", "--dry-run", *args]) == 0
    return capsys.readouterr().out


def dry_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(dry_run(capsys, "--json", *args))
    return found


def test_a_halt_replaces_failure_mode_where_it_is_set(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(
        tmp_path,
        "plan.yaml",
        "name: p\nsteps:\n  - {name: checked, halt: 'soon,fail=3%', run: 'true'}\n"
        "  - {name: plain, run: 'true'}\n",
    )
    text = dry_run(capsys)
    default = "default (profile = 'default' (built-in))"
    assert text.splitlines()[3:] == [
        "step checked",
        f"  max_parallel  4             {default}",
        f"  failure_mode  fail_fast     {default}, replaced by halt",
        "  halt          soon,fail=3%  step (plan.yaml: steps[0].halt)",
        "  checked  shell: true",
        "step plain",
        f"  max_parallel  4          {default}",
        f"  failure_mode  fail_fast  {default}",
        "  plain  shell: true",
    ]

    plan = dry_json(capsys)["plan"]
    checked, plain = plan["steps"]
    assert checked["failure_mode"]["replaced_by"] == "halt"
    assert checked["halt"]["value"] == "soon,fail=3%"
    assert "replaced_by" not in plain["failure_mode"]
    assert "halt" not in plain
    assert "replaced_by" not in plan["failure_mode"]


def test_the_command_s_halt_replaces_the_root_plan_s_failure_mode(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(
        tmp_path,
        "plan.yaml",
        "name: p\nautomation_profile: {failure_mode: continue_on_error}\n"
        "steps:\n  - {name: s, run: 'true'}\n",
    )
    plan = dry_json(capsys, "--halt", "now,fail=2")["plan"]
    for shown in (plan, plan["steps"][0]):
        assert shown["failure_mode"]["value"] == "continue_on_error"
        assert shown["failure_mode"]["replaced_by"] == "halt"
        assert shown["halt"]["source"]["text"] == "plan (--halt)"


NESTED = """\
name: outer
pools: {api: 2}
steps:
  - name: inner
    plan:
      name: inner
      pools: {api: 9, gpu: 3}
      steps:
        - {name: g, uses: {gpu: 2, api: 2}, run: 'true'}
  - {name: again, plan: again.yaml}
"""

AGAIN = """\
name: again
pools: {gpu: {size: 1, max_per_second: 5}, api: 2}
steps:
  - {name: s, uses: [gpu], run: 'true'}
"""


def test_a_nested_plan_s_pools_show_as_the_run_has_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(tmp_path, "plan.yaml", NESTED)
    write(tmp_path, "again.yaml", AGAIN)
    text = dry_run(capsys)
    assert text.splitlines()[1] == (
        "pools of the run (every step and nested plan shares them): "
        "api=2 (plan.yaml), gpu=3 (plan 'inner' (plan.yaml))"
    )
    # The inline plan's api: 9 yields to the outer plan's; its gpu is the run's.
    assert (
        "      pools         api=2 (not 9: plan.yaml's), gpu=3  "
        "plan (plan.yaml: steps[0].plan.pools)\n"
    ) in text
    # The second nested plan loads after the first: the first's gpu wins; its api is the same.
    assert (
        "      pools         gpu=3 (not 1 at 5/s: plan 'inner' (plan.yaml)'s), api=2  "
        "plan (again.yaml: pools)\n"
    ) in text

    document = dry_json(capsys)
    assert document["pools"] == {
        "api": {
            "size": 2,
            "max_per_second": None,
            "declared_by": {"plan": "", "file": "plan.yaml"},
        },
        "gpu": {
            "size": 3,
            "max_per_second": None,
            "declared_by": {"plan": "inner", "file": "plan.yaml"},
        },
    }
    outer = document["plan"]
    assert outer["pools"]["value"] == {"api": {"size": 2, "max_per_second": None}}
    assert "declared" not in outer["pools"]
    inner = outer["steps"][0]["subplans"][0]["plan"]
    assert inner["pools"]["value"] == {
        "api": {"size": 2, "max_per_second": None},
        "gpu": {"size": 3, "max_per_second": None},
    }
    assert inner["pools"]["declared"] == {"api": {"size": 9, "max_per_second": None}}
    assert inner["pools"]["declared_by"] == {"api": {"plan": "", "file": "plan.yaml"}}
    again = outer["steps"][1]["subplans"][0]["plan"]
    assert again["pools"]["declared"] == {"gpu": {"size": 1, "max_per_second": 5.0}}
    assert again["steps"][0]["pools"] == again["pools"]  # a step shows its plan's


def test_a_pool_of_a_plan_read_when_its_step_starts_is_none_of_the_run_s(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(tmp_path, "names.txt", "inner\n")
    write(
        tmp_path,
        "plan.yaml",
        "name: p\nsteps:\n  - name: each\n    for_each: {lines: names.txt}\n"
        "    subplan: {plan: '{item}.yaml'}\n",
    )
    write(
        tmp_path,
        "inner.yaml",
        "name: inner\npools: {new: 1}\nsteps:\n  - {name: s, uses: [new], run: 'true'}\n",
    )
    text = dry_run(capsys)
    assert "pools of the run" not in text
    assert "new=1 (not a pool of the run: its plan is read when its step starts)" in text
    document = dry_json(capsys)
    assert document["pools"] == {}
    inner = document["plan"]["steps"][0]["subplans"][0]["plan"]
    assert inner["pools"]["declared_by"] == {"new": None}


def test_a_pool_of_a_run_time_step_s_nested_plan_is_the_run_s(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Validating the step loaded its template's plan: its pools are the run's from the start.
    write(tmp_path, "names.txt", "a\nb\n")
    write(
        tmp_path,
        "plan.yaml",
        "name: p\nsteps:\n  - name: each\n    for_each: {lines: names.txt}\n"
        "    subplan: {plan: inner.yaml}\n",
    )
    write(
        tmp_path,
        "inner.yaml",
        "name: inner\npools: {new: 1}\nsteps:\n  - {name: s, uses: [new], run: 'true'}\n",
    )
    text = dry_run(capsys)
    assert text.splitlines()[1] == (
        "pools of the run (every step and nested plan shares them): "
        "new=1 (plan 'each/{item}' (inner.yaml))"
    )
    assert "      pools         new=1      plan (inner.yaml: pools)\n" in text
