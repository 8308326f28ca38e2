"""Plan files: validation with locations, actions, nesting, for_each, ids."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest

from subplans.plans.loader import MAX_DEPTH, GlobalConfig, load_plan
from subplans.plans.profiles import ProfileRegistry
from subplans.plans.yamlfile import Located, Problem, ProblemsError

from .plans_helpers import units_now, write


@pytest.fixture
def config(tmp_path: Path) -> GlobalConfig:
    return GlobalConfig(tmp_path / "no-config.yaml", False, ProfileRegistry(), None)


def problems(path: Path, config: GlobalConfig) -> list[str]:
    with pytest.raises(ProblemsError) as caught:
        load_plan(path, config=config)
    prefix = f"{path.parent}/"
    return [str(p).replace(prefix, "") for p in caught.value.problems]


def test_a_full_plan_loads(tmp_path: Path, config: GlobalConfig) -> None:
    write(tmp_path, "src/b.py", "")
    write(tmp_path, "src/a.py", "")
    write(tmp_path, "src/pkg/c.py", "")
    write(tmp_path, "list.txt", "one\n\n# comment\n two \n")
    write(tmp_path, "tools.py", "def f(x):\n    return x\n")
    write(tmp_path, "inner.yaml", "name: inner\nsteps:\n  - {name: s, run: 'true'}\n")
    path = write(
        tmp_path,
        "plan.yaml",
        """
        name: full
        description: everything
        steps:
          - name: single
            run: ["echo", "hi"]
            env: {A: "1"}
            cwd: src
            timeout: 5
            retries: 2
          - name: globbed
            for_each: {glob: "src/**/*.py"}
            subplan:
              name: "{stem}-{index}"
              run: "cat {item}"
              env: {ITEM: "{item}"}
          - name: lined
            for_each: {lines: list.txt}
            subplan:
              call: "tools:f"
              with: {x: "{item}", nested: ["{index}"]}
          - name: listed
            for_each: ["x", "y"]
            subplan: {run: ["echo", "<{item}>"]}
          - name: nested
            subplans:
              - {name: file, plan: inner.yaml}
              - name: inline
                plan:
                  steps: [{name: deep, subplans: [{name: leaf, run: "true"}]}]
          - name: finally
            always: true
            call: "tools:f"
            with: {x: 1}
        """,
    )
    plan = load_plan(path, config=config)
    assert plan.name == "full"
    assert plan.description == "everything"
    assert plan.id == ""
    single, globbed, lined, listed, nested, final = plan.steps
    # Read when their steps start (issue #11): no units until then.
    assert (globbed.units, lined.units) == ((), ())
    assert str(globbed.items) == "glob 'src/**/*.py'"
    assert str(lined.items) == "lines of 'list.txt'"
    globbed, lined = (replace(s, units=units_now(s)) for s in (globbed, lined))
    assert single.single
    (unit,) = single.units
    assert (unit.id, unit.kind, unit.command, unit.cwd, unit.timeout, unit.retries) == (
        "single",
        "run",
        ("echo", "hi"),
        tmp_path / "src",
        5.0,
        2,
    )
    assert unit.env == {"A": "1"}
    assert [u.id for u in globbed.units] == ["globbed/a-0", "globbed/b-1", "globbed/c-2"]
    assert globbed.units[2].command == "cat 'src/pkg/c.py'"
    assert globbed.units[2].env == {"ITEM": "src/pkg/c.py"}
    assert globbed.units[2].item == "src/pkg/c.py"
    assert [u.kwargs for u in lined.units] == [
        {"x": "one", "nested": ["0"]},
        {"x": "two", "nested": ["1"]},
    ]
    assert [u.id for u in lined.units] == ["lined/one", "lined/two"]
    assert [u.command for u in listed.units] == [("echo", "<x>"), ("echo", "<y>")]
    file_unit, inline_unit = nested.units
    assert file_unit.kind == "plan"
    assert file_unit.plan is not None
    assert file_unit.plan.name == "inner"
    assert file_unit.plan.steps[0].units[0].id == "nested/file/s"
    assert inline_unit.plan is not None
    assert inline_unit.plan.name == "inline"
    assert inline_unit.plan.steps[0].units[0].id == "nested/inline/deep/leaf"
    assert final.always
    assert [u.id for u in plan.walk_units()][-3:] == [
        "nested/inline",
        "nested/inline/deep/leaf",
        "finally",
    ]


def test_shell_strings_quote_items(tmp_path: Path, config: GlobalConfig) -> None:
    path = write(
        tmp_path,
        "p.yaml",
        """
        name: p
        steps:
          - name: s
            for_each: ["x; touch pwned", "$(touch pwned2)"]
            subplan: {name: "n{index}", run: "echo {item} > out-{index}.txt"}
        """,
    )
    plan = load_plan(path, config=config)
    assert [u.command for u in plan.steps[0].units] == [
        "echo 'x; touch pwned' > out-'0'.txt",
        "echo '$(touch pwned2)' > out-'1'.txt",
    ]


def test_unknown_keys_get_a_suggestion(tmp_path: Path, config: GlobalConfig) -> None:
    path = write(
        tmp_path,
        "p.yaml",
        """
        name: p
        steps:
          - name: a
            max_paralel: 3
            run: "true"
          - name: b
            subplans:
              - {name: c, run: "true", timout: 3, zzz: 1}
        """,
    )
    assert problems(path, config) == [
        "p.yaml:4:5: steps[0].max_paralel: unknown key 'max_paralel'; did you mean 'max_parallel'?",
        "p.yaml:8:32: steps[1].subplans[0].timout: unknown key 'timout'; did you mean 'timeout'?",
        "p.yaml:8:43: steps[1].subplans[0].zzz: unknown key 'zzz'",
    ]


def test_keys_in_the_wrong_place_say_where_they_belong(
    tmp_path: Path, config: GlobalConfig
) -> None:
    # Regression: "unknown key 'cancel_grace'; did you mean 'cancel_grace'?" for a profile
    # field written beside the steps.
    path = write(
        tmp_path,
        "p.yaml",
        """
        name: p
        cancel_grace: 1
        steps:
          - {name: a, run: "true", glob: "*.py"}
        """,
    )
    assert problems(path, config) == [
        "p.yaml:2:1: cancel_grace: 'cancel_grace' is a profile field: write it under "
        "automation_profile, e.g. automation_profile: {cancel_grace: ...}",
        "p.yaml:4:28: steps[0].glob: key 'glob' is not allowed here",
    ]


def test_one_message_per_problem_with_locations(tmp_path: Path, config: GlobalConfig) -> None:
    path = write(
        tmp_path,
        "p.yaml",
        """
        name: p
        automation_profile: {max_parallel: 0}
        steps:
          - name: a
            run: "true"
            call: "x:y"
          - name: b
            subplans:
              - {name: c, run: 3}
              - {name: d, run: "true", retries: -1, timeout: 0}
          - name: e
            for_each: {glob: "*.py"}
          - name: f/g
            failure_mode: fast
            run: []
          - name: h
        """,
    )
    assert problems(path, config) == [
        "p.yaml:2:36: automation_profile.max_parallel: max_parallel must be between 1 and 32, got 0",
        "p.yaml:4:5: steps[0]: a step must have exactly one of run, call, plan, subplans or for_each, got ['run', 'call']",
        "p.yaml:9:24: steps[1].subplans[0].run: must be a command string or a non-empty list of argument strings, got 3 (int)",
        "p.yaml:10:41: steps[1].subplans[1].retries: retries must be an integer >= 0, got -1 (int)",
        "p.yaml:10:54: steps[1].subplans[1].timeout: timeout must be > 0, got 0",
        "p.yaml:11:5: steps[2]: `for_each` and `subplan` go together",
        "p.yaml:13:11: steps[3].name: must be a non-empty name without '/', got 'f/g' (str)",
        "p.yaml:14:19: steps[3].failure_mode: failure_mode must be 'fail_fast' or 'continue_on_error', got 'fast' (str)",
        "p.yaml:15:10: steps[3].run: must not be empty",
        "p.yaml:16:5: steps[4]: a step must have exactly one of run, call, plan, subplans or for_each",
    ]


def test_yaml_syntax_errors_give_line_and_column(tmp_path: Path, config: GlobalConfig) -> None:
    path = write(tmp_path, "p.yaml", "name: p\nsteps:\n  - name: a\n    run: [unclosed\n")
    (line,) = problems(path, config)
    assert re.fullmatch(r"p\.yaml:5:1: YAML syntax error: .+", line)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "p.yaml: the file is empty; a plan needs name and steps"),
        ("- a\n", "p.yaml:1:1: a plan file must be a mapping, got list"),
        ("name: p\n", "p.yaml:1:1: steps: required: a plan needs steps (or an action with steps)"),
        ("steps: [{name: a, run: x}]\n", "p.yaml:1:1: name: required"),
        ("name: p\nname: q\nsteps: [{name: a, run: x}]\n", "p.yaml:2:1: name: duplicate key"),
        (
            "name: p\nsteps: [{name: a, run: x}, {name: a, run: y}]\n",
            "p.yaml:2:35: steps[1].name: duplicate step name 'a'",
        ),
        (
            "name: p\nsteps: [{name: a, subplans: [{name: x, run: y}, {name: x, run: z}]}]\n",
            "p.yaml:2:56: steps[0].subplans[1].name: duplicate subplan name 'x'",
        ),
        (
            "name: p\nsteps: [{name: a, for_each: [x, x], subplan: {run: y}}]\n",
            "p.yaml:2:46: steps[0].subplan.name: for_each item 'x' gives the duplicate name 'x'",
        ),
        (
            "name: p\nsteps: [{name: a, for_each: {glob: '/etc/*'}, subplan: {run: y}}]\n",
            "p.yaml:2:36: steps[0].for_each.glob: must be relative to the plan's folder",
        ),
        (
            "name: p\nsteps: [{name: a, call: 'no_such_module_x:f'}]\n",
            "p.yaml:2:25: steps[0].call: cannot find module 'no_such_module_x' (looked in {folder} and sys.path)",
        ),
        (
            "name: p\nsteps: [{name: a, run: x, with: {a: 1}}]\n",
            "p.yaml:2:9: steps[0]: `with` is only for `call`",
        ),
        (
            "name: p\nsteps: [{name: a, plan: missing.yaml}]\n",
            "missing.yaml: no such file",
        ),
        (
            "name: p\nsteps: [{name: a, automation_profile: 3, run: x}]\n",
            "p.yaml:2:39: steps[0].automation_profile: must be a profile name or a mapping of profile fields, got 3 (int)",
        ),
        (
            "name: p\nsteps: [{name: a, for_each: 3, subplan: {run: x}}]\n",
            "p.yaml:2:29: steps[0].for_each: must be a list of strings, {glob: PATTERN}, {lines: FILE} or {command: COMMAND}, got 3 (int)",
        ),
    ],
)
def test_invalid_plans(tmp_path: Path, config: GlobalConfig, text: str, expected: str) -> None:
    path = write(tmp_path, "p.yaml", text)
    assert problems(path, config) == [expected.replace("{folder}", str(tmp_path))]


def test_a_plan_that_includes_itself(tmp_path: Path, config: GlobalConfig) -> None:
    write(tmp_path, "a.yaml", "name: a\nsteps: [{name: s, subplans: [{name: b, plan: b.yaml}]}]\n")
    write(tmp_path, "b.yaml", "name: b\nsteps: [{name: t, plan: a.yaml}]\n")
    assert problems(tmp_path / "a.yaml", config) == [
        "b.yaml:2:25: steps[0].plan: the plan includes itself: a.yaml -> b.yaml -> a.yaml"
    ]
    write(tmp_path, "self.yaml", "name: s\nsteps: [{name: s, plan: self.yaml}]\n")
    assert problems(tmp_path / "self.yaml", config) == [
        "self.yaml:2:25: steps[0].plan: the plan includes itself: self.yaml -> self.yaml"
    ]


def test_nesting_depth_is_limited(tmp_path: Path, config: GlobalConfig) -> None:
    for depth in range(MAX_DEPTH + 2):
        write(
            tmp_path,
            f"p{depth}.yaml",
            f"name: p{depth}\nsteps: [{{name: s, plan: p{depth + 1}.yaml}}]\n",
        )
    write(tmp_path, f"p{MAX_DEPTH + 2}.yaml", "name: end\nsteps: [{name: s, run: 'true'}]\n")
    assert problems(tmp_path / "p0.yaml", config) == [
        f"p{MAX_DEPTH}.yaml:2:25: steps[0].plan: plans nest deeper than {MAX_DEPTH} levels"
    ]
    plan = load_plan(tmp_path / "p2.yaml", config=config)  # exactly 8 levels below p2
    assert plan.walk_units()[-1].id == "s/" * MAX_DEPTH + "s"


def test_actions(tmp_path: Path, config: GlobalConfig) -> None:
    write(
        tmp_path,
        "actions/port.yaml",
        "name: port\nautomation_profile: serial\nsteps: [{name: act, run: 'true'}]\n",
    )
    plan = load_plan(
        write(tmp_path, "p.yaml", "name: p\naction: actions/port.yaml\n"), config=config
    )
    assert [s.name for s in plan.steps] == ["act"]
    assert plan.profile.max_parallel == 1
    assert plan.profile.sources["max_parallel"].level == "action"
    own = load_plan(
        write(
            tmp_path,
            "q.yaml",
            "name: q\naction: actions/port.yaml\nsteps: [{name: own, run: 'true'}]\n",
        ),
        config=config,
    )
    assert [s.name for s in own.steps] == ["own"]
    assert own.steps[0].units[0].cwd == tmp_path


def test_action_problems(tmp_path: Path, config: GlobalConfig) -> None:
    write(tmp_path, "a1.yaml", "name: a1\naction: a2.yaml\nsteps: [{name: s, run: x}]\n")
    write(tmp_path, "a2.yaml", "name: a2\nsteps: [{name: s, run: x}]\n")
    assert problems(write(tmp_path, "p.yaml", "name: p\naction: a1.yaml\n"), config) == [
        "a1.yaml:2:1: action: an action cannot build on another action"
    ]
    assert problems(write(tmp_path, "loop.yaml", "name: l\naction: loop.yaml\n"), config) == [
        "loop.yaml:2:1: action: the plan includes itself: loop.yaml -> loop.yaml"
    ]
    assert problems(write(tmp_path, "q.yaml", "name: q\naction: none.yaml\n"), config) == [
        "none.yaml: no such file"
    ]


def test_duplicate_ids_across_the_tree(tmp_path: Path, config: GlobalConfig) -> None:
    path = write(
        tmp_path,
        "p.yaml",
        """
        name: p
        steps:
          - name: a
            for_each: ["b/c"]
            subplan: {run: x}
          - name: a/b
            run: x
        """,
    )
    found = problems(path, config)
    assert found == [
        "p.yaml:6:11: steps[1].name: must be a non-empty name without '/', got 'a/b' (str)"
    ]


def test_unreadable_file(tmp_path: Path, config: GlobalConfig) -> None:
    path = tmp_path / "bad.yaml"
    path.write_bytes(b"name: \xff\xfe\n")
    (line,) = problems(path, config)
    assert line == "bad.yaml:1:7: not UTF-8: cannot decode byte 0xff"


def test_problem_str() -> None:
    assert str(Problem(None, "x", "bad")) == "x: bad"
    assert str(Problem(Path("f.yaml"), "", "bad", 3, 4)) == "f.yaml:3:4: bad"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "name: p\nsteps: [{name: a, run: x, always: maybe}]\n",
            "p.yaml:2:35: steps[0].always: input should be a valid boolean, unable to interpret input, got 'maybe' (str)",
        ),
        (
            "name: p\nsteps: [{name: a, subplans: [{name: b, run: x, call: 'm:f'}]}]\n",
            "p.yaml:2:30: steps[0].subplans[0]: a subplan must have exactly one of run, call or plan, got ['run', 'call']",
        ),
        (
            "name: p\nsteps: [{name: a, subplans: [{name: b}]}]\n",
            "p.yaml:2:30: steps[0].subplans[0]: a subplan must have one of run, call or plan",
        ),
    ],
)
def test_more_invalid_plans(tmp_path: Path, config: GlobalConfig, text: str, expected: str) -> None:
    assert problems(write(tmp_path, "p.yaml", text), config) == [expected]


def test_placeholders_outside_for_each_are_reported(tmp_path: Path, config: GlobalConfig) -> None:
    """Pins: a placeholder outside for_each crashed validation with a KeyError."""
    path = write(tmp_path, "p.yaml", "name: p\nsteps:\n  - {name: a, run: 'echo {item} {index}'}\n")
    assert problems(path, config) == [
        "p.yaml:3:5: steps[0]: {index}, {item} is only replaced under for_each"
    ]


def test_generated_names_never_hold_a_slash(tmp_path: Path, config: GlobalConfig) -> None:
    write(tmp_path, "src/a.py", "")
    default = write(
        tmp_path,
        "p.yaml",
        "name: p\nsteps: [{name: s, for_each: {glob: 'src/*.py'}, subplan: {run: 'true'}}]\n",
    )
    assert [u.id for u in units_now(load_plan(default, config=config).steps[0])] == ["s/src_a.py"]
    explicit = write(
        tmp_path,
        "q.yaml",
        "name: q\nsteps: [{name: s, for_each: {glob: 'src/*.py'}, subplan: {name: '{item}', run: 'true'}}]\n",
    )
    # The items are read when the step starts: so is the name they give refused.
    step = load_plan(explicit, config=config).steps[0]
    with pytest.raises(ProblemsError) as raised:
        units_now(step)
    assert [str(p) for p in raised.value.problems] == [
        f"{explicit}:2:65: steps[0].subplan.name: for_each item 'src/a.py' gives the name "
        "'src/a.py'; a name must be non-empty, without '/' (try {stem} or {index})"
    ]


def test_call_modules_are_found_in_full_and_never_shadow_each_other(
    tmp_path: Path, config: GlobalConfig
) -> None:
    write(tmp_path, "tools/__init__.py", "")
    write(tmp_path, "tools/work.py", "def f(): pass\n")
    write(tmp_path, "sub/tools/__init__.py", "")
    write(tmp_path, "sub/tools/work.py", "def f(): pass\n")
    write(tmp_path, "sub/inner.yaml", "name: inner\nsteps: [{name: s, call: 'tools.work:f'}]\n")
    path = write(
        tmp_path,
        "p.yaml",
        """
        name: p
        steps:
          - {name: a, call: "tools.work:f"}
          - {name: b, call: "tools.nothere:f"}
          - {name: c, plan: sub/inner.yaml}
        """,
    )
    assert problems(path, config) == [
        "p.yaml:4:21: steps[1].call: cannot find module 'tools.nothere'",
        f"sub/inner.yaml:2:25: steps[0].call: module 'tools' is in both {tmp_path} and "
        "sub; plans of one run share their imports, so give one of them another name",
    ]


def test_calls_into_installed_modules_are_fine(tmp_path: Path, config: GlobalConfig) -> None:
    path = write(
        tmp_path, "p.yaml", "name: p\nsteps: [{name: a, call: 'json.decoder:JSONDecoder'}]\n"
    )
    assert load_plan(path, config=config).steps[0].units[0].call == "json.decoder:JSONDecoder"


def test_recursive_and_exploding_aliases_are_refused(tmp_path: Path, config: GlobalConfig) -> None:
    """Pins: a recursive alias raised RecursionError; a billion laughs never finished."""
    recursive = write(tmp_path, "r.yaml", "name: r\nsteps:\n  - name: a\n    run: &r [echo, *r]\n")
    assert problems(recursive, config) == [
        "r.yaml:4:10: steps[0].run[1]: an alias refers to itself"
    ]
    laughs = "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
    for n in range(1, 7):
        laughs += (
            f"{'abcdefg'[n]}: &{'abcdefg'[n]} [" + ", ".join([f"*{'abcdefg'[n - 1]}"] * 10) + "]\n"
        )
    (line,) = problems(write(tmp_path, "l.yaml", laughs), config)
    assert line.endswith("more than 100,000 values once aliases expand")


def test_cwd_on_a_nested_plan_is_reported(tmp_path: Path, config: GlobalConfig) -> None:
    write(tmp_path, "inner.yaml", "name: inner\nsteps: [{name: s, run: 'true'}]\n")
    path = write(tmp_path, "p.yaml", "name: p\nsteps: [{name: a, plan: inner.yaml, cwd: sub}]\n")
    assert problems(path, config) == [
        "p.yaml:2:42: steps[0].cwd: has no effect on a nested plan; set it on its subplans"
    ]


def test_a_problem_where_no_position_is_known_has_no_line(tmp_path: Path) -> None:
    located = Located(tmp_path / "p.yaml", None, {}, {})
    assert (
        str(located.problem(("steps", 0), "required")) == f"{tmp_path}/p.yaml: steps[0]: required"
    )
