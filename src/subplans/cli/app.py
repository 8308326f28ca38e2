"""The ``subplans`` command: ``run``, ``validate``, ``profile list|show|resolve``, ``schema``, and
the commands about stored runs: ``runs``, ``status``, ``events``, ``logs``, ``resume``, ``cancel``.

``main()`` is the entry point. It runs the Typer app outside click's standalone mode, so that
the exit codes are ours and a usage error is one ``error:`` line like any other invalid input:

====  ==============================================================================
0     every subplan and step completed (or the command did what it was asked)
1     the plan failed (a subplan or a step failed)
2     invalid input: plan, profile, config file or command-line values; a store that
      cannot be used; a run that is unknown, busy in another process or not live
130   interrupted by SIGINT or SIGTERM; every process of the run was stopped first
====  ==============================================================================

The commands only parse options and report; a run is a ``session.RunSession``, what resume
checks first is in ``resume``, and what the other store commands print is in ``reports``.
Heavy modules (pydantic through the loader, Rich, the executor, the sinks, the store) are
imported inside the commands, so that ``--help`` and ``--version`` start fast.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import stat
import sys
from collections.abc import Iterable, Iterator, Sequence
from enum import IntEnum, StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TextIO

import typer

from subplans.engine.config import FailureMode, check_max_parallel
from subplans.engine.errors import ConfigError
from subplans.execution import signal_guard
from subplans.sinks.formatting import visible

if TYPE_CHECKING:
    from subplans.cli.session import RunSession
    from subplans.plans.loader import GlobalConfig, Overrides, PlanNode
    from subplans.plans.profiles import ProfileRegistry, ResolvedProfile
    from subplans.store import RunInfo, RunStore

__all__ = ["ExitCode", "app", "main"]


class ExitCode(IntEnum):
    """The exit codes of ``subplans``."""

    OK = 0
    FAILED = 1
    INVALID = 2
    INTERRUPTED = 130


class SchemaName(StrEnum):
    """The JSON Schemas ``subplans schema`` prints."""

    PLAN = "plan"
    PROFILE = "profile"


def _example(*commands: str) -> str:
    """An epilog with example commands, rendered as a code block by ``--help``."""
    title = "Example" if len(commands) == 1 else "Examples"
    return f"{title}:\n\n```\n" + "\n".join(commands) + "\n```"


_CONTEXT = {"help_option_names": ["-h", "--help"]}

app = typer.Typer(
    name="subplans",
    no_args_is_help=True,
    add_completion=False,
    context_settings=_CONTEXT,
    rich_markup_mode="markdown",
    epilog=_example(
        "subplans run plan.yaml --max-parallel 8 --profile keep-going",
        "subplans status",
        "subplans resume 20261128-000453-43a954",
    ),
)
profile_app = typer.Typer(
    name="profile",
    no_args_is_help=True,
    context_settings=_CONTEXT,
    rich_markup_mode="markdown",
    help="Automation profiles: list them, show one, or resolve a plan's effective settings.",
    epilog=_example("subplans profile resolve plan.yaml --profile wide"),
)
app.add_typer(profile_app)


# --- options ------------------------------------------------------------------------------

PlanArgument = Annotated[
    Path,
    typer.Argument(help="The plan file (YAML).", show_default=False),
]
MaxParallelOption = Annotated[
    int | None,
    typer.Option(
        "--max-parallel",
        "-j",
        help="How many subplans run at once (1-32); acts at the plan level (a step's own setting still wins).",
        show_default=False,
    ),
]
FailureModeOption = Annotated[
    FailureMode | None,
    typer.Option(
        "--failure-mode",
        help="fail_fast stops at the first failure; continue_on_error runs everything.",
        show_default=False,
    ),
]
ProfileOption = Annotated[
    str | None,
    typer.Option(
        "--profile",
        "-p",
        help="A named profile for the whole plan (see `subplans profile list`).",
        show_default=False,
    ),
]


EventsJsonlOption = Annotated[
    str | None,
    typer.Option(
        "--events-jsonl",
        metavar="PATH|-",
        help="Write every event as one JSON object per line to PATH, or to stdout with `-` "
        "(human output then goes to stderr).",
        show_default=False,
    ),
]
NoProgressOption = Annotated[
    bool,
    typer.Option(
        "--no-progress", help="No live view and no per-change lines: failures and the summary."
    ),
]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="Only the summary.")]
PlanStoreOption = Annotated[
    Path | None,
    typer.Option(
        "--store",
        metavar="PATH",
        help="The run store (SQLite); default: $SUBPLANS_STORE, else .subplans/state.db next "
        "to the plan.",
        show_default=False,
    ),
]
StoreOption = Annotated[
    Path | None,
    typer.Option(
        "--store",
        metavar="PATH",
        help="The run store (SQLite); default: $SUBPLANS_STORE, else ./.subplans/state.db.",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]
ConcurrentOption = Annotated[
    bool,
    typer.Option(
        "--concurrent",
        help="Run even if the plan is running in the store already (its work may then be "
        "done twice at once).",
    ),
]


def _run_id(value: str | None) -> str | None:
    """A run id that can name a lock file (as run ids do), or a usage error."""
    from subplans.store.liveness import check_run_id

    if value is not None:
        try:
            check_run_id(value)
        except ValueError as error:
            raise typer.BadParameter(str(error)) from None
    return value


RunIdArgument = Annotated[
    str,
    typer.Argument(
        metavar="RUN_ID",
        help="A run id, as `subplans runs` lists them.",
        callback=_run_id,
        show_default=False,
    ),
]


def _version(value: bool) -> None:
    if value:
        from subplans import __version__

        typer.echo(f"subplans {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Run a plan's subplans in parallel under a concurrency cap: safely, visibly and fast.

    Exit codes: 0 every subplan and step completed, 1 the plan failed, 2 invalid input,
    130 interrupted.
    """


