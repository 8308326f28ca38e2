"""``limit_run``: asking the live owner of a run to change one of its caps, as ``cancel_run``
asks it to stop (``limits`` says how the request travels)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from subplans.engine.errors import RunNotLiveError
from subplans.execution.stopping import send_signal
from subplans.store.cancel import live_owner
from subplans.store.limits import LIMIT_SIGNAL, check_limit
from subplans.store.liveness import Liveness, ProcessIdentity

if TYPE_CHECKING:
    from subplans.store.store import RunStore

__all__ = ["limit_run"]

#: How often ``limit_run`` looks whether a run just (re)started listens yet.
_POLL = 0.02


def limit_run(
    store: RunStore, run_id: str, target: str, limit: int, *, listen_wait: float = 1.0
) -> tuple[ProcessIdentity, int]:
    """Ask the live owner of ``run_id`` to change the cap of ``target`` to ``limit``: recorded
    in the store, then the owner signalled (``LIMIT_SIGNAL``). Returns the owner and the
    request's number (``RunStore.limit_request`` reads what came of it).

    An owner that has not recorded that it handles the signal (a subplans before ``limit``,
    which the signal would kill) within ``listen_wait`` seconds is never sent it.

    Raises:
        ValueError: ``limit`` is out of range for ``target``.
        RunNotLiveError: the run has ended, its owner is gone, or it runs on another host.
        RunNotFoundError: no such run.
    """
    check_limit(target, limit)
    owner, liveness = live_owner(store, run_id, "change its limit")
    if liveness is Liveness.GONE:
        raise RunNotLiveError(f"run {run_id} was interrupted: its {owner} is gone")
    if not _listens(store, run_id, owner.pid, listen_wait):
        raise RunNotLiveError(
            f"run {run_id} cannot change its limits while running: it was started by a "
            "subplans without `limit`; stop it and `subplans resume` it to change them"
        )
    request = store.request_limit(run_id, target, limit)
    if not send_signal(owner.pid, owner.start_time, LIMIT_SIGNAL):
        raise RunNotLiveError(f"run {run_id} was interrupted: its {owner} is gone")
    return owner, request


def _listens(store: RunStore, run_id: str, pid: int, wait: float) -> bool:
    """Whether the owner ``pid`` of ``run_id`` recorded that it handles ``LIMIT_SIGNAL``,
    within ``wait`` seconds (a run just started or resumed records it a moment later)."""
    deadline = time.monotonic() + wait
    while store.limit_listener(run_id) != pid:
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL)
    return True
