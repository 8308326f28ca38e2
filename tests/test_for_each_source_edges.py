"""Run-time ``for_each`` sources at their edges (review of issue #11): run from another
folder, placeholders a source cannot have, sources that give no items, globs through symlinked
folders, messages about a source's form."""

from __future__ import annotations

import glob as stdlib_glob
import io
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from subplans import EventBus
from subplans.cli.app import main
from subplans.cli.exits import ExitCode
from subplans.engine.events import StepStateChanged
from subplans.engine.states import PlanState, StepState
from subplans.execution.executor import PlanExecutor
from subplans.execution.results import PlanResult
from subplans.plans import globbing
from subplans.plans.loader import GlobalConfig, load_plan
from subplans.plans.profiles import ProfileRegistry
from subplans.plans.yamlfile import ProblemsError

from .conftest import Recorder, command_env
from .plans_helpers import write


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """No user config, no terminal, no store but what a test names."""
    return command_env(SUBPLANS_CONFIG=str(tmp_path / "no-config.yaml"))


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``main`` in this process, in the test's folder, without a user config."""
    monkeypatch.setenv("SUBPLANS_CONFIG", str(tmp_path / "no-config.yaml"))
    monkeypatch.chdir(tmp_path)


async def execute(path: Path, folder: Path) -> tuple[PlanResult, dict[str, BaseException]]:
    """``path`` run by the executor in this process: its result, and each failed step's error."""
    config = GlobalConfig(folder / "no-config.yaml", False, ProfileRegistry(), None)
    bus = EventBus()
    recorder = Recorder(bus)
    result = await PlanExecutor(load_plan(path, config=config), bus=bus).run()
    errors = {
        e.step_id: e.error
        for e in recorder.events
        if isinstance(e, StepStateChanged) and e.error is not None
    }
    return result, errors


