"""The start-up of the ``subplans`` command, against ``python -c 'import asyncio'``.

Each contender is a fresh process, run in interleaved rounds (a slow moment of the machine hits
them all alike); the figures are medians and bests, printed as ratios to the baseline measured
in the same run:

- ``python -c 'import asyncio'``: the baseline, what any asyncio program pays before it starts;
- ``python -c pass``: the interpreter alone, for reading the others;
- ``subplans --version`` (target: within 1.3x of the baseline) and ``import subplans``;
- ``subplans --help``, ``subplans validate`` and ``subplans run`` of a plan with one ``true``
  (``--no-progress``, output to ``/dev/null``), to read what each command pays for.

Then where the start-up of that ``subplans run`` goes: ``python -X importtime`` of it, each
module's own import time summed by the distribution it belongs to (ours by sub-package), as a
share of that run's wall time. The package is compiled first and the children run without
``PYTHONDONTWRITEBYTECODE`` (``children_env``): where that is set (as in some sandboxes), a child
recompiled every module whose ``.pyc`` was stale at each start, 40 ms of a 120 ms run.

Profile (issue #10): ``subplans --version`` was 2.35x the baseline: ``import subplans`` loaded
the dispatcher (and so asyncio) and ``importlib.metadata`` for ``__version__``, then ``main()``
built the Typer app (Typer, its vendored click, the command modules) before the option was
read. Now the package loads its public names on first use, ``__version__`` is a constant kept
equal to pyproject's by a test, and ``main()`` answers ``--version`` before Typer is imported:
what remains is the interpreter, the console script's ``re`` and the signal guard (``signal``,
``enum``, ``typing``). For the other commands Typer (with click, shellingham and, as Typer
coerces option values through pydantic, pydantic) is the floor; Rich only for ``--help``.

The garbage collector (#10, second pass): what the start-up creates (Typer's commands,
pydantic's schemas, the modules, the plan: tens of thousands of objects) lives until the process
ends, and the collector walked it again and again: during the start-up (about 15 ms of a run of
one ``true``), and once more in the interpreter's teardown at exit, 40-70 ms after the command
was done (measured from its last ``atexit`` handler to the end of the process). Now ``main()``
pauses the collector until the command's own work begins (``cli.gc_pause``: what exists then is
frozen out of its sight for good, in the program only, so the teardown skips it too). A first
version also froze everything at exit (a teardown of about 8 ms), which kept a run's garbage
cycles from being finalised (a ``call``'s temporary file stayed on disk): dropped. Side by side with the code before (medians of 15 interleaved rounds, a busy
machine): ``subplans run`` of one ``true`` 308 -> 246 ms, ``validate`` 207 -> 155 ms, ``--help``
143 -> 121 ms (``python -c 'import asyncio'``: 49 ms). What the start-up of ``subplans run`` still
spends (``-X importtime`` and a profile of a one-``true`` run): pydantic and the plan models
(``plans``: the models' own import about 20 ms), Typer's import and the pydantic TypeAdapter it
builds for each option as it parses them (pydantic's plugin loader imports
``importlib.metadata`` and scans the entry points), the store's modules and its open, and about
0.3 ms for each dataclass the run's modules define (some 115).

Third pass (#10), on ``subplans run``'s start beyond the imports of the run itself (``-X
importtime``, a profile, and timing each import in a fresh interpreter): Typer was about 40 ms
(Typer with its vendored click, ``shutil``, ``inspect``, ``platform``, and the pydantic
TypeAdapter it builds for each option it parses), importing pydantic about 40 ms, building the
validators of every plan model about 20 ms (each model was built at import, whether the plan
needed it or not), and building the first validator made pydantic scan the installed
distributions for plugins (``importlib.metadata``, about 9 ms). What changed:

- a plain ``run`` line (``run PLAN`` and options each written once, values Typer takes as they
  are) is read without Typer (``cli.run_args``) and run by the same code as Typer's command
  (``cli.run_plan``); any other line goes to Typer, so help and usage errors are Typer's own
  (``tests/test_cli_run_args.py`` checks the values against Typer's for each form);
- a plan of the common shape is checked without pydantic (``plans.plain_plans``) into stand-ins
  of the models (``plans.plain_models``: the same fields, values and fields set, checked against
  pydantic's on every example, hand-written cases and 3,000 random changes); anything else, and
  every problem, goes to pydantic as before, so each message is the same. The models are built
  on first use (``defer_build``), and the built-in profiles, a step's own profile fields and the
  command line's overrides are stand-ins too. A run of such a plan, the README's main job among
  them, loads neither Typer nor pydantic.

Side by side with the code before (medians of 21 interleaved rounds, a machine other jobs kept
busy, load 3 to 6): ``subplans run`` of one ``true`` 361 -> 159 ms (bests 284 -> 121 ms;
``python -c 'import asyncio'`` 69 ms, best 48), and the README's main job printed its first line
309 -> 127 ms after it was started (medians of 7). In this benchmark's own rows (7 rounds, the
same machine) ``subplans run`` of one ``true`` is now 2.5x ``import asyncio``, quicker than
``--help`` (2.9x) and ``validate`` (2.8x), which still go through Typer (``validate`` no longer
builds the models' validators for a plain plan; ``--help`` is Typer's and Rich's markdown). What the start of
a run still spends beyond ``asyncio``'s: the engine, execution, store and sinks modules (about
100 dataclasses at about 0.3 ms each), PyYAML (about 8 ms, its reader's regular expression
alone 3 ms) and the store's open.

Fifth pass (#10, stop 12), on what a plain ``subplans run`` imports. A run of one ``true`` was
2.5-2.6x ``python -c 'import asyncio'`` in CPU time; ``-X importtime``, a profile, a trace of
which modules' functions the run calls, and ``valgrind --tool=callgrind`` (instructions, which a
busy machine does not change) showed the imports are nearly all of the difference, and most of
them are used. What a plain run loaded and never used: the store's every module through
``subplans.store``'s ``__init__`` (``cancel``, ``change_limit``, ``pool_usage``), the resume
launch, the ``for_each`` sources (``plans.for_each``, ``execution.step_items``, reached from
the tree, the loader, the executor and the store's reader), the quoting of values in ``run``
strings (``plans.shellquote``, for a template's placeholders), the engine's streams and groups,
``fractions`` (percentages of halt policies) and ``secrets`` (a run id's suffix is
``os.urandom``'s now); two regular expressions were compiled at import for rare cases. Each is
now loaded or compiled where it is used (``subplans.store`` hands its names on as they are first
asked for, as ``subplans`` does; ``tests/test_cli_startup.py`` checks a plain run loads none of
them). Side by side with the code before (the same tree otherwise), a run of one ``true``: 7%
fewer instructions (770.0M -> 716.7M, medians of 2; ``import asyncio`` 236.9M, so 3.25x ->
3.03x of it) and CPU time 0.93x (medians of 30 interleaved rounds on a machine other jobs kept
busy, 143 -> 134 ms, ``import asyncio`` 58 ms: 2.49x -> 2.33x); ``--version`` unchanged (94.2M
instructions, 0.41x the baseline). In a run of 1,000 ``true`` at ``-j16`` (``bench_cli.py``)
these 7 ms are within the noise (CPU 1.33 s either way, 12 interleaved rounds).

What is left is mostly not imports to defer: building dataclasses. Python 3.11 writes each
generated method (``__init__``, ``__repr__``, ``__eq__``, ``__hash__``, and ``__setattr__`` and
``__delattr__`` of a frozen class) as source and compiles it, about 0.3 ms per frozen class with
slots against 4 us for a plain class: the 67 that a plain run's modules define (77 before) cost
about 24 ms, and under callgrind the parsing of those methods alone is 20% of the run's
instructions (with their compiling, over a quarter: almost an ``import asyncio``). 26 of the 67
are never built in a plain run (event and record types for failures, resumes, limits and
reports). Then PyYAML's import (7 ms, 3 ms of it the pure reader's one regular expression,
loaded even though the C loader reads the plan), ``sqlite3``, ``json`` and ``hashlib``, and
after the imports the store's writes (its ``fsync``: wall time, not CPU).

Sixth pass (#10, stop 13): a plain run still loaded ``store.resume`` (``launches`` took
``run_manifest`` from it) and through it ``store.leftovers``, and ``store.records`` built five
record types only the commands reading a run build. ``run_manifest`` is now in
``store.manifest``, those records in ``store.run_details`` (loaded on first use of a name,
importable from ``store.records`` and ``subplans.store`` as before). A run of one ``true``:
709.3M -> 674.7M instructions (2.99x -> 2.85x ``import asyncio``'s 237.1M), CPU time 0.97x
(medians of 30 interleaved rounds). Of what a plain run's imports still cost beyond
``asyncio``'s (about 60 ms by ``-X importtime`` for ``bench_cli.py``'s plan), the larger
shares are the dataclasses of ``plans.tree`` and ``engine.events`` (types any run builds),
PyYAML's pure reader (its regular expression, compiled as
``yaml`` is imported, 3 ms) and ``pathlib``'s ``urllib.parse`` and ``ipaddress`` (2 ms).

Seventh pass (#10, stop 15), the plan loader, the command and its sinks: of the dataclasses a
plain run's modules build there (26, 11.6 ms of the start by timing ``dataclasses``' class
processing), 15 were internal: the loader's ``Scope``, ``Level`` and ``Located``, the
``tree.UnitDraft`` nodes are built as (1.5 ms alone: 16 fields), ``for_each``'s sources, items
and problems (four never built by a plain run), the command's ``Decision``, ``Output``,
``RunEnd`` and ``ClusterNeed``, the sinks' ``StepView`` and ``RunSummary``. They are plain
classes with ``__slots__`` and a hand-written ``__init__`` now (``Final`` keeps the frozen ones
read-only to mypy; ``__repr__`` and ``__eq__`` where they are shown or compared): 11 classes,
5.6 ms, are left, all public (the plan tree, ``Overrides``, ``GlobalConfig``, ``Backend``,
``Problem``). ``--output``'s ``OutputMode`` moved to ``sinks.output_modes``, so that a run
without ``tag``/``group`` loads neither ``sinks.tagged_output`` nor ``termios`` (1 ms), and
``cli.limit_lines`` is loaded once a ``subplans limit`` request comes. Side by side with the tree
before (the other areas' changes left out), a run of one ``true`` (``one.yaml``: 20 items):
753M -> 697M instructions (medians of 2; ``import asyncio`` 237M, so 3.18x -> 2.94x), CPU time
0.95x (medians of 40 interleaved rounds on a busy machine: 161 -> 154 ms, ``import asyncio``
57 ms: 2.85x -> 2.72x).

Seventh pass, the engine, the execution layer and the store (#10, stop 15): of the dataclasses a
plain run's modules build there (40, 15.6 ms of the start by timing ``dataclasses``' class
processing), 14 were internal or never built by a plain run: ``procfs.ProcessInfo`` and
``Window``, ``finding.Family`` and ``stopping.Stopping`` (the end of every command builds about
7, 3, 1 and 1 of them), the executor's ``RunContext`` (now in ``execution.run_context`` with
``RemoteBackend`` and ``log_name``, which keeps ``runners`` under 400 lines), ``LiveLimits``,
the ``Clock``, the store's ``Migration`` and ``WriterOptions`` (``to_dict()`` makes the session
frame), the progress view's ``Failure`` and ``step_items.RecordedItems``. They are plain
classes with ``__slots__`` and a hand-written ``__init__`` now (``Final`` for the frozen ones;
a ``__repr__``, and ``__eq__`` where something compares them). Two public records a plain run
never builds moved to ``store.run_details``: ``StoredEvent``, and ``LimitRecord`` (handed on by
``store.limits``, built once a request is read); and the engine loads ``control_events`` once a
cap changes or a dispatch halts (the progress reporter tells a ``LimitChanged`` by its
``kind``, and so does ``sinks.plan_progress``: a plain run loads it no more). Left: 26 classes, 9.7 ms, all public
(events, ``Subplan``, the config, ``HaltPolicy``, results, records, the recorder's settings).
Such a class could stay a dataclass for a sixth of the cost: ``@dataclass(init=False,
repr=False, eq=False)`` with hand-written methods builds in about 50 us, against 350 us frozen
with slots. Building the per-command objects (timeit, interleaved, one process):
``ProcessInfo`` 0.32x (631 -> 199 ns), ``Window`` 0.45x, ``Family`` 0.50x, ``Stopping`` 0.90x
(its checks are most of it). Side by side with the tree before (the other areas' changes left
out, but for the lazy ``cli.limit_lines`` the ``LimitRecord`` move needs), a run of one
``true`` (``one.yaml``): 756M -> 701M instructions (medians of 2; ``import asyncio`` 237M, so
3.19x -> 2.96x), CPU time 0.96x (medians of 40 interleaved rounds on a busy machine: 153 ->
147 ms, ``import asyncio`` 52 ms: 2.97x -> 2.84x).

Seventh pass, the shared value base (#10, stop 15): the 21 former frozen dataclasses take
``engine.values.Value`` (repr, equality and hash by ``_fields``, generic methods: nothing built
at import; two former mutable ones ``Shown``, the repr alone), in place of 14 hand-written
``__repr__`` and 9 ``__eq__``/``__hash__`` pairs. Importing a plain run's 105 modules (callgrind, PYTHONHASHSEED=0, fresh bytecode):
618.04M -> 618.83M instructions (+0.13%): the module's import is about 0.6M, each subclass
builds about 11k more than a class on ``object`` (a class between them and ``Value`` would
double that: ``Value`` does not derive from ``Shown``). Building the per-command objects
(timeit, interleaved, one process): ``ProcessInfo`` 0.85x (one ``self.x: Final = x`` per field
instead of tuple assignments), ``Window`` 0.99x, ``Family`` 0.98x; ``Stopping`` unchanged.

Run: python benchmarks/bench_startup.py [--rounds 20]
"""

