"""The ``subplans`` command against other ways to run 1,000 commands 16 at a time.

Each contender runs ``true ITEM`` for 1,000 items at a parallelism of 16, as a fresh process
(start-up included), in interleaved rounds (a slow moment of the machine hits them all alike);
the figures are medians and bests, and each row is printed as a ratio to its baseline measured
in the same run:

- ``subplans run plan.yaml``, the default run: the run store on (``.subplans/state.db`` next
  to the plan), one line per state change to stdout (``/dev/null`` here), a log file per
  subplan, events, the summary;
- a bare Python script: ``asyncio.create_subprocess_exec`` under an ``asyncio.Semaphore(16)``,
  on the interpreter's own child watcher, each command's output appended to a log file of its
  own (the flags ``spawning.open_log`` uses) in a new folder for each run, beside the
  benchmark's folder, as ``subplans run`` writes them. Target: subplans within 1.2x;
- GNU ``parallel -j 16``, its output buffers (a file per command) in the same folder
  (``--tmpdir``). Target: subplans at most 0.33x (3x faster). Skipped, and said so, where it is
  not installed;
- the bare script with output to ``/dev/null`` and ``xargs -P 16``: references, no target.

Both baselines do the same work as ``subplans run`` in the same place (#10, fourth pass): until
then only ``subplans run`` created files, the bare script wrote to ``/dev/null`` and GNU parallel
to ``/tmp``. Creating a file costs 4-20 us on a disk at rest but 0.1-1 ms within minutes of
deletions nearby on this machine's ext4 (see the third pass below), and that cost fell on one
side only; the old script stays as a reference row.

The figures are printed to read, never asserted: the machine decides them. The package is
compiled first and the children run without ``PYTHONDONTWRITEBYTECODE`` (``children_env``):
where that is set, a child recompiled every module whose ``.pyc`` was stale at each start.

Profile (issue #10), of ``subplans run`` of this plan (``cProfile``, and CPU time per command
beside the bare script's in one process): apart from start-up (``bench_startup.py``), a command
cost the event loop about 0.5 ms of CPU more than the bare script's, and every fork and exec
(most of a short command's cost) blocked the loop, as it does the bare script's:

- every read of ``/proc`` asked for 1 MiB, so each one mapped and unmapped a buffer: 15 us more
  per read, and the end of every command read a dozen files (now 16 KiB, read on while full);
- ``asyncio.create_subprocess_exec`` built a transport, a protocol and a pipe-connecting task,
  and took several turns of the loop before the command was registered; meanwhile the other
  commands' ends read the new, unregistered process (its stat, then its environment) as a
  possible leftover of theirs: two to three reads per command. Now ``spawning`` forks with
  ``subprocess.Popen`` in a few threads of its own (``fork_exec`` lets go of the GIL, so the
  loop goes on and several commands start at once), and the loop registers the command as the
  start returns and reaps it through a pidfd;
- the leader's start time was read at every start; now only when something asks, while the
  loop has not reaped it (a command that ended by itself, alone, never needs it);
- each start made the log's folder again (``mkdir``), and each end opened the log to read a
  tail that was empty: now the folder is made when the log cannot be opened, and a log that
  did not grow is not opened.

The store's recorder (a writer thread) costs about 0.05 ms of CPU per command, the plain lines
about the same; both stay on in this run, as they are by default. Measured on a shared 2-core
machine, interleaved with the code before these changes: ``subplans run`` went from 1.5-2.4x the
bare script to 0.8x (medians) and 1.04-1.35x (bests, which a quiet moment of the bare script
decides); it still uses about 1.6x the bare script's CPU, a third of that the start-up.

Second pass (#10): of what ``subplans run`` spends beyond the bare script, about 0.2 s is
start-up (a run of one ``true`` takes about 5x ``python -c 'import asyncio'``; see
``bench_startup.py``), the rest is the loop's work per command. Per thread, in one run of this
plan: the loop about 0.35 ms of CPU per command, the spawner threads 0.15, the recorder 0.05.
What was slow, and what changed:

- the end of each command read ``/proc`` for every pid handed out since it started, skipping
  the registered commands only: the commands a spawner thread had started that the loop had not
  registered yet (their stat, then their environment: a zombie half the time), the leaders of
  commands that had ended meanwhile (an open that fails), and the environment of kernel threads
  (always empty). About 13.5 reads of ``/proc`` per command, each a release of the GIL that a
  spawner thread takes. Now the spawner notes each pid as it starts (``ProcessGroups.starting``)
  and a kernel thread's flag spares its environment. (Skipping the pids of other commands'
  reaped leaders too was tried and dropped: a leader that started before the window may have
  had a pid handed out again within it, to a leftover that then escaped its command's end.)
- each start created its log file in the loop: the costliest call of a start, and every call
  of the loop's (it does some 30 per command) is a moment a spawner thread takes the GIL and
  the loop waits for it back. Now the spawner thread opens the log before it forks
  (``spawning.start``);
- the garbage collector: the start-up leaves about 50,000 objects (Typer, pydantic, the
  modules, the plan) that live until the process ends; collecting during the start-up walked
  them again and again (about 15 ms), the full collections of the run walked them all again,
  and the interpreter's teardown collected them once more at exit (40-70 ms). Now the
  collector is paused while the command starts up (``cli.gc_pause``), and the program freezes
  them out of its sight for good as its work begins and as the run starts (never at exit: a
  run's own garbage is still collected, and finalised, when the process ends);
- smaller: each start waited on its spawner through ``asyncio.wait`` (a coroutine and two
  sets), now through one future; each line's timestamp formatted its second again.

Measured side by side with the code before (interleaved rounds, 7 of them, on a shared 2-core
machine that other jobs kept busy): ``subplans run`` of this plan went from 1.43x the bare
script to 1.25x (medians; bests 1.51x to 1.42x), and from 0.39x GNU parallel to 0.34x
(medians; bests 0.39x to 0.36x); a run of one ``true`` from 308 ms to 246 ms (medians of 15).

What is left is mostly outside the command: the start-up's imports (pydantic and the plan
models, Typer and the TypeAdapters it builds for each option, the store's modules), the
store's open (``PRAGMA quick_check`` read the whole store, growing with every run kept; since
the fourth pass a fixed number of pages, see ``bench_store.py``), the plan's manifest hash (about 10 ms for 1,000 subplans), and per command the dispatcher's and
the events' own work.

Third pass (#10), on the spawning of commands: the spawner threads hand the GIL back and forth
with the loop (about 100 futex calls per command against 11 in the bare script), so starting
each command in the loop's own thread, as the bare script does (vfork: no ``preexec_fn``, a new
session is allowed), was measured against them, interleaved: the loop then waits for each
log's creation and for each child's exec, 1.2 ms a start (median, 3 ms at worst) on a busy
machine, and this plan took 1.4-1.8x as long as with the spawners (medians), 1.00-1.03x on
quieter moments; four spawners stay (``spawning``'s docstring has the variants tried). What
was slow instead was the disk: a run writes one log file per command, and on this machine's
ext4 (no journal) creating a file costs about 20 us after a quiet while but 0.1-1 ms within a
few minutes of files being deleted nearby: without a journal the kernel passes over every inode
freed in the last minute (six, while its inode table is not written back), reading each, at
every creation (``recently_deleted``); the files of a finished benchmark, or of tests, are such
inodes. While a creation beside the project cost 0.7-1 ms (after benchmarks run one after
another), ``subplans run`` of this plan took 1.49x the bare script there (median; 1.31x best)
and 0.94x (0.98x best) with its plan, logs and store on tmpfs, in the same interleaved rounds;
the logs made most of that (another run: both on disk 1.88x, logs on disk and store on tmpfs
1.87x, the reverse 1.32x, both on tmpfs 1.19x); on a disk at rest the two places came out even.
So the first line printed is the cost of creating a file in the benchmark's folder just before
the runs: far above 20 us, the disk is what is measured. Give it a few minutes without
deletions nearby, or a ``--folder`` on tmpfs to measure the tool alone.

Fourth pass (#10), on the start-up (``bench_startup.py`` has its profile): ``subplans run`` paid
about 0.2 s more than ``python -c 'import asyncio'`` before its first command: Typer with its
option adapters (about 40 ms), pydantic's import (about 40 ms), the plan models' validators
(about 20 ms), pydantic's plugin scan (about 9 ms), then the run's own modules. A plain ``run``
line is now read without Typer (``cli.run_args``) and a plan of the common shape, this one among
them, checked without pydantic (``plans.plain_plans``): the run loads neither. Side by side with
the code before, interleaved, 5 rounds (medians, bests in brackets), the machine shared with other
jobs and its disk slow to create files (110 us a file): ``subplans run`` 1.42 s (1.30) -> 1.22 s
(0.98), the bare script with its logs 1.01 s (0.87), with output dropped 0.69 s (0.66), GNU
parallel 2.45 s (2.35); as ratios, to the bare script 1.42x (1.49x) -> 1.21x (1.13x), to GNU
parallel 0.58x (0.55x) -> 0.50x (0.42x). Busier (load 4-6): 1.14 s -> 0.98 s, the bare script
then slower than both. A run of one ``true``: 361 -> 159 ms. Creating the 1,000 log files cost
the bare script 0.3 s there (with logs against without); both write them, and on such a disk
they are much of what separates either from GNU parallel's target (on a disk at rest they cost
about 20 ms). Not measured at rest this time: other jobs kept deleting files all along.

What is left, per command, in the loop (a profile, and the CPU time of each thread of this
plan's run: the loop 0.45 s, start-up included, 0.31 s of it user time, and each of the four
spawner threads 0.06 s, against 0.4 s for the whole bare script, 0.2 s of it user time): the
end of each command reads ``/proc`` about eleven times (the stat of every pid handed out since
it started, 7 a command here, the environment of those in no known session, 1.8, and
``/proc/loadavg`` and ``/proc/stat`` for the pid window), each read a moment a spawner thread
takes the GIL from the loop. Skipping them all (an experiment) saved about 70 ms of the loop's
system time per 1,000 commands; they stay as the hardening review left them, since each guards
against a leftover process escaping its command's end. The store's writer and the events are the
other parts (the store's open no longer grows with the runs kept: ``bench_store.py``).

Fifth pass (#10, stop 12), on those reads: counted per kind in one run of this plan (``procfs``'s
reads wrapped, each an open, a read and a close; the last line printed counts them too), the
loop read ``/proc`` 10.7-11.1 times a command, 27-28 system calls. What they were, and what
changed (no read a guarantee rests on is gone: every pid that may name a process of the command
is read as before):

- the stat of reaped leaders' pids, 1.9-2.6 a command: the command's own (the loop reaped it),
  and those of the commands started after it and ended since. Now a reaped leader's pid is not
  read when the pid cycle proves it was handed out in the window (``finding``'s docstring):
  its pid lies in the window and the leader's own window (from the fork count read before it
  started) has not gone round either, so it was forked after this command's leader (had it been
  forked before, the cycle would have passed its pid again to reach this leader's and beyond):
  its pid named it alone, no process has it now. So a leader from before the window, whose pid
  may have been handed out again in it (why the second pass read them all), is still read.
  ``ProcessGroups`` keeps the fork count of each leader, and of the last 1,024 reaped; a leader
  reaped but not yet unregistered is no longer skipped unread (it was, however old);
- every process of the machine, its stat and then its environment, at the ends of the first
  16 commands of every run (1.2-1.3 stat reads a command, and as many environments, with 80
  processes here; more on a busier machine): they started before any reading of the fork
  counter (``forks_so_far`` gave 0), so their windows seemed to have gone round. Now a reading
  older than 0.1 s is read again as a command starts;
- ``/proc/loadavg`` and ``/proc/stat`` (the window) are read through descriptors kept open,
  one ``pread`` from the start each (the kernel writes the file anew): no open, no close;
- the other commands a spawner thread notes meanwhile (``starting``) are looked up as each pid
  is about to be read, and as each environment is, not once before them all.

Now 6.5-7.0 reads a command (2 of them ``pread``), 15-17 system calls. Side by side with the
code before (interleaved rounds, 10-12 each, four times, a shared machine at load 1-7; CPU of
the event loop's thread, medians): the ends of the commands (``find``) 0.76-0.81x their CPU
(149-157 us a command to 114-127) and 0.72-0.83x their wall time; the loop's system time
0.67-0.89x, its whole CPU 0.92-0.99x (the ends are a quarter of it); the process's 0.95-1.03x
(noise: the spawners and the recorder are unchanged). What is left is nearly all other commands' leaders that a
spawner thread forked but has not noted yet, read while their exec runs (their stat, then
their environment, 1.5-1.8 a command) or after ``true`` already exited (a zombie's stat,
0.7-1.4): the spawner waits for the GIL meanwhile, and until it notes the pid nothing tells
whose that process is.

Sixth pass (#10, stop 13), where a run of this plan spends its time (in one process, timed at
points of the run, and each thread's CPU): about 100 ms from the interpreter's start to the first
command, 0.7 s of commands, 8 ms after the last (the summary, the store's close) and the
interpreter's teardown (8 ms, less than that of a bare ``import asyncio``, 10 ms). Before the
first command: the imports beyond ``import asyncio``'s (60 ms by ``-X importtime``, a third of
it the building of 68 dataclasses: see ``bench_startup.py``), then about 22 ms of work:
reading the plan 3 ms, opening the store and registering the run 4 ms, the 1,000 units and
their subplans 8 ms (their log paths 4.6 ms of it), the dispatcher's preparation 2 ms, the rest
the session's and the executor's set-up (the manifest's hash covers only the template here:
under 1 ms). Per command the loop's thread spends about 0.25 ms of CPU, 0.10-0.12 ms of it
at the command's end (``find``: 7-7.5 reads of ``/proc``: the command's own reaped leader, 1.0,
always read; zombies, 1.1; other commands' leaders a spawner thread has forked and not noted
yet, 1.5-1.8, and 1.4-1.8 environments, theirs nearly all; the two reads kept open) and
0.04 ms watching and reaping the leader through its pidfd; each spawner thread about 0.2 ms a
start, nearly all in the kernel (creating the log, the fork and
exec; ``Popen``'s own Python about 0.05 ms). The process uses about 0.6 s of CPU, the 1,000
``true`` 0.7 s (as much as under ``xargs``): on two cores the run is near its floor.

What changed: a plain run imported ``store.resume`` (for ``run_manifest`` alone) and through it
``store.leftovers``, and built five record types of ``store.records`` that only the commands
reading a run build (steps, their items, subplans, process groups, plan changes). Now
``run_manifest`` lives in ``store.manifest`` and those records in ``store.run_details``, loaded
on first use of one of their names; both stay importable from where they were
(``tests/test_cli_startup.py`` checks a plain run loads neither). Side by side with the code
before: a run of one ``true`` 709.3M -> 674.7M instructions (callgrind, medians of 2: 2.99x ->
2.85x ``import asyncio``'s 237.1M), CPU 0.97x (medians of 30 interleaved rounds on a shared
machine); this plan's imports beyond ``asyncio``'s 64.7 -> 61.2 ms (``-X importtime``, medians
of 7), its run 2,620.9M -> 2,554.4M instructions (one each: the reads of ``/proc`` vary with
timing), CPU and wall time within the noise (0.99x, 14 interleaved rounds). Measured and left:
writing the plain lines in batches rather than a flush each (about 2% of the CPU; their
promptness stays); the log paths' ``pathlib`` (about 1 us of 4.6 a subplan); skipping the
environment of a pid whose stat names this process as its parent (only an unnoted command's
leader can be that, unless this process is PID 1 or a subreaper, which it cannot tell cheaply:
an orphaned leftover would then escape); noting a pid before ``Popen`` returns (no public way;
a hook into ``Popen``'s private steps spared 1.2 of those reads a command, mostly the zombies:
the rest are read before the spawner's fork returns their pid, waiting for the GIL meanwhile).

Seventh pass (#10, stop 15), on the store's writer process: it was started as the recorder was
made (about 100 ms into the run, 4 ms of ``Popen`` on the loop's thread), and booted (about
40 ms of CPU) while the first commands started; a run of one ``true`` then waited about 30 ms at
its end for it to come up. Now ``run`` and ``resume`` start it before they read the plan
(``writer_start.prestart``, kept as the spare: it waits for its session as long as the command
runs, and is killed if the run ends before it records), so it boots on the other core while the
command imports its modules; the recorder takes it as a new process (its answer read by the ack
thread). Between the store's opening and the first command, an open ``RunStore``'s recorder no
longer opens the store again to check it (0.3 ms): that window 6.81 -> 6.41 ms (medians of 61
interleaved runs of one ``true``). Side by side with the code before (interleaved, shuffled
rounds, each begun on a quiet machine; CPU of every process, the writer's included): a run of
one ``true`` 143.9 -> 120.8 ms (0.84x; 2.59x -> 2.18x the bare script), CPU 0.99x; a resume of
one failed subplan 0.92x; this plan (1,000 ``true``) 881.4 -> 885.9 ms (1.00x; 1.16x -> 1.17x
the bare script: the loop's thread is the bottleneck, and the writer's boot had the other
core's slack), CPU within the noise (the command's own, its threads included: 1.00x, 1.05x and
0.95x in three batches). Measured and left: starting it earlier still (before ``run_args``:
1.01x, its boot is over before the recorder either way, and ``--help`` or ``--dry-run`` would
pay for it); starting it only when ``/proc/loadavg`` shows an idle core (0.94x against 0.86x,
on a busier machine); the ack thread starting the sender thread, so that the loop's thread
waits for one thread's start, not two (0.1 ms, up to 4 ms on a busy machine; a start that
fails would then be the ack thread's to handle); the listener's record committed without an
fsync (0.15 ms).

Eighth pass (#10, stop 15), on the spawner threads' hand-overs of the GIL (``strace -f -c``: about
97 futex calls per command, the bare script 11): each call a spawner makes (12 a start: the log's
open, ``fstat`` and header, ``/dev/null``'s open and close, ``Popen``'s error pipe, the fork,
the output's close, the wake-up of the loop) lets the loop take the GIL, and the spawner then
waits for it back, or the loop waits while ``Popen``'s Python runs (about 60 us a start). Now
``/dev/null`` stays open (``Popen`` was handed ``DEVNULL``), a new log is created with
``O_EXCL`` (so empty: no ``fstat``), and the starts that end before the loop runs wake it once
(``spawning._Ended``, not ``run_in_executor``'s wake-up each). Futex calls 93-101k -> 59-67k
per run of this plan, context switches of the command 0.76-0.84x. Side by side with the code
before (interleaved, shuffled rounds on tmpfs, 12-24 rounds each, five times, load 1-7; medians):
wall 0.946x, 0.965x, 0.977x, 0.978x, 0.969x; CPU of the command (its threads, not its children)
0.933x, 0.935x, 0.948x, 0.944x, 0.944x; to the bare script 1.13x -> 1.11x and 1.18x -> 1.13x.
Alone: ``/dev/null`` kept 0.94-0.99x wall, 0.95-0.99x CPU (futex -13%); with ``O_EXCL`` 0.98x and
0.96x; the batched wake-up alone 1.01x wall, 0.96-1.00x CPU. The number of spawners again, with
the new code (12 rounds, ratios to the code before): 2 1.03x wall (0.95x CPU), 3 0.99x (0.95x),
4 0.965x (0.935x), 6 0.96x (0.97x): four stay (with the old code 2 1.24x, 3 1.15x, 6 0.93-1.03x;
on disk every variant was within the disk's noise). Measured and left, ``Popen``'s own Python
(thread CPU of a start, 108 us): an environment already encoded (bytes) 0.94x, but encoding it
in our code costs as much unless the run built it once (the finder reads it as text); an
absolute program (no search of ``PATH``) 0.86x, but which program runs must follow ``PATH`` at
each start (an earlier subplan may install one). Elsewhere: the store's sender thread reads each
leader's start time and ``os.path.abspath``s its log (a ``getcwd``): four hand-overs a command.

Run: python benchmarks/bench_cli.py [--commands 1000] [--parallel 16] [--rounds 5] [--folder DIR]
"""

