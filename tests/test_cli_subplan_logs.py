"""Finding a subplan's log among many (issue #11, point 7): ``subplans logs RUN [SUBPLAN]`` with
an id, a unique prefix or a glob, ``--all`` and ``--failed`` (each line after ``[ID] ``), and
``subplans status RUN --subplans``, as text and as JSON; all of real runs in a real store."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest

from subplans.cli.app import ExitCode
from subplans.cli.subplan_logs import write_tagged
from subplans.engine.events import SubplanStateChanged
from subplans.engine.states import SubplanExecutionState
from subplans.store import RunStore

from .log_headers import unheaded
from .plans_helpers import write
from .store_support import gone_owner, invoke, manifest

pytestmark = pytest.mark.usefixtures("isolated")

PENDING, RUNNING = SubplanExecutionState.PENDING, SubplanExecutionState.RUNNING

# port/a and port/b write two lines each (one on stderr); report is a nested plan (no log of
# its own) whose step logs; check, last, fails with exit code 3 and a last line without its end.
PLAN = """
    name: logged
    automation_profile: keep-going
    steps:
      - name: port
        for_each: [a, b]
        subplan:
          run: "echo out {item}; echo err {item} >&2"
      - name: report
        plan: inner.yaml
      - name: check
        run: "echo checking; printf 'no end'; exit 3"
    """
INNER = """
    name: inner
    steps:
      - name: sum
        run: "echo summed"
    """


@pytest.fixture
def run_id(tmp_path: Path) -> str:
    write(tmp_path, "plan.yaml", PLAN)
    write(tmp_path, "inner.yaml", INNER)
    result = invoke("run", "plan.yaml", "-q", "-j", "1")
    assert result.exit_code == ExitCode.FAILED, result.output
    found: str = json.loads(invoke("runs", "--json").stdout)[0]["id"]
    return found


def logs(*args: str, attempts: int = 1) -> bytes:
    """What ``logs`` printed, without the ``attempts`` header lines (one per log printed)."""
    result = invoke("logs", *args)
    assert result.exit_code == 0, result.output
    found: bytes = result.stdout_bytes
    return unheaded(found, attempts)


def test_one_subplan_by_its_id_or_a_unique_prefix_is_printed_as_written(run_id: str) -> None:
    assert logs(run_id, "port/a") == b"out a\nerr a\n"
    assert logs(run_id, "ch") == b"checking\nno end"
    assert logs("latest", "report/") == b"summed\n"


def test_a_glob_prints_every_log_it_matches_each_line_tagged(run_id: str) -> None:
    assert logs(run_id, "port/*", attempts=2) == (
        b"[port/a] out a\n[port/a] err a\n[port/b] out b\n[port/b] err b\n"
    )
    assert (
        logs(run_id, "*/[b-s]*", attempts=2)
        == b"[port/b] out b\n[port/b] err b\n[report/sum] summed\n"
    )


def test_all_prints_every_log_in_plan_order_and_failed_only_the_failed(run_id: str) -> None:
    assert logs(run_id, "--all", attempts=4) == (
        b"[port/a] out a\n[port/a] err a\n[port/b] out b\n[port/b] err b\n"
        b"[report/sum] summed\n[check] checking\n[check] no end\n"
    )
    assert logs(run_id, "--failed") == b"[check] checking\n[check] no end\n"
    assert logs(run_id, "port/*", "--failed", attempts=0) == b""


def test_failed_without_a_failed_subplan_says_so(tmp_path: Path) -> None:
    write(tmp_path, "plan.yaml", "name: ok\nsteps:\n  - {name: a, run: 'echo fine'}\n")
    invoke("run", "plan.yaml", "-q")

    result = invoke("logs", "latest", "--failed")

    assert result.exit_code == 0
    assert result.stdout == ""
    assert re.fullmatch(
        r"no failed subplan of run \S+ that started a command has a log\n", result.stderr
    )


def test_an_ambiguous_subplan_lists_the_candidates_and_is_exit_2(run_id: str) -> None:
    result = invoke("logs", run_id, "port")

    assert result.exit_code == ExitCode.INVALID
    assert result.stderr == (
        "  port/a\n  port/b\n"
        f"error: subplan 'port' is ambiguous: 2 subplans of run {run_id} start with it; "
        "give more of it, or a glob such as 'port*' for all of them\n"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nope"], "run {run} has no subplan 'nope'"),
        (["nope/*"], "no subplan of run {run} matches 'nope/\\*'"),
        (["report"], "subplan 'report' of run {run} has no log: it started no command"),
        (
            [],
            "name a SUBPLAN \\(an id, a unique prefix of one, or a glob\\), or give --all or "
            "--failed",
        ),
        (["port/a", "--all"], "give SUBPLAN \\('port/a'\\) or --all, not both"),
    ],
)
def test_a_selection_that_prints_nothing_is_one_error_line(
    run_id: str, args: list[str], message: str
) -> None:
    result = invoke("logs", run_id, *args)

    assert result.exit_code == ExitCode.INVALID
    assert result.stdout == ""
    assert re.fullmatch(f"error: {message.format(run=run_id)}\n", result.stderr)


def test_a_deleted_log_among_many_is_an_error_after_the_others(run_id: str) -> None:
    (
        Path(
            json.loads(invoke("status", run_id, "--subplans", "--json").stdout)["subplans"][0][
                "log_file"
            ]
        )
    ).unlink()

    result = invoke("logs", run_id, "port/*")

    assert result.exit_code == ExitCode.INVALID
    assert unheaded(result.stdout) == "[port/b] out b\n[port/b] err b\n"
    assert re.fullmatch(
        r"error: cannot read the log of 'port/a': \S+port__a\.log: No such file or directory\n",
        result.stderr,
    )


def test_status_subplans_lists_every_subplan(run_id: str) -> None:
    result = invoke("status", run_id[:-1], "--subplans")

    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0] == "subplan     state      attempts   took  exit code"
    rows = [re.split(r"\s{2,}", line.strip()) for line in lines[1:]]
    assert [(row[0], row[1], row[2], row[4]) for row in rows] == [
        ("port/a", "completed", "1", "0"),
        ("port/b", "completed", "1", "0"),
        ("report", "completed", "1", "-"),
        ("report/sum", "completed", "1", "0"),
        ("check", "failed", "1", "3"),
    ]
    assert all(re.fullmatch(r"\d+\.\d\ds", row[3]) for row in rows)


def test_status_subplans_as_json(run_id: str) -> None:
    result = invoke("status", "latest", "--subplans", "--json")

    assert result.exit_code == 0
    found = json.loads(result.stdout)
    assert (found["run_id"], found["status"]) == (run_id, "failed")
    assert [
        (s["id"], s["step"], s["state"], s["attempts"], s["exit_code"]) for s in found["subplans"]
    ] == [
        ("port/a", "port", "completed", 1, 0),
        ("port/b", "port", "completed", 1, 0),
        ("report", "report", "completed", 1, None),
        ("report/sum", "report/sum", "completed", 1, 0),
        ("check", "check", "failed", 1, 3),
    ]
    assert all(s["elapsed"] >= 0 for s in found["subplans"])


def test_an_ambiguous_subplan_lists_at_most_ten(tmp_path: Path) -> None:
    items = ", ".join(f"i{n:02d}" for n in range(12))
    write(
        tmp_path,
        "plan.yaml",
        f"name: many\nsteps:\n  - name: port\n    for_each: [{items}]\n"
        "    subplan: {run: 'true'}\n",
    )
    invoke("run", "plan.yaml", "-q")

    result = invoke("logs", "latest", "port/i")

    assert result.exit_code == ExitCode.INVALID
    lines = result.stderr.splitlines()
    assert lines[:2] == ["  port/i00", "  port/i01"]
    assert lines[10] == "  +2 more"
    assert re.fullmatch(
        r"error: subplan 'port/i' is ambiguous: 12 subplans of run \S+ start with it; give "
        r"more of it, or a glob such as 'port/i\*' for all of them",
        lines[11],
    )


def test_on_a_terminal_tagged_lines_show_control_characters_as_escapes() -> None:
    target = io.BytesIO()

    write_tagged(io.BytesIO(b"\x1b[2Jwiped\r\nlast"), target, "s/\x1b", terminal=True)

    assert target.getvalue() == b"[s/\\x1b] \\x1b[2Jwiped\n[s/\\x1b] last\n"


def test_piped_tagged_lines_are_the_bytes_as_written() -> None:
    target = io.BytesIO()

    write_tagged(io.BytesIO(b"\x1b[2Jwiped\r\n\xff"), target, "s", terminal=False)

    assert target.getvalue() == b"[s] \x1b[2Jwiped\r\n[s] \xff\n"


def test_status_subplans_of_an_interrupted_run_shows_what_was_cut_short(tmp_path: Path) -> None:
    with RunStore.open(tmp_path / "state.db") as db:
        db.start_run("r1", manifest("s/a", "s/b"), owner=gone_owner())
        with db.recorder("r1") as recorder:
            recorder.handle(SubplanStateChanged("s/a", PENDING, RUNNING, 1))

    listed = invoke("status", "r", "--subplans", "--store", "state.db")
    found = json.loads(invoke("status", "r", "--subplans", "--json", "--store", "state.db").stdout)

    assert listed.exit_code == 0, listed.output
    assert re.fullmatch(
        r"subplan  state        attempts   took  exit code\n"
        r"s/a      interrupted         1  \S+s          -\n"
        r"s/b      not run             0      -          -\n",
        listed.stdout,
    )
    assert (found["status"], [s["state"] for s in found["subplans"]]) == (
        "interrupted",
        ["interrupted", "pending"],
    )
