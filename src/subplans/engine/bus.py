"""The bus that carries events to subscribers (views, logs, stores), in publish order."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from subplans.engine.events import Event, SubplanStateChanged
from subplans.engine.states import SubplanExecutionState

__all__ = ["EventBus", "RawMove", "Subscriber"]

logger = logging.getLogger("subplans")

_new = object.__new__

#: A subscriber is called synchronously with each event; it must be quick (queue slow work).
Subscriber = Callable[[Event], object]

#: A subplan's move as ``EventBus._subscribe_raw`` subscribers may get it: ``(time,
#: subplan_id, previous, state, attempt, error)``, the fields of ``SubplanStateChanged``.
RawMove = tuple[
    float, str, SubplanExecutionState | None, SubplanExecutionState, int, BaseException | None
]


class EventBus:
    """Fans events out to subscribers; a subscriber that raises is logged and skipped."""

    def __init__(self) -> None:
        # A tuple, replaced on (un)subscribe, so a subscriber may unsubscribe while being called.
        self._subscribers: tuple[Subscriber, ...] = ()
        #: The subscribers that take a dispatch's subplan moves as tuples (``_subscribe_raw``).
        self._raw: tuple[Subscriber, ...] = ()
        #: Whether every subscriber does: then a move is published as a tuple, no event built.
        self._all_raw = False
        self._interrupt_watchers: tuple[Callable[[KeyboardInterrupt], None], ...] = ()
        self._published = 0
        self._subscriber_errors = 0

    def __repr__(self) -> str:
        return (
            f"<EventBus {len(self._subscribers)} subscribers, {self._published} published, "
            f"{self._subscriber_errors} subscriber errors>"
        )

    @property
    def has_subscribers(self) -> bool:
        """True when publishing would reach someone."""
        return bool(self._subscribers)

    @property
    def published(self) -> int:
        """How many events were published."""
        return self._published

    @property
    def subscriber_errors(self) -> int:
        """How many times a subscriber raised."""
        return self._subscriber_errors

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call ``callback`` with every event from now on; returns a function that unsubscribes."""
        return self._add(callback, raw=False)

    def _subscribe_raw(self, callback: Callable[[Event | RawMove], object]) -> Callable[[], None]:
        """``subscribe()`` for the run store's recorder: while every subscriber was added so, a
        dispatch's subplan moves are published as ``RawMove`` tuples and no event object is
        built for them (issue #10: building three per subplan was most of what a subscriber
        that only queues them cost). Any other subscriber, and every other event, still gets
        (and is) an ``Event``: ``callback`` must take both."""
        return self._add(callback, raw=True)

    def _add(self, callback: Callable[[Any], object], *, raw: bool) -> Callable[[], None]:
        self._subscribers = (*self._subscribers, callback)
        if raw:
            self._raw = (*self._raw, callback)
        self._all_raw = len(self._raw) == len(self._subscribers)

        def unsubscribe() -> None:
            subscribers = list(self._subscribers)
            if callback in subscribers:
                subscribers.remove(callback)
                self._subscribers = tuple(subscribers)
                if raw:
                    takers = list(self._raw)
                    takers.remove(callback)
                    self._raw = tuple(takers)
                self._all_raw = bool(self._subscribers) and len(self._raw) == len(self._subscribers)

        return unsubscribe

    def watch_interrupts(self, callback: Callable[[KeyboardInterrupt], None]) -> Callable[[], None]:
        """Call ``callback`` when a subscriber raises ``KeyboardInterrupt`` (a dispatch stops on
        it); returns a function that stops watching."""
        self._interrupt_watchers = (*self._interrupt_watchers, callback)

        def unwatch() -> None:
            watchers = list(self._interrupt_watchers)
            if callback in watchers:
                watchers.remove(callback)
                self._interrupt_watchers = tuple(watchers)

        return unwatch

    def publish(self, event: Event) -> None:
        """Deliver ``event`` to every subscriber, in subscription order.

        Whatever a subscriber raises is logged and skipped, ``SystemExit`` and
        ``KeyboardInterrupt`` included: the others still get the event. A
        ``KeyboardInterrupt`` is then passed to the interrupt watchers.
        """
        self._published += 1
        for callback in self._subscribers:
            try:
                callback(event)
            except BaseException as error:
                self._raised(callback, error)

    def _publish_move(
        self,
        subplan_id: str,
        previous: SubplanExecutionState | None,
        state: SubplanExecutionState,
        attempt: int,
        error: BaseException | None,
        time: float,
    ) -> None:
        """``publish(state_changed(...))`` in one call (``engine/running.py`` writes it out where
        a dispatch's subplans start and end, the hot path: keep the two alike; there the event
        is the dispatch's spare one when no subscriber kept the one before)."""
        event: Any  # a RawMove, or a SubplanStateChanged
        if self._all_raw:
            event = (time, subplan_id, previous, state, attempt, error)
        else:
            event = _new(SubplanStateChanged)
            event.time = time
            event.subplan_id = subplan_id
            event.previous = previous
            event.state = state
            event.attempt = attempt
            event.error = error
        self._published += 1
        for callback in self._subscribers:
            try:
                callback(event)
            except BaseException as raised:
                self._raised(callback, raised)

    def _raised(self, callback: Subscriber, error: BaseException) -> None:
        self._subscriber_errors += 1
        logger.exception("event subscriber %r raised; ignoring it", callback)
        if isinstance(error, KeyboardInterrupt):
            for watcher in self._interrupt_watchers:
                watcher(error)
