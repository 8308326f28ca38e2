"""What a ``DaskBackend`` keeps stays bounded, and what it is given is checked (issue #12
review): claims on the scheduler, stopped tokens on a worker, shipped logs in chunks, the
version of the tree a worker imports, an address Dask cannot parse, a connect cancelled
midway. On an in-process cluster, started and stopped by each test."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import subprocess
import threading
import warnings
from pathlib import Path

import pytest

import subplans
from subplans import BackendError, WorkerLostError
from subplans.cluster import DaskBackend
from subplans.cluster.claims import SLOTS, ClaimBook
from subplans.cluster.handover import CLAIMS, GRACE_VARIABLE, LOG_CHUNK, WORKER_VARIABLE
from subplans.cluster.hearing import CLOSING, LATE_TOKENS, Followed, Hearing
from subplans.cluster.watchdog import watch
from subplans.cluster.worker_tasks import CANCELLED_TOKENS, REGISTRY, subplans_version

from .dask_helpers import BOUND, breaks, in_process_backend, refuses, worker_mark
from .process_helpers import eventually


async def test_the_claims_of_ended_attempts_are_dropped_slot_by_slot(tmp_path: Path) -> None:
    async with in_process_backend() as backend:
        book = backend._attempts.claims = ClaimBook(True, per_slot=2)
        for i in range(12):
            await backend.run_command("true", log_file=tmp_path / f"{i}.log")
        claims = await backend.client.scheduler.get_metadata(keys=[CLAIMS], default={})
        slots = claims[book._backend]
        assert sum(len(tokens) for tokens in slots.values()) <= SLOTS * 2
        await backend.aclose()
        claims = await backend.client.scheduler.get_metadata(keys=[CLAIMS], default={})
        assert claims[book._backend] is None


def test_a_worker_remembers_a_bounded_number_of_stopped_tokens() -> None:
    before = dict(REGISTRY.cancelled)
    try:
        for i in range(CANCELLED_TOKENS + 10):
            REGISTRY.cancel(f"t{i}")
        assert len(REGISTRY.cancelled) == CANCELLED_TOKENS
        assert "t0" not in REGISTRY.cancelled
        assert f"t{CANCELLED_TOKENS + 9}" in REGISTRY.cancelled
    finally:
        REGISTRY.cancelled.clear()
        REGISTRY.cancelled.update(before)


async def test_a_large_shipped_log_comes_back_in_chunks_and_leaves_nothing(
    tmp_path: Path,
) -> None:
    size = LOG_CHUNK + LOG_CHUNK // 2
    log = tmp_path / "big.log"
    async with in_process_backend(shared_logs=False) as backend:
        command = f"head -c {size} /dev/zero | tr '\\0' x; echo; echo done"
        result = await backend.run_command(command, log_file=log, attempt=1, tail_lines=1)
        assert result.output_tail == "done"
        assert REGISTRY._logs is not None
        assert list(REGISTRY._logs.iterdir()) == []  # every worker-local file removed
    data = log.read_bytes()
    assert data.count(b"x") == size
    assert data.endswith(b"\ndone\n")


def test_a_worker_reports_the_version_of_the_tree_it_imports(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(subplans, "__version__", "9.9.9-tree")
    assert subplans_version() == "9.9.9-tree"


async def test_an_address_dask_cannot_parse_is_one_clear_error() -> None:
    with pytest.raises(BackendError, match=r"^cannot reach the Dask scheduler at foo://bar: "):
        await DaskBackend.start("foo://bar", threads=1, timeout=0.2)


async def test_a_connect_cancelled_midway_leaves_no_client_unclosed() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        connecting = asyncio.ensure_future(
            DaskBackend.start("tcp://127.0.0.1:9", threads=1, timeout=5)
        )
        await asyncio.sleep(0)  # it has begun to connect
        await asyncio.sleep(0.05)
        connecting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await connecting
        gc.collect()
    assert [str(w.message) for w in caught if "never awaited" in str(w.message)] == []


async def test_a_slot_still_in_use_is_not_emptied_for_the_next_claims() -> None:
    async with in_process_backend() as backend:
        book = ClaimBook(True, per_slot=1)
        paths = [await book.path(backend.client, f"t{i}") for i in range(SLOTS + 1)]
        # Every slot has an attempt in flight: the last claim stays in the last slot.
        assert [path[2] for path in paths if path] == ["0", "1", "2", "3", "3"]
        book.ended(paths[0])
        assert (await book.path(backend.client, "t9") or ())[2] == "0"
        assert await ClaimBook(False).path(backend.client, "t") is None


async def test_odd_ends_of_an_attempt_are_lost_workers(tmp_path: Path) -> None:
    async with in_process_backend() as backend:
        attempts = backend._attempts
        with pytest.raises(WorkerLostError, match=r"it was run again after that, and refused$"):
            await attempts.run(refuses, label="r", cancel_grace=0)
        with pytest.raises(WorkerLostError, match=r"the cluster failed its task: task broke$"):
            await attempts.run(breaks, label="b", cancel_grace=0)
        assert attempts.lost == 2


async def test_a_removed_worker_that_never_ran_a_queued_attempt_leaves_it_be(
    tmp_path: Path,
) -> None:
    async with in_process_backend(threads=1) as backend:
        started: list[int] = []
        hold = asyncio.ensure_future(
            backend.run_command(
                "sleep 30", log_file=tmp_path / "h.log", on_start=lambda p, _: started.append(p)
            )
        )
        await eventually(lambda: started, timeout=BOUND)
        queued = asyncio.ensure_future(backend.run_command("true", log_file=tmp_path / "q.log"))
        await eventually(lambda: backend.statistics().handed_over == 2, timeout=BOUND)
        [waiting] = [f for f in backend._attempts.followed.values() if f.worker is None]
        hearing = backend._attempts._hearing
        assert hearing is not None
        event = {"action": "remove-worker", "worker": "tcp://other:1", "processing-tasks": []}
        hearing.worker_event("tcp://other:1", (0.0, {**event, "processing-tasks": [waiting.key]}))
        hearing.worker_event("tcp://other:1", (0.0, {"action": "worker-status-change"}))
        await eventually(lambda: not waiting.alarm.done(), timeout=BOUND)  # armed again
        hold.cancel()
        with pytest.raises(asyncio.CancelledError):
            await hold
        assert (await asyncio.wait_for(queued, BOUND)).exit_code == 0
        assert backend.statistics().lost == 0


def test_a_hearing_forgets_the_oldest_late_tokens() -> None:
    class Gone:
        """A client that went away: nothing is subscribed."""

    hearing = Hearing(Gone())
    stopped: list[str] = []
    for i in range(LATE_TOKENS + 1):
        hearing.stop_if_started(f"t{i}", stopped.append)
    hearing.started((0.0, {"token": "t0", "pid": 1, "worker": "w0"}))
    hearing.started((0.0, {"token": "t1", "pid": 1, "worker": "w1"}))
    assert stopped == ["w1"]


def test_an_alarm_is_raised_once() -> None:
    loop = asyncio.new_event_loop()
    try:
        followed = Followed("k", None, None, loop.create_future())
        followed.alert("tcp://a:1")
        followed.alert(CLOSING)
        assert followed.alarm.result() == "tcp://a:1"
    finally:
        loop.close()


async def test_a_driver_whose_cluster_runs_in_its_own_process_never_marks_itself() -> None:
    # Its environment is what every later command of this process inherits: marked, they
    # would all be stopped with the watchdog (commands get the mark in their own env).
    async with in_process_backend() as backend:
        value = await backend.subplan("mark", worker_mark).run()
    assert value is None
    assert REGISTRY.driver_here


def test_the_watchdog_kills_each_command_once_its_own_grace_is_over() -> None:
    def stubborn(**marks: str) -> subprocess.Popen[bytes]:
        env = {**os.environ, WORKER_VARIABLE: "tok-graces", **marks}
        script = "trap '' TERM; echo ready; sleep 30 & wait; sleep 30"
        process = subprocess.Popen(
            ["sh", "-c", script], env=env, start_new_session=True, stdout=subprocess.PIPE
        )
        assert process.stdout is not None
        assert process.stdout.readline() == b"ready\n"  # TERM is ignored from now on
        return process

    quick = stubborn(**{GRACE_VARIABLE: "0.2"})
    unmarked = stubborn()  # a function's child: no grace of its own, the largest
    pipe = iter([b"0.2\n", b"30.0\n"])
    watching = threading.Thread(target=watch, args=("tok-graces", pipe))
    try:
        watching.start()
        assert quick.wait(BOUND) == -9  # killed once its 0.2s were over
        assert unmarked.poll() is None  # still within the largest grace
    finally:
        for process in (quick, unmarked):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # its sleeps too
            process.wait()
            process.stdout.close()  # type: ignore[union-attr]
        watching.join(BOUND)
    assert not watching.is_alive()
