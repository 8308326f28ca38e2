"""``Subplan``: one unit of work handed to the dispatcher, its options checked on creation."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from subplans.engine.config import check_retries, check_seconds, check_timeout
from subplans.engine.errors import ConfigError

__all__ = ["Subplan"]


@dataclass(frozen=True, slots=True)
class Subplan:
    """One unit of work: ``run()`` returns an awaitable; ``timeout`` is per attempt (seconds).

    A failed attempt is run again up to ``retries`` more times (never after cancellation),
    waiting ``retry_delay`` seconds, doubled after each retry, in between.
    """

    id: str
    run: Callable[[], Awaitable[Any]]
    timeout: float | None = field(default=None, kw_only=True)
    retries: int = field(default=0, kw_only=True)
    retry_delay: float = field(default=0.1, kw_only=True)
    #: Whether it takes a slot of a shared budget (a nested plan's subplan does not).
    uses_budget: bool = field(default=True, kw_only=True)

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise ConfigError(f"subplan id must be a non-empty string, got {self.id!r}")
        if not callable(self.run):
            if inspect.iscoroutine(self.run):
                self.run.close()  # spare the user a "never awaited" warning on top of this error
            raise ConfigError(
                f"subplan {self.id!r}: run must be a zero-argument callable returning an "
                f"awaitable, got {self.run!r}; HINT: pass the function itself, not its result"
            )
        # Fast path first: building error labels for 100,000 valid subplans would dominate.
        if self.timeout is not None:
            object.__setattr__(self, "timeout", check_timeout(self.timeout, f"{self.id}: timeout"))
        if self.retries != 0 or type(self.retries) is not int:
            check_retries(self.retries, f"{self.id}: retries")
        if self.retry_delay != 0.1 or type(self.retry_delay) is not float:
            check_seconds(f"{self.id}: retry_delay", self.retry_delay)
