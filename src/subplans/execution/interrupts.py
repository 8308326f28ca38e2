"""Stopping a run on SIGINT or SIGTERM: the first signal cancels it cleanly, a second kills.

The first signal cancels the run's task: the dispatchers stop starting subplans and cancel the
running ones, command subplans get SIGTERM to their process group and SIGKILL after
``cancel_grace``, and each is recorded as failed by cancellation. A second signal while that is
under way SIGKILLs every process of every command of the run at once (each command's own
``Stopping`` finds them and checks who they are: a process group id alone may name another
process group by then); the cleanup then finishes at once.
"""

from __future__ import annotations

import asyncio
import signal
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from types import FrameType

from subplans.engine.clock import SYSTEM_CLOCK, Clock
from subplans.execution.process import ProcessGroups
from subplans.execution.signal_guard import ignored

__all__ = ["SIGNALS", "Interrupts"]

#: The signals that interrupt a run.
SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupts:
    """Turns signals into cancellation of ``task``, then into SIGKILL of every process group.

    ``notify`` is told, in one line of text, what each signal does; ``clock.monotonic()`` tells
    when a signal arrived.
    """

    def __init__(
        self,
        task: asyncio.Task[object],
        groups: ProcessGroups,
        *,
        notify: Callable[[str], None] | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.task = task
        self.groups = groups
        self.notify = notify
        self.clock = clock
        #: How many interrupting signals arrived.
        self.count = 0
        #: The first one, such as ``signal.SIGINT``.
        self.first: signal.Signals | None = None
        #: When the first one arrived (``clock.monotonic()``).
        self.first_at: float | None = None

    def __repr__(self) -> str:
        first = self.first.name if self.first is not None else "none"
        return f"<Interrupts {self.count} received, first {first}, {len(self.groups)} live groups>"

    def grace_left(self, grace: float) -> float:
        """What is left of ``grace`` for stopping processes: all of it before any signal,
        what the first signal's grace has not used up yet after it, none after a second."""
        if self.first_at is None:
            return grace
        if self.count > 1:
            return 0.0
        return max(0.0, grace - (self.clock.monotonic() - self.first_at))

    @property
    def interrupted(self) -> bool:
        """True once a signal asked the run to stop."""
        return self.count > 0

    def handle(self, signum: int) -> None:
        """React to one signal (the loop calls this; tests may too)."""
        self.count += 1
        name = signal.Signals(signum).name
        if self.count == 1:
            self.first = signal.Signals(signum)
            self.first_at = self.clock.monotonic()
            self.task.cancel(f"interrupted by {name}")
            self._tell(
                f"{name}: stopping; running subplans get SIGTERM, then SIGKILL after their "
                "cancel_grace (interrupt again to kill them now)"
            )
        else:
            killed = self.groups.kill_all()
            self._tell(f"{name} again: killed {killed} process group{'' if killed == 1 else 's'}")

    @contextmanager
    def installed(self, loop: asyncio.AbstractEventLoop) -> Iterator[Interrupts]:
        """Handle ``SIGNALS`` on ``loop`` inside the block (main thread only).

        The handlers that were there before are back after the block, straight from ours: not
        ``loop.add_signal_handler``, whose removal passes through the default action, and
        SIGTERM's default ends the process by the signal (-15) in the middle of the summary.
        """

        def on_signal(signum: int, frame: FrameType | None) -> None:
            loop.call_soon_threadsafe(self.handle, signum)

        # Python runs a handler in the main thread, once it runs again: a signal that lands in
        # another thread writes to this socket, and so wakes the loop (as asyncio's own do).
        wake, woken = socket.socketpair()
        wake.setblocking(False)
        woken.setblocking(False)
        loop.add_reader(woken.fileno(), _drain, woken)
        previous_fd = signal.set_wakeup_fd(wake.fileno(), warn_on_full_buffer=False)
        # A signal ignored when the run starts (a script's background job) stays ignored.
        previous = {sig: signal.signal(sig, on_signal) for sig in SIGNALS if not ignored(sig)}
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, signal.SIG_DFL if handler is None else handler)
            signal.set_wakeup_fd(previous_fd)
            loop.remove_reader(woken.fileno())
            wake.close()
            woken.close()

    def _tell(self, text: str) -> None:
        if self.notify is not None:
            self.notify(text)


def _drain(woken: socket.socket) -> None:
    with suppress(OSError):  # BlockingIOError once empty
        while woken.recv(4096):
            pass
