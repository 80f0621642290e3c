"""Consumer kit: batches from Kafka, one transaction each, inbox, outbox, watermarks, DLQ."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, Protocol, TypeVar

import orjson
import sqlalchemy as sa
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.errors import CommitFailedError, KafkaError
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from shared.db import database_alive, is_transient
from shared.events import EnvelopeBase, InvalidEvent, encode_event, parse_event
from shared.logs import customer_ref
from shared.metrics import KitMetrics
from shared.settings import ServiceSettings

log = logging.getLogger("tenure.kit")

_meta = sa.MetaData()
inbox = sa.Table("inbox", _meta, sa.Column("event_id", sa.Uuid, primary_key=True))
outbox = sa.Table(
    "outbox",
    _meta,
    sa.Column("id", sa.BigInteger, primary_key=True),
    sa.Column("topic", sa.Text),
    sa.Column("key", sa.LargeBinary),
    sa.Column("value", sa.LargeBinary),
    sa.Column("headers", sa.JSON),
    sa.Column("event_id", sa.Uuid),
)
watermarks = sa.Table(
    "watermarks",
    _meta,
    sa.Column("topic", sa.Text, primary_key=True),
    sa.Column("partition", sa.Integer, primary_key=True),
    sa.Column("max_event_time", sa.DateTime(timezone=True)),
    sa.Column("updated_at", sa.DateTime(timezone=True)),
)
erased_customers = sa.Table(
    "erased_customers", _meta, sa.Column("customer_id", sa.Text, primary_key=True)
)

StoreT = TypeVar("StoreT")

_CLAIM_MANY = sa.text(
    "INSERT INTO inbox (event_id) SELECT unnest(CAST(:ids AS uuid[])) "
    "ON CONFLICT DO NOTHING RETURNING event_id"
).columns(event_id=sa.Uuid)


class UnitOfWork(Generic[StoreT]):
    """One database transaction: the service's store, plus the outbox to emit events through.

    Everything written through a unit of work commits together with the record of the
    consumed event ids (inbox) and the watermarks, or not at all.
    """

    def __init__(self, conn: AsyncConnection, store: StoreT, settings: ServiceSettings):
        self.conn = conn
        self.store = store
        self.settings = settings
        self.emitted: list[EnvelopeBase] = []
        self._outbox_rows: list[dict[str, Any]] = []

    async def emit(self, event: EnvelopeBase, topic: str) -> None:
        """Queue an output event for the outbox; `flush` writes it in this transaction and
        the relay publishes it after commit."""
        self._outbox_rows.append(
            {
                "topic": self.settings.topic(topic),
                "key": event.customer_id.encode(),
                "value": encode_event(event),
                "headers": [["event_type", event.event_type]],
                "event_id": event.event_id,
            }
        )
        self.emitted.append(event)

    async def dead_letter(self, record: RawRecord, reason: str) -> None:
        self._outbox_rows.append(dlq_row(self.settings, record, reason))

    def discard(self) -> None:
        """Forget what a failed event folded but did not write (its savepoint rolled back)."""
        discard_store = getattr(self.store, "discard", None)
        if discard_store is not None:
            discard_store()
        self._outbox_rows.clear()
        self.emitted.clear()

    async def flush(self) -> None:
        """Write what the handlers folded (set-based, if the store batches) and the outbox."""
        flush_store = getattr(self.store, "flush", None)
        if flush_store is not None:
            await flush_store()
        if self._outbox_rows:
            rows, self._outbox_rows = self._outbox_rows, []
            await self.conn.execute(outbox.insert(), rows)


Handler = Callable[..., Awaitable[None]]


class BatchHook(Protocol):
    async def __call__(self, uow: UnitOfWork[Any]) -> None: ...


@dataclass(frozen=True)
class RawRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    timestamp_ms: int | None = None


def dlq_row(settings: ServiceSettings, record: RawRecord, reason: str) -> dict[str, Any]:
    """The original bytes, untouched, with where they came from and why they were refused."""
    headers = [
        ["dlq.topic", record.topic],
        ["dlq.partition", str(record.partition)],
        ["dlq.offset", str(record.offset)],
        ["dlq.service", settings.service_name],
        ["dlq.reason", reason[:1000]],
        ["dlq.failed_at", datetime.now(UTC).isoformat()],
    ]
    return {
        "topic": settings.dlq_topic,
        "key": record.key,
        "value": record.value,
        "headers": headers,
        "event_id": None,
    }


@dataclass
class _Parsed:
    record: RawRecord
    event: EnvelopeBase


def partition_of(customer_id: str, partitions: int) -> int:
    """The partition Kafka's default partitioner gives a customer's key (murmur2)."""
    from aiokafka.partitioner import murmur2

    return (murmur2(customer_id.encode()) & 0x7FFFFFFF) % partitions


def classify(
    records: list[RawRecord], settings: ServiceSettings
) -> tuple[list[_Parsed], list[tuple[RawRecord, str]]]:
    """Split consumed records into valid events and rejects with their reasons (no I/O)."""
    parsed: list[_Parsed] = []
    rejected: list[tuple[RawRecord, str]] = []
    limit = settings.max_message_bytes
    for r in records:
        if len(r.value) > limit:
            rejected.append((r, f"message of {len(r.value)} bytes exceeds the limit of {limit}"))
            continue
        try:
            event = parse_event(r.value)
        except InvalidEvent as exc:
            rejected.append((r, str(exc)))
            continue
        if not settings.source_allowed(event.source):
            rejected.append((r, f"source: {event.source!r} is not a registered publisher"))
            continue
        if r.key is not None and r.key != event.customer_id.encode():
            rejected.append((r, "key: message key is not the envelope's customer_id"))
            continue
        parsed.append(_Parsed(r, event))
    return parsed, rejected


@dataclass
class _Watermarks:
    """Per-partition event-time watermarks: highest event time seen minus allowed lateness."""

    lateness: timedelta
    max_seen: dict[tuple[str, int], datetime] = field(default_factory=dict)
    dirty: set[tuple[str, int]] = field(default_factory=set)
    # Wall-clock (monotonic) time a partition last saw an event: tells active from idle.
    last_event_wall: dict[tuple[str, int], float] = field(default_factory=dict)

    def advance(
        self, topic: str, partition: int, event_time: datetime, wall: float | None = None
    ) -> datetime:
        key = (topic, partition)
        self.last_event_wall[key] = time.monotonic() if wall is None else wall
        current = self.max_seen.get(key)
        if current is None or event_time > current:
            self.max_seen[key] = event_time
            self.dirty.add(key)
            current = event_time
        return current - self.lateness

    def partition_now(self, partition: int) -> datetime | None:
        """The watermark of a partition index across the topics read (one customer's events
        share a partition index on every topic)."""
        seen = [t for (_, p), t in self.max_seen.items() if p == partition]
        return max(seen) - self.lateness if seen else None

    def clock(
        self, topic: str, partition: int, *, idle_after: float, wall: float | None = None
    ) -> datetime | None:
        """The event time a partition's time-driven rules judge against.

        An idle partition (no events for `idle_after` seconds of wall time) follows the
        slowest active partition of the topic, so silence on a quiet partition still ages
        its customers; an active one keeps its own watermark.
        """
        wall = time.monotonic() if wall is None else wall
        own = self.now(topic, partition)
        key = (topic, partition)
        if wall - self.last_event_wall.get(key, float("-inf")) < idle_after:
            return own
        active = [
            seen - self.lateness
            for k, seen in self.max_seen.items()
            if k[0] == topic and k != key
            and wall - self.last_event_wall.get(k, float("-inf")) < idle_after
        ]
        if not active:
            return own
        slowest = min(active)
        return slowest if own is None or slowest > own else own

    def now(self, topic: str, partition: int) -> datetime | None:
        seen = self.max_seen.get((topic, partition))
        return None if seen is None else seen - self.lateness


class EventConsumer:
    """Reads topics as one consumer-group member and applies events through handlers.

    Per `getmany` batch: parse and validate every message (bad ones go to the DLQ through the
    outbox), then one transaction that records event ids in the inbox, runs the handlers,
    advances watermarks and writes outputs; offsets are committed only after it. If a handler
    raises, the batch is replayed event by event under savepoints and only the offender is
    dead-lettered. If the database or broker is the problem, the batch is retried, not
    dead-lettered.
    """

    def __init__(
        self,
        *,
        settings: ServiceSettings,
        engine: AsyncEngine,
        topics: Iterable[str],
        handlers: dict[str, Handler],
        store_factory: Callable[[AsyncConnection], Any],
        metrics: KitMetrics,
        on_committed: Callable[[], None] = lambda: None,
        after_batch: BatchHook | None = None,
        group_id: str | None = None,
    ):
        self.settings = settings
        self.engine = engine
        self.topics = [settings.topic(t) for t in topics]
        self.handlers = handlers
        self.store_factory = store_factory
        self.metrics = metrics
        self.on_committed = on_committed
        self.after_batch = after_batch
        self.group_id = group_id or settings.consumer_group
        self.marks = _Watermarks(timedelta(seconds=settings.allowed_lateness_seconds))
        self.consumer: AIOKafkaConsumer | None = None
        self._batch_lock = asyncio.Lock()
        self._stopping = asyncio.Event()
        self.assigned: set[TopicPartition] = set()
        # Partitions with records in the batch being processed: fetched (the consumer's
        # position is past them) but not all handled yet.
        self.in_flight: frozenset[TopicPartition] = frozenset()
        self.batches_done = 0

    # -------------------------------------------------------------- lifecycle

    def _make_consumer(self) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(**self._consumer_options())

    def _consumer_options(self) -> dict[str, Any]:
        """The consumer's configuration; a subclass adds to it rather than copying it."""
        return dict(
            bootstrap_servers=self.settings.kafka_bootstrap,
            group_id=self.group_id,
            client_id=f"tenure-{self.settings.service_name}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            max_partition_fetch_bytes=4 * 1024 * 1024 + 1024,
            fetch_max_bytes=16 * 1024 * 1024,
            session_timeout_ms=10_000,
            heartbeat_interval_ms=2_000,
            max_poll_interval_ms=300_000,
            retry_backoff_ms=200,
            # Range, not aiokafka's default round robin: every instance gets the same partition
            # indexes of every topic it reads, so one customer's events (one index on every
            # topic) and that index's watermark stay with one instance when a service scales.
            partition_assignment_strategy=(RangePartitionAssignor,),
        )

    async def run(self) -> None:
        """Consume until stopped; broker and database outages pause, never end, the loop."""
        backoff = 0.5
        while not self._stopping.is_set():
            self.consumer = self._make_consumer()
            try:
                await self.consumer.start()
                self.consumer.subscribe(self.topics, listener=_Listener(self))
                backoff = 0.5
                while not self._stopping.is_set():
                    batch = await self.consumer.getmany(
                        timeout_ms=self.settings.batch_timeout_ms,
                        max_records=self.settings.batch_max_records,
                    )
                    if batch:
                        async with self._batch_lock:
                            await self._process(batch)
                    await self._report_lag()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning(
                    "consumer loop failed; restarting",
                    exc_info=exc,
                    extra={"reason": type(exc).__name__},
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10)
            finally:
                consumer, self.consumer = self.consumer, None
                self.assigned = set()
                self.metrics.assigned_partitions.set(0)
                try:
                    await asyncio.wait_for(consumer.stop(), 10)
                except Exception:  # noqa: BLE001 - a dead broker cannot be told goodbye
                    pass

    def stop(self) -> None:
        self._stopping.set()

    @property
    def batch_lock(self) -> asyncio.Lock:
        """Held while a batch is applied (and while partitions are revoked): a service's
        time-driven work takes it so it never interleaves with a batch."""
        return self._batch_lock

    # -------------------------------------------------------------- one batch

    async def _process(self, batch: dict[TopicPartition, list[Any]]) -> None:
        started = time.perf_counter()
        records: list[RawRecord] = []
        for tp, messages in batch.items():
            self.metrics.consumed.labels(tp.topic).inc(len(messages))
            for m in messages:
                records.append(
                    RawRecord(tp.topic, tp.partition, m.offset, m.key, m.value or b"", m.timestamp)
                )
        parsed, rejected = self._parse(records)
        self.in_flight = frozenset(tp for tp, messages in batch.items() if messages)
        try:
            await self._apply_with_retries(parsed, rejected)
        finally:
            self.in_flight = frozenset()
        await self._commit_offsets(batch)
        self.batches_done += 1
        self.metrics.batch_seconds.observe(time.perf_counter() - started)
        self.on_committed()

    async def _apply_with_retries(
        self, parsed: list[_Parsed], rejected: list[tuple[RawRecord, str]]
    ) -> None:
        attempt = 0
        while True:
            try:
                await self._apply(parsed, rejected, isolate=False)
                break
            except Exception as exc:
                if await self._infrastructure_failed(exc):
                    attempt += 1
                    self.metrics.batch_retries.inc()
                    log.warning(
                        "batch failed on infrastructure; retrying",
                        extra={"attempt": attempt, "reason": type(exc).__name__},
                    )
                    await asyncio.sleep(min(0.5 * 2**attempt, 10))
                    continue
                # A handler raised on some event: find it, keep the rest.
                try:
                    await self._apply(parsed, rejected, isolate=True)
                    break
                except Exception as exc2:
                    if not await self._infrastructure_failed(exc2):
                        raise
                    attempt += 1
                    await asyncio.sleep(min(0.5 * 2**attempt, 10))

    async def _infrastructure_failed(self, exc: BaseException) -> bool:
        if isinstance(exc, asyncio.CancelledError):
            raise exc
        return is_transient(exc) or not await database_alive(self.engine)

    def _parse(self, records: list[RawRecord]) -> tuple[list[_Parsed], list[tuple[RawRecord, str]]]:
        return classify(records, self.settings)

    async def _apply(
        self, parsed: list[_Parsed], rejected: list[tuple[RawRecord, str]], *, isolate: bool
    ) -> None:
        marks_before = dict(self.marks.max_seen)
        dirty_before = set(self.marks.dirty)
        dead: list[tuple[RawRecord, str]] = list(rejected)
        counted: dict[str, int] = {}
        duplicates = 0
        ignored: dict[str, int] = {}
        try:
            async with self.engine.begin() as conn:
                uow: UnitOfWork[Any] = UnitOfWork(conn, self.store_factory(conn), self.settings)
                fresh = await self._claim(conn, parsed) if not isolate else None
                erased = await self._erased(conn, parsed)
                prepare = getattr(uow.store, "prepare", None)
                if prepare is not None:
                    # Let the store load what the batch's handlers will read, in one query.
                    await prepare([p.event for p in parsed])
                for item in parsed:
                    event = item.event
                    now = self.marks.advance(
                        item.record.topic, item.record.partition, event.occurred_at
                    )
                    handler = self.handlers.get(event.event_type)
                    if isolate:
                        try:
                            async with conn.begin_nested():
                                if not await self._claim_one(conn, event):
                                    duplicates += 1
                                    continue
                                if event.event_type == "customer.erased":
                                    await self._erase(uow, event, handler, now, erased)
                                    await uow.flush()
                                elif handler is None or event.customer_id in erased:
                                    ignored[event.event_type] = ignored.get(event.event_type, 0) + 1
                                    continue
                                else:
                                    await handler(event, uow=uow, now=now)
                                    await uow.flush()
                        except Exception as exc:
                            uow.discard()
                            if await self._infrastructure_failed(exc):
                                raise
                            log.error(
                                "handler failed; event dead-lettered",
                                extra={
                                    "event_id": str(event.event_id),
                                    "customer": customer_ref(event.customer_id),
                                    "reason": type(exc).__name__,
                                },
                            )
                            dead.append((item.record, f"handler error: {_describe(exc)}"))
                            continue
                    else:
                        assert fresh is not None
                        if event.event_id not in fresh:
                            duplicates += 1
                            continue
                        fresh.discard(event.event_id)  # a second copy in the same batch
                        if event.event_type == "customer.erased":
                            await self._erase(uow, event, handler, now, erased)
                        elif handler is None or event.customer_id in erased:
                            ignored[event.event_type] = ignored.get(event.event_type, 0) + 1
                            continue
                        else:
                            await handler(event, uow=uow, now=now)
                    counted[event.event_type] = counted.get(event.event_type, 0) + 1
                await uow.flush()
                if self.after_batch is not None:
                    await self.after_batch(uow)
                for record, reason in dead:
                    await uow.dead_letter(record, reason)
                await uow.flush()
                await self._save_watermarks(conn)
        except BaseException:
            self.marks.max_seen = marks_before
            self.marks.dirty = dirty_before
            raise
        for event_type, n in counted.items():
            self.metrics.processed.labels(event_type).inc(n)
        if duplicates:
            self.metrics.duplicates.inc(duplicates)
        for record, reason in dead:
            self.metrics.dead_lettered.labels(_reason_kind(reason)).inc()
            log.warning(
                "message dead-lettered",
                extra={
                    "topic": record.topic,
                    "partition": record.partition,
                    "offset": record.offset,
                    "reason": _reason_kind(reason),
                },
            )
        for event_type, n in ignored.items():
            self.metrics.ignored.labels(event_type).inc(n)

    async def _erase(
        self, uow: UnitOfWork[Any], event: EnvelopeBase, handler: Handler | None,
        now: datetime, erased: set[str],
    ) -> None:
        """Every service honours an erasure: its own data goes, the id is remembered so a
        replay of old events cannot bring the customer back."""
        await uow.flush()
        erase = getattr(uow.store, "erase", None)
        if erase is not None:
            await erase(event.customer_id)
        if handler is not None:
            await handler(event, uow=uow, now=now)
        await uow.conn.execute(
            pg_insert(erased_customers)
            .values(customer_id=event.customer_id)
            .on_conflict_do_nothing()
        )
        erased.add(event.customer_id)

    async def _claim(self, conn: AsyncConnection, parsed: list[_Parsed]) -> set[Any]:
        """Record all event ids of the batch at once; returns the ids not seen before."""
        ids = list({p.event.event_id for p in parsed})
        if not ids:
            return set()
        # One parameter (an array), so the statement is compiled once and cached.
        rows = await conn.execute(_CLAIM_MANY, {"ids": ids})
        return set(rows.scalars())

    async def _claim_one(self, conn: AsyncConnection, event: EnvelopeBase) -> bool:
        stmt = (
            pg_insert(inbox)
            .values(event_id=event.event_id)
            .on_conflict_do_nothing()
            .returning(inbox.c.event_id)
        )
        return (await conn.execute(stmt)).first() is not None

    async def _erased(self, conn: AsyncConnection, parsed: list[_Parsed]) -> set[str]:
        ids = list({p.event.customer_id for p in parsed})
        if not ids:
            return set()
        rows = await conn.execute(
            sa.select(erased_customers.c.customer_id).where(
                erased_customers.c.customer_id.in_(ids)
            )
        )
        return set(rows.scalars())

    async def _save_watermarks(self, conn: AsyncConnection) -> None:
        if not self.marks.dirty:
            return
        rows = [
            {"topic": t, "partition": p, "max_event_time": self.marks.max_seen[(t, p)]}
            for (t, p) in sorted(self.marks.dirty)
        ]
        stmt = pg_insert(watermarks).values(rows)
        stmt = stmt.on_conflict_do_update(
            index_elements=[watermarks.c.topic, watermarks.c.partition],
            set_={
                "max_event_time": sa.func.greatest(
                    watermarks.c.max_event_time, stmt.excluded.max_event_time
                ),
                "updated_at": sa.func.now(),
            },
        )
        await conn.execute(stmt)
        self.marks.dirty.clear()

    async def load_watermarks(self, partitions: Iterable[TopicPartition]) -> None:
        wanted = {(tp.topic, tp.partition) for tp in partitions}
        if not wanted:
            return
        async with self.engine.connect() as conn:
            rows = await conn.execute(sa.select(watermarks))
            for row in rows:
                key = (row.topic, row.partition)
                if key in wanted:
                    current = self.marks.max_seen.get(key)
                    if current is None or row.max_event_time > current:
                        self.marks.max_seen[key] = row.max_event_time

    async def _commit_offsets(self, batch: dict[TopicPartition, list[Any]]) -> None:
        assert self.consumer is not None
        offsets = {tp: msgs[-1].offset + 1 for tp, msgs in batch.items() if msgs}
        offsets = {tp: o for tp, o in offsets.items() if tp in self.consumer.assignment()}
        if not offsets:
            return
        try:
            await self.consumer.commit(offsets)
        except (CommitFailedError, KafkaError) as exc:
            # The work is committed in PostgreSQL; whoever reads these offsets again will find
            # the event ids in the inbox and change nothing.
            log.warning("offset commit failed", extra={"reason": type(exc).__name__})

    async def _report_lag(self) -> None:
        consumer = self.consumer
        if consumer is None:
            return
        wall = datetime.now(UTC)
        for tp in consumer.assignment():
            high = consumer.highwater(tp)
            if high is not None:
                position = await consumer.position(tp)
                self.metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(
                    max(high - position, 0)
                )
            wm = self.marks.now(tp.topic, tp.partition)
            if wm is not None:
                self.metrics.watermark_delay.labels(tp.topic, str(tp.partition)).set(
                    (wall - wm).total_seconds()
                )


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, owner: EventConsumer):
        self.owner = owner

    async def on_partitions_revoked(self, revoked: Any) -> None:
        # Wait for the batch in flight: it commits its own offsets once its transaction is done.
        async with self.owner._batch_lock:
            self.owner.assigned -= set(revoked)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self.owner.assigned = set(assigned)
        self.owner.metrics.assigned_partitions.set(len(self.owner.assigned))
        await self.owner.load_watermarks(assigned)


def _describe(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text[:300]}" if text else type(exc).__name__


def _reason_kind(reason: str) -> str:
    """A low-cardinality label for the DLQ counter."""
    if reason.startswith("handler error"):
        return "handler_error"
    if reason.startswith("message of"):
        return "too_large"
    if reason.startswith("malformed JSON"):
        return "malformed_json"
    if reason.startswith("schema_version"):
        return "unsupported_version"
    if reason.startswith("source"):
        return "unregistered_source"
    if reason.startswith("event_type"):
        return "unknown_event_type"
    return "invalid"


def dumps(value: Any) -> bytes:
    return orjson.dumps(value)
