"""Lifecycle's own figures, next to the kit's in the service's registry."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from shared.metrics import BATCH_BUCKETS, StateGauges, set_all

_CUSTOMERS_PER_STAGE = sa.text(
    "SELECT coalesce(stage, 'none') AS stage, count(*) AS n FROM customer_stages GROUP BY 1"
)


class LifecycleMetrics:
    def __init__(self, registry: CollectorRegistry):
        p = "tenure_lifecycle"
        self.registry = registry
        self.customers = Gauge(
            f"{p}_customers", "Customers in each lifecycle stage now (from the stage table)",
            ["stage"], registry=registry,
        )
        self.transitions = Counter(
            f"{p}_transitions", "Stage transitions announced", ["from_stage", "to_stage", "rule"],
            registry=registry,
        )
        self.corrections = Counter(
            f"{p}_corrections", "Corrective stage.changed events (late facts changed history)",
            registry=registry,
        )
        self.retracted = Counter(
            f"{p}_transitions_retracted", "Announced transitions a correction withdrew",
            registry=registry,
        )
        self.replays = Counter(
            f"{p}_replays", "Customers replayed from their checkpoint", ["reason"],
            registry=registry,
        )
        self.swept = Counter(
            f"{p}_swept_customers", "Customers the sweeper advanced", registry=registry
        )
        self.sweep_seconds = Histogram(
            f"{p}_sweep_seconds", "Time of one sweep over the owned partitions",
            buckets=BATCH_BUCKETS, registry=registry,
        )
        self.rules_version = Gauge(
            f"{p}_rules_loaded_timestamp_seconds", "When the rules in force were loaded",
            registry=registry,
        )

    async def refresh(self, conn: Any) -> None:
        rows = (await conn.execute(_CUSTOMERS_PER_STAGE)).all()
        set_all(self.customers, {r.stage: r.n for r in rows})

    def state_gauges(self, engine: Any) -> StateGauges:
        """The loop that keeps `customers` current; bootstrap runs it as a background task."""
        return StateGauges(engine, self.refresh, service="lifecycle", registry=self.registry)
