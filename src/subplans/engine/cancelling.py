"""Cleanup that a cancellation cannot cut short: the engine's and the process layer's.

The dispatcher drains its cancelled subplans, and a command is started and stopped, whatever
cancellations arrive meanwhile; each of them is kept, to be raised once the cleanup is done.
Part of the engine: it imports nothing else of the package.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

__all__ = ["through_cancel"]


async def through_cancel(awaitable: Awaitable[object]) -> asyncio.CancelledError | None:
    """Await ``awaitable``; a cancellation is returned instead of raised, so cleanup goes on."""
    try:
        await awaitable
    except asyncio.CancelledError as cancel:
        return cancel
    return None
