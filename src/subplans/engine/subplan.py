"""``Subplan``: one unit of work handed to the dispatcher, its options checked on creation."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

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

    ``uses`` names the pools of the dispatcher it takes units of while it runs:
    ``{"api": 1, "gpu": 2}`` or ``["api"]`` (one unit each); kept as ``(name, units)`` pairs.
    It starts only when its slot and every unit it uses are free.
    """

    id: str
    run: Callable[[], Awaitable[Any]]
    timeout: float | None = field(default=None, kw_only=True)
    retries: int = field(default=0, kw_only=True)
    retry_delay: float = field(default=0.1, kw_only=True)
    #: Whether it takes a slot of a shared budget (a nested plan's subplan does not).
    uses_budget: bool = field(default=True, kw_only=True)
    #: The pool units it takes while it runs: ``(name, units)`` pairs, or None.
    uses: tuple[tuple[str, int], ...] | None = field(default=None, kw_only=True)

    # Written out: the generated one (six object.__setattr__ by name, then __post_init__) cost
    # a no-op subplan as much as the rest of its way through the dispatcher but its events.
    # And a ``__new__``, not an ``__init__``: the fields are set on a draft of the same layout
    # whose attributes may be set (a frozen class refuses, and its slots' own setters cost
    # 0.04 us each), which then becomes a Subplan (0.35 -> 0.28 us a subplan). The common
    # forms, ``Subplan(id, run)`` and a fan-out's ``Subplan(id, run, uses=...)``, are built
    # here, and any other option in ``_checked``: the defaults of five keyword-only options,
    # each looked up in a dict, and their checks cost the first a sixth. (Other options cost
    # 1.3 us more than they did, gathered in ``**options``: the executor's, beside a process.)
    if TYPE_CHECKING:

        def __new__(
            cls,
            id: str = _UNSET,  # (no arguments: copy and pickle, which set the fields after)
            run: Callable[[], Awaitable[Any]] = _UNSET,
            *,
            timeout: float | None = None,
            retries: int = _NO_RETRIES,
            retry_delay: float = _RETRY_DELAY,
            uses_budget: bool = True,
            uses: Mapping[str, int] | list[str] | tuple[Any, ...] | None = None,
        ) -> Subplan: ...

    else:

        def __new__(cls, id=_UNSET, run=_UNSET, *, uses=None, **options):
            if options or cls is not Subplan or type(id) is not str or not id or not callable(run):
                # By position: passed on by name (``**options``) they would cost more.
                pop = options.pop
                return _checked(
                    cls,
                    id,
                    run,
                    pop("timeout", None),
                    pop("retries", _NO_RETRIES),
                    pop("retry_delay", _RETRY_DELAY),
                    pop("uses_budget", True),
                    uses,
                    options,
                )
            if uses is not None:  # (a fan-out over a pool: built here too)
                # The same as the subplan before: its pairs (without a call).
                last = _LAST_USES
                uses = last[2] if uses is last[0] and uses == last[1] else _check_uses(id, uses)
            draft = _Draft()  # (cheaper than _new(_Draft): no argument tuple)
            draft.id = id
            draft.run = run
            draft.timeout = None
            draft.retries = _NO_RETRIES
            draft.retry_delay = _RETRY_DELAY
            draft.uses_budget = True
            draft.uses = uses
            draft.__class__ = Subplan
            return draft


def _checked(
    cls: type[Subplan],
    id: str = _UNSET,
    run: Callable[[], Awaitable[Any]] = _UNSET,
    timeout: float | None = None,
    retries: int = _NO_RETRIES,
    retry_delay: float = _RETRY_DELAY,
    uses_budget: bool = True,
    uses: Mapping[str, int] | list[str] | tuple[Any, ...] | None = None,
    unknown: Mapping[str, object] | None = None,
) -> Subplan:
    """``Subplan.__new__`` with options, a subclass, or arguments to check (or none);
    ``unknown``: the options it does not take."""
    if unknown:
        name = next(iter(unknown))
        raise TypeError(f"Subplan.__new__() got an unexpected keyword argument {name!r}")
    if id is _UNSET and run is _UNSET:
        return _new(cls)
    if (type(id) is not str and not isinstance(id, str)) or not id:  # (type(): cheaper)
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
    if uses is not None:
        # The same as the subplan before: its pairs (without a call).
        last = _LAST_USES
        uses = last[2] if uses is last[0] and uses == last[1] else _check_uses(id, uses)
    if cls is not Subplan:  # a subclass: its layout may differ from the draft's
        made = _new(cls)
        values = (id, run, timeout, retries, retry_delay, uses_budget, uses)
        for name, value in zip(_FIELDS, values, strict=True):
            _SETTERS[name](made, value)
        return made
    draft = _Draft()  # (cheaper than _new(_Draft): no argument tuple)
    draft.id = id
    draft.run = run
    draft.timeout = timeout
    draft.retries = retries
    draft.retry_delay = retry_delay
    draft.uses_budget = uses_budget
    draft.uses = uses
    draft.__class__ = Subplan  # type: ignore[assignment]
    return draft  # type: ignore[return-value]


