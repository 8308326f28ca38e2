"""Classes of the plan loader, the command and its sinks that were dataclasses (issue #10:
building each cost the command's start a third of a millisecond): they still show themselves
as a dataclass would, and those that are compared compare by their fields."""

from __future__ import annotations

from pathlib import Path

import pytest

from subplans.plans.for_each import CommandSource, GlobSource, Item, ItemsProblem, LinesSource
from subplans.plans.load_scope import Scope
from subplans.plans.profiles import Level
from subplans.plans.yamlfile import Located
from subplans.sinks.plan_progress import StepView


def test_they_show_their_fields_as_a_dataclass_does() -> None:
    assert repr(GlobSource(("*.py",), ("x.py",))) == (
        "GlobSource(patterns=('*.py',), exclude=('x.py',), allow_empty=False)"
    )
    assert repr(LinesSource("-", allow_empty=True)) == "LinesSource(file='-', allow_empty=True)"
    assert repr(CommandSource("ls")) == "CommandSource(command='ls', allow_empty=False)"
    assert repr(ItemsProblem("lines", "no items", Path("a.txt"), 2, 3)) == (
        "ItemsProblem(key='lines', message='no items', file=PosixPath('a.txt'), line=2, column=3)"
    )
    assert repr(Item("a", {"item": "a"})) == "Item(name='a', values={'item': 'a'})"
    assert repr(Level("plan", None, "--max-parallel", None)) == (
        "Level(level='plan', file=None, key='--max-parallel', spec=None)"
    )
    assert repr(StepView("s", "s", 0, 4, "pending")) == (
        "StepView(id='s', name='s', index=0, max_parallel=4, state='pending')"
    )
    # Without the text, which is only kept until the positions are found.
    assert repr(Located(Path("p.yaml"), {"a": 1}, {}, {}, "a: 1\n")) == (
        "Located(file=PosixPath('p.yaml'), data={'a': 1}, positions={}, key_positions={})"
    )


@pytest.mark.parametrize(
    ("one", "same", "other"),
    [
        (GlobSource(("*",)), GlobSource(("*",), (), False), GlobSource(("*",), allow_empty=True)),
        (LinesSource("a"), LinesSource("a", False), LinesSource("b")),
        (CommandSource("ls"), CommandSource("ls", False), CommandSource("ls", True)),
        (ItemsProblem("glob", "m"), ItemsProblem("glob", "m", None), ItemsProblem("lines", "m")),
        (Item("a", {"item": "a"}), Item("a", {"item": "a"}), Item("b", {"item": "a"})),
        (
            Level("plan", None, "k", None),
            Level("plan", None, "k", None),
            Level("step", None, "k", None),
        ),
    ],
    ids=lambda value: type(value).__name__,
)
def test_the_compared_ones_compare_by_their_fields(
    one: object, same: object, other: object
) -> None:
    assert one == same
    assert one != other
    assert one != "a"
    assert one.__eq__("a") is NotImplemented  # another type decides, as with a dataclass


def test_a_level_is_hashed_by_its_fields() -> None:
    levels = {Level("plan", None, "k", None), Level("plan", None, "k", None)}
    assert levels == {Level("plan", None, "k", None)}


def test_a_scope_moves_in_its_files() -> None:
    root = Scope(Path("p.yaml"), (), "", 0, (Path("/p.yaml"),))
    inner = root.at("steps", 0)
    assert (inner.file, inner.loc, inner.prefix, inner.depth) == (
        Path("p.yaml"),
        ("steps", 0),
        "",
        0,
    )
    moved = inner.in_file(Path("action.yaml"), ("action",))
    assert (moved.file, moved.loc, moved.chain) == (Path("action.yaml"), ("action",), root.chain)


def test_the_former_frozen_values_hash_by_their_fields() -> None:
    """As frozen dataclasses they were hashable (a tree node holding a source hashes it)."""
    from subplans.execution.step_items import RecordedItems

    pairs = [
        (GlobSource(("*.py",), ("x.py",)), GlobSource(("*.py",), ("x.py",))),
        (LinesSource("-", allow_empty=True), LinesSource("-", allow_empty=True)),
        (CommandSource("ls"), CommandSource("ls")),
        (
            ItemsProblem("lines", "none", Path("a"), 1, 2),
            ItemsProblem("lines", "none", Path("a"), 1, 2),
        ),
        (RecordedItems("a.txt", ("one",)), RecordedItems("a.txt", ("one",))),
    ]
    for one, other in pairs:
        assert one == other
        assert hash(one) == hash(other)
    assert len({GlobSource(("*.py",)), GlobSource(("*.py",)), GlobSource(("*.md",))}) == 2
    with pytest.raises(TypeError, match="unhashable"):
        hash(Item("a", {"item": "a"}))  # a dict of values, as the dataclass refused it too


def test_the_clock_and_a_progress_failure_compare_by_value() -> None:
    """Both are public (the ``clock=`` argument; a ``ProgressSnapshot``'s failures)."""
    import time

    from subplans.engine.clock import SYSTEM_CLOCK, Clock
    from subplans.engine.progress import Failure

    assert Clock() == SYSTEM_CLOCK
    assert hash(Clock()) == hash(SYSTEM_CLOCK)
    assert Clock(now=time.monotonic) != SYSTEM_CLOCK
    error = ValueError("x")
    assert Failure("a", error, 1.0) == Failure("a", error, 1.0)
    assert hash(Failure("a", error, 1.0)) == hash(Failure("a", error, 1.0))
    assert Failure("a", error, 1.0) != Failure("a", error, 2.0)
    assert Failure("a", None, 1.0) != ("a", None, 1.0)
