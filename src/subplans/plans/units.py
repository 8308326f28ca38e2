"""One unit of a plan file (a step's own work, a subplan, a ``for_each`` subplan) made a
``UnitNode``: placeholders filled in, ``run`` values quoted for their place, profile defaults set.

The loader checks the unit first (its id, its ``call`` module, its nested plan); what is left
here cannot fail. A ``UnitBuilder`` works out once what every node of its unit shares (the
step's unit keys and the profile defaults; the command, ``env`` and ``cwd`` when no placeholder
is in them), so that a ``for_each`` of a million items costs little more than a million nodes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

from subplans.plans.backends import LOCAL
from subplans.plans.placeholders import PLACEHOLDER, fill, pieces, substitute, substitute_all
from subplans.plans.tree import PlanNode, ResolvedProfile, UnitDraft, UnitKind, UnitNode, inherit

if TYPE_CHECKING:
    from subplans.plans.models import StepModel, SubplanModel, SubplanTemplate
    from subplans.plans.shellquote import ShellTemplate

    #: What a unit is written as: a step of one unit of work, a subplan, or a for_each's
    #: template (or their stand-ins, ``plain_models``). For type checking only: at run time
    #: it would need pydantic, which a plain plan never loads.
    UnitModel: TypeAlias = SubplanModel | SubplanTemplate | StepModel

__all__ = ["UnitBuilder"]

_T = TypeVar("_T")
#: Shared by every unit that uses no pool (a tree is read, never changed).
_NO_USES: Mapping[str, int] = MappingProxyType({})


class UnitBuilder:
    """``unit``'s nodes, one for each set of placeholder values.

    Nodes of one builder share what no placeholder changes (the same ``env`` mapping, ``cwd``
    and argument tuple): a tree is read, never changed, once built.
    """

    __slots__ = (
        "argv",
        "argv_pieces",
        "backend",
        "cwd",
        "cwd_written",
        "env",
        "env_written",
        "folder",
        "idempotent",
        "kind",
        "kwargs",
        "profile",
        "retries",
        "shell",
        "timeout",
        "unit",
        "uses",
    )

    def __init__(
        self,
        unit: UnitModel,
        *,
        folder: Path,
        profile: ResolvedProfile,
        uses: Mapping[str, int] = _NO_USES,
        step: StepModel | None = None,
    ) -> None:
        """``step``: the step of ``subplans`` or ``for_each`` whose subplan ``unit`` is; the
        unit keys written on it are the defaults of the unit's own."""
        self.unit = unit
        self.folder = folder
        kind: UnitKind = (
            "run" if unit.run is not None else "call" if unit.call is not None else "plan"
        )
        self.kind = kind
        timeout, retries, idempotent = unit.timeout, unit.retries, unit.idempotent
        env = unit.env or {}
        cwd = unit.cwd
        if step is not None:
            timeout = _own_or_default(timeout, step.timeout)
            retries = _own_or_default(retries, step.retries)
            idempotent = _own_or_default(idempotent, step.idempotent)
            env = {**step.env, **env} if step.env else env
            cwd = _own_or_default(cwd, step.cwd)
        # A profile's defaults are for the work itself; a nested plan's own subplans get
        # them, so retrying or timing the whole nested plan happens only when asked for (on
        # the unit or its step: both are written for it).
        self.timeout = _own_or_default(timeout, None if kind == "plan" else profile.timeout)
        self.retries = _own_or_default(retries, 0 if kind == "plan" else profile.retries)
        self.idempotent = _own_or_default(idempotent, profile.idempotent)
        self.uses = uses
        self.profile = profile
        # A nested plan runs here; its own units go where its profile (or this one) says.
        self.backend = LOCAL if kind == "plan" else profile.backend
        # What no placeholder changes, shared; None where each node works its own out.
        self.env_written: Mapping[str, str] = env
        self.env = None if any(map(_placeholder, env.values())) else dict(env)
        self.cwd_written = cwd
        self.cwd: Path | None = folder
        if cwd:
            self.cwd = None if _placeholder(cwd) else folder / cwd
        self.kwargs: dict[str, Any] = {}  # but a call's: each its own copy
        run = unit.run
        self.argv = tuple(run) if isinstance(run, list) else None
        # A run string's quoting of placeholder values: loaded by the first node that has some
        # (#10: a plan without such a template never loads ``shellquote``).
        self.shell: Callable[[str], ShellTemplate] | None = None
        # Its arguments split at their placeholders once, for every node; None: there are none.
        split = [pieces(arg) for arg in self.argv or ()]
        self.argv_pieces = tuple(split) if any(len(arg) > 1 for arg in split) else None

    def _load_shell(self) -> Callable[[str], ShellTemplate]:
        from subplans.plans.shellquote import shell_template

        self.shell = shell_template
        return shell_template

    def build(
        self,
        *,
        unit_id: str,
        name: str,
        values: Mapping[str, str],
        plan: PlanNode | None = None,
    ) -> UnitNode:
        """A node; ``values`` fill its placeholders, ``plan`` is its loaded nested plan."""
        unit = self.unit
        env = self.env
        if env is None:
            env = {k: substitute(v, values) for k, v in self.env_written.items()}
        cwd = self.cwd
        if cwd is None:
            assert self.cwd_written is not None
            cwd = self.folder / substitute(self.cwd_written, values)
        command: str | tuple[str, ...] | None = None
        kwargs = self.kwargs
        if self.kind == "run":
            if isinstance(unit.run, str):
                # The loader checked the template: each value goes in quoted for its place.
                shell = (self.shell or self._load_shell()) if values else None
                command = unit.run if shell is None else shell(unit.run).render(values)
            elif self.argv_pieces is None or not values:
                command = self.argv
            else:
                command = tuple([fill(arg, values) for arg in self.argv_pieces])
        elif self.kind == "call":
            kwargs = substitute_all(unit.with_ or {}, values)
        else:
            assert plan is not None
            if env or values.get("item") is not None:
                # What the plan subplan was given reaches the work inside: "one nested plan per
                # module" gets its module through env and SUBPLANS_ITEM.
                plan = inherit(plan, env, values.get("item"))
        # In UnitNode's field order, not by keyword: matching 14 keywords took a third of the
        # time of building a node.
        return UnitDraft(
            unit_id,  # id
            name,
            self.kind,
            self.folder,
            cwd,
            command,
            unit.call,
            kwargs,
            plan,
            self.timeout,
            self.retries,
            env,
            values.get("item"),  # item
            self.idempotent,
            self.uses,
            self.backend,
        ).finished()


def _placeholder(text: str) -> bool:
    return PLACEHOLDER.search(text) is not None


def _own_or_default(own: _T | None, default: _T) -> _T:
    return own if own is not None else default
