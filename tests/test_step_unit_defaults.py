"""The unit keys written on a step of ``subplans`` or ``for_each`` (``timeout``, ``retries``,
``env``, ``cwd``, ``idempotent``) are its subplans' defaults.

Pins: they were validated and then silently ignored (only ``uses`` was handed down), so
``retries: 2`` on a ``for_each`` step ran each item once and ``subplans validate`` said ok.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from subplans.cli.app import ExitCode, app
from subplans.plans.loader import GlobalConfig, load_plan
from subplans.plans.plain_plans import plain_plan
from subplans.plans.profiles import ProfileRegistry
from subplans.plans.tree import PlanNode, UnitNode
from subplans.store.manifest import plan_hash

from .log_headers import attempts, unheaded
from .plans_helpers import units_now, write
from .test_plain_plans_differential import both_ways

runner = CliRunner()

pytestmark = pytest.mark.usefixtures("isolated")


def config(folder: Path) -> GlobalConfig:
    """No global config file: only the plan's own levels and the built-in profiles."""
    return GlobalConfig(folder / "none.yaml", False, ProfileRegistry(), None)


def loaded(folder: Path, text: str) -> PlanNode:
    return load_plan(write(folder, "plan.yaml", text), config=config(folder))


def run(*args: str) -> tuple[int, list[dict[str, Any]]]:
    """``subplans run plan.yaml ARGS``: its exit code and the events it wrote."""
    result = runner.invoke(app, ["run", "plan.yaml", "-q", "--events-jsonl", "e.jsonl", *args])
    events = Path("e.jsonl").read_text(encoding="utf-8").splitlines()
    return result.exit_code, [json.loads(line) for line in events]


def log(subplan_id: str) -> str:
    """The log of ``subplan_id`` in the only run of the test."""
    (path,) = Path(".subplans", "runs").glob(f"*/logs/{subplan_id.replace('/', '__')}.log")
    return path.read_text(encoding="utf-8")


def failures(events: list[dict[str, Any]]) -> dict[str, tuple[int, dict[str, Any]]]:
    """Each failed subplan's last attempt and error."""
    return {
        event["subplan_id"]: (event["attempt"], event["error"])
        for event in events
        if event["event"] == "subplan_state_changed" and event["state"] == "failed"
    }


def units(plan: PlanNode) -> dict[str, UnitNode]:
    return {unit.id: unit for unit in plan.walk_units()}


RETRIED_ITEMS = """
    name: p
    automation_profile: keep-going
    steps:
      - name: s
        for_each: ["a", "b"]
        retries: 2
        subplan:
          run: ["sh", "-c", "echo try {item}; exit 1"]
    """


def test_retries_on_a_for_each_step_retry_each_item(tmp_path: Path) -> None:
    write(tmp_path, "plan.yaml", RETRIED_ITEMS)

    code, events = run()

    assert code == ExitCode.FAILED
    assert {id_: attempt for id_, (attempt, _) in failures(events).items()} == {"s/a": 3, "s/b": 3}
    for item in "ab":
        text = log(f"s/{item}")
        assert attempts(text) == ["1", "2", "3"]
        assert unheaded(text, 3) == f"try {item}\n" * 3


RETRIED_SUBPLANS = """
    name: p
    automation_profile: keep-going
    steps:
      - name: s
        retries: 1
        subplans:
          - {name: taken, run: "echo taken; exit 1"}
          - {name: own, run: "echo own; exit 1", retries: 0}
          - {name: more, run: "echo more; exit 1", retries: 2}
    """


def test_a_subplans_steps_retries_are_each_subplans_unless_it_has_its_own(
    tmp_path: Path,
) -> None:
    write(tmp_path, "plan.yaml", RETRIED_SUBPLANS)

    code, events = run()

    assert code == ExitCode.FAILED
    found = {id_: attempt for id_, (attempt, _) in failures(events).items()}
    assert found == {"s/taken": 2, "s/own": 1, "s/more": 3}
    assert attempts(log("s/taken")) == ["1", "2"]
    assert attempts(log("s/own")) == ["1"]


