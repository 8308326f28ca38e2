"""The scheduling fields of plan files and profiles checked: ``halt`` and a unit's ``uses``
of the run's pools.

The rules themselves are the engine's (``HaltPolicy``, ``ParallelExecutionConfig``); this
module only turns what a file or the command line writes into them, with one message shape.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING

from subplans.engine.halting import HaltPolicy

if TYPE_CHECKING:
    from subplans.plans.tree import PoolSpec

#: A unit that uses no pool (shared: a tree is read, never changed).
_NONE: Mapping[str, int] = MappingProxyType({})

__all__ = ["RUN_POOLS", "check_uses", "halt_policy", "pool_uses", "uses_problems"]

#: Why a step (or its profile) may not declare pools, and where they go.
RUN_POOLS = (
    "pools are the run's, shared by every step: declare them in the plan's `pools` (or its "
    "automation_profile) or in the global profile, and take units with `uses`"
)


def halt_policy(value: object) -> HaltPolicy:
    """``value`` (GNU parallel's ``"soon,fail=3%"`` or a ``{when, fail, success}`` mapping) as
    the engine's ``HaltPolicy``.

    Raises:
        ConfigError: a ValueError naming what is wrong, as the engine words it.
    """
    dump = getattr(value, "model_dump", None)  # models.HaltFields
    policy = HaltPolicy.from_value(value if dump is None else dump(exclude_none=True))
    assert policy is not None  # given is never None
    return policy


def check_uses(value: Mapping[str, int] | list[str]) -> dict[str, int]:
    """``uses`` as units by pool name: a list names pools of one unit each, once."""
    if isinstance(value, Mapping):
        return dict(value)
    uses: dict[str, int] = {}
    for name in value:
        if name in uses:
            raise ValueError(f"pool {name!r} is listed twice; write {{{name}: 2}} for two units")
        uses[name] = 1
    return uses


def pool_uses(
    uses: Mapping[str, int] | list[str] | None, pools: Mapping[str, PoolSpec]
) -> Mapping[str, int]:
    """A unit's ``uses`` as units by pool name, each of one of the run's ``pools`` and no more
    than it has; empty (``{}``, ``[]``) or None: no pool.

    Raises:
        ValueError: every pool it names that there is not, or of which it takes more units
            than the pool has, one per line.
    """
    if not uses:
        return _NONE
    checked = check_uses(uses)
    problems = uses_problems(checked, pools)
    if problems:
        raise ValueError("\n".join(problems))
    return checked


def uses_problems(uses: Mapping[str, int], pools: Mapping[str, PoolSpec]) -> list[str]:
    """What is wrong with ``uses`` (checked by ``check_uses``) among the run's ``pools``: one
    line per pool it names that there is not, or of which it takes more units than it has."""
    problems = []
    for name, units in uses.items():
        pool = pools.get(name)
        if pool is None:
            known = ", ".join(sorted(pools)) or "none"
            problems.append(f"unknown pool {name!r}; the run's pools: {known}")
        elif units > pool.size:
            problems.append(f"uses {units} units of pool {name!r}, which has {pool.size}")
    return problems
