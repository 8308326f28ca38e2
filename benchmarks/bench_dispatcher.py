"""The engine's cost, each figure a ratio against a baseline measured in the same run.

Run with ``nox -s bench`` (or ``python benchmarks/bench_dispatcher.py``). No-op subplans (one
``asyncio.sleep(0)`` each) through ``ParallelSubplanDispatcher`` with an ``EventBus`` and one
no-op subscriber, the subplans passed as a generator, against:

- a bare ``TaskGroup`` that acquires an ``asyncio.Semaphore`` before creating each task
  (10,000 at max_parallel=32; target <= 1.3x), and ``aiometer.run_all(max_at_once=32)``
  (target: subplans >= 5x faster);
- itself: max_parallel 32 vs 4 (within 1.2x); with a pool that every subplan uses and a halt
  policy attached vs without (issue #14: within 1.2x); and the cost per subplan at 1,000,000 vs 10,000
  (within 1.2x), from the scaling series 10k / 100k / 1M, each size in a fresh child process
  beside the bare baseline's;
- peak RSS of 1,000,000 subplans with the results returned (target <= 200 MB), beside the
  bare baseline collecting its results and beside the results alone: 1,000,000
  ``SubplanResult`` built in a list, the floor of any dispatcher that returns them;
- peak RSS of ``stream()`` over 10,000,000 subplans from a generator, every result read and
  dropped (issue #13: target < 100 MB, the memory of ``max_parallel`` subplans).

Times are process CPU time: several programs share this machine's two cores, and CPU time is
what a busy neighbour bends least (wall time is printed for the series too). Contenders are
interleaved round by round; ratios are of the best rounds and of the medians. Never part of
pass/fail: the machine is shared and noisy.

What was slow, and what changed (issue #10; cProfile of 50,000 subplans and A/B runs of the
old and the new dispatcher in one process, CPU time, 2 shared cores):

- After each completion ``run()`` woke and waited again with ``asyncio.wait`` over every
  running task (a done callback added to and removed from each: work proportional to the cap
  per subplan), and a feeder task woke to start the next subplan. Now a finishing subplan
  starts the next one itself, from its own task, and ``run()`` waits on one future: two loop
  callbacks per subplan (its task's two steps), where the bare baseline has about four. A
  feeder task exists only while a subplan waits for a shared budget.
  (vs bare: 1.98x -> 1.5x; per subplan at 1M vs 10k: 1.31x -> 1.07x.)
- Per-subplan state lived in five structures (results, started, attempts, the tracker's dict of
  states, the running dict), and every ``Subplan`` was kept to the end. Now ``max_parallel``
  reused slot objects hold what a running subplan needs, one list holds each subplan and then
  its result (the subplan and its closure are dropped when it ends), and the dispatch counts
  states instead of keeping a dict. Peak RSS at 1M: 433 MiB -> 244 MiB, which was the results
  alone (~230 bytes each: the slotted result, two float stamps, its id string).
- ``SubplanResult`` was a slotted dataclass of seven fields (96 bytes) holding two float objects
  (32 bytes each). Now four slots (64 bytes): both stamps in one ``complex`` (32 bytes, the same
  two doubles), and ``attempts`` alone in the slot shared with ``value`` and ``error`` while
  those are None. Then the peak moved to the start: the hash set that looks for a repeated id
  (40 MB for a million ids, with its old table while it grows) beside every ``Subplan`` at
  once. Past 131,072 subplans the ids are sorted instead (8 MB; in-order ids sort in a few
  merges, faster than the set). Peak RSS at 1M: 245 MiB -> 179 MiB (192 MB), the results alone
  again. (Building a result: 0.12 -> 0.17 us.)
- ``PENDING`` for every subplan read the clock and the log level once per subplan: once now
  (they become pending at once). A move was built by ``state_changed()`` and then handed to
  ``EventBus.publish()``: one call now (``EventBus._publish_move``). (vs bare: 1.21x -> 1.17x.)
- ``Subplan()``, a frozen dataclass, set its six fields with ``object.__setattr__`` by name and
  then ran ``__post_init__`` (0.68 us, as much as the dispatcher's own work): now one written
  ``__init__`` with the slots' setters (0.37 us).
- Three ``SubplanStateChanged`` per subplan through the dataclass ``__init__`` (0.2 us each):
  now ``events.state_changed`` (0.1 us); the tracker's legality check and its dict, and a
  call per move, are gone from the hot path (the moves are structural there).
  (vs bare: 1.5x -> 1.24x.)

Issue #13 made ``run()`` pull a generator one subplan per free slot (a lazy input) instead of
reading it whole first, so that a generator of any length is never read ahead:

- Each pulled subplan is published PENDING as it starts, interleaved with the rest, where the
  whole list used to be announced in one tight loop; with the pull itself that cost about
  0.5 us a subplan. Won back: the log-level check (``logger.isEnabledFor``, 0.18 us, three
  times a subplan) reads logging's own cache first (``tracker.maybe_enabled``, 0.02 us); the
  dispatch's state moved to slots (past 30 attributes an instance dict loses the
  interpreter's fast attribute access); PENDING and RUNNING of a pulled subplan share one
  stamp and one call (``EventBus._publish_pulled``); a result is built by
  ``results.ended`` (0.32 -> 0.16 us: the class's call machinery skipped; written out in
  ``Running.finish`` in the fifth pass, ``Ending.finish`` now); ``Subplan()`` fills
  a settable draft of its layout and turns it into a Subplan (0.35 -> 0.28 us).
- A lazy input's ids are checked one at a time as they come: a hash set would hold 32 to 48
  bytes an id (33 MB at a million: 225 MB peak, past the 200 MB row). Ids that come in order
  (by length, then as strings: ``s9`` < ``s10``) need nothing kept, the last one aside; the
  first one out of order starts a set of the ids so far, and past 131,072 ids a table of
  their positions (4 bytes a slot, ``engine/duplicates.py``).
  (Peak RSS at 1M from a generator: 191 MB, as before; per subplan at 10k: about 0.3 us over
  the old materialised path, the interleaved PENDING event mostly.)

Fifth pass (#10, stop 12; ``valgrind --tool=callgrind`` instructions per subplan, the
difference of 20,000 and 10,000 subplans with the GC off, which no neighbour bends; and CPU
time of the old and the new engine interleaved in one process, 21-25 rounds):

- Where it went: with the bus but no subscriber a subplan took what the bare baseline takes
  (52.1k instructions against 53.0k), so the rest was the three ``SubplanStateChanged`` (8k,
  13%: allocating and freeing an object of a slotted class is 1.5k of each, a tuple 0.4k;
  then the subscriber's call) and the ``Subplan()`` the input builds (0.26 us), which the
  baseline has no counterpart of. The hot path (start, run, record, free, start the next)
  moved to ``engine/running.py``, and there each move is published where it happens (no
  ``_publish_move``/``_publish_pulled`` frame; the raw channel as the bus has it), the result
  is built in ``finish()`` (no ``ended()``), and ``release()`` pulls the next subplan of a
  lazy input and claims its gates itself (no ``fill()``, no ``_pull()``). ``Subplan()``
  checks ``type(id) is str`` before ``isinstance`` and makes its draft with a class call;
  the pool row's ``uses`` seen last is taken without a call, its units given back without
  ``release_all()``. Instructions: 61.7k -> 59.4k (pool + halt: 75.0k -> 70.6k, so the
  row's ratio 1.22x -> 1.19x). CPU, new / old: 0.95-0.97x (best rounds of four runs);
  aiometer / subplans 4.4-4.6x -> 4.6-4.8x, subplans / bare 1.26x -> 1.22x, pool + halt /
  without 1.19x -> 1.18x, max_parallel 4 / 32 1.09x -> 1.05-1.08x. Tried and left: a
  one-subscriber path without the loop (0.08k an event); ``Task(..., context=...copy())``
  for ``context.run`` (slower); events made by a class call and a class switch (slower);
  ``finish()``'s completed case written into ``_execute`` (0.8k, 1.3%, but a second copy of
  it beside the stream's override).

What remains (about 0.8 us per subplan over the bare baseline in CPU, 6.4k instructions):
the three events (8k instructions, about half of it the objects' allocation and release,
which a slotted class cannot make cheaper in Python; a raw subscriber takes 56.3k in all),
the ``Subplan()`` of the input (type.__call__ into a Python ``__new__``), the result. The
5x row needs about 0.25 us more: fewer or cheaper event objects, not the engine's
bookkeeping, which is below the baseline's ``TaskGroup`` and ``Semaphore`` already.

Tried and dropped (stop 12): running a slot's next subplan in the task of the one that ended
(a new task only when a cancellation was requested or pending, a done callback added, a
context variable set, or 65 ran in a row). It was fast (3.6-3.8 us a subplan: aiometer /
subplans 6.1x, 0.95x the bare baseline) but a task is not only what those checks see: a
reference kept to an earlier subplan's task (a watchdog's ``call_later(t, task.cancel)``
never disarmed, storage keyed by ``current_task()``, a name set by ``set_name``) then acts on
a later subplan, and a chain of subplans that never suspend ran in one step of the loop, out
of the order their RUNNING was published (a stop cancelled subplans started before the
failure that never ran).

Sixth pass (#10, stop 13; CPU time of the old and the new engine in alternating child
processes, 9 rounds each, and ``valgrind --tool=callgrind`` instructions per subplan with
PYTHONHASHSEED=0, without which the counts move by 2%):

- What was slow: the task of each subplan (made, its coroutine and context copy, registered in
  asyncio's weak set of tasks and removed from it, freed): about 4.7k of 59.5k instructions.
- What changed: the task of a subplan that completed runs the next subplan of its slot
  (``Running._execute``), at most 65 in a row (the task's name is what a subplan sees of it
  without a reference; 64 vs 256 in a row was under 1% in stop 12), on CPython 3.11 (whose
  task internals it reads), when nothing but the engine could tell it from
  a new task: the counts it had when made (references to it, to its coroutine and frame, weak
  references to it, so that a reference kept by anyone, taken between two subplans too,
  retires it), its name, no done callback, no cancellation requested or pending, the context
  variables a new task would get (compared with the dispatch's context by identity) and no
  stop. Before the subplan it yields once (a bare yield, as ``sleep(0)``), so its step is
  scheduled where a new task's first step would be: a subplan's task is now made right after
  its moves are published (before, it was made first and a callback a subscriber scheduled
  then ran after its first step), nothing is scheduled between that point and the yield, and
  the ended subplan is let go before either. tests/test_task_reuse.py runs most scenarios
  with and without reuse (``dispatch.CHAIN = 0``) and compares what is seen; a review then
  found a kept ``contextvars.Token``, a weak reference to the coroutine and a failed
  subplan's traceback (which kept the task and its context alive) and a task that could not
  be made: now counted, cleared and failed (tests at the end of the file). The checks cost 2.9k
  instructions (ten C calls), most of what reuse saves in instructions, less in time. The
  pool row: ``Holder`` built without the class call, ``let_go()``, ``admit()`` /
  ``claim_now()`` / ``try_take()`` of a one-pool fan-out and ``release()`` of its units
  written out in ``Ending.release``. (A holder kept per slot would let a task the ended
  subplan left behind, which carries it in its context, lend the next subplan's units.)
- Instructions per subplan: 59.5k -> 56.3k; pool + halt 70.6k -> 64.7k (1.19x -> 1.15x);
  max_parallel 4 63.0k -> 59.9k. CPU (five runs each): 4.53-4.82 -> 4.12-4.38 us a subplan;
  aiometer / subplans 4.56-4.87x -> 4.98-5.11x; subplans / bare 1.21-1.26x -> 1.13-1.16x;
  pool + halt / without 1.15-1.20x -> 1.16-1.18x; max_parallel 4 / 32 1.09-1.10x ->
  1.09-1.12x. Left: the 5x row has little room; more would take fewer loop steps a subplan
  (asyncio's ``call_soon`` and ``Handle``, about 1 us), which exactness rules out, or cheaper
  checks (they are C calls already).

Seventh pass (#10, stop 14; ``valgrind --tool=callgrind`` instructions per subplan as in the
sixth pass, and CPU time of the old and the new engine in alternating child processes, 6 runs
of 3 rounds, load about 1):

- What was slow, with a subscriber (56.4k instructions a subplan, the bare baseline 53.2k):
  each of the three events took 1.9k, 0.8k of it allocating and freeing the object (the
  subscriber's call is 0.6k); ``Subplan(id, run)`` took 4.9k: the call through ``type()``
  into a Python ``__new__`` (1.3k), its five keyword-only defaults, each looked up in a dict
  (0.6k), the draft made and later freed (0.8k), its seven fields (0.45k), its class switch
  (0.7k); a completion's call into ``finish()`` 0.8k; ``running.run()`` and ``self.now()``
  0.1k each over a plain call (3.11 never specialises a method load of a callable kept in a
  slot). Left as it is: the results are kept and tracked by the GC (14 young collections and
  one older per 10,000: 0.1 us a subplan, 2%), the price of returning them as objects.
- What changed: a move is published in the dispatch's spare event (``Dispatch.spare``) when
  ``sys.getrefcount`` shows that no subscriber kept the one before (a failure's never: it would
  keep the error and its traceback alive; on CPython before 3.14 only, whose counts of a name
  and an argument it knows); ``Subplan.__new__`` takes ``uses`` by name and any
  other option as ``**options``, builds ``Subplan(id, run)`` and a fan-out's ``uses=...`` itself
  and hands the rest to ``_checked`` by position; ``finish()``'s completed case is written out in
  ``Running._execute`` (when the dispatch's ``finish`` is ``Ending``'s: a stream's hands results
  on), a second copy the fifth pass had left, now compared with ``finish()`` by
  tests/test_dispatcher_spare.py; ``run`` and ``now`` are read as attributes, then called.
  running.py went past 400 lines: the reuse checks' counts, the loop's turn and the context
  check moved to ``engine/task_reuse.py``.
- Instructions per subplan: 56.4k -> 52.5k (below the bare baseline's 53.1k); pool + halt
  64.8k -> 60.8k; max_parallel 4 60.0k -> 56.0k; ``Subplan()`` 4.9k -> 4.2k, with ``uses``
  6.6k -> 5.9k, with the executor's four options 8.6k -> 13.2k (under 1.5 us beside a process).
  CPU, new / old: subplans 0.92x, max_parallel 4 0.93x, pool + halt 0.92x; aiometer /
  subplans 4.96x -> 5.45x, subplans / bare 1.15x -> 1.06x, max_parallel 4 / 32 1.11x ->
  1.12x, pool + halt / without 1.18x -> 1.18x (its extra cost is unchanged, over a cheaper
  base). Then ``speed_rows()`` six times, load 1 to 3: aiometer / subplans 5.28-5.59x median
  (5.29-5.53x best), subplans / bare 1.05-1.07x, max_parallel 4 / 32 1.11-1.13x, pool + halt /
  without 1.18-1.21x (1.21x once, at load 3); the scaling series: 1M / 10k 1.04x, peak RSS at
  1M 192 MB, as before. Left for that row: ``held_by_this_task.set()`` (1.35k, a new map and
  token a subplan) and the holder, which a task left behind may still reach.
  Tried and left: empty ``__slots__`` on the mixins (no instance dict: 0.02k); the stamps as
  ``started + now * 1j`` (0.24k less, but not what ``complex()`` makes of an injected clock's
  -0.0, inf or Decimal); every option keyword-only again (the plain form then costs 4.9k as
  before, the executor's 9.4k); a holder recycled by its count (a copied context shares the
  variable's map, so the count cannot see a task left behind).
"""

