"""Classes of the engine, the execution layer and the store that were dataclasses (issue #10:
building each cost the command's start a third of a millisecond, and a frozen one's
``__init__`` twice a plain one's): they still show themselves as a dataclass would, and those
that are compared compare by their fields."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from subplans.engine.clock import Clock
from subplans.engine.dispatcher import ParallelSubplanDispatcher
from subplans.engine.limiter import AsyncSemaphoreLimiter
from subplans.engine.progress import Failure
from subplans.execution.finding import Family, Leader
from subplans.execution.live_limits import LiveLimits
from subplans.execution.procfs import ProcessInfo, Window
from subplans.execution.run_context import RunContext
from subplans.execution.step_items import RecordedItems
from subplans.plans.loader import GlobalConfig, load_plan
from subplans.plans.profiles import ProfileRegistry
from subplans.store.schema import MIGRATIONS, Migration
from subplans.store.writer_frames import WriterOptions

from .plans_helpers import write


def test_values_show_their_fields_as_a_dataclass_does() -> None:
    # A kernel thread's flag is left out, as the dataclass left it out.
    assert repr(ProcessInfo(7, 1, 7, 7, 123, "S", kernel=True)) == (
        "ProcessInfo(pid=7, ppid=1, pgid=7, sid=7, start_time=123, state='S')"
    )
    assert repr(Window(10, 20)) == "Window(last_pid=10, forks=20)"
    assert repr(Family((Leader(7, 123),), (b"A=1",), Window(6, 20))) == (
        "Family(roots=(Leader(pid=7, start_time=123),), marker=(b'A=1',), "
        "since=Window(last_pid=6, forks=20))"
    )
    assert repr(Clock(time.time, time.monotonic)) == (
        "Clock(now=<built-in function time>, monotonic=<built-in function monotonic>)"
    )
    assert repr(Failure("s/a", None, 1.5)) == "Failure(subplan_id='s/a', error=None, at=1.5)"
    assert repr(RecordedItems("lines of 'a.txt'", ("x",))) == (
        "RecordedItems(source=\"lines of 'a.txt'\", items=('x',))"
    )
    assert repr(Migration("one", ("CREATE TABLE a (x)", "CREATE TABLE b (y)"))) == (
        "<Migration 'one': 2 statements>"
    )
    assert repr(MIGRATIONS[0]).startswith("<Migration 'runs, steps, subplans and events': ")


def test_process_info_keeps_its_fields() -> None:
    process = ProcessInfo(7, 1, 8, 9, 123, "Z")
    assert (process.pid, process.ppid, process.pgid, process.sid) == (7, 1, 8, 9)
    assert (process.start_time, process.state, process.kernel, process.live) == (
        123,
        "Z",
        False,
        False,
    )
    empty = Family()
    assert (empty.roots, empty.marker, empty.since) == ((), (), None)


def test_recorded_items_compare_by_their_fields() -> None:
    one = RecordedItems("lines of 'a.txt'", ("x", "y"))
    assert one == RecordedItems("lines of 'a.txt'", ("x", "y"))
    assert one != RecordedItems("lines of 'a.txt'", ("x",))
    assert one != RecordedItems("lines of 'b.txt'", ("x", "y"))
    assert one != "a"
    assert one.__eq__("a") is NotImplemented  # another type decides, as with a dataclass


def test_writer_options_cross_the_pipe_as_json_and_back() -> None:
    options = WriterOptions("/s/state.db", "state.db", "r1", True, 0.05, 500, 5.0, 64, 1.0, 9, 8)
    sent = json.loads(json.dumps(options.to_dict()))
    assert sent == {
        "path": "/s/state.db",
        "name": "state.db",
        "run_id": "r1",
        "durable": True,
        "batch_delay": 0.05,
        "max_batch": 500,
        "timeout": 5.0,
        "eager": 64,
        "idle": 1.0,
        "checkpoint_after": 9,
        "chunk": 8,
    }
    assert WriterOptions(**sent).to_dict() == sent
    assert repr(options) == "<WriterOptions of run r1 in state.db>"


def test_a_run_context_made_from_another_shares_its_log_names(tmp_path: Path) -> None:
    context = RunContext("r1", tmp_path, environ={"A": "1"})
    assert repr(context) == f"<RunContext r1 in {tmp_path}>"
    first = context.log_file("s/a")
    budget = AsyncSemaphoreLimiter(2)
    rooted = context.with_budget(budget)
    again = rooted.within_attempt("s/inner attempt 2")
    assert (rooted.budget, rooted.within) == (budget, "")
    assert (again.budget, again.within) == (budget, "s/inner attempt 2")
    assert (context.budget, context.within) == (None, "")
    for made in (rooted, again):
        assert (made.run_id, made.run_dir, made.environ) == ("r1", tmp_path, {"A": "1"})
        assert made.groups is context.groups
        assert made.clock is context.clock
        assert made.log_file("s/a") == first
    assert again.log_file("s/b") == tmp_path / "logs" / "s__b.log"
    assert context.log_file("s/b") == tmp_path / "logs" / "s__b.log"  # one name in the run


async def test_live_limits_show_what_changed(tmp_path: Path) -> None:
    path = write(
        tmp_path, "plan.yaml", "name: p\npools: {api: 2}\nsteps:\n  - {name: one, run: 'true'}\n"
    )
    config = GlobalConfig(tmp_path / "none.yaml", False, ProfileRegistry(), None)
    plan = load_plan(path, config=config)
    limits = LiveLimits(plan, {"api": AsyncSemaphoreLimiter(2)})
    limits.set("max_parallel", 3)
    with limits.running(plan.steps[0], ParallelSubplanDispatcher(), None):
        assert repr(limits) == (
            "<LiveLimits of 'p': run 3, steps {}, pools ['api'], 1 steps running>"
        )
    assert repr(limits).endswith(", 0 steps running>")


def test_limit_records_are_handed_on_by_limits_as_before() -> None:
    """``LimitRecord`` is in ``run_details`` (a run that is asked nothing never builds one),
    and importable from ``store.limits`` as ever."""
    import subplans.store.limits as limits
    from subplans.store.run_details import LimitRecord

    assert limits.LimitRecord is LimitRecord
    with pytest.raises(
        AttributeError, match=r"^module 'subplans.store.limits' has no attribute 'x'$"
    ):
        limits.x  # noqa: B018