# ``inspect.signature(Subplan)`` shows the options as they are taken: by name only.
Subplan.__new__.__signature__ = inspect.signature(_checked).replace(  # type: ignore[attr-defined]
    parameters=[
        p if p.name in ("cls", "id", "run") else p.replace(kind=p.KEYWORD_ONLY)
        for p in inspect.signature(_checked).parameters.values()
        if p.name != "unknown"
    ]
)


class _Draft:
    """A Subplan under construction: the same slots, settable."""

    __slots__ = ("id", "retries", "retry_delay", "run", "timeout", "uses", "uses_budget")
    id: str
    run: Callable[[], Awaitable[Any]]
    timeout: float | None
    retries: int
    retry_delay: float
    uses_budget: bool
    uses: tuple[tuple[str, int], ...] | None


_new = object.__new__
_FIELDS = ("id", "run", "timeout", "retries", "retry_delay", "uses_budget", "uses")
#: The slots' own setters: how a frozen dataclass sets its fields (object.__setattr__).
_SETTERS = {name: Subplan.__dict__[name].__set__ for name in _FIELDS}


#: ``uses`` seen valid (as a tuple of a dict's items, or of a list's names), each to its pairs:
#: a fan-out passes the same few, and checking each anew cost a no-op subplan 2 us.
_VALID_USES: dict[tuple[Any, ...], tuple[tuple[str, int], ...] | None] = {}
#: The last of them: the object, a copy (to see it was not changed since), its pairs.
_LAST_USES: list[Any] = [None, None, None]


def _check_uses(subplan_id: str, uses: object) -> tuple[tuple[str, int], ...] | None:
    """``uses`` as ``(name, units)`` pairs: a mapping of names to units, or a list of names
    (the same dict or list as the subplan before, ``_LAST_USES[0]``, its callers take as it is)."""
    kind = type(uses)
    pairs: tuple[tuple[str, int], ...] | None
    if kind is dict or kind is list:
        items = cast("dict[Any, Any]", uses).items() if kind is dict else cast("list[Any]", uses)
        key = (kind, *items)
        try:
            pairs = _VALID_USES[key]
        except KeyError:
            pass
        except TypeError:  # an unhashable name: the checks below say what is wrong
            key = ()
        else:
            # (True and 1.0 hash and compare as 1 does: the checks below refuse them.)
            if kind is not dict or all(type(units) is int for _, units in items):
                _LAST_USES[:] = [uses, cast("Any", uses).copy(), pairs]
                return pairs
        pairs = _check_uses_anew(subplan_id, uses)
        if key and len(_VALID_USES) < 1024:
            _VALID_USES[key] = pairs
        _LAST_USES[:] = [uses, cast("Any", uses).copy(), pairs]
        return pairs
    return _check_uses_anew(subplan_id, uses)


def _check_uses_anew(subplan_id: str, uses: object) -> tuple[tuple[str, int], ...] | None:
    if isinstance(uses, Mapping):
        pairs = list(uses.items())
    elif isinstance(uses, list | tuple):
        pairs = [item if isinstance(item, tuple) else (item, 1) for item in uses]
    else:
        raise ConfigError(
            f"subplan {subplan_id!r}: uses must be a mapping of pool names to units or a list "
            f"of pool names, got {uses!r}"
        )
    for pair in pairs:
        name, units = pair if len(pair) == 2 else (pair, None)
        if not isinstance(name, str) or not name:
            raise ConfigError(
                f"subplan {subplan_id!r}: uses must name pools by non-empty strings, got {name!r}"
            )
        if type(units) is not int or units < 1:
            raise ConfigError(
                f"subplan {subplan_id!r}: uses {name!r} must be an integer >= 1, got {units!r}"
            )
    names = [name for name, _ in pairs]
    if len(set(names)) < len(names):
        twice = next(name for name in names if names.count(name) > 1)
        raise ConfigError(
            f"subplan {subplan_id!r}: uses lists pool {twice!r} twice; write "
            f"{{{twice!r}: 2}} for two units"
        )
    return tuple(pairs) or None
