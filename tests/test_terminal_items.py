"""``{lines: -}`` read from a terminal: the command says so before it waits for the items."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path

from .plans_helpers import write

PLAN = """
name: p
steps:
  - name: typed
    for_each: {lines: "-"}
    subplan: {run: ["sh", "-c", "echo got {item} >> seen.txt"]}
"""

HINT = b"step typed reads its items from standard input, this terminal"


def _read_until(leader: int, wanted: bytes, seen: bytearray) -> None:
    while wanted not in seen:
        chunk = os.read(leader, 65536)
        assert chunk, f"the terminal closed before {wanted!r} came: {bytes(seen)!r}"
        seen += chunk


def test_items_typed_at_the_terminal_after_the_hint(tmp_path: Path) -> None:
    write(tmp_path, "plan.yaml", PLAN)
    env = {**os.environ, "SUBPLANS_CONFIG": str(tmp_path / "none.yaml"), "TERM": "dumb"}
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "subplans", "run", "plan.yaml", "--no-progress"],
        cwd=tmp_path,
        env=env,
        stdin=follower,
        stdout=follower,
        stderr=follower,
    )
    os.close(follower)
    seen = bytearray()
    try:
        _read_until(leader, HINT, seen)
        os.write(leader, b"a\nb\n\x04")  # two items, then end of input (Ctrl-D)
        _read_until(leader, b"completed in", seen)
    finally:
        code = proc.wait(timeout=30)
        os.close(leader)
    assert code == 0, bytes(seen)
    assert sorted((tmp_path / "seen.txt").read_text().splitlines()) == ["got a", "got b"]


def test_no_hint_when_the_items_come_from_a_pipe(tmp_path: Path) -> None:
    write(tmp_path, "plan.yaml", PLAN)
    env = {**os.environ, "SUBPLANS_CONFIG": str(tmp_path / "none.yaml")}
    done = subprocess.run(
        [sys.executable, "-m", "subplans", "run", "plan.yaml", "--no-progress"],
        cwd=tmp_path,
        env=env,
        input="x\n",
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert "standard input, this terminal" not in done.stderr + done.stdout
    assert (tmp_path / "seen.txt").read_text() == "got x\n"
