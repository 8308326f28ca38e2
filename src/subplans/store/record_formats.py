"""How the store's records show what they hold: times as ISO 8601, ids as the first few and how
many more. Below ``records`` and ``run_details`` (both use them); importable from ``records``."""

from __future__ import annotations

from collections.abc import Sequence

from subplans.engine.clock import utc

__all__ = ["iso", "some"]


def some(ids: Sequence[str], shown: int = 5) -> str:
    """The first ``shown`` ids, and how many more."""
    more = f", and {len(ids) - shown} more" if len(ids) > shown else ""
    return ", ".join(ids[:shown]) + more


def iso(seconds: float | None) -> str | None:
    """Epoch seconds as ISO 8601 in UTC."""
    return None if seconds is None else utc(seconds).isoformat()