from __future__ import annotations

import asyncio
import gc
import json
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any

from subplans import (
    AsyncSemaphoreLimiter,
    EventBus,
    HaltPolicy,
    ParallelExecutionConfig,
    ParallelSubplanDispatcher,
    Subplan,
)

N = 10_000
CAP = 32
ROUNDS = 7
SERIES = (10_000, 100_000, 1_000_000)
STREAMED = 10_000_000

Body = Callable[[int, int], Coroutine[Any, Any, Any]]


async def noop() -> None:
    await asyncio.sleep(0)


async def bare_baseline(n: int, cap: int = CAP) -> list[None]:
    """A TaskGroup that acquires a semaphore before creating each task; collects the results."""
    semaphore = asyncio.Semaphore(cap)
    results: list[None] = []

    async def one() -> None:
        try:
            await noop()
            results.append(None)
        finally:
            semaphore.release()

    async with asyncio.TaskGroup() as group:
        for _ in range(n):
            await semaphore.acquire()
            group.create_task(one())
    return results


async def with_subplans(n: int, cap: int = CAP) -> list[Any]:
    bus = EventBus()
    bus.subscribe(lambda event: None)
    dispatcher = ParallelSubplanDispatcher(ParallelExecutionConfig(max_parallel=cap), bus=bus)
    return await dispatcher.run(Subplan(f"s{i}", noop) for i in range(n))


