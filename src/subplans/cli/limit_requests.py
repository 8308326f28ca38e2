"""The running side of ``subplans limit``: while a run runs, ``LIMIT_SIGNAL`` from another
process says a request waits in the store; each is applied to the executor's caps
(``LiveLimits``), and what came of it recorded in the store and said above the progress.

A request made before the run listened is read as it starts to listen: none is lost. Before
and after, the command ignores the signal (``ignore_limit_signal``): it never ends the run. It
records in the store that it listens (``subplans limit`` signals no owner that has not: an older
subplans dies of it), and a resumed run first sets again the caps changed in earlier sessions.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import TYPE_CHECKING

from subplans.engine.errors import ConfigError, StoreError
from subplans.execution.live_limits import LiveLimits
from subplans.store import LIMIT_SIGNAL

if TYPE_CHECKING:
    from subplans.store import LimitRecord, RunStore

__all__ = ["LimitRequests", "ignore_limit_signal"]


def ignore_limit_signal() -> None:
    """Ignore ``LIMIT_SIGNAL`` from now on (its default ends the process): called before the
    run is registered as running, which is when ``subplans limit`` may send it."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(LIMIT_SIGNAL, signal.SIG_IGN)


class LimitRequests:
    """Applies the requests of ``run_id`` waiting in ``store`` to ``limits``; ``say`` tells
    the human what each did."""

    def __init__(
        self, store: RunStore, run_id: str, limits: LiveLimits, say: Callable[[str], None]
    ) -> None:
        self.store = store
        self.run_id = run_id
        self.limits = limits
        self.say = say

    def __repr__(self) -> str:
        return f"<LimitRequests run {self.run_id}>"

    @contextlib.contextmanager
    def followed(self, loop: asyncio.AbstractEventLoop) -> Iterator[None]:
        """Apply the waiting requests now, and each time ``LIMIT_SIGNAL`` arrives within the
        block (main thread only; the loop is woken by the wakeup fd ``Interrupts`` set)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def on_signal(signum: int, frame: FrameType | None) -> None:
            loop.call_soon_threadsafe(self.apply)

        self.restore()
        previous = signal.signal(LIMIT_SIGNAL, on_signal)
        try:  # only now may `subplans limit` signal this process
            self.store.listen_for_limits(self.run_id)
        except StoreError as error:
            self.say(f"limit: cannot listen for changes: {error}")
        loop.call_soon(self.apply)
        try:
            yield
        finally:
            signal.signal(LIMIT_SIGNAL, signal.SIG_IGN if previous is None else previous)

    def restore(self) -> None:
        """Set again the caps changed in an earlier session of the run (it is resumed): a limit
        set on a run lasts as long as the run, as its ``--halt`` does."""
        try:
            records = self.store.limits(self.run_id)
        except StoreError as error:
            self.say(f"limit: cannot read the caps changed earlier: {error}")
            return
        for record in records:
            if record.current is None:
                continue
            shown = record.target.replace(":", " ", 1)
            try:
                self.limits.set(record.target, record.current)
            except ConfigError as error:  # a plan edited since, or a pool still needed whole
                self.say(f"limit: {shown} {record.current} not set again: {error}")
                self.keep(record)
            else:
                self.say(f"limit: {shown} {record.current}, as `subplans limit` set it")

    def keep(self, record: LimitRecord) -> None:
        """Record that the cap ``record`` set is not set again: its target keeps the cap the
        run has (``status`` says that one); nothing for a step or pool gone from the plan."""
        try:
            kept = self.limits.current(record.target)
        except ConfigError:
            return
        try:
            request = self.store.request_limit(self.run_id, record.target, kept)
            for pending in self.store.pending_limits(self.run_id):
                if (pending.target, pending.request) == (record.target, request):
                    self.store.record_limit(
                        self.run_id, pending, original=record.current, current=kept
                    )
        except StoreError as error:
            self.say(f"limit: cannot record the caps kept: {error}")

    def apply(self) -> None:
        """Apply every request waiting in the store, and record what came of each."""
        try:
            pending = self.store.pending_limits(self.run_id)
            for record in pending:
                shown = record.target.replace(":", " ", 1)
                try:
                    previous = self.limits.set(record.target, record.requested)
                except ConfigError as error:
                    self.store.record_limit(self.run_id, record, error=str(error))
                    self.say(f"limit: {shown} {record.requested} refused: {error}")
                    continue
                started = self.limits.original(record.target)
                self.store.record_limit(
                    self.run_id,
                    record,
                    original=previous,
                    current=record.requested,
                    started_with=started,
                )
                from subplans.cli.limit_lines import bounded  # once a request comes (#10)

                # A root step runs no more at once than the run's max_parallel as set.
                runs = bounded(record.requested, self.limits.current(record.target))
                self.say(f"limit: {shown} {previous} -> {record.requested}{runs}")
        except StoreError as error:  # the run goes on with the caps it has
            self.say(f"limit: cannot read the requests: {error}")
