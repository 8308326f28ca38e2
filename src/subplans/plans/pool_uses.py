"""A unit's ``uses`` of the run's pools, as the loader reads them (their form checked by the
models): the pools it names checked once every plan of the run is loaded (a pool a nested
plan declares is the run's too, whichever step comes first), every problem said."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from subplans.plans.scheduling import check_uses, pool_uses, uses_problems

if TYPE_CHECKING:
    from subplans.plans.load_scope import Scope
    from subplans.plans.tree import PoolSpec

__all__ = ["PoolUses"]


class PoolUses:
    """The loader's methods for ``uses`` (``loader._Loader`` is one)."""

    #: The run's pools: the first plan to declare one (outer plans first) sets it.
    pools: dict[str, PoolSpec]
    #: Each unit's ``uses`` and where: checked once every plan is loaded (``check_uses``).
    used: list[tuple[Mapping[str, int], Scope]]

    if TYPE_CHECKING:

        def problem(self, at: Scope, message: str, *, at_key: bool = False) -> None: ...

    def uses(self, uses: Mapping[str, int] | list[str] | None, at: Scope) -> Mapping[str, int]:
        """The pool units a unit takes (its model checked their form), to be checked
        against the run's pools by ``check_uses`` once they are all known."""
        if not uses:
            return pool_uses(uses, self.pools)  # no pool
        checked = check_uses(uses)
        self.used.append((checked, at))
        return checked

    def check_uses(self) -> None:
        """Every unit's ``uses`` among the run's pools (of every plan loaded, whichever
        declares them): a problem for each pool one names that there is not, or of which it
        takes more units than it has."""
        for uses, at in self.used:
            for message in uses_problems(uses, self.pools):
                self.problem(at.at("uses"), message, at_key=True)
        self.used.clear()
