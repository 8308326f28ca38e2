"""Plans of the common shape checked without pydantic's validators (``plans.plain_plans``, issue
#10): the same models as pydantic makes, field for field, fields set included; anything else is
left to pydantic, so every problem is reported as before."""

from __future__ import annotations

import copy
import json
import random
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, get_args, get_origin

import annotated_types
import pytest
import yaml
from hypothesis import event, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from subplans.engine.config import MAX_PARALLEL_LIMIT, FailureMode
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
from subplans.plans.profiles import BUILTIN_PROFILES, Level
from subplans.plans.tree import FIELDS
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
    "pkg:1fn", "ü/", "é x", "a\ud800", "\udfffa", "\x85a", "\u3000a", "a\x1b", [], ["a"], ["a", "b\x00"], ["{item}"], [1], {}, {"a": "b"},
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
    assert one == ProfileFields(max_parallel=2)  # as the model was (issue #10's review)
    assert one.model_fields_set == {"max_parallel"}


#: A lone surrogate (text that is not UTF-8) in each field whose constraint pydantic checks on
#: the text as UTF-8: refused by pydantic, so the plain path must give up on it.
SURROGATE_IN = {
    "plan name": 'name: "p\\ud800"\nsteps:\n  - {name: s, run: x}\n',
    "step name": 'name: p\nsteps:\n  - {name: "s\\ud800", run: x}\n',
    "subplan name": 'name: p\nsteps:\n  - {name: s, subplans: [{name: "u\\udfff", run: x}]}\n',
    "template name": "name: p\nsteps:\n  - name: s\n    for_each: [a]\n"
    '    subplan: {name: "{item}\\ud800", run: x}\n',
    "glob": 'name: p\nsteps:\n  - {name: s, for_each: {glob: "\\ud800"}, subplan: {run: x}}\n',
    "exclude": 'name: p\nsteps:\n  - name: s\n    for_each: {glob: "*", exclude: ["\\ud800"]}\n'
    "    subplan: {run: x}\n",
    "lines": 'name: p\nsteps:\n  - {name: s, for_each: {lines: "\\ud800"}, subplan: {run: x}}\n',
    "command": 'name: p\nsteps:\n  - {name: s, for_each: {command: "\\ud800"}, subplan: {run: x}}\n',
}


@pytest.mark.parametrize("text", SURROGATE_IN.values(), ids=list(SURROGATE_IN))
def test_text_that_is_not_utf8_is_refused_as_pydantic_refuses_it(
    text: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], isolated: None
) -> None:
    """The plain path gives up on such text; a plan file's reader refuses it before either path
    (at the key or value, one line), so the command says that."""
    from subplans.cli.app import ExitCode, main
    from subplans.plans.yamlfile import ProblemsError

    path = tmp_path / "plan.yaml"
    path.write_text(text, encoding="utf-8")
    assert plain_plan(yaml.safe_load(text)) is None
    with pytest.raises(ProblemsError) as refused:
        read_yaml(path)
    [problem] = refused.value.problems
    assert problem.message.startswith("holds a lone surrogate (U+D")

    for args in (["run", "plan.yaml", "--store", "s.db"], ["validate", "plan.yaml"]):
        assert main(args) == ExitCode.INVALID
        err = capsys.readouterr().err
        assert err == f"error: {str(problem).replace(str(path), 'plan.yaml')}\n"


def test_a_stand_in_equals_and_hashes_as_its_model() -> None:
    """As ``ProfileFields`` did in a ``Level`` (``Overrides.levels``, the built-in profiles):
    equal to the model of the same values, hashed alike, frozen."""
    one = PlainProfileFields({"max_parallel": 2})
    model = ProfileFields(max_parallel=2)

    assert one == model
    assert model == one
    assert hash(one) == hash(model)
    levels: dict[object, str] = {model: "level"}
    assert levels[one] == "level"
    assert one != ProfileFields(max_parallel=3)
    assert ProfileFields(max_parallel=3) != one
    assert one != PlainStep({"max_parallel": 2})
    with pytest.raises(AttributeError):
        one.max_parallel = 3
    assert Overrides(max_parallel=8).levels() == [
        Level("plan", None, "--max-parallel", ProfileFields(max_parallel=8))
    ]
    assert len({*Overrides(max_parallel=8).levels(), *Overrides(max_parallel=8).levels()}) == 1
    assert BUILTIN_PROFILES["serial"] == ProfileFields(
        max_parallel=1, failure_mode=FailureMode.FAIL_FAST
    )


def test_the_profile_stand_in_has_the_models_fields_and_defaults() -> None:
    """``PlainProfileFields``, ``ProfileFields`` and ``tree.FIELDS``: one list of fields, in one
    order, with the same defaults (a field added to one of them must be added to all)."""
    fields = ProfileFields.model_fields

    assert list(PlainProfileFields.DEFAULTS) == list(fields) == ["profile", *FIELDS]
    assert {name: field.default for name, field in fields.items()} == PlainProfileFields.DEFAULTS
    assert set(PlainProfileFields.__annotations__) - {"DEFAULTS"} == set(fields)


