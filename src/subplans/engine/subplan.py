"""``Subplan``: one unit of work handed to the dispatcher, its options checked on creation."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from subplans.engine.config import check_retries, check_seconds, check_timeout
from subplans.engine.errors import ConfigError

__all__ = ["Subplan"]

_NO_RETRIES = 0
_RETRY_DELAY = 0.1
_UNSET: Any = object()


@dataclass(frozen=True, slots=True, init=False)
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

    # Written out: the generated one (six object.__setattr__ by name, then __post_init__) cost
    # a no-op subplan as much as the rest of its way through the dispatcher but its events.
    # And a ``__new__``, not an ``__init__``: the fields are set on a draft of the same layout
    # whose attributes may be set (a frozen class refuses, and its slots' own setters cost
    # 0.04 us each), which then becomes a Subplan (0.35 -> 0.28 us a subplan).
    def __new__(
        cls,
        id: str = _UNSET,  # (no arguments: copy and pickle, which set the fields after)
        run: Callable[[], Awaitable[Any]] = _UNSET,
        *,
        timeout: float | None = None,
        retries: int = _NO_RETRIES,
        retry_delay: float = _RETRY_DELAY,
        uses_budget: bool = True,
    ) -> Subplan:
        if id is _UNSET and run is _UNSET:
            return _new(cls)
        if not isinstance(id, str) or not id:
            raise ConfigError(f"subplan id must be a non-empty string, got {id!r}")
        if not callable(run):
            if inspect.iscoroutine(run):
                run.close()  # spare the user a "never awaited" warning on top of this error
            raise ConfigError(
                f"subplan {id!r}: run must be a zero-argument callable returning an "
                f"awaitable, got {run!r}; HINT: pass the function itself, not its result"
            )
        # Fast path first: building error labels for 100,000 valid subplans would dominate.
        if timeout is not None:
            timeout = check_timeout(timeout, f"{id}: timeout")
        # The defaults themselves (the same objects) need no check.
        if retries is not _NO_RETRIES:
            check_retries(retries, f"{id}: retries")
        if retry_delay is not _RETRY_DELAY:
            check_seconds(f"{id}: retry_delay", retry_delay)
        if cls is not Subplan:  # a subclass: its layout may differ from the draft's
            made = _new(cls)
            values = (id, run, timeout, retries, retry_delay, uses_budget)
            for name, value in zip(_FIELDS, values, strict=True):
                _SETTERS[name](made, value)
            return made
        draft = _new(_Draft)
        draft.id = id
        draft.run = run
        draft.timeout = timeout
        draft.retries = retries
        draft.retry_delay = retry_delay
        draft.uses_budget = uses_budget
        draft.__class__ = Subplan  # type: ignore[assignment]
        return draft  # type: ignore[return-value]


class _Draft:
    """A Subplan under construction: the same slots, settable."""

    __slots__ = ("id", "retries", "retry_delay", "run", "timeout", "uses_budget")
    id: str
    run: Callable[[], Awaitable[Any]]
    timeout: float | None
    retries: int
    retry_delay: float
    uses_budget: bool


_new = object.__new__
_FIELDS = ("id", "run", "timeout", "retries", "retry_delay", "uses_budget")
#: The slots' own setters: how a frozen dataclass sets its fields (object.__setattr__).
_SETTERS = {name: Subplan.__dict__[name].__set__ for name in _FIELDS}
