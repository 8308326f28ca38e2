"""``subplans limit RUN_ID N [--step STEP | --pool NAME]`` on real runs: the cap of a running
run changed from another process, through the store; ``status`` shows it as it is and as it
started. Each subplan waits on a FIFO of its own, which the test opens to let it end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from subplans.cli.typer_app import app

from .conftest import command_env, wait_until
from .plans_helpers import write

runner = CliRunner()


@pytest.fixture
def env(tmp_path: Path, isolated: None) -> dict[str, str]:
    """The run's environment; the commands run in this process, ``isolated`` in ``tmp_path``."""
    return command_env(SUBPLANS_CONFIG=str(tmp_path / "no-config.yaml"))


def subplans(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``subplans ARGS`` in this process (Typer's test runner; the run is another process),
    as a finished process would be."""
    assert Path.cwd() == cwd  # the `isolated` fixture's
    result = runner.invoke(app, list(args))
    return subprocess.CompletedProcess(args, result.exit_code, result.stdout, result.stderr)


def events(path: Path) -> list[dict[str, Any]]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.splitlines(keepends=True) if line.endswith("\n")]


def running(path: Path) -> list[str]:
    """The subplans whose command started, in order."""
    return [e["subplan_id"] for e in events(path) if e["event"] == "subplan_process_started"]


def gated_plan(tmp_path: Path, items: list[str], head: str) -> str:
    """A plan whose subplans each wait for their FIFO (``<item>.fifo``) to be opened."""
    for item in items:
        os.mkfifo(tmp_path / f"{item}.fifo")
    return (
        f"name: gated\n{head}steps:\n  - name: work\n    for_each: {json.dumps(items)}\n"
        "    subplan: {run: 'cat {item}.fifo > /dev/null'}\n"
    )


def release(tmp_path: Path, item: str) -> None:
    """Let ``item``'s command end: open its FIFO for writing (waits for the reader), close it."""
    os.close(os.open(tmp_path / f"{item}.fifo", os.O_WRONLY))


def start(
    tmp_path: Path, env: dict[str, str], started: list[subprocess.Popen[bytes]], plan: str
) -> tuple[subprocess.Popen[bytes], Path]:
    write(tmp_path, "plan.yaml", plan)
    stream = tmp_path / "events.jsonl"
    with (tmp_path / "out.txt").open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "subplans", "run", "plan.yaml", "--events-jsonl", str(stream)],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    started.append(proc)
    return proc, stream


def status(tmp_path: Path, env: dict[str, str]) -> dict[str, Any]:
    shown = subplans("status", "--json", cwd=tmp_path, env=env)
    assert shown.returncode == 0, shown.stderr
    found: dict[str, Any] = json.loads(shown.stdout)
    return found


def test_raising_max_parallel_starts_the_waiting_subplans_at_once(
    tmp_path: Path, env: dict[str, str], started: list[subprocess.Popen[bytes]]
) -> None:
    items = ["a", "b", "c"]
    plan = gated_plan(tmp_path, items, "automation_profile: {max_parallel: 1}\n")
    proc, stream = start(tmp_path, env, started, plan)
    wait_until(lambda: running(stream) == ["work/a"], "a to start alone")
    changed = subplans("limit", "latest", "3", cwd=tmp_path, env=env)
    assert changed.returncode == 0, changed.stderr
    assert changed.stdout.strip().endswith(": max_parallel 1 -> 3")
    wait_until(lambda: len(running(stream)) == 3, "b and c to start")
    shown = status(tmp_path, env)
    assert shown["max_parallel"] == {"original": 1, "current": 3}
    text = subplans("status", cwd=tmp_path, env=env).stdout
    assert "  limits       max_parallel 3 (started with 1)\n" in text
    for item in items:
        release(tmp_path, item)
    assert proc.wait(timeout=30) == 0
    out = (tmp_path / "out.txt").read_text()
    assert "limit: max_parallel 1 -> 3\n" in out  # said as it happened
    changes = [e for e in events(stream) if e["event"] == "limit_changed"]
    assert [(c["previous"], c["limit"]) for c in changes] == [(1, 3)]
    [record] = status(tmp_path, env)["limits"]
    assert (record["target"], record["original"], record["current"]) == ("max_parallel", 1, 3)
    assert not record["pending"]


def test_lowering_max_parallel_stops_nothing_and_holds_new_starts(
    tmp_path: Path, env: dict[str, str], started: list[subprocess.Popen[bytes]]
) -> None:
    items = ["a", "b", "c", "d"]
    plan = gated_plan(tmp_path, items, "automation_profile: {max_parallel: 2}\n")
    proc, stream = start(tmp_path, env, started, plan)
    wait_until(lambda: sorted(running(stream)) == ["work/a", "work/b"], "a and b to start")
    changed = subplans("limit", "latest", "1", cwd=tmp_path, env=env)
    assert changed.returncode == 0, changed.stderr
    release(tmp_path, "a")
    release(tmp_path, "b")  # c starts only once both ended: one at a time now
    wait_until(lambda: len(running(stream)) == 3, "c to start")
    release(tmp_path, "c")
    release(tmp_path, "d")
    assert proc.wait(timeout=30) == 0
    seen = [
        (e["event"], e["subplan_id"])
        for e in events(stream)
        if e["event"] == "subplan_process_started"
        or (e["event"] == "subplan_state_changed" and e["state"] == "completed")
    ]
    starts = [i for i, (kind, _) in enumerate(seen) if kind == "subplan_process_started"]
    ends = [i for i, (kind, _) in enumerate(seen) if kind == "subplan_state_changed"]
    # Both a and b had ended before c started, and c before d.
    assert starts[2] > ends[1]
    assert starts[3] > ends[2]
    assert status(tmp_path, env)["max_parallel"] == {"original": 2, "current": 1}


def test_a_pool_s_capacity_and_a_step_s_cap_change_while_it_runs(
    tmp_path: Path, env: dict[str, str], started: list[subprocess.Popen[bytes]]
) -> None:
    items = ["a", "b", "c"]
    plan = gated_plan(tmp_path, items, "pools: {api: 1}\nautomation_profile: {max_parallel: 4}\n")
    plan = plan.replace("{run: 'cat", "{uses: [api], run: 'cat")
    proc, stream = start(tmp_path, env, started, plan)
    wait_until(lambda: running(stream) == ["work/a"], "a to start alone: the pool has one unit")
    changed = subplans("limit", "latest", "2", "--pool", "api", cwd=tmp_path, env=env)
    assert changed.returncode == 0, changed.stderr
    assert changed.stdout.strip().endswith(": pool api 1 -> 2")
    wait_until(lambda: len(running(stream)) == 2, "b to start")
    stepped = subplans("limit", "latest", "3", "--step", "work", cwd=tmp_path, env=env)
    assert stepped.returncode == 0, stepped.stderr
    assert stepped.stdout.strip().endswith(": step work 4 -> 3")
    text = subplans("status", cwd=tmp_path, env=env).stdout
    assert "pool api 2 (started with 1)" in text
    assert "step work 3 (started with 4)" in text
    for item in items:
        release(tmp_path, item)
    assert proc.wait(timeout=30) == 0
    pools = [e for e in events(stream) if e["event"] == "limit_changed" and e["pool"] == "api"]
    assert [(e["previous"], e["limit"]) for e in pools] == [(1, 2)]


def test_what_the_run_refuses_is_exit_2_and_recorded(
    tmp_path: Path, env: dict[str, str], started: list[subprocess.Popen[bytes]]
) -> None:
    plan = gated_plan(tmp_path, ["a"], "pools: {api: 1}\n")
    proc, stream = start(tmp_path, env, started, plan)
    wait_until(lambda: running(stream) == ["work/a"], "a to start")
    unknown = subplans("limit", "latest", "2", "--pool", "gpu", cwd=tmp_path, env=env)
    assert unknown.returncode == 2
    assert unknown.stderr.strip().endswith(
        "refused pool gpu 2: no pool 'gpu' in the run; its pools: api"
    )
    step = subplans("limit", "latest", "2", "--step", "nope", cwd=tmp_path, env=env)
    assert step.returncode == 2
    assert step.stderr.strip().endswith("refused step nope 2: no step 'nope' in the run")
    text = subplans("status", cwd=tmp_path, env=env).stdout
    assert "pool gpu: 2 refused: no pool 'gpu' in the run; its pools: api" in text
    release(tmp_path, "a")
    assert proc.wait(timeout=30) == 0
    ended = subplans("limit", "latest", "2", cwd=tmp_path, env=env)
    assert ended.returncode == 2
    assert "has already ended (completed)" in ended.stderr
    assert "Traceback" not in ended.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["0"], "max_parallel must be between 1 and 32, got 0"),
        (["33"], "max_parallel must be between 1 and 32, got 33"),
        (["0", "--pool", "api"], "a pool's capacity must be an integer >= 1, got 0"),
        (["2", "--step", "s", "--pool", "api"], "--step and --pool exclude each other"),
    ],
)
def test_a_limit_out_of_range_is_refused_before_the_store_is_read(
    tmp_path: Path, env: dict[str, str], args: list[str], message: str
) -> None:
    refused = subplans("limit", "20261130-000000-abcdef", *args, cwd=tmp_path, env=env)
    assert refused.returncode == 2
    assert message in refused.stderr
    assert "Traceback" not in refused.stderr


