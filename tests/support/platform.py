"""Test harness over the real Kafka broker and PostgreSQL that ./dev test started."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
import orjson
import sqlalchemy as sa
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from sqlalchemy.ext.asyncio import create_async_engine

from shared.auth import mint_token
from shared.db import migrate
from shared.events import EnvelopeBase, encode_event
from shared.settings import DEV_JWT_SECRET, PlatformSettings
from shared.topics import ensure_topics
from tenure_cli.services import SERVICE_NAMES, migrations_dir, settings_class

T = TypeVar("T")


def require_infrastructure() -> tuple[str, str]:
    bootstrap = os.environ.get("TENURE_KAFKA_BOOTSTRAP")
    database = os.environ.get("TENURE_DATABASE_URL")
    if not bootstrap or not database:
        raise RuntimeError(
            "TENURE_KAFKA_BOOTSTRAP and TENURE_DATABASE_URL are unset: run the tests with "
            "./dev test, which starts the real Kafka broker and PostgreSQL first"
        )
    return bootstrap, database


async def eventually(
    probe: Callable[[], Awaitable[T]], *, timeout: float = 30.0, interval: float = 0.2,
    what: str = "condition",
) -> T:
    """Poll `probe` until it returns a truthy value; fail with the last value at the deadline."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = await probe()
        except AssertionError as exc:
            last = exc
        else:
            if last:
                return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")
        await asyncio.sleep(interval)


def token(*scopes: str, subject: str = "test-user", **kw: Any) -> str:
    return mint_token(DEV_JWT_SECRET, subject=subject, scopes=list(scopes), **kw)


@dataclass
class Namespace:
    """A fresh set of topics and schemas for one test: isolation by names, not by sleeping."""

    bootstrap: str
    database_url: str
    prefix: str
    partitions: int = 3
    producer: AIOKafkaProducer | None = None
    _apps: list[Any] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        return {
            "TENURE_KAFKA_BOOTSTRAP": self.bootstrap,
            "TENURE_DATABASE_URL": self.database_url,
            "TENURE_TOPIC_PREFIX": f"{self.prefix}.",
            "TENURE_SCHEMA_PREFIX": f"{self.prefix}_",
            "TENURE_PARTITIONS": str(self.partitions),
        }

    def platform(self) -> PlatformSettings:
        return PlatformSettings(**{k.removeprefix("TENURE_").lower(): v for k, v in self.env.items()})

    def settings(self, service: str, **overrides: Any) -> Any:
        base = {k.removeprefix("TENURE_").lower(): v for k, v in self.env.items()}
        base.update(overrides)
        return settings_class(service)(**base)

    def topic(self, name: str) -> str:
        return f"{self.prefix}.{name}"

    async def setup(self, services: tuple[str, ...] = SERVICE_NAMES) -> None:
        await ensure_topics(self.platform())
        for name in services:
            await migrate(self.settings(name), migrations_dir(name))
        self.producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap, enable_idempotence=True, max_request_size=5_000_000
        )
        await self.producer.start()

    async def teardown(self) -> None:
        if self.producer is not None:
            await self.producer.stop()
        await self.delete_topics()

    async def delete_topics(self) -> None:
        """Best effort: the namespace's topics go, so a broker that serves many test runs does
        not pile up partitions (each holds open files; tens of thousands exhaust the limit)."""
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        with contextlib.suppress(Exception):
            await admin.start()
            mine = [t for t in await admin.list_topics() if t.startswith(f"{self.prefix}.")]
            if mine:
                await admin.delete_topics(mine)
        with contextlib.suppress(Exception):
            await admin.close()

    async def publish(self, topic: str, event: EnvelopeBase) -> None:
        assert self.producer is not None
        await self.producer.send_and_wait(
            self.topic(topic), encode_event(event), key=event.customer_id.encode()
        )

    async def publish_raw(self, topic: str, value: bytes, key: bytes | None = None) -> None:
        assert self.producer is not None
        await self.producer.send_and_wait(self.topic(topic), value, key=key)

    async def read_topic(self, topic: str, *, timeout: float = 2.0) -> list[dict[str, Any]]:
        """Everything on a topic right now, decoded, with headers (no consumer group)."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, enable_auto_commit=False,
            auto_offset_reset="earliest", group_id=None,
            max_partition_fetch_bytes=5_000_000, fetch_max_bytes=20_000_000,
        )
        await consumer.start()
        try:
            name = self.topic(topic)
            parts = [TopicPartition(name, p) for p in range(self.partitions)]
            consumer.assign(parts)
            await consumer.seek_to_beginning(*parts)
            ends = await consumer.end_offsets(parts)
            out: list[dict[str, Any]] = []
            deadline = time.monotonic() + timeout
            async def behind() -> bool:
                for tp in parts:
                    if await consumer.position(tp) < ends[tp]:
                        return True
                return False

            while await behind():
                batch = await consumer.getmany(timeout_ms=200)
                for tp, messages in batch.items():
                    for m in messages:
                        out.append(
                            {
                                "partition": tp.partition,
                                "offset": m.offset,
                                "key": m.key,
                                "raw": m.value,
                                "headers": {k: v.decode() for k, v in (m.headers or [])},
                                "value": _try_json(m.value),
                            }
                        )
                if time.monotonic() > deadline:
                    break
            return out
        finally:
            await consumer.stop()

    async def sql(self, service: str, query: str, **params: Any) -> list[Any]:
        engine = create_async_engine(
            self.database_url,
            connect_args={"server_settings": {"search_path": f"{self.prefix}_{service}"}},
        )
        try:
            async with engine.connect() as conn:
                return list((await conn.execute(sa.text(query), params)).all())
        finally:
            await engine.dispose()

    @contextlib.asynccontextmanager
    async def service(
        self, name: str, *, parts: dict[str, Any] | None = None, **overrides: Any
    ) -> AsyncIterator[RunningService]:
        """Run a service in this process with its real lifespan (consumers, relay).

        `overrides` are settings; `parts` replace pieces of the object graph (bootstrap).
        """
        import importlib

        app = importlib.import_module(f"services.{name}.app").create_app(
            self.settings(name, **overrides), **(parts or {})
        )
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                yield RunningService(name, app, client)


@dataclass
class RunningService:
    name: str
    app: Any
    client: httpx.AsyncClient

    @property
    def runtime(self) -> Any:
        return self.app.state.runtime

    async def get(self, path: str, *scopes: str, **kw: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token(*(scopes or (f'{self.name}:read',)))}"}
        return await self.client.get(path, headers=headers, **kw)

    async def ready(self) -> bool:
        r = await self.client.get("/readyz")
        return r.status_code == 200


def _try_json(raw: bytes | None) -> Any:
    try:
        return orjson.loads(raw) if raw is not None else None
    except orjson.JSONDecodeError:
        return None


def new_namespace() -> Namespace:
    bootstrap, database = require_infrastructure()
    return Namespace(bootstrap, database, f"t{uuid.uuid4().hex[:10]}")
