"""What ``subplans run`` does once its options are read, without Typer: load the plan, hand it
to ``lifecycle.RunLifecycle`` and turn how the run ended into an exit code.

Both ways in share it: the Typer command (``run_commands.run``) and the plain command line read
without Typer (``run_args``), whose start then loads neither Typer nor its option adapters.
Typer is imported here only to print a rare line or to refuse invalid input (``exits``).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from subplans.cli.exits import ExitCode, invalid, invalid_input
from subplans.cli.gc_pause import resume_collection
from subplans.sinks.output_modes import OutputMode

if TYPE_CHECKING:
    from pathlib import Path

    from subplans.cli.lifecycle import Output, RunEnd
    from subplans.cli.overrides import BackendKind
    from subplans.engine.config import FailureMode
    from subplans.plans.tree import PlanNode

__all__ = ["run_plan"]


def run_plan(
    plan: Path,
    *,
    max_parallel: int | None = None,
    failure_mode: FailureMode | None = None,
    profile: str | None = None,
    halt: str | None = None,
    backend: BackendKind | None = None,
    scheduler: str | None = None,
    events_jsonl: str | None = None,
    no_progress: bool = False,
    quiet: bool = False,
    store: Path | None = None,
    concurrent: bool = False,
    output_mode: OutputMode = OutputMode.FILES,
) -> int:
    """Run ``plan``; its exit code (``ExitCode``). Invalid input raises ``typer.Exit`` (2)."""
    from subplans.store.writer_start import prestarted

    # The run's writer process starts now, on another core, while what follows is imported
    # and the plan loaded; it is killed if the run ends before its recorder took it.
    with prestarted():
        from subplans.cli.lifecycle import RunLifecycle
        from subplans.cli.loading import load
        from subplans.cli.overrides import command_overrides

        resume_collection()  # the start-up is over: what the run makes is collected
        output = run_output(
            events_jsonl=events_jsonl, no_progress=no_progress, quiet=quiet, output_mode=output_mode
        )
        with invalid_input():
            overrides = command_overrides(
                max_parallel=max_parallel,
                failure_mode=failure_mode,
                profile=profile,
                halt=halt,
                backend=backend,
                scheduler=scheduler,
            )
            node = load(plan, overrides)
            _say_where_items_come_from(node)
            end = RunLifecycle(output, concurrent=concurrent).start(node, overrides, store=store)
        return exit_code(end)


def run_output(
    *, events_jsonl: str | None, no_progress: bool, quiet: bool, output_mode: OutputMode
) -> Output:
    """What a run (``run`` or ``resume``) prints, from its output options."""
    from subplans.cli.lifecycle import Output

    return Output(
        events_jsonl=events_jsonl,
        no_progress=no_progress,
        quiet=quiet,
        output_mode=output_mode_of(output_mode, events_jsonl),
    )


def output_mode_of(output: OutputMode, events_jsonl: str | None) -> OutputMode | None:
    """``--output`` as the run takes it (None: the log files only); refused beside events on
    stdout, which the output's lines would break."""
    if output is OutputMode.FILES:
        return None
    if events_jsonl == "-":
        invalid(
            [
                f"--output {output.value} and --events-jsonl - both write to stdout: "
                "write the events to a file (--events-jsonl PATH)"
            ]
        )
    return output


def exit_code(end: RunEnd) -> int:
    """Print the run's warnings; its exit code."""
    from subplans.cli.session import Outcome

    if end.warnings:
        import typer

        for warning in end.warnings:
            typer.echo(f"warning: {warning}", err=True)
    return {
        Outcome.COMPLETED: ExitCode.OK,
        Outcome.FAILED: ExitCode.FAILED,
        Outcome.INTERRUPTED: ExitCode.INTERRUPTED,
    }[end.outcome]


def _say_where_items_come_from(node: PlanNode) -> None:
    """A step reading ``{lines: -}`` from a terminal would wait in silence: say so first."""
    if not sys.stdin or not sys.stdin.isatty():
        return
    from subplans.plans.for_each import LinesSource  # loaded only when it can matter (#10)

    for step in node.walk_steps():
        source = None if step.items is None else step.items.source
        if isinstance(source, LinesSource) and source.file == "-":
            import typer

            typer.echo(
                f"step {step.id} reads its items from standard input, this terminal: type them, "
                "one a line, then Ctrl-D",
                err=True,
            )
            return  # read once per run, for every step that asks
