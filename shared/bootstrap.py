"""Builds a service's object graph in one place; every part can be swapped by a test."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from shared.app import ServiceRuntime
from shared.db import make_engine
from shared.kit import BatchHook, EventConsumer, Handler
from shared.metrics import KitMetrics
from shared.outbox import OutboxRelay
from shared.settings import ServiceSettings


def build_runtime(
    settings: ServiceSettings,
    *,
    topics: Iterable[str],
    handlers: dict[str, Handler],
    store_factory: Callable[[AsyncConnection], Any],
    after_batch: BatchHook | None = None,
    engine: AsyncEngine | None = None,
    metrics: KitMetrics | None = None,
    extra_tasks: Sequence[Callable[[], Any]] = (),
    startup: Sequence[Callable[[], Any]] = (),
) -> ServiceRuntime:
    engine = engine or make_engine(settings)
    metrics = metrics or KitMetrics(settings.service_name)
    relay = OutboxRelay(settings=settings, engine=engine, metrics=metrics)
    consumer = EventConsumer(
        settings=settings,
        engine=engine,
        topics=topics,
        handlers=handlers,
        store_factory=store_factory,
        metrics=metrics,
        on_committed=relay.notify,
        after_batch=after_batch,
    )
    return ServiceRuntime(
        settings=settings,
        engine=engine,
        metrics=metrics,
        consumers=[consumer],
        relay=relay,
        extra_tasks=extra_tasks,
        startup=startup,
    )