def test_a_run_whose_owner_does_not_listen_is_refused_and_never_signalled(
    tmp_path: Path, env: dict[str, str], started: list[subprocess.Popen[bytes]]
) -> None:
    """A run driven by a subplans before `limit` (it dies of ``LIMIT_SIGNAL``): here a process
    with the signal's default action stands in as its owner, which never said it listens."""
    import sqlite3

    from subplans.store.liveness import process_start_time

    proc, stream = start(tmp_path, env, started, gated_plan(tmp_path, ["a"], ""))
    wait_until(lambda: running(stream) == ["work/a"], "a to start")
    older = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=-1)
    started.append(older)
    store = tmp_path / ".subplans" / "state.db"
    db = sqlite3.connect(store, isolation_level=None)
    [(pid, start_time)] = db.execute("SELECT owner_pid, owner_start FROM runs").fetchall()
    older_start = process_start_time(older.pid)
    db.execute("UPDATE runs SET owner_pid = ?, owner_start = ?", (older.pid, older_start))
    refused = subplans("limit", "latest", "2", cwd=tmp_path, env=env)
    assert refused.returncode == 2
    [line] = refused.stderr.strip().splitlines()
    assert line.endswith(
        "cannot change its limits while running: it was started by a subplans without "
        "`limit`; stop it and `subplans resume` it to change them"
    )
    assert older.poll() is None  # never signalled: it would have died
    assert status(tmp_path, env)["limits"] == []  # nothing asked either
    db.execute("UPDATE runs SET owner_pid = ?, owner_start = ?", (pid, start_time))
    db.close()
    older.communicate(b"", timeout=10)
    assert older.returncode == 0  # it ended as it would, by itself
    release(tmp_path, "a")
    assert proc.wait(timeout=30) == 0


