"""Prometheus metrics every service exports; one registry per service instance."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

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
