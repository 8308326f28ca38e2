"""Writing plan, action and config files for tests; expanding a step read when it starts."""

from __future__ import annotations

import textwrap
from pathlib import Path

from subplans.plans.for_each import read_items
from subplans.plans.tree import StepNode, UnitNode


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
