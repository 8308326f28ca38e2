"""What a run records for resume (the manifest with its overrides), the overrides read back,
the refusal of a changed plan, and stopping leftovers with the run's own grace."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from subplans.engine.config import FailureMode
from subplans.plans.loader import Overrides
from subplans.store import PlanDiff, PlanManifest, RunBusyError, RunStore, StoppedGroup
from subplans.store.resume import (
    describe_stopped,
    recorded_overrides,
    refusal,
    run_manifest,
    stop_leftovers,
    stop_leftovers_locked,
)

from .store_support import gone_owner, load, manifest, open_store

PLAN = """
    name: p
    automation_profile: {cancel_grace: 0.5}
    steps:
      - {name: a, run: "true"}
    """


@pytest.fixture
def store(tmp_path: Path) -> Iterator[RunStore]:
    opened = open_store(tmp_path)
    yield opened
    opened.close()


def test_the_manifest_names_the_plan_absolutely_and_keeps_the_overrides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    node = load(Path(), PLAN)  # a relative plan file, as on the command line
    overrides = Overrides(
        max_parallel=3, failure_mode=FailureMode.CONTINUE_ON_ERROR, profile="wide"
    )

    found = run_manifest(node, overrides)

    plain = PlanManifest.from_plan(node)
    assert found.file == str(tmp_path / "plan.yaml")
    assert (found.hash, found.steps, found.subplans) == (plain.hash, plain.steps, plain.subplans)
    assert found.profile == {
        **plain.profile,
        "overrides": {"max_parallel": 3, "failure_mode": "continue_on_error", "profile": "wide"},
    }
    assert run_manifest(node, Overrides()).profile["overrides"] == {}


def test_the_overrides_come_back_as_they_were_given(tmp_path: Path, store: RunStore) -> None:
    node = load(tmp_path, PLAN)
    given = Overrides(max_parallel=3, failure_mode=FailureMode.FAIL_FAST, profile="serial")
    store.start_run("r1", run_manifest(node, given))
    store.start_run("r2", run_manifest(node, Overrides()))
    store.start_run("r3", PlanManifest.from_plan(node))  # started in Python: none recorded

    assert recorded_overrides(store.get_run("r1")) == given
    assert recorded_overrides(store.get_run("r2")) == Overrides()
    assert recorded_overrides(store.get_run("r3")) == Overrides()


def test_a_changed_plan_is_refused_unless_forced() -> None:
    changed = PlanDiff("r1", ("a",), ("b",), hash_changed=True)
    same_ids = PlanDiff("r1", (), (), hash_changed=True)

    assert refusal(changed, force=False) == (
        "the plan's subplans changed since run r1: 1 subplan added (a) and 1 subplan removed "
        "(b); resume with --force to run the plan as it is now"
    )
    assert refusal(changed, force=True) is None
    assert refusal(same_ids, force=False) is None


def test_describe_stopped_counts_in_the_plural() -> None:
    one = [StoppedGroup("s/a", 10, (10,), "SIGTERM")]
    two = [*one, StoppedGroup("s/b", 11, (11, 12), "SIGKILL")]

    assert describe_stopped("r1", one) == (
        "stopped 1 process group that run r1 left running: s/a (process group 10, SIGTERM)"
    )
    assert describe_stopped("r1", two) == (
        "stopped 2 process groups that run r1 left running: s/a (process group 10, SIGTERM), "
        "s/b (process group 11, SIGKILL)"
    )


def test_leftovers_get_the_runs_own_cancel_grace(
    tmp_path: Path, store: RunStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    graces: list[float] = []

    def stop(store: RunStore, run_id: str, *, grace: float) -> list[Any]:
        graces.append(grace)
        return []

    monkeypatch.setattr("subplans.store.resume.stop_leftover_groups", stop)
    store.start_run("r1", run_manifest(load(tmp_path, PLAN), Overrides()), owner=gone_owner())
    store.start_run("r2", manifest("s/a"), owner=gone_owner())  # no profile values recorded

    assert stop_leftovers(store, store.get_run("r1")) == []
    assert stop_leftovers(store, store.get_run("r2")) == []
    assert graces == [0.5, 5.0]


def test_cancel_leaves_leftovers_alone_while_another_process_holds_the_lock(
    store: RunStore,
) -> None:
    store.start_run("r1", manifest("s/a"), owner=gone_owner())
    run = store.get_run("r1")

    with store.lock("r1"), pytest.raises(RunBusyError, match=r"^run r1 is being driven by "):
        stop_leftovers_locked(store, run)
    assert stop_leftovers_locked(store, run) == []
    assert not store.lock("r1").held