async def with_controls(n: int, cap: int = CAP) -> list[Any]:
    """``with_subplans`` with a pool every subplan uses (as wide as the cap, so that it only
    costs, never waits) and a halt policy attached (issue #14's row)."""
    bus = EventBus()
    bus.subscribe(lambda event: None)
    config = ParallelExecutionConfig(max_parallel=cap, halt=HaltPolicy("soon", fail="3%"))
    pools = {"api": AsyncSemaphoreLimiter(cap)}
    dispatcher = ParallelSubplanDispatcher(config, bus=bus, pools=pools)
    return await dispatcher.run(Subplan(f"s{i}", noop, uses=USES) for i in range(n))


USES = {"api": 1}


async def with_aiometer(n: int, cap: int = CAP) -> list[None]:
    import aiometer

    results: list[None] = await aiometer.run_all([noop for _ in range(n)], max_at_once=cap)
    return results


async def stream_only(n: int, cap: int = CAP) -> int:
    """``stream()`` of a generator: every result read and let go (the memory row of #13)."""
    bus = EventBus()
    bus.subscribe(lambda event: None)
    dispatcher = ParallelSubplanDispatcher(ParallelExecutionConfig(max_parallel=cap), bus=bus)
    count = 0
    async for _ in dispatcher.stream(Subplan(f"s{i}", noop) for i in range(n)):
        count += 1
    return count