from __future__ import annotations

import argparse
import compileall
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

TARGET = 1.3
BASELINE = "python -c 'import asyncio'"
#: Distributions as the breakdown names them: a module's top-level package, or the group here.
GROUPS = {
    "typer": "typer (and its click)",
    "click": "typer (and its click)",
    "shellingham": "typer (and its click)",
    "annotated_doc": "typer (and its click)",
    "pydantic": "pydantic",
    "pydantic_core": "pydantic",
    "annotated_types": "pydantic",
    "typing_extensions": "pydantic",
    "typing_inspection": "pydantic",
    "rich": "rich",
    "markdown_it": "rich",
    "pygments": "rich",
    "yaml": "yaml",
    "_yaml": "yaml",
    "sqlite3": "sqlite3",
    "_sqlite3": "sqlite3",
    "asyncio": "asyncio",
}
PLAN = 'name: tiny\nsteps:\n  - name: one\n    run: ["true"]\n'


def children_env() -> dict[str, str]:
    """The children's environment, the package compiled first: a child that finds a stale
    ``.pyc`` and may not write one (``PYTHONDONTWRITEBYTECODE``, set in some environments)
    compiles that module again at each start, 40 ms of a 120 ms run, which measures the
    compiler. So every module of the package is compiled here, and the children may write."""
    import subplans

    compileall.compile_dir(Path(subplans.__file__).parent, quiet=1)
    return {name: value for name, value in os.environ.items() if name != "PYTHONDONTWRITEBYTECODE"}


