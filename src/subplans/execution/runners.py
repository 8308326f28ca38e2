"""Turning plan units into dispatcher subplans: commands, Python callables and nested plans."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import importlib
import inspect
import os
import re
import sys
import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from subplans.engine.bus import EventBus
from subplans.engine.clock import SYSTEM_CLOCK, Clock
from subplans.engine.errors import BackendError, SubplanCancelledError, SubplanError
from subplans.engine.events import SubplanProcessStarted
from subplans.engine.limiter import AsyncSemaphoreLimiter
from subplans.engine.subplan import Subplan
from subplans.execution.process import CommandResult, ProcessGroups, run_command

if TYPE_CHECKING:
    from subplans.execution.results import PlanResult
    from subplans.plans.backends import Backend
    from subplans.plans.tree import PlanNode, UnitNode

__all__ = [
    "CallTargetError",
    "RemoteBackend",
    "RunContext",
    "ThreadAbandonedError",
    "build_subplan",
    "call_function",
    "log_name",
]


class CallTargetError(SubplanError):
    """A ``call`` target cannot be imported or is not a function."""


class ThreadAbandonedError(SubplanCancelledError):
    """A cancelled sync function kept running in its worker thread past ``cancel_grace``."""


def log_name(unit_id: str) -> str:
    """The file name (without ``.log``) a unit's log gets in the run's ``logs`` folder; a
    second unit of the same name gets ``NAME.2`` (``RunContext.log_file``)."""
    return re.sub(r"[^\w.-]+", "_", unit_id.replace("/", "__")).strip("._") or "subplan"


class RemoteBackend(Protocol):
    """Where ``run`` and ``call`` units of a non-local backend run (``cluster.DaskBackend``):
    the twins of ``run_command`` and ``call_function``, with the same results and errors."""

    async def run_command(
        self,
        command: str | Sequence[str],
        *,
        log_file: Path,
        cwd: Path | None,
        env: Mapping[str, str],
        cancel_grace: float,
        attempt: int,
        on_start: Callable[[int, str], None],
        within: str = "",
    ) -> CommandResult: ...

    async def call(
        self,
        target: str,
        folder: Path,
        kwargs: Mapping[str, Any],
        *,
        cancel_grace: float,
        label: str,
        on_start: Callable[[int, str], None],
        run_id: str,
    ) -> Any: ...


@dataclass(slots=True)
class RunContext:
    """What every unit of one run shares: ids, folders, the bus, processes and the budget."""

    run_id: str
    run_dir: Path
    bus: EventBus | None = None
    groups: ProcessGroups = field(default_factory=ProcessGroups)
    environ: Mapping[str, str] | None = None
    #: The shared budget of the root step that is running (None at the root, between steps).
    budget: AsyncSemaphoreLimiter | None = None
    log_names: dict[str, Path] = field(default_factory=dict)
    run_plan: Callable[[PlanNode, RunContext], Awaitable[PlanResult]] | None = None
    #: The log files handed out so far (``log_names``' values), to keep names unique in O(1).
    log_taken: set[Path] = field(default_factory=set)
    #: The run's clock: the stamps of the events the units publish.
    clock: Clock = SYSTEM_CLOCK
    #: Where units of another backend than ``local`` run (empty: every unit runs here).
    backends: Mapping[Backend, RemoteBackend] = field(default_factory=dict)
    #: The attempts beyond the first of the nested plans the units run in, outermost first
    #: (``s/inner attempt 2``): each attempt of a nested plan builds its units again, so their
    #: own attempts count from 1 again, and their log headers say which attempt it is of.
    within: str = ""
    #: ``environ`` (or ours) as a plain dict, read once: copying ``os.environ`` decodes every
    #: variable, which costs more than the rest of a command's set-up.
    _base_env: dict[str, str] | None = field(default=None, repr=False)

    def log_file(self, unit_id: str) -> Path:
        """A log file name in the run folder for ``unit_id``, unique within the run."""
        path = self.log_names.get(unit_id)
        if path is None:
            safe = log_name(unit_id)
            path = self.run_dir / "logs" / f"{safe}.log"
            number = 2
            while path in self.log_taken:
                path = self.run_dir / "logs" / f"{safe}.{number}.log"
                number += 1
            self.log_names[unit_id] = path
            self.log_taken.add(path)
        return path

    def environment(self, unit: UnitNode) -> dict[str, str]:
        """The child environment: ours (read when the first command starts), the unit's
        ``env``, and the SUBPLANS_* variables."""
        if self._base_env is None:
            self._base_env = dict(os.environ if self.environ is None else self.environ)
        return self._for_unit(self._base_env.copy(), unit)

    def remote_environment(self, unit: UnitNode) -> dict[str, str]:
        """What a unit's command gets on a worker over the worker's own environment: the
        run's ``environ`` if one was given (the driver's own stays here), the unit's ``env``
        and the SUBPLANS_* variables."""
        return self._for_unit(dict(self.environ or {}), unit)

    def _for_unit(self, env: dict[str, str], unit: UnitNode) -> dict[str, str]:
        """``env`` with the unit's ``env`` and the SUBPLANS_* variables that name it."""
        env.update(unit.env)
        env["SUBPLANS_RUN_ID"] = self.run_id
        env["SUBPLANS_SUBPLAN"] = unit.id
        if unit.item is not None:
            env["SUBPLANS_ITEM"] = unit.item
        else:
            env.pop("SUBPLANS_ITEM", None)
        return env


