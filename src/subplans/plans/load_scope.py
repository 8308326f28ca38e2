"""What the loader carries along: where it stands in the plan files (``Scope``), and the
cycle collector paused while it builds a tree."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

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


@dataclass(frozen=True, slots=True)
class Scope:
    """Where the loader stands: a file and a location in it, the id that ids below start with
    ('' in the root plan), how deep plans nest there, and the plan files that led there."""

    file: Path
    loc: Loc
    prefix: str
    depth: int
    #: Resolved paths, to find a plan that includes itself.
    chain: tuple[Path, ...]

    def at(self, *keys: str | int) -> Scope:
        """The same place, ``keys`` further in."""
        return replace(self, loc=(*self.loc, *keys))

    def id_of(self, name: str) -> str:
        """The path id of what is named ``name`` here."""
        return f"{self.prefix}/{name}" if self.prefix else name


def include_loop(chain: tuple[Path, ...], again: Path) -> str:
    """Says that a plan includes itself, through the files of ``chain``."""
    names = " -> ".join(p.name for p in (*chain, again))
    return f"the plan includes itself: {names}"
