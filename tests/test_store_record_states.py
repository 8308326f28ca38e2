"""The states in the store's records (issue #9 review): a subplan's is a
``SubplanExecutionState``; a step's stays a ``str``, for ``pending`` is no ``StepState``."""

from __future__ import annotations

from pathlib import Path

from subplans.engine.states import StepState, SubplanExecutionState
from subplans.store import RunStore

from .store_support import manifest


def test_a_subplans_state_is_the_enum_and_a_steps_may_be_pending(tmp_path: Path) -> None:
    with RunStore.open(tmp_path / "state.db") as store:
        store.start_run("r1", manifest("step/a"))

        (subplan,) = store.subplans("r1")
        (step,) = store.steps("r1")

    assert subplan.state is SubplanExecutionState.PENDING
    assert subplan.to_dict()["state"] == "pending"
    assert step.state == "pending"
    assert step.state not in set(StepState)