def build_subplan(unit: UnitNode, context: RunContext, *, cancel_grace: float) -> Subplan:
    """The dispatcher subplan that runs ``unit``."""
    run: Callable[[], Awaitable[Any]]
    if unit.kind == "plan":  # a nested plan runs here whatever its backend: its units do not
        run = _nested(unit, context)
    elif unit.backend.kind != "local":
        run = _remote(unit, context, cancel_grace)
    elif unit.kind == "run":
        run = _command(unit, context, cancel_grace)
    else:
        run = _callable(unit, cancel_grace, context.groups.hurried)
    return Subplan(
        unit.id,
        run,
        timeout=unit.timeout,
        retries=unit.retries,
        uses_budget=unit.kind != "plan",
        uses=unit.uses or None,
    )


def _command(unit: UnitNode, context: RunContext, grace: float) -> Callable[[], Awaitable[Any]]:
    assert unit.command is not None
    command = unit.command
    log_file = context.log_file(unit.id)
    attempts = 0  # this run's attempts so far: each call of ``run`` is one (retries call again)

    def started(pid: int) -> None:
        if context.bus is not None:
            now = context.clock.now()
            context.bus.publish(SubplanProcessStarted(unit.id, pid, str(log_file), time=now))

    async def run() -> Any:
        nonlocal attempts
        attempts += 1
        return await run_command(
            command,
            log_file=log_file,
            cwd=unit.cwd,
            env=context.environment(unit),
            cancel_grace=grace,
            groups=context.groups,
            on_start=started,
            attempt=attempts,
            within=context.within,
        )

    return run


def _remote(unit: UnitNode, context: RunContext, grace: float) -> Callable[[], Awaitable[Any]]:
    """A ``run`` or ``call`` unit sent to its backend (``context.backends``)."""
    backend = context.backends.get(unit.backend)
    log_file = context.log_file(unit.id) if unit.kind == "run" else None
    attempts = 0

    def started(pid: int, worker: str) -> None:
        """Its command's group started on ``worker``; or, for a ``call`` unit, its function
        (``pid``: the worker process's, no log file)."""
        if context.bus is not None:
            now = context.clock.now()
            log = "" if log_file is None else str(log_file)
            event = SubplanProcessStarted(unit.id, pid, log, worker, time=now)
            context.bus.publish(event)

    async def run() -> Any:
        nonlocal attempts
        if backend is None:
            raise BackendError(
                f"{unit.id}: no {unit.backend} backend was given to run it on: start a "
                "DaskBackend and pass it as PlanExecutor(backends={backend_setting: backend})"
            )
        attempts += 1
        if log_file is None:
            assert unit.call is not None
            kwargs = dict(unit.kwargs)
            return await backend.call(
                unit.call,
                unit.folder,
                kwargs,
                cancel_grace=grace,
                label=unit.id,
                on_start=started,
                run_id=context.run_id,
            )
        assert unit.command is not None
        return await backend.run_command(
            unit.command,
            log_file=log_file,
            cwd=unit.cwd,
            env=context.remote_environment(unit),
            cancel_grace=grace,
            attempt=attempts,
            on_start=started,
            # Only when there is one: a backend written before ``within`` still takes the rest.
            **({"within": context.within} if context.within else {}),
        )

    return run


