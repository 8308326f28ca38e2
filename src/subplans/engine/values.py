"""A frozen dataclass's repr, equality and hash for plain slotted classes, with nothing to build.

Python 3.11 builds a dataclass by compiling its methods as its module is imported (0.2-0.5 ms
each): the value types a run builds at start-up are plain classes instead (#10). ``Value``
gives them back what a frozen dataclass gave (``Shown``: the repr alone, for a former mutable
one), with generic methods that read the subclass's ``_fields`` when called: nothing is
compiled at import, and building an object costs nothing more (defining a subclass, about 2
microseconds).
"""

from __future__ import annotations

from typing import ClassVar

__all__ = ["Shown", "Value"]


def _shown(self: Shown | Value) -> str:
    """``Name(a=1, b='x')``: each of ``_fields`` as a dataclass shows its fields."""
    shown = ", ".join([f"{name}={getattr(self, name)!r}" for name in self._fields])
    return f"{type(self).__qualname__}({shown})"


class Shown:
    """Shown by ``_fields`` as a dataclass is by its fields, for a class that was a mutable
    dataclass: it keeps the identity equality of a plain object.

    ``_fields``: the attributes a dataclass would show, in its field order.
    """

    __slots__ = ()

    _fields: ClassVar[tuple[str, ...]]

    __repr__ = _shown


# Not a subclass of Shown: each class more between a subclass and ``object`` costs defining
# the subclass about 2 microseconds more (callgrind: 10k instructions).
class Value:
    """Shown, compared and hashed by ``_fields``, as a frozen dataclass is by its fields.

    ``_fields``: the attributes a dataclass would show and compare, in its field order (one
    declared ``repr=False, compare=False`` left out). Equal only to an object of the very same
    class with equal fields (``NotImplemented`` for any other); hashing fails as the
    dataclass's did when a field is unhashable (a dict). A subclass keeps its own ``__repr__``
    where it means another.
    """

    __slots__ = ()

    _fields: ClassVar[tuple[str, ...]]

    __repr__ = _shown

    def _values(self) -> tuple[object, ...]:
        return tuple([getattr(self, name) for name in self._fields])

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, Value)  # for the checker: the same class
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())