# --- errors -------------------------------------------------------------------------------


def _invalid(problems: Iterable[object]) -> NoReturn:
    """Print one ``error:`` line per problem on stderr and exit 2."""
    for problem in problems:
        # One line each, whatever the message holds: a line per problem is the contract, and
        # a control character it quotes (from a plan, an item, a file name) is shown, not obeyed.
        typer.echo(f"error: {visible(' '.join(str(problem).splitlines()))}", err=True)
    raise typer.Exit(ExitCode.INVALID)


def _registry() -> ProfileRegistry:
    from subplans.plans.loader import load_global_config
    from subplans.plans.yamlfile import ProblemsError

    try:
        return load_global_config().registry
    except ProblemsError as error:
        _invalid(error.problems)


def _checked_overrides(
    config: GlobalConfig,
    max_parallel: int | None,
    failure_mode: FailureMode | None,
    profile: str | None,
) -> tuple[Overrides, list[str]]:
    """The command-line overrides that are valid, and a problem for each one that is not."""
    from subplans.plans.loader import Overrides

    problems: list[str] = []
    if max_parallel is not None:
        try:
            check_max_parallel(max_parallel, "--max-parallel")
        except ConfigError as error:
            problems.append(str(error))
            max_parallel = None
    names = config.registry.names
    if profile is not None and profile not in names:
        problems.append(
            f"--profile: unknown profile {profile!r}; known profiles: {', '.join(names)}"
        )
        profile = None
    return Overrides(
        max_parallel=max_parallel, failure_mode=failure_mode, profile=profile
    ), problems


def _load(
    path: Path,
    *,
    max_parallel: int | None = None,
    failure_mode: FailureMode | None = None,
    profile: str | None = None,
) -> PlanNode:
    """Load the plan with the overrides; every problem (options and files) is one line, exit 2."""
    from subplans.plans.loader import load_global_config, load_plan
    from subplans.plans.yamlfile import ProblemsError

    try:
        config = load_global_config()
    except ProblemsError as error:
        _invalid(error.problems)
    overrides, problems = _checked_overrides(config, max_parallel, failure_mode, profile)
    try:
        node = load_plan(path, config=config, overrides=overrides)
    except ProblemsError as error:
        _invalid([*problems, *error.problems])
    if problems:
        _invalid(problems)
    return node


# --- run ----------------------------------------------------------------------------------