def test_every_stand_in_has_its_models_fields_and_defaults() -> None:
    for model, stand_in in STAND_INS.items():
        assert list(stand_in.DEFAULTS) == list(model.model_fields), model.__name__
        for name, field in model.model_fields.items():
            # A required field has no default: the stand-in's None is never read.
            default = None if field.is_required() else field.get_default()
            assert stand_in.DEFAULTS[name] == default, f"{model.__name__}.{name}"


# Values drawn for every field of the models on both sides of each of its rules, the rules read
# from the model's own metadata (ge, gt, le, lt, min_length, pattern): a rule tightened in
# ``models`` and not in ``plain_plans`` makes the plain path take what pydantic refuses.

#: Characters that tell the two ways apart where they could: NUL and other controls, Unicode
#: whitespace (first in a name), lone surrogates, what names, calls and placeholders use.
SPECIAL = (
    "\x00\t\n\x1c\x1f\x7f\x85\xa0\u1680\u180e\u2000\u200b\u2028\u3000\ufeff/{}:=._-é日\ud800\udfff"
)
CHARACTERS = st.sampled_from(SPECIAL) | st.characters(codec=None, exclude_categories=())
TEXTS = st.text(CHARACTERS, max_size=6) | st.sampled_from(
    ["", "x", "a/b", " a", "{item}", "{index}-{stem}", "pkg.mod:fn", "fail_fast", "*.py", "-"]
)
ANY = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | TEXTS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXTS, inner, max_size=3),
    max_leaves=6,
)
#: Values of the shapes fields take, so that many plans drawn are valid.
SHAPED = [
    TEXTS,
    st.from_regex(r"[a-z][a-z0-9 ._-]{0,5}", fullmatch=True),
    st.lists(TEXTS, min_size=1, max_size=3),
    st.dictionaries(TEXTS, TEXTS, max_size=2),
    st.dictionaries(st.from_regex(r"[A-Z][A-Z0-9_]{0,3}", fullmatch=True), TEXTS, max_size=2),
    st.integers(-1, MAX_PARALLEL_LIMIT + 1),
    st.floats(allow_nan=False, min_value=-1, max_value=1e9) | st.floats(),
    st.booleans(),
    ANY,
]


def rules(annotation: object) -> list[object]:
    """The metadata of ``annotation`` and of every type nested in it (not nested models': they
    are fields of their own)."""
    if isinstance(annotation, FieldInfo):
        return list(annotation.metadata)
    found: list[object] = []
    if get_origin(annotation) is Annotated:
        base, *extras = get_args(annotation)
        found += rules(base)
        for extra in extras:
            found += rules(extra) if isinstance(extra, FieldInfo) else [extra]
    else:
        for argument in get_args(annotation):
            found += rules(argument)
    return found


def field_rules(field: FieldInfo) -> list[object]:
    return [*field.metadata, *rules(field.annotation)]


def both_sides(field: FieldInfo) -> st.SearchStrategy[Any]:
    """Values for ``field``: each side of each bound, length and pattern, and anything."""
    found = field_rules(field)
    strategies: list[st.SearchStrategy[Any]] = []
    for rule in found:
        bound = next(
            (getattr(rule, name) for name in ("ge", "gt", "le", "lt") if hasattr(rule, name)),
            None,
        )
        if isinstance(rule, annotated_types.BaseMetadata) and isinstance(bound, int | float):
            near = [bound - 1, bound, bound + 1]
            strategies.append(st.sampled_from([*near, *map(float, near), bound + 0.5]))
        if isinstance(rule, annotated_types.MinLen):
            low, high = max(rule.min_length - 1, 0), rule.min_length + 1
            strategies += [
                st.text(CHARACTERS, min_size=low, max_size=high),
                st.lists(TEXTS, min_size=low, max_size=high),
            ]
        pattern = getattr(rule, "pattern", None)
        if isinstance(pattern, str):
            strategies += [st.from_regex(pattern, fullmatch=True), TEXTS]
    # Half of the values at the rules' edges, where a field has rules.
    return st.one_of(st.one_of(strategies), st.one_of(SHAPED)) if strategies else st.one_of(SHAPED)