def _callable(unit: UnitNode, grace: float, hurried: asyncio.Event) -> Callable[[], Awaitable[Any]]:
    assert unit.call is not None
    target, folder, kwargs = unit.call, unit.folder, dict(unit.kwargs)

    async def run() -> Any:
        function = import_target(target, folder)
        return await call_function(
            function, kwargs, cancel_grace=grace, label=unit.id, hurried=hurried
        )

    return run


def _nested(unit: UnitNode, context: RunContext) -> Callable[[], Awaitable[Any]]:
    assert unit.plan is not None
    assert context.run_plan is not None
    plan, run_plan = unit.plan, context.run_plan
    attempts = 0  # its retries run the whole nested plan again

    async def run() -> Any:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            return await run_plan(plan, context)
        this = f"{unit.id} attempt {attempts}"
        within = f"{context.within}, {this}" if context.within else this
        return await run_plan(plan, replace(context, within=within))

    return run


def import_target(target: str, folder: Path) -> Callable[..., Any]:
    """Import ``package.module:function``; the plan's folder is importable."""
    module_name, _, attribute = target.partition(":")
    where = str(folder.resolve())
    if where not in sys.path:
        sys.path.insert(0, where)
    try:
        module = importlib.import_module(module_name)
    except Exception as error:
        raise CallTargetError(f"cannot import {module_name!r}: {error}") from error
    function = getattr(module, attribute, None)
    if not callable(function):
        raise CallTargetError(f"{module_name!r} has no function {attribute!r}")
    return function  # type: ignore[no-any-return]


async def call_function(
    function: Callable[..., Any],
    kwargs: Mapping[str, Any],
    *,
    cancel_grace: float,
    label: str = "",
    hurried: asyncio.Event | None = None,
) -> Any:
    """Await an ``async def``; run a plain function in a worker thread.

    A thread cannot be interrupted: when cancelled, the function gets ``cancel_grace`` seconds to
    return; if it is still running then, ``ThreadAbandonedError`` says so instead of pretending
    it stopped.
    """
    if inspect.iscoroutinefunction(function):
        return await function(**kwargs)
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()
    context = contextvars.copy_context()

    def settle(error: BaseException | None, value: Any) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)

    def work() -> None:
        error: BaseException | None = None
        try:
            value = context.run(function, **kwargs)
        except (StopIteration, StopAsyncIteration) as raised:
            # A future refuses these (they mean something else to generators), as coroutines do.
            value, error = None, RuntimeError(f"the function raised {type(raised).__name__}")
            error.__cause__ = raised
        except Exception as raised:
            value, error = None, raised
        except BaseException as raised:
            # sys.exit() in a script-style function ends the subplan, not the whole run.
            value, error = None, RuntimeError(f"the function raised {raised!r}")
            error.__cause__ = raised
        # The loop may have closed while an abandoned thread ran on: nobody is waiting then.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(settle, error, value)

    # A daemon thread: an abandoned one must never keep the process from exiting.
    threading.Thread(target=work, name=f"subplans {label}", daemon=True).start()
    try:
        value = await asyncio.shield(future)
    except asyncio.CancelledError:
        # The grace ends early when the run is told to die now (a second Ctrl-C).
        hurry = None if hurried is None else asyncio.ensure_future(hurried.wait())
        try:
            await asyncio.wait(
                [future] if hurry is None else [future, hurry],
                timeout=cancel_grace,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            if hurry is not None:
                hurry.cancel()
        if not future.done():
            waited = "" if hurried is not None and hurried.is_set() else f" {cancel_grace:g}s"
            raise ThreadAbandonedError(
                f"the function was still running in its worker thread{waited} after "
                "cancellation; abandoned",
                abandoned=True,
            ) from None
        future.exception()  # retrieved: its outcome no longer matters once cancelled
        raise
    if inspect.isawaitable(value):
        return await value
    return value
