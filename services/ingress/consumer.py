"""Reads every partner's topics (one pattern subscription) and routes each event; reads the
bank's erasures too.

The shared consumer kit does the loop (batches, one transaction each, inbox, outbox, DLQ,
offsets after commit). This subclass adds what is particular to partner lanes: a pattern
subscription, so a partner added while the service runs is read without a restart, and the
routing decision of domain.route, made with the batch's shared-customer mappings loaded in
one query before the batch is applied.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor

from services.ingress import store
from services.ingress.domain import Forward, lane_of, route, topic_pattern
from services.ingress.settings import IngressSettings
from shared.kit import EventConsumer, RawRecord, classify
from shared.settings import INPUT_TOPICS


class _PatternConsumer(AIOKafkaConsumer):  # type: ignore[misc]
    """Subscribes by pattern whatever topic list the kit passes."""

    def __init__(self, *args: Any, pattern: str, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._tenure_pattern = pattern

    def subscribe(self, topics: Any = (), pattern: Any = None, listener: Any = None) -> None:
        super().subscribe(pattern=self._tenure_pattern, listener=listener)


class PartnerConsumer(EventConsumer):
    settings: IngressSettings

    def __init__(self, **kwargs: Any):
        super().__init__(topics=[], **kwargs)
        # Every partner's topics, and the bank's customers topic for its erasures.
        self.erasures_topic = self.settings.topic(INPUT_TOPICS["customers"])
        self.pattern = (f"(?:{topic_pattern(self.settings.topic_prefix)})"
                        f"|(?:^{re.escape(self.erasures_topic)}$)")
        self._mapped: dict[tuple[str, str], str] = {}

    def _make_consumer(self) -> AIOKafkaConsumer:
        # The kit's consumer configuration, plus the pattern and a short metadata refresh.
        # Partner topics are not co-partitioned by the bank's customer, so aiokafka's default
        # assignment serves (the kit's range assignment is for co-partitioned topics).
        return _PatternConsumer(**{
            **self._consumer_options(),
            "metadata_max_age_ms": self.settings.topic_refresh_ms,
            "pattern": self.pattern,
            "partition_assignment_strategy": (RoundRobinPartitionAssignor,),
        })

    async def _process(self, batch: dict[Any, list[Any]]) -> None:
        # Load the mappings the batch needs (one query) before the kit parses it; a database
        # outage here ends the loop iteration and the kit's run loop retries from the
        # committed offsets, so nothing is lost.
        pairs = []
        for tp, messages in batch.items():
            lane = lane_of(tp.topic, self.settings.topic_prefix)
            if lane is None:
                continue
            for m in messages:
                customer_id = _peek_customer_id(m.value)
                if customer_id is not None:
                    pairs.append((lane[0], customer_id))
        async with self.engine.connect() as conn:
            self._mapped = await store.lookup(conn, pairs)
        await super()._process(batch)

    def _parse(self, records: list[RawRecord]) -> tuple[list[Any], list[tuple[RawRecord, str]]]:
        parsed, rejected = classify(records, self.settings)
        admitted = []
        for item in parsed:
            if item.record.topic == self.erasures_topic:
                # Only the bank's erasures matter here (the kit erases the customer's mappings
                # and remembers the id); the topic's other events are other services' business,
                # skipped without an inbox row.
                if item.event.event_type == "customer.erased":
                    admitted.append(item)
                continue
            lane = lane_of(item.record.topic, self.settings.topic_prefix)
            if lane is None:
                rejected.append((item.record, "topic: not a partner topic"))
                continue
            partner_id, stream = lane
            bank_id = self._mapped.get((partner_id, item.event.customer_id))
            decision = route(item.event, partner_id, stream, bank_id)
            if isinstance(decision, Forward):
                admitted.append(dataclasses.replace(item, event=decision.event))
            else:
                rejected.append((item.record, decision.reason))
        return admitted, rejected


def _peek_customer_id(value: bytes | None) -> str | None:
    """The envelope's customer id, if the message has one (full validation comes after)."""
    try:
        document = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        return None
    customer_id = document.get("customer_id") if isinstance(document, dict) else None
    return customer_id if isinstance(customer_id, str) else None
