"""Lifecycle's object graph: rules, consumer with its batch hook, event clock, sweeper."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from services.lifecycle import consumer
from services.lifecycle.clock import EventClock
from services.lifecycle.handlers import AdvanceTouched
from services.lifecycle.metrics import LifecycleMetrics
from services.lifecycle.progress import Context
from services.lifecycle.rules import InvalidRules, RulesInForce
from services.lifecycle.settings import LifecycleSettings
from services.lifecycle.store import LifecycleStore
from services.lifecycle.sweeper import Sweeper
from shared.app import ServiceRuntime
from shared.bootstrap import build_runtime

MIGRATIONS = Path(__file__).parent / "migrations"
log = logging.getLogger("tenure.lifecycle")


@dataclass
class LifecycleParts:
    """What lifecycle adds to the runtime (the API reads it from app.state.runtime)."""

    rules: RulesInForce
    clock: EventClock
    sweeper: Sweeper
    metrics: LifecycleMetrics


def bootstrap(settings: LifecycleSettings, **overrides: Any) -> ServiceRuntime:
    rules = overrides.pop("rules", None)
    if rules is None:
        try:
            rules = RulesInForce.load(settings.rules_file)
        except InvalidRules as exc:
            log.error("lifecycle rules are invalid; the service does not start",
                      extra={"reason": str(exc)[:500]})
            raise

    def store_factory(conn: AsyncConnection) -> LifecycleStore:
        return LifecycleStore(conn, settings.partitions)

    runtime = build_runtime(
        settings,
        **{
            "topics": consumer.TOPICS,
            "handlers": consumer.HANDLERS,
            "store_factory": store_factory,
            **overrides,
        },
    )
    events = runtime.consumers[0]
    metrics = LifecycleMetrics(runtime.metrics.registry)
    metrics.rules_version.set(rules.loaded_at.timestamp())
    clock = EventClock(events, settings.idle_partition_seconds,
                       settings.topic(consumer.PRIMARY_TOPIC),
                       frozenset(settings.topic(t) for t in consumer.FOLLOWER_TOPICS))
    lateness = timedelta(seconds=settings.allowed_lateness_seconds)
    window = timedelta(days=settings.correction_window_days)

    def context() -> Context:
        return Context(rules.rules, lateness, window, metrics)

    events.after_batch = AdvanceTouched(clock, context)
    relay = runtime.relay
    sweeper = Sweeper(runtime.engine, settings, clock, context, metrics,
                      on_written=relay.notify if relay is not None else lambda: None)
    committed = events.on_committed

    def on_committed() -> None:
        committed()
        sweeper.notify()  # the watermark may have moved: someone may be due

    events.on_committed = on_committed
    runtime.extra_tasks.append(sweeper.run)
    runtime.extra_tasks.append(metrics.state_gauges(runtime.engine).run)
    runtime.lifecycle = LifecycleParts(rules, clock, sweeper, metrics)  # type: ignore[attr-defined]
    return runtime
