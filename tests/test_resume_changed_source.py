"""Issue #11, point 3: a resume whose plan gives a run-time ``for_each`` step that had started
another source changes that step's subplans, as adding or removing a static one does: refused
without ``--force``, the new source read with it. A step that had not started reads its source
as it is now either way; editing only a run-time step's template says the plan's content
changed, as the same edit of a static step does.

The runs are real: ``subplans run`` and ``subplans resume`` over a real store, their subplans
real processes.
"""

from __future__ import annotations

import collections
from pathlib import Path

import pytest

from subplans.cli.app import ExitCode
from subplans.store import PlanManifest, RunStore
from subplans.store.resume import describe_changed_sources

from .plans_helpers import write
from .store_support import invoke, load

pytestmark = pytest.mark.usefixtures("isolated")

# "port" fans out over the lines of out/list.txt; each subplan notes its item in ran.txt.
PORT = """
    name: fan
    steps:
      - name: port
        for_each: {lines: out/list.txt}
        subplan: {run: "echo {item} >> ran.txt"}
    """


def ran(tmp_path: Path) -> collections.Counter[str]:
    return collections.Counter((tmp_path / "ran.txt").read_text().split())


def store_of(tmp_path: Path) -> RunStore:
    return RunStore.open(tmp_path / ".subplans" / "state.db", readonly=True)


def completed_run(tmp_path: Path, text: str = PORT) -> str:
    """The completed run of ``text`` over items a to d (and x, y in out/other.txt); its id."""
    write(tmp_path, "out/list.txt", "a\nb\nc\nd\n")
    write(tmp_path, "out/other.txt", "x\ny\n")
    write(tmp_path, "plan.yaml", text)
    result = invoke("run", "plan.yaml", "-q")
    assert result.exit_code == ExitCode.OK, result.output
    with store_of(tmp_path) as store:
        return store.run_ids()[0]


def subplan_ids(tmp_path: Path, run_id: str) -> list[str]:
    with store_of(tmp_path) as store:
        return sorted(info.subplan_id for info in store.subplans(run_id))


def test_resume_refuses_a_started_step_given_another_source_unless_forced(
    tmp_path: Path,
) -> None:
    run_id = completed_run(tmp_path)
    write(tmp_path, "plan.yaml", PORT.replace("out/list.txt", "out/other.txt"))

    refused = invoke("resume", "latest", "--events-jsonl", "refused.jsonl")

    assert refused.exit_code == ExitCode.INVALID
    assert refused.stderr == (
        f"error: the plan's subplans changed since run {run_id}: step port read its items from "
        "the lines of 'out/list.txt' and the plan now gives it the lines of 'out/other.txt'; "
        "resume with --force to read the new source\n"
    )
    assert not (tmp_path / "refused.jsonl").exists()  # refused before anything was opened
    assert ran(tmp_path) == {"a": 1, "b": 1, "c": 1, "d": 1}
    with store_of(tmp_path) as store:
        assert store.get_run(run_id).resumes == 0

    forced = invoke("resume", run_id, "--force")

    assert forced.exit_code == ExitCode.OK, forced.output
    assert forced.stdout.startswith(
        f"the plan's subplans changed since run {run_id}: step port read its items from the "
        "lines of 'out/list.txt' and the plan now gives it the lines of 'out/other.txt'; "
        "resuming anyway (--force), reading the new source\n"
    )
    assert "but not its subplans" not in forced.stdout
    assert ran(tmp_path) == {"a": 1, "b": 1, "c": 1, "d": 1, "x": 1, "y": 1}
    # Resumed again, the step keeps the source it now read: nothing changed, nothing runs.
    again = invoke("resume", run_id)
    assert again.exit_code == ExitCode.OK, again.output
    assert ran(tmp_path) == {"a": 1, "b": 1, "c": 1, "d": 1, "x": 1, "y": 1}


