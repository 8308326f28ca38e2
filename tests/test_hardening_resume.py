"""Issue #8, point 8: work that must not run twice. A subplan or step marked ``idempotent:
false`` (also a profile field) that was running when its run was killed is not run again by
``resume`` unless the operator says so: ``--rerun-unknown`` runs it again, ``--skip-unknown``
records it completed with the reason stored. A refused resume changes nothing, not even the
processes the killed run left running; and a subplan whose processes still run is unfinished,
never recorded completed by ``--skip-unknown``.

The killed runs are real: ``subplans run`` in a process of its own, killed with SIGKILL while
its subplans run.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from subplans.cli.app import ExitCode
from subplans.plans.loader import GlobalConfig, load_plan
from subplans.plans.models import ProfileFields
from subplans.plans.profiles import ProfileRegistry
from subplans.plans.yamlfile import ProblemsError
from subplans.store import Leftover, PlanManifest, RunStore, StoreError, find_leftovers
from subplans.store.resume import SKIP_UNKNOWN_REASON, UnknownOutcomes, unknown_outcomes

from .conftest import wait_until
from .plans_helpers import write
from .store_support import gone_owner, invoke, load
from .test_cli_process import processes_of_run

# Every test runs the command isolated from the user's config and store.
pytestmark = pytest.mark.usefixtures("isolated")


# --- the key and the profile field --------------------------------------------------------------

LEVELS = """
    name: levels
    automation_profile: {idempotent: false}
    steps:
      - name: plain
        run: "true"
      - name: stepped
        idempotent: true
        subplans:
          - {name: x, run: "true"}
          - {name: y, run: "true", idempotent: false}
      - name: profiled
        automation_profile: {profile: careful, max_parallel: 2}
        for_each: [i]
        subplan: {run: "true"}
      - name: nested
        subplans:
          - {name: n, plan: {name: inner, steps: [{name: s, run: "true"}]}}
    """


def test_idempotent_is_a_key_of_subplans_and_steps_and_a_profile_field(tmp_path: Path) -> None:
    careful = ProfileRegistry({"careful": ProfileFields(idempotent=True)}, tmp_path / "c.yaml")
    config = GlobalConfig(tmp_path / "c.yaml", True, careful, None)
    plan = load_plan(write(tmp_path, "plan.yaml", LEVELS), config=config)

    flags = {unit.id: unit.idempotent for unit in plan.walk_units()}
    assert flags == {
        "plain": False,  # the plan's profile
        "stepped/x": True,  # the step's key wins over the plan's profile
        "stepped/y": False,  # the subplan's key wins over the step's
        "profiled/i": True,  # the step's profile
        "nested/n": False,  # a nested plan is a subplan of its step...
        "nested/n/s": True,  # ...and its own subplans resolve their own profile
    }
    steps = {step.id: step.profile for step in plan.steps}
    assert str(steps["stepped"].sources["idempotent"]).endswith("steps[1].idempotent)")
    assert str(steps["plain"].sources["idempotent"]).endswith("automation_profile.idempotent)")
    assert steps["profiled"].to_dict()["values"]["idempotent"] is True
    # Policy, like timeouts: marking work idempotent or not leaves the plan's hash alone.
    unmarked_file = write(
        tmp_path, "u.yaml", LEVELS.replace("idempotent: false", "idempotent: true")
    )
    unmarked = load_plan(unmarked_file, config=config)
    assert PlanManifest.from_plan(unmarked).hash == PlanManifest.from_plan(plan).hash


def test_idempotent_must_be_true_or_false(tmp_path: Path) -> None:
    text = """
        name: bad
        steps:
          - name: s
            idempotent: "no"
            run: "true"
        """
    with pytest.raises(ProblemsError) as caught:
        load(tmp_path, text)
    assert [str(problem) for problem in caught.value.problems] == [
        f"{tmp_path / 'plan.yaml'}:4:17: steps[0].idempotent: must be true or false, got 'no' (str)"
    ]


def test_profile_show_prints_idempotent(tmp_path: Path) -> None:
    write(tmp_path, "config/config.yaml", "profiles:\n  once: {idempotent: false}\n")

    result = invoke("profile", "show", "once")

    assert result.exit_code == ExitCode.OK, result.output
    assert re.match(r"  idempotent    false +profile = 'once' ", result.stdout.splitlines()[-1])


# --- what resume knows about the subplans that were running --------------------------------------

NESTED = """
    name: nested
    steps:
      - name: work
        subplans:
          - {name: a, run: "true"}
          - {name: b, run: "true", idempotent: false}
          - name: c
            idempotent: false
            plan:
              name: inner
              steps:
                - {name: s, run: "true"}
                - {name: t, run: "true"}
          - {name: d, run: "true"}
    """


def interrupted(tmp_path: Path, text: str, running: tuple[str, ...]) -> tuple[RunStore, Any]:
    """A store with run r1 of ``text`` interrupted while ``running`` ran."""
    node = load(tmp_path, text)
    store = RunStore.open(tmp_path / ".subplans" / "state.db")
    store.start_run("r1", PlanManifest.from_plan(node), owner=gone_owner())
    store._db.executemany(
        "UPDATE subplans SET state = 'running', started = 1.0 WHERE subplan_id = ?",
        [(subplan_id,) for subplan_id in running],
    )
    store._db.execute("UPDATE steps SET state = 'running' WHERE step_id = 'work/c/s'")
    return store, node


def test_unknown_outcomes_are_the_running_subplans_and_a_skip_covers_nested_work(
    tmp_path: Path,
) -> None:
    store, node = interrupted(tmp_path, NESTED, ("work/a", "work/b", "work/c", "work/c/s"))
    with store:
        unknown = unknown_outcomes(store, "r1", node)

        assert unknown == UnknownOutcomes(
            "r1",
            ("work/a", "work/b", "work/c", "work/c/s"),
            ("work/b", "work/c"),
            ("work/b", "work/c", "work/c/s", "work/c/t"),
        )
        listing = (
            "the outcome of 4 subplans of run r1 is unknown (running when it stopped): work/a, "
            "work/b (idempotent: false), work/c (idempotent: false), work/c/s"
        )
        assert unknown.listing == listing
        assert unknown.describe() == f"{listing}; they run again"
        assert unknown.describe(skip=True) == (
            f"{listing}; work/b, work/c recorded completed, as you assert (--skip-unknown); "
            "1 subplan run again"
        )
        assert unknown.refusal() == (
            "2 subplans of run r1 are marked idempotent: false and may have done their work "
            "before the run stopped: work/b, work/c; resume with --rerun-unknown to run them "
            "again, or --skip-unknown to record them completed"
        )
        assert unknown.skip_refusal() is None

        # Processes the dead owner left: their subplans are still running, not unknown.
        leftovers = [
            Leftover("work/a", 13, 12, "sh"),
            Leftover("work/a", 12, 12, "sh"),
            Leftover("work/b", 20, 20, "sh"),
            Leftover("work/c/t", 31, 31, "sh"),  # inside the nested plan work/c
            Leftover("work/cc", 40, 40, "sh"),  # not inside work/c
            Leftover("?", 50, 50, "sh"),
        ]
        alive = unknown_outcomes(store, "r1", node, leftovers)

        assert alive.still_running == {"work/a": (12, 13), "work/b": (20,), "work/c": (31,)}
        assert alive.listing == (
            "the outcome of 4 subplans of run r1 is unknown (running when it stopped): work/a "
            "(still running: processes 12, 13), work/b (idempotent: false; still running: "
            "process 20), work/c (idempotent: false; still running: process 31), work/c/s"
        )
        # Said once they are stopped: then nothing of them runs.
        assert alive.describe() == f"{listing}; they run again"
        assert alive.skip_refusal() == (
            "subplans work/b (process 20), work/c (process 31) of run r1 are still running, so "
            "they cannot be recorded completed: wait for them to end, or stop them with "
            "`subplans cancel r1`, then resume"
        )

        # An id that is not in the run (or is completed already) is left alone.
        asserted = (*unknown.assumed, "nope")
        run = store.resume_run("r1", assume_completed=asserted, reason="asserted")

        assert run.counts == {
            "pending": 2,
            "running": 0,
            "completed": 4,
            "failed": 0,
            "interrupted": 0,
        }
        assert store.completed_subplans("r1") == set(unknown.assumed)
        assert {step.step_id: step.state for step in store.steps("r1")} == {
            "work": "pending",
            "work/c/s": "completed",
            "work/c/t": "completed",
        }
        skipped = [e for e in store.events("r1") if e.kind == "subplan_skipped"]
        assert [(e.seq, e.subplan_id, e.step_id) for e in skipped] == [
            (1, "work/b", "work"),
            (2, "work/c", "work"),
            (3, "work/c/s", "work/c/s"),
            (4, "work/c/t", "work/c/t"),
        ]
        assert {e.payload["reason"] for e in skipped} == {"asserted"}


def test_one_unknown_subplan_is_named_in_the_singular(tmp_path: Path) -> None:
    store, node = interrupted(tmp_path, NESTED, ("work/b", "work/d", "gone"))
    with store:
        unknown = unknown_outcomes(store, "r1", node)
    assert unknown.subplans == ("work/b", "work/d")  # one no longer in the plan is dropped
    assert unknown.refusal() == (
        "1 subplan of run r1 is marked idempotent: false and may have done its work before "
        "the run stopped: work/b; resume with --rerun-unknown to run it again, or "
        "--skip-unknown to record it completed"
    )
    assert unknown.describe(skip=True).endswith(
        "; work/b recorded completed, as you assert (--skip-unknown); 1 subplan run again"
    )
    only = UnknownOutcomes("r1", ("work/b",), ("work/b",), ("work/b",))
    assert only.describe(skip=True).endswith(
        "; work/b recorded completed, as you assert (--skip-unknown)"
    )
    # Only what --skip-unknown would record completed keeps it from going ahead.
    again = UnknownOutcomes("r1", ("work/b", "work/d"), ("work/b",), ("work/b",), {"work/d": (7,)})
    assert again.skip_refusal() is None
    again = dataclasses.replace(again, still_running={"work/b": (7,)})
    assert again.skip_refusal() == (
        "subplan work/b (process 7) of run r1 is still running, so it cannot be recorded "
        "completed: wait for it to end, or stop it with `subplans cancel r1`, then resume"
    )


# --- resume of a run killed with SIGKILL -----------------------------------------------------------

# "once" must not run twice; "again" may. Both say they started, then wait while "hold" exists.
CAREFUL = """
    name: careful
    automation_profile: {cancel_grace: 1}
    steps:
      - name: port
        subplans:
          - {name: done, run: "echo done >> ran.txt"}
          - name: again
            run: "echo again >> ran.txt; while [ -e hold ]; do sleep 0.01; done"
          - name: once
            idempotent: false
            run: "echo once >> ran.txt; while [ -e hold ]; do sleep 0.01; done"
    """


def killed_while_running(tmp_path: Path, text: str, running: set[str]) -> str:
    """Runs ``text`` with ``subplans run`` and kills it with SIGKILL once ``running`` run (and
    are recorded so) and everything else completed; returns the run id."""
    write(tmp_path, "plan.yaml", text)
    (tmp_path / "hold").touch()
    env = {k: v for k, v in os.environ.items() if k != "FORCE_COLOR"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "subplans", "run", "plan.yaml", "-q"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        path = tmp_path / ".subplans" / "state.db"
        wait_until(lambda: latest_run(path) is not None, timeout=20)
        with RunStore.open(path, readonly=True) as store:
            run_id = store.get_run().id

            def settled() -> bool:
                groups = {group.subplan_id for group in store.process_groups(run_id)}
                others = {s.subplan_id for s in store.subplans(run_id)} - running
                return groups == running and store.completed_subplans(run_id) == others

            wait_until(settled, timeout=20)
    finally:
        proc.kill()
        proc.wait()
    return run_id


def latest_run(path: Path) -> str | None:
    """The latest run's id, once the run has created the store and recorded its start."""
    try:
        with RunStore.open(path, readonly=True) as store:
            return store.get_run().id
    except StoreError:
        return None


