"""Reading big plans: ``subplans validate`` against PyYAML's libyaml reader of the same file.

Rows (every figure beside its baseline, measured in the same run, contenders interleaved round
by round so that a slow moment of the machine hits both alike):

- ``subplans validate`` of a plan with a 100,000-item inline ``for_each`` list, against
  ``yaml.load(..., Loader=yaml.CSafeLoader)`` of the same file, each a fresh process (start-up
  included): the ratio of each round, median and best. Target: <= 3x. The same in one process
  (``load_plan`` against ``yaml.load``), without start-up.
- 1,000,000 items, written inline and as ``for_each: {lines: FILE}``: ``subplans validate``
  once each, wall time and peak RSS, against ``CSafeLoader`` of the inline plan.
- 1,000,000 ``call`` subplans of a no-op ``async def``: loaded and run by ``PlanExecutor`` in a
  fresh process, wall time and peak RSS.

What was slow, and what changed (profiles of a 100,000-item plan):

- The YAML reader. PyYAML's pure-Python reader kept a line and column for every value: 80% of
  validating. Now libyaml reads the file (``plans.fast_yaml``) and positions are found only when
  a problem needs one, by reading the text again the careful way; whatever libyaml reads
  otherwise than PyYAML (tabs, the tag ``!`` alone, ``?`` in a plain value inside ``[...]``,
  other line breaks) or whatever could be refused (aliases, deep nesting, duplicate keys) is
  read the careful way from the start, so every message is what it was.
- Building the tree. Each item paid for a ``Path`` (for ``{stem}``), a regex substitution per
  placeholder, the template's env, cwd and arguments worked out again, a ``call`` module looked
  up on disk again, and its id's location formatted. Now ``UnitBuilder`` works out once what
  every item shares (nodes share the same ``env``, ``cwd`` and argument tuple when no
  placeholder is in them), placeholders are split once per template, ``{stem}`` is computed
  from the string, a ``call`` module is looked up once, and items are named one at a time.
- The cycle collector. A million-item tree is millions of objects that all live on; the
  collector's full passes over the growing heap were 40% of loading it. It is paused while a
  tree is built.

Second round, when the 100,000-item row stood on the line at 3x:

- Making each node: a frozen dataclass's ``__init__`` sets each of ``UnitNode``'s 14 fields
  through ``object.__setattr__``, and the loader named every field by keyword: 1.4 us a node,
  more than anything else an item cost. Nodes are now made as a ``tree.UnitDraft`` (the same
  fields, not frozen), given in order, and then made ``UnitNode``s in place: 0.3 us.
- PyYAML's constructor, in Python, went through half a dozen calls for each value: as long as
  libyaml took to read the list. ``fast_yaml`` now builds strings, lists and mappings of string
  keys itself (other tags, merge keys and aliases still by PyYAML), and tells libyaml that a
  scalar no implicit resolver could claim (quoted, or starting with a character none of them
  starts with) is a string without trying the resolvers: reading is now about as fast as
  ``CSafeLoader`` itself.
- The collector again: right after loading, its first pass goes over every object the
  paused build made (about a tenth of the time of loading 100,000 items). Handing them straight
  to its oldest generation (``gc.freeze`` then ``gc.unfreeze``) saved that, but moved the
  calling program's own young objects too (a cycle of its own then waited for a full pass)
  and is process-wide: a library does not do that, so it was tried and dropped.
- Start-up: the character class that finds what libyaml reads otherwise took 3 ms to compile;
  it is compiled only for a file beyond ASCII. ``glob`` is imported only for a glob.
  The rest of the start-up of ``subplans validate`` is mostly pydantic: importing it and
  building the plan models' validators is about 0.1 s, some 60% of it (not changed here).

Before -> after, on this kind of machine (2 shared cores, noisy), ratios to CSafeLoader in the
same run: ``subplans validate`` of 100,000 items, fresh processes, 16.5x -> 2.9x (medians; best
round 2.1x); ``load_plan`` in one process 12x -> 2.3x. 1,000,000 items inline: 74.5 s, 1,466 MB
(12x the time, 3.5x the peak RSS) -> 13.2 s, 532 MB (2.2x, 1.26x); as a lines file 0.97x the
time of CSafeLoader of the inline list. Second round, same machine, interleaved with the code
before it: ``subplans validate`` of 100,000 items 3.1x -> 1.9x (medians; 2.2x in a busy
moment); ``load_plan`` in one process 2.1x -> 1.3x; 1,000,000 items inline 2.2x -> 1.2x the
time of CSafeLoader, peak RSS unchanged (1.25x). A million no-op ``call`` subplans load and
run (the executor's own cost is ``bench_dispatcher.py``'s). The figures are printed to read,
never asserted: the machine decides them.

Run: python benchmarks/bench_plans.py [--items 100000] [--rounds 5] [--million 1000000]
     [--no-run]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import yaml

from subplans.plans.loader import load_plan

CSAFE = "import sys, yaml; yaml.load(open(sys.argv[1]), Loader=yaml.CSafeLoader)"

NOOP = "async def run() -> None:\n    return None\n"

RUN = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from subplans.execution.executor import PlanExecutor
    from subplans.plans.loader import load_plan

    plan = load_plan(sys.argv[1])
    result = asyncio.run(PlanExecutor(plan, state_dir=Path(sys.argv[2])).run())
    assert result.state.value == "completed", result.state
    """
)


