"""InMemoryEventPublisher: delivers domain events to handlers in this process."""

from __future__ import annotations

import inspect
import logging
from collections import defaultdict, deque

from marketpipe.domain.events import DomainEvent
from marketpipe.domain.repositories import EventHandler, IEventPublisher

log = logging.getLogger(__name__)

ALL_EVENTS = "*"


class InMemoryEventPublisher(IEventPublisher):
    """Calls the handlers registered for an event's ``event_type`` (and those registered for ``"*"``).

    Handlers may be plain functions or coroutine functions; they run in registration order. A handler that
    raises is logged with its traceback and never stops the other handlers or the publisher. The last
    ``history_size`` events are kept in :attr:`published_events` for inspection.

    Examples:
        >>> publisher = InMemoryEventPublisher()
        >>> publisher.register_handler("ingestion_completed", print)
        >>> await publisher.publish(IngestionCompleted(job_id="j1"))  # doctest: +SKIP
    """

    def __init__(self, history_size: int = 10_000) -> None:
        self._handlers: dict[str, list[EventHandler]] = defaultdict(list)
        self._events: deque[DomainEvent] = deque(maxlen=history_size)

    def register_handler(self, event_type: str | type[DomainEvent], handler: EventHandler) -> None:
        if not callable(handler):
            raise TypeError(f"handler must be callable, got {handler!r}")
        self._handlers[_type_name(event_type)].append(handler)

    def unregister_handler(self, event_type: str | type[DomainEvent], handler: EventHandler) -> bool:
        """Remove a handler; True if it was registered."""
        handlers = self._handlers.get(_type_name(event_type), [])
        if handler in handlers:
            handlers.remove(handler)
            return True
        return False

    async def publish(self, event: DomainEvent) -> None:
        if not isinstance(event, DomainEvent):
            raise TypeError(f"Only DomainEvent instances can be published, got {type(event).__name__}")
        self._events.append(event)
        for handler in [*self._handlers.get(event.event_type, ()), *self._handlers.get(ALL_EVENTS, ())]:
            try:
                result = handler(event)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("Event handler %r failed for %s event %s", handler, event.event_type, event.event_id)

    @property
    def published_events(self) -> list[DomainEvent]:
        return list(self._events)

    def clear(self) -> None:
        self._events.clear()


def _type_name(event_type: str | type[DomainEvent]) -> str:
    if isinstance(event_type, type) and issubclass(event_type, DomainEvent):
        return event_type.event_type
    if isinstance(event_type, str) and event_type:
        return event_type
    raise TypeError(f"event_type must be a non-empty string or a DomainEvent class, got {event_type!r}")