def ran(tmp_path: Path) -> collections.Counter[str]:
    return collections.Counter((tmp_path / "ran.txt").read_text().split())


def released(tmp_path: Path, run_id: str) -> None:
    """Lets the subplans that ``run_id`` left running (waiting while "hold" exists) end, and
    waits until they have."""
    (tmp_path / "hold").unlink()
    wait_until(lambda: processes_of_run(run_id) == [], timeout=20)


def test_resume_refuses_to_run_again_what_must_not_run_twice_unless_told(
    tmp_path: Path,
) -> None:
    run_id = killed_while_running(tmp_path, CAREFUL, {"port/again", "port/once"})
    released(tmp_path, run_id)

    refused = invoke("resume", run_id, "--events-jsonl", "events.jsonl")
    both = invoke("resume", run_id, "--rerun-unknown", "--skip-unknown")

    assert refused.exit_code == ExitCode.INVALID
    assert refused.stderr == (
        f"the outcome of 2 subplans of run {run_id} is unknown (running when it stopped): "
        "port/again, port/once (idempotent: false)\n"
        f"error: 1 subplan of run {run_id} is marked idempotent: false and may have done its "
        "work before the run stopped: port/once; resume with --rerun-unknown to run it again, "
        "or --skip-unknown to record it completed\n"
    )
    assert not (tmp_path / "events.jsonl").exists()
    assert both.exit_code == ExitCode.INVALID
    assert (
        both.stderr == "error: --rerun-unknown and --skip-unknown exclude each other: choose one\n"
    )
    assert ran(tmp_path) == {"done": 1, "again": 1, "once": 1}

    rerun = invoke("resume", run_id, "--rerun-unknown", "--no-progress")

    assert rerun.exit_code == ExitCode.OK, rerun.output
    assert rerun.stdout.startswith(
        f"the outcome of 2 subplans of run {run_id} is unknown (running when it stopped): "
        "port/again, port/once (idempotent: false); they run again\n"
    )
    assert ran(tmp_path) == {"done": 1, "again": 2, "once": 2}


