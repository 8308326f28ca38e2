"""Run ids as people type them (issue #11, point 6): ``latest`` and a unique prefix of an id in
every command that takes one, an ambiguous prefix listing the candidates; and a command that
finds no store saying where it looked and which store below it could use (point 14)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from subplans.cli.app import ExitCode
from subplans.cli.stores import stores_below
from subplans.store import RunStore

from .log_headers import unheaded
from .plans_helpers import write
from .store_support import invoke

pytestmark = pytest.mark.usefixtures("isolated")

# Fails (exit 1) once "fail" exists, so that a second run can be told from the first.
PLAN = """
    name: twice
    steps:
      - name: work
        run: "echo working; test ! -e fail"
    """


def two_runs(folder: Path) -> tuple[str, str]:
    """The ids of two runs of PLAN, the older (completed) first, the newer (failed) second."""
    write(folder, "plan.yaml", PLAN)
    assert invoke("run", "plan.yaml", "-q").exit_code == 0
    (folder / "fail").touch()
    assert invoke("run", "plan.yaml", "-q").exit_code == ExitCode.FAILED
    with RunStore.open(folder / ".subplans" / "state.db", readonly=True) as db:
        newer, older = db.run_ids()
    return older, newer


def common_start(one: str, other: str) -> str:
    """The longest start the two ids share."""
    return one[: next(i for i, (a, b) in enumerate(zip(one, other, strict=False)) if a != b)]


def unique_prefix(run_id: str, other: str) -> str:
    """The shortest start of ``run_id`` that ``other`` does not share."""
    return run_id[: len(common_start(run_id, other)) + 1]


def status_of(run_id: str) -> dict[str, Any]:
    result = invoke("status", run_id, "--json")
    assert result.exit_code == 0, result.output
    found: dict[str, Any] = json.loads(result.stdout)
    return found


def test_latest_is_the_most_recently_started_run(tmp_path: Path) -> None:
    older, newer = two_runs(tmp_path)

    assert status_of("latest")["id"] == newer
    assert json.loads(invoke("events", "latest").stdout.splitlines()[0])["run_id"] == newer
    assert unheaded(invoke("logs", "latest", "work").stdout) == "working\n"
    assert status_of(older)["id"] == older  # a whole id still names its run


def test_a_unique_prefix_names_its_run_in_every_command(tmp_path: Path) -> None:
    older, newer = two_runs(tmp_path)
    prefix = unique_prefix(older, newer)

    assert status_of(prefix)["id"] == older
    events = [json.loads(line) for line in invoke("events", prefix).stdout.splitlines()]
    assert {event["run_id"] for event in events} == {older}
    (tmp_path / "fail").unlink()
    assert unheaded(invoke("logs", prefix, "work").stdout) == "working\n"
    cancelled = invoke("cancel", prefix)
    resumed = invoke("resume", unique_prefix(newer, older), "-q")

    assert cancelled.exit_code == ExitCode.INVALID
    assert cancelled.stderr == f"error: run {older} has already ended (completed)\n"
    assert resumed.exit_code == 0, resumed.output
    assert f"(run {newer})" in resumed.stdout
    assert (status_of(newer)["status"], status_of(newer)["resumes"]) == ("completed", 1)
    assert status_of(older)["resumes"] == 0


@pytest.mark.parametrize("command", ["status", "events", "logs", "resume", "cancel"])
def test_an_ambiguous_prefix_lists_the_candidates_and_is_exit_2(
    command: str, tmp_path: Path
) -> None:
    older, newer = two_runs(tmp_path)
    common = common_start(older, newer)
    args = [command, common, "work"] if command == "logs" else [command, common]

    result = invoke(*args)

    assert result.exit_code == ExitCode.INVALID
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert re.fullmatch(r"run +status +started \(UTC\) +plan", lines[0])
    assert re.fullmatch(rf"{newer}  failed     \d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d  twice", lines[1])
    assert re.fullmatch(rf"{older}  completed  \d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d  twice", lines[2])
    assert lines[3:] == [
        f"error: run id {common!r} is ambiguous: 2 runs of the store .subplans/state.db "
        "start with it; give more of it"
    ]


def test_an_ambiguous_prefix_lists_at_most_ten_runs(tmp_path: Path) -> None:
    write(tmp_path, "plan.yaml", PLAN)
    for _ in range(12):
        assert invoke("run", "plan.yaml", "-q").exit_code == 0

    result = invoke("status", "2")

    assert result.exit_code == ExitCode.INVALID
    lines = result.stderr.splitlines()
    assert len(lines) == 1 + 10 + 2
    assert lines[-2:] == [
        "+2 more",
        "error: run id '2' is ambiguous: 12 runs of the store .subplans/state.db start with "
        "it; give more of it",
    ]


@pytest.mark.parametrize("command", ["status", "events", "logs", "resume", "cancel"])
def test_latest_in_a_store_without_runs_is_exit_2(command: str, tmp_path: Path) -> None:
    RunStore.open(tmp_path / ".subplans" / "state.db").close()
    args = [command, "latest", "work"] if command == "logs" else [command, "latest"]

    result = invoke(*args)

    assert result.exit_code == ExitCode.INVALID
    assert result.stderr == "error: no runs in the store .subplans/state.db\n"
    assert invoke("runs").stdout == "no runs in the store .subplans/state.db\n"


# --- no store where the command looked ----------------------------------------------------------


def a_store_in(folder: Path) -> Path:
    """A real store with one run, made by running PLAN in ``folder``."""
    write(folder, "plan.yaml", PLAN)
    assert invoke("run", str(folder / "plan.yaml"), "-q").exit_code == 0
    return folder / ".subplans" / "state.db"


@pytest.mark.parametrize("command", ["status", "events", "logs", "resume", "cancel"])
def test_no_store_here_names_the_one_store_below_and_its_option(
    command: str, tmp_path: Path
) -> None:
    a_store_in(tmp_path / "projects" / "port")
    args = [command, "latest", "work"] if command == "logs" else [command, "latest"]

    result = invoke(*args)

    assert result.exit_code == ExitCode.INVALID
    assert result.stderr == (
        "error: cannot open the store .subplans/state.db: no store there yet (looked for "
        f"{tmp_path}/.subplans/state.db); the one store in the folders below is "
        "projects/port/.subplans/state.db: add --store projects/port/.subplans/state.db\n"
    )
    assert invoke("status", "--store", "projects/port/.subplans/state.db").exit_code == 0


def test_runs_without_a_store_names_the_one_store_below(tmp_path: Path) -> None:
    a_store_in(tmp_path / "port")

    result = invoke("runs")

    assert result.exit_code == 0
    assert result.stdout == (
        "no runs in the store .subplans/state.db: no store there yet (looked for "
        f"{tmp_path}/.subplans/state.db); the one store in the folders below is "
        "port/.subplans/state.db: add --store port/.subplans/state.db\n"
    )


def test_a_store_named_by_an_absolute_path_is_not_looked_for_again(tmp_path: Path) -> None:
    missing = tmp_path / "elsewhere" / "state.db"

    result = invoke("status", "--store", str(missing))

    assert result.exit_code == ExitCode.INVALID
    assert result.stderr == f"error: cannot open the store {missing}: no store there yet\n"


def test_two_stores_below_are_a_choice_the_command_does_not_make(tmp_path: Path) -> None:
    a_store_in(tmp_path / "a")
    a_store_in(tmp_path / "b" / "c")

    result = invoke("status")

    assert result.exit_code == ExitCode.INVALID
    assert result.stderr == (
        "error: cannot open the store .subplans/state.db: no store there yet "
        f"(looked for {tmp_path}/.subplans/state.db)\n"
    )
    assert sorted(map(str, stores_below(tmp_path))) == [
        f"{tmp_path}/a/.subplans/state.db",
        f"{tmp_path}/b/c/.subplans/state.db",
    ]


def test_stores_below_looks_three_levels_down_and_skips_what_holds_no_plan(
    tmp_path: Path,
) -> None:
    found = a_store_in(tmp_path / "one" / "two" / "three")
    for skipped in (".hidden", "node_modules", "__pycache__", "venv", "one/two/three/four"):
        (tmp_path / skipped / ".subplans").mkdir(parents=True)
        (tmp_path / skipped / ".subplans" / "state.db").write_bytes(found.read_bytes())
    (tmp_path / "venv" / "pyvenv.cfg").touch()
    (tmp_path / "a-file").touch()

    assert stores_below(tmp_path) == [found]
    assert stores_below(tmp_path, depth=2) == []


def test_stores_below_stops_after_its_limit_of_entries(tmp_path: Path) -> None:
    found = a_store_in(tmp_path / "z" / "y")
    for n in range(5):
        (tmp_path / f"a{n}").mkdir()

    assert stores_below(tmp_path, limit=6) == []  # the six entries of the first level
    assert stores_below(tmp_path, limit=7) == [found]
