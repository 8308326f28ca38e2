"""Automation profiles: built-ins, the global config file, precedence with provenance."""

from __future__ import annotations

from pathlib import Path

import pytest

from subplans import FailureMode
from subplans.plans.loader import GlobalConfig, Overrides, load_global_config, load_plan
from subplans.plans.profiles import (
    BUILTIN_PROFILES,
    ProfileError,
    ProfileRegistry,
    global_config_path,
)
from subplans.plans.yamlfile import ProblemsError

from .plans_helpers import write

CONTINUE = FailureMode.CONTINUE_ON_ERROR


@pytest.fixture
def config(tmp_path: Path) -> GlobalConfig:
    path = write(
        tmp_path,
        "config/config.yaml",
        """
        profiles:
          fast: {max_parallel: 12, retries: 2}
          fast-careful: {profile: fast, failure_mode: fail_fast, timeout: 30}
        automation_profile: {max_parallel: 6, cancel_grace: 1.5, timeout: 90}
        """,
    )
    return load_global_config({"SUBPLANS_CONFIG": str(path)})


def test_config_path_precedence(tmp_path: Path) -> None:
    assert global_config_path({"SUBPLANS_CONFIG": "/x/c.yaml", "XDG_CONFIG_HOME": "/y"}) == Path(
        "/x/c.yaml"
    )
    assert global_config_path({"XDG_CONFIG_HOME": "/y"}) == Path("/y/subplans/config.yaml")
    assert global_config_path({}) == Path.home() / ".config/subplans/config.yaml"


def test_builtins() -> None:
    assert {"default", "serial", "keep-going"} <= set(BUILTIN_PROFILES)
    registry = ProfileRegistry()
    assert registry.resolve([]).max_parallel == 4
    serial = registry.expand("serial", "x")
    assert serial["max_parallel"][0] == 1
    assert registry.expand("keep-going", "x")["failure_mode"][0] is CONTINUE
    assert "one at a time" in registry.describe("serial")


def test_missing_config_file_is_fine(tmp_path: Path) -> None:
    config = load_global_config({"SUBPLANS_CONFIG": str(tmp_path / "none.yaml")})
    assert not config.exists
    assert config.spec is None


def test_precedence_field_by_field_with_provenance(tmp_path: Path, config: GlobalConfig) -> None:
    write(
        tmp_path,
        "action.yaml",
        "name: act\nautomation_profile: {failure_mode: continue_on_error, retries: 1}\n",
    )
    plan_path = write(
        tmp_path,
        "plan.yaml",
        """
        name: p
        action: action.yaml
        automation_profile: {max_parallel: 3}
        steps:
          - name: plain
            run: "true"
          - name: wide
            max_parallel: 8
            automation_profile: {profile: fast, cancel_grace: 0.5}
            run: "true"
        """,
    )
    plan = load_plan(plan_path, config=config)
    plain = plan.steps[0].profile
    assert (
        plain.max_parallel,
        plain.failure_mode,
        plain.cancel_grace,
        plain.timeout,
        plain.retries,
    ) == (
        3,
        CONTINUE,
        1.5,
        90.0,
        1,
    )
    assert plain.sources["max_parallel"].level == "plan"
    assert plain.sources["max_parallel"].key == "automation_profile.max_parallel"
    assert plain.sources["max_parallel"].file == plan_path
    assert plain.sources["failure_mode"].level == "action"
    assert plain.sources["failure_mode"].file == tmp_path / "action.yaml"
    assert plain.sources["cancel_grace"].level == "global"
    assert plain.sources["timeout"].level == "global"
    wide = plan.steps[1].profile
    assert (wide.max_parallel, wide.cancel_grace, wide.retries) == (8, 0.5, 2)
    assert str(wide.sources["max_parallel"]) == f"step ({plan_path}: steps[1].max_parallel)"
    assert (
        wide.sources["retries"].key
        == "steps[1].automation_profile.profile = 'fast' (profiles.fast.retries)"
    )
    assert wide.sources["cancel_grace"].key == "steps[1].automation_profile.cancel_grace"
    data = wide.to_dict()
    assert data["values"]["failure_mode"] == "continue_on_error"
    assert data["sources"]["max_parallel"]["level"] == "step"


def test_default_level_when_nothing_is_set(tmp_path: Path) -> None:
    plan = load_plan(
        write(tmp_path, "p.yaml", "name: p\nsteps: [{name: a, run: 'true'}]\n"),
        config=GlobalConfig(tmp_path / "c", False, ProfileRegistry(), None),
    )
    profile = plan.profile
    assert (
        profile.max_parallel,
        profile.failure_mode,
        profile.cancel_grace,
        profile.timeout,
        profile.retries,
    ) == (
        4,
        FailureMode.FAIL_FAST,
        5.0,
        None,
        0,
    )
    assert all(source.level == "default" for source in profile.sources.values())
    assert str(profile.sources["max_parallel"]) == "default (profile = 'default' (built-in))"


