"""Publishing contract events to Kafka the way any outside publisher does."""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Any

from aiokafka import AIOKafkaProducer

from shared.events import EnvelopeBase, encode_event
from shared.settings import PlatformSettings, topic_of


class EventPublisher:
    """An idempotent producer keyed by customer_id, with a bounded window of sends in flight."""

    def __init__(self, settings: PlatformSettings, *, window: int = 5000, **producer: Any):
        self.settings = settings
        self.window = window
        self.producer = AIOKafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap,
            enable_idempotence=True,
            acks="all",
            linger_ms=20,
            max_batch_size=256 * 1024,
            max_request_size=5 * 1024 * 1024,
            client_id="tenure-publisher",
            **producer,
        )
        self._in_flight: list[asyncio.Future[Any]] = []
        self.sent = 0

    async def __aenter__(self) -> EventPublisher:
        await self.producer.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if et is None:
                await self.flush()
        finally:
            await self.producer.stop()

    async def send(self, event: EnvelopeBase) -> None:
        await self.send_raw(topic_of(event.event_type), encode_event(event), event.customer_id)

    async def send_raw(self, topic: str, value: bytes, customer_id: str) -> None:
        future = await self.producer.send(
            self.settings.topic(topic), value=value, key=customer_id.encode()
        )
        self._in_flight.append(future)
        self.sent += 1
        if len(self._in_flight) >= self.window:
            await self.flush()

    async def flush(self) -> None:
        if self._in_flight:
            pending, self._in_flight = self._in_flight, []
            await asyncio.gather(*pending)
