"""Plans of the common shape checked without pydantic's validators (``plans.plain_plans``, issue
#10): the same models as pydantic makes, field for field, fields set included; anything else is
left to pydantic, so every problem is reported as before."""

from __future__ import annotations

import copy
import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from subplans.engine.config import FailureMode
from subplans.plans.loader import Overrides
from subplans.plans.models import (
    ForEachCommand,
    ForEachGlob,
    ForEachLines,
    PlanFile,
    ProfileFields,
    StepModel,
    SubplanModel,
    SubplanTemplate,
)
from subplans.plans.plain_models import (
    PlainCommand,
    PlainGlob,
    PlainLines,
    PlainPlan,
    PlainProfileFields,
    PlainStep,
    PlainSubplan,
    PlainTemplate,
)
from subplans.plans.plain_plans import plain_plan
from subplans.plans.yamlfile import read_yaml

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

WIDE: dict[str, Any] = {
    "name": "p",
    "description": "every plain form",
    "action": "base.yaml",
    "automation_profile": "wide",
    "steps": [
        {
            "name": "s",
            "max_parallel": 8,
            "failure_mode": "continue_on_error",
            "automation_profile": "serial",
            "timeout": 30,
            "retries": 2,
            "idempotent": False,
            "cwd": "sub",
            "env": {"A": "1"},
            "always": True,
            "run": ["true", "x"],
        },
        {
            "name": "t",
            "subplans": [
                {"name": "u", "run": "x", "timeout": 1.5},
                {"name": "v", "call": "pkg.mod:fn", "with": {"a": 1, "b": [2]}},
                {"name": "w", "plan": "other.yaml", "idempotent": True},
            ],
        },
        {
            "name": "f",
            "for_each": ["a", "b"],
            "subplan": {"name": "{item}-x", "run": "echo {item}", "env": {"B": "{item}"}},
        },
        {
            "name": "g",
            "for_each": {"glob": ["*.py", "*.txt"], "exclude": ["x.py"], "allow_empty": True},
            "subplan": {"run": "cat {item}"},
        },
        {"name": "h", "for_each": {"glob": "*.md"}, "subplan": {"call": "m:f", "with": {}}},
        {
            "name": "c",
            "for_each": {"command": "ls", "allow_empty": False},
            "subplan": {"plan": "o"},
        },
        {"name": "l", "for_each": {"lines": "-"}, "subplan": {"run": "x", "retries": 0}},
        {"name": "n", "call": "tools.report:summarise", "always": False},
        {"name": "ü x", "plan": "nested.yaml"},
    ],
}


#: Each model's stand-in.
STAND_INS: dict[type[BaseModel], type[Any]] = {
    PlanFile: PlainPlan,
    StepModel: PlainStep,
    SubplanModel: PlainSubplan,
    SubplanTemplate: PlainTemplate,
    ForEachGlob: PlainGlob,
    ForEachLines: PlainLines,
    ForEachCommand: PlainCommand,
}


def same(plain: object, typed: object, where: str = "plan") -> None:
    """``plain`` stands for ``typed``: every field's value (of the same type), and the fields
    set."""
    if isinstance(typed, BaseModel):
        assert type(plain) is STAND_INS[type(typed)], where
        assert plain.model_fields_set == typed.model_fields_set, where  # type: ignore[attr-defined]
        for name in type(typed).model_fields:
            same(getattr(plain, name), getattr(typed, name), f"{where}.{name}")
        return
    assert type(plain) is type(typed), where
    if isinstance(plain, dict):
        assert isinstance(typed, dict)
        assert list(plain) == list(typed), where
        for key, value in plain.items():
            same(value, typed[key], f"{where}.{key}")
    elif isinstance(plain, list):
        assert isinstance(typed, list)
        assert len(plain) == len(typed), where
        for index, (one, other) in enumerate(zip(plain, typed, strict=True)):
            same(one, other, f"{where}[{index}]")
    else:
        assert plain == typed, where


def typed(data: dict[str, Any]) -> PlanFile | None:
    try:
        return PlanFile.model_validate(data)
    except ValidationError:
        return None


