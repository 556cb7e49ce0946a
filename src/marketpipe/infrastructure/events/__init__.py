"""Event publishing."""

from marketpipe.infrastructure.events.publishers import InMemoryEventPublisher

__all__ = ["InMemoryEventPublisher"]
