"""Which run store a command uses, opening it (created for a run, never for the commands about
past runs, which say where they looked and which store below they could use instead), and the
run a command's RUN_ID names in it."""

from __future__ import annotations

import contextlib
import os
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from subplans.store import RunInfo, RunStore

__all__ = ["LATEST", "find_run", "missing_store", "opened", "store_path", "stores_below"]

#: The RUN_ID that names the most recently started run of a store.
LATEST = "latest"
#: How many folders below the current one ``stores_below`` looks into, and at most how many
#: folder entries it reads: a hint must never make a command slow.
_DEPTH = 3
_MAX_ENTRIES = 20_000
#: Folders that hold no plan of ours but may hold many files (and virtual environments,
#: known by their ``pyvenv.cfg``).
_SKIPPED = frozenset({"node_modules", "__pycache__", "site-packages"})
#: The candidates an ambiguous RUN_ID lists.
_MAX_CANDIDATES = 10


def store_path(store: Path | None) -> Path:
    """``--store`` if given, else ``$SUBPLANS_STORE``, else ``./.subplans/state.db``."""
    from subplans.store import default_store_path

    return store if store is not None else default_store_path()


@contextlib.contextmanager
def opened(path: Path, *, existing: bool = False, readonly: bool = False) -> Iterator[RunStore]:
    """The store at ``path``, created unless ``existing`` or ``readonly``: the commands about
    past runs never create one. ``readonly`` skips the proof that it can be written.

    Raises:
        StoreError: no store at ``path`` (when it may not be created), naming where it looked
            and the one store below the current folder, if there is one; or it cannot be used.
    """
    from subplans.store import RunStore, StoreError

    if (existing or readonly) and not path.exists():
        raise StoreError(f"cannot open the store {path}: {missing_store(path)}")
    with RunStore.open(path, readonly=readonly) as store:
        yield store


def missing_store(path: Path) -> str:
    """Why a command found no store at ``path``: where it looked and, if there is exactly one
    store in the folders below the current one, that one and the ``--store`` that uses it."""
    said = "no store there yet"
    if not path.is_absolute():
        said += f" (looked for {Path.cwd() / path})"
    found = stores_below(Path())
    if len(found) == 1:
        said += f"; the one store in the folders below is {found[0]}: add --store "
        said += shlex.quote(str(found[0]))
    return said


def stores_below(folder: Path, *, depth: int = _DEPTH, limit: int = _MAX_ENTRIES) -> list[Path]:
    """The default stores (``.subplans/state.db``) in the folders below ``folder``, up to
    ``depth`` levels, each as ``folder`` joined with its path; it stops at the second one found
    (one is a hint, two are a choice it does not make) or after reading ``limit`` entries.
    Hidden folders, virtual environments and ``node_modules`` are not looked into."""
    found: list[Path] = []
    level, entries = [folder], 0
    for _ in range(depth):
        deeper: list[Path] = []
        for parent in level:
            with contextlib.suppress(OSError), os.scandir(parent) as children:
                for child in children:
                    entries += 1
                    if entries > limit:
                        return found
                    if not _searched(child):
                        continue
                    here = Path(parent, child.name)
                    if (here / ".subplans" / "state.db").is_file():
                        found.append(here / ".subplans" / "state.db")
                        if len(found) > 1:
                            return found
                    deeper.append(here)
        level = deeper
    return found


def _searched(entry: os.DirEntry[str]) -> bool:
    """Whether ``stores_below`` looks into this folder entry."""
    if entry.name.startswith(".") or entry.name in _SKIPPED:
        return False
    # An entry that cannot be looked at ends the look into its folder (OSError, above).
    return entry.is_dir(follow_symlinks=False) and not os.path.exists(
        os.path.join(entry.path, "pyvenv.cfg")
    )


def find_run(db: RunStore, run_id: str | None) -> RunInfo:
    """The run that a command's RUN_ID names: a run id, a unique prefix of one, or ``latest``
    (also when none is given), the most recently started run of the store. Every command that
    takes a RUN_ID resolves it here.

    Raises:
        RunNotFoundError: no run in the store, or none whose id is or starts with ``run_id``.
        exits.refuse: ``run_id`` is the start of several run ids (they are listed, newest
            first).
    """
    from subplans.cli.exits import refuse
    from subplans.cli.listings import candidate_lines
    from subplans.store import RunNotFoundError

    if run_id is None or run_id == LATEST:
        return db.get_run()
    ids = db.run_ids(run_id)
    if run_id in ids:
        return db.get_run(run_id)
    if not ids:
        raise RunNotFoundError(f"no run {run_id} in the store {db.path}")
    if len(ids) > 1:
        candidates = [db.get_run(found) for found in ids[:_MAX_CANDIDATES]]
        refuse(
            [
                f"run id {run_id!r} is ambiguous: {len(ids)} runs of the store {db.path} start "
                "with it; give more of it"
            ],
            preface="\n".join(candidate_lines(candidates, more=len(ids) - len(candidates))),
        )
    return db.get_run(ids[0])
