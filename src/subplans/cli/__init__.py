"""The ``subplans`` command: its commands (one module per group), a run's lifecycle and session,
the reports about stored runs.

The top layer: builds on every other. ``main`` is loaded on first use, so that importing the
library (which imports ``subplans.execution.signal_guard`` first) does not load Typer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from subplans.cli.app import main

__all__ = ["main"]


def __getattr__(name: str) -> object:
    if name == "main":
        from subplans.cli.app import main

        return main
    raise AttributeError(f"module 'subplans.cli' has no attribute {name!r}")
