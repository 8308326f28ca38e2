"""Where a backend's attempts claim their tokens on the scheduler, kept bounded.

A scheduler of one's own may run the task of a lost worker again elsewhere: each attempt first
claims its token in the scheduler's metadata, and a second run finds it claimed and refuses to
start. The scheduler's metadata has no delete, so the claims of one backend go to a few slots
(``[CLAIMS, backend, slot, token]``) used in turn: a slot is emptied before it is used again,
once every attempt that claimed in it has ended. So the claims held are at most a few slots'
worth, whatever the number of attempts; ``close`` drops the backend's whole entry.
"""

from __future__ import annotations

import secrets
from typing import Any

from subplans.cluster.handover import CLAIMS

# distributed's types are loose and partly untyped: its objects are ``Any`` here.

__all__ = ["ClaimBook"]

#: Slots a backend uses in turn, and how many attempts claim in one before the next is taken.
SLOTS = 4
PER_SLOT = 256


class ClaimBook:
    """The claim paths of one backend's attempts (None for all: claims are off)."""

    __slots__ = ("_backend", "_claimed", "_in_flight", "_per_slot", "_slot", "enabled")

    def __init__(self, enabled: bool, *, per_slot: int = PER_SLOT) -> None:
        self.enabled = enabled
        self._per_slot = per_slot
        self._backend = secrets.token_hex(6)
        self._slot = 0
        self._in_flight = [0] * SLOTS
        self._claimed = 0

    async def path(self, client: Any, token: str) -> tuple[str, ...] | None:
        """Where ``token`` claims; moves on to the next slot (emptied first) when the current
        one is full and the next has no attempt in flight."""
        if not self.enabled:
            return None
        if self._claimed >= self._per_slot:
            following = (self._slot + 1) % SLOTS
            if self._in_flight[following] == 0:
                keys = [CLAIMS, self._backend, str(following)]
                await client.scheduler.set_metadata(keys=keys, value={})
                self._slot, self._claimed = following, 0
        self._claimed += 1
        self._in_flight[self._slot] += 1
        return (CLAIMS, self._backend, str(self._slot), token)

    def ended(self, path: tuple[str, ...] | None) -> None:
        """The attempt that claimed at ``path`` has ended."""
        if path is not None:
            self._in_flight[int(path[2])] -= 1

    async def close(self, client: Any) -> None:
        """Drop every claim of this backend (its attempts have all ended)."""
        if self.enabled:
            await client.scheduler.set_metadata(keys=[CLAIMS, self._backend], value=None)
