"""``subplans run PLAN --dry-run`` (issue #11, point 4): every step's settings with where they
come from and what every subplan would run, as text or one JSON document; nothing runs and
nothing is written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from subplans.cli.app import main
from subplans.cli.exits import ExitCode

from .conftest import command_env
from .plans_helpers import write

pytestmark = pytest.mark.usefixtures("isolated")

INNER = """
    name: inner
    automation_profile: {max_parallel: 3}
    steps:
      - {name: s, for_each: [p, q], subplan: {run: ['echo', '{item} here']}}
    """

PLAN = """
    name: demo
    steps:
      - name: prepare
        run: echo preparing
      - name: port
        max_parallel: 2
        for_each: {glob: 'src/*.py'}
        subplan: {run: "echo porting {item} > out/{stem}.txt", cwd: src}
      - name: lined
        for_each: {lines: items.txt}
        subplan: {call: 'json:dumps', with: {obj: '{item}', indent: 2}}
      - {name: asked, for_each: {command: 'touch ran; ls'}, subplan: {run: 'true'}}
      - {name: piped, for_each: {lines: '-'}, subplan: {run: 'true'}}
      - {name: later, for_each: {lines: out/list.txt}, subplan: {run: 'true'}}
      - {name: nested, plan: inner.yaml}
      - {name: cleanup, always: true, run: ['rm', '-rf', 'tmp dir']}
    """


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A plan with a step of every kind, its nested plan and the files its sources read."""
    folder = tmp_path / "project"
    write(folder, "src/a.py", "")
    write(folder, "src/b c.py", "")
    write(folder, "items.txt", "x\n# a comment\ny z\n")
    write(folder, "inner.yaml", INNER)
    write(folder, "plan.yaml", PLAN)
    return folder


def dry_run(
    capsys: pytest.CaptureFixture[str], *args: str, code: ExitCode = ExitCode.OK
) -> list[str]:
    assert main(["run", *args]) == code
    return capsys.readouterr().out.splitlines()


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every file's bytes and every folder (None) under ``folder``, by relative path."""
    return {
        str(path.relative_to(folder)): None if path.is_dir() else path.read_bytes()
        for path in sorted(folder.rglob("*"))
    }


# --- text ----------------------------------------------------------------------------------


