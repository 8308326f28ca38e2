"""Which run store a command uses, and opening it: created for a run, never for the commands
about past runs."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from subplans.store import RunStore

__all__ = ["opened", "store_path"]


def store_path(store: Path | None) -> Path:
    """``--store`` if given, else ``$SUBPLANS_STORE``, else ``./.subplans/state.db``."""
    from subplans.store import default_store_path

    return store if store is not None else default_store_path()


@contextlib.contextmanager
def opened(path: Path, *, existing: bool = False, readonly: bool = False) -> Iterator[RunStore]:
    """The store at ``path``, created unless ``existing`` or ``readonly``: the commands about
    past runs never create one. ``readonly`` skips the proof that it can be written."""
    from subplans.store import RunStore

    if existing and not path.exists():
        RunStore.open(path, readonly=True)  # raises: "no store there yet"
    with RunStore.open(path, readonly=readonly) as store:
        yield store