def test_resume_with_skip_unknown_records_them_completed_with_the_reason(tmp_path: Path) -> None:
    run_id = killed_while_running(tmp_path, CAREFUL, {"port/again", "port/once"})
    released(tmp_path, run_id)

    result = invoke("resume", run_id, "--skip-unknown", "--no-progress")

    assert result.exit_code == ExitCode.OK, result.output
    assert re.search(
        r"; port/once recorded completed, as you assert \(--skip-unknown\); 1 subplan run again$",
        result.stdout,
        re.M,
    )
    assert "  subplans  3 total, 1 completed, 0 failed, 2 already completed\n" in result.stdout
    assert ran(tmp_path) == {"done": 1, "again": 2, "once": 1}
    with RunStore.open(tmp_path / ".subplans" / "state.db", readonly=True) as store:
        assert store.get_run(run_id).status == "completed"
        reasons = [
            (e.subplan_id, e.payload["reason"])
            for e in store.events(run_id)
            if e.kind == "subplan_skipped"
        ]
    assert reasons[0] == ("port/once", SKIP_UNKNOWN_REASON)


def test_resume_runs_idempotent_unknown_subplans_again_and_says_so(tmp_path: Path) -> None:
    text = CAREFUL.replace("idempotent: false", "idempotent: true")
    run_id = killed_while_running(tmp_path, text, {"port/again", "port/once"})
    released(tmp_path, run_id)

    result = invoke("resume", run_id, "-q")

    assert result.exit_code == ExitCode.OK, result.output
    assert result.stdout.startswith(
        f"the outcome of 2 subplans of run {run_id} is unknown (running when it stopped): "
        "port/again, port/once; they run again\n"
    )
    assert ran(tmp_path) == {"done": 1, "again": 2, "once": 2}


