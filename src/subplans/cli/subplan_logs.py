"""``subplans logs``: which subplans of a run a SUBPLAN argument, ``--all`` or ``--failed``
selects, and their logs written one after the other, each line tagged with its subplan's id.

One subplan named by its id (or a unique prefix of one) is printed as written; a glob,
``--all`` or ``--failed`` may select many, so every line then starts with ``[ID] ``. A step
whose ``for_each`` is a command has a log of its own (the command's standard error): the
step's id, when no subplan has that id, names it.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from subplans.cli.exits import refuse
from subplans.engine.errors import RunNotFoundError
from subplans.sinks.formatting import visible
from subplans.store import RunInfo, StepInfo, SubplanInfo

__all__ = ["Selection", "items_log", "select", "write_tagged"]

#: The subplans an ambiguous SUBPLAN lists.
_MAX_CANDIDATES = 10
_GLOB = frozenset("*?[")


@dataclass(frozen=True, slots=True)
class Selection:
    """The subplans whose logs a ``logs`` command prints, in plan order; ``tagged`` when each
    line is to start with ``[ID] `` (a glob, ``--all`` or ``--failed``)."""

    subplans: Sequence[SubplanInfo]
    tagged: bool


def select(
    run_id: str, subplans: Sequence[SubplanInfo], name: str | None, *, failed: bool
) -> Selection:
    """What ``name`` selects among the run's ``subplans`` (all of them when None): an id, a
    unique prefix of one, or a glob such as ``port/*``; with ``failed``, only the failed ones.

    Raises:
        RunNotFoundError: no subplan is or starts with ``name``.
        exits.refuse: ``name`` is a glob that matches no subplan, or the start of several ids.
    """
    if name is None:
        chosen, tagged = list(subplans), True
    elif _GLOB.intersection(name):
        chosen = [s for s in subplans if fnmatch.fnmatchcase(s.subplan_id, name)]
        if not chosen:
            refuse([f"no subplan of run {run_id} matches {name!r}"])
        tagged = True
    else:
        chosen, tagged = [_one(run_id, subplans, name)], False
    if failed:
        chosen = [s for s in chosen if s.state == "failed"]
    return Selection(chosen, tagged)


def items_log(
    run: RunInfo, steps: Sequence[StepInfo], subplans: Sequence[SubplanInfo], name: str
) -> Path | None:
    """The items log of the step ``name`` (its ``for_each`` command's standard error), when
    ``name`` is a step's id, no subplan's, and that step has one: the path its error names, or
    where the run writes it (``RunContext.log_file`` of ``STEP.items``)."""
    if any(s.subplan_id == name for s in subplans):
        return None
    step = next((s for s in steps if s.step_id == name), None)
    if step is None:
        return None
    named = (step.error or {}).get("log_file")
    if isinstance(named, str):
        return Path(named)
    if run.run_dir is None:
        return None
    from subplans.execution.run_context import log_name

    found = Path(run.run_dir) / "logs" / f"{log_name(f'{name}.items')}.log"
    return found if found.is_file() else None


def _one(run_id: str, subplans: Sequence[SubplanInfo], name: str) -> SubplanInfo:
    """The subplan whose id is ``name``, or the one whose id starts with it."""
    starting = [s for s in subplans if s.subplan_id.startswith(name)]
    exact = [s for s in starting if s.subplan_id == name]
    if not starting:
        raise RunNotFoundError(f"run {run_id} has no subplan {name!r}")
    if len(starting) > 1 and not exact:
        listed = [f"  {visible(s.subplan_id)}" for s in starting[:_MAX_CANDIDATES]]
        if len(starting) > _MAX_CANDIDATES:
            listed.append(f"  +{len(starting) - _MAX_CANDIDATES} more")
        refuse(
            [
                f"subplan {name!r} is ambiguous: {len(starting)} subplans of run {run_id} start "
                f"with it; give more of it, or a glob such as {name + '*'!r} for all of them"
            ],
            preface="\n".join(listed),
        )
    return (exact or starting)[0]


def write_tagged(source: BinaryIO, target: BinaryIO, subplan_id: str, *, terminal: bool) -> None:
    """Copy a log from ``source`` to ``target``, each line after ``[ID] ``; a last line without
    its end gets one, so that the next log starts on a line of its own. For a ``terminal`` the
    lines are ``visible()``, as ``reports.write_log`` shows them."""
    tag = f"[{visible(subplan_id)}] ".encode()
    for raw in source:
        line = raw.removesuffix(b"\n")
        if terminal:
            text = line.removesuffix(b"\r").decode(errors="backslashreplace")
            line = visible(text).encode()
        target.write(tag + line + b"\n")
