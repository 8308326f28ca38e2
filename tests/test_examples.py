"""The Python examples run as a reader runs them: a real process each, its output checked."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from .conftest import command_env

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(name: str) -> list[str]:
    """``python examples/NAME`` from the project's folder: its output lines; it must exit 0
    and print nothing on standard error (asyncio's debug mode, which nox sets, would warn of a
    slow step on a busy machine: the reader's run is without it)."""
    env = command_env()
    env.pop("PYTHONASYNCIODEBUG", None)
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        cwd=EXAMPLES.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert (done.returncode, done.stderr) == (0, "")
    return done.stdout.splitlines()


def test_agent_planner_plans_as_it_goes_and_stops_at_the_first_answer() -> None:
    lines = run_example("agent_planner.py")

    search = lines.index("search, 4 at a time, stopping at the first answer:")
    planned, searched = lines[:search], lines[search + 1 :]
    assert planned[0] == "plan 'release', 3 at a time, continue-on-error:"
    # Each planner ends as soon as it submitted its subtasks, before any of them: a parent's
    # line comes before its children's. The rest ends in whatever order it ends.
    ends = planned[1:10]
    assert sorted(ends) == sorted(
        [
            "  completed  release",
            "  completed  release/docs",
            "  completed  release/build",
            "  completed  release/test",
            "  completed  release/build/linux",
            "  completed  release/build/macos",
            "  failed     release/build/windows  RuntimeError: no Windows runner is available",
            "  completed  release/test/unit",
            "  completed  release/test/integration",
        ]
    )
    assert ends[0] == "  completed  release"
    assert ends.index("  completed  release/build") < min(
        i for i, line in enumerate(ends) if "release/build/" in line
    )
    assert ends.index("  completed  release/test") < min(
        i for i, line in enumerate(ends) if "release/test/" in line
    )
    assert planned[10] == "1 of 9 subplans failed; every result, in the order submitted:"
    results = planned[11:]
    assert results[:4] == [
        "  release                    split into 3",
        "  release/docs               docs done",
        "  release/build              split into 3",
        "  release/test               split into 2",
    ]
    assert sorted(results[4:]) == [
        "  release/build/linux        linux done",
        "  release/build/macos        macos done",
        "  release/build/windows      no Windows runner is available",
        "  release/test/integration   integration done",
        "  release/test/unit          unit done",
    ]
    assert searched[0] == "  found      'the answer is 42' in doc-137"
    stopped = re.fullmatch(
        r"  stopped    (\d+) documents read, (\d) reads cancelled, no more started", searched[1]
    )
    assert stopped is not None, searched
    # The input is read in order, four at a time: the answer's document and those before it
    # were read, and at most four reads were running when the loop was left (the dispatch may
    # have started more as results waited to be taken, never more than the cap at once).
    read, cancelled = int(stopped[1]), int(stopped[2])
    assert 137 <= read < 137 + 2 * 4
    assert cancelled <= 4
    assert len(searched) == 2


def test_quickstart_ports_every_module_but_one() -> None:
    lines = run_example("quickstart.py")

    assert "FAILED port/net: net: uses asyncore, which no longer exists" in lines
    assert re.fullmatch(
        r"11 completed, 1 failed in \d+\.\d\ds, at most 4 at a time "
        r"\(the net module fails on purpose\)",
        lines[-1],
    )
