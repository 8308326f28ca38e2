"""``limit_run``: asking the live owner of a run to change one of its caps, as ``cancel_run``
asks it to stop (``limits`` says how the request travels)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from subplans.engine.errors import RunNotLiveError
from subplans.execution.stopping import send_signal
from subplans.store.limits import LIMIT_SIGNAL, check_limit
from subplans.store.liveness import Liveness, ProcessIdentity, owner_liveness
from subplans.store.records import RunStatus

if TYPE_CHECKING:
    from subplans.store.store import RunStore

__all__ = ["limit_run"]


def limit_run(store: RunStore, run_id: str, target: str, limit: int) -> ProcessIdentity:
    """Ask the live owner of ``run_id`` to change the cap of ``target`` to ``limit``: recorded
    in the store, then the owner signalled (``LIMIT_SIGNAL``). Returns the owner.

    Raises:
        ValueError: ``limit`` is out of range for ``target``.
        RunNotLiveError: the run has ended, its owner is gone, or it runs on another host.
        RunNotFoundError: no such run.
    """
    check_limit(target, limit)
    run = store.get_run(run_id)
    owner = run.owner
    if run.recorded_status is not RunStatus.RUNNING:
        raise RunNotLiveError(f"run {run_id} has already ended ({run.recorded_status})")
    liveness = owner_liveness(owner)
    if owner is None or liveness is Liveness.UNKNOWN:
        where = f"on {owner.host}" if owner is not None else "by an unknown process"
        raise RunNotLiveError(f"run {run_id} is driven {where}; change its limit there")
    if liveness is Liveness.GONE:
        raise RunNotLiveError(f"run {run_id} was interrupted: its {owner} is gone")
    store.request_limit(run_id, target, limit)
    if not send_signal(owner.pid, owner.start_time, LIMIT_SIGNAL):
        raise RunNotLiveError(f"run {run_id} was interrupted: its {owner} is gone")
    return owner