TIMED_OUT = """
    name: p
    automation_profile: keep-going
    steps:
      - name: items
        timeout: 0.2
        for_each: [x]
        subplan: {run: "exec sleep 600"}
      - name: listed
        always: true
        timeout: 0.3
        subplans:
          - {name: taken, run: "exec sleep 600"}
          - {name: own, run: "exit 4", timeout: 600}
    """


def test_a_steps_timeout_stops_its_subplans_that_would_run_forever(tmp_path: Path) -> None:
    write(tmp_path, "plan.yaml", TIMED_OUT)

    code, events = run()

    assert code == ExitCode.FAILED
    found = failures(events)
    assert found["items/x"] == (1, {"type": "TimeoutError", "message": "timed out after 0.2s"})
    assert found["listed/taken"] == (1, {"type": "TimeoutError", "message": "timed out after 0.3s"})
    assert found["listed/own"][1]["exit_code"] == 4
    assert units(loaded(tmp_path, TIMED_OUT))["listed/own"].timeout == 600


ENV_CWD = """
    name: p
    steps:
      - name: s
        env: {A: "step-{item}", B: "step", C: "{index}"}
        cwd: "work/{stem}"
        for_each: ["in/x.txt", "in/y.txt"]
        subplan:
          env: {B: "own-{item}"}
          run: 'echo "$A $B $C ${PWD##*/}"'
      - name: listed
        env: {A: step, B: step}
        cwd: work
        subplans:
          - {name: taken, run: 'echo "$A $B ${PWD##*/}"', env: {B: own}}
          - {name: own, run: 'echo "$A ${PWD##*/}"', cwd: work/x}
    """


def test_a_steps_env_and_cwd_reach_its_subplans_under_their_own(tmp_path: Path) -> None:
    write(tmp_path, "plan.yaml", ENV_CWD)
    for name in ("x", "y"):
        (tmp_path / "work" / name).mkdir(parents=True)

    code, _ = run()

    assert code == ExitCode.OK
    assert unheaded(log("s/in_x.txt")) == "step-in/x.txt own-in/x.txt 0 x\n"
    assert unheaded(log("s/in_y.txt")) == "step-in/y.txt own-in/y.txt 1 y\n"
    assert unheaded(log("listed/taken")) == "step own work\n"
    assert unheaded(log("listed/own")) == "step x\n"


def test_the_loaded_units_hold_the_steps_env_and_cwd(tmp_path: Path) -> None:
    found = units(loaded(tmp_path, ENV_CWD))

    x = found["s/in_x.txt"]
    assert x.env == {"A": "step-in/x.txt", "B": "own-in/x.txt", "C": "0"}
    assert x.cwd == tmp_path / "work" / "x"
    assert found["listed/taken"].env == {"A": "step", "B": "own"}
    assert found["listed/taken"].cwd == tmp_path / "work"
    assert found["listed/own"].cwd == tmp_path / "work" / "x"


READ_LATER = """
    name: p
    steps:
      - name: s
        env: {WHICH: "{stem}"}
        cwd: "{stem}"
        retries: 1
        timeout: 5
        idempotent: false
        for_each: {glob: "*.dat"}
        subplan: {run: "true", retries: 3}
    """


def test_a_step_read_when_it_starts_hands_its_keys_to_each_item(tmp_path: Path) -> None:
    (tmp_path / "one.dat").touch()
    plan = loaded(tmp_path, READ_LATER)

    (unit,) = units_now(plan.steps[0])

    assert unit.env == {"WHICH": "one"}
    assert unit.cwd == tmp_path / "one"
    assert (unit.retries, unit.timeout, unit.idempotent) == (3, 5, False)


