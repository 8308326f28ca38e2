"""Turning plan units into dispatcher subplans: commands, Python callables and nested plans."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import importlib
import inspect
import sys
import threading
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from subplans.engine.errors import BackendError, SubplanCancelledError, SubplanError
from subplans.engine.events import SubplanProcessStarted
from subplans.engine.subplan import Subplan
from subplans.execution.process import run_command
from subplans.execution.run_context import RemoteBackend, RunContext, log_name

if TYPE_CHECKING:
    from subplans.plans.tree import UnitNode

#: ``RemoteBackend``, ``RunContext`` and ``log_name`` moved to ``run_context``; still here too.
__all__ = [
    "CallTargetError",
    "RemoteBackend",
    "RunContext",
    "ThreadAbandonedError",
    "build_subplan",
    "call_function",
    "import_target",
    "log_name",
]


class CallTargetError(SubplanError):
    """A ``call`` target cannot be imported or is not a function."""


class ThreadAbandonedError(SubplanCancelledError):
    """A cancelled sync function kept running in its worker thread past ``cancel_grace``."""


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
        return await run_plan(plan, context.within_attempt(within))

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