from __future__ import annotations

import argparse
import compileall
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

BARE = textwrap.dedent(
    """
    import asyncio, os, sys, time

    async def main(items, width, logs):
        semaphore = asyncio.Semaphore(width)
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND

        async def one(item):
            async with semaphore:
                # Like `subplans run`: each command's output in a log file of its own.
                log = os.open(os.path.join(logs, item + ".log"), flags, 0o666) if logs else None
                try:
                    proc = await asyncio.create_subprocess_exec(
                        "true", item, stdin=asyncio.subprocess.DEVNULL,
                        stdout=log or asyncio.subprocess.DEVNULL,
                        stderr=log or asyncio.subprocess.DEVNULL,
                    )
                finally:
                    if log is not None:
                        os.close(log)
                await proc.wait()

        await asyncio.gather(*(one(item) for item in items))

    items = open(sys.argv[1]).read().split()
    logs = None
    if len(sys.argv) > 3:  # a folder of its own for this run's logs, as each run of subplans has
        logs = os.path.join(sys.argv[3], f"{os.getpid()}-{time.time_ns()}")
        os.makedirs(logs)
    asyncio.run(main(items, int(sys.argv[2]), logs))
    """
)

#: ``python -c COUNT_READS plan.yaml``: ``subplans run`` of the plan, counting what the event
#: loop's thread opens in /proc, and its ``pread``s (of ``/proc/loadavg`` and ``/proc/stat``,
#: kept open: nothing else of the loop's uses ``pread``); printed to stderr.
COUNT_READS = textwrap.dedent(
    """
    import os, runpy, sys, threading

    counts = [0, 0]
    real_open, real_pread = os.open, os.pread

    def counting_open(path, *args, **kwargs):
        if threading.current_thread() is threading.main_thread():
            counts[0] += str(path).startswith("/proc/")
        return real_open(path, *args, **kwargs)

    def counting_pread(fd, *args):
        counts[1] += threading.current_thread() is threading.main_thread()
        return real_pread(fd, *args)

    os.open, os.pread = counting_open, counting_pread
    sys.argv = ["subplans", "run", sys.argv[1], "-q"]
    try:
        runpy.run_module("subplans", run_name="__main__")
    finally:
        print(*counts, file=sys.stderr)
    """
)

