"""A store being made while others open it (``subplans status`` as a run starts, two runs
starting at once): nobody fails, and no draft is left behind. Before, a reader opening the
half-made file failed the run's open ("database is locked") about once in 30."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

from subplans.engine.errors import StoreError
from subplans.store import PlanManifest, RunStore, opening

ROUNDS = 200


def drafts(folder: Path) -> list[str]:
    """What is left of stores made under a name of their own (``.state.db.PID.RANDOM.new``)."""
    return [p.name for p in folder.iterdir() if p.name.startswith(".state.db.")]


def test_a_reader_opening_a_store_as_it_is_made_fails_neither(tmp_path: Path) -> None:
    problems: list[str] = []
    for round_ in range(ROUNDS):
        path = tmp_path / f"r{round_}" / "state.db"
        done = threading.Event()

        def reader(path: Path = path, done: threading.Event = done) -> None:
            while not done.is_set():
                if path.exists():
                    try:
                        with RunStore.open(path, readonly=True) as store:
                            store.list_runs()
                    except StoreError as error:
                        problems.append(f"reader: {error}")

        looking = threading.Thread(target=reader)
        looking.start()
        try:
            with RunStore.open(path) as store:
                store.list_runs()
        except StoreError as error:
            problems.append(f"maker: {error}")
        finally:
            done.set()
            looking.join()
        assert drafts(path.parent) == []
    assert problems == []


def test_two_makers_at_once_open_one_store(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    manifest = PlanManifest(file="plan.yaml", steps=("s",), subplans=(("a", "s"),))
    errors: list[BaseException] = []
    ready = threading.Barrier(2)

    def make(run_id: str) -> None:
        ready.wait()
        try:
            with RunStore.open(path) as store:
                store.start_run(run_id, manifest)
        except BaseException as error:  # (reported below)
            errors.append(error)

    makers = [threading.Thread(target=make, args=(f"r{i}",)) for i in range(2)]
    for maker in makers:
        maker.start()
    for maker in makers:
        maker.join()
    assert errors == []
    with RunStore.open(path, readonly=True) as store:
        assert sorted(run.id for run in store.list_runs()) == ["r0", "r1"]
    assert drafts(tmp_path) == []


def test_a_store_another_process_made_first_is_the_one_opened(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    manifest = PlanManifest(file="plan.yaml", steps=("s",), subplans=(("a", "s"),))
    with RunStore.open(path) as store:
        store.start_run("theirs", manifest)
    assert opening._made(path, 5.0)  # its draft is not linked over theirs
    with RunStore.open(path) as store:
        assert [run.id for run in store.list_runs()] == ["theirs"]
    assert drafts(tmp_path) == []


def test_a_draft_whose_maker_was_killed_is_removed_by_the_next_maker(tmp_path: Path) -> None:
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    dead = int(gone.stdout)
    left = [tmp_path / f".state.db.{dead}.0badf00d.new{end}" for end in ("", "-wal", "-shm")]
    live = tmp_path / f".state.db.{os.getpid()}.12345678.new"  # a maker still at work
    other = tmp_path / f".other.db.{dead}.0badf00d.new"  # another store's
    for path in (*left, live, other):
        path.write_bytes(b"")
    with RunStore.open(tmp_path / "state.db") as store:
        store.list_runs()
    assert drafts(tmp_path) == [live.name]
    assert other.exists()