def run_cli(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "subplans", *args],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def events_of(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def completed(events: list[dict[str, Any]]) -> list[str]:
    return sorted(
        e["subplan_id"]
        for e in events
        if e["event"] == "subplan_state_changed" and e["state"] == "completed"
    )


def step_ends(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each step's last ``step_state_changed`` event."""
    return {e["step_id"]: e for e in events if e["event"] == "step_state_changed"}


# --- a command source runs wherever the run was started from --------------------------------


@pytest.mark.parametrize("store", [None, "other/state.db"])
def test_a_command_source_works_from_another_folder(
    tmp_path: Path, env: dict[str, str], store: str | None
) -> None:
    """Regression: the command's output file was named relative to where ``subplans run``
    started while its shell ran in the plan's folder (``sh: cannot create ...``)."""
    write(
        tmp_path,
        "proj/plan.yaml",
        """
        name: p
        steps:
          - name: top
            for_each: {command: 'ls *.txt'}
            subplan: {run: 'echo {item} >> done.txt'}
          - {name: sub, plan: sub/inner.yaml}
        """,
    )
    write(tmp_path, "proj/a.txt", "")
    write(
        tmp_path,
        "proj/sub/inner.yaml",
        """
        name: inner
        steps:
          - name: deep
            for_each: {command: 'echo x; echo y'}
            subplan: {run: 'echo {item} >> done.txt'}
        """,
    )
    (tmp_path / "elsewhere").mkdir()
    options = [] if store is None else ["--store", f"../{store}"]

    done = run_cli(
        "run",
        "../proj/plan.yaml",
        "--quiet",
        "--events-jsonl",
        "events.jsonl",
        *options,
        cwd=tmp_path / "elsewhere",
        env=env,
    )

    assert done.returncode == ExitCode.OK, done.stderr
    events = events_of(tmp_path / "elsewhere" / "events.jsonl")
    assert completed(events) == ["sub", "sub/deep/x", "sub/deep/y", "top/a.txt"]
    assert (tmp_path / "proj" / "done.txt").read_text() == "a.txt\n"
    assert sorted((tmp_path / "proj" / "sub" / "done.txt").read_text().split()) == ["x", "y"]
    if store is not None:
        assert (tmp_path / store).exists()


def test_a_failed_command_source_s_log_is_found_from_the_plan_s_folder(
    tmp_path: Path, env: dict[str, str]
) -> None:
    """Regression: the step's error held its items log relative to where the run started, so
    ``logs RUN STEP`` and ``status`` pointed nowhere from any other folder."""
    write(
        tmp_path,
        "proj/plan.yaml",
        """
        name: p
        steps:
          - name: fail
            for_each: {command: 'echo oops >&2; exit 4'}
            subplan: {run: 'true'}
        """,
    )
    ran = run_cli("run", "proj/plan.yaml", "--quiet", cwd=tmp_path, env=env)
    assert ran.returncode == ExitCode.FAILED, ran.stderr

    logs = run_cli("logs", "latest", "fail", cwd=tmp_path / "proj", env=env)
    assert logs.returncode == ExitCode.OK, logs.stderr
    assert logs.stdout == "oops\n"
    status = run_cli("status", "latest", cwd=tmp_path / "proj", env=env)
    shown = re.search(r"log: (\S+fail\.items\.log)", status.stdout)
    assert shown is not None, status.stdout
    assert Path(shown.group(1)).is_absolute()


# --- a source's placeholders: refused, as a source is read before there is any item ----------

_NOT_REPLACED = (
    "is not replaced in a for_each source: it is read before there is any item; a nested plan "
    "gets its parent's item in $SUBPLANS_ITEM (and the env its parent gives it), which a "
    "{command: ...} source can use"
)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ('{command: "echo {item}"}', "2:39: steps[0].for_each.command: {item}"),
        ('{lines: "{stem}.txt"}', "2:37: steps[0].for_each.lines: {stem}"),
        ('{glob: "{item}/*"}', "2:36: steps[0].for_each.glob: {item}"),
        ("{glob: [a, '{index}/*']}", "2:40: steps[0].for_each.glob[1]: {index}"),
        (
            "{glob: a, exclude: ['{stem}{item}']}",
            "2:49: steps[0].for_each.exclude[0]: {item}, {stem}",
        ),
    ],
)
def test_placeholders_in_a_source_are_refused_by_validate(
    tmp_path: Path, in_tmp: None, capsys: pytest.CaptureFixture[str], source: str, expected: str
) -> None:
    write(
        tmp_path,
        "p.yaml",
        f"name: p\nsteps: [{{name: a, for_each: {source}, subplan: {{run: y}}}}]\n",
    )

    for command in ("validate", "run"):
        assert main([command, "p.yaml"]) == ExitCode.INVALID

        assert capsys.readouterr().err == f"error: p.yaml:{expected} {_NOT_REPLACED}\n"
    assert not (tmp_path / ".subplans").exists()


def test_a_nested_plan_reads_its_parent_s_item_from_the_environment(
    tmp_path: Path, env: dict[str, str]
) -> None:
    """What the refusal above tells to do instead works."""
    write(tmp_path, "mods/a/x.py", "")
    write(tmp_path, "mods/b/y.py", "")
    write(
        tmp_path,
        "module.yaml",
        """
        name: module
        steps:
          - name: files
            for_each: {command: 'cd "$SUBPLANS_ITEM" && ls'}
            subplan: {run: 'true'}
        """,
    )
    write(
        tmp_path,
        "plan.yaml",
        """
        name: p
        steps:
          - name: mods
            for_each: {glob: 'mods/*'}
            subplan: {name: '{stem}', plan: module.yaml}
        """,
    )

    done = run_cli(
        "run", "plan.yaml", "--quiet", "--events-jsonl", "e.jsonl", cwd=tmp_path, env=env
    )

    assert done.returncode == ExitCode.OK, done.stderr
    assert completed(events_of(tmp_path / "e.jsonl")) == [
        "mods/a",
        "mods/a/files/x.py",
        "mods/b",
        "mods/b/files/y.py",
    ]


# --- a source that gives no items fails its step, unless allow_empty -------------------------


