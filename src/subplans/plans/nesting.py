"""Plans within plans, as the loader reads them: a unit's nested plan (a file or written inline)
loaded at most ``MAX_DEPTH`` deep and never including itself, and a ``for_each`` template
checked as far as it can be before its items are read."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from subplans.plans.load_scope import Scope, include_loop
from subplans.plans.placeholders import find_placeholders, substitute

if TYPE_CHECKING:
    from pathlib import Path

    from subplans.plans.models import InlinePlan, PlanFile
    from subplans.plans.tree import PlanNode, UnitNode
    from subplans.plans.units import UnitBuilder, UnitModel

__all__ = ["MAX_DEPTH", "NestedPlans"]

#: How deep plans may nest (the root plan is depth 0).
MAX_DEPTH = 8


class NestedPlans:
    """The loader's methods for nested plans (``loader._Loader`` is one)."""

    if TYPE_CHECKING:

        def problem(self, at: Scope, message: str, *, at_key: bool = False) -> None: ...
        def file(self, path: Path, what: str) -> PlanFile | None: ...
        def plan(
            self, model: PlanFile | InlinePlan, at: Scope, *, root: bool = False
        ) -> PlanNode | None: ...
        def unit(
            self,
            builder: UnitBuilder,
            name: str,
            unit_id: str,
            at: Scope,
            values: Mapping[str, str] | None = None,
        ) -> UnitNode | None: ...

    def template_ok(self, builder: UnitBuilder, at: Scope, step_id: str) -> bool:
        """Whether a template's unit passes what can be checked before its items are read:
        its ``call`` module, its nested plan (unless the item names its file)."""
        unit = builder.unit
        sample = {"item": "{item}", "index": "{index}", "stem": "{stem}"}
        if isinstance(unit.plan, str) and find_placeholders([unit.plan]):
            # The item names the plan file: loaded when the step starts.
            if unit.cwd is not None:
                self.problem(at.at("cwd"), "has no effect on a nested plan; set it on its subplans")
                return False
            return True  # and how deep it nests: checked then
        return self.unit(builder, "{item}", f"{step_id}/{{item}}", at, sample) is not None

    def nested(
        self, unit: UnitModel, at: Scope, unit_id: str, values: Mapping[str, str]
    ) -> PlanNode | None:
        assert unit.plan is not None
        if at.depth + 1 > MAX_DEPTH:
            self.problem(at.at("plan"), f"plans nest deeper than {MAX_DEPTH} levels")
            return None
        if not isinstance(unit.plan, str):
            inline = Scope(at.file, (*at.loc, "plan"), unit_id, at.depth + 1, at.chain)
            return self.plan(unit.plan, inline)
        path = at.file.parent / substitute(unit.plan, values)
        if path.resolve() in at.chain:
            self.problem(at.at("plan"), include_loop(at.chain, path))
            return None
        model = self.file(path, "a plan file")
        if model is None:
            return None
        return self.plan(model, Scope(path, (), unit_id, at.depth + 1, (*at.chain, path.resolve())))
