"""Big ``for_each`` steps built cheaply: what the units of one template share, placeholders
filled in as before (issue #10: a million units should not take minutes)."""

from __future__ import annotations

import gc
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from subplans.plans.for_each import named_items
from subplans.plans.loader import GlobalConfig, load_plan
from subplans.plans.placeholders import stem, substitute
from subplans.plans.profiles import ProfileRegistry
from subplans.plans.yamlfile import ProblemsError

from .plans_helpers import write


@pytest.fixture
def config(tmp_path: Path) -> GlobalConfig:
    return GlobalConfig(tmp_path / "no-config.yaml", False, ProfileRegistry(), None)


ITEMS = [
    "", ".", "..", "...", "a", "a.b", ".a", "a.", "a..b", "..x", "x..", ".a.b", "x.tar.gz",
    "a/b.c", "a/b/", "a/.", "a/..", "/", "//", "/x.y", "a//b.c", "dir.d/file", "a/b/c.d/",
    "a\\b.c", "é.ü", " .x", "a/ b.c ",
]  # fmt: skip


@pytest.mark.parametrize("item", ITEMS)
def test_the_stem_is_the_paths(item: str) -> None:
    assert stem(item) == Path(item).stem


def _by_regex(text: str, values: dict[str, str]) -> str:
    """How placeholders were replaced before templates were split once."""
    return re.sub(r"\{(item|index|stem)\}", lambda match: values[match.group(1)], text)


@pytest.mark.parametrize(
    "text",
    ["plain", "{item}", "a {item} b {index} c {stem}", "{item}{item}", "{x} {item", "{{item}}", ""],
)
@pytest.mark.parametrize("item", ["v", "{stem}", "{index}", "a b", ""])
def test_placeholders_are_replaced_once_each(text: str, item: str) -> None:
    values = {"item": item, "index": "7", "stem": "s"}
    assert substitute(text, values) == _by_regex(text, values)


def test_items_are_named_one_at_a_time() -> None:
    def items() -> Iterator[str]:
        yield "a"
        raise AssertionError("read past the first item")

    named = named_items(items(), None)
    first = next(named)
    assert not isinstance(first, str)
    assert first.name == "a"


def test_the_units_of_a_template_share_what_no_placeholder_changes(
    tmp_path: Path, config: GlobalConfig
) -> None:
    path = write(
        tmp_path,
        "p.yaml",
        """
        name: p
        steps:
          - name: fixed
            for_each: [a, b]
            subplan: {run: [echo, x], env: {A: "1"}, cwd: sub}
          - name: varying
            for_each: [a, b]
            subplan: {run: [echo, "{item}"], env: {A: "{item}"}, cwd: "{item}"}
        """,
    )
    fixed, varying = load_plan(path, config=config).steps
    one, two = fixed.units
    assert one.command == two.command == ("echo", "x")
    assert one.command is two.command
    assert one.env is two.env
    assert one.env == {"A": "1"}
    assert one.cwd == two.cwd == tmp_path / "sub"
    one, two = varying.units
    assert (one.command, two.command) == (("echo", "a"), ("echo", "b"))
    assert (one.env, two.env) == ({"A": "a"}, {"A": "b"})
    assert (one.cwd, two.cwd) == (tmp_path / "a", tmp_path / "b")


def test_each_call_unit_has_its_own_arguments(tmp_path: Path, config: GlobalConfig) -> None:
    write(tmp_path, "tools.py", "def f(**kwargs):\n    return kwargs\n")
    path = write(
        tmp_path,
        "p.yaml",
        """
        name: p
        steps:
          - name: s
            for_each: [a, b]
            subplan: {call: "tools:f", with: {xs: [1], name: "{item}"}}
        """,
    )
    one, two = load_plan(path, config=config).steps[0].units
    assert one.kwargs == {"xs": [1], "name": "a"}
    assert two.kwargs == {"xs": [1], "name": "b"}
    assert one.kwargs["xs"] is not two.kwargs["xs"]


def test_a_missing_call_module_is_reported_for_every_item(
    tmp_path: Path, config: GlobalConfig
) -> None:
    """Looked up once, reported as before: one line per item."""
    path = write(
        tmp_path,
        "p.yaml",
        """
        name: p
        steps:
          - {name: s, for_each: [a, b], subplan: {call: "nomodule:f"}}
        """,
    )
    with pytest.raises(ProblemsError) as caught:
        load_plan(path, config=config)
    message = "steps[0].subplan.call: cannot find module 'nomodule'"
    assert [message in str(p) for p in caught.value.problems] == [True, True]


@pytest.mark.parametrize("enabled", [True, False])
def test_loading_leaves_the_collector_as_it_was(
    tmp_path: Path, config: GlobalConfig, enabled: bool
) -> None:
    path = write(tmp_path, "p.yaml", "name: p\nsteps: [{name: s, run: 'true'}]\n")
    was = gc.isenabled()
    try:
        (gc.enable if enabled else gc.disable)()
        load_plan(path, config=config)
        assert gc.isenabled() is enabled
        with pytest.raises(ProblemsError):
            load_plan(write(tmp_path, "bad.yaml", "name: p\n"), config=config)
        assert gc.isenabled() is enabled
    finally:
        (gc.enable if was else gc.disable)()


def test_a_long_for_each_loads(tmp_path: Path, config: GlobalConfig) -> None:
    items = "".join(f"      - i{n}\n" for n in range(20_000))
    path = tmp_path / "p.yaml"
    path.write_text(
        f"name: p\nsteps:\n  - name: s\n    subplan: {{run: [echo, '{{item}}']}}\n"
        f"    for_each:\n{items}"
    )
    units = load_plan(path, config=config).steps[0].units
    assert len(units) == 20_000
    assert [(u.id, u.command) for u in (units[0], units[-1])] == [
        ("s/i0", ("echo", "i0")),
        ("s/i19999", ("echo", "i19999")),
    ]


def test_loading_leaves_the_collector_and_the_program_s_objects_as_they_were(
    tmp_path: Path, config: GlobalConfig
) -> None:
    """The collector is paused while a tree is built (issue #10) and then on again; nothing of
    the program's is frozen, unfrozen or moved (a library does not touch what is not its own)."""
    path = write(tmp_path, "p.yaml", "name: p\nsteps: [{name: s, run: 'true'}]\n")
    load_plan(path, config=config)
    assert gc.isenabled()
    assert gc.get_freeze_count() == 0
    mine: list[object] = []
    gc.freeze()
    try:
        load_plan(path, config=config)
        collected = (gc.get_objects(generation) for generation in range(3))
        assert not any(found is mine for objects in collected for found in objects)  # frozen
    finally:
        gc.unfreeze()
    gc.disable()
    try:
        load_plan(path, config=config)
        assert not gc.isenabled()  # the caller's pause stands
    finally:
        gc.enable()
