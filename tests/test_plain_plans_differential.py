"""Every plan file the examples and the test suite hold, and hostile ones, loaded twice: as the
loader does (``plain_plans`` first) and with ``plain_plan`` giving up on each file, as its
contract lets it (pydantic's path, ``validation.validate``). The trees, their hashes, the units
a run-time ``for_each`` makes and the problems reported must be the same (issue #10: the fast
path behaves exactly like the slow one)."""

from __future__ import annotations

import ast
import dataclasses
import math
import shutil
import textwrap
from collections.abc import Mapping
from pathlib import Path

import pytest
import yaml

from subplans.engine.config import MAX_PARALLEL_LIMIT, FailureMode
from subplans.plans import loader
from subplans.plans.loader import GlobalConfig, Overrides, load_plan
from subplans.plans.profiles import ProfileRegistry
from subplans.plans.tree import StepItems
from subplans.plans.yamlfile import ProblemsError
from subplans.store.manifest import plan_hash

TESTS = Path(__file__).resolve().parent
EXAMPLES = TESTS.parent / "examples"
#: Items a run-time ``for_each`` is expanded with: plain, a name with '/', an empty one.
ITEMS = ["one", "two/x", ""]


def suite_plans() -> dict[str, str]:
    """Every string in the test suite's sources that reads as a plan (a mapping with
    ``steps``), by where it is: the plans the tests write."""
    found: dict[str, str] = {}
    for source in sorted(TESTS.glob("*.py")):
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.Constant) and isinstance(node.value, str)):
                continue
            if "steps" not in node.value:
                continue
            text = textwrap.dedent(node.value).lstrip()
            try:
                data = yaml.safe_load(text)
            except yaml.YAMLError:
                continue
            if isinstance(data, dict) and "steps" in data and text not in found.values():
                found[f"{source.stem}:{node.lineno}"] = text
    return found


SUITE = suite_plans()

