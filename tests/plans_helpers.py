"""Writing plan, action and config files for tests; expanding a step read when it starts."""

from __future__ import annotations

import textwrap
from pathlib import Path

from subplans.plans.for_each import read_items
from subplans.plans.loader import GlobalConfig, load_plan
from subplans.plans.profiles import ProfileRegistry
from subplans.plans.tree import PlanNode, StepNode, UnitNode


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


def units_now(step: StepNode) -> tuple[UnitNode, ...]:
    """The units of a step whose items are read when it starts, its source read now."""
    assert step.items is not None
    items = read_items(step.items.source, step.items.folder)
    assert isinstance(items, list), items
    return step.items.units(items)


def port_legacy_tree(tmp_path: Path) -> PlanNode:
    """Three steps, the second of five units three at a time, one of them a nested plan of two:
    9 units with prepare's and report's (the sinks' tests read it)."""
    write(
        tmp_path,
        "inner.yaml",
        """
        name: inner
        steps:
          - name: build
            subplans:
              - {name: html, run: "true"}
              - {name: pdf, run: "true"}
        """,
    )
    path = write(
        tmp_path,
        "plan.yaml",
        """
        name: port-legacy
        steps:
          - name: prepare
            run: "true"
          - name: port
            max_parallel: 3
            subplans:
              - {name: a, run: "true"}
              - {name: b, run: "true"}
              - {name: c, run: "true"}
              - {name: d, run: "true"}
              - {name: docs, plan: inner.yaml}
          - name: report
            run: "true"
        """,
    )
    config = GlobalConfig(tmp_path / "none.yaml", False, ProfileRegistry(), None)
    return load_plan(path, config=config)
