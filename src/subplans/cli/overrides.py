"""The command line's profile overrides as the loader's ``Overrides``: ``--max-parallel``,
``--failure-mode``, ``--profile``, ``--halt``, and the backend (``--backend``, ``--scheduler``,
else ``$SUBPLANS_SCHEDULER``) of ``run``, ``run --dry-run`` and ``profile resolve``.

No Typer here: the plain command line (``run_args``) reads them too.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from enum import StrEnum
from typing import TYPE_CHECKING, Literal

from subplans.cli.exits import refuse

if TYPE_CHECKING:
    from subplans.engine.config import FailureMode
    from subplans.plans.loader import Overrides

__all__ = ["SCHEDULER_VARIABLE", "BackendKind", "command_overrides", "run_scheduler"]


class BackendKind(StrEnum):
    """``--backend``'s values (``plans.backends.KINDS``; not imported: ``--help`` loads no
    plan module)."""

    LOCAL = "local"
    DASK = "dask"


#: The environment variable that names the run's cluster when ``--scheduler`` does not.
SCHEDULER_VARIABLE = "SUBPLANS_SCHEDULER"


def command_overrides(
    *,
    max_parallel: int | None = None,
    failure_mode: FailureMode | None = None,
    profile: str | None = None,
    halt: str | None = None,
    backend: str | None = None,
    scheduler: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> Overrides:
    """What the options give; refused (``exits.refuse``) for an address that is none, and for
    ``--scheduler`` with ``--backend local``.

    ``--scheduler`` alone means ``--backend dask``; ``$SUBPLANS_SCHEDULER`` only says where a
    ``dask`` backend runs.
    """
    from subplans.plans.loader import Overrides

    kind: Literal["local", "dask"] | None = None
    backend_from = "--backend"
    if backend == "local" and scheduler is not None:
        refuse(["--scheduler is only for --backend dask (a local backend has none)"])
    if backend is not None:
        kind = "dask" if backend == "dask" else "local"
    elif scheduler is not None:
        kind, backend_from = "dask", "--scheduler"
    address, scheduler_from = _scheduler(scheduler, environ)
    return Overrides(
        max_parallel=max_parallel,
        failure_mode=failure_mode,
        profile=profile,
        halt=halt,
        backend=kind,
        scheduler=address,
        backend_from=backend_from,
        scheduler_from=scheduler_from,
    )


def run_scheduler(scheduler: str | None, environ: Mapping[str, str] | None = None) -> str | None:
    """The run's cluster: ``--scheduler``, else ``$SUBPLANS_SCHEDULER``, else None (a ``dask``
    backend then starts a cluster on 127.0.0.1 for the run); refused if it is no address."""
    return _scheduler(scheduler, environ)[0]


def _scheduler(
    scheduler: str | None, environ: Mapping[str, str] | None = None
) -> tuple[str | None, str]:
    """``run_scheduler`` and what named it (``--scheduler`` or ``$SUBPLANS_SCHEDULER``)."""
    where = "--scheduler"
    if scheduler is None:
        env = os.environ if environ is None else environ
        scheduler, where = env.get(SCHEDULER_VARIABLE) or None, f"${SCHEDULER_VARIABLE}"
    if scheduler is None:
        return None, "--scheduler"
    from subplans.plans.backends import check_scheduler

    try:
        return check_scheduler(scheduler, where), where
    except ValueError as error:
        refuse([error])
