"""The dead-letter topic as operators use it: read the latest messages (no consumer group, so
reading moves no offsets), and re-publish one to the topic it came from, bytes unchanged."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from services.console.settings import ConsoleSettings
from shared.settings import DLQ_TOPIC, INPUT_TOPICS, OUTPUT_TOPICS

log = logging.getLogger("tenure.console.dlq")
# Partners publish on topics under this root (docs/partners.md); ingress dead-letters them.
PARTNER_TOPIC_ROOT = "tenure.partner."
# The header `tenure dlq replay` writes too: a copy names the dead letter it came from.
REPLAY_HEADER = "dlq.replay_of"


class BrokerUnavailable(RuntimeError):
    """Kafka could not be reached or did not answer in time; the message says which."""


@dataclass(frozen=True)
class DlqRecord:
    partition: int
    offset: int
    timestamp_ms: int | None
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]


@dataclass(frozen=True)
class Republished:
    topic: str
    partition: int
    offset: int


class DeadLetters:
    """Reads and re-publishes dead letters on the platform's `tenure.dlq.v1` (prefixed)."""

    def __init__(self, settings: ConsoleSettings):
        self.settings = settings
        self.topic = settings.dlq_topic
        self.timeout = settings.kafka_timeout_seconds

    def allowed_topics(self) -> set[str]:
        """Where a dead letter may go back to: the platform's own topics, never the DLQ."""
        names = [*INPUT_TOPICS.values(), *OUTPUT_TOPICS.values()]
        return {self.settings.topic(n) for n in names if n != DLQ_TOPIC}

    def allowed_prefixes(self) -> tuple[str, ...]:
        """Partners' own topics (`tenure.partner.<id>.<stream>.v1`, read by ingress)."""
        return (self.settings.topic(PARTNER_TOPIC_ROOT),)

    def _consumer(self) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            bootstrap_servers=self.settings.kafka_bootstrap, group_id=None,
            enable_auto_commit=False, client_id="tenure-console",
            request_timeout_ms=int(self.timeout * 1000),
            max_partition_fetch_bytes=5 * 1024 * 1024,
        )

    async def _start(self, client: AIOKafkaConsumer | AIOKafkaProducer) -> None:
        try:
            await asyncio.wait_for(client.start(), self.timeout)
        except (KafkaError, OSError, TimeoutError) as exc:
            raise BrokerUnavailable(
                f"Kafka at {self.settings.kafka_bootstrap} is unreachable "
                f"({type(exc).__name__})") from None

    def _partitions(self) -> list[TopicPartition]:
        """Every platform topic has `partitions` partitions (`tenure topics ensure` checks)."""
        return [TopicPartition(self.topic, p) for p in range(self.settings.partitions)]

    async def _bounds(
        self, consumer: AIOKafkaConsumer, parts: list[TopicPartition]
    ) -> tuple[dict[TopicPartition, int], dict[TopicPartition, int]]:
        """First and next offsets; a topic that does not exist makes Kafka wait, so bounded."""
        try:
            return await asyncio.wait_for(self._offsets(consumer, parts), self.timeout)
        except TimeoutError:
            raise BrokerUnavailable(f"Kafka did not say where {self.topic} starts and ends "
                                    f"within {self.timeout:g} s: does the topic exist?") from None

    @staticmethod
    async def _offsets(
        consumer: AIOKafkaConsumer, parts: list[TopicPartition]
    ) -> tuple[dict[TopicPartition, int], dict[TopicPartition, int]]:
        return await consumer.beginning_offsets(parts), await consumer.end_offsets(parts)

    async def latest(self, limit: int) -> list[DlqRecord]:
        """The newest `limit` dead letters across partitions, newest first."""
        consumer = self._consumer()
        await self._start(consumer)
        try:
            parts = self._partitions()
            consumer.assign(parts)
            begins, ends = await self._bounds(consumer, parts)
            for tp in parts:
                consumer.seek(tp, max(begins[tp], ends[tp] - limit))
            records: list[DlqRecord] = []
            deadline = time.monotonic() + self.timeout
            pending = {tp for tp in parts if ends[tp] > max(begins[tp], ends[tp] - limit)}
            while pending and time.monotonic() < deadline:
                batch = await consumer.getmany(*pending, timeout_ms=200)
                for tp, messages in batch.items():
                    records.extend(_record(tp.partition, m) for m in messages
                                   if m.offset < ends[tp])
                for tp in list(pending):
                    if await consumer.position(tp) >= ends[tp]:
                        pending.discard(tp)
            if pending:
                raise BrokerUnavailable(
                    f"reading {self.topic} did not finish within {self.timeout:g} s")
        except KafkaError as exc:
            raise BrokerUnavailable(f"reading {self.topic} failed ({type(exc).__name__})") \
                from None
        finally:
            await consumer.stop()
        records.sort(key=lambda r: (r.timestamp_ms or 0, r.partition, r.offset), reverse=True)
        return records[:limit]

    async def one(self, partition: int, offset: int) -> DlqRecord | None:
        """The dead letter at that position, or None when there is none (any more)."""
        consumer = self._consumer()
        await self._start(consumer)
        try:
            tp = TopicPartition(self.topic, partition)
            if tp not in self._partitions():
                return None
            consumer.assign([tp])
            begins, ends = await self._bounds(consumer, [tp])
            if not begins[tp] <= offset < ends[tp]:
                return None
            consumer.seek(tp, offset)
            deadline = time.monotonic() + self.timeout
            while time.monotonic() < deadline:
                batch = await consumer.getmany(tp, timeout_ms=200, max_records=1)
                for message in batch.get(tp, []):
                    return _record(partition, message) if message.offset == offset else None
            raise BrokerUnavailable(f"reading {self.topic} did not finish within "
                                    f"{self.timeout:g} s")
        except KafkaError as exc:
            raise BrokerUnavailable(f"reading {self.topic} failed ({type(exc).__name__})") \
                from None
        finally:
            await consumer.stop()

    async def republish(self, record: DlqRecord, topic: str, *, by: str) -> Republished:
        """Send the original key and bytes to `topic`; headers say where the copy came from.

        The event keeps its event_id, so a service that had processed it drops the copy.
        """
        producer = AIOKafkaProducer(
            bootstrap_servers=self.settings.kafka_bootstrap, enable_idempotence=True,
            acks="all", client_id="tenure-console", max_request_size=5 * 1024 * 1024,
            request_timeout_ms=int(self.timeout * 1000),
        )
        await self._start(producer)
        try:
            sent = await asyncio.wait_for(producer.send_and_wait(
                topic, record.value, key=record.key,
                headers=[(REPLAY_HEADER,
                          f"{self.topic}:{record.partition}:{record.offset}".encode()),
                         ("dlq.replayed_by", by[:200].encode())],
            ), self.timeout)
        except (KafkaError, TimeoutError) as exc:
            raise BrokerUnavailable(f"publishing to {topic} failed ({type(exc).__name__})") \
                from None
        finally:
            await producer.stop()
        log.info("dead letter re-published", extra={
            "topic": topic, "partition": sent.partition, "offset": sent.offset,
            "reason": f"from {self.topic}[{record.partition}]@{record.offset}"})
        return Republished(topic, sent.partition, sent.offset)


def _record(partition: int, message: object) -> DlqRecord:
    return DlqRecord(
        partition=partition,
        offset=message.offset,  # type: ignore[attr-defined]
        timestamp_ms=message.timestamp,  # type: ignore[attr-defined]
        key=message.key,  # type: ignore[attr-defined]
        value=message.value,  # type: ignore[attr-defined]
        headers=list(message.headers or []),  # type: ignore[attr-defined]
    )