# --- resume while the killed run's processes still run ---------------------------------------------

# "once" waits on the FIFO "gate" while "hold" exists: one process (sh), no children, until
# something is written to the gate; it then finishes its work.
GATED = """
    name: gated
    automation_profile: {cancel_grace: 1}
    steps:
      - name: port
        subplans:
          - {name: done, run: "echo done >> ran.txt"}
          - name: once
            idempotent: false
            run: "echo once >> ran.txt; if [ -e hold ]; then read line < gate; fi; echo finished >> ran.txt"
    """


@pytest.fixture
def gate(tmp_path: Path) -> Iterator[Callable[[], None]]:
    """The FIFO "gate"; calling the fixture's value lets whatever waits on it go on (so does
    the end of the test)."""
    fifo = tmp_path / "gate"
    os.mkfifo(fifo)

    def release() -> None:
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)  # ENXIO: nobody waits on it
        try:
            os.write(fd, b"go\n")
        finally:
            os.close(fd)

    yield release
    with contextlib.suppress(OSError):
        release()


def leftover_of(tmp_path: Path, run_id: str) -> Leftover:
    """The one process that the killed ``run_id`` left running."""
    with RunStore.open(tmp_path / ".subplans" / "state.db", readonly=True) as store:
        (leftover,) = find_leftovers(store, run_id)
    assert leftover.subplan_id == "port/once"
    return leftover


def untouched(tmp_path: Path, run_id: str, leftover: Leftover) -> None:
    """Nothing of ``run_id`` changed: interrupted, never resumed, its leftover still waits."""
    assert processes_of_run(run_id) == [leftover.pid]
    with RunStore.open(tmp_path / ".subplans" / "state.db", readonly=True) as store:
        run = store.get_run(run_id)
        assert (run.status, run.resumes) == ("interrupted", 0)
        assert store.completed_subplans(run_id) == {"port/done"}
        assert [group.pgid for group in store.process_groups(run_id)] == [leftover.pgid]


