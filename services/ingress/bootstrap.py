"""Builds the ingress object graph: the partner consumer, the outbox relay, the engine."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from services.ingress.consumer import PartnerConsumer
from services.ingress.handlers import make_handlers
from services.ingress.settings import IngressSettings
from services.ingress.store import IngressStore
from shared.app import ServiceRuntime
from shared.db import make_engine
from shared.keys import KeySettings, KeyStore, ensure_schema
from shared.metrics import KitMetrics
from shared.outbox import OutboxRelay


class IngressRuntime(ServiceRuntime):
    async def readiness(self) -> dict[str, Any]:
        checks = await super().readiness()
        # Before the first partner is added there is no partner topic to be assigned: that is
        # an idle ingress, not a broken one.
        if checks.get("kafka") == "ok" and checks.get("assigned_partitions") == 0:
            checks["consumers"] = "ok"
            checks["note"] = "no partner topic yet"
        return checks


def bootstrap(settings: IngressSettings, **overrides: Any) -> ServiceRuntime:
    engine = overrides.get("engine") or make_engine(settings)
    metrics = overrides.get("metrics") or KitMetrics(settings.service_name)
    relay = OutboxRelay(settings=settings, engine=engine, metrics=metrics)

    def store_factory(conn: AsyncConnection) -> IngressStore:
        return IngressStore(conn)

    key_store = KeyStore.from_settings(KeySettings(**settings.model_dump()))

    async def key_store_ready() -> None:
        async with engine.begin() as conn:
            await ensure_schema(conn, key_store.schema)

    consumer = PartnerConsumer(
        settings=settings,
        engine=engine,
        handlers=make_handlers(key_store),
        store_factory=store_factory,
        metrics=metrics,
        on_committed=relay.notify,
    )
    return IngressRuntime(
        settings=settings, engine=engine, metrics=metrics, consumers=[consumer], relay=relay,
        startup=[key_store_ready],
    )
