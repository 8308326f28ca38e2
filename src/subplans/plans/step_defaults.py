"""The unit keys written on a step of ``subplans`` or ``for_each`` (``timeout``, ``retries``,
``env``, ``cwd``, ``idempotent``), which its subplans take as defaults of their own
(``UnitBuilder``): checked here for what cannot apply to them, so that none is silently ignored.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from subplans.plans.placeholders import find_placeholders

if TYPE_CHECKING:
    from subplans.plans.models import StepModel, SubplanModel, SubplanTemplate

__all__ = ["step_defaults_problems"]


def step_defaults_problems(step: StepModel) -> list[tuple[tuple[str, ...], str]]:
    """(where in the step, message) for each of ``step``'s unit keys its subplans cannot take:
    a placeholder outside ``for_each``, a ``cwd`` that would reach a nested plan."""
    problems: list[tuple[tuple[str, ...], str]] = []
    subs: list[tuple[str, SubplanModel | SubplanTemplate | None]]
    if step.subplans is not None:
        texts = [(("env", name), value) for name, value in (step.env or {}).items()]
        for where, value in [*texts, (("cwd",), step.cwd)]:
            written = find_placeholders([value])
            if written:
                shown = ", ".join(sorted(set(written)))
                problems.append((where, f"{shown} is only replaced under for_each"))
        subs = [(f"subplans[{index}]", sub) for index, sub in enumerate(step.subplans)]
        instead = "set it on the other subplans instead, or on the nested plan's subplans"
    else:
        subs = [("subplan", step.subplan)]
        instead = "set it on the nested plan's subplans"
    if step.cwd is not None:
        # As on a nested plan's own subplan, where it would do nothing.
        nested = [where for where, sub in subs if sub and sub.plan is not None and sub.cwd is None]
        if nested:
            runs = f"{', '.join(nested)} {'runs' if len(nested) == 1 else 'run'} one"
            problems.append((("cwd",), f"has no effect on a nested plan ({runs}); {instead}"))
    return problems