def test_command_line_overrides_act_at_plan_level(tmp_path: Path, config: GlobalConfig) -> None:
    path = write(
        tmp_path,
        "plan.yaml",
        """
        name: p
        automation_profile: {max_parallel: 3, failure_mode: fail_fast}
        steps:
          - {name: a, run: "true"}
          - {name: b, run: "true", max_parallel: 2}
        """,
    )
    overrides = Overrides(max_parallel=10, profile="keep-going")
    plan = load_plan(path, config=config, overrides=overrides)
    a, b = plan.steps[0].profile, plan.steps[1].profile
    assert a.max_parallel == 10
    assert a.sources["max_parallel"].key == "--max-parallel"
    assert a.failure_mode is CONTINUE  # --profile keep-going beats the plan file
    assert a.sources["failure_mode"].key == "--profile = 'keep-going' (built-in)"
    assert b.max_parallel == 2  # the step still wins
    mode = load_plan(path, config=config, overrides=Overrides(failure_mode=CONTINUE))
    assert mode.steps[0].profile.sources["failure_mode"].key == "--failure-mode"


def test_unknown_profile_lists_the_known_ones(tmp_path: Path, config: GlobalConfig) -> None:
    path = write(
        tmp_path, "p.yaml", "name: p\nautomation_profile: turbo\nsteps: [{name: a, run: 'true'}]\n"
    )
    with pytest.raises(ProblemsError) as caught:
        load_plan(path, config=config)
    assert str(caught.value) == (
        f"{path}: automation_profile: unknown profile 'turbo'; known profiles: "
        "default, serial, keep-going, wide, wide-keep-going, fast, fast-careful"
    )
    with pytest.raises(ProblemsError, match=r"unknown profile 'nope'"):
        load_plan(
            write(tmp_path, "q.yaml", "name: q\nsteps: [{name: a, run: 'true'}]\n"),
            config=config,
            overrides=Overrides(profile="nope"),
        )


def test_invalid_values_in_the_config_file(tmp_path: Path) -> None:
    path = write(tmp_path, "c.yaml", "profiles:\n  big: {max_parallel: 40}\n")
    with pytest.raises(ProblemsError) as caught:
        load_global_config({"SUBPLANS_CONFIG": str(path)})
    assert str(caught.value) == (
        f"{path}:2:23: profiles.big.max_parallel: max_parallel must be between 1 and 32, got 40"
    )


def test_config_file_profile_loops_and_shadowing(tmp_path: Path) -> None:
    loop = write(tmp_path, "loop.yaml", "profiles:\n  a: {profile: b}\n  b: a\n")
    with pytest.raises(
        ProblemsError, match=r"profiles refer to each other in a loop: a -> b -> a$"
    ):
        load_global_config({"SUBPLANS_CONFIG": str(loop)})
    shadow = write(tmp_path, "shadow.yaml", "profiles:\n  serial: {max_parallel: 2}\n")
    with pytest.raises(ProblemsError, match=r"'serial' is a built-in profile; choose another name"):
        load_global_config({"SUBPLANS_CONFIG": str(shadow)})
    bad_global = write(tmp_path, "g.yaml", "automation_profile: nope\n")
    with pytest.raises(ProblemsError, match=r"unknown profile 'nope'"):
        load_global_config({"SUBPLANS_CONFIG": str(bad_global)})
    empty = write(tmp_path, "empty.yaml", "")
    assert load_global_config({"SUBPLANS_CONFIG": str(empty)}).exists


def test_registry_repr_and_describe(config: GlobalConfig) -> None:
    assert repr(config.registry) == "<ProfileRegistry 5 built-in, 2 custom>"
    assert config.registry.describe("fast") == f"custom, from {config.path}"
    with pytest.raises(ProfileError):
        ProfileRegistry({"default": "serial"})


def test_an_unknown_profile_of_one_step_is_one_problem(
    tmp_path: Path, config: GlobalConfig
) -> None:
    path = write(
        tmp_path,
        "p.yaml",
        """
        name: p
        steps:
          - {name: s, automation_profile: nope, run: 'true'}
          - {name: t, run: 'true'}
        """,
    )
    with pytest.raises(ProblemsError) as caught:
        load_plan(path, config=config)
    assert [str(p) for p in caught.value.problems] == [
        f"{path}: steps[0].automation_profile: unknown profile 'nope'; known profiles: "
        "default, serial, keep-going, wide, wide-keep-going, fast, fast-careful"
    ]
