"""The commands that run a plan or check it: ``run``, ``resume`` and ``validate``.

They parse options, hand the run to ``lifecycle.RunLifecycle`` (the one path of both ``run``
and ``resume``: lock, signals, store, session) and map how it ended to an exit code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from subplans.cli.exits import ExitCode, invalid, invalid_input
from subplans.cli.gc_pause import resume_collection
from subplans.cli.options import (
    BackendOption,
    ConcurrentOption,
    EventsJsonlOption,
    FailureModeOption,
    HaltOption,
    MaxParallelOption,
    NoProgressOption,
    PlanArgument,
    PlanStoreOption,
    ProfileOption,
    QuietOption,
    RunIdArgument,
    SchedulerOption,
    StoreOption,
    example,
)
from subplans.sinks.output_modes import OutputMode

if TYPE_CHECKING:
    from pathlib import Path

    from subplans.plans.loader import Overrides

__all__ = ["commands", "resume", "run", "validate"]

#: The commands of this module; ``cli.app`` adds them to the ``subplans`` app.
commands = typer.Typer()

OutputOption = Annotated[
    OutputMode,
    typer.Option(
        "--output",
        help="files: each command's output goes to its log file only; tag: also to stdout as "
        "it comes, each line after [ID]; group: also to stdout, each subplan's in one block "
        "when it ends.",
    ),
]


@commands.command(
    epilog=example(
        "subplans run plan.yaml",
        "subplans run plan.yaml -j 8 --failure-mode continue_on_error",
        "subplans run plan.yaml --events-jsonl - --quiet > events.jsonl",
        "subplans run plan.yaml --dry-run",
        "subplans run plan.yaml --output tag",
        "subplans run plan.yaml --backend dask --scheduler tcp://10.0.0.5:8786",
    )
)
def run(
    plan: PlanArgument,
    max_parallel: MaxParallelOption = None,
    failure_mode: FailureModeOption = None,
    profile: ProfileOption = None,
    halt: HaltOption = None,
    backend: BackendOption = None,
    scheduler: SchedulerOption = None,
    events_jsonl: EventsJsonlOption = None,
    no_progress: NoProgressOption = False,
    quiet: QuietOption = False,
    store: PlanStoreOption = None,
    concurrent: ConcurrentOption = False,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Run nothing and write nothing: print each step's settings (and where they "
            "come from) and what each subplan would run.",
        ),
    ] = False,
    json_: Annotated[
        bool, typer.Option("--json", help="With --dry-run: print it as one JSON document.")
    ] = False,
    output_mode: OutputOption = OutputMode.FILES,
) -> None:
    """Run a plan: its steps in order, each step's subplans in parallel.

    On a terminal a live view shows progress; otherwise one timestamped line per state change
    is printed. A summary follows. Ctrl-C stops every subplan cleanly (twice: at once). The run
    is recorded in the run store: see `subplans runs`, `status` and `resume`. A plan that is
    running in the store already is refused, unless --concurrent. With --dry-run nothing runs
    and nothing is written: every step's settings and subplans are printed instead (--json:
    one JSON document); a source read when its step starts is read now, a command not run.
    Each command's output goes to its log file; --output tag also prints every line of it as
    it comes, after [ID], and --output group each subplan's in one block once it ended. With
    --backend dask (or a plan's backend), run and call subplans run on a Dask cluster's workers.
    """
    from subplans.cli.run_plan import run_plan

    if dry_run or json_:
        from subplans.cli.overrides import command_overrides

        resume_collection()  # the start-up is over: what the dry run makes is collected
        with invalid_input():
            overrides = command_overrides(
                max_parallel=max_parallel,
                failure_mode=failure_mode,
                profile=profile,
                halt=halt,
                backend=backend,
                scheduler=scheduler,
            )
        _dry_run(plan, overrides, json_=json_, dry_run=dry_run, events_jsonl=events_jsonl)
    raise typer.Exit(
        run_plan(
            plan,
            max_parallel=max_parallel,
            failure_mode=failure_mode,
            profile=profile,
            halt=halt,
            backend=backend,
            scheduler=scheduler,
            events_jsonl=events_jsonl,
            no_progress=no_progress,
            quiet=quiet,
            store=store,
            concurrent=concurrent,
            output_mode=output_mode,
        )
    )


def _dry_run(
    plan: Path, overrides: Overrides, *, json_: bool, dry_run: bool, events_jsonl: str | None
) -> NoReturn:
    """Print what running ``plan`` would do; exit 0, or 2 for an invalid plan or options."""
    from subplans.cli.dry_run import plan_preview, render_json, render_text
    from subplans.cli.loading import load

    if not dry_run:
        invalid(["--json needs --dry-run (a run's events as JSON: --events-jsonl)"])
    if events_jsonl is not None:
        invalid(["--events-jsonl and --dry-run exclude each other: a dry run has no events"])
    with invalid_input():
        node = load(plan, overrides)
    shown = plan_preview(node)
    typer.echo(render_json(shown) if json_ else render_text(shown))
    raise typer.Exit(ExitCode.OK)


@commands.command(
    epilog=example(
        "subplans resume 20261128-000453-43a954",
        "subplans resume 20261128-000453-43a954 --force --no-progress",
        "subplans resume latest --scheduler tcp://10.0.0.7:8786",
    )
)
def resume(
    run_id: RunIdArgument,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help=(
                "Resume even if the plan's subplans changed since the run started, or a call "
                "the run abandoned still runs on a Dask worker."
            ),
        ),
    ] = False,
    rerun_unknown: Annotated[
        bool,
        typer.Option(
            "--rerun-unknown",
            help="Run again the subplans marked idempotent: false that were running when the "
            "run stopped (they may have done their work).",
        ),
    ] = False,
    skip_unknown: Annotated[
        bool,
        typer.Option(
            "--skip-unknown",
            help="Record those subplans completed instead, as you assert (the reason is "
            "stored with the run).",
        ),
    ] = False,
    concurrent: ConcurrentOption = False,
    scheduler: Annotated[
        str | None,
        typer.Option(
            "--scheduler",
            metavar="ADDRESS",
            help="The run's Dask cluster is now at ADDRESS (tcp://HOST:8786): for every dask "
            "backend that names no scheduler. Default: the one the run recorded.",
            show_default=False,
        ),
    ] = None,
    events_jsonl: EventsJsonlOption = None,
    no_progress: NoProgressOption = False,
    quiet: QuietOption = False,
    store: StoreOption = None,
    output_mode: OutputOption = OutputMode.FILES,
) -> None:
    """Run a stored run's plan again, skipping every subplan that completed.

    Failed, cancelled, interrupted and never-started subplans run again (at least once: a
    subplan that was running when its run was killed may have done part of its work). The plan
    file is read again, with the run's original --max-parallel, --failure-mode and --profile;
    if its subplan ids changed, resume refuses unless --force. The subplans that were running
    when the run stopped are listed; if any is marked idempotent: false, resume refuses unless
    --rerun-unknown or --skip-unknown (refused too while that subplan still runs). A refused
    resume changes nothing; otherwise every process the run left running is stopped first.
    --output as for `subplans run` (only what the resume runs is printed). A run on a Dask
    cluster resumes on the same backend (a local cluster is started again; --scheduler points
    at a new address), and what it left running on the workers is stopped first too. Exit
    codes as `subplans run`.
    """
    from subplans.cli.lifecycle import RunLifecycle
    from subplans.cli.overrides import run_scheduler
    from subplans.cli.run_plan import exit_code, run_output

    resume_collection()
    if rerun_unknown and skip_unknown:
        invalid(["--rerun-unknown and --skip-unknown exclude each other: choose one"])
    output = run_output(
        events_jsonl=events_jsonl, no_progress=no_progress, quiet=quiet, output_mode=output_mode
    )
    with invalid_input():
        if scheduler is not None:
            scheduler = run_scheduler(scheduler)
        end = RunLifecycle(output, concurrent=concurrent).resume(
            run_id,
            store=store,
            force=force,
            rerun_unknown=rerun_unknown,
            skip_unknown=skip_unknown,
            scheduler=scheduler,
        )
    raise typer.Exit(exit_code(end))


@commands.command(epilog=example("subplans validate plan.yaml"))
def validate(plan: PlanArgument) -> None:
    """Check a plan, its action and its nested plans without running anything.

    Prints one line per problem (exit 2), or a one-line description of the plan (exit 0). A
    for_each step whose items are read when it starts (glob, lines, command) gets a line of
    its own: how many items it would read now, or that its source does not exist yet (an
    earlier step may make it); a command is not run.
    """
    from subplans.cli.loading import load
    from subplans.plans.for_each import preview

    resume_collection()
    with invalid_input():
        node = load(plan)
    units = node.walk_units()
    nested = sum(1 for unit in units if unit.kind == "plan")
    steps = len(node.steps)
    later = [step for step in node.walk_steps() if step.items is not None]
    typer.echo(
        f"ok: {plan}: plan {node.name!r}, {steps} step{'' if steps == 1 else 's'}, "
        f"{len(units)} subplan{'' if len(units) == 1 else 's'}"
        + (f" ({nested} nested plan{'' if nested == 1 else 's'})" if nested else "")
        + (f"; {_later(len(later))}:" if later else "")
    )
    for step in later:
        assert step.items is not None
        typer.echo(f"  {step.id}: {step.items}: {preview(step.items.source, step.items.folder)}")


def _later(n: int) -> str:
    if n == 1:
        return "1 step reads its items when it starts"
    return f"{n} steps read their items when they start"
