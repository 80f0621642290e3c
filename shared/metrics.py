"""Prometheus metrics every service exports; one registry per service instance."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

log = logging.getLogger("tenure.metrics")

BATCH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass
class KitMetrics:
    """The consumer kit's and outbox relay's figures, named tenure_<service>_..."""

    service: str
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        p = f"tenure_{self.service}"
        r = self.registry
        self.consumed = Counter(
            f"{p}_events_consumed", "Messages read from Kafka", ["topic"], registry=r
        )
        self.processed = Counter(
            f"{p}_events_processed", "Events applied by a handler", ["event_type"], registry=r
        )
        self.duplicates = Counter(
            f"{p}_events_duplicate", "Events dropped because their id was already processed",
            registry=r,
        )
        self.ignored = Counter(
            f"{p}_events_ignored", "Valid events of a type this service does not handle",
            ["event_type"], registry=r,
        )
        self.dead_lettered = Counter(
            f"{p}_events_dead_lettered", "Messages sent to the dead-letter topic",
            ["reason"], registry=r,
        )
        self.batch_seconds = Histogram(
            f"{p}_batch_seconds", "Time to process one consumed batch in one transaction",
            buckets=BATCH_BUCKETS, registry=r,
        )
        self.batch_retries = Counter(
            f"{p}_batch_retries", "Batches retried after an infrastructure failure", registry=r
        )
        self.consumer_lag = Gauge(
            f"{p}_consumer_lag", "High watermark minus position, per partition",
            ["topic", "partition"], registry=r,
        )
        self.watermark_delay = Gauge(
            f"{p}_watermark_delay_seconds",
            "Wall-clock time minus the event-time watermark, per partition",
            ["topic", "partition"], registry=r,
        )
        self.outbox_backlog = Gauge(
            f"{p}_outbox_backlog", "Outbox rows not yet published", registry=r
        )
        self.outbox_published = Counter(
            f"{p}_outbox_published", "Outbox rows published to Kafka", ["topic"], registry=r
        )
        self.assigned_partitions = Gauge(
            f"{p}_assigned_partitions", "Partitions assigned to this instance", registry=r
        )


class StateMetricsSettings(BaseSettings):
    """TENURE_STATE_METRICS_SECONDS: how often every service re-reads its state gauges."""

    model_config = SettingsConfigDict(env_prefix="TENURE_STATE_METRICS_", extra="ignore")
    seconds: float = Field(15.0, gt=0)


class StateGauges:
    """Runs a service's `refresh(conn)` every `interval` seconds to set gauges that describe
    stored state (customers per stage, per tier, budgets left), read from its own tables.

    Why a loop and not a query per scrape: a scrape must stay cheap and synchronous, and
    state changes only when batches commit. Every replica reports the same figures (they
    read one database), so dashboards aggregate them with max(), never sum().
    """

    def __init__(
        self,
        engine: Any,
        refresh: Callable[[Any], Awaitable[None]],
        *,
        service: str,
        registry: CollectorRegistry,
        interval: float | None = None,
    ):
        self.engine = engine
        self.refresh = refresh
        self.interval = interval if interval is not None else StateMetricsSettings().seconds
        self.failures = Counter(
            f"tenure_{service}_state_metrics_failures",
            "Refreshes of the state gauges that failed (database unreachable)",
            registry=registry,
        )
        self.refreshed = Gauge(
            f"tenure_{service}_state_metrics_refreshed_timestamp_seconds",
            "When the state gauges were last read from the database",
            registry=registry,
        )

    async def run(self) -> None:
        while True:
            try:
                async with self.engine.connect() as conn:
                    await self.refresh(conn)
                self.refreshed.set_to_current_time()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - an outage pauses the figures, not the service
                self.failures.inc()
                log.warning("state metrics refresh failed", extra={"reason": type(exc).__name__})
            await asyncio.sleep(self.interval)


def set_all(gauge: Gauge, values: dict[str, float]) -> None:
    """Replace every labelled value of a one-label gauge: a label that disappeared from the
    data (no dormant customers left) disappears from the figures instead of going stale."""
    gauge.clear()
    for label, value in values.items():
        gauge.labels(label).set(value)