def test_a_refused_resume_leaves_what_the_killed_run_left_running(
    tmp_path: Path, gate: Callable[[], None]
) -> None:
    # Was: resume stopped the leftovers first, then refused: refused, it had changed things.
    run_id = killed_while_running(tmp_path, GATED, {"port/once"})
    leftover = leftover_of(tmp_path, run_id)

    refused = invoke("resume", run_id, "--events-jsonl", "events.jsonl")
    write(tmp_path, "plan.yaml", f"{GATED.rstrip()}\n          - {{name: extra, run: 'true'}}\n")
    changed = invoke("resume", run_id, "--rerun-unknown")

    assert refused.exit_code == ExitCode.INVALID
    assert refused.stderr == (
        f"the outcome of 1 subplan of run {run_id} is unknown (running when it stopped): "
        f"port/once (idempotent: false; still running: process {leftover.pid})\n"
        f"error: 1 subplan of run {run_id} is marked idempotent: false and may have done its "
        "work before the run stopped: port/once; resume with --rerun-unknown to run it again, "
        "or --skip-unknown to record it completed\n"
    )
    assert not (tmp_path / "events.jsonl").exists()
    assert changed.exit_code == ExitCode.INVALID
    assert changed.stderr == (
        f"error: the plan's subplans changed since run {run_id}: 1 subplan added "
        "(port/extra); resume with --force to run the plan as it is now\n"
    )
    untouched(tmp_path, run_id, leftover)

    # Once it has ended on its own, its work done, it may be recorded completed.
    write(tmp_path, "plan.yaml", GATED)
    gate()
    wait_until(lambda: processes_of_run(run_id) == [], timeout=20)
    skipped = invoke("resume", run_id, "--skip-unknown", "--no-progress")

    assert skipped.exit_code == ExitCode.OK, skipped.output
    assert ran(tmp_path) == {"done": 1, "once": 1, "finished": 1}
    with RunStore.open(tmp_path / ".subplans" / "state.db", readonly=True) as store:
        assert store.get_run(run_id).status == "completed"


def test_skip_unknown_never_records_completed_a_subplan_that_still_runs(
    tmp_path: Path, gate: Callable[[], None]
) -> None:
    # Was: resume --skip-unknown stopped it (SIGTERM), then recorded it completed: its work
    # was never done, and the run said it was.
    run_id = killed_while_running(tmp_path, GATED, {"port/once"})
    leftover = leftover_of(tmp_path, run_id)

    refused = invoke("resume", run_id, "--skip-unknown", "--events-jsonl", "events.jsonl")

    assert refused.exit_code == ExitCode.INVALID
    assert refused.stderr == (
        f"error: subplan port/once (process {leftover.pid}) of run {run_id} is still running, "
        "so it cannot be recorded completed: wait for it to end, or stop it with "
        f"`subplans cancel {run_id}`, then resume\n"
    )
    assert not (tmp_path / "events.jsonl").exists()
    untouched(tmp_path, run_id, leftover)

    cancelled = invoke("cancel", run_id)

    assert cancelled.exit_code == ExitCode.OK, cancelled.output
    assert processes_of_run(run_id) == []

    skipped = invoke("resume", run_id, "--skip-unknown", "--no-progress")

    assert skipped.exit_code == ExitCode.OK, skipped.output
    assert skipped.stdout.startswith(
        f"the outcome of 1 subplan of run {run_id} is unknown (running when it stopped): "
        "port/once (idempotent: false); port/once recorded completed, as you assert "
        "(--skip-unknown)\n"
    )
    assert ran(tmp_path) == {"done": 1, "once": 1}  # stopped by cancel: as the operator chose
    with RunStore.open(tmp_path / ".subplans" / "state.db", readonly=True) as store:
        assert store.get_run(run_id).status == "completed"
        reasons = [
            (e.subplan_id, e.payload["reason"])
            for e in store.events(run_id)
            if e.kind == "subplan_skipped"
        ]
    assert reasons[0] == ("port/once", SKIP_UNKNOWN_REASON)


def test_rerun_unknown_stops_a_subplan_that_still_runs_then_runs_it_again(
    tmp_path: Path, gate: Callable[[], None]
) -> None:
    run_id = killed_while_running(tmp_path, GATED, {"port/once"})
    leftover = leftover_of(tmp_path, run_id)
    (tmp_path / "hold").unlink()  # run again, it passes the gate; the leftover still waits

    result = invoke("resume", run_id, "--rerun-unknown", "--no-progress")

    assert result.exit_code == ExitCode.OK, result.output
    assert result.stdout.startswith(
        f"stopped 1 process group that run {run_id} left running: port/once (process group "
        f"{leftover.pgid}, SIGTERM)\n"
        f"the outcome of 1 subplan of run {run_id} is unknown (running when it stopped): "
        "port/once (idempotent: false); they run again\n"
    )
    assert processes_of_run(run_id) == []
    assert ran(tmp_path) == {"done": 1, "once": 2, "finished": 1}