IDEMPOTENT = """
    name: p
    automation_profile: {idempotent: true, timeout: 9, retries: 4}
    steps:
      - name: s
        idempotent: false
        subplans:
          - {name: taken, run: "true"}
          - {name: own, run: "true", idempotent: true}
      - name: items
        idempotent: false
        for_each: [a]
        subplan: {run: "true"}
      - name: bare
        subplans: [{name: profile, run: "true"}]
    """


def test_idempotent_on_a_step_is_each_subplans_unless_it_has_its_own(tmp_path: Path) -> None:
    found = units(loaded(tmp_path, IDEMPOTENT))

    assert found["s/taken"].idempotent is False
    assert found["s/own"].idempotent is True
    assert found["items/a"].idempotent is False
    # Nothing on the step: the profile's defaults, as before.
    profile = found["bare/profile"]
    assert (profile.idempotent, profile.timeout, profile.retries) == (True, 9, 4)


NESTED = """
    name: p
    automation_profile: {retries: 5, timeout: 50}
    steps:
      - name: s
        retries: 1
        timeout: 30
        env: {A: "a-{item}"}
        for_each: [x]
        subplan: {plan: inner.yaml}
      - name: profiled
        automation_profile: {retries: 2}
        subplans: [{name: in, plan: inner.yaml}]
    """

INNER = """
    name: inner
    steps:
      - name: i
        run: 'echo "inner $A"; exit 1'
    """


def test_a_steps_timeout_and_retries_are_written_for_its_nested_plans_as_a_whole(
    tmp_path: Path,
) -> None:
    write(tmp_path, "inner.yaml", INNER)
    found = units(loaded(tmp_path, NESTED))

    assert (found["s/x"].retries, found["s/x"].timeout) == (1, 30)
    # The nested plan's own subplans get their own plan's profile, not the step's keys.
    assert (found["s/x/i"].retries, found["s/x/i"].timeout) == (0, None)
    assert found["s/x/i"].env == {"A": "a-x"}
    # A profile's default still does not retry a nested plan as a whole.
    assert (found["profiled/in"].retries, found["profiled/in"].timeout) == (0, None)


def test_a_nested_plan_is_run_again_by_its_steps_retries(tmp_path: Path) -> None:
    write(tmp_path, "inner.yaml", INNER)
    write(
        tmp_path, "plan.yaml", NESTED.replace("automation_profile: {retries: 5, timeout: 50}", "")
    )

    code, events = run()

    assert code == ExitCode.FAILED
    retried = [e["subplan_id"] for e in events if e["event"] == "subplan_retrying"]
    assert retried == ["s/x"]
    assert failures(events)["s/x"][0] == 2
    assert [line for line in log("s/x/i").splitlines() if not line.startswith("---")] == [
        "inner a-x",
        "inner a-x",
    ]


@pytest.mark.parametrize(
    "text",
    [RETRIED_ITEMS, RETRIED_SUBPLANS, TIMED_OUT, ENV_CWD, READ_LATER, IDEMPOTENT, NESTED],
    ids=[
        "retried-items",
        "retried-subplans",
        "timed-out",
        "env-cwd",
        "read-later",
        "idem",
        "nested",
    ],
)
def test_the_plain_path_and_pydantic_give_the_same_tree(
    text: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, "inner.yaml", INNER)
    (tmp_path / "one.dat").touch()
    # A profile written as a mapping is pydantic's to check: left out, the plan is plain.
    path = write(tmp_path, "plan.yaml", re.sub(r"(?m)^ *automation_profile: \{.*\n", "", text))
    assert plain_plan(yaml.safe_load(path.read_text(encoding="utf-8"))) is not None

    plain, typed = both_ways(path, monkeypatch)

    assert plain == typed
    assert plain[0] == "ok"


