"""SIGINT and SIGTERM in the ``subplans`` command around its run: exit 130 and one line, from the
command's first instruction to its last, never a traceback and never a death by the signal.

While a plan runs, the run handles both itself (``interrupts``). Before and after, ``GUARD``
does, in the command's process:

=====================  =====================================================================
from the first line    importing this module, the package's first statement, installs the
of the package         guard in the ``subplans`` process only (``is_command()``: importing
                       the library changes no handler); ``guarded()`` around ``main()``
                       installs it when the command is called from Python, and takes it away
                       again after
any moment not below   one line on stderr (``interrupted by SIGINT``), then the process ends
                       with exit 130 right there, in an import, the parsing of options or a
                       store query (``main()`` called from Python raises
                       ``CommandInterrupted``, a ``SystemExit`` with code 130, instead)
``deferred()``         the command registers a run: the signals are noted, not acted on, so
                       that nothing is left half-made; the run handles them as soon as it can
                       stop cleanly, or the block ends with ``CommandInterrupted``
after ``settle()``     the outcome is decided: a signal changes nothing; once ``main()``
                       returns both are ignored outright (``SIG_IGN``), so that nothing from
                       there to the end of the process can still end it by the signal
=====================  =====================================================================

Nothing here imports more than the standard library's ``signal``, ``os`` and ``sys``: it runs
before anything else of the command is loaded.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from types import FrameType
from typing import Any, NoReturn

__all__ = [
    "EXIT_CODE",
    "GUARD",
    "SIGNALS",
    "CommandInterrupted",
    "SignalGuard",
    "ignored",
    "is_command",
]

#: The signals that interrupt the command.
SIGNALS = (signal.SIGINT, signal.SIGTERM)
#: The exit code of an interrupted command.
EXIT_CODE = 130

_Handler = Callable[[int, FrameType | None], Any] | int | None


class CommandInterrupted(SystemExit):
    """The command was interrupted outside a run; its line is printed, the exit code is 130."""

    def __init__(self, signum: int) -> None:
        super().__init__(EXIT_CODE)
        #: The signal, such as ``signal.SIGINT``.
        self.signum = signum


class SignalGuard:
    """The command's handling of ``SIGNALS`` outside its run. ``command`` is True in the
    ``subplans`` process itself: the guard holds from its creation to the end of the process.

    Signal handlers belong to the process: ``GUARD`` is the one every part of the command uses.
    """

    def __init__(self, *, command: bool = False) -> None:
        self.command = command
        #: The guard's handlers are installed.
        self.held = False
        #: The command's outcome is decided: a signal changes nothing any more.
        self.ended = False
        #: The interrupt's line was printed (it is printed once).
        self.told = False
        self._replaced: dict[signal.Signals, _Handler] = {}
        if command:
            self.hold()

    def __repr__(self) -> str:
        state = "ended" if self.ended else "held" if self.held else "not held"
        return f"<SignalGuard {state}{', command' if self.command else ''}>"

    def hold(self) -> bool:
        """Install the guard's handlers; False off the main thread, where none can be set."""
        try:
            self._replaced = {
                sig: signal.signal(sig, self._on_signal) for sig in SIGNALS if not ignored(sig)
            }
        except ValueError:  # not the main thread: the signals are its business
            return False
        self.held = True
        return True

    @contextmanager
    def guarded(self) -> Iterator[None]:
        """Around ``main()``: the guard holds inside the block (installed here unless it
        already is). After it the command's process ignores both signals; any other caller
        gets its handlers back."""
        installed_here = not self.held and self.hold()
        self.ended = self.told = False
        try:
            yield
        finally:
            if self.command:
                self.ended = True
                for sig in SIGNALS:
                    signal.signal(sig, signal.SIG_IGN)
            elif installed_here:
                for sig, handler in self._replaced.items():
                    _restore(sig, handler)
                self.held = False

    @contextmanager
    def deferred(self) -> Iterator[list[int]]:
        """SIGINT and SIGTERM are noted, not acted on, inside the block; yields the list they
        go to (main thread only).

        Whoever handles them takes them off the list. If some are left when the block ends and
        the outcome is not decided (``settle()``), the block ends with ``CommandInterrupted``.
        The previous handlers are restored either way.
        """
        noted: list[int] = []

        def note(signum: int, frame: FrameType | None) -> None:
            noted.append(signum)

        self.ended = False
        previous = {sig: signal.signal(sig, note) for sig in SIGNALS if not ignored(sig)}
        try:
            yield noted
        finally:
            for sig, handler in previous.items():
                _restore(sig, handler)
            if noted and not self.ended:
                self._interrupt(noted[0])

    def settle(self) -> None:
        """The command's outcome is decided: from now on SIGINT and SIGTERM change nothing."""
        self.ended = True

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        """The guard's handler: one line on stderr, then exit 130; nothing once the outcome is
        decided.

        The command's own process ends right here. An exception raised from a handler lands
        wherever the main thread is: inside a class's ``__set_name__`` it becomes a
        RuntimeError, in a callback it is only printed ("Exception ignored in") and the command
        goes on. Nothing needs stopping at these moments: the run has its own handlers,
        registering it defers the signals (``deferred()``), and the store's writes are atomic.
        Called from Python (``main()``), the guard raises ``CommandInterrupted`` instead.
        """
        if self.ended:
            return
        self._tell(signum)
        if self.command:  # pragma: no cover - the command's own process (test_hardening_signals)
            os._exit(EXIT_CODE)
        raise CommandInterrupted(signum)

    def _interrupt(self, signum: int) -> NoReturn:
        """End the command with exit 130 and its one line."""
        self._tell(signum)
        raise CommandInterrupted(signum)

    def _tell(self, signum: int) -> None:
        if self.told:
            return
        self.told = True
        # Straight to the file descriptor: the signal may have come in the middle of a write to
        # sys.stderr, and a buffered stream refuses to be entered twice.
        with suppress(OSError):  # no stderr (`2>&-`): the exit code says it
            os.write(2, f"interrupted by {signal.Signals(signum).name}\n".encode())


def _restore(sig: signal.Signals, handler: _Handler) -> None:
    # None: a handler set outside Python, which cannot be put back; the default is the closest.
    signal.signal(sig, signal.SIG_DFL if handler is None else handler)


def ignored(sig: signal.Signals) -> bool:
    """True if ``sig`` is ignored: as a shell starts a background job of a script, so that
    Ctrl-C at the terminal is not for it. A signal ignored on entry stays ignored (as in sh)."""
    return signal.getsignal(sig) == signal.SIG_IGN


def is_command() -> bool:
    """True in the ``subplans`` console script and in ``python -m subplans``, not when another
    program imports the package."""
    script = sys.argv[0] if sys.argv else ""
    if script == "-m":  # runpy is importing the package of the module it was asked to run
        argv = sys.orig_argv
        return any(
            (arg == "-m" and argv[index + 1 : index + 2] == ["subplans"]) or arg == "-msubplans"
            for index, arg in enumerate(argv)
        )
    return os.path.basename(script) == "subplans"


#: The process's guard. Importing this module is the package's first statement: the command is
#: guarded from there on.
GUARD = SignalGuard(command=is_command())
