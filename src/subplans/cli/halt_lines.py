"""What ``subplans status`` says of the steps a ``halt`` threshold stopped: only the halts of
each step's latest attempt (a resume that ran a halted step again undid its halt)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from subplans.store import StepInfo, StoredEvent

__all__ = ["current_halts", "halt_lines"]


def current_halts(
    events: Sequence[StoredEvent], steps: Sequence[StepInfo]
) -> list[Mapping[str, Any]]:
    """The ``dispatch_halted`` payloads of the steps' latest attempts: one from before a
    resume made the step pending again, or ran it again, is no longer so."""
    started = {step.step_id: step.started for step in steps}
    current = []
    for event in events:
        name = event.payload.get("name")
        if name not in started:
            current.append(event.payload)
            continue
        began = started[name]
        if began is not None and event.time >= began:
            current.append(event.payload)
    return current


def halt_lines(halted: Sequence[Mapping[str, Any]]) -> list[str]:
    """One line per halted step: which threshold stopped it."""
    return [
        f"step {h['name']}: its {h['threshold']} threshold was reached (halt {h['policy']})"
        for h in halted
    ]