@app.command(
    epilog=_example(
        "subplans run plan.yaml",
        "subplans run plan.yaml -j 8 --failure-mode continue_on_error",
        "subplans run plan.yaml --events-jsonl - --quiet > events.jsonl",
    )
)
def run(
    plan: PlanArgument,
    max_parallel: MaxParallelOption = None,
    failure_mode: FailureModeOption = None,
    profile: ProfileOption = None,
    events_jsonl: EventsJsonlOption = None,
    no_progress: NoProgressOption = False,
    quiet: QuietOption = False,
    store: PlanStoreOption = None,
    concurrent: ConcurrentOption = False,
) -> None:
    """Run a plan: its steps in order, each step's subplans in parallel.

    On a terminal a live view shows progress; otherwise one timestamped line per state change
    is printed. A summary follows. Ctrl-C stops every subplan cleanly (twice: at once). The run
    is recorded in the run store: see `subplans runs`, `status` and `resume`. A plan that is
    running in the store already is refused, unless --concurrent.
    """
    from subplans.plans.loader import Overrides
    from subplans.store import default_store_path
    from subplans.store.resume import run_manifest

    node = _load(plan, max_parallel=max_parallel, failure_mode=failure_mode, profile=profile)
    overrides = Overrides(max_parallel=max_parallel, failure_mode=failure_mode, profile=profile)
    path = store if store is not None else default_store_path(node.file)
    with _events_stream(events_jsonl) as events, _store_errors(), _opened(path) as db:
        manifest = run_manifest(node, overrides)
        session = _session(node, events, no_progress=no_progress, quiet=quiet, store=db)
        # Refused before the run folder exists; and if another run of the plan got in between,
        # refused by start_run, which removes again the (empty) folder made meanwhile.
        made = (session.log_dir, session.log_dir.parent)
        if not concurrent:
            with _once_at_a_time(made):
                db.check_plan_free(manifest.file)
        with _driving(db, session.run_id) as noted:
            session.early_signals = noted
            _prepare(session)
            with _once_at_a_time(made):
                run_dir = session.executor.run_dir.absolute()
                db.start_run(session.run_id, manifest, run_dir=run_dir, concurrent=concurrent)
            _start_afresh(events)
            code = _execute(session, events, db)
    raise typer.Exit(code)


@app.command(
    epilog=_example(
        "subplans resume 20261128-000453-43a954",
        "subplans resume 20261128-000453-43a954 --force --no-progress",
    )
)
def resume(
    run_id: RunIdArgument,
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Resume even if the plan's subplans changed since the run started."
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
    events_jsonl: EventsJsonlOption = None,
    no_progress: NoProgressOption = False,
    quiet: QuietOption = False,
    store: StoreOption = None,
) -> None:
    """Run a stored run's plan again, skipping every subplan that completed.

    Failed, cancelled, interrupted and never-started subplans run again (at least once: a
    subplan that was running when its run was killed may have done part of its work). The plan
    file is read again, with the run's original --max-parallel, --failure-mode and --profile;
    if its subplan ids changed, resume refuses unless --force. The subplans that were running
    when the run stopped are listed; if any is marked idempotent: false, resume refuses unless
    --rerun-unknown or --skip-unknown (refused too while that subplan still runs). A refused
    resume changes nothing; otherwise every process the run left running is stopped first.
    Exit codes as `subplans run`.
    """
    from subplans.store import find_leftovers
    from subplans.store.resume import (
        SKIP_UNKNOWN_REASON,
        describe_stopped,
        recorded_overrides,
        refusal,
        run_manifest,
        stop_leftovers,
        unknown_outcomes,
    )

    if rerun_unknown and skip_unknown:
        _invalid(["--rerun-unknown and --skip-unknown exclude each other: choose one"])
    with _store_errors(), _opened(_store_path(store), existing=True) as db:
        found = db.get_run(run_id)
        if not concurrent:
            with _once_at_a_time():
                db.check_plan_free(found.plan_file, run_id=run_id)
        with _driving(db, run_id) as noted:
            # Every refusal is decided before anything is stopped or written: only listed here.
            leftovers = find_leftovers(db, run_id)
            overrides = recorded_overrides(found)
            node = _load(
                Path(found.plan_file),
                max_parallel=overrides.max_parallel,
                failure_mode=overrides.failure_mode,
                profile=overrides.profile,
            )
            manifest = run_manifest(node, overrides)
            diff = db.plan_diff(run_id, manifest)
            problem = refusal(diff, force=force)
            if problem is not None:
                _invalid([problem])
            # Whatever was running when the run stopped may have done its work already.
            unknown = unknown_outcomes(db, run_id, node, leftovers)
            if unknown.not_idempotent and not (rerun_unknown or skip_unknown):
                typer.echo(unknown.listing, err=True)
                _invalid([unknown.refusal()])
            # One that still runs has not finished: stopped now, it would never finish.
            unfinished = unknown.skip_refusal() if skip_unknown else None
            if unfinished is not None:
                _invalid([unfinished])
            assumed = unknown.assumed if skip_unknown else ()
            with _events_stream(events_jsonl) as events:
                session = _session(
                    node,
                    events,
                    no_progress=no_progress,
                    quiet=quiet,
                    store=db,
                    run_id=run_id,
                    run_dir=None if found.run_dir is None else Path(found.run_dir),
                    skip=db.completed_subplans(run_id).union(assumed),
                )
                session.early_signals = noted
                _prepare(session)
                # Nothing may run twice at the same time: what the dead owner left goes first.
                stopped = stop_leftovers(db, found)
                if stopped:
                    session.say(describe_stopped(run_id, stopped))
                if diff.hash_changed:
                    forced = "" if diff.ids_match else "; resuming anyway (--force)"
                    session.say(f"{diff}{forced}")
                if unknown.subplans:
                    session.say(unknown.describe(skip=skip_unknown))
                with _once_at_a_time():
                    db.resume_run(
                        run_id,
                        manifest,
                        concurrent=concurrent,
                        assume_completed=assumed,
                        reason=SKIP_UNKNOWN_REASON,
                    )
                _start_afresh(events)
                code = _execute(session, events, db)
    raise typer.Exit(code)


