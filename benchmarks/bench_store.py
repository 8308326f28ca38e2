"""What the run store costs a run, side by side in one process: the store on and off.

Run with ``python benchmarks/bench_store.py``. 10,000 no-op callable subplans at max_parallel=32
go through ``ParallelSubplanDispatcher`` with an ``EventBus``: once with a no-op subscriber
(off, the baseline), once with a ``RunRecorder`` subscribed (on), counting until ``aclose()``
returns, that is until every event is committed and the terminal states are fsynced. Rounds are
interleaved so that machine noise hits both alike; the row is on / off, of the medians and of
the best rounds (target: <= 1.5x). Process CPU time is printed beside it, and the writer
process's own (it runs on another core: on a machine without a free one, its time is the
run's too). Registering the run (``start_run`` with its 10,000 subplans, once per run) is timed
apart. Never part of pass/fail: the machine is shared and noisy.

What was slow, and what changed (issue #10; 2 cores shared with other jobs, medians):

- ``RunRecorder()`` read every subplan id of the run as a row of its own (10,000 tuples) while
  the caller waited for the writer to be ready: now one ``json_group_array`` that SQLite builds
  with the GIL released and ``json.loads`` reads in C (the constructor: 7.7 -> 4.1 ms).
- The last statement of each row kind in a batch had a row count of its own, so SQLite prepared
  it anew every batch (about 1 us per row, as long as inserting it): statements now come in
  ``chunk`` rows and powers of two, each prepared once per connection (``statements``).
- Each batch copied the set of subplans that have a row (10,000 ids) so that a failed batch
  could be rolled back: the builder now logs what it adds since the batch began.
- The bus called ``RunRecorder.handle``, a Python frame per event on the event loop: the bus
  now calls the queue's ``put`` (C) directly; ``handle`` stays for direct callers.
- Building rows: one cached (state text, payload tail, what it does to the row) per kind of
  error-free state change, instead of three lookups per event; a batch is told from the flush
  markers queued with it by the set of its types, not a Python loop over its events.
- ``start_run`` registered the subplans with ``executemany`` (a statement step, and a GIL
  release, per row): now multi-row statements (19.5 -> 12.4 ms for 10,000 subplans).

Side by side with the previous recorder (one process, 11 interleaved rounds, on a machine that
other jobs kept busy), on / off did not move beyond the noise: 2.4-2.8x for both, medians and
bests; larger statements (1,024 rows), a shorter GIL switch interval, ``UPDATE ... FROM
(VALUES ...)`` for the subplans and ``secure_delete`` off were tried and were no faster.

Second pass (issue #10, profiled with callgrind, whose instruction counts do not depend on the
load of the machine, and per-thread CPU time):

- The writer took the queue one ``get_nowait`` at a time, a Python frame per event (and, with a
  flush queued, two more passes over the batch to find it): now ``starmap`` over ``qsize()``
  items and ``compress``, in C.
- The row builder kept every subplan's last state as a named row in one dict, which the writer
  then split by kind: error-free ends (most) now go to a dict of their own as the plain tuples
  their statement binds, failures through a method of their own (1.47 -> 1.21 us per subplan).
- Subplan rows, and ``start_run``'s registrations, are written in the order of the table's key:
  SQLite then finds each row next to the last one (an upsert 1.17 -> 1.03 us in this benchmark's
  order, 2.2 -> 1.0 us in random order; ``start_run`` 22% fewer instructions).

Side by side (one process, 21 interleaved rounds, machine busy): on / off 2.63x -> 2.50x median,
2.38x -> 2.29x best; process CPU 2.59x -> 2.45x; instructions 2.24x -> 2.12x. The target
(1.5x) is not met, and cannot be by trimming: per subplan the dispatch costs about 63,000
instructions and the store adds about 70,000, of which writing the rows is about 42,000 (three
event rows at about 7,800 each and the upsert of the subplan's row at about 19,000, binding
included: SQLite's own work for this schema), the collector about 5,000 (the queued events
outlive the young generation) and building rows, the commit and the rest about 22,000.

Nor does a second core help today: while the event loop is busy, the writer thread is starved
of the GIL (the loop releases it around every ``epoll`` and takes it back before the woken
writer can, which also restarts the writer's switch-interval wait). In one run the writer
started 2 statements during the 58 ms of dispatch and 179 after it: the final flush is all the
writing (the quiet-run figure, 5.7 of 11.2 us per subplan, shows the same). Overlapping the
writing with the dispatch would need a batch written by few statements, each running long with
the GIL released, and the loop letting the writer have the GIL between them; the one-statement
transport at hand, a batch's rows as one JSON text read with ``json_each``, costs five times the
instructions of binding them (SQLite 3.40), so it was not taken.

Third pass, schema 3 (issue #10; per-thread CPU time, and the committed store beside this one
in interleaved processes, machine shared):

- What was slow: three event rows per subplan (about 7,800 SQLite instructions each) and the
  subplan's upsert; the writer starved of the GIL, so it all landed in the final flush.
- What changed: a batch's events are one row of ``event_chunks`` (``store/event_chunks``), a
  JSON array per event behind a view named ``events``. An error-free state change (most
  events) is written by hand as ``[time, subplan_id, previous, state, attempt]`` from a cached
  tail, its time an integer of 2**-22 s (exact for any epoch time since 2004; a float's
  ``repr`` costs 370 ns, the integer 80). Writing 10,000 subplans' 30,002 events in one batch:
  6.6-8.8 -> 3.7-4.4 us per subplan (the chunk's insert 0.1-0.3, building rows 1.8-2.0 in
  Python, the subplans' upsert 1.1). The writer now keeps up during the dispatch: the final
  flush fell from about 5 to 0.3-2 us per subplan.
- Side by side (three interleaved process pairs, twice): on / off 2.34-2.65x -> 2.03-2.23x
  median (best rounds 2.05-2.83x -> 1.70-2.26x); process CPU 2.21-2.64x -> 2.02-2.24x.
- Tried and not taken: building the chunk's text with ``map``/``zip`` passes in C instead of
  the loop (500-700 ns an event either way: ``attrgetter`` 80-140, the shape lookup 70, the
  text 120, every further pass 10-30); SQLite writing the short events' text from bound values
  with the GIL released (``group_concat`` over ``VALUES``): slower in process and wall time;
  larger statements for the subplans' rows (2,048 and 6,000 rows) and a writer that waits for
  5,000 events or for the end: no better.
- What was left then (CPU per subplan, one process): the dispatch alone 5.2 us; with the store
  the loop thread 6.2 (queueing three events, the collector) and the writer 5.3: building rows
  2.1, the subplans' upsert 1.5, the commit and sorting 0.8, taking the queue 0.7.

Fourth pass (#10, stop 12; instructions of one dispatch of 10,000 under callgrind, every
thread, which the load of the machine does not change; the committed store, copied beside this
one, in the same process for the timings):

- What was slow: on the loop, three ``SubplanStateChanged`` per subplan built only for the
  recorder; in the writer, reading them attribute by attribute, finding each one's cached
  text by a key of three (820 instructions an event), and binding ``None``: sqlite3 adapts
  each ``None`` through its adapter protocol (360 ns; a float binds in 16), three per running
  row and one per end whose start an earlier batch wrote (most ends once the writer lags);
  looking for flush markers in every batch (a set of its types, 340 instructions an event);
  the time and quoted id of a pulled subplan formatted twice (its pending and running share
  both).
- What changed: the recorder subscribes the queue's ``put`` raw (``EventBus._subscribe_raw``):
  while it is the bus's only subscriber, a dispatch publishes each move as a ``RawMove``
  tuple and builds no event; the row builder reads tuples and events alike (another
  subscriber, as the command's sinks, or ``bus.publish``, still brings events). A state's
  cached text is found by the state alone when its previous state and attempt are the last
  ones. Error-free rows go through statements of their own that bind no ``None``: ends (a
  start not in the batch is a NaN, which SQLite stores as NULL), running rows and the rows
  pending states make (``DO NOTHING``); the general upsert is left to states with an error.
  Markers are looked for only while one is queued; a pull's two states share their text's
  head; a batch runs only the statements it needs.
- Figures. Instructions of one dispatch (three runs each): off 604M; on, the committed store
  1,139-1,148M (1.89x), this one 991-1,012M (1.65x): the store's own 54k -> 39k per subplan
  (-28%); building the rows alone (batches of 2,000) 23.4k -> 16.0k, in CPU time 1.82 -> 1.26
  us per subplan (1.69 from events). Timed side by side, 11 interleaved rounds in one process
  on a machine other jobs kept busy (load 2-6, so wall figures are loose): new / old process
  CPU 0.92-0.955x, wall 0.89-0.94x; the store adds 5.2 -> 4.8 and 6.9 -> 6.0 us of CPU per
  subplan (the writer thread 4.5 -> 4.3 and 5.9 -> 5.0); on / off CPU 2.10 -> 2.01x and
  2.37 -> 2.19x.
- Tried and not taken: a batch's ends as one JSON text read with ``json_each`` in one
  statement (SQLite 2.5 us a row against 1.2, encoding the text 0.6 against binding 0.2);
  larger statements, to take the GIL back less often (preparing a row of a multi-row
  statement costs 2-3 us, twice running it, once per recorder); the chunk's text and the rows
  built by ``zip``/``map`` passes over the tuples (430 ns an event against 290 in the loop);
  ``UPDATE ... FROM (VALUES ...)`` (1.53 us a row against 1.03 for the upsert).
- What is left (instructions per subplan): the dispatch 60k; the writer about 40k: SQLite
  18k (the end's upsert, two seeks and the rewrite of a WITHOUT ROWID row, 7-8k of it
  seeking; the chunk; the commit), binding 3k, preparing the statements once per recorder 1k,
  Python about 17k (the chunk's text, taking the queue 1.5k, dicts, sorting); and the
  collector, whose young generation the queued tuples fill (62-75 collections a run against
  37, 0.45 us per subplan: the states in a ``RawMove`` are enum members, so its tuple stays
  tracked). On a loaded machine the writer's work adds to the loop's nearly in full (wall ~
  CPU); overlapping its SQLite with the dispatch needs a free core and few statements per
  batch, but each statement gives up the GIL and waits up to the 5 ms switch interval to take
  it back from a busy loop, so the writer falls behind and much lands in the final flush.
  1.5x needs a third of the store's cost gone, or that overlap: the queue taken in bulk (a
  list the writer polls, 1.5k), a chunk's times written from a base (shorter integers, a
  schema change), moves whose states are plain strings (untracked tuples), and above all a
  cheaper end for each subplan's row.

Sixth pass (#10, stop 13; per-thread CPU time, and the committed recorder copied beside this
one, interleaved in one process, on a machine other jobs kept busy at load 0.5-3):

- What was slow: the writer thread. Its 40,000 instructions a subplan could not overlap the
  dispatch on the second core: the busy loop gives the GIL up at each ``epoll`` and takes it
  back first, so the thread ran only in the switch interval's gaps, and the store added about
  as much as the dispatch costs (the old recorder beside this one: 2.05-2.16x).
- What changed: a writer process (``store.writer_process``): the loop queues each event in a
  deque (a Python ``put``, 40 ns more than the queue's C one) and, every 512, pickles them in C
  (``event_pickling``: 105 ns an event, states as interned strings memoized per batch, other
  events and errors made plain JSON types) into a 1 MB pipe without waiting; the process
  unpickles (130 ns), builds the same rows with the same ``BatchWriter`` and acks markers and
  counts on a second pipe. A thread ships the few events that come while the loop is idle and
  writes what a full pipe left. The process starts as ``python -I -S`` with the package's
  ``__init__``s left out (25 ms to its first ack, 5 ms to exit: 3 us a subplan at 10,000), so a
  recorder that ends well leaves it as the spare for the next one (exits after 3 idle s).
- Figures. The loop's own CPU during the dispatch: off 4.40, on 5.13 us a subplan (+0.12
  queueing, +0.32 pickling, the rest writes and the GIL handed to the recorder's threads, which
  take 0.27); constructor and ``aclose`` 0.16. The writer process: 4.0 us a subplan (unpickling
  0.4, rows 1.3, SQLite and the rest 2.4); the final flush fell from 2.9-3.9 to 0.3-0.5 us a
  subplan. Process CPU on / off: old 2.08-2.17x, new 1.15-1.37x. Wall, side by side (9
  interleaved rounds), with a core free for the writer now and then (load 0.5-1.9): old
  2.08-2.12x median, 2.05-2.10x best; new 1.61-1.75x and 1.43-1.47x (new / old 0.76-0.84x,
  0.68-0.72x); with none (load 2.2-3): old 2.23x and 1.89x, new 2.32x and 1.69x (1.04x,
  0.89x): the writer's CPU is then the run's again. The row alone at load about 1: 1.57x
  median, 1.54x best (durable=False 1.43x); at load 2-3: 1.76-2.36x median, 1.30-2.21x best,
  as the rounds find a free core or not. 1.5x holds in the median only with a quiet core.
- ``gather_tick`` 0.005 -> 0.025 s: in a run of commands the loop is mostly idle, and each
  tick's frame woke both processes: ``subplans run`` of 1,000 ``true`` at -j16 took 1.05x the
  committed recorder's wall (1.08 against 1.03 s, medians of 7) at 5 ms, about 1.0x at 25 ms
  (1.59 against 1.61 s at load 6: loose).
- Tried and not taken: a sender thread taking the queue in bulk (it was starved as the writer
  thread was: either the GIL ping-ponged every loop turn, 96 events a frame, or nothing was sent
  during the dispatch, 30,002 events in one frame after it); the bus calling ``Pickler.dump``
  per event (all C, but 235 ns an event with the memo, 2.4 us without, and the memo keeps every
  event alive); a process per recorder (its start and exit, 30 ms, are 0.65x of a dispatch of
  10,000);
  an ack per batch (a GIL handoff each: the counts alone are now acked every 50 ms at most).

Writer process, stop 14 (#10; thread and process CPU, ``strace -c`` of the fsyncs, the writer
fed a recorded pickle stream, and the writer of before beside this one in one run: the same
loop side, the writer process started from either tree, 21 interleaved rounds):

- What was slow. The loop thread: 5.2-5.7 us a subplan against 4.55 off; pickling 0.44 of it
  (147 ns an event in the run, 60 in a warm micro-benchmark), the pipe's writes 0.06; ``put``
  and its tuple cost what the off side's event and lambda do. The writer process, 4.6-4.8 us:
  unpickling 0.3, building rows 1.1-1.35 (the chunk's text half of it), the subplans' upsert
  1.4 (SQLite), a transaction and an fsync per 512-event frame, as it kept up (47 fsyncs a
  run; at 512 events a batch, writing costs 0.6 us a subplan more than at 2,048, the fsyncs
  0.7-0.85 more than none; and they cost the loop 0.3: its CPU 5.43 durable, 5.13 not), the
  session's start 0.24 and preparing its statements 0.2 (1.8 ms a connection). The final
  flush: mostly the sender thread's ``time.sleep(tick)``, which ``aclose`` joins (0 to 22 ms,
  10-20 in half the rounds): with that sleep made interruptible (a shim in the A/B script),
  the flush falls from 1.1-2.2 to 0.2-0.4 us a subplan and on / off to 1.33x median (1.29x
  best) for the writer of before and this one alike.
- What changed (``writer_process._Session``): a stream's transaction gathers the events that
  come within 2 ms, up to 2,048 (a marker stops it); a stream's terminal batch leaves its fsync
  to a later commit while more events are already read, 5 ms at most (``batch_delay`` if
  less); a marker, the end of the stream and the end of the input fsync what is left (the WAL,
  as synchronous=FULL does, if nothing is left to commit). A quiet run: 47 -> 14
  transactions (six runs at load 4: 115 -> 66 fdatasyncs, ``start_run``'s included);
  ``flush()`` and ``close()`` still return only once every terminal state is fsynced.
- Figures (new / old, 21 rounds, load 1.3-1.6 with the other core mostly free): the writer's
  CPU 0.85-0.94x (4.65-4.85 -> 3.93-4.46 us a subplan), the loop process's 0.94-0.98x; wall
  0.98-1.0x with the shim (the last transaction is larger: flush 0.2 -> 0.4 us), 0.84-0.94x
  without it. Under load (other jobs on the writer's core, load 1.4-3) the rounds swing by 2x
  and the two writers cannot be told apart.
- Tried and not taken: ``UPDATE ... WHERE`` by ``executemany`` (2.05 us a row) or ``UPDATE
  ... FROM (VALUES ...)`` (1.95) for the upsert (1.45); an fsync per 2,048-event transaction
  (flush alike, loop 2-4% more CPU); syncing every 10 ms (the fsync at the end writes more:
  flush 0.46 against 0.38); ``posix_fadvise(DONTNEED)`` on the WAL to start its writeback
  early, and the collector off in the writer (both within the noise); marshal instead of
  pickle (54 against 60 ns an event, and the states are enum members); the chunk text's head
  by ``%`` or with ``int()`` first (slower).
- Left: the sender's tick sleep (``WriterPipe._send``: the largest part of the flush); each
  recorder's session connects, reads its 10,000 ids and prepares its statements anew (0.45 us
  a subplan at 10,000: a spare could keep its connection to the same store); the loop's
  pickling. With the sleep gone, on / off is about 1.35x in a quiet run: the loop's own CPU
  (1.20-1.25x) and a flush of 0.2-0.4 us.

Opening the store (issue #10): ``RunStore.open`` of a store of one run of 1,000 subplans
against one of 200 such runs (36 MB; events written as the recorder writes them), as ``run``
opens it and as ``status`` does (``readonly``), interleaved, medians of 51 opens each.

- What was slow: ``PRAGMA quick_check`` at every open read every page: 0.7 ms for the small
  store, 31 ms for the big one (43x), paid by every command before it did anything.
- What changed (``store/checking``): at open, the schema is compared with this version's (a
  checksum of ``sqlite_master``, 0.25 ms, most of it SQLite parsing the schema, which the
  first query of any command pays anyway) and the first and last entry of each of the eight
  b-trees are read from their roots (one statement, 0.12-0.17 ms, the same at both sizes);
  ``quick_check`` runs only for a schema that is not this version's and before an
  interrupted run is resumed. Opening: small 0.72 -> 0.71 ms, big 30.9 -> 0.69 ms; big /
  small 43x -> 0.97x (target <= 1.2x). What is left of an open (0.7 ms): connecting three
  times (the immutable look, the read-only one that decides, the one kept: 0.03 ms each),
  the identity pragmas 0.2 ms, the schema's parse, WAL and the proof of a write.
"""