async def test_every_source_that_gives_no_items_fails_its_step_unless_allowed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n# nothing\n"))
    write(tmp_path, "empty.txt", "\n  \n# only a comment\n")
    path = write(
        tmp_path,
        "plan.yaml",
        """
        name: p
        steps:  # always: each runs after the failures before it
          - {name: file, for_each: {lines: empty.txt}, subplan: {run: 'false'}}
          - {name: piped, always: true, for_each: {lines: '-'}, subplan: {run: 'false'}}
          - {name: printed, always: true, for_each: {command: 'true'}, subplan: {run: 'false'}}
          - {name: globbed, always: true, for_each: {glob: 'no/*'}, subplan: {run: 'false'}}
          - name: allowed
            always: true
            for_each: {lines: empty.txt, allow_empty: true}
            subplan: {run: 'false'}
          - name: quiet
            always: true
            for_each: {command: 'true', allow_empty: true}
            subplan: {run: 'false'}
        """,
    )

    result, errors = await execute(path, tmp_path)

    assert result.state is PlanState.FAILED
    assert [step.state for step in result.steps] == [StepState.FAILED] * 4 + [
        StepState.COMPLETED
    ] * 2
    accept = "; allow_empty: true runs no subplans instead"
    assert [str(errors[step]) for step in ("file", "piped", "printed")] == [
        f"step file: for_each.lines: {tmp_path}/empty.txt has no items (every line is blank or "
        f"a # comment){accept}",
        "step piped: for_each.lines: standard input has no items (every line is blank or a # "
        f"comment){accept}",
        f"step printed: for_each.command: 'true' printed no items{accept}",
    ]
    assert str(errors["globbed"]).endswith(accept)


def test_validate_says_an_empty_lines_file_has_no_items_yet(
    tmp_path: Path, env: dict[str, str]
) -> None:
    write(tmp_path, "empty.txt", "")
    write(
        tmp_path,
        "plan.yaml",
        """
        name: p
        steps:
          - {name: a, for_each: {lines: empty.txt}, subplan: {run: 'true'}}
          - {name: b, for_each: {lines: empty.txt, allow_empty: true}, subplan: {run: 'true'}}
        """,
    )

    done = run_cli("validate", "plan.yaml", cwd=tmp_path, env=env)

    assert done.returncode == ExitCode.OK, done.stderr
    assert done.stdout.splitlines()[1:] == [
        "  a: lines of 'empty.txt': empty.txt has no items yet (an earlier step may write them)",
        "  b: lines of 'empty.txt': 0 items now",
    ]


# --- ** does not walk into symlinked folders; reading a source never fails raw ---------------


def test_a_glob_does_not_walk_into_a_symlinked_folder(tmp_path: Path, env: dict[str, str]) -> None:
    """Regression: ``src/deep/loop -> ..`` gave ``loop/deep/loop/...`` until a name was too
    long, and that subplan failed with a raw OSError that cancelled the rest."""
    write(tmp_path, "src/a.py", "")
    write(tmp_path, "src/deep/b.py", "")
    write(tmp_path, "src/.hidden.py", "")
    (tmp_path / "src" / "deep" / "loop").symlink_to("..")
    (tmp_path / "src" / "deep" / "again").symlink_to("..")
    write(
        tmp_path,
        "plan.yaml",
        """
        name: p
        steps:
          - name: each
            for_each: {glob: 'src/**/*.py'}
            subplan: {name: '{index}', run: 'echo {item} >> done.txt'}
        """,
    )

    done = run_cli("run", "plan.yaml", "--quiet", cwd=tmp_path, env=env)

    assert done.returncode == ExitCode.OK, done.stderr
    assert sorted((tmp_path / "done.txt").read_text().split()) == ["src/a.py", "src/deep/b.py"]


async def test_an_os_error_of_reading_a_source_fails_its_step_naming_it(
    tmp_path: Path,
) -> None:
    """The command takes away the file its output goes to: the step fails saying so."""
    path = write(
        tmp_path,
        "plan.yaml",
        """
        name: p
        steps:
          - name: each
            for_each: {command: 'echo x; rm "$(readlink /proc/$$/fd/1)"'}
            subplan: {run: 'true'}
        """,
    )

    result, errors = await execute(path, tmp_path)

    assert result.state is PlanState.FAILED
    assert isinstance(errors["each"], ProblemsError)
    assert re.fullmatch(
        r"step each: for_each\.command: cannot read the command "
        r"'echo x; rm \"\$\(readlink /proc/\$\$/fd/1\)\"': No such file or directory: "
        r"/\S+/logs/each\.items\.out",
        str(errors["each"]),
    )