#: Files beside every plan: a nested plan, an action, a lines source, a module to call.
BESIDE = {
    "nested.yaml": "name: nested\nsteps:\n  - name: in\n    run: echo {item}\n",
    "base.yaml": "name: base\nautomation_profile: serial\nsteps:\n  - {name: b, run: 'true'}\n",
    "items.txt": "a\nb\n# c\n",
    "callee.py": "def fn(**kwargs):\n    return kwargs\n",
}
STEP = "steps:\n  - name: s\n"
#: Plans the plain path must give up on, or take exactly as pydantic does.
# fmt: off
HOSTILE = [
    # Text that is not UTF-8 (a lone surrogate), in every field that holds text.
    'name: "a\\ud800"\nsteps:\n  - {name: s, run: x}\n',
    'name: p\ndescription: "\\udfff"\nsteps:\n  - {name: s, run: x}\n',
    'name: p\nsteps:\n  - {name: "s\\ud800", run: x}\n',
    'name: p\nsteps:\n  - {name: s, run: ["x", "\\ud800"]}\n',
    'name: p\nsteps:\n  - {name: s, run: x, cwd: "\\ud800", env: {A: "\\ud800"}}\n',
    'name: p\nsteps:\n  - {name: s, run: x, env: {"\\ud800": v}}\n',
    'name: p\nsteps:\n  - {name: s, call: "callee:fn", with: {"\\ud800": 1}}\n',
    'name: p\nsteps:\n  - {name: s, subplans: [{name: "u\\ud800", run: x}]}\n',
    'name: p\nsteps:\n  - {name: s, for_each: ["\\ud800"], subplan: {run: x}}\n',
    'name: p\nsteps:\n  - {name: s, for_each: [a], subplan: {name: "{item}\\ud800", run: x}}\n',
    'name: p\nsteps:\n  - {name: s, for_each: {glob: "\\ud800"}, subplan: {run: x}}\n',
    'name: p\nsteps:\n  - {name: s, for_each: {glob: "*", exclude: ["\\ud800"]}, subplan: {run: x}}\n',
    'name: p\nsteps:\n  - {name: s, for_each: {lines: "\\ud800"}, subplan: {run: x}}\n',
    'name: p\nsteps:\n  - {name: s, for_each: {command: "ls \\ud800"}, subplan: {run: x}}\n',
    'name: p\nautomation_profile: "\\ud800"\nsteps:\n  - {name: s, run: x}\n',
    # Control characters and whitespace, ASCII and not, first in a name and elsewhere.
    *(
        f'name: p\nsteps:\n  - {{name: "{first}s", run: x}}\n'
        for first in (
            "\\t", "\\x1c", "\\x7f", "\\x85", "\\xa0", "\\u1680", "\\u180e", "\\u2000",
            "\\u200b", "\\u2028", "\\u202f", "\\u3000", "\\ufeff", "\\x00", "\\x01", "ü",
        )
    ),
    'name: p\nsteps:\n  - {name: "s\\tt\\x1b[0m", run: "echo \\x07"}\n',
    'name: p\nsteps:\n  - {name: s, run: "a\\x00b"}\n',
    'name: p\nsteps:\n  - {name: "a/b", run: x}\n',
    'name: ""\nsteps:\n  - {name: s, run: x}\n',
    'name: 7\nsteps:\n  - {name: s, run: x}\n',
    'name: p\nsteps:\n  - {name: 7, run: x}\n',
    'name: p\nsteps:\n  - {name: "yes", run: [x, 1]}\n',
    # Numbers on both sides of each bound, and of the wrong type.
    *(
        f"name: p\n{STEP}    run: x\n    {key}: {value}\n"
        for key, values in {
            "max_parallel": ["0", "1", str(MAX_PARALLEL_LIMIT), str(MAX_PARALLEL_LIMIT + 1),
                             "-1", "2.0", "true", "'4'", "1_0", "0x10"],
            "timeout": ["0", "-1", "1e-320", "0.5", ".inf", ".nan", "9007199254740993", "true",
                        "'5'", "1e400"],
            "retries": ["-1", "0", "3", "1.0", "false", "'2'"],
            "idempotent": ["true", "1", "'true'", "null"],
            "always": ["true", "no", "0"],
            "failure_mode": ["fail_fast", "FAIL_FAST", "continue-on-error", "1"],
            "automation_profile": ["wide", "nope", "{max_parallel: 2}", "''"],
            "cwd": ["sub", "''", "1"],
            "env": ["{A: '1'}", "{A: 1}", "{'': x}", "{A=B: x}", "[]", "{A: null}"],
            "with": ["{a: 1}"],
        }.items()
        for value in values
    ),
    # Calls, shapes and sources at the edges of what the plain path takes.
    'name: p\nsteps:\n  - {name: s, call: "callee:fn", with: {a: 1, 2: b}}\n',
    'name: p\nsteps:\n  - {name: s, call: "é:fn"}\n',
    'name: p\nsteps:\n  - {name: s, call: "callee.x:fn"}\n',
    'name: p\nsteps:\n  - {name: s, call: "callee:fn", run: x}\n',
    'name: p\nsteps:\n  - {name: s}\n',
    'name: p\nsteps: []\n',
    'name: p\nsteps:\n',
    'name: p\n',
    'name: p\nsteps:\n  - {name: s, subplans: []}\n',
    'name: p\nsteps:\n  - {name: s, subplans: [{name: u, run: x}, {name: u, run: y}]}\n',
    'name: p\nsteps:\n  - {name: s, subplans: [{name: u}]}\n',
    'name: p\nsteps:\n  - {name: s, run: x}\n  - {name: s, run: y}\n',
    'name: p\nsteps:\n  - {name: s, for_each: [a, a], subplan: {run: x}}\n',
    'name: p\nsteps:\n  - {name: s, for_each: ["a/b"], subplan: {run: x}}\n',
    'name: p\nsteps:\n  - {name: s, for_each: [a], subplan: {name: fixed, run: x}}\n',
    'name: p\nsteps:\n  - {name: s, for_each: [a], subplan: {name: "", run: x}}\n',
    'name: p\nsteps:\n  - {name: s, for_each: [a], subplan: {run: "x {nope}"}}\n',
    'name: p\nsteps:\n  - {name: s, for_each: [a]}\n',
    'name: p\nsteps:\n  - {name: s, for_each: {lines: items.txt}, subplan: {run: "e {item}"}}\n',
    'name: p\nsteps:\n  - {name: s, for_each: {lines: "{item}"}, subplan: {run: x}}\n',
    'name: p\nsteps:\n  - {name: s, for_each: {lines: ""}, subplan: {run: x}}\n',
    'name: p\nsteps:\n  - {name: s, for_each: {command: "ls", allow_empty: 1}, subplan: {run: x}}\n',
    'name: p\nsteps:\n  - {name: s, for_each: {glob: [], exclude: []}, subplan: {run: x}}\n',
    'name: p\nsteps:\n  - {name: s, for_each: {glob: "*", exclude: "x"}, subplan: {run: x}}\n',
    'name: p\nsteps:\n  - {name: s, for_each: {glob: "*", lines: f}, subplan: {run: x}}\n',
    'name: p\nsteps:\n  - {name: s, for_each: {glob: ["*.txt", "*.py"]}, subplan: {plan: nested.yaml}}\n',
    'name: p\nsteps:\n  - {name: s, plan: nested.yaml, env: {E: v}}\n',
    'name: p\nsteps:\n  - {name: s, plan: missing.yaml}\n',
    'name: p\nsteps:\n  - {name: s, plan: {steps: [{name: i, run: x}]}}\n',
    'name: p\naction: base.yaml\n',
    'name: p\naction: base.yaml\nsteps:\n  - {name: s, run: x}\n',
    'name: p\naction: missing.yaml\n',
    'name: p\n$schema: x\nsteps:\n  - {name: s, run: x}\n',
    'name: p\nbogus: 1\nsteps:\n  - {name: s, run: x, bogus: 2}\n',
    'name: p\nsteps:\n  - {name: s, run: x, max_paralel: 2}\n',
    'name: p\nsteps:\n  - &a {name: s, run: x}\n  - *a\n',
    'name: p\nsteps:\n  - {name: s, run: x, timeout: }\n',
    '- not\n- a mapping\n',
    '',
]
# fmt: on