@contextlib.contextmanager
def _once_at_a_time(made: Sequence[Path] = ()) -> Iterator[None]:
    """A plan that is running in the store already: exit 2, saying what to do. The folders
    ``made`` for the refused run, if they were, are removed again (only while empty)."""
    from subplans.engine.errors import PlanRunningError

    try:
        yield
    except PlanRunningError as error:
        for folder in made:
            with contextlib.suppress(OSError):
                folder.rmdir()
        _invalid(
            [
                f"{error}; wait for it to end, stop it with `subplans cancel {error.run_id}`, "
                "or pass --concurrent to run it anyway"
            ]
        )


@contextlib.contextmanager
def _events_stream(events_jsonl: str | None) -> Iterator[TextIO | None]:
    """The stream ``--events-jsonl`` asks for (exit 2 if it cannot be opened), closed after."""
    events: TextIO | None = None
    if events_jsonl == "-":
        events = sys.stdout
    elif events_jsonl is not None:
        try:
            # Appending, not truncating: if the store then turns out unusable, nothing is lost.
            events = open(events_jsonl, "a", encoding="utf-8")  # noqa: SIM115 - closed below
        except OSError as error:
            _invalid([f"--events-jsonl: cannot open {events_jsonl}: {error.strerror}"])
    try:
        yield events
    finally:
        if events is not None and events is not sys.stdout:
            # A stream that failed keeps its unwritten buffer: closing it fails again.
            with contextlib.suppress(OSError):
                events.close()


def _start_afresh(events: TextIO | None) -> None:
    """Empty an ``--events-jsonl`` file once the run is sure to start (stdout is left alone)."""
    if events is None or events is sys.stdout:
        return
    # A regular file only: /dev/null, a FIFO or a device has nothing to empty.
    if stat.S_ISREG(os.fstat(events.fileno()).st_mode):
        events.truncate(0)


def _session(
    node: PlanNode,
    events: TextIO | None,
    *,
    no_progress: bool,
    quiet: bool,
    **options: Any,
) -> RunSession:
    """A session of ``node`` with the human output the options and the terminal call for."""
    from subplans.cli.session import RunSession, View, terminal_console

    human = sys.stderr if events is sys.stdout else sys.stdout
    console = terminal_console(human)
    if quiet:
        view = View.QUIET
    elif no_progress:
        view = View.FAILURES
    else:
        view = View.LINES if console is None else View.LIVE
    return RunSession(node, human=human, console=console, view=view, events=events, **options)