from __future__ import annotations

import asyncio
import gc
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from subplans import EventBus, ParallelExecutionConfig, ParallelSubplanDispatcher, Subplan
from subplans.store import PlanManifest, RecorderStatistics, RunStore, event_chunks

N = 10_000
CAP = 32
ROUNDS = 9
TARGET = 1.5
#: Opening: the big store's runs and their subplans, opens timed per contender, target.
OPEN_RUNS = 200
OPEN_SUBPLANS = 1_000
OPENS = 51
OPEN_TARGET = 1.2
T = TypeVar("T")
MANIFEST = PlanManifest(
    file="bench.yaml", name="bench", subplans=tuple((f"s{i}", "step") for i in range(N))
)


async def noop() -> None:
    await asyncio.sleep(0)


async def dispatch(bus: EventBus) -> None:
    dispatcher = ParallelSubplanDispatcher(ParallelExecutionConfig(max_parallel=CAP), bus=bus)
    await dispatcher.run((Subplan(f"s{i}", noop) for i in range(N)), name="step")


async def store_off() -> None:
    bus = EventBus()
    bus.subscribe(lambda event: None)
    await dispatch(bus)


async def store_on(store: RunStore, run_id: str, *, durable: bool) -> tuple[float, float]:
    """Seconds until the dispatch returned, and until every event was committed."""
    start = time.perf_counter()
    bus = EventBus()
    recorder = store.recorder(run_id, bus=bus, durable=durable)
    writer = recorder._pipe.process.pid
    before = writer_cpu(writer)
    await dispatch(bus)
    dispatched = time.perf_counter()
    await recorder.aclose()
    stats.append(recorder.statistics())
    if durable:
        writing.append(writer_cpu(writer) - before)
    return dispatched - start, time.perf_counter() - start


