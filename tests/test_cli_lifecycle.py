"""RunLifecycle in-process: the one path of ``run`` and ``resume``, reached at its seams (a
``Launch`` that does something at one point of the path) instead of by patching the store."""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer

from subplans.cli.exits import ExitCode, invalid_input, refuse
from subplans.cli.launches import Decision, FreshRun
from subplans.cli.lifecycle import Output, RunLifecycle
from subplans.cli.resuming import ResumedRun
from subplans.cli.session import Outcome, RunSession
from subplans.execution.signal_guard import CommandInterrupted
from subplans.plans.loader import Overrides
from subplans.store import RunStatus, RunStore

from .store_support import load, other_host_owner

PLAN = "name: x\nsteps:\n  - {name: a, run: 'touch ran'}\n"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[RunStore]:
    with RunStore.open(tmp_path / "state.db") as opened:
        yield opened


class Overtaken(FreshRun):
    """Another live run of the same plan is recorded just before this one registers."""

    def register(
        self, store: RunStore, session: RunSession, decision: Decision, *, concurrent: bool
    ) -> None:
        store.start_run("other", self.manifest, owner=other_host_owner())
        super().register(store, session, decision, concurrent=concurrent)


def test_a_run_of_the_plan_that_gets_in_first_refuses_it_and_its_folders_go(
    tmp_path: Path, store: RunStore, capsys: pytest.CaptureFixture[str]
) -> None:
    launch = Overtaken(load(tmp_path, PLAN), Overrides())
    run_dir = tmp_path / ".subplans" / "runs" / launch.run_id

    with pytest.raises(typer.Exit) as exited, invalid_input():
        RunLifecycle(Output(quiet=True)).drive(store, launch)

    assert exited.value.exit_code == ExitCode.INVALID
    assert re.fullmatch(
        r"error: plan \S+/plan\.yaml is already running in the store .*; wait for it to end, "
        r"stop it with `subplans cancel other`, or pass --concurrent to run it anyway\n",
        capsys.readouterr().err,
    )
    assert not run_dir.exists()
    assert run_dir.parent.is_dir()  # not the folder of the other runs
    assert [run.id for run in store.list_runs()] == ["other"]
    assert not (tmp_path / "ran").exists()


class SignalledWhileRegistering(FreshRun):
    """SIGTERM (what ``subplans cancel`` sends) arrives as the run is being recorded."""

    def register(
        self, store: RunStore, session: RunSession, decision: Decision, *, concurrent: bool
    ) -> None:
        super().register(store, session, decision, concurrent=concurrent)
        os.kill(os.getpid(), signal.SIGTERM)  # deferred: noted, not fatal


def test_a_signal_while_the_run_registers_stops_it_cleanly_before_anything_runs(
    tmp_path: Path, store: RunStore, capsys: pytest.CaptureFixture[str]
) -> None:
    """Pins: a SIGTERM (`subplans cancel`) before the run's handlers were in place killed it
    outright, leaving the run 'running' in the store."""
    launch = SignalledWhileRegistering(load(tmp_path, PLAN), Overrides())
    previous = signal.getsignal(signal.SIGTERM)

    end = RunLifecycle(Output(quiet=True)).drive(store, launch)

    assert end.outcome is Outcome.INTERRUPTED
    assert end.warnings == ()
    assert capsys.readouterr().out.startswith("SIGTERM: stopping")
    assert not (tmp_path / "ran").exists()
    assert store.get_run(launch.run_id).recorded_status == RunStatus.CANCELLED
    assert signal.getsignal(signal.SIGTERM) == previous


def test_a_concurrent_lifecycle_runs_next_to_a_live_run_of_the_plan(
    tmp_path: Path, store: RunStore
) -> None:
    plan = load(tmp_path, PLAN)
    first = FreshRun(plan, Overrides())
    store.start_run(first.run_id, first.manifest, owner=other_host_owner())

    with pytest.raises(typer.Exit), invalid_input():
        RunLifecycle(Output(quiet=True)).drive(store, FreshRun(plan, Overrides()))
    end = RunLifecycle(Output(quiet=True), concurrent=True).drive(
        store, FreshRun(plan, Overrides())
    )

    assert end.outcome is Outcome.COMPLETED
    assert (tmp_path / "ran").exists()


def test_reprs_name_the_run(tmp_path: Path, store: RunStore) -> None:
    launch = FreshRun(load(tmp_path, PLAN), Overrides())
    store.start_run("r1", launch.manifest)

    assert repr(launch) == f"<FreshRun 'x' run {launch.run_id}>"
    assert repr(RunLifecycle(Output(), concurrent=True)) == "<RunLifecycle concurrent=True>"
    resumed = ResumedRun(store.get_run("r1"), force=False, rerun_unknown=False, skip_unknown=False)
    assert repr(resumed) == "<ResumedRun r1>"
    assert resumed.run_id == "r1"


class SignalledWhileRefused(FreshRun):
    """SIGTERM arrives while the launch decides, and the launch then refuses the run."""

    def decide(self, store: RunStore) -> Decision:
        os.kill(os.getpid(), signal.SIGTERM)  # deferred: noted, not fatal
        refuse(["the run is refused"])


def test_a_signal_during_a_refusal_keeps_the_refusal_line_and_exits_130(
    tmp_path: Path, store: RunStore, capfd: pytest.CaptureFixture[str]
) -> None:
    """Pins: the refusal's `error:` line was lost, only the interrupt's line was printed."""
    launch = SignalledWhileRefused(load(tmp_path, PLAN), Overrides())

    with pytest.raises(CommandInterrupted) as exited, invalid_input():
        RunLifecycle(Output(quiet=True)).drive(store, launch)

    assert exited.value.code == ExitCode.INTERRUPTED
    assert capfd.readouterr().err == "error: the run is refused\ninterrupted by SIGTERM\n"
    assert store.list_runs() == []