def _prepare(session: RunSession) -> None:
    try:
        session.prepare()
    except OSError as error:
        _invalid([f"cannot create the run folder {session.log_dir}: {error.strerror}"])


def _execute(session: RunSession, events: TextIO | None, store: RunStore) -> int:
    """Run the session, recorded in ``store``; returns the exit code."""
    from subplans.cli.session import Outcome
    from subplans.engine.errors import StoreError

    # With the events on stdout, anything a called function prints goes to stderr instead.
    redirect = contextlib.redirect_stdout(sys.stderr) if events is sys.stdout else None
    try:
        with redirect or contextlib.nullcontext():
            outcome = session.run_blocking()
        # The run has ended and is recorded: a late `subplans cancel` changes nothing.
        signal_guard.GUARD.settle()
    except BaseException as error:
        # Ended before the executor could record an end (the recorder did not start, or
        # Ctrl-C came before the signal handlers): the store must not show it running.
        with contextlib.suppress(StoreError):
            if store.get_run(session.run_id).recorded_status == "running":
                interrupted = isinstance(error, KeyboardInterrupt)
                store.finish_run(session.run_id, "cancelled" if interrupted else "failed")
        raise
    # A run interrupted before its executor started published no end: record it (unless the
    # store failed mid-run: then it stays unfinished, to show as interrupted).
    with contextlib.suppress(StoreError):
        if (
            outcome is Outcome.INTERRUPTED
            and session.store_error is None
            and store.get_run(session.run_id).recorded_status == "running"
        ):
            store.finish_run(session.run_id, "cancelled")
    if session.jsonl is not None and session.jsonl.error is not None:
        typer.echo(f"warning: --events-jsonl: writing failed: {session.jsonl.error}", err=True)
    if session.store_error is not None:
        typer.echo(f"warning: {session.store_error}", err=True)
    return {
        Outcome.COMPLETED: ExitCode.OK,
        Outcome.FAILED: ExitCode.FAILED,
        Outcome.INTERRUPTED: ExitCode.INTERRUPTED,
    }[outcome]


# --- validate -----------------------------------------------------------------------------


@app.command(epilog=_example("subplans validate plan.yaml"))
def validate(plan: PlanArgument) -> None:
    """Check a plan, its action and its nested plans without running anything.

    Prints one line per problem (exit 2), or a one-line description of the plan (exit 0).
    """
    node = _load(plan)
    units = node.walk_units()
    nested = sum(1 for unit in units if unit.kind == "plan")
    steps = len(node.steps)
    typer.echo(
        f"ok: {plan}: plan {node.name!r}, {steps} step{'' if steps == 1 else 's'}, "
        f"{len(units)} subplan{'' if len(units) == 1 else 's'}"
        + (f" ({nested} nested plan{'' if nested == 1 else 's'})" if nested else "")
    )


# --- profile ------------------------------------------------------------------------------


@profile_app.command("list", epilog=_example("subplans profile list"))
def profile_list() -> None:
    """List the named profiles: the built-in ones, then those of the global config file."""
    registry = _registry()
    width = max(len(name) for name in registry.names)
    for name in registry.names:
        typer.echo(f"{name:<{width}}  {registry.describe(name)}")


@profile_app.command("show", epilog=_example("subplans profile show keep-going"))
def profile_show(
    name: Annotated[str, typer.Argument(metavar="NAME", help="A profile name.")],
) -> None:
    """Show every field of a named profile and where its value comes from."""
    from subplans.plans.profiles import FIELDS, Level, ProfileError

    registry = _registry()
    if name not in registry.names:
        _invalid([f"unknown profile {name!r}; known profiles: {', '.join(registry.names)}"])
    file = registry.file if name in registry.custom else None
    try:
        resolved = registry.resolve([Level("profile", file, "profile", name)])
    except ProfileError as error:  # pragma: no cover - the config loader expanded every profile
        _invalid([error])
    typer.echo(f"{name}: {registry.describe(name)}")
    values = {field: _value(getattr(resolved, field)) for field in FIELDS}
    width = max(len(v) for v in values.values())
    for field in FIELDS:
        source = resolved.sources[field]
        where = "not set: built-in default"
        if source.level == "profile":
            where = source.key if source.file is None else f"{source.key} ({source.file})"
        typer.echo(f"  {field:<12}  {values[field]:<{width}}  {where}")