def writer_cpu(pid: int) -> float:
    """The CPU seconds the writer process ``pid`` has used (kept as the spare when closed)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


stats: list[RecorderStatistics] = []
#: The writer process's CPU seconds in each durable round.
writing: list[float] = []


class Timings:
    """Wall and process CPU seconds of one contender, round by round."""

    def __init__(self) -> None:
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def time(self, run: Coroutine[Any, Any, T]) -> T:
        gc.collect()
        wall, cpu = time.perf_counter(), time.process_time()
        result = asyncio.run(run)
        self.wall.append(time.perf_counter() - wall)
        self.cpu.append(time.process_time() - cpu)
        return result


def us(seconds: float) -> float:
    return seconds / N * 1e6


def ratio(on: list[float], off: list[float]) -> str:
    return (
        f"{statistics.median(on) / statistics.median(off):.2f}x median, "
        f"{min(on) / min(off):.2f}x best"
    )


def fill_store(path: Path, runs: int) -> None:
    """``runs`` ended runs of ``OPEN_SUBPLANS`` subplans each, with two state changes per
    subplan in chunks of 500 events, as the recorder writes them (written directly: opening
    is timed, not recording)."""
    subplans = tuple((f"s{i}", "step") for i in range(OPEN_SUBPLANS))
    with RunStore.open(path) as store:
        for run in range(runs):
            run_id = f"r{run:04d}"
            manifest = PlanManifest(file="open.yaml", name="open", subplans=subplans)
            store.start_run(run_id, manifest, concurrent=True)
            now = time.time()
            units = int(now * event_chunks.SCALE)
            events = [
                event_chunks.encode([units, subplan, previous, state, 1])
                for subplan, _ in subplans
                for previous, state in (("pending", "running"), ("running", "completed"))
            ]
            db = store._db
            db.execute("BEGIN")
            for first in range(0, len(events), 500):
                chunk = events[first : first + 500]
                event_chunks.write_chunk(db, run_id, first + 1, chunk, scaled=True)
            db.execute(
                "UPDATE subplans SET state = 'completed', attempts = 1, started = ?, "
                "finished = ?, exit_code = 0 WHERE run_id = ?",
                (now, now, run_id),
            )
            db.execute("COMMIT")
            store.finish_run(run_id, "completed")


def bench_opening(folder: Path) -> None:
    """Opening a store of one run against one of ``OPEN_RUNS`` runs, interleaved."""
    small, big = folder / "small.db", folder / "big.db"
    fill_store(small, 1)
    fill_store(big, OPEN_RUNS)
    times: dict[tuple[Path, bool], list[float]] = {
        (path, readonly): [] for path in (small, big) for readonly in (False, True)
    }
    for _ in range(OPENS):
        for (path, readonly), timings in times.items():
            start = time.perf_counter()
            RunStore.open(path, readonly=readonly).close()
            timings.append(time.perf_counter() - start)
    size = big.stat().st_size / 1e6
    print(
        f"opening a store of 1 run vs {OPEN_RUNS} runs x {OPEN_SUBPLANS:,} subplans "
        f"({size:.0f} MB), {OPENS} interleaved opens"
    )
    for readonly, label in ((False, "to write (run)"), (True, "readonly (status)")):
        few, many = times[small, readonly], times[big, readonly]
        print(
            f"  {label:18} {statistics.median(few) * 1000:5.2f} ms vs "
            f"{statistics.median(many) * 1000:5.2f} ms median: "
            f"{ratio(many, few)} (target <= {OPEN_TARGET}x)"
        )
    for path in (small, big):
        path.unlink()


def main() -> int:
    folder = Path(tempfile.mkdtemp(prefix="subplans-bench-"))
    bench_opening(folder)
    store = RunStore.open(folder / "state.db")
    off, on, relaxed = Timings(), Timings(), Timings()
    flushes: list[float] = []
    registering: list[float] = []
    for round_ in range(ROUNDS):
        off.time(store_off())
        for durable, timings in ((True, on), (False, relaxed)):
            run_id = f"r{round_}-{'durable' if durable else 'relaxed'}"
            start = time.perf_counter()
            store.start_run(run_id, MANIFEST)
            registering.append(time.perf_counter() - start)
            back, done = timings.time(store_on(store, run_id, durable=durable))
            if durable:
                flushes.append(done - back)
    healthy = store.integrity_check() == []
    store.close()

    def row(label: str, timings: Timings) -> str:
        return (
            f"  {label:38} {us(statistics.median(timings.wall)):6.2f} us/subplan median, "
            f"{us(min(timings.wall)):6.2f} best"
        )

    print(f"{N:,} no-op subplans at max_parallel={CAP}, {ROUNDS} interleaved rounds")
    print(row("store off (no-op subscriber)", off))
    print(row("store on (RunRecorder, until aclose)", on))
    print(row("store on, durable=False", relaxed))
    print(f"  on / off: {ratio(on.wall, off.wall)} (target <= {TARGET}x)")
    print(f"  process CPU on / off: {ratio(on.cpu, off.cpu)}")
    print(
        f"  the writer process's CPU: {us(statistics.mean(writing)):.2f} us/subplan mean "
        f"(clock ticks; on its own core, beside the process's {us(statistics.mean(on.cpu)):.2f})"
    )
    print(
        f"  the final flush (after run() returned): "
        f"{us(statistics.median(flushes)):.2f} us/subplan median"
    )
    print(
        f"  start_run registering {N:,} subplans: {statistics.median(registering) * 1000:.1f} "
        f"ms median, {min(registering) * 1000:.1f} best"
    )
    last = stats[-2]
    print(
        f"  last durable run: {last.written:,} events in {last.batches} batches "
        f"(largest {last.largest_batch:,}, {last.durable_batches} fsynced); "
        f"integrity_check {'ok' if healthy else 'FAILED'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
