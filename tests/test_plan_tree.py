"""The tree a plan file becomes is plain dataclasses: running one loads no pydantic and no YAML."""

from __future__ import annotations

import dataclasses
import inspect
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import BaseModel

from subplans.plans.loader import GlobalConfig, load_plan
from subplans.plans.profiles import ProfileRegistry

from .conftest import command_env
from .plans_helpers import units_now, write

_RUN_A_HAND_BUILT_TREE = """
import asyncio, sys
from pathlib import Path

from subplans.engine.config import FailureMode
from subplans.execution.executor import PlanExecutor
from subplans.plans.tree import PlanNode, ResolvedProfile, StepNode, UnitNode

folder = Path(sys.argv[1])
profile = ResolvedProfile(2, FailureMode.FAIL_FAST, 1.0, None, 0, True, {})
leaf = UnitNode("n/inner", "inner", "run", folder, folder, command=("true",))
inner = PlanNode("n", "inner", folder / "inner.yaml", folder, None, profile,
                 (StepNode("n/inner", "inner", False, True, profile, (leaf,)),), 1)
units = (
    UnitNode("s/a", "a", "run", folder, folder, command="true"),
    UnitNode("s/n", "n", "plan", folder, folder, plan=inner),
)
plan = PlanNode("", "p", folder / "p.yaml", folder, None, profile,
                (StepNode("s", "s", False, False, profile, units),), 0)
result = asyncio.run(PlanExecutor(plan, run_dir=folder / "run").run())
loaded = sorted(name for name in ("pydantic", "yaml") if name in sys.modules)
print(result.state, result.counts()["completed"], loaded)
"""


def test_running_a_tree_loads_no_pydantic_and_no_yaml(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_RUN_A_HAND_BUILT_TREE), str(tmp_path)],
        capture_output=True,
        text=True,
        env=command_env(),
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "completed 3 []\n"


def _values(value: object) -> Iterator[object]:
    """``value`` and everything inside it: dataclass fields, the slots of our plain classes
    (``for_each``'s sources), mappings and sequences."""
    yield value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        for field in dataclasses.fields(value):
            yield from _values(getattr(value, field.name))
    elif type(value).__module__.startswith("subplans.") and hasattr(type(value), "__slots__"):
        for name in getattr(type(value), "__slots__"):  # noqa: B009 - object has no __slots__
            yield from _values(getattr(value, name))
    elif isinstance(value, dict):
        for key, inner in value.items():
            yield from _values(key)
            yield from _values(inner)
    elif isinstance(value, list | tuple):
        for inner in value:
            yield from _values(inner)


def test_a_loaded_tree_holds_no_pydantic_model(tmp_path: Path) -> None:
    write(tmp_path, "pkg/__init__.py", "")
    write(tmp_path, "pkg/tools.py", "def go(**kwargs: object) -> None: ...\n")
    write(tmp_path, "items.txt", "one\ntwo\n")
    write(
        tmp_path,
        "inner.yaml",
        """
        name: inner
        automation_profile: {profile: serial, timeout: 5}
        steps: [{name: s, run: ['echo', 'x']}]
        """,
    )
    path = write(
        tmp_path,
        "p.yaml",
        """
        name: p
        automation_profile: keep-going
        steps:
          - name: one
            call: pkg.tools:go
            with: {a: [1, {b: 2}]}
          - name: each
            for_each: {lines: items.txt}
            subplan: {plan: inner.yaml, env: {WHICH: '{item}'}}
          - name: both
            max_parallel: 2
            subplans:
              - {name: x, run: 'echo "{x}"', env: {A: '1'}, cwd: pkg}
              - {name: y, plan: {steps: [{name: z, run: 'true'}]}}
        """,
    )
    config = GlobalConfig(tmp_path / "no-config.yaml", False, ProfileRegistry(), None)
    plan = load_plan(path, config=config)
    # The lines step's units are made when it starts (issue #11): they hold none either.
    made = units_now(plan.steps[1])
    values = [*_values(plan), *_values(made)]
    assert [v for v in values if isinstance(v, BaseModel)] == []
    assert len(plan.walk_units()) + sum(1 + len(u.plan.walk_units()) for u in made if u.plan) == 8


def test_a_unit_draft_has_the_fields_of_a_unit_node() -> None:
    """Nodes are built as drafts, then made ``UnitNode``s in place (issue #10: a frozen
    dataclass's ``__init__`` was most of a big ``for_each``'s cost): the two keep one layout."""
    from subplans.plans.tree import UnitDraft, UnitNode

    node_fields = [f.name for f in dataclasses.fields(UnitNode)]
    assert list(UnitDraft.__slots__) == node_fields == list(UnitNode.__slots__)
    draft_types = inspect.signature(UnitDraft).parameters.values()
    node_types = inspect.signature(UnitNode).parameters.values()
    assert [(p.name, p.annotation) for p in draft_types] == [
        (p.name, p.annotation) for p in node_types
    ]
    values = {name: f"value of {name}" for name in node_fields}
    node = UnitDraft(**values).finished()  # type: ignore[arg-type]
    assert type(node) is UnitNode
    assert node == UnitNode(**values)  # type: ignore[arg-type]
    with pytest.raises(dataclasses.FrozenInstanceError, match=r"^cannot assign to field 'name'$"):
        node.name = "changed"  # type: ignore[misc]