@profile_app.command(
    "resolve",
    epilog=_example("subplans profile resolve plan.yaml --max-parallel 8"),
)
def profile_resolve(
    plan: PlanArgument,
    max_parallel: MaxParallelOption = None,
    failure_mode: FailureModeOption = None,
    profile: ProfileOption = None,
) -> None:
    """Print each effective profile field of a plan and its steps, with where it came from.

    Takes the same overrides as `subplans run`; nested plans follow their step.
    """
    _echo_plan(_load(plan, max_parallel=max_parallel, failure_mode=failure_mode, profile=profile))


def _echo_plan(node: PlanNode) -> None:
    label = f"plan {node.id}" if node.id else "plan"
    typer.echo(f"{label}: {node.name}  ({node.file})")
    _echo_fields(node.profile)
    for step in node.steps:
        typer.echo(f"step {step.id}")
        _echo_fields(step.profile)
        for unit in step.units:
            if unit.plan is not None:
                _echo_plan(unit.plan)


def _echo_fields(profile: ResolvedProfile) -> None:
    from subplans.plans.profiles import FIELDS

    values = {name: _value(getattr(profile, name)) for name in FIELDS}
    width = max(len(v) for v in values.values())
    for name in FIELDS:
        typer.echo(f"  {name:<12}  {values[name]:<{width}}  {profile.sources[name]}")


def _value(value: object) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, FailureMode):
        return value.value
    return str(value)


# --- schema -------------------------------------------------------------------------------


@app.command(epilog=_example("subplans schema plan > plan.schema.json"))
def schema(
    name: Annotated[SchemaName, typer.Argument(help="Which schema.", show_default=False)],
) -> None:
    """Print the JSON Schema of plan files or of automation profiles."""
    from subplans.plans.schemas import render

    typer.echo(render(name.value), nl=False)


# --- stored runs --------------------------------------------------------------------------


def _store_path(store: Path | None) -> Path:
    from subplans.store import default_store_path

    return store if store is not None else default_store_path()


@contextlib.contextmanager
def _store_errors() -> Iterator[None]:
    """A store that cannot be used, a run that is unknown, busy or not live: exit 2."""
    from subplans.engine.errors import RunBusyError, RunNotLiveError, StoreError

    try:
        yield
    except (StoreError, RunBusyError, RunNotLiveError) as error:
        _invalid([error])


@contextlib.contextmanager
def _opened(path: Path, *, existing: bool = False, readonly: bool = False) -> Iterator[RunStore]:
    """The store at ``path``, created unless ``existing`` or ``readonly``: the commands about
    past runs never create one. ``readonly`` skips the proof that it can be written."""
    from subplans.store import RunStore

    if existing and not path.exists():
        RunStore.open(path, readonly=True)  # raises: "no store there yet"
    with RunStore.open(path, readonly=readonly) as store:
        yield store


@contextlib.contextmanager
def _driving(store: RunStore, run_id: str) -> Iterator[list[int]]:
    """Hold the run's lock: no other process drives it meanwhile (RunBusyError if one does).

    Meanwhile SIGINT and SIGTERM (what ``subplans cancel`` sends) are noted, not fatal: one that
    arrives while the run is being registered is handled as soon as the run can stop cleanly
    (or ends the command with exit 130 if the run never starts), and one that arrives after the
    run ended changes nothing. Yields the list they go to.
    """
    with signal_guard.GUARD.deferred() as noted, store.lock(run_id):
        yield noted


@contextlib.contextmanager
def _interruptible() -> Iterator[None]:
    """Ctrl-C while waiting on a run: exit 130, without a traceback."""
    try:
        yield
    except KeyboardInterrupt:
        raise typer.Exit(ExitCode.INTERRUPTED) from None


def _echo_json(value: object) -> None:
    typer.echo(json.dumps(value, indent=2, default=str))


