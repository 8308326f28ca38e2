"""Finding a repeated subplan id: in a whole list before anything runs, or one id at a time as
a lazy input is pulled, in little more memory than the results the dispatch returns.

A hash set costs 32 to 48 bytes an id (its table, and the old one while it grows): 40 MB for a
million, past what a dispatch of a million subplans may take beside its results (issue #10:
200 MB). So up to ``SET_UP_TO`` ids a set is used, and beyond it:

- a whole list is sorted by id (8 to 12 bytes an id, O(n log n): ids that come in order, as
  generated ones mostly do, sort in a few merges, 44 ms for a million against 290 ms for the
  set; shuffled ones take longer);
- a lazy input's ids go in a ``CompactIds``: an open-addressing table of positions in the
  dispatch's entries (4 bytes a slot, at most half full), whose ids the entries hold
  already. Probing it is Python, about 0.3 us an id against 0.1 us for the set;
- a stream, which keeps no ended subplan to point at, keeps its ids in a ``NumberedIds``:
  counting ids as a run of numbers, so a long stream of generated ids costs next to nothing.
"""

from __future__ import annotations

from array import array
from itertools import islice
from operator import attrgetter, eq
from typing import Any

from subplans.engine.errors import SubplanError
from subplans.engine.subplan import Subplan

__all__ = ["SET_UP_TO", "CompactIds", "NumberedIds", "has_duplicates", "reject_duplicates"]

#: Up to this many ids a hash set finds a repeated one; beyond, the ways above.
SET_UP_TO = 1 << 17

_id = attrgetter("id")


def has_duplicates(subplans: list[Subplan]) -> bool:
    if len(subplans) <= SET_UP_TO:
        return len(set(map(_id, subplans))) != len(subplans)
    ids = sorted(map(_id, subplans))
    return any(map(eq, ids, islice(ids, 1, None)))


def reject_duplicates(subplans: list[Subplan]) -> None:
    """Raise SubplanError for the first id seen twice; called when there is one."""
    seen: set[str] = set()
    for subplan in subplans:  # pragma: no branch (never runs out: there is a duplicate)
        if subplan.id in seen:
            raise SubplanError(f"duplicate subplan id {subplan.id!r}")
        seen.add(subplan.id)


class CompactIds:
    """The ids of ``entries`` (each a subplan or its result), as their positions plus one in a
    linearly probed table of 4-byte slots; 0 is a free slot."""

    __slots__ = ("count", "entries", "mask", "table")

    def __init__(self, entries: list[Any]) -> None:
        self.entries = entries
        self.table = array("I")
        self.mask = self.count = 0
        self._resize(len(entries) * 2)
        for index, entry in enumerate(entries):
            self.first(_entry_id(entry), index)  # (a repeated one, rejected, is left out)

    def first(self, subplan_id: str, index: int) -> bool:
        """Whether ``subplan_id`` is new; then it is entry ``index`` from now on."""
        table, mask, entries = self.table, self.mask, self.entries
        slot = hash(subplan_id) & mask
        while position := table[slot]:
            entry = entries[position - 1]
            if (entry.id if type(entry) is Subplan else entry.subplan_id) == subplan_id:
                return False
            slot = (slot + 1) & mask
        table[slot] = index + 1
        self.count += 1
        if self.count * 2 > len(table):
            self._resize(len(table) * 2)
        return True

    def _resize(self, size: int) -> None:
        """Move to a table of at least ``size`` slots (a power of two)."""
        old, entries = self.table, self.entries
        size = 1 << max(size - 1, 1023).bit_length()
        self.table = table = array("I", bytes(4 * size))
        self.mask = mask = size - 1
        for position in old:
            if position:
                slot = hash(_entry_id(entries[position - 1])) & mask
                while table[slot]:
                    slot = (slot + 1) & mask
                table[slot] = position


def _entry_id(entry: Any) -> str:
    return entry.id if type(entry) is Subplan else entry.subplan_id


class NumberedIds:
    """A set of ids that keeps counting ones as a run: ``s0`` to ``s9999999`` is two numbers.

    A stream keeps no ended subplan, yet a repeated id must still be refused exactly, whenever
    it comes (a subplan run twice is work done twice). Generated ids mostly are a stem and a
    number counting up (or down), so each stem keeps one run of consecutive numbers, the first
    it saw, grown at either end; every other id (one outside its stem's run and not next to it,
    one without a number, a number written with a leading zero) is kept as it is. Each id costs
    O(1) time; a stream of 10,000,000 counting ids keeps one run, one of random ids keeps them.
    """

    __slots__ = ("count", "others", "runs")

    def __init__(self) -> None:
        #: stem -> [start, end]: every number in [start, end) was seen with that stem.
        self.runs: dict[str, list[int]] = {}
        self.others: set[str] = set()
        self.count = 0

    def __repr__(self) -> str:
        return f"<NumberedIds count={self.count} runs={len(self.runs)} others={len(self.others)}>"

    def __len__(self) -> int:
        return self.count

    def __contains__(self, subplan_id: str) -> bool:
        if subplan_id in self.others:
            return True
        stem = subplan_id.rstrip(_DIGITS)
        digits = subplan_id[len(stem) :]
        run = self.runs.get(stem) if _numbered(digits) else None
        return run is not None and run[0] <= int(digits) < run[1]

    def add(self, subplan_id: str) -> None:
        """Keep ``subplan_id``, which is not kept yet."""
        self.count += 1
        stem = subplan_id.rstrip(_DIGITS)
        digits = subplan_id[len(stem) :]
        if _numbered(digits):
            number = int(digits)
            run = self.runs.get(stem)
            if run is None:
                self.runs[stem] = [number, number + 1]
                return
            if number == run[1]:  # the next one up: the common case
                run[1] = number + 1
                return
            if number == run[0] - 1:
                run[0] = number
                return
        self.others.add(subplan_id)


_DIGITS = "0123456789"


def _numbered(digits: str) -> bool:
    """Whether ``digits`` is a number written one way only (so that its id is one only)."""
    # (Up to 18 digits: int() refuses very long ones, and such an id is no counter.)
    return 0 < len(digits) < 19 and (digits[0] != "0" or digits == "0")
