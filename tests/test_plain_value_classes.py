"""Classes of the plan loader, the command and its sinks that were dataclasses (issue #10:
building each cost the command's start a third of a millisecond): they still show themselves
as a dataclass would, and those that are compared compare by their fields."""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import cast

import pytest

from subplans.engine.values import Shown, Value
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


def _former_frozen_dataclasses() -> list[type[Value]]:
    from subplans.cli.launches import Decision
    from subplans.cli.lifecycle import Output, RunEnd
    from subplans.engine.clock import Clock
    from subplans.engine.progress import Failure
    from subplans.execution.finding import Family
    from subplans.execution.procfs import ProcessInfo, Window
    from subplans.execution.step_items import RecordedItems
    from subplans.sinks.summary import RunSummary
    from subplans.store.schema import Migration
    from subplans.store.writer_frames import WriterOptions

    return [
        GlobSource,
        LinesSource,
        CommandSource,
        ItemsProblem,
        Item,
        Scope,
        Level,
        Located,
        StepView,
        RunSummary,
        Decision,
        Output,
        RunEnd,
        Clock,
        Failure,
        Family,
        ProcessInfo,
        Window,
        RecordedItems,
        Migration,
        WriterOptions,
    ]


#: Fields the dataclass declared ``repr=False, compare=False``.
_LEFT_OUT = {"ProcessInfo": {"kernel"}, "Located": {"text"}}
#: Classes that show themselves their own way on purpose.
_OWN_REPR = {"Migration", "WriterOptions"}


@pytest.mark.parametrize("cls", _former_frozen_dataclasses(), ids=lambda cls: cls.__name__)
def test_a_former_frozen_dataclass_is_shown_compared_and_hashed_as_it_was(
    cls: type[Value],
) -> None:
    """Each is built from one made-up value per argument and set beside the frozen dataclass of
    its ``_fields``: the same repr, equality and hash; a changed field makes it unequal, one
    the dataclass left out of comparison does not."""
    params = list(inspect.signature(cls).parameters)
    left_out = _LEFT_OUT.get(cls.__name__, set())
    assert cls._fields == tuple(name for name in params if name not in left_out)
    assert set(cls._fields) <= set(cls.__slots__)
    build = cast("Callable[..., Value]", cls)
    sample = {name: f"{name}-1" for name in params}
    value, same = build(**sample), build(**sample)
    twin = dataclasses.make_dataclass(cls.__name__, cls._fields, frozen=True)
    twin.__qualname__ = cls.__qualname__
    model = twin(*(sample[name] for name in cls._fields))
    if cls.__name__ not in _OWN_REPR:
        assert repr(value) == repr(model)
    assert value == same
    assert hash(value) == hash(same) == hash(model)
    assert value != model  # another class, as a dataclass is unequal to one
    assert value.__eq__(model) is NotImplemented
    for name in params:
        changed = build(**{**sample, name: f"{name}-2"})
        if name in left_out:
            assert changed == value
            assert hash(changed) == hash(value)
        else:
            assert changed != value


def _former_mutable_dataclasses() -> list[type[Shown]]:
    from subplans.cli.run_backends import ClusterNeed
    from subplans.execution.live_limits import _Running

    return [ClusterNeed, _Running]


@pytest.mark.parametrize("cls", _former_mutable_dataclasses(), ids=lambda cls: cls.__name__)
def test_a_former_mutable_dataclass_is_shown_as_it_was(cls: type[Shown]) -> None:
    """Shown as the dataclass was; equal only to itself (a mutable value is no dict key)."""
    params = list(inspect.signature(cls).parameters)
    assert cls._fields == tuple(params)
    sample = {name: f"{name}-1" for name in params}
    value = cast("Callable[..., Shown]", cls)(**sample)
    twin = dataclasses.make_dataclass(cls.__name__, cls._fields)
    twin.__qualname__ = cls.__qualname__
    assert repr(value) == repr(twin(**sample))
    assert value == value
    assert value != cast("Callable[..., Shown]", cls)(**sample)


def test_every_value_class_is_checked_above() -> None:
    """A new ``Value`` or ``Shown`` subclass joins the list of a test above."""
    assert set(Value.__subclasses__()) == set(_former_frozen_dataclasses())
    assert set(Shown.__subclasses__()) == set(_former_mutable_dataclasses())