async def results_alone(n: int, cap: int = CAP) -> list[Any]:
    """What returning ``n`` results takes by itself: the memory floor of any dispatcher."""
    from subplans import SubplanExecutionState, SubplanResult

    now, done = time.time, SubplanExecutionState.COMPLETED
    return [SubplanResult(f"s{i}", done, None, None, now(), now(), 1) for i in range(n)]


BODIES: dict[str, Body] = {
    "bare": bare_baseline,
    "subplans": with_subplans,
    "aiometer": with_aiometer,
    "results": results_alone,
    "stream": stream_only,
}


def cpu_per_subplan(body: Body, n: int, cap: int = CAP) -> float:
    """Microseconds of process CPU time per subplan, one run."""
    gc.collect()
    start = time.process_time()
    asyncio.run(body(n, cap))
    return (time.process_time() - start) / n * 1e6


def interleaved(contenders: dict[str, Callable[[], float]]) -> dict[str, list[float]]:
    """ROUNDS rounds, every contender once per round, so that noise hits them alike."""
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(ROUNDS):
        for name, measure in contenders.items():
            times[name].append(measure())
    return times


def ratio(times: dict[str, list[float]], top: str, bottom: str) -> str:
    best = min(times[top]) / min(times[bottom])
    median = statistics.median(times[top]) / statistics.median(times[bottom])
    return f"{best:.2f}x best, {median:.2f}x median"