@app.command(epilog=_example("subplans runs", "subplans runs --json --limit 5"))
def runs(
    json_output: JsonOption = False,
    limit: Annotated[
        int,
        typer.Option("--limit", "-n", min=1, max=100_000, help="How many runs, newest first."),
    ] = 20,
    store: StoreOption = None,
) -> None:
    """List recent runs, newest first: status, started, duration and subplan counts.

    A run whose process is gone without finishing it is `interrupted` (resume it).
    """
    from subplans.cli.reports import run_lines

    path = _store_path(store)
    found = []
    if path.exists():
        with _store_errors(), _opened(path, readonly=True) as db:
            found = db.list_runs(limit)
    if json_output:
        _echo_json([info.to_dict() for info in found])
    elif not found:
        typer.echo(f"no runs in the store {path}")
    else:
        typer.echo("\n".join(run_lines(found)))


@app.command(epilog=_example("subplans status", "subplans status 20261128-000453-43a954 --json"))
def status(
    run_id: Annotated[
        str | None,
        typer.Argument(
            metavar="RUN_ID",
            help="A run id; the latest run by default.",
            callback=_run_id,
            show_default=False,
        ),
    ] = None,
    json_output: JsonOption = False,
    store: StoreOption = None,
) -> None:
    """Show a run: its status, subplan counts, steps, what runs now and what failed.

    Works while the run is live in another process. For an interrupted run (its process is
    gone), it lists any process the run left running; `subplans cancel RUN_ID` stops them.
    Nothing is ever stopped or changed by status.
    """
    from subplans.cli.reports import StatusReport
    from subplans.engine.errors import RunBusyError
    from subplans.store import find_leftovers

    with _store_errors(), _opened(_store_path(store), readonly=True) as db:
        found = db.get_run(run_id)
        leftovers = []
        if found.status == "interrupted":
            # Busy: resumed since the line above; its processes are its own again.
            with contextlib.suppress(RunBusyError):
                leftovers = find_leftovers(db, found.id)
        report = StatusReport.collect(db, found, leftovers)
    if json_output:
        _echo_json(report.to_dict())
    else:
        typer.echo("\n".join(report.lines()))


