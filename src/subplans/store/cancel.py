"""``cancel_run``: asking the live owner of a run to stop, as Ctrl-C would."""

from __future__ import annotations

import signal
from typing import TYPE_CHECKING

from subplans.engine.errors import RunNotLiveError
from subplans.execution.stopping import send_signal
from subplans.store.liveness import Liveness, ProcessIdentity, owner_liveness
from subplans.store.records import RunStatus

if TYPE_CHECKING:
    from subplans.store.store import RunStore

__all__ = ["cancel_run"]


def cancel_run(store: RunStore, run_id: str, *, sig: int = signal.SIGTERM) -> ProcessIdentity:
    """Ask the live owner of a run to stop, as Ctrl-C would: send it ``sig`` (SIGTERM).

    The owner is signalled only once it is proven to be the recorded process (pid, host, boot
    and start time); with a pidfd the check and the signal cannot race a pid reuse. The owner
    must treat SIGTERM like Ctrl-C (the CLI does). Returns the owner signalled.

    Raises:
        RunNotLiveError: the run has ended, its owner is gone, or it runs on another host.
        RunNotFoundError: no such run.
    """
    owner, liveness = live_owner(store, run_id, "cancel it")
    # Sent only if it is still that process: False if it is gone.
    if liveness is Liveness.GONE or not send_signal(owner.pid, owner.start_time, sig):
        raise RunNotLiveError(
            f"run {run_id} was interrupted: its {owner} is gone; "
            f"resume it with `subplans resume {run_id}`"
        )
    return owner


def live_owner(store: RunStore, run_id: str, act: str) -> tuple[ProcessIdentity, Liveness]:
    """The recorded owner of a running run driven on this host, and whether it is still
    alive (``Liveness.GONE`` is the caller's to refuse, each with its own advice).

    Raises:
        RunNotLiveError: the run has ended, or it is driven elsewhere (``act`` there).
        RunNotFoundError: no such run.
    """
    run = store.get_run(run_id)
    owner = run.owner
    if run.recorded_status is not RunStatus.RUNNING:
        raise RunNotLiveError(f"run {run_id} has already ended ({run.recorded_status})")
    liveness = owner_liveness(owner)
    if owner is None or liveness is Liveness.UNKNOWN:
        where = f"on {owner.host}" if owner is not None else "by an unknown process"
        raise RunNotLiveError(f"run {run_id} is driven {where}; {act} there")
    return owner, liveness