#: Where each model stands in ``WIDE``.
SITES: list[tuple[type[BaseModel], Callable[[dict[str, Any]], dict[str, Any]]]] = [
    (PlanFile, lambda plan: plan),
    *((StepModel, lambda plan, i=i: plan["steps"][i]) for i in (0, 1, 2, 7, 8)),
    *((SubplanModel, lambda plan, i=i: plan["steps"][1]["subplans"][i]) for i in (0, 1)),
    *((SubplanTemplate, lambda plan, i=i: plan["steps"][i]["subplan"]) for i in (2, 4)),
    (ForEachGlob, lambda plan: plan["steps"][3]["for_each"]),
    (ForEachCommand, lambda plan: plan["steps"][5]["for_each"]),
    (ForEachLines, lambda plan: plan["steps"][6]["for_each"]),
]
#: For each model, its keys and the values drawn for them.
DRAWN = {
    model: {field.alias or name: both_sides(field) for name, field in model.model_fields.items()}
    for model in STAND_INS
}


def test_the_rules_are_read_from_the_models() -> None:
    parallel = field_rules(StepModel.model_fields["max_parallel"])
    bounds = {getattr(rule, name, None) for rule in parallel for name in ("ge", "le")}
    name = field_rules(StepModel.model_fields["name"])

    assert {1, MAX_PARALLEL_LIMIT} <= bounds
    assert any(getattr(rule, "pattern", None) for rule in name)
    assert set(SITES_OF) == set(STAND_INS) - {ProfileFields}


SITES_OF = {model for model, _ in SITES}


@settings(max_examples=1000, deadline=None)
@given(st.data())
def test_values_on_both_sides_of_each_rule_are_plain_only_where_pydantic_agrees(
    data: st.DataObject,
) -> None:
    plan = copy.deepcopy(WIDE)
    # Each place found before any is changed: a change may replace another's container.
    places = [data.draw(st.sampled_from(SITES)) for _ in range(data.draw(st.integers(1, 3)))]
    for model, fields in [(model, site(plan)) for model, site in places]:
        key = data.draw(st.sampled_from(sorted(DRAWN[model])))
        if data.draw(st.integers(0, 4), label="removed if 0"):
            fields[key] = data.draw(DRAWN[model][key], label=f"{model.__name__}.{key}")
        else:
            fields.pop(key, None)

    found = plain_plan(copy.deepcopy(plan))
    event("taken plainly" if found is not None else "left to pydantic")
    if found is not None:
        expected = typed(plan)
        assert expected is not None, plan
        same(found, expected)


#: Text for each rule on text: every ASCII character and each of ``SPECIAL``, first and last.
PROBES = sorted(
    {
        "",
        *(f"{char}x" for char in map(chr, range(128))),
        *(f"x{char}" for char in map(chr, range(128))),
        *(f"{char}x" for char in SPECIAL),
        *(f"x{char}" for char in SPECIAL),
        "a.b:c",
        "pkg.mod:fn",
        "{item}",
        "x" * 300,
    }
)


def edge_values(field: FieldInfo) -> list[Any]:
    """Values on both sides of each of ``field``'s rules (every probe for a rule on text)."""
    values: list[Any] = []
    for rule in field_rules(field):
        for name in ("ge", "gt", "le", "lt"):
            bound = getattr(rule, name, None)
            if isinstance(rule, annotated_types.BaseMetadata) and isinstance(bound, int | float):
                near = [bound - 1, bound, bound + 1]
                values += [*near, *map(float, near), bound - 0.5, bound + 0.5]
        if isinstance(rule, annotated_types.MinLen) or isinstance(
            getattr(rule, "pattern", None), str
        ):
            values += [*PROBES, *([probe] for probe in PROBES)]
            if isinstance(rule, annotated_types.MinLen):
                size = rule.min_length
                values += ["x" * max(size - 1, 0), "x" * size, ["x"] * max(size - 1, 0)]
    return values


RULED = [
    (model, key, values)
    for model in STAND_INS
    for name, field in model.model_fields.items()
    if (key := field.alias or name) and (values := edge_values(field))
]


@pytest.mark.parametrize(
    ("model", "key", "values"), RULED, ids=[f"{m.__name__}.{key}" for m, key, _ in RULED]
)
def test_each_rule_of_the_models_is_the_plain_paths_at_its_edges(
    model: type[BaseModel], key: str, values: list[Any]
) -> None:
    """A bound, length or pattern tightened in ``models`` without ``plain_plans`` fails here."""
    # Where the model stands in WIDE with the key written, if anywhere: where it is valid.
    sites = [site for kind, site in SITES if kind is model]
    site = next((site for site in sites if key in site(WIDE)), sites[0])
    current = site(WIDE).get(key)
    if isinstance(current, list):  # a list's length: its own items, fewer and as many
        values = [*values, *(current[:size] for size in range(len(current) + 1))]
    taken = 0
    for value in values:
        plan = copy.deepcopy(WIDE)
        site(plan)[key] = value
        found = plain_plan(copy.deepcopy(plan))
        if found is not None:
            taken += 1
            expected = typed(plan)
            assert expected is not None, (key, value)
            same(found, expected)
    # Every rule is reached from both sides; the fields the plain path never takes aside.
    assert taken or key in {"$schema", "halt", "max_per_second", "pools", "uses"}
