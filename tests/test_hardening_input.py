"""Bad input files: one ``file:line:col:`` line and exit 2, never a traceback; honest plans of
any size load (issue #8, points 9, 10 and 11)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from subplans.cli.app import ExitCode, main
from subplans.plans.for_each import ItemsProblem, read_items
from subplans.plans.loader import GlobalConfig, load_plan
from subplans.plans.profiles import ProfileRegistry
from subplans.plans.yamlfile import ProblemsError, read_yaml


@pytest.fixture
def config(tmp_path: Path) -> GlobalConfig:
    return GlobalConfig(tmp_path / "no-config.yaml", False, ProfileRegistry(), None)


@pytest.fixture(autouse=True)
def in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Relative paths in messages; no user config file; no store outside ``tmp_path``."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SUBPLANS_CONFIG", str(tmp_path / "none" / "config.yaml"))
    monkeypatch.delenv("SUBPLANS_STORE", raising=False)


def problems(path: Path, config: GlobalConfig) -> list[str]:
    with pytest.raises(ProblemsError) as caught:
        load_plan(path, config=config)
    return [str(p) for p in caught.value.problems]


def invalid(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """Run the command; it must exit 2 with exactly one line on stderr. Returns that line."""
    assert main(list(args)) == ExitCode.INVALID
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1, captured.err
    return captured.err.removeprefix("error: ").rstrip("\n")


# --- 9: control characters and deep nesting -----------------------------------------------

CONTROL = ["\x00", "\x01", "\x07", "\x1b", "\x7f", "\ufffe"]


@pytest.mark.parametrize("char", CONTROL, ids=lambda c: f"U+{ord(c):04X}")
def test_a_control_character_in_a_plan_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], char: str
) -> None:
    """Pins: the YAML reader was built outside the ``try``: a traceback and exit 1."""
    (tmp_path / "p.yaml").write_text(f"name: p\nsteps:\n  - {{name: a{char}, run: 'true'}}\n")
    kind = "a non-character" if char == "\ufffe" else "a control character"
    expected = (
        f"p.yaml:3:13: the character U+{ord(char):04X} ({kind}) is not allowed in YAML; "
        "remove it, or write it escaped inside a double-quoted string"
    )
    assert invalid(capsys, "validate", "p.yaml") == expected
    assert invalid(capsys, "run", "p.yaml") == expected


def test_a_control_character_in_an_action_file(tmp_path: Path, config: GlobalConfig) -> None:
    (tmp_path / "act.yaml").write_text("name: act\nsteps: [{name: s, run: 'true'}]\n# \x07\n")
    (tmp_path / "p.yaml").write_text("name: p\naction: act.yaml\n")
    assert problems(tmp_path / "p.yaml", config) == [
        f"{tmp_path}/act.yaml:3:3: the character U+0007 (a control character) is not allowed "
        "in YAML; remove it, or write it escaped inside a double-quoted string"
    ]


def test_a_control_character_in_the_config_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("profiles:\n  fast: {max_parallel: 8}\x1b\n")
    monkeypatch.setenv("SUBPLANS_CONFIG", str(config))
    assert invalid(capsys, "profile", "list") == (
        f"{config}:2:26: the character U+001B (a control character) is not allowed in YAML; "
        "remove it, or write it escaped inside a double-quoted string"
    )


def test_a_file_that_is_not_utf8_names_the_line_and_column(
    tmp_path: Path, config: GlobalConfig
) -> None:
    (tmp_path / "p.yaml").write_bytes("name: p\nsteps: [{name: é\xff".encode("latin-1"))
    assert problems(tmp_path / "p.yaml", config) == [
        f"{tmp_path}/p.yaml:2:16: not UTF-8: cannot decode byte 0xe9"
    ]


@pytest.mark.parametrize("depth", [300, 5000])
def test_deep_nesting_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], depth: int
) -> None:
    """Pins: 300 nested '[' raised RecursionError."""
    (tmp_path / "p.yaml").write_text("name: p\nsteps: " + "[" * depth + "]" * depth + "\n")
    assert invalid(capsys, "validate", "p.yaml") == "p.yaml:2:107: nested more than 100 levels deep"


def test_nesting_up_to_the_limit_is_read(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("x: " + "[" * 99 + "]" * 99 + "\n")  # 100 levels with the mapping
    data = read_yaml(path).data["x"]
    for _ in range(98):
        (data,) = data
    assert data == []


def test_aliases_cannot_nest_deeper_than_the_limit(tmp_path: Path) -> None:
    text = "a0: &a0 [x]\n" + "".join(f"a{n}: &a{n} [*a{n - 1}]\n" for n in range(1, 120))
    (tmp_path / "p.yaml").write_text(text)
    with pytest.raises(
        ProblemsError, match=r"nested more than 100 levels deep once aliases expand"
    ):
        read_yaml(tmp_path / "p.yaml")


# --- 10: what run would refuse, validate refuses ------------------------------------------


@pytest.mark.parametrize(
    ("step", "where", "message"),
    [
        (
            '{name: a, run: "true", env: {"A=B": x}}',
            "3:34: steps[0].env.A=B",
            "an environment variable name must be non-empty and without '=', got 'A=B'",
        ),
        (
            '{name: a, run: "true", env: {"": x}}',
            "3:34: steps[0].env['']",
            "an environment variable name must be non-empty and without '=', got ''",
        ),
        (
            '{name: a, run: "true", env: {"A\\0": x}}',
            "3:34: steps[0].env['A\\x00']",
            "'A\\x00' has a NUL byte, which no command, environment variable or path can hold",
        ),
        (
            '{name: a, run: ["echo", "a\\0b"]}',
            "3:29: steps[0].run[1]",
            "'a\\x00b' has a NUL byte, which no command, environment variable or path can hold",
        ),
        (
            '{name: a, run: "true", env: {A: "a\\0b"}}',
            "3:37: steps[0].env.A",
            "'a\\x00b' has a NUL byte, which no command, environment variable or path can hold",
        ),
        (
            '{name: a, run: "echo a\\0b"}',
            "3:20: steps[0].run",
            "'echo a\\x00b' has a NUL byte, which no command, environment variable or path can "
            "hold",
        ),
        (
            '{name: a, run: "true", cwd: "a\\0b"}',
            "3:33: steps[0].cwd",
            "'a\\x00b' has a NUL byte, which no command, environment variable or path can hold",
        ),
        (
            '{name: a, plan: "a\\0b.yaml"}',
            "3:21: steps[0].plan",
            "'a\\x00b.yaml' has a NUL byte, which no command, environment variable or path can "
            "hold",
        ),
        (
            '{name: "a\\0", run: "true"}',
            "3:12: steps[0].name",
            "'a\\x00' has a NUL byte, which no command, environment variable or path can hold",
        ),
        (
            '{name: a, for_each: [x, "y\\0"], subplan: {run: "echo {item}"}}',
            "3:29: steps[0].for_each[1]",
            "'y\\x00' has a NUL byte, which no command, environment variable or path can hold",
        ),
        (
            '{name: a, for_each: {glob: "*\\0"}, subplan: {run: "true"}}',
            "3:32: steps[0].for_each.glob",
            "'*\\x00' has a NUL byte, which no command, environment variable or path can hold",
        ),
        (
            '{name: a, for_each: {lines: "l\\0"}, subplan: {run: "true"}}',
            "3:33: steps[0].for_each.lines",
            "'l\\x00' has a NUL byte, which no command, environment variable or path can hold",
        ),
        (
            '{name: a, for_each: [x], subplan: {name: "n\\0{index}", run: "true"}}',
            "3:46: steps[0].subplan.name",
            "'n\\x00{index}' has a NUL byte, which no command, environment variable or path can "
            "hold",
        ),
    ],
)
def test_validate_refuses_what_run_could_not_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], step: str, where: str, message: str
) -> None:
    """Pins: validate said ok, then run died with ValueError (embedded null byte, bad env name)."""
    (tmp_path / "p.yaml").write_text(f"name: p\nsteps:\n  - {step}\n")
    assert invalid(capsys, "validate", "p.yaml") == f"p.yaml:{where}: {message}"
    assert invalid(capsys, "run", "p.yaml") == f"p.yaml:{where}: {message}"


def test_an_action_path_with_a_nul_byte(tmp_path: Path, config: GlobalConfig) -> None:
    (tmp_path / "p.yaml").write_text('name: p\naction: "a\\0.yaml"\n')
    assert problems(tmp_path / "p.yaml", config) == [
        f"{tmp_path}/p.yaml:2:9: action: 'a\\x00.yaml' has a NUL byte, which no command, "
        "environment variable or path can hold"
    ]


def test_a_lines_file_item_with_a_nul_byte(tmp_path: Path, config: GlobalConfig) -> None:
    (tmp_path / "items.txt").write_text("one\n  tw\x00o  \n")
    (tmp_path / "p.yaml").write_text(
        "name: p\nsteps:\n  - {name: a, for_each: {lines: items.txt}, subplan: {run: 'true'}}\n"
    )
    # The file is read when the step starts (issue #11): then the line is placed.
    (step,) = load_plan(tmp_path / "p.yaml", config=config).steps
    assert step.items is not None
    found = read_items(step.items.source, step.items.folder)
    assert isinstance(found, ItemsProblem)
    assert (found.file, found.line, found.column, found.message) == (
        tmp_path / "items.txt",
        2,
        5,
        "a for_each item has a NUL byte, which no command, environment variable or path can "
        "hold ('tw\\x00o')",
    )


# --- 11: the alias limit counts aliases, not an honest plan's size ------------------------


def test_a_long_plan_without_aliases_loads(tmp_path: Path, config: GlobalConfig) -> None:
    """Pins: 99,996 plain items were refused as "more than 100,000 values once aliases expand"."""
    count = 100_001
    items = ", ".join(f"i{n}" for n in range(count))
    (tmp_path / "p.yaml").write_text(
        f"name: p\nsteps:\n  - name: s\n    for_each: [{items}]\n    subplan: {{run: 'true'}}\n"
    )
    plan = load_plan(tmp_path / "p.yaml", config=config)
    assert len(plan.steps[0].units) == count


def test_many_one_line_steps_read(tmp_path: Path) -> None:
    """Pins: 35,000 one-line steps were refused the same way (three values a step)."""
    steps = "".join(f"  - {{name: s{n}, run: 'true'}}\n" for n in range(1000))
    (tmp_path / "p.yaml").write_text(f"name: p\nsteps:\n{steps}")
    located = read_yaml(tmp_path / "p.yaml", max_alias_values=1000)
    assert len(located.data["steps"]) == 1000


def test_aliases_still_cannot_explode(tmp_path: Path) -> None:
    laughs = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{n}: &{n} [" + ", ".join([f"*{p}"] * 10) + "]\n"
        for p, n in zip("abcde", "bcdef", strict=True)
    )
    (tmp_path / "l.yaml").write_text(laughs)
    with pytest.raises(ProblemsError) as caught:
        read_yaml(tmp_path / "l.yaml")
    (problem,) = caught.value.problems
    assert re.fullmatch(
        r".*l\.yaml:\d+:\d+: .*: more than 100,000 values once aliases expand", str(problem)
    )


def test_aliases_within_the_limit_are_read(tmp_path: Path) -> None:
    shared = "env: &env {A: '1', B: '2'}\n"
    uses = "".join(f"s{n}: *env\n" for n in range(1000))
    (tmp_path / "p.yaml").write_text(shared + uses)
    assert read_yaml(tmp_path / "p.yaml").data["s999"] == {"A": "1", "B": "2"}


def test_a_folder_given_as_a_plan_is_one_line(tmp_path: Path, config: GlobalConfig) -> None:
    (tmp_path / "p.yaml").mkdir()
    assert problems(tmp_path / "p.yaml", config) == [
        f"{tmp_path}/p.yaml: cannot read: Is a directory"
    ]


def test_a_lone_surrogate_escape_is_one_line_wherever_it_is(
    tmp_path: Path, config: GlobalConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    """YAML's "\\ud800" is a lone surrogate, which fails as a traceback wherever text is
    encoded (a log, the store): refused where it is written, in keys, values and profiles;
    the same letters outside double quotes are text, and a shared alias is told once."""
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        'name: p\nsteps:\n  - name: a\n    run: "echo \\ud800"\n'
        '    env: {"K\\uDC00": x, L: &e [\'\\ud800\', "\\U0000d801"]}\n'
        "  - name: b\n    run: echo \\ud800 plain\n    env: {M: *e}\n"
    )
    where = "write a character beyond U+FFFF as one \\U escape (\\U0001F600)"
    assert problems(plan, config) == [
        f"{plan}:4:10: steps[0].run: holds a lone surrogate (U+D800), which is not text; {where}",
        f"{plan}:5:11: steps[0].env['K\\udc00']: holds a lone surrogate (U+DC00), which is not "
        f"text; {where}",
        f"{plan}:5:42: steps[0].env.L[1]: holds a lone surrogate (U+D801), which is not text; "
        f"{where}",
    ]
    plan.write_text('name: p\nsteps:\n  - name: a\n    run: "echo \\ud800"\n')
    line = invalid(capsys, "run", "plan.yaml", "-q")
    assert line.startswith("plan.yaml:4:10: steps[0].run: holds a lone surrogate (U+D800)")
    assert not (tmp_path / ".subplans").exists()
    config_file = tmp_path / "none" / "config.yaml"
    config_file.parent.mkdir()
    config_file.write_text('profiles:\n  "x\\ud800": {max_parallel: 2}\n')
    plan.write_text("name: p\nsteps:\n  - name: a\n    run: 'true'\n")
    line = invalid(capsys, "run", "plan.yaml", "-q")
    assert "config.yaml:2:3: profiles['x\\ud800']: holds a lone surrogate (U+D800)" in line