# --- a source's form: one message that says what a source has --------------------------------

_A_SOURCE = (
    "a source has exactly one of glob (with exclude), lines or command, each with allow_empty"
)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{lines: '-', glob: x}", f"2:29: steps[0].for_each: has glob and lines: {_A_SOURCE}"),
        (
            "{glob: x, lines: y, command: z}",
            f"2:29: steps[0].for_each: has glob, lines and command: {_A_SOURCE}",
        ),
        (
            "{comand: ls}",
            f"2:29: steps[0].for_each: unknown key 'comand' (did you mean 'command'?): {_A_SOURCE}",
        ),
        (
            "{exclude: [a]}",
            f"2:29: steps[0].for_each: has none of glob, lines or command: {_A_SOURCE}",
        ),
        ("{zzz: 1}", f"2:29: steps[0].for_each: unknown key 'zzz': {_A_SOURCE}"),
        (
            "{lines: a, exclude: [b]}",
            "2:40: steps[0].for_each.exclude: key 'exclude' is not allowed here",
        ),
    ],
)
def test_a_source_s_form_is_told_in_one_message(
    tmp_path: Path, in_tmp: None, capsys: pytest.CaptureFixture[str], source: str, expected: str
) -> None:
    write(
        tmp_path,
        "p.yaml",
        f"name: p\nsteps: [{{name: a, for_each: {source}, subplan: {{run: y}}}}]\n",
    )

    assert main(["validate", "p.yaml"]) == ExitCode.INVALID

    assert capsys.readouterr().err == f"error: p.yaml:{expected}\n"


_PATTERNS = [
    "**",
    "**/",
    "**/*.py",
    "*",
    "*/",
    "a/**",
    "a/**/",
    "a/**/*.py",
    "**/b/*",
    "*/*.py",
    ".*",
    "**/.*",
    "a/.*/",
    "**/*.txt",
    "a",
    "a/",
    "x.py/",
    "nope",
    "nope/*",
    "nope/**",
    "**/c",
    "a/**/c/*",
    "*/**/*.py",
    "[ab]/*",
    "broken",
    "**/broken",
    "d/*/*.py",
    "?/**/*.txt",
    "a/b/**/**/*",
]


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    for name in ("x.py", "a/y.py", "a/b/z.py", "a/b/c/w.txt", ".h/x/q.py", "a/.hid/r.py"):
        write(tmp_path, f"t/{name}", "")
    write(tmp_path, "t/a/.dot.py", "")
    write(tmp_path, "t/d/e.txt", "")
    (tmp_path / "t" / "broken").symlink_to("nowhere")
    (tmp_path / "t" / "link.py").symlink_to("x.py")
    (tmp_path / "t" / "a" / "self").symlink_to("self")  # a loop that cannot be stat'ed
    return tmp_path / "t"


@pytest.mark.parametrize("pattern", _PATTERNS)
def test_globs_match_as_the_standard_glob_without_symlinked_folders(
    tree: Path, pattern: str
) -> None:
    assert sorted(globbing.glob(pattern, str(tree))) == sorted(
        stdlib_glob.glob(pattern, root_dir=tree, recursive=True)
    )


def test_only_a_double_star_stops_at_a_symlinked_folder(tree: Path) -> None:
    (tree / "d" / "up").symlink_to("../a")

    def found(pattern: str) -> list[str]:
        return sorted(globbing.glob(pattern, str(tree)))

    assert found("d/**") == ["d/", "d/e.txt", "d/up"]  # matched as a name, not walked
    assert found("**/b") == ["a/b"]
    assert found("d/*/*.py") == ["d/up/y.py"]  # a '*' part follows it, as glob does
    assert found("d/up/**/*.py") == ["d/up/b/z.py", "d/up/y.py"]  # and a written one


def test_an_unreadable_folder_gives_nothing(tree: Path) -> None:
    assert list(globbing.glob("x.py/*", str(tree))) == []
    assert list(globbing.glob("x.py/.*", str(tree))) == []
