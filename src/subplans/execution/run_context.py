"""What every unit of one run shares (``RunContext``): the run's id and folder, its log names,
the bus, the process groups, the budget of the root step running, the child environment; and
where units of a non-local backend run (``RemoteBackend``)."""

from __future__ import annotations

import os
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from subplans.engine.bus import EventBus
from subplans.engine.clock import SYSTEM_CLOCK, Clock
from subplans.engine.limiter import AsyncSemaphoreLimiter
from subplans.execution.process import CommandResult, ProcessGroups

if TYPE_CHECKING:
    from subplans.execution.results import PlanResult
    from subplans.plans.backends import Backend
    from subplans.plans.tree import PlanNode, UnitNode

__all__ = ["RemoteBackend", "RunContext", "log_name"]


def log_name(unit_id: str) -> str:
    """The file name (without ``.log``) a unit's log gets in the run's ``logs`` folder; a
    second unit of the same name gets ``NAME.2`` (``RunContext.log_file``)."""
    return re.sub(r"[^\w.-]+", "_", unit_id.replace("/", "__")).strip("._") or "subplan"


class RemoteBackend(Protocol):
    """Where ``run`` and ``call`` units of a non-local backend run (``cluster.DaskBackend``):
    the twins of ``run_command`` and ``call_function``, with the same results and errors."""

    async def run_command(
        self,
        command: str | Sequence[str],
        *,
        log_file: Path,
        cwd: Path | None,
        env: Mapping[str, str],
        cancel_grace: float,
        attempt: int,
        on_start: Callable[[int, str], None],
        within: str = "",
    ) -> CommandResult: ...

    async def call(
        self,
        target: str,
        folder: Path,
        kwargs: Mapping[str, Any],
        *,
        cancel_grace: float,
        label: str,
        on_start: Callable[[int, str], None],
        run_id: str,
    ) -> Any: ...


class RunContext:
    """What every unit of one run shares: ids, folders, the bus, processes and the budget.

    ``budget``: the shared budget of the root step running (None at the root, between steps).
    ``log_names``, and ``log_taken`` (its values, to keep names unique in O(1)), are shared
    with the contexts made from this one: a log name is unique in the whole run. ``clock``
    stamps the events the units publish. ``backends``: where units of another backend than
    ``local`` run (empty: every unit runs here). ``within``: the attempts beyond the first of
    the nested plans the units run in, outermost first (``s/inner attempt 2``): each attempt of
    a nested plan builds its units again, so their own attempts count from 1 again, and their
    log headers say which attempt it is of.
    """

    __slots__ = (
        "_base_env",
        "backends",
        "budget",
        "bus",
        "clock",
        "environ",
        "groups",
        "log_names",
        "log_taken",
        "run_dir",
        "run_id",
        "run_plan",
        "within",
    )

    def __init__(
        self,
        run_id: str,
        run_dir: Path,
        bus: EventBus | None = None,
        groups: ProcessGroups | None = None,
        environ: Mapping[str, str] | None = None,
        budget: AsyncSemaphoreLimiter | None = None,
        log_names: dict[str, Path] | None = None,
        run_plan: Callable[[PlanNode, RunContext], Awaitable[PlanResult]] | None = None,
        log_taken: set[Path] | None = None,
        clock: Clock = SYSTEM_CLOCK,
        backends: Mapping[Backend, RemoteBackend] | None = None,
        within: str = "",
        _base_env: dict[str, str] | None = None,
    ) -> None:
        self.run_id, self.run_dir, self.bus, self.environ = run_id, run_dir, bus, environ
        self.groups = ProcessGroups() if groups is None else groups
        self.budget, self.run_plan, self.clock, self.within = budget, run_plan, clock, within
        self.log_names: dict[str, Path] = {} if log_names is None else log_names
        self.log_taken: set[Path] = set() if log_taken is None else log_taken
        self.backends: Mapping[Backend, RemoteBackend] = {} if backends is None else backends
        #: ``environ`` (or ours) as a plain dict, read once: copying ``os.environ`` decodes
        #: every variable, which costs more than the rest of a command's set-up.
        self._base_env = _base_env

    def __repr__(self) -> str:
        return f"<RunContext {self.run_id} in {self.run_dir}>"

    def with_budget(self, budget: AsyncSemaphoreLimiter) -> RunContext:
        """This context for the units of a root step: ``budget`` is the whole tree's below it."""
        return self._but(budget, self.within)

    def within_attempt(self, within: str) -> RunContext:
        """This context for a later attempt of a nested plan (``within``)."""
        return self._but(self.budget, within)

    def _but(self, budget: AsyncSemaphoreLimiter | None, within: str) -> RunContext:
        other = object.__new__(RunContext)
        for name in RunContext.__slots__:
            setattr(other, name, getattr(self, name))
        other.budget, other.within = budget, within
        return other

    def log_file(self, unit_id: str) -> Path:
        """A log file name in the run folder for ``unit_id``, unique within the run."""
        path = self.log_names.get(unit_id)
        if path is None:
            safe = log_name(unit_id)
            path = self.run_dir / "logs" / f"{safe}.log"
            number = 2
            while path in self.log_taken:
                path = self.run_dir / "logs" / f"{safe}.{number}.log"
                number += 1
            self.log_names[unit_id] = path
            self.log_taken.add(path)
        return path

    def environment(self, unit: UnitNode) -> dict[str, str]:
        """The child environment: ours (read when the first command starts), the unit's
        ``env``, and the SUBPLANS_* variables."""
        if self._base_env is None:
            self._base_env = dict(os.environ if self.environ is None else self.environ)
        return self._for_unit(self._base_env.copy(), unit)

    def remote_environment(self, unit: UnitNode) -> dict[str, str]:
        """What a unit's command gets on a worker over the worker's own environment: the
        run's ``environ`` if one was given (the driver's own stays here), the unit's ``env``
        and the SUBPLANS_* variables."""
        return self._for_unit(dict(self.environ or {}), unit)

    def _for_unit(self, env: dict[str, str], unit: UnitNode) -> dict[str, str]:
        """``env`` with the unit's ``env`` and the SUBPLANS_* variables that name it."""
        env.update(unit.env)
        env["SUBPLANS_RUN_ID"] = self.run_id
        env["SUBPLANS_SUBPLAN"] = unit.id
        if unit.item is not None:
            env["SUBPLANS_ITEM"] = unit.item
        else:
            env.pop("SUBPLANS_ITEM", None)
        return env