SUBPLANS = "subplans run"
BARE_SCRIPT = "bare asyncio script"
BARE_NULL = "bare script, output dropped"


def write_inputs(folder: Path, commands: int, width: int) -> tuple[Path, Path, Path]:
    """The plan, the bare script and the list of items, in ``folder``."""
    items = [f"m{index}" for index in range(commands)]
    listing = folder / "items.txt"
    listing.write_text("\n".join(items) + "\n", encoding="utf-8")
    plan = folder / "plan.yaml"
    plan.write_text(
        textwrap.dedent(
            f"""
            name: bench
            steps:
              - name: run
                max_parallel: {width}
                for_each: {{lines: items.txt}}
                subplan:
                  run: ["true", "{{item}}"]
            """
        ).lstrip(),
        encoding="utf-8",
    )
    bare = folder / "bare.py"
    bare.write_text(BARE, encoding="utf-8")
    return plan, bare, listing


def creation_cost(folder: Path, count: int = 200) -> float:
    """Median microseconds to create a file in ``folder`` (a new subfolder, kept until the end
    like the runs' logs), with the flags ``spawning.open_log`` uses."""
    place = folder / "creation"
    place.mkdir()
    took = []
    for index in range(count):
        began = time.perf_counter()
        fd = os.open(place / f"{index}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
        took.append(time.perf_counter() - began)
        os.close(fd)
    return statistics.median(took) * 1e6


def children_env() -> dict[str, str]:
    """The children's environment, the package compiled first: a child that finds a stale
    ``.pyc`` and may not write one (``PYTHONDONTWRITEBYTECODE``, set in some environments)
    compiles that module again at each start (40 ms here), which measures the compiler. So
    every module of the package is compiled here, and the children may write."""
    import subplans

    compileall.compile_dir(Path(subplans.__file__).parent, quiet=1)
    return {name: value for name, value in os.environ.items() if name != "PYTHONDONTWRITEBYTECODE"}


def timed(
    argv: list[str],
    *,
    stdin: Path | None = None,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> float:
    """Wall seconds of one run of ``argv`` (output discarded); it must exit 0."""
    with open(stdin if stdin is not None else "/dev/null", "rb") as source:
        began = time.perf_counter()
        done = subprocess.run(
            argv,
            stdin=source,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd=cwd,
            env=env,
        )
        took = time.perf_counter() - began
    if done.returncode != 0:
        raise SystemExit(f"{argv[0]} failed ({done.returncode}): {done.stderr.decode()[-2000:]}")
    return took


def proc_reads(plan: Path, env: dict[str, str]) -> tuple[int, int]:
    """How often the event loop opened a file in /proc, and read one kept open, in a run of
    ``plan`` (start-up included: a few; the rest at the end of each command)."""
    done = subprocess.run(
        [sys.executable, "-c", COUNT_READS, plan.name],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=plan.parent,
        env=env,
        text=True,
    )
    if done.returncode != 0:
        raise SystemExit(f"subplans run failed ({done.returncode}): {done.stderr[-2000:]}")
    opened, again = done.stderr.split()[-2:]
    return int(opened), int(again)


def ratio_row(label: str, ours: list[float], theirs: list[float] | None, target: str) -> str:
    """One line: subplans' median and best over the baseline's; ``theirs`` None: skipped."""
    if theirs is None:
        return f"{label:32} {'skipped: not installed':>19}   {target}"
    median = statistics.median(ours) / statistics.median(theirs)
    best = min(ours) / min(theirs)
    return f"{label:32} {median:8.2f}x {best:8.2f}x   {target}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--commands", type=int, default=1000)
    parser.add_argument("--parallel", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--folder", type=Path, default=None, help="where the runs go")
    options = parser.parse_args()
    n, width = options.commands, options.parallel
    xargs, gnu = f"xargs -P {width}", f"GNU parallel -j {width}"
    env = children_env()

    # Beside the project, where plans and their run folders normally live: on some machines
    # /tmp is a much slower filesystem for creating files (0.3 ms a file here, against 0.02 ms),
    # which would measure the disk, not the tools.
    here = options.folder or Path(__file__).resolve().parent
    with tempfile.TemporaryDirectory(prefix=".subplans-bench-", dir=here) as tmp:
        folder = Path(tmp)
        creating = creation_cost(folder)
        plan, bare, listing = write_inputs(folder, n, width)
        logs = str(folder / "bare-runs")
        contenders: dict[str, tuple[list[str], Path | None]] = {
            SUBPLANS: ([sys.executable, "-m", "subplans", "run", str(plan)], None),
            BARE_SCRIPT: ([sys.executable, str(bare), str(listing), str(width), logs], None),
            BARE_NULL: ([sys.executable, str(bare), str(listing), str(width)], None),
            xargs: (["xargs", "-P", str(width), "-n", "1", "true"], listing),
        }
        if shutil.which("parallel"):
            # Its output buffers (a file per command, in $TMPDIR) in the same folder as the others'.
            contenders[gnu] = (
                ["parallel", "--will-cite", "--tmpdir", tmp, "-j", str(width), "true"],
                listing,
            )
        times: dict[str, list[float]] = {name: [] for name in contenders}
        for argv, stdin in contenders.values():  # warm the caches (.pyc, page cache)
            timed(argv, stdin=stdin, cwd=folder, env=env)
        for _ in range(options.rounds):
            for name, (argv, stdin) in contenders.items():
                # Run folders are kept until the end: deleting files on some filesystems (ext4
                # mounted with discard) slows the file creation of the runs that follow.
                times[name].append(timed(argv, stdin=stdin, cwd=folder, env=env))
        opened, again = proc_reads(plan, env)

    print(
        f"creating a file in {here}: {creating:.0f} us (median; a disk at rest: 4-20 us, "
        "far more within minutes of deletions nearby: see the docstring)"
    )
    print(
        f"{n} commands of `true`, {width} at a time, start-up included; "
        f"{options.rounds} interleaved rounds"
    )
    print(f"{'':32} {'median s':>9} {'best s':>9}")
    for name in (SUBPLANS, BARE_SCRIPT, BARE_NULL, xargs, gnu):
        if name in times:
            found = times[name]
            print(f"{name:32} {statistics.median(found):9.3f} {min(found):9.3f}")
        else:
            print(f"{name:32} {'not installed: skipped':>19}")
    print()
    print(f"{'subplans run, as a ratio to':32} {'median':>9} {'best':>9}   target")
    ours = times[SUBPLANS]
    print(ratio_row(f"the {BARE_SCRIPT}", ours, times[BARE_SCRIPT], "<= 1.2x"))
    print(ratio_row(gnu, ours, times.get(gnu), "<= 0.33x (3x faster)"))
    print(ratio_row(BARE_NULL, ours, times[BARE_NULL], "(a reference: no log files)"))
    print(ratio_row(xargs, ours, times[xargs], "(a reference)"))
    print()
    print(
        f"/proc read by the event loop, per command: {opened / n:.2f} files opened, "
        f"{again / n:.2f} read again (pread) (a reference: the docstring's fifth pass)"
    )


if __name__ == "__main__":
    main()