def test_each_call_says_the_cap_it_changed_from_and_concurrent_calls_their_own(
    tmp_path: Path, env: dict[str, str], started: list[subprocess.Popen[bytes]]
) -> None:
    plan = gated_plan(tmp_path, ["a"], "automation_profile: {max_parallel: 20}\n")
    proc, stream = start(tmp_path, env, started, plan)
    wait_until(lambda: running(stream) == ["work/a"], "a to start")
    first = subplans("limit", "latest", "2", cwd=tmp_path, env=env)
    assert first.stdout.strip().endswith(": max_parallel 20 -> 2")
    second = subplans("limit", "latest", "5", cwd=tmp_path, env=env)
    assert second.stdout.strip().endswith(": max_parallel 2 -> 5")  # not the original 20
    values = range(6, 18)
    calls = [
        subprocess.Popen(
            [sys.executable, "-m", "subplans", "limit", "latest", str(value)],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for value in values
    ]
    changes: dict[int, int] = {}
    for value, call in zip(values, calls, strict=True):
        out, err = call.communicate(timeout=60)
        assert call.returncode == 0, err
        before, _, after = out.strip().rpartition(": max_parallel ")[2].partition(" -> ")
        assert int(after) == value  # its own request's outcome, not another's
        changes[int(before)] = value
    cap = 5  # the changes, each from the cap the one before left, one chain through them all
    for _ in values:
        cap = changes.pop(cap)
    assert changes == {}
    assert status(tmp_path, env)["max_parallel"] == {"original": 20, "current": cap}
    release(tmp_path, "a")
    assert proc.wait(timeout=30) == 0


def test_a_limit_outlives_a_killed_run_s_resume_and_status_says_so(
    tmp_path: Path, env: dict[str, str], started: list[subprocess.Popen[bytes]]
) -> None:
    items = ["a", "b", "c"]
    plan = gated_plan(tmp_path, items, "automation_profile: {max_parallel: 3}\n")
    proc, stream = start(tmp_path, env, started, plan)
    wait_until(lambda: len(running(stream)) == 3, "a, b and c to start")
    changed = subplans("limit", "latest", "1", cwd=tmp_path, env=env)
    assert changed.returncode == 0, changed.stderr
    proc.kill()
    proc.wait()
    resumed_stream = tmp_path / "resumed.jsonl"
    resume = [sys.executable, "-m", "subplans", "resume", "latest", "--rerun-unknown"]
    with (tmp_path / "resumed.txt").open("wb") as out:
        resumed = subprocess.Popen(
            [*resume, "--events-jsonl", str(resumed_stream)],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    started.append(resumed)
    wait_until(lambda: len(running(resumed_stream)) == 1, "one subplan to start again")
    assert status(tmp_path, env)["max_parallel"] == {"original": 3, "current": 1}
    text = subplans("status", cwd=tmp_path, env=env).stdout
    assert "  limits       max_parallel 1 (started with 3)\n" in text
    [first] = running(resumed_stream)
    release(tmp_path, first.removeprefix("work/"))
    wait_until(lambda: len(running(resumed_stream)) == 2, "the next one, alone")
    more = subplans("limit", "latest", "3", cwd=tmp_path, env=env)
    assert more.stdout.strip().endswith(": max_parallel 1 -> 3")  # the resumed run listens
    wait_until(lambda: len(running(resumed_stream)) == 3, "the last one")
    for item in {"work/a", "work/b", "work/c"} - {first}:
        release(tmp_path, item.removeprefix("work/"))
    assert resumed.wait(timeout=30) == 0
    assert (
        "limit: max_parallel 1, as `subplans limit` set it\n"
        in (tmp_path / "resumed.txt").read_text()
    )


def test_a_pool_is_not_lowered_below_what_a_later_step_uses_and_the_run_ends_cleanly(
    tmp_path: Path, env: dict[str, str], started: list[subprocess.Popen[bytes]]
) -> None:
    """Review of #14, finding 1: lowering pool gpu to 2 while a later step's subplan uses 3
    of it was accepted, and that step then crashed the run with a traceback (again on every
    resume). Now it is refused while such a subplan has not ended, and allowed after."""
    for item in ("a", "b"):
        os.mkfifo(tmp_path / f"{item}.fifo")
    plan = (
        "name: pooled\npools: {gpu: 3}\nsteps:\n"
        "  - {name: wait, run: 'cat a.fifo > /dev/null'}\n"
        "  - {name: big, uses: {gpu: 3}, run: 'true'}\n"
        "  - {name: tail, uses: [gpu], run: 'cat b.fifo > /dev/null'}\n"
    )
    proc, stream = start(tmp_path, env, started, plan)
    wait_until(lambda: running(stream) == ["wait"], "wait to start")
    refused = subplans("limit", "latest", "2", "--pool", "gpu", cwd=tmp_path, env=env)
    assert refused.returncode == 2
    [line] = refused.stderr.strip().splitlines()
    assert line.endswith(
        "refused pool gpu 2: cannot lower pool 'gpu' to 2: subplan 'big', not ended yet, "
        "uses 3 units of it"
    )
    release(tmp_path, "a")
    wait_until(lambda: running(stream)[-1:] == ["tail"], "tail to start, big having ended")
    lowered = subplans("limit", "latest", "2", "--pool", "gpu", cwd=tmp_path, env=env)
    assert lowered.returncode == 0, lowered.stderr
    assert lowered.stdout.strip().endswith(": pool gpu 3 -> 2")
    release(tmp_path, "b")
    assert proc.wait(timeout=30) == 0
    out = (tmp_path / "out.txt").read_text()
    assert "Traceback" not in out
    assert status(tmp_path, env)["status"] == "completed"


def test_a_resume_does_not_set_again_a_pool_a_step_still_to_run_needs_more_of(
    tmp_path: Path, env: dict[str, str], started: list[subprocess.Popen[bytes]]
) -> None:
    """Review of #14, finding 1: a pool lowered once the step using 3 of it had failed was
    set again by resume before that step ran again, which then crashed every resume. Now the
    resumed run says why it keeps the pool as the plan has it, and completes."""
    os.mkfifo(tmp_path / "b.fifo")
    (tmp_path / "flag").write_text("1")
    plan = (
        "name: pooled\npools: {gpu: 3}\nsteps:\n"
        "  - {name: big, uses: {gpu: 3}, run: 'exit $(cat flag)'}\n"
        "  - {name: tail, always: true, run: 'cat b.fifo > /dev/null'}\n"
    )
    proc, stream = start(tmp_path, env, started, plan)
    wait_until(lambda: running(stream)[-1:] == ["tail"], "tail to start, big having failed")
    lowered = subplans("limit", "latest", "2", "--pool", "gpu", cwd=tmp_path, env=env)
    assert lowered.returncode == 0, lowered.stderr
    release(tmp_path, "b")
    assert proc.wait(timeout=30) == 1
    (tmp_path / "flag").write_text("0")
    resumed = subprocess.run(
        [sys.executable, "-m", "subplans", "resume", "latest"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "Traceback" not in resumed.stdout + resumed.stderr
    assert (
        "limit: pool gpu 2 not set again: cannot lower pool 'gpu' to 2: subplan 'big', "
        "not ended yet, uses 3 units of it\n" in resumed.stdout + resumed.stderr
    )
    [pool] = status(tmp_path, env)["pools"]
    assert (pool["name"], pool["size"], pool["current"]) == ("gpu", 3, 3)  # as it ran
    assert "pool gpu 3 (started with 3)" in subplans("status", cwd=tmp_path, env=env).stdout


def test_a_step_s_cap_is_bounded_by_the_run_s_and_status_says_each_exactly(
    tmp_path: Path, env: dict[str, str], started: list[subprocess.Popen[bytes]]
) -> None:
    """Review of #14, finding 6: after ``limit RUN 2``, ``limit RUN 3 --step work`` let the
    step run 3 at once while status said 2; status said the step "started with 2" (it started
    with 6) and printed an unchanged max_parallel line when only a step had changed."""
    items = [f"i{n}" for n in range(9)]
    plan = gated_plan(tmp_path, items, "automation_profile: {max_parallel: 6}\n")
    proc, stream = start(tmp_path, env, started, plan)
    wait_until(lambda: len(running(stream)) == 6, "six to start")
    first = subplans("limit", "latest", "5", "--step", "work", cwd=tmp_path, env=env)
    assert first.stdout.strip().endswith(": step work 6 -> 5"), first.stderr
    text = subplans("status", cwd=tmp_path, env=env).stdout
    assert "  limits       step work 5 (started with 6)\n" in text
    assert "max_parallel" not in text  # nothing changed it
    assert subplans("limit", "latest", "2", cwd=tmp_path, env=env).returncode == 0
    stepped = subplans("limit", "latest", "3", "--step", "work", cwd=tmp_path, env=env)
    assert stepped.returncode == 0, stepped.stderr
    assert stepped.stdout.strip().endswith(
        ": step work 2 -> 3 (runs at most 2: the run's max_parallel bounds it)"
    )
    text = subplans("status", cwd=tmp_path, env=env).stdout
    assert (
        "  limits       max_parallel 2 (started with 6)\n"
        "               step work 2 (started with 6; set to 3, the run's max_parallel bounds it)\n"
    ) in text
    for item in items[:6]:
        release(tmp_path, item)
    wait_until(lambda: len(running(stream)) == 8, "two more to start")
    release(tmp_path, running(stream)[6].removeprefix("work/"))
    wait_until(lambda: len(running(stream)) == 9, "the last one")
    for item in running(stream)[7:]:
        release(tmp_path, item.removeprefix("work/"))
    assert proc.wait(timeout=30) == 0
    # From the run's change on, a subplan starts only while fewer than 2 run.
    now_running, lowered = 0, False
    for event in events(stream):
        if event["event"] == "limit_changed" and event["pool"] is None:
            lowered = lowered or event["limit"] == 2
        elif event["event"] == "subplan_process_started":
            assert not lowered or now_running < 2, event
            now_running += 1
        elif event["event"] == "subplan_state_changed" and event["previous"] == "running":
            now_running -= 1
    assert lowered