@app.command(
    epilog=_example(
        "subplans events 20261128-000453-43a954 > events.jsonl",
        "subplans events 20261128-000453-43a954 --follow",
    )
)
def events(
    run_id: RunIdArgument,
    follow: Annotated[
        bool,
        typer.Option(
            "--follow", "-f", help="Keep printing new events until the run is no longer running."
        ),
    ] = False,
    store: StoreOption = None,
) -> None:
    """Print a run's stored events as JSON lines, in order (each with `run_id` and `seq`)."""
    from subplans.cli.reports import write_events

    def write(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    # A reader that went away has all it wanted (`subplans events R | head`).
    with (
        _store_errors(),
        _opened(_store_path(store), readonly=True) as db,
        _interruptible(),
        contextlib.suppress(BrokenPipeError),
    ):
        write_events(db, run_id, write, follow=follow)


@app.command(epilog=_example("subplans logs 20261128-000453-43a954 port/plugins"))
def logs(
    run_id: RunIdArgument,
    subplan: Annotated[
        str,
        typer.Argument(metavar="SUBPLAN", help="A subplan's id, such as port/plugins."),
    ],
    store: StoreOption = None,
) -> None:
    """Print the output (stdout and stderr) of a command subplan of a run.

    Exactly as written when piped or redirected; on a terminal, control characters (escape
    sequences) are shown as escapes such as `\x1b`, not obeyed.
    """
    from subplans.cli.reports import write_log

    with _store_errors(), _opened(_store_path(store), readonly=True) as db:
        log = db.log_file(run_id, subplan)
    if log is None:
        _invalid([f"subplan {subplan!r} of run {run_id} has no log: it started no command"])
    try:
        with log.open("rb") as file:
            sys.stdout.flush()
            write_log(file, sys.stdout.buffer, terminal=sys.stdout.isatty())
            sys.stdout.buffer.flush()
    except OSError as error:
        _invalid([f"cannot read the log of {subplan!r}: {log}: {error.strerror}"])


@app.command(
    epilog=_example(
        "subplans cancel 20261128-000453-43a954", "subplans cancel 20261128-000453-43a954 --wait"
    )
)
def cancel(
    run_id: RunIdArgument,
    wait: Annotated[
        bool, typer.Option("--wait", help="Return once the run has stopped, with its status.")
    ] = False,
    store: StoreOption = None,
) -> None:
    """Ask a run that another process drives to stop, as Ctrl-C would.

    Its subplans are cancelled (SIGTERM, then SIGKILL after their cancel_grace) and the run
    ends `cancelled`. For an interrupted run (its process is gone), it stops the processes the
    run left running, the same way; the run stays interrupted, to be resumed or left.
    """
    import time

    from subplans.cli.reports import POLL_INTERVAL
    from subplans.store import cancel_run

    with _store_errors(), _opened(_store_path(store), readonly=True) as db:
        found = db.get_run(run_id)
        if found.status == "interrupted":
            _cancel_leftovers(db, found)
            return
        owner = cancel_run(db, run_id)
        typer.echo(f"asked run {run_id} to stop: sent SIGTERM to {owner}")
        if wait:
            with _interruptible():
                while (found := db.get_run(run_id)).status == "running":
                    time.sleep(POLL_INTERVAL)
            typer.echo(f"run {run_id} {found.status}")


def _cancel_leftovers(db: RunStore, run: RunInfo) -> None:
    """``cancel`` of an interrupted run: stop what it left running (holding its lock), say so."""
    from subplans.store.resume import describe_stopped, stop_leftovers_locked

    with _interruptible():
        stopped = stop_leftovers_locked(db, run)
    if stopped:
        typer.echo(visible(describe_stopped(run.id, stopped)))
    else:
        typer.echo(f"run {run.id} was interrupted and left nothing running")
    typer.echo(f"run {run.id} stays interrupted: resume it with `subplans resume {run.id}`")


# --- entry point --------------------------------------------------------------------------

# Recent Typer versions vendor click: take click's base exception from Typer's own class.
_ClickException: type[Exception] = next(
    cls for cls in typer.BadParameter.__mro__ if cls.__name__ == "ClickException"
)


def main(argv: Sequence[str] | None = None) -> int:
    """The ``subplans`` command; returns the exit code (``ExitCode``)."""
    # SIGINT and SIGTERM: exit 130 and one line at any moment (signal_guard).
    with signal_guard.GUARD.guarded():
        try:
            return _main(argv)
        except signal_guard.CommandInterrupted:
            return ExitCode.INTERRUPTED


def _main(argv: Sequence[str] | None) -> int:
    command = typer.main.get_command(app)
    # Ids and output come from plans and commands: a terminal or pipe that cannot encode a
    # character gets an escape, never a UnicodeEncodeError halfway through a summary.
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")
    try:
        code = command.main(args=argv, prog_name="subplans", standalone_mode=False)
    except _ClickException as error:
        return _usage_error(error)
    except typer.Abort:  # end of input while prompting, or Ctrl-C outside a run
        return ExitCode.INTERRUPTED
    except BrokenPipeError:  # `subplans runs | head`: the reader has all it wanted
        code = ExitCode.OK
    except SystemExit as exiting:
        # click answers a broken pipe itself with exit 1 after wrapping stdout; that is the
        # reader having all it wanted, not a failed plan.
        if type(sys.stdout).__name__ != "PacifyFlushWrapper":
            raise
        code = ExitCode.OK if exiting.code == 1 else exiting.code
    finally:
        _forget_closed_stdout()
    return code if isinstance(code, int) else ExitCode.OK


def _forget_closed_stdout() -> None:
    """After ``subplans ... | head``: no "Exception ignored" noise when Python exits.

    Python flushes stdout on the way out; if the reader has gone, point stdout at /dev/null
    first (the recipe of the ``signal`` module's documentation).
    """
    if sys.stdout is None:  # started with stdout closed (`>&-`)
        return
    try:
        sys.stdout.flush()
    except OSError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def _usage_error(error: Any) -> int:
    """A click usage error as one ``error:`` line; ``subplans`` alone prints its help."""
    message: str = error.format_message()
    if type(error).__name__ == "NoArgsIsHelpError":
        if message.strip():  # pragma: no cover - click prints the help itself in some versions
            typer.echo(message, err=True)
        return ExitCode.INVALID
    message = " ".join(message.split()).rstrip(".")
    message = message[:1].lower() + message[1:]
    ctx = getattr(error, "ctx", None)
    hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
    typer.echo(f"error: {message}{hint}", err=True)
    return ExitCode.INVALID
