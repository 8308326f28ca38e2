"""What the loader carries along: where it stands in the plan files (``Scope``), and the
cycle collector paused while it builds a tree."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

from subplans.engine.values import Value
from subplans.plans.yamlfile import Loc

__all__ = ["Scope", "collector_paused", "include_loop"]


@contextmanager
def collector_paused() -> Iterator[None]:
    """Python's cycle collector paused while a tree is built: a million-item plan is millions
    of objects that all live on, and the collector's full passes over the growing heap took
    about 40% of loading it. Unreachable cycles are collected when it runs again."""
    if not gc.isenabled():  # paused by the caller, who resumes it
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


class Scope(Value):
    """Where the loader stands: a file and a location in it, the id that ids below start with
    ('' in the root plan), how deep plans nest there, and the plan files that led there."""

    # A plain class: a dataclass costs the command's start half a millisecond to build (#10).
    __slots__ = ("chain", "depth", "file", "loc", "prefix")
    _fields = ("file", "loc", "prefix", "depth", "chain")

    def __init__(
        self, file: Path, loc: Loc, prefix: str, depth: int, chain: tuple[Path, ...]
    ) -> None:
        self.file: Final = file
        self.loc: Final = loc
        self.prefix: Final = prefix
        self.depth: Final = depth
        #: Resolved paths, to find a plan that includes itself.
        self.chain: Final = chain

    def at(self, *keys: str | int) -> Scope:
        """The same place, ``keys`` further in."""
        return Scope(self.file, (*self.loc, *keys), self.prefix, self.depth, self.chain)

    def in_file(self, file: Path, loc: Loc) -> Scope:
        """The same plan, at ``loc`` of another ``file`` (its action file)."""
        return Scope(file, loc, self.prefix, self.depth, self.chain)

    def id_of(self, name: str) -> str:
        """The path id of what is named ``name`` here."""
        return f"{self.prefix}/{name}" if self.prefix else name


def include_loop(chain: tuple[Path, ...], again: Path) -> str:
    """Says that a plan includes itself, through the files of ``chain``."""
    names = " -> ".join(p.name for p in (*chain, again))
    return f"the plan includes itself: {names}"
