"""Outbox relay: one instance per service (advisory lock) publishes committed outputs in order."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import sqlalchemy as sa
from aiokafka import AIOKafkaProducer
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db import advisory_key
from shared.kit import outbox
from shared.metrics import KitMetrics
from shared.settings import ServiceSettings

log = logging.getLogger("tenure.outbox")

MAX_REQUEST_BYTES = 5 * 1024 * 1024
_DELETE_PUBLISHED = sa.text("DELETE FROM outbox WHERE id = ANY(CAST(:ids AS bigint[]))")


def make_producer(settings: ServiceSettings, **overrides: Any) -> AIOKafkaProducer:
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "client_id": f"tenure-{settings.service_name}-relay",
        "enable_idempotence": True,
        "acks": "all",
        "linger_ms": 5,
        "max_request_size": MAX_REQUEST_BYTES,
        "request_timeout_ms": 15_000,
        "retry_backoff_ms": 200,
    }
    options.update(overrides)
    return AIOKafkaProducer(**options)


class OutboxRelay:
    """Publishes outbox rows in id order with an idempotent producer, then deletes them.

    A crash between publish and delete re-publishes rows whose event ids are deterministic,
    so every consumer's inbox drops the copy. Only the instance holding the advisory lock
    publishes, which keeps the order of one customer's outputs.
    """

    def __init__(self, *, settings: ServiceSettings, engine: AsyncEngine, metrics: KitMetrics):
        self.settings = settings
        self.engine = engine
        self.metrics = metrics
        self.wakeup = asyncio.Event()
        self._stopping = asyncio.Event()
        self.is_leader = False
        self.published = 0

    def notify(self) -> None:
        self.wakeup.set()

    def stop(self) -> None:
        self._stopping.set()
        self.wakeup.set()

    async def run(self) -> None:
        backoff = 0.5
        key = advisory_key("outbox", self.settings.db_schema)
        while not self._stopping.is_set():
            producer = make_producer(self.settings)
            try:
                await producer.start()
                async with self.engine.connect() as lock_conn:
                    got = await lock_conn.scalar(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": key})
                    await lock_conn.commit()
                    if not got:
                        self.is_leader = False
                        await self._idle(2.0)
                        continue
                    self.is_leader = True
                    backoff = 0.5
                    try:
                        while not self._stopping.is_set():
                            sent = await self._drain_once(lock_conn, producer)
                            if not sent:
                                await self._idle(self.settings.outbox_poll_seconds)
                    finally:
                        self.is_leader = False
                        await lock_conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                        await lock_conn.commit()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("outbox relay failed; retrying", extra={"reason": type(exc).__name__})
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10)
            finally:
                try:
                    await asyncio.wait_for(producer.stop(), 10)
                except Exception:  # noqa: BLE001 - a dead broker cannot be told goodbye
                    pass

    async def _idle(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self.wakeup.wait(), seconds)
        except TimeoutError:
            pass
        self.wakeup.clear()

    async def _drain_once(self, conn: Any, producer: AIOKafkaProducer) -> int:
        rows = (
            await conn.execute(
                sa.select(outbox).order_by(outbox.c.id).limit(self.settings.outbox_batch)
            )
        ).all()
        await conn.commit()
        if not rows:
            self.metrics.outbox_backlog.set(0)
            return 0
        futures = []
        for row in rows:
            headers = [(k, v.encode()) for k, v in (row.headers or [])]
            futures.append(
                await producer.send(row.topic, value=row.value, key=row.key, headers=headers)
            )
        await asyncio.gather(*futures)
        ids = [row.id for row in rows]
        await conn.execute(_DELETE_PUBLISHED, {"ids": ids})
        backlog = 0
        if len(rows) == self.settings.outbox_batch:
            backlog = await conn.scalar(sa.select(sa.func.count()).select_from(outbox))
        await conn.commit()
        self.metrics.outbox_backlog.set(backlog or 0)
        for row in rows:
            self.metrics.outbox_published.labels(row.topic).inc()
        self.published += len(rows)
        return len(rows)