@pytest.mark.parametrize("path", sorted(EXAMPLES.rglob("*.yaml")), ids=lambda path: path.name)
def test_the_examples_are_plain_and_the_same(path: Path) -> None:
    data = read_yaml(path).data
    if "steps" not in data:
        pytest.skip("not a plan")
    plain = plain_plan(data)

    assert plain is not None
    same(plain, PlanFile.model_validate(data))


def test_every_plain_form_is_the_same_as_pydantics() -> None:
    plain = plain_plan(copy.deepcopy(WIDE))

    assert plain is not None
    same(plain, PlanFile.model_validate(WIDE))


@pytest.mark.parametrize(
    "change",
    [
        {"name": None},
        {"$schema": "x"},
        {"automation_profile": {"max_parallel": 2}},
        {"steps": None},
        {"steps": [{"name": "s", "plan": {"steps": [{"name": "i", "run": "x"}]}}]},
        {"steps": [{"name": "s", "run": "x", "always": "yes"}]},
        {"steps": [{"name": "s", "run": "x", "max_parallel": 0}]},
        {"steps": [{"name": "s", "run": "x", "max_parallel": True}]},
        {"steps": [{"name": "s", "run": "x", "timeout": 0}]},
        {"steps": [{"name": "s", "run": "x", "timeout": float("nan")}]},
        {"steps": [{"name": "s", "run": "x", "timeout": True}]},
        {"steps": [{"name": "s", "run": "x", "idempotent": 1}]},
        {"steps": [{"name": "s", "run": "x", "env": {"A=B": "c"}}]},
        {"steps": [{"name": "s", "run": "x", "env": {"A": 1}}]},
        {"steps": [{"name": "s", "run": "x", "with": {"a": 1}}]},
        {"steps": [{"name": "s", "run": "x", "call": "a:b"}]},
        {"steps": [{"name": "s", "call": "a:1b"}]},
        {"steps": [{"name": "a/b", "run": "x"}]},
        {"steps": [{"name": " a", "run": "x"}]},
        {"steps": [{"name": "a", "run": "x\x00"}]},
        {"steps": [{"name": "a", "run": []}]},
        {"steps": [{"name": "a", "subplans": []}]},
        {"steps": [{"name": "a", "for_each": ["x"]}]},
        {"steps": [{"name": "a", "for_each": {"lines": "{item}"}, "subplan": {"run": "x"}}]},
        {"steps": [{"name": "a", "for_each": {"lines": "f", "command": "c"}, "subplan": {}}]},
        {"steps": [{"name": "a", "for_each": {"glob": []}, "subplan": {"run": "x"}}]},
        {
            "steps": [
                {"name": "a", "for_each": {"glob": "*", "exclude": "x"}, "subplan": {"run": "x"}}
            ]
        },
        {"steps": [{"name": "a", "for_each": ["x"], "subplan": {"run": "x", "name": ""}}]},
        {"steps": [{"name": "a", "for_each": ["x"], "subplan": {"run": "x", "plan": "p"}}]},
        {"steps": [{"name": "a", "run": "x", "bogus": 1}]},
    ],
    ids=lambda change: json.dumps(change)[:60],
)
def test_what_is_not_plain_is_left_to_pydantic(change: dict[str, Any]) -> None:
    data = {"name": "p", "steps": [{"name": "s", "run": "x"}], **change}

    assert plain_plan(data) is None


#: Values a mutated plan gets: plain ones, and every kind the plain check must refuse.
VALUES: list[Any] = [
    None, True, False, 0, 1, -1, 4, 33, 2.5, 0.0, float("inf"), 10**30, "", "x", "a/b", " a",
    "\tx", "x\x00y", "{item}", "fail_fast", "continue_on_error", "keep-going", "pkg.mod:fn",
    "pkg:1fn", "ü/", "é x", [], ["a"], ["a", "b\x00"], ["{item}"], [1], {}, {"a": "b"},
    {"A=B": "c"}, {"": "x"}, {"K": 1}, {1: "x"}, {"lines": "f.txt"}, {"lines": "{item}"},
    {"glob": "*.py"}, {"glob": []}, {"glob": ["*.py"], "exclude": ["x"]}, {"command": "ls"},
    {"glob": "*.py", "allow_empty": "yes"}, {"lines": "a", "command": "b"}, {"lines": ""},
    {"name": "s", "run": "true"}, {"name": "{item}", "run": ["a"]}, {"run": "x"},
    {"steps": [{"name": "i", "run": "x"}]}, [{"name": "u", "run": "x"}],
]  # fmt: skip
KEYS = [
    "name", "run", "call", "plan", "with", "timeout", "retries", "env", "cwd", "idempotent",
    "subplans", "for_each", "subplan", "always", "max_parallel", "failure_mode",
    "automation_profile", "description", "action", "steps", "lines", "glob", "exclude",
    "allow_empty", "command", "bogus", "$schema",
]  # fmt: skip


