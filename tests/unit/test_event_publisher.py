import logging

import pytest

from marketpipe.domain import (
    BarCollectionCompleted,
    IngestionCompleted,
    IngestionFailed,
    IngestionStarted,
    ValidationFailed,
)
from marketpipe.infrastructure.events import InMemoryEventPublisher


async def test_sync_and_async_handlers_receive_events_in_registration_order():
    publisher = InMemoryEventPublisher()
    seen = []

    async def async_handler(event):
        seen.append(("async", event.job_id))

    publisher.register_handler("ingestion_completed", lambda e: seen.append(("sync", e.job_id)))
    publisher.register_handler(IngestionCompleted, async_handler)
    await publisher.publish(IngestionCompleted(job_id="j1", bars_processed=10))
    await publisher.publish(IngestionStarted(job_id="j2"))
    assert seen == [("sync", "j1"), ("async", "j1")]
    assert [e.event_type for e in publisher.published_events] == ["ingestion_completed", "ingestion_started"]


async def test_a_failing_handler_is_logged_and_does_not_stop_the_others(caplog):
    publisher = InMemoryEventPublisher()
    seen = []

    def broken(event):
        raise RuntimeError("boom")

    async def broken_async(event):
        raise ValueError("async boom")

    publisher.register_handler("ingestion_failed", broken)
    publisher.register_handler("ingestion_failed", broken_async)
    publisher.register_handler("ingestion_failed", seen.append)
    event = IngestionFailed(job_id="j", error_message="x")
    with caplog.at_level(logging.ERROR):
        await publisher.publish(event)
    assert seen == [event]
    assert "boom" in caplog.text and "async boom" in caplog.text
    assert caplog.records[0].name == "marketpipe.infrastructure.events.publishers"


async def test_publish_many_keeps_order_and_wildcard_sees_everything():
    publisher = InMemoryEventPublisher()
    seen = []
    publisher.register_handler("*", lambda e: seen.append(e.event_type))
    await publisher.publish_many(
        [
            IngestionStarted(job_id="a"),
            ValidationFailed(symbol="X", rule="r", message="m"),
            IngestionCompleted(job_id="a"),
        ]
    )
    assert seen == ["ingestion_started", "validation_failed", "ingestion_completed"]


async def test_unregister_and_bad_registrations():
    publisher = InMemoryEventPublisher()
    seen = []
    publisher.register_handler("ingestion_started", seen.append)
    assert publisher.unregister_handler("ingestion_started", seen.append)
    await publisher.publish(IngestionStarted(job_id="a"))
    assert seen == []
    with pytest.raises(TypeError):
        publisher.register_handler("", print)
    with pytest.raises(TypeError):
        publisher.register_handler("x", "not callable")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        await publisher.publish({"event_type": "x"})  # type: ignore[arg-type]


def test_events_have_ids_timestamps_and_serialise():
    from datetime import date

    event = BarCollectionCompleted(symbol="AAPL", trading_date=date(2024, 1, 1), bar_count=390)
    data = event.to_dict()
    assert data["event_type"] == "bar_collection_completed"
    assert data["trading_date"] == "2024-01-01"
    assert data["occurred_at"].endswith("+00:00")
    assert len(data["event_id"]) == 32
    assert IngestionStarted(job_id="a").event_id != IngestionStarted(job_id="a").event_id


def test_history_is_bounded():
    publisher = InMemoryEventPublisher(history_size=2)
    import asyncio

    asyncio.run(publisher.publish_many([IngestionStarted(job_id=str(i)) for i in range(5)]))
    assert [e.job_id for e in publisher.published_events] == ["3", "4"]