def child(name: str, n: int) -> dict[str, float]:
    """Run one body in a fresh interpreter: its time per subplan and its peak RSS."""
    command = [sys.executable, __file__, "--child", name, str(n)]
    return dict(json.loads(subprocess.run(command, check=True, capture_output=True).stdout))


def run_child(name: str, n: int) -> None:
    body = BODIES[name]
    wall, cpu = time.perf_counter(), time.process_time()
    results = asyncio.run(body(n, CAP))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    assert (results if isinstance(results, int) else len(results)) == n
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # results still held
    print(json.dumps({"cpu_us": cpu / n * 1e6, "wall_us": wall / n * 1e6, "rss_kib": peak_kib}))


def speed_rows() -> None:
    contenders: dict[str, Callable[[], float]] = {
        "bare": lambda: cpu_per_subplan(bare_baseline, N),
        "subplans": lambda: cpu_per_subplan(with_subplans, N),
        "subplans, max_parallel=4": lambda: cpu_per_subplan(with_subplans, N, 4),
        "subplans, pool + halt": lambda: cpu_per_subplan(with_controls, N),
    }
    try:
        import aiometer  # noqa: F401

        contenders["aiometer"] = lambda: cpu_per_subplan(with_aiometer, N)
    except ImportError:
        print("aiometer is not installed (the bench extra); skipping it")
    times = interleaved(contenders)
    print(f"{N:,} no-op subplans at max_parallel={CAP}, CPU us per subplan ({ROUNDS} rounds)")
    for name, runs in times.items():
        print(f"  {name:28s} best {min(runs):6.2f}  median {statistics.median(runs):6.2f}")
    print(f"  subplans / bare TaskGroup:       {ratio(times, 'subplans', 'bare')} (target <= 1.3x)")
    if "aiometer" in times:
        print(
            f"  aiometer / subplans:             {ratio(times, 'aiometer', 'subplans')} (target >= 5x)"
        )
    print(
        f"  max_parallel 4 / 32:             {ratio(times, 'subplans, max_parallel=4', 'subplans')}"
        " (target within 1.2x)"
    )
    print(
        f"  pool + halt / without:           {ratio(times, 'subplans, pool + halt', 'subplans')}"
        " (target within 1.2x)"
    )