def command() -> list[str]:
    """How to start ``subplans``: its console script beside this interpreter, as installed."""
    for script in (Path(sys.executable).with_name("subplans"), shutil.which("subplans")):
        if script is not None and Path(script).is_file():
            return [str(script)]
    return [sys.executable, "-m", "subplans"]  # not installed as a script


def timed(argv: list[str], cwd: Path, env: dict[str, str]) -> float:
    """Wall seconds of one run of ``argv`` (output discarded); it must exit 0."""
    began = time.perf_counter()
    done = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=cwd, env=env)
    took = time.perf_counter() - began
    if done.returncode != 0:
        raise SystemExit(f"{argv} failed ({done.returncode}): {done.stderr.decode()[-2000:]}")
    return took


def import_shares(argv: list[str], cwd: Path, env: dict[str, str]) -> dict[str, float]:
    """Each group's own import time in one run of ``argv`` under ``-X importtime``, as a share
    of that run's wall time."""
    began = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-X", "importtime", *argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
        env=env,
        check=True,
    )
    took = time.perf_counter() - began
    shares: dict[str, float] = defaultdict(float)
    for line in done.stderr.splitlines():
        found = re.match(r"import time:\s+(\d+) \|\s+\d+ \|\s*(\S+)", line)
        if found is not None:
            parts = found[2].split(".")
            group = GROUPS.get(parts[0], "standard library and other")
            if parts[0] == "subplans":  # by sub-package: which layer to look at
                group = ".".join(parts[:2])
            shares[group] += int(found[1]) / 1e6 / took
    return shares


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=20)
    options = parser.parse_args()
    env = children_env()
    subplans = command()
    python = sys.executable

    with tempfile.TemporaryDirectory(prefix="subplans-bench-startup-") as tmp:
        folder = Path(tmp)
        (folder / "plan.yaml").write_text(PLAN, encoding="utf-8")
        run = [*subplans, "run", "plan.yaml", "--no-progress", "--store", "state.db"]
        contenders = {
            BASELINE: [python, "-c", "import asyncio"],
            "python -c pass": [python, "-c", "pass"],
            "subplans --version": [*subplans, "--version"],
            "python -c 'import subplans'": [python, "-c", "import subplans"],
            "subplans --help": [*subplans, "--help"],
            "subplans validate (tiny plan)": [*subplans, "validate", "plan.yaml"],
            "subplans run (one `true`)": run,
        }
        for argv in contenders.values():  # warm the caches (.pyc, page cache)
            timed(argv, folder, env)
        times: dict[str, list[float]] = {name: [] for name in contenders}
        for _ in range(options.rounds):
            for name, argv in contenders.items():
                times[name].append(timed(argv, folder, env))
        shares = [
            import_shares(run[1:] if run[0] == python else run, folder, env) for _ in range(5)
        ]

    median = {name: statistics.median(found) for name, found in times.items()}
    best = {name: min(found) for name, found in times.items()}
    print(f"start-up, fresh processes, {options.rounds} interleaved rounds; ratios to {BASELINE}")
    print(f"{'':32} {'median':>8} {'best':>8}")
    for name in contenders:
        ratio_median = median[name] / median[BASELINE]
        ratio_best = best[name] / best[BASELINE]
        print(f"{name:32} {ratio_median:7.2f}x {ratio_best:7.2f}x")
    version = median["subplans --version"] / median[BASELINE]
    print(f"\nsubplans --version / {BASELINE}: {version:.2f}x median (target <= {TARGET}x)")

    print("\nwhere `subplans run` (one `true`) spends its start-up: own import time by group,")
    print("as a share of the run's wall time under -X importtime (median of 5 runs)")
    groups = sorted({group for found in shares for group in found})
    by_group = {
        group: statistics.median(found.get(group, 0.0) for found in shares) for group in groups
    }
    for group, share in sorted(by_group.items(), key=lambda item: -item[1]):
        print(f"  {group:28} {100 * share:5.1f}%")
    print(f"  {'all imports':28} {100 * sum(by_group.values()):5.1f}%")


if __name__ == "__main__":
    main()
