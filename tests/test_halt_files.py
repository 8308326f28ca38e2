"""``halt`` in plan files and profiles, and ``--halt`` on the command line: GNU parallel's form
or a mapping, the usual precedence with provenance, precise errors, real runs whose summary and
``status`` say which threshold stopped them; the fast paths leave what they do not know to
pydantic and Typer."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from subplans.cli.run_args import plain_run_args
from subplans.engine.halting import HaltPolicy
from subplans.plans.plain_plans import plain_plan

from .conftest import command_env
from .plans_helpers import write


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return command_env(SUBPLANS_CONFIG=str(tmp_path / "no-config.yaml"))


def subplans(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "subplans", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


#: One at a time, in order: each exits with its item's last character (b1 and c1 fail).
CHECKS = """\
name: checks
automation_profile: {{max_parallel: 1{profile}}}
steps:
  - name: checks
{step}    for_each: [a0, b1, c1, d0, e0]
    subplan: {{run: 'exit "${{SUBPLANS_ITEM#?}}"'}}
"""


def checks(tmp_path: Path, *, profile: str = "", step: str = "") -> None:
    write(tmp_path, "plan.yaml", CHECKS.format(profile=profile, step=step))


def test_a_plan_s_halt_stops_starting_at_its_threshold_and_says_so(
    tmp_path: Path, env: dict[str, str]
) -> None:
    checks(tmp_path, profile=', halt: "soon,fail=2"')
    ran = subplans("run", "plan.yaml", "--quiet", cwd=tmp_path, env=env)
    assert ran.returncode == 1, ran.stderr
    assert "  subplans  5 total, 1 completed, 2 failed, 2 cancelled\n" in ran.stdout
    halted = "step checks: its fail threshold was reached (halt soon,fail=2)"
    assert f"  halted    {halted}\n" in ran.stdout
    shown = subplans("status", cwd=tmp_path, env=env)
    assert f"  halted       {halted}\n" in shown.stdout
    found = json.loads(subplans("status", "--json", cwd=tmp_path, env=env).stdout)
    assert [(h["name"], h["threshold"], h["policy"]) for h in found["halted"]] == [
        ("checks", "fail", "soon,fail=2")
    ]


def test_a_step_s_mapping_form_and_a_success_threshold(tmp_path: Path, env: dict[str, str]) -> None:
    checks(tmp_path, step="    halt: {when: soon, success: 1}\n")
    ran = subplans("run", "plan.yaml", "--quiet", cwd=tmp_path, env=env)
    # The first subplan completed: what the step needed. The rest never started.
    assert "step checks: its success threshold was reached (halt soon,success=1)" in ran.stdout
    assert "4 cancelled" in ran.stdout


def test_the_command_s_halt_wins_over_the_plan_s_and_says_where_it_comes_from(
    tmp_path: Path, env: dict[str, str]
) -> None:
    checks(tmp_path, profile=', halt: "soon,fail=2"')
    dry = subplans("run", "plan.yaml", "--dry-run", "--halt", "now,fail=3", cwd=tmp_path, env=env)
    assert dry.returncode == 0, dry.stderr
    assert "  halt          now,fail=3  plan (--halt)\n" in dry.stdout
    plain = subplans("run", "plan.yaml", "--dry-run", cwd=tmp_path, env=env)
    assert "  halt          soon,fail=2  plan (plan.yaml: automation_profile.halt)" in plain.stdout
    resolved = subplans(
        "profile", "resolve", "plan.yaml", "--halt", "soon,fail=10%", cwd=tmp_path, env=env
    )
    assert "  halt          soon,fail=10%" in resolved.stdout
    assert "plan (--halt)" in resolved.stdout
    ran = subplans("run", "plan.yaml", "--quiet", "--halt", "soon,fail=1", cwd=tmp_path, env=env)
    assert "(halt soon,fail=1)" in ran.stdout
    assert "  subplans  5 total, 1 completed, 1 failed, 3 cancelled\n" in ran.stdout


def test_a_halt_in_a_config_profile_resolves_with_its_provenance(
    tmp_path: Path, env: dict[str, str]
) -> None:
    write(tmp_path, "no-config.yaml", "profiles:\n  patient: {halt: 'soon,fail=5%'}\n")
    checks(tmp_path)
    write(
        tmp_path,
        "plan.yaml",
        (tmp_path / "plan.yaml").read_text().replace("{max_parallel: 1}", "{profile: patient}"),
    )
    resolved = subplans("profile", "resolve", "plan.yaml", cwd=tmp_path, env=env)
    assert resolved.returncode == 0, resolved.stderr
    assert "soon,fail=5%" in resolved.stdout
    assert "automation_profile.profile = 'patient'" in resolved.stdout


@pytest.mark.parametrize(
    ("halt", "message"),
    [
        (
            '"soon,fail=120%"',
            "halt fail must be a count >= 1 or a percentage in (0, 100], got '120%'",
        ),
        ('"later,fail=1"', "halt when must be 'now' or 'soon', got 'later'"),
        ("{when: soon}", "halt needs a fail or a success threshold, got neither"),
        (
            "{when: soon, fail: 0}",
            "halt fail must be a count >= 1 or a percentage in (0, 100], got 0",
        ),
    ],
)
def test_an_invalid_halt_is_one_line_at_its_place(
    tmp_path: Path, env: dict[str, str], halt: str, message: str
) -> None:
    checks(tmp_path, profile=f", halt: {halt}")
    ran = subplans("run", "plan.yaml", cwd=tmp_path, env=env)
    assert ran.returncode == 2
    assert ran.stderr.startswith("error: plan.yaml:2:")
    assert f"automation_profile.halt: {message}" in ran.stderr
    assert len(ran.stderr.splitlines()) == 1


def test_an_invalid_halt_option_is_exit_2(tmp_path: Path, env: dict[str, str]) -> None:
    checks(tmp_path)
    ran = subplans("run", "plan.yaml", "--halt", "soon,fail=0", cwd=tmp_path, env=env)
    assert ran.returncode == 2
    assert ran.stderr == (
        "error: --halt fail must be a count >= 1 or a percentage in (0, 100], got '0'\n"
    )


def test_the_plain_command_line_reads_halt_and_the_plain_plan_leaves_it_to_pydantic() -> None:
    assert plain_run_args(["run", "p.yaml", "--halt", "soon,fail=3%"]) == {
        "plan": Path("p.yaml"),
        "halt": "soon,fail=3%",
    }
    step = {"name": "s", "run": "true"}
    assert plain_plan({"name": "p", "steps": [{**step, "halt": "soon,fail=1"}]}) is None
    assert plain_plan({"name": "p", "steps": [{**step, "max_per_second": 2}]}) is None
    assert plain_plan({"name": "p", "steps": [step]}) is not None


def test_a_recorded_halt_option_is_given_again_on_resume(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from subplans.plans.loader import Overrides, load_plan
    from subplans.store.resume import recorded_overrides, run_manifest

    checks(tmp_path)
    overrides = Overrides(halt="soon,fail=3%")
    manifest = run_manifest(load_plan(tmp_path / "plan.yaml", overrides=overrides), overrides)
    assert manifest.profile["overrides"] == {"halt": "soon,fail=3%"}
    again = recorded_overrides(SimpleNamespace(profile=manifest.profile))  # type: ignore[arg-type]
    assert again.halt == HaltPolicy("soon", fail="3%")


def test_a_terminal_s_summary_says_which_threshold_stopped_a_step(
    tmp_path: Path, env: dict[str, str]
) -> None:
    checks(tmp_path, profile=', halt: "soon,fail=2"')
    terminal = {**env, "TTY_COMPATIBLE": "1", "TTY_INTERACTIVE": "1", "COLUMNS": "120"}
    ran = subplans("run", "plan.yaml", "--quiet", cwd=tmp_path, env=terminal)
    assert ran.returncode == 1, ran.stderr
    assert "halted    \x1b[0m\x1b[33mstep checks: its fail threshold was reached" in ran.stdout


def test_halt_and_uses_as_files_write_them_checked_in_process(tmp_path: Path) -> None:
    from subplans.plans.loader import GlobalConfig, load_plan
    from subplans.plans.profiles import ProfileRegistry
    from subplans.plans.scheduling import check_uses, halt_policy
    from subplans.plans.yamlfile import ProblemsError

    assert halt_policy("soon,fail=3%") == HaltPolicy("soon", fail="3%")
    assert halt_policy(HaltPolicy("now", fail=2)) == HaltPolicy("now", fail=2)
    assert check_uses(["api", "db"]) == {"api": 1, "db": 1}
    with pytest.raises(ValueError, match=r"^pool 'api' is listed twice; write \{api: 2\}"):
        check_uses(["api", "api"])
    path = write(
        tmp_path,
        "plan.yaml",
        "name: p\npools: {api: 1}\nautomation_profile: {halt: 'now,success=50%'}\n"
        "steps:\n  - {name: s, run: 'true', uses: [api, api], halt: [now]}\n"
        "  - {name: t, run: 'true', uses: api}\n",
    )
    config = GlobalConfig(Path("/nonexistent/config.yaml"), False, ProfileRegistry(), None)
    with pytest.raises(ProblemsError) as caught:
        load_plan(path, config=config)
    text = str(caught.value)
    assert "steps[0].uses: pool 'api' is listed twice" in text
    assert (
        "steps[0].halt: must be GNU parallel's form ('soon,fail=3%') or a mapping "
        "{when, fail, success}, got ['now'] (list)"
    ) in text
    assert (
        "steps[1].uses: must be pool units ({api: 1}) or a list of pool names ([api]), "
        "got 'api' (str)"
    ) in text
    path.write_text(
        "name: p\npools: {api: 1}\nautomation_profile: {halt: 'now,success=50%'}\nsteps:\n"
        "  - {name: t, run: 'true', uses: {api: 2}}\n  - {name: u, run: 'true', uses: [gpu]}\n"
    )
    with pytest.raises(ProblemsError) as caught:
        load_plan(path, config=config)
    text = str(caught.value)
    assert "steps[0].uses: uses 2 units of pool 'api', which has 1" in text
    assert "steps[1].uses: unknown pool 'gpu'; the run's pools: api" in text


def test_a_subplan_that_failed_by_itself_fails_a_step_its_success_threshold_halted(
    tmp_path: Path, env: dict[str, str]
) -> None:
    # Regression: "b1" failed, then "a0" reached success=1 and the run exited 0. The three
    # the halt cancelled are no failure; "b1" is, as under continue-on-error.
    write(
        tmp_path,
        "plan.yaml",
        CHECKS.format(profile=', halt: "soon,success=1"', step="").replace(
            "[a0, b1, c1, d0, e0]", "[b1, a0, c1, d0, e0]"
        ),
    )
    ran = subplans("run", "plan.yaml", cwd=tmp_path, env=env)
    assert ran.returncode == 1, ran.stderr
    message = (
        "1 of 5 subplans failed, 3 cancelled; the success threshold was reached "
        "(halt soon,success=1)"
    )
    assert f"failed     step checks  {message}\n" in ran.stdout
    shown = subplans("status", cwd=tmp_path, env=env)
    assert shown.stdout.startswith(f"run {_run_id(tmp_path)}  failed\n")
    assert "  subplans     5 total: 1 completed, 1 failed, 3 cancelled\n" in shown.stdout


def test_a_success_threshold_that_cancelled_the_rest_exits_0(
    tmp_path: Path, env: dict[str, str]
) -> None:
    checks(tmp_path, step="    halt: {when: soon, success: 1}\n")
    ran = subplans("run", "plan.yaml", "--quiet", cwd=tmp_path, env=env)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.startswith("plan checks completed in ")
    assert "  subplans  5 total, 1 completed, 0 failed, 4 cancelled\n" in ran.stdout


def test_a_threshold_its_only_subplan_reached_is_no_halt(
    tmp_path: Path, env: dict[str, str]
) -> None:
    # Regression: a step of one subplan was reported halted although nothing was stopped.
    write(
        tmp_path,
        "plan.yaml",
        "name: one\nautomation_profile: {halt: 'now,success=1'}\n"
        "steps:\n  - {name: only, run: 'true'}\n",
    )
    ran = subplans(
        "run", "plan.yaml", "--quiet", "--events-jsonl", "events.jsonl", cwd=tmp_path, env=env
    )
    assert ran.returncode == 0, ran.stderr
    assert "halted" not in ran.stdout
    lines = (tmp_path / "events.jsonl").read_text().splitlines()
    kinds = {json.loads(line)["event"] for line in lines}
    assert "dispatch_finished" in kinds  # the events were written, none of a halt
    assert "dispatch_halted" not in kinds
    assert "halted" not in subplans("status", cwd=tmp_path, env=env).stdout
    found = json.loads(subplans("status", "--json", cwd=tmp_path, env=env).stdout)
    assert found["halted"] == []


def test_a_halted_step_s_error_counts_the_cancelled_apart(
    tmp_path: Path, env: dict[str, str]
) -> None:
    # Regression: the step said "4 of 5 subplans failed" when 3 of them never started.
    checks(tmp_path, profile=', halt: "soon,fail=1"')
    ran = subplans("run", "plan.yaml", cwd=tmp_path, env=env)
    assert ran.returncode == 1, ran.stderr
    message = (
        "1 of 5 subplans failed, 3 cancelled; the fail threshold was reached (halt soon,fail=1)"
    )
    assert f"failed     step checks  {message}\n" in ran.stdout


def _run_id(folder: Path) -> str:
    (run,) = (folder / ".subplans" / "runs").iterdir()
    return run.name


_COUNT_OR_SHARE = "must be a count >= 1 or a percentage in (0, 100], got"


@pytest.mark.parametrize(
    ("halt", "message"),
    [
        ("{when: soon, fail: true}", f"halt fail {_COUNT_OR_SHARE} True"),
        ("{when: soon, fail: 1.0}", f"halt fail {_COUNT_OR_SHARE} 1.0"),
        ("{when: soon, fail: 2.5}", f"halt fail {_COUNT_OR_SHARE} 2.5"),
        ("{when: soon, fail: [1]}", f"halt fail {_COUNT_OR_SHARE} [1]"),
        ("{when: now, success: '\u0663'}", f"halt success {_COUNT_OR_SHARE} '\u0663'"),
        ('"soon,fail=\u0663"', f"halt fail {_COUNT_OR_SHARE} '\u0663'"),
    ],
)
def test_a_threshold_python_refuses_is_refused_in_files_with_the_same_one_line(
    tmp_path: Path, env: dict[str, str], halt: str, message: str
) -> None:
    """Review of #14, finding 4: files read ``fail: true`` and ``fail: 1.0`` as 1, gave two
    pydantic union lines for 2.5 or [1], and took an Arabic-Indic digit as a count."""
    checks(tmp_path, profile=f", halt: {halt}")
    ran = subplans("run", "plan.yaml", cwd=tmp_path, env=env)
    assert ran.returncode == 2
    [line] = ran.stderr.splitlines()
    assert line.startswith("error: plan.yaml:2:")
    assert line.endswith(f"automation_profile.halt: {message}")


@pytest.mark.parametrize("value", [True, 1.0, 2.5, [1], "\u0663", "\u0663%", "1\u0660%"])
def test_python_refuses_the_same_thresholds(value: object) -> None:
    with pytest.raises(ValueError, match=r"^halt fail must be a count >= 1 or a percentage"):
        HaltPolicy("soon", fail=value)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^--halt fail must be a count >= 1 or a percentage"):
        HaltPolicy.from_value({"when": "soon", "fail": value}, "--halt")


def test_an_arabic_indic_digit_in_the_halt_option_is_exit_2(
    tmp_path: Path, env: dict[str, str]
) -> None:
    checks(tmp_path)
    ran = subplans("run", "plan.yaml", "--halt", "soon,fail=\u0663", cwd=tmp_path, env=env)
    assert ran.returncode == 2
    assert ran.stderr == f"error: --halt fail {_COUNT_OR_SHARE} '\u0663'\n"


def test_status_forgets_a_halt_that_a_successful_resume_undid(
    tmp_path: Path, env: dict[str, str]
) -> None:
    """Review of #14, finding 3: after a resume ran the halted step again to completion,
    ``status`` still said it had halted, and ``--json`` listed the halt."""
    write(
        tmp_path,
        "plan.yaml",
        "name: p\nautomation_profile: {max_parallel: 1, halt: 'soon,fail=1'}\nsteps:\n"
        "  - name: s\n    for_each: [a, b]\n    subplan: {run: 'exit $(cat flag)'}\n",
    )
    (tmp_path / "flag").write_text("1")
    assert subplans("run", "plan.yaml", "--quiet", cwd=tmp_path, env=env).returncode == 1
    halted = subplans("status", cwd=tmp_path, env=env).stdout
    assert "  halted       step s: its fail threshold was reached (halt soon,fail=1)\n" in halted
    (tmp_path / "flag").write_text("0")
    resumed = subplans("resume", "latest", "--quiet", cwd=tmp_path, env=env)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    shown = subplans("status", cwd=tmp_path, env=env).stdout
    assert "halted" not in shown
    as_json = json.loads(subplans("status", "--json", cwd=tmp_path, env=env).stdout)
    assert (as_json["status"], as_json["halted"]) == ("completed", [])


def test_the_lines_say_cancelled_for_what_a_success_threshold_cancelled(
    tmp_path: Path, env: dict[str, str]
) -> None:
    """Review of #14, finding 9c: the per-change lines said ``failed`` of the subplans a
    success threshold cancelled, which are no failure (the run exits 0)."""
    write(
        tmp_path,
        "plan.yaml",
        "name: p\nautomation_profile: {max_parallel: 1, halt: 'soon,success=1'}\nsteps:\n"
        "  - name: s\n    for_each: [a, b]\n    subplan: {run: 'true'}\n",
    )
    ran = subplans("run", "plan.yaml", cwd=tmp_path, env=env)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    [line] = [line for line in ran.stdout.splitlines() if "s/b" in line]
    assert line.endswith(
        "  cancelled  s/b  (not started)  "
        "cancelled because the success threshold was reached (halt soon,success=1)"
    )
    quiet = subplans("run", "plan.yaml", "--no-progress", cwd=tmp_path, env=env)
    assert "s/b" not in quiet.stdout + quiet.stderr  # no failure to report


def test_a_failure_mode_set_closer_than_a_halt_decides(tmp_path: Path, env: dict[str, str]) -> None:
    """Review of #14, finding 7: a plan's ``halt`` overrode a step's own ``failure_mode:
    continue_on_error``, and ``run --failure-mode continue_on_error`` was ignored when the
    plan set ``halt``. They are one setting: the closer level wins; at one level, ``halt``."""
    checks(tmp_path, profile=', halt: "now,fail=1"', step="    failure_mode: continue_on_error\n")
    ran = subplans("run", "plan.yaml", "--quiet", cwd=tmp_path, env=env)
    assert ran.returncode == 1
    assert "  subplans  5 total, 3 completed, 2 failed\n" in ran.stdout  # none cancelled
    dry = subplans("run", "plan.yaml", "--dry-run", cwd=tmp_path, env=env)
    assert (
        "  halt          none               step (plan.yaml: steps[0].failure_mode, "
        "over plan (plan.yaml: automation_profile.halt))\n" in dry.stdout
    )
    checks(tmp_path, profile=', halt: "now,fail=1"')
    option = ("--failure-mode", "continue_on_error")
    ran = subplans("run", "plan.yaml", "--quiet", *option, cwd=tmp_path, env=env)
    assert "  subplans  5 total, 3 completed, 2 failed\n" in ran.stdout
    both = subplans(
        "run", "plan.yaml", "--quiet", *option, "--halt", "now,fail=1", cwd=tmp_path, env=env
    )
    assert "  subplans  5 total, 1 completed, 1 failed, 3 cancelled\n" in both.stdout
    checks(tmp_path, profile=", failure_mode: continue_on_error", step='    halt: "now,fail=1"\n')
    ran = subplans("run", "plan.yaml", "--quiet", cwd=tmp_path, env=env)
    assert "  subplans  5 total, 1 completed, 1 failed, 3 cancelled\n" in ran.stdout