def scaling_rows() -> None:
    print("scaling, each run in a fresh process: us per subplan (CPU, wall) and peak RSS")
    figures: dict[tuple[str, int], dict[str, float]] = {}
    for n in SERIES:
        for name in ("bare", "subplans"):
            figures[name, n] = got = child(name, n)
            print(
                f"  {n:>9,} {name:9s} cpu {got['cpu_us']:6.2f}  wall {got['wall_us']:6.2f}"
                f"  peak {got['rss_kib'] / 1024:6.0f} MiB"
            )
    small, big = SERIES[0], SERIES[-1]
    grows = {
        name: figures[name, big]["cpu_us"] / figures[name, small]["cpu_us"]
        for name in ("subplans", "bare")
    }
    print(
        f"  per subplan at {big:,} / at {small:,}: subplans {grows['subplans']:.2f}x"
        f" (target <= 1.2x), bare {grows['bare']:.2f}x"
    )
    floor = child("results", big)
    ours, bare = figures["subplans", big]["rss_kib"], figures["bare", big]["rss_kib"]
    print(f"peak RSS, {big:,} subplans from a generator, results returned:")
    print(
        f"  subplans          {ours / 1024:6.0f} MiB = {ours * 1024 / 1e6:4.0f} MB (target <= 200 MB)"
    )
    print(f"  bare TaskGroup    {bare / 1024:6.0f} MiB")
    print(
        f"  the results alone {floor['rss_kib'] / 1024:6.0f} MiB (the floor: subplans / it = "
        f"{ours / floor['rss_kib']:.2f}x)"
    )


def stream_row() -> None:
    streamed = child("stream", STREAMED)
    peak = streamed["rss_kib"] * 1024 / 1e6
    print(f"peak RSS, stream() of {STREAMED:,} subplans from a generator, results let go:")
    print(
        f"  subplans          {peak:6.0f} MB (target < 100 MB), cpu {streamed['cpu_us']:.2f} us"
        " a subplan"
    )


def main(argv: list[str]) -> int:
    if argv[:1] == ["--child"]:
        run_child(argv[1], int(argv[2]))
        return 0
    speed_rows()
    scaling_rows()
    stream_row()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