def write_plan(path: Path, count: int, *, subplan: str, lines: Path | None = None) -> Path:
    """A plan of one ``for_each`` step over ``count`` items, inline or in the file ``lines``."""
    with path.open("w", encoding="utf-8") as out:
        out.write("name: big\nsteps:\n  - name: each\n    max_parallel: 32\n")
        if lines is None:
            out.write("    for_each:\n")
            out.writelines(f"      - item{index}\n" for index in range(count))
        else:
            out.write(f"    for_each: {{lines: {lines.name}}}\n")
            with lines.open("w", encoding="utf-8") as listing:
                listing.writelines(f"item{index}\n" for index in range(count))
        out.write(f"    subplan:\n      {subplan}\n")
    return path


def measured(argv: list[str], cwd: Path) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one run of ``argv``; it must exit 0."""
    began = time.perf_counter()
    child = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(child.pid, 0)
    took = time.perf_counter() - began
    assert child.stderr is not None
    errors = child.stderr.read().decode()
    child.stderr.close()
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"{argv} failed ({child.returncode}): {errors[-2000:]}")
    return took, usage.ru_maxrss / 1024


def ratio_rows(name: str, ours: list[float], theirs: list[float], target: str) -> None:
    ratios = [a / b for a, b in zip(ours, theirs, strict=True)]
    print(
        f"{name}: {statistics.median(ours):.3f} s vs {statistics.median(theirs):.3f} s (medians); "
        f"ratio median {statistics.median(ratios):.2f}x, best {min(ratios):.2f}x ({target})"
    )


def validate_rows(folder: Path, items: int, rounds: int) -> None:
    plan = write_plan(folder / "plan.yaml", items, subplan='run: ["true", "{item}"]')
    validate = [sys.executable, "-m", "subplans", "validate", str(plan)]
    csafe = [sys.executable, "-c", CSAFE, str(plan)]
    measured(validate, folder)  # warm the caches (.pyc, page cache)
    ours: list[float] = []
    theirs: list[float] = []
    for _ in range(rounds):
        ours.append(measured(validate, folder)[0])
        theirs.append(measured(csafe, folder)[0])
    print(f"{items:,} inline for_each items, {rounds} rounds")
    ratio_rows("  subplans validate / CSafeLoader, fresh processes", ours, theirs, "target <= 3x")
    text = plan.read_text(encoding="utf-8")
    ours, theirs = [], []
    for _ in range(rounds):
        began = time.perf_counter()
        load_plan(plan)
        ours.append(time.perf_counter() - began)
        began = time.perf_counter()
        yaml.load(text, Loader=yaml.CSafeLoader)
        theirs.append(time.perf_counter() - began)
    ratio_rows("  load_plan / yaml.load, one process", ours, theirs, "no start-up")


def million_rows(folder: Path, count: int, *, run: bool) -> None:
    inline = write_plan(folder / "inline.yaml", count, subplan='run: ["true", "{item}"]')
    listed = write_plan(
        folder / "listed.yaml", count, subplan='run: ["true"]', lines=folder / "items.txt"
    )
    base_time, base_rss = measured([sys.executable, "-c", CSAFE, str(inline)], folder)
    print(f"{count:,} items (one run each)")
    print(f"  CSafeLoader of the inline plan: {base_time:.2f} s, {base_rss:.0f} MB peak RSS")
    for name, plan in (("inline list", inline), ("{lines: FILE}", listed)):
        took, rss = measured([sys.executable, "-m", "subplans", "validate", str(plan)], folder)
        print(
            f"  subplans validate, {name}: {took:.2f} s ({took / base_time:.2f}x), "
            f"{rss:.0f} MB peak RSS ({rss / base_rss:.2f}x)"
        )
    if not run:
        return
    (folder / "noop.py").write_text(NOOP, encoding="utf-8")
    calls = write_plan(folder / "calls.yaml", count, subplan="call: noop:run")
    script = folder / "run_plan.py"
    script.write_text(RUN, encoding="utf-8")
    took, rss = measured([sys.executable, str(script), str(calls), str(folder / "state")], folder)
    print(
        f"  loaded and run by PlanExecutor, {count:,} no-op calls at max_parallel 32: "
        f"{took:.2f} s ({1e6 * took / count:.1f} us a subplan), {rss:.0f} MB peak RSS"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--million", type=int, default=1_000_000, help="0: skip those rows")
    parser.add_argument("--no-run", action="store_true", help="validate only, do not run")
    options = parser.parse_args()
    here = Path(__file__).resolve().parent
    with tempfile.TemporaryDirectory(prefix=".subplans-bench-", dir=here) as tmp:
        validate_rows(Path(tmp), options.items, options.rounds)
        if options.million:
            million_rows(Path(tmp), options.million, run=not options.no_run)


if __name__ == "__main__":
    main()
