"""The ``subplans`` command against other ways to run 1,000 commands 16 at a time.

Each contender runs ``true ITEM`` for 1,000 items at a parallelism of 16, as a fresh process
(start-up included), side by side in one run:

- ``subplans run plan.yaml`` with its non-terminal output (one line per state change) to
  ``/dev/null``: logs per subplan, events, the summary, all of it;
- a bare Python script: ``asyncio.create_subprocess_exec`` under an ``asyncio.Semaphore(16)``;
- ``xargs -P 16``;
- GNU ``parallel -j 16``, when it is installed.

Targets: within 1.5x of the bare script, and faster than GNU parallel. The figures are printed
to read, never asserted: the machine decides them.

Run: python benchmarks/bench_cli.py [--commands 1000] [--parallel 16] [--repeat 3]
"""

from __future__ import annotations

import argparse
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
    import asyncio, sys

    async def main(items, width):
        semaphore = asyncio.Semaphore(width)

        async def one(item):
            async with semaphore:
                proc = await asyncio.create_subprocess_exec(
                    "true", item, stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
                )
                await proc.wait()

        await asyncio.gather(*(one(item) for item in items))

    items = open(sys.argv[1]).read().split()
    asyncio.run(main(items, int(sys.argv[2])))
    """
)


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


def timed(argv: list[str], *, stdin: Path | None = None, cwd: Path | None = None) -> float:
    """Wall seconds of one run of ``argv`` (output discarded); it must exit 0."""
    with open(stdin if stdin is not None else "/dev/null", "rb") as source:
        began = time.perf_counter()
        done = subprocess.run(
            argv, stdin=source, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=cwd
        )
        took = time.perf_counter() - began
    if done.returncode != 0:
        raise SystemExit(f"{argv[0]} failed ({done.returncode}): {done.stderr.decode()[-2000:]}")
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--commands", type=int, default=1000)
    parser.add_argument("--parallel", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=3)
    options = parser.parse_args()
    n, width = options.commands, options.parallel

    # Beside the project, where plans and their run folders normally live: on some machines
    # /tmp is a much slower filesystem for creating files (0.3 ms a file here, against 0.02 ms),
    # which would measure the disk, not the tools.
    here = Path(__file__).resolve().parent
    with tempfile.TemporaryDirectory(prefix=".subplans-bench-", dir=here) as tmp:
        folder = Path(tmp)
        plan, bare, listing = write_inputs(folder, n, width)
        contenders: dict[str, tuple[list[str], Path | None]] = {
            "subplans run": ([sys.executable, "-m", "subplans", "run", str(plan)], None),
            "bare asyncio script": ([sys.executable, str(bare), str(listing), str(width)], None),
            f"xargs -P {width}": (["xargs", "-P", str(width), "-n", "1", "true"], listing),
        }
        if shutil.which("parallel"):
            contenders[f"GNU parallel -j {width}"] = (
                ["parallel", "--will-cite", "-j", str(width), "true"],
                listing,
            )
        # Interleaved rounds, so that a slow moment of the machine hits every contender alike.
        times: dict[str, list[float]] = {name: [] for name in contenders}
        timed(contenders["subplans run"][0], cwd=folder)  # warm the caches (.pyc, page cache)
        for _ in range(options.repeat):
            for name, (argv, stdin) in contenders.items():
                # Run folders are kept until the end: deleting files on some filesystems (ext4
                # mounted with discard) slows the file creation of the runs that follow.
                times[name].append(timed(argv, stdin=stdin, cwd=folder))

    best = {name: min(found) for name, found in times.items()}
    print(
        f"{n} commands of `true`, {width} at a time, best of {options.repeat} (start-up included)"
    )
    print(f"{'':24} {'wall s':>8} {'median s':>9} {'ms/command':>11}")
    for name, found in times.items():
        print(
            f"{name:24} {best[name]:8.3f} {statistics.median(found):9.3f} "
            f"{1000 * best[name] / n:11.3f}"
        )
    ours = best["subplans run"]
    print()
    print(
        f"subplans / bare asyncio script: {ours / best['bare asyncio script']:.2f}x (target <= 1.5x)"
    )
    print(f"subplans / xargs:               {ours / best[f'xargs -P {width}']:.2f}x")
    gnu = f"GNU parallel -j {width}"
    if gnu in best:
        print(f"subplans / GNU parallel:        {ours / best[gnu]:.2f}x (target < 1x)")
    else:
        print("GNU parallel is not installed: skipped")


if __name__ == "__main__":
    main()
