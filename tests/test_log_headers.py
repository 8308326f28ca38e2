"""Log headers (#11, point 8): each attempt of a command subplan opens with one header line
(attempt number, start time) in its log file; a retry and a resume append under their own."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest

from subplans.cli.app import ExitCode
from subplans.engine.errors import CommandFailedError
from subplans.execution.process import run_command
from subplans.execution.spawning import log_header, open_log

from .log_headers import HEADER, attempts, unheaded
from .plans_helpers import write
from .store_support import invoke

pytestmark = pytest.mark.usefixtures("isolated")

# "flaky" fails until the file "fixed" exists, and prints a last line without its end.
FLAKY = """
    name: flaky
    steps:
      - name: work
        retries: 2
        run: "echo try; test -e fixed && exit 0; printf 'no end'; exit 3"
    """


def status_log(run_id: str) -> Path:
    """The log file of the run's only subplan, as ``status --subplans --json`` names it."""
    shown = json.loads(invoke("status", run_id, "--subplans", "--json").stdout)
    return Path(shown["subplans"][0]["log_file"])


def test_the_header_names_the_attempt_and_its_start_in_utc_to_the_millisecond() -> None:
    assert log_header(2, 1796022001.1239) == "--- attempt 2, started 2026-11-30T07:00:01.123Z ---\n"
    assert log_header(1, 1796022001.0, resumed=True) == (
        "--- attempt 1 (resumed), started 2026-11-30T07:00:01.000Z ---\n"
    )
    assert re.fullmatch(HEADER, log_header(12, time.time()))


def test_every_retry_appends_under_its_own_header_on_a_line_of_its_own(tmp_path: Path) -> None:
    write(tmp_path, "plan.yaml", FLAKY)

    result = invoke("run", "plan.yaml", "-q")

    assert result.exit_code == ExitCode.FAILED, result.output
    run_id = json.loads(invoke("runs", "--json").stdout)[0]["id"]
    text = status_log(run_id).read_text()
    assert attempts(text) == ["1", "2", "3"]
    # The last line of each attempt had no end: the next header starts a line anyway.
    assert unheaded(text, 3) == "try\nno end\ntry\nno end\ntry\nno end"
    # The summary's output tail is the last attempt's output, never a header.
    events = [json.loads(line) for line in invoke("events", run_id).stdout.splitlines()]
    (failed,) = [e for e in events if e.get("state") == "failed" and "subplan_id" in e]
    assert failed["error"]["output_tail"] == "try\nno end"


def test_a_resume_appends_its_attempt_under_a_resumed_header(tmp_path: Path) -> None:
    write(tmp_path, "plan.yaml", FLAKY.replace("retries: 2", "retries: 0"))
    assert invoke("run", "plan.yaml", "-q").exit_code == ExitCode.FAILED
    run_id = json.loads(invoke("runs", "--json").stdout)[0]["id"]
    (tmp_path / "fixed").touch()

    result = invoke("resume", run_id, "-q")

    assert result.exit_code == ExitCode.OK, result.output
    text = status_log(run_id).read_text()
    assert attempts(text) == ["1", "1 (resumed)"]
    assert unheaded(text, 2) == "try\nno end\ntry\n"
    tagged = invoke("logs", run_id, "--all").stdout
    assert attempts(tagged) == ["1", "1 (resumed)"]
    assert tagged.startswith("[work] --- attempt 1, started ")


async def test_the_output_tail_and_the_offset_start_after_the_header(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "one.log"
    with pytest.raises(CommandFailedError) as failed:
        await run_command("echo first; exit 1", log_file=log, attempt=1)
    assert failed.value.output_tail == "first"
    done = await run_command("echo second", log_file=log, attempt=2)
    assert done.output_tail == "second"
    assert attempts(log.read_text()) == ["1", "2"]
    assert unheaded(log.read_text(), 2) == "first\nsecond\n"


async def test_without_an_attempt_nothing_but_the_output_is_written(tmp_path: Path) -> None:
    log = tmp_path / "plain.log"
    await run_command("echo plain", log_file=log)
    assert log.read_text() == "plain\n"


def test_open_log_offsets_past_the_header_and_closes_on_a_failed_write(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_text("earlier\n")
    fd, offset = open_log(log, 1)
    os.close(fd)
    text = log.read_text()
    assert offset == len(text.encode())
    assert attempts(text) == ["1 (resumed)"]
    # A header that cannot be written fails the open, and leaves no fd open behind it.
    before = len(os.listdir("/proc/self/fd"))
    with pytest.raises(OSError, match="No space left on device"):
        open_log(Path("/dev/full"), 1)
    assert len(os.listdir("/proc/self/fd")) == before