def test_a_dry_run_prints_each_step_s_settings_and_what_each_subplan_would_run(
    project: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(project)
    default = "default (profile = 'default' (built-in))"
    flag = "plan (--max-parallel)"

    lines = dry_run(capsys, "plan.yaml", "--dry-run", "-j", "5")

    assert lines == [
        "dry run: plan 'demo' (plan.yaml); nothing runs, nothing is written",
        f"  max_parallel  5          {flag}",
        f"  failure_mode  fail_fast  {default}",
        "step prepare",
        f"  max_parallel  5          {flag}",
        f"  failure_mode  fail_fast  {default}",
        "  prepare  shell: echo preparing",
        "step port",
        "  max_parallel  2          step (plan.yaml: steps[1].max_parallel)",
        f"  failure_mode  fail_fast  {default}",
        "  for_each      glob 'src/*.py': 2 items now (read again when the step starts)",
        "  port/src_a.py    shell: echo porting 'src/a.py' > out/'a'.txt  (in src)",
        "  port/src_b c.py  shell: echo porting 'src/b c.py' > out/'b c'.txt  (in src)",
        "step lined",
        f"  max_parallel  5          {flag}",
        f"  failure_mode  fail_fast  {default}",
        "  for_each      lines of 'items.txt': 2 items now (read again when the step starts)",
        "  lined/x    call: json:dumps(obj='x', indent=2)",
        "  lined/y z  call: json:dumps(obj='y z', indent=2)",
        "step asked",
        f"  max_parallel  5          {flag}",
        f"  failure_mode  fail_fast  {default}",
        "  for_each      would run 'touch ran; ls' when the step starts; its subplans are "
        "known then",
        "step piped",
        f"  max_parallel  5          {flag}",
        f"  failure_mode  fail_fast  {default}",
        "  for_each      lines of standard input: read from standard input when the step starts",
        "step later",
        f"  max_parallel  5          {flag}",
        f"  failure_mode  fail_fast  {default}",
        "  for_each      lines of 'out/list.txt': out/list.txt does not exist yet (an earlier "
        "step may make it)",
        "step nested",
        f"  max_parallel  5          {flag}",
        f"  failure_mode  fail_fast  {default}",
        "  nested  plan: 'inner' (inner.yaml)",
        "      max_parallel  3          plan (inner.yaml: automation_profile.max_parallel)",
        f"      failure_mode  fail_fast  {default}",
        "    step nested/s",
        "      max_parallel  3          plan (inner.yaml: automation_profile.max_parallel)",
        f"      failure_mode  fail_fast  {default}",
        "      nested/s/p  argv: echo 'p here'",
        "      nested/s/q  argv: echo 'q here'",
        "step cleanup (always runs)",
        f"  max_parallel  5          {flag}",
        f"  failure_mode  fail_fast  {default}",
        "  cleanup  argv: rm -rf 'tmp dir'",
    ]
    assert not (project / "ran").exists()


def test_a_run_time_source_expands_nested_plans_and_says_what_is_wrong_with_its_items(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One nested plan per file found now, each expanded; items that would fail the step
    (a name taken twice) are said, not refused: the plan itself is valid."""
    write(
        tmp_path, "mods/one.yaml", "name: one\nsteps: [{name: s, run: 'echo \"$SUBPLANS_ITEM\"'}]\n"
    )
    write(
        tmp_path, "mods/two.yaml", "name: two\nsteps: [{name: s, run: 'echo \"$SUBPLANS_ITEM\"'}]\n"
    )
    write(tmp_path, "names.txt", "a\nb/a\n")
    write(
        tmp_path,
        "plan.yaml",
        """
        name: p
        automation_profile: {failure_mode: continue_on_error}
        steps:
          - {name: each, for_each: {glob: 'mods/*.yaml'}, subplan: {plan: '{item}', name: '{stem}'}}
          - {name: clash, for_each: {lines: names.txt}, subplan: {run: 'true', name: '{stem}'}}
          - {name: none, for_each: {glob: 'no/*'}, subplan: {run: 'true'}}
        """,
    )

    lines = dry_run(capsys, "plan.yaml", "--dry-run")

    assert (
        "  failure_mode  continue_on_error  plan (plan.yaml: automation_profile.failure_mode)"
        in lines
    )
    each = lines.index("step each")
    default = "default (profile = 'default' (built-in))"
    # A nested plan has its own settings: the plan around it hands down no profile.
    assert lines[each + 3 : each + 15] == [
        "  for_each      glob 'mods/*.yaml': 2 items now (read again when the step starts)",
        "  each/one  plan: 'one' (mods/one.yaml)",
        f"      max_parallel  4          {default}",
        f"      failure_mode  fail_fast  {default}",
        "    step each/one/s",
        f"      max_parallel  4          {default}",
        f"      failure_mode  fail_fast  {default}",
        '      each/one/s  shell: echo "$SUBPLANS_ITEM"',
        "  each/two  plan: 'two' (mods/two.yaml)",
        f"      max_parallel  4          {default}",
        f"      failure_mode  fail_fast  {default}",
        "    step each/two/s",
    ]
    clash = lines.index("step clash")
    assert lines[clash + 3] == (
        "  for_each      lines of 'names.txt': 2 items now, but plan.yaml:5:78: "
        "steps[1].subplan.name: for_each item 'b/a' gives the duplicate name 'a'"
    )
    assert lines[clash + 4] == "step none"
    assert lines[-1] == (
        "  for_each      glob 'no/*': no files match yet (an earlier step may make them)"
    )


# --- JSON ----------------------------------------------------------------------------------


def test_dry_run_json_is_one_document_with_the_same(
    project: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(project)

    assert main(["run", "plan.yaml", "--dry-run", "--json", "--profile", "keep-going"]) == 0

    document: dict[str, Any] = json.loads(capsys.readouterr().out)
    plan = document["plan"]
    assert document["dry_run"] is True
    assert (plan["name"], plan["file"], plan["id"]) == ("demo", "plan.yaml", "")
    assert plan["failure_mode"] == {
        "value": "continue_on_error",
        "source": {
            "level": "plan",
            "file": None,
            "key": "--profile = 'keep-going' (built-in)",
            "text": "plan (--profile = 'keep-going' (built-in))",
        },
    }
    steps = {step["id"]: step for step in plan["steps"]}
    assert list(steps) == [
        "prepare",
        "port",
        "lined",
        "asked",
        "piped",
        "later",
        "nested",
        "cleanup",
    ]
    assert steps["port"]["max_parallel"]["value"] == 2
    assert steps["port"]["max_parallel"]["source"]["key"] == "steps[1].max_parallel"
    assert steps["prepare"]["items"] is None
    assert steps["prepare"]["subplans"] == [
        {
            "id": "prepare",
            "kind": "run",
            "shell": "echo preparing",
            "cwd": None,
            "env": {},
            "item": None,
            "timeout": None,
            "retries": 0,
        }
    ]
    port = steps["port"]
    assert port["items"] == {
        "kind": "glob",
        "source": "glob 'src/*.py'",
        "runtime": True,
        "read_now": True,
        "count": 2,
        "note": None,
    }
    assert [unit["shell"] for unit in port["subplans"]] == [
        "echo porting 'src/a.py' > out/'a'.txt",
        "echo porting 'src/b c.py' > out/'b c'.txt",
    ]
    assert port["subplans"][0]["cwd"] == "src"
    assert port["subplans"][0]["item"] == "src/a.py"
    assert steps["lined"]["subplans"][1] == {
        "id": "lined/y z",
        "kind": "call",
        "call": "json:dumps",
        "with": {"obj": "y z", "indent": 2},
        "cwd": None,
        "env": {},
        "item": "y z",
        "timeout": None,
        "retries": 0,
    }
    assert steps["asked"]["items"] == {
        "kind": "command",
        "source": "command 'touch ran; ls'",
        "runtime": True,
        "read_now": False,
        "count": None,
        "note": "would run 'touch ran; ls' when the step starts",
    }
    assert steps["asked"]["subplans"] == []
    assert steps["piped"]["items"]["kind"] == "lines"
    assert steps["piped"]["items"]["read_now"] is False
    nested = steps["nested"]["subplans"][0]
    assert nested["kind"] == "plan"
    assert nested["plan"]["id"] == "nested"
    assert nested["plan"]["max_parallel"]["value"] == 3
    inner = nested["plan"]["steps"][0]["subplans"]
    assert [(unit["id"], unit["argv"]) for unit in inner] == [
        ("nested/s/p", ["echo", "p here"]),
        ("nested/s/q", ["echo", "q here"]),
    ]
    assert steps["cleanup"]["always"] is True
    assert not (project / "ran").exists()


def test_dry_run_json_prints_what_json_has_no_type_for_as_text(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A YAML date among a call's arguments is printed as the date, not refused."""
    write(
        tmp_path,
        "p.yaml",
        "name: p\nsteps: [{name: a, call: 'json:dumps', with: {obj: 2026-01-02}}]\n",
    )

    assert main(["run", "p.yaml", "--dry-run", "--json"]) == ExitCode.OK

    unit = json.loads(capsys.readouterr().out)["plan"]["steps"][0]["subplans"][0]
    assert unit["with"] == {"obj": "2026-01-02"}


# --- refusals ------------------------------------------------------------------------------


def test_a_dry_run_of_an_invalid_plan_exits_2_and_prints_nothing_else(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(tmp_path, "p.yaml", "name: p\nsteps: [{name: a, run: 'true', bogus: 1}]\n")

    assert main(["run", "p.yaml", "--dry-run", "--json"]) == ExitCode.INVALID

    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("error: p.yaml:")
    assert "bogus" in captured.err
    assert not (tmp_path / ".subplans").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--json"], "error: --json needs --dry-run (a run's events as JSON: --events-jsonl)\n"),
        (
            ["--dry-run", "--events-jsonl", "e.jsonl"],
            "error: --events-jsonl and --dry-run exclude each other: a dry run has no events\n",
        ),
        (
            ["--dry-run", "-j", "99"],
            "error: --max-parallel must be between 1 and 32, got 99\n",
        ),
    ],
)
def test_dry_run_options_that_cannot_go_together_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    write(tmp_path, "p.yaml", "name: p\nsteps: [{name: a, run: 'touch ran'}]\n")

    assert main(["run", "p.yaml", *args]) == ExitCode.INVALID

    assert capsys.readouterr().err == message
    assert sorted(path.name for path in tmp_path.iterdir()) == ["p.yaml"]


# --- nothing written -----------------------------------------------------------------------


@pytest.mark.parametrize("json_", [False, True])
def test_a_dry_run_writes_nothing_and_reads_no_standard_input(
    project: Path, tmp_path: Path, json_: bool
) -> None:
    """The real command in its own process, standard input given: the folder is byte for byte
    what it was (no store, no run folder, no log), the command source never ran and the
    ``lines: -`` step shows no subplans."""
    before = snapshot(tmp_path)
    env = command_env(SUBPLANS_CONFIG=str(tmp_path / "no-config.yaml"))

    done = subprocess.run(
        [sys.executable, "-m", "subplans", "run", "plan.yaml", "--dry-run"]
        + (["--json"] if json_ else []),
        cwd=project,
        env=env,
        input="zebra\nquagga\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert (done.returncode, done.stderr) == (0, "")
    assert snapshot(tmp_path) == before
    assert "zebra" not in done.stdout
    if json_:
        steps = json.loads(done.stdout)["plan"]["steps"]
        assert [step["subplans"] for step in steps if step["id"] == "piped"] == [[]]