def test_the_refusal_names_every_step_given_another_source_and_any_subplans_changed(
    tmp_path: Path,
) -> None:
    two = PORT.rstrip() + (
        "\n"
        "      - name: check\n"
        "        for_each: {glob: 'out/*.txt'}\n"
        "        subplan: {name: '{stem}', run: 'echo check-{stem} >> ran.txt'}\n"
        "      - {name: report, run: 'echo report >> ran.txt'}\n"
    )
    run_id = completed_run(tmp_path, two)
    edited = (
        two.replace("out/list.txt", "out/other.txt")
        .replace("'out/*.txt'", "'out/o*.txt'")
        .replace("name: report", "name: summary")
    )
    write(tmp_path, "plan.yaml", edited)

    refused = invoke("resume", run_id)

    assert refused.exit_code == ExitCode.INVALID
    assert refused.stderr == (
        f"error: the plan's subplans changed since run {run_id}: 1 subplan added (summary) and "
        "1 subplan removed (report); resume with --force to run the plan as it is now\n"
        f"error: the plan's subplans changed since run {run_id}: step port read its items from "
        "the lines of 'out/list.txt' and the plan now gives it the lines of 'out/other.txt'; "
        "step check read its items from the glob 'out/*.txt' and the plan now gives it the "
        "glob 'out/o*.txt'; resume with --force to read the new sources\n"
    )
    assert sum(ran(tmp_path).values()) == 7  # a to d, check-list, check-other, report


def test_a_step_that_had_not_started_reads_its_new_source_without_force(tmp_path: Path) -> None:
    # "gate" fails until the file "fixed" exists, so "port" never started.
    gated = PORT.replace(
        "      - name: port", "      - {name: gate, run: 'test -e fixed'}\n      - name: port"
    )
    write(tmp_path, "out/list.txt", "a\n")
    write(tmp_path, "out/other.txt", "x\ny\n")
    write(tmp_path, "plan.yaml", gated)
    assert invoke("run", "plan.yaml", "-q").exit_code == ExitCode.FAILED
    write(tmp_path, "plan.yaml", gated.replace("out/list.txt", "out/other.txt"))
    (tmp_path / "fixed").touch()

    result = invoke("resume", "latest")

    assert result.exit_code == ExitCode.OK, result.output
    assert ran(tmp_path) == {"x": 1, "y": 1}


def test_editing_a_run_time_steps_template_says_the_content_changed(tmp_path: Path) -> None:
    run_id = completed_run(tmp_path)
    write(tmp_path, "plan.yaml", PORT.replace("echo {item}", "echo again-{item}"))

    result = invoke("resume", run_id)

    assert result.exit_code == ExitCode.OK, result.output
    assert result.stdout.startswith(
        f"the plan's content changed since run {run_id}, but not its subplans\n"
    )
    assert ran(tmp_path) == {"a": 1, "b": 1, "c": 1, "d": 1}  # all completed: none runs again


def test_an_unchanged_run_time_step_keeps_its_hash(tmp_path: Path) -> None:
    # A template whose item names the nested plan makes nothing of a sample item: the source
    # alone is hashed.
    write(tmp_path, "mods/one.yaml", "name: one\nsteps: [{name: s, run: 'true'}]\n")
    text = """
        name: nested
        steps:
          - name: each
            for_each: {glob: 'mods/*.yaml'}
            subplan: {plan: '{item}', name: '{stem}'}
          - name: port
            for_each: {lines: out/list.txt}
            subplan: {run: "echo {item}"}
        """
    first = PlanManifest.from_plan(load(tmp_path, text)).hash
    again = PlanManifest.from_plan(load(tmp_path, text)).hash
    edited = PlanManifest.from_plan(load(tmp_path, text.replace("echo {item}", "echo"))).hash

    assert first == again != edited


def test_the_forced_line_counts_the_sources() -> None:
    changed = [("a", "glob 'x'", "glob 'y'"), ("b", "command 'ls'", "command 'ls -a'")]

    line = describe_changed_sources("R", changed, force=True)

    assert line.endswith("; resuming anyway (--force), reading the new sources")