def _mutate(data: Any, rng: random.Random) -> None:
    """One random change somewhere in ``data``: a value replaced, a key removed or added."""
    while True:
        if isinstance(data, dict) and data:
            key = rng.choice(list(data))
            choice = rng.random()
            if choice < 0.15:
                del data[key]
                return
            if choice < 0.3:
                data[rng.choice(KEYS)] = copy.deepcopy(rng.choice(VALUES))
                return
            if choice < 0.6 or not isinstance(data[key], dict | list) or not data[key]:
                data[key] = copy.deepcopy(rng.choice(VALUES))
                return
            data = data[key]
        elif isinstance(data, list) and data:
            index = rng.randrange(len(data))
            if rng.random() < 0.4 or not isinstance(data[index], dict | list) or not data[index]:
                data[index] = copy.deepcopy(rng.choice(VALUES))
                return
            data = data[index]
        else:
            return


def test_random_changes_are_plain_only_where_pydantic_makes_the_same() -> None:
    rng = random.Random(10)
    plain_count = typed_count = 0
    for _ in range(3000):
        data = copy.deepcopy(WIDE)
        for _ in range(rng.randint(1, 3)):
            _mutate(data, rng)
        found, expected = plain_plan(copy.deepcopy(data)), typed(data)
        typed_count += expected is not None
        if found is not None:
            plain_count += 1
            assert expected is not None, data
            same(found, expected)
    # The check is worth its name: many changed plans are still valid, most taken plainly.
    assert typed_count > 300
    assert plain_count > typed_count // 2


def test_a_plain_plan_loads_no_pydantic(tmp_path: Path) -> None:
    """Loading the README's main job, with a command line's overrides, loads no pydantic."""
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from subplans.engine.config import FailureMode\n"
        "from subplans.plans.loader import Overrides, load_plan\n"
        f"node = load_plan(Path({str(EXAMPLES / 'port-legacy' / 'plan.yaml')!r}),\n"
        "    overrides=Overrides(max_parallel=8, failure_mode=FailureMode.FAIL_FAST))\n"
        "print(node.profile.max_parallel, sorted(m for m in sys.modules if 'pydantic' in m))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=tmp_path
    )

    assert done.stdout == "8 []\n"


@pytest.mark.parametrize(("name", "value"), [("max_parallel", 0), ("max_parallel", True)])
def test_an_override_pydantic_refuses_is_refused_as_before(name: str, value: object) -> None:
    """Values an ``Overrides`` made in code may hold: checked by ``ProfileFields`` as before."""
    with pytest.raises(ValidationError) as expected:
        ProfileFields.model_validate({name: value})
    with pytest.raises(ValidationError) as raised:
        Overrides(**{name: value}).levels()  # type: ignore[arg-type]

    assert str(raised.value) == str(expected.value)


def test_an_override_given_as_text_is_pydantics() -> None:
    [level] = Overrides(failure_mode="fail_fast").levels()  # type: ignore[arg-type]

    assert level.spec == ProfileFields(failure_mode=FailureMode.FAIL_FAST)


def test_a_stand_in_shows_and_compares_its_fields() -> None:
    one = PlainProfileFields({"max_parallel": 2})

    assert repr(one).startswith("PlainProfileFields(profile=None, max_parallel=2,")
    assert one == PlainProfileFields({"max_parallel": 2})
    assert one != PlainProfileFields({"max_parallel": 3})
    assert one != ProfileFields(max_parallel=2)
    assert one.model_fields_set == {"max_parallel"}
