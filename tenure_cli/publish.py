"""Publishing contract events to Kafka the way any outside publisher does."""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Any

from aiokafka import AIOKafkaProducer

from shared.events import EnvelopeBase, encode_event
from shared.keys import PiiSealer
from shared.settings import INPUT_TOPICS, PlatformSettings, topic_of

# Topics whose events may carry personal fields (sealed before they leave the publisher).
_PERSONAL_TOPICS = frozenset({INPUT_TOPICS["customers"], INPUT_TOPICS["feedback"]})


class EventPublisher:
    """An idempotent producer keyed by customer_id, with a bounded window of sends in flight.

    Personal fields are sealed with the customer's data key before they leave (crypto-
    shredding, docs/data-protection.md); `seal_pii=False` only for tests of raw input.
    """

    def __init__(
        self, settings: PlatformSettings, *, window: int = 5000, seal_pii: bool = True,
        **producer: Any,
    ):
        self.settings = settings
        self.window = window
        self.sealer = PiiSealer.connect(settings) if seal_pii else None
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
        if self.sealer is not None:
            await self.sealer.start()
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
            if self.sealer is not None:
                await self.sealer.close()

    async def send(self, event: EnvelopeBase) -> None:
        if self.sealer is not None:
            event = await self.sealer.seal(event)
        await self._send(topic_of(event.event_type), encode_event(event), event.customer_id)

    async def send_raw(self, topic: str, value: bytes, customer_id: str) -> None:
        """An encoded contract event (the importer's path); sealed like `send`."""
        if self.sealer is not None and topic in _PERSONAL_TOPICS:
            value = await self.sealer.seal_raw(value)
        await self._send(topic, value, customer_id)

    async def _send(self, topic: str, value: bytes, customer_id: str) -> None:
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