def summary(node: object) -> object:
    """What decides a tree's behaviour, comparable: dataclasses by their fields, a
    ``StepItems``' ``expand`` by the units it makes of ``ITEMS``."""
    if isinstance(node, StepItems):
        try:
            expanded: object = summary(node.units(ITEMS))
        except ProblemsError as error:
            expanded = [str(problem) for problem in error.problems]
        fields = {f.name: summary(getattr(node, f.name)) for f in dataclasses.fields(node)}
        return ("StepItems", {**fields, "expand": expanded})
    if dataclasses.is_dataclass(node) and not isinstance(node, type):
        return (
            type(node).__name__,
            {f.name: summary(getattr(node, f.name)) for f in dataclasses.fields(node)},
        )
    if isinstance(node, list | tuple):
        return (type(node).__name__, [summary(item) for item in node])
    if isinstance(node, Mapping):
        return (type(node).__name__, [(key, summary(value)) for key, value in node.items()])
    if isinstance(node, float) and math.isnan(node):
        return "nan"
    return (type(node).__name__, node)


def loaded(path: Path, config: GlobalConfig, overrides: Overrides | None) -> tuple[object, ...]:
    try:
        node = load_plan(path, config=config, overrides=overrides)
    except ProblemsError as error:
        return ("problems", [str(problem) for problem in error.problems])
    try:
        hashed = plan_hash(node)
    except UnicodeEncodeError as error:  # text pydantic takes and a hash cannot hold
        hashed = repr(error)
    return ("ok", summary(node), hashed)


def _gives_up(data: object) -> None:
    """``plain_plan`` leaving every file to pydantic, as it may for any."""


def both_ways(
    path: Path, monkeypatch: pytest.MonkeyPatch, overrides: Overrides | None = None
) -> tuple[tuple[object, ...], tuple[object, ...]]:
    """``path`` loaded plainly where it can be, and by pydantic."""
    config = GlobalConfig(path.parent / "none.yaml", False, ProfileRegistry(), None)
    plain = loaded(path, config, overrides)
    with monkeypatch.context() as patched:
        patched.setattr(loader, "plain_plan", _gives_up)
        typed = loaded(path, config, overrides)
    return plain, typed


@pytest.mark.parametrize("path", sorted(EXAMPLES.rglob("*.yaml")), ids=lambda path: path.name)
@pytest.mark.parametrize(
    "overrides",
    [None, Overrides(max_parallel=3, failure_mode=FailureMode.CONTINUE_ON_ERROR, profile="wide")],
    ids=["as-written", "overridden"],
)
def test_every_example_loads_the_same_both_ways(
    path: Path, overrides: Overrides | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain, typed = both_ways(path, monkeypatch, overrides)

    assert plain == typed
    assert plain[0] == "ok"


def test_the_suite_holds_plans_to_compare() -> None:
    assert len(SUITE) > 100


def _written(folder: Path, text: str) -> Path:
    """``text`` as ``plan.yaml`` in ``folder``, with the files plans refer to beside it."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir()
    for name, content in BESIDE.items():
        (folder / name).write_text(content, encoding="utf-8")
    (folder / "sub").mkdir()
    path = folder / "plan.yaml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("where", sorted(SUITE))
def test_every_plan_of_the_suite_loads_the_same_both_ways(
    where: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(tmp_path / "plan"))
    plain, typed = both_ways(_written(tmp_path / "plan", SUITE[where]), monkeypatch)

    assert plain == typed


@pytest.mark.parametrize("text", HOSTILE, ids=lambda text: repr(text)[:50])
def test_every_hostile_plan_loads_the_same_both_ways(
    text: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(tmp_path / "plan"))
    plain, typed = both_ways(_written(tmp_path / "plan", text), monkeypatch)

    assert plain == typed
