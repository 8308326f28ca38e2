"""The ``backend`` profile field (issue #12): its forms, where it may be set, precedence and
provenance, what nested plans and run-time steps get, and ``--scheduler``'s address."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from subplans.plans.backends import DASK, LOCAL, Backend, check_scheduler
from subplans.plans.loader import GlobalConfig, Overrides, load_global_config, load_plan
from subplans.plans.plain_plans import plain_plan
from subplans.plans.tree import PlanNode
from subplans.plans.yamlfile import ProblemsError

from .plans_helpers import units_now, write

ROOT = Path(__file__).parent.parent
AT = Backend("dask", "tcp://10.0.0.1:8786")


def backends(node: PlanNode) -> dict[str, str]:
    return {unit.id: str(unit.backend) for unit in node.walk_units()}


@pytest.fixture
def no_config(tmp_path: Path) -> GlobalConfig:
    return load_global_config({"SUBPLANS_CONFIG": str(tmp_path / "none.yaml")})


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("local", LOCAL),
        ("dask", DASK),
        ("{kind: local}", LOCAL),
        ("{kind: dask}", DASK),
        ('{kind: dask, scheduler: "tcp://10.0.0.1:8786"}', AT),
    ],
)
def test_every_form_on_a_step_and_in_a_profile(
    tmp_path: Path, no_config: GlobalConfig, written: str, expected: Backend
) -> None:
    path = write(
        tmp_path,
        "plan.yaml",
        f"""
        name: p
        steps:
          - name: own
            backend: {written}
            run: "true"
          - name: profiled
            automation_profile: {{backend: {written}}}
            run: "true"
        """,
    )
    node = load_plan(path, config=no_config)

    assert [unit.backend for unit in node.walk_units()] == [expected, expected]
    own, profiled = node.steps
    assert str(own.profile.sources["backend"]) == f"step ({path}: steps[0].backend)"
    assert profiled.profile.sources["backend"].key == "steps[1].automation_profile.backend"
    assert own.profile.to_dict()["values"]["backend"] == expected.to_dict()


def test_a_step_that_names_its_backend_stays_on_the_plain_path() -> None:
    step = {"name": "s", "run": "true", "backend": "dask"}
    data: dict[str, Any] = {"name": "p", "steps": [step]}
    plain = plain_plan(data)

    assert plain is not None
    assert plain.steps is not None
    made: Any = plain.steps[0]  # the model says what it reads; the field holds a Backend
    assert made.backend is DASK
    from subplans.plans.models import PlanFile

    assert plain == PlanFile.model_validate(data)
    # A mapping, or a value it does not know, is pydantic's to judge.
    for other in ({"kind": "dask"}, "cloud", 3):
        assert plain_plan({**data, "steps": [{**step, "backend": other}]}) is None


def test_precedence_step_plan_action_global(tmp_path: Path) -> None:
    config = write(
        tmp_path,
        "config.yaml",
        """
        profiles:
          cluster: {backend: {kind: dask, scheduler: "tcp://10.0.0.1:8786"}}
        automation_profile: {backend: dask}
        """,
    )
    write(
        tmp_path,
        "action.yaml",
        """
        name: act
        automation_profile: {backend: local}
        steps:
          - {name: a, run: "true"}
          - {name: b, run: "true", automation_profile: cluster}
          - {name: c, run: "true", backend: dask}
        """,
    )
    path = write(tmp_path, "plan.yaml", "name: p\naction: action.yaml\n")
    glob = load_global_config({"SUBPLANS_CONFIG": str(config)})

    node = load_plan(path, config=glob)
    assert backends(node) == {"a": "local", "b": str(AT), "c": "dask (local cluster)"}
    assert node.profile.sources["backend"].level == "action"
    assert "profiles.cluster.backend" in str(node.steps[1].profile.sources["backend"])

    node = load_plan(path, config=glob, overrides=Overrides(backend="dask"))
    assert backends(node)["a"] == "dask (local cluster)"
    assert str(node.profile.sources["backend"]) == "plan (--backend)"
    # A step's own setting still wins over the command line.
    assert (
        load_plan(path, config=glob, overrides=Overrides(backend="local")).steps[2].units[0].backend
        == DASK
    )

    only_global = write(tmp_path, "bare.yaml", "name: bare\nsteps: [{name: a, run: 'true'}]\n")
    node = load_plan(only_global, config=glob)
    assert backends(node) == {"a": "dask (local cluster)"}
    assert node.profile.sources["backend"].level == "global"


def test_the_runs_cluster_address_fills_a_dask_backend_that_names_none(
    tmp_path: Path, no_config: GlobalConfig
) -> None:
    path = write(
        tmp_path,
        "plan.yaml",
        """
        name: p
        automation_profile: {backend: dask}
        steps:
          - {name: a, run: "true"}
          - {name: b, run: "true", backend: {kind: dask, scheduler: "tcp://10.0.0.1:8786"}}
          - {name: c, run: "true", backend: local}
        """,
    )
    node = load_plan(path, config=no_config, overrides=Overrides(scheduler="tcp://h:1"))

    assert backends(node) == {"a": "dask tcp://h:1", "b": str(AT), "c": "local"}
    # The address is credited to what named it.
    assert str(node.profile.sources["backend"]).endswith("automation_profile.backend, --scheduler)")


def test_nested_plans_run_here_and_hand_their_units_the_backend(
    tmp_path: Path, no_config: GlobalConfig
) -> None:
    write(
        tmp_path,
        "inner.yaml",
        """
        name: inner
        steps:
          - {name: x, run: "true"}
          - {name: y, run: "true", backend: local}
        """,
    )
    write(
        tmp_path,
        "own.yaml",
        """
        name: own
        automation_profile: {backend: local}
        steps: [{name: z, run: "true"}]
        """,
    )
    path = write(
        tmp_path,
        "plan.yaml",
        """
        name: p
        steps:
          - name: out
            backend: dask
            subplans:
              - {name: n, plan: inner.yaml}
              - {name: o, plan: own.yaml}
              - name: i
                plan: {steps: [{name: w, call: "json:dumps"}]}
          - name: each
            backend: {kind: dask, scheduler: "tcp://10.0.0.1:8786"}
            for_each: {lines: items.txt}
            subplan: {plan: inner.yaml}
        """,
    )
    (tmp_path / "items.txt").write_text("one\n", encoding="utf-8")
    node = load_plan(path, config=no_config, overrides=Overrides(scheduler="tcp://h:1"))

    assert backends(node) == {
        "out/n": "local",
        "out/n/x": "dask tcp://h:1",
        "out/n/y": "local",
        "out/o": "local",
        "out/o/z": "local",
        "out/i": "local",
        "out/i/w": "dask tcp://h:1",
    }
    inner = node.steps[0].units[0].plan
    assert inner is not None
    assert str(inner.profile.sources["backend"]) == f"step ({path}: steps[0].backend, --scheduler)"
    made = units_now(node.steps[1])
    assert [str(unit.backend) for unit in made] == ["local"]
    nested = made[0].plan
    assert nested is not None
    assert backends(nested) == {"each/one/x": str(AT), "each/one/y": "local"}


@pytest.mark.parametrize(
    ("written", "message"),
    [
        ("cloud", r"steps\[0\]\.backend: input should be 'local' or 'dask', got 'cloud'"),
        (
            '{kind: local, scheduler: "tcp://h:1"}',
            r"steps\[0\]\.backend: scheduler is only for kind: dask",
        ),
        (
            '{kind: dask, scheduler: "tcp://h :1"}',
            r"steps\[0\]\.backend\.scheduler: scheduler must be a scheduler address such as "
            r"tcp://HOST:8786, got 'tcp://h :1'",
        ),
        ("{kind: dask, port: 1}", r"steps\[0\]\.backend\.port: unknown key 'port'"),
        ("{kind: ray}", r"steps\[0\]\.backend\.kind: input should be 'local' or 'dask'"),
    ],
)
def test_a_bad_backend_is_one_line_naming_where(
    tmp_path: Path, no_config: GlobalConfig, written: str, message: str
) -> None:
    path = write(
        tmp_path, "plan.yaml", f"name: p\nsteps:\n  - name: s\n    run: x\n    backend: {written}\n"
    )
    with pytest.raises(ProblemsError) as caught:
        load_plan(path, config=no_config)

    (problem,) = caught.value.problems
    assert len(str(problem).splitlines()) == 1
    assert re.search(message, str(problem)), str(problem)


def test_backend_values_and_their_text() -> None:
    assert Backend.from_value("local") is LOCAL
    assert Backend.from_value({"kind": "dask", "scheduler": None}) is DASK
    assert Backend.from_value(AT.to_dict()) == AT
    assert (str(LOCAL), str(DASK), str(AT)) == (
        "local",
        "dask (local cluster)",
        "dask tcp://10.0.0.1:8786",
    )
    assert DASK.at("tcp://h:1") == Backend("dask", "tcp://h:1")
    assert AT.at("tcp://h:1") is AT
    assert LOCAL.at("tcp://h:1") is LOCAL
    assert DASK.at(None) is DASK
    with pytest.raises(ValueError, match=r"^backend must be local or dask, got 'x'$"):
        Backend.from_value("x")
    with pytest.raises(ValueError, match=r"^backend must be local, dask or \{kind: dask"):
        Backend.from_value(["dask"])
    with pytest.raises(ValueError, match=r"^backend kind must be local or dask, got None$"):
        Backend.from_value({})
    with pytest.raises(ValueError, match=r"^--scheduler must be a scheduler address"):
        check_scheduler("", "--scheduler")
    assert check_scheduler("127.0.0.1:8786") == "127.0.0.1:8786"


def test_the_schemas_describe_the_field() -> None:
    profile = json.loads((ROOT / "schemas" / "profile.schema.json").read_text(encoding="utf-8"))
    plan = json.loads((ROOT / "schemas" / "plan.schema.json").read_text(encoding="utf-8"))

    assert "backend" in json.dumps(profile)
    assert "BackendFields" in plan["$defs"]
    assert plan["$defs"]["BackendFields"]["properties"]["kind"]["enum"] == ["local", "dask"]