def test_a_steps_resolved_profile_shows_its_timeout_and_retries(tmp_path: Path) -> None:
    write(
        tmp_path, "plan.yaml", RETRIED_ITEMS.replace("retries: 2", "retries: 2\n        timeout: 7")
    )

    result = runner.invoke(app, ["profile", "resolve", "plan.yaml"])

    assert result.exit_code == ExitCode.OK
    step = result.stdout.split("step s\n")[1]
    assert re.search(r"^  retries +2 +step \(plan\.yaml: steps\[0\]\.retries\)$", step, re.M)
    assert re.search(r"^  timeout +7\.0 +step \(plan\.yaml: steps\[0\]\.timeout\)$", step, re.M)


def test_editing_a_steps_env_changes_the_plans_hash(tmp_path: Path) -> None:
    """Resume tells a plan edited between runs by its hash, which covers the units' env."""
    before = plan_hash(loaded(tmp_path, READ_LATER))
    edited = plan_hash(loaded(tmp_path, READ_LATER.replace('WHICH: "{stem}"', 'WHICH: "x"')))
    listed = plan_hash(loaded(tmp_path, ENV_CWD))
    listed_edited = plan_hash(loaded(tmp_path, ENV_CWD.replace("{A: step, B: step}", "{A: s}")))

    assert before != edited
    assert listed != listed_edited


def validate(tmp_path: Path, text: str) -> list[str]:
    write(tmp_path, "plan.yaml", text)
    write(tmp_path, "inner.yaml", INNER)
    result = runner.invoke(app, ["validate", "plan.yaml"])
    assert result.exit_code == ExitCode.INVALID
    return result.output.splitlines()


def test_bad_values_of_a_steps_keys_are_reported_at_the_steps_key(tmp_path: Path) -> None:
    lines = validate(
        tmp_path,
        """
        name: bad
        steps:
          - name: a
            timeout: 0
            retries: -1
            env: {"X=Y": v}
            idempotent: "no"
            for_each: [x]
            subplan: {run: "true"}
        """,
    )

    assert lines == [
        "error: plan.yaml:4:14: steps[0].timeout: timeout must be > 0, got 0",
        "error: plan.yaml:5:14: steps[0].retries: retries must be an integer >= 0, got -1 (int)",
        "error: plan.yaml:6:11: steps[0].env.X=Y: an environment variable name must be "
        "non-empty and without '=', got 'X=Y'",
        "error: plan.yaml:7:17: steps[0].idempotent: must be true or false, got 'no' (str)",
    ]


def test_what_a_steps_keys_cannot_do_for_its_subplans_is_refused_at_the_key(
    tmp_path: Path,
) -> None:
    lines = validate(
        tmp_path,
        """
        name: bad
        steps:
          - name: listed
            env: {A: "{item}", B: fine}
            cwd: "{stem}"
            subplans:
              - {name: one, run: "true"}
          - name: mixed
            cwd: out
            subplans:
              - {name: one, run: "true"}
              - {name: two, plan: inner.yaml}
              - {name: three, plan: inner.yaml}
          - name: items
            cwd: out
            for_each: {glob: "*.yaml"}
            subplan: {plan: "{item}"}
        """,
    )

    assert lines == [
        "error: plan.yaml:4:14: steps[0].env.A: {item} is only replaced under for_each",
        "error: plan.yaml:5:10: steps[0].cwd: {stem} is only replaced under for_each",
        "error: plan.yaml:9:10: steps[1].cwd: has no effect on a nested plan (subplans[1], "
        "subplans[2] run one); set it on the other subplans instead, or on the nested plan's "
        "subplans",
        "error: plan.yaml:15:10: steps[2].cwd: has no effect on a nested plan (subplan runs "
        "one); set it on the nested plan's subplans",
    ]


def test_with_on_a_step_of_subplans_is_refused_as_before(tmp_path: Path) -> None:
    lines = validate(
        tmp_path,
        """
        name: bad
        steps:
          - name: called
            with: {a: 1}
            subplans:
              - {name: one, call: "m:f"}
        """,
    )

    assert lines == ["error: plan.yaml:3:5: steps[0]: `with` is only for `call`"]
