"""Helpers shared by the store tests: child processes, plans and fabricated owners (no tests)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from subplans.cli.app import app
from subplans.plans.loader import GlobalConfig, PlanNode, load_plan
from subplans.plans.profiles import ProfileRegistry
from subplans.store import PlanManifest, ProcessIdentity, RunStore
from subplans.store.liveness import boot_id

from .plans_helpers import write

runner = CliRunner()


def invoke(*args: str) -> Any:
    """The ``subplans`` command, in this process."""
    return runner.invoke(app, list(args))


class Child:
    """A Python child process that prints ``ready`` once set up; stopped when the test ends."""

    def __init__(self, code: str, **options: object) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(code)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            **options,  # type: ignore[call-overload]
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if line != "ready\n":
            _, error = self.process.communicate()
            raise AssertionError(f"the child did not get ready: {line!r} {error}")

    @property
    def pid(self) -> int:
        pid: int = self.process.pid
        return pid

    def kill(self) -> int:
        """SIGKILL it and reap it; returns its status."""
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()
        status: int = self.process.wait()
        return status

    def finish(self) -> tuple[str, str]:
        """Close its stdin (its cue to end), and return what it wrote."""
        out, error = self.process.communicate(timeout=4)
        return str(out), str(error)

    def __enter__(self) -> Child:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.process.poll() is None:
            self.kill()
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()


def gone_owner() -> ProcessIdentity:
    """An owner on this host whose process is gone: our pid, with another start time."""
    me = ProcessIdentity.current()
    assert me.start_time is not None
    return ProcessIdentity(me.pid, me.host, me.boot_id, me.start_time - 1)


def other_host_owner() -> ProcessIdentity:
    return ProcessIdentity(1, f"not-{socket.gethostname()}", boot_id(), 1)


def manifest(*subplan_ids: str, step: str = "step") -> PlanManifest:
    return PlanManifest(
        file="plan.yaml",
        name="plan",
        hash="h1",
        profile={"values": {"max_parallel": 4}},
        steps=(step,),
        subplans=tuple((subplan_id, step) for subplan_id in subplan_ids),
    )


def open_store(folder: Path, **options: object) -> RunStore:
    return RunStore.open(folder / ".subplans" / "state.db", **options)  # type: ignore[arg-type]


def no_config(folder: Path) -> GlobalConfig:
    return GlobalConfig(folder / "no-config.yaml", False, ProfileRegistry(), None)


def load(folder: Path, text: str, name: str = "plan.yaml") -> PlanNode:
    return load_plan(write(folder, name, text), config=no_config(folder))


@contextlib.contextmanager
def unwritable(path: Path) -> Iterator[None]:
    """Make ``path`` unwritable, even for root (with the immutable attribute), for a while."""
    if os.geteuid() != 0:
        mode = path.stat().st_mode
        path.chmod(0o555 if path.is_dir() else 0o444)
        try:
            yield
        finally:
            path.chmod(mode)
        return
    if (
        shutil.which("chattr") is None
        or subprocess.run(["chattr", "+i", str(path)], capture_output=True, check=False).returncode
    ):
        pytest.skip("root may write anywhere, and this filesystem has no immutable files")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def start_group(command: str) -> subprocess.Popen[bytes]:
    """``command`` through the shell in a process group of its own, as run_command starts it."""
    return subprocess.Popen(["/bin/sh", "-c", command], start_new_session=True)


def stop(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


# Two subplans wait for the file "go"; the third waits for a free slot.
GATED = """
    name: gated
    automation_profile: {max_parallel: 2, cancel_grace: 1}
    steps:
      - name: work
        for_each: [a, b, c]
        subplan:
          run: "while [ ! -e go ]; do sleep 0.01; done; echo {item}"
      - name: after
        run: "true"
    """
