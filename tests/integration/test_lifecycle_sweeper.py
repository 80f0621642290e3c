"""The sweeper reads only the customers whose next threshold has passed, through the next-due
index, and only in the partitions this instance owns (100,000 customers seeded by COPY)."""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from aiokafka import TopicPartition
from prometheus_client import CollectorRegistry

from services.lifecycle.clock import EventClock
from services.lifecycle.consumer import PRIMARY_TOPIC, TOPICS
from services.lifecycle.domain import Position, default_rules
from services.lifecycle.facts import CustomerFacts
from services.lifecycle.metrics import LifecycleMetrics
from services.lifecycle.progress import Context
from services.lifecycle.store import due_query, waiting_query
from services.lifecycle.sweeper import Sweeper
from shared.db import make_engine
from shared.kit import _Watermarks
from tests.integration.test_lifecycle_service import lifecycle_namespace
from tests.support.platform import Namespace


@pytest.fixture
async def lc_ns() -> AsyncIterator[Namespace]:
    async with lifecycle_namespace() as namespace:
        yield namespace


T0 = datetime(2025, 1, 6, tzinfo=UTC)
CUSTOMERS = 100_000
DUE_PER_PARTITION = 20


@dataclass
class IdleConsumer:
    """What the sweeper reads of the kit's consumer: assignment and watermarks."""

    assigned: set[TopicPartition]
    marks: _Watermarks = field(default_factory=lambda: _Watermarks(timedelta(minutes=5)))
    consumer: Any = None


def quiet_customer() -> dict[str, Any]:
    facts = CustomerFacts()
    facts.first_product_at = facts.last_activity_at = T0
    facts.accounts = {"A": {"type": "current", "opened": T0, "closed": None}}
    return Position(facts, "active", T0, "onboarding_complete", T0, count=3).to_json()


async def seed(ns: Namespace, settings: Any) -> list[str]:
    """100k customers by COPY, due between 150 and 1000 days on; 20 per partition due now."""
    rng = random.Random(3)
    records = [
        (f"S{n:06d}", "active", T0, "onboarding_complete", n % 3,
         T0 + timedelta(days=rng.uniform(150, 1000)), 3)
        for n in range(CUSTOMERS)
    ]
    due = [f"S{n:06d}" for p in range(3) for n in range(p, 3 * DUE_PER_PARTITION, 3)]
    engine = make_engine(settings)
    try:
        async with engine.begin() as conn:
            raw = (await conn.get_raw_connection()).driver_connection
            await raw.copy_records_to_table(
                "customer_stages", schema_name=settings.db_schema, records=records,
                columns=["customer_id", "stage", "stage_entered_at", "rule", "partition",
                         "next_due_at", "history_seq"],
            )
            await conn.execute(
                # A customer whose facts log was rolled up to their last fact.
                sa.text("UPDATE customer_stages SET next_due_at = :due, "
                        "position = CAST(:position AS jsonb), base = CAST(:position AS jsonb), "
                        "evaluated_at = :at, log_start = :at WHERE customer_id = ANY(:ids)"),
                {"due": T0 + timedelta(days=90), "position": json.dumps(quiet_customer()),
                 "at": T0, "ids": due},
            )
        async with engine.connect() as conn:
            await conn.execute(sa.text("COMMIT"))
            await conn.execute(sa.text("ANALYZE customer_stages"))
    finally:
        await engine.dispose()
    return due


def plan_nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    out = [plan]
    for child in plan.get("Plans", []):
        out += plan_nodes(child)
    return out


async def test_the_sweep_reads_due_customers_through_the_index_and_owned_partitions_only(
    lc_ns: Namespace,
) -> None:
    ns = lc_ns
    settings = ns.settings("lifecycle", sweep_batch=500)
    due = await seed(ns, settings)
    clock_at = T0 + timedelta(days=100)

    engine = make_engine(settings)
    try:
        # The plans: index scans on (partition, next_due_at) and (partition, pending_from),
        # no sequential scan; they read the 20 due rows of the partition, not the 33,000
        # others.
        for query, index, rows in ((due_query(0, clock_at, 500), "customer_stages_due",
                                    DUE_PER_PARTITION),
                                   (waiting_query(0, clock_at, 500), "customer_stages_waiting", 0)):
            sql = str(query.compile(dialect=engine.dialect,
                                    compile_kwargs={"literal_binds": True}))
            async with engine.begin() as conn:
                plan = (await conn.execute(sa.text(
                    f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}"))).scalar()
                await conn.rollback()
            nodes = plan_nodes((json.loads(plan) if isinstance(plan, str) else plan)[0]["Plan"])
            kinds = {n["Node Type"] for n in nodes}
            assert "Seq Scan" not in kinds, kinds
            [scan] = [n for n in nodes if n["Node Type"] in ("Index Scan", "Bitmap Index Scan")]
            assert scan["Index Name"] == index
            assert scan["Actual Rows"] == rows
            assert scan.get("Rows Removed by Filter", 0) == 0

        # A sweep as instance that owns partition 0 of the primary topic (it also holds
        # another topic's partition 1, which does not make it partition 1's sweeper).
        primary = settings.topic(PRIMARY_TOPIC)
        other_topic = settings.topic(TOPICS[1])
        consumer = IdleConsumer({TopicPartition(primary, 0), TopicPartition(other_topic, 1)})
        for topic in (primary, other_topic):
            for p in range(3):
                consumer.marks.max_seen[(topic, p)] = clock_at
        clock = EventClock(consumer, idle_after=0.1, primary_topic=primary)
        metrics = LifecycleMetrics(CollectorRegistry())
        sweeper = Sweeper(engine, settings, clock,
                          lambda: Context(default_rules(), timedelta(minutes=5),
                                          timedelta(days=35), metrics),
                          metrics)
        statements: list[str] = []

        def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            statements.append(statement)

        sa.event.listen(engine.sync_engine, "before_cursor_execute", count)
        assert await sweeper.sweep() == DUE_PER_PARTITION
        sa.event.remove(engine.sync_engine, "before_cursor_execute", count)
        # One due query, the facts log, checkpoints and history of the batch (its log is
        # rolled forward), the lineage check, the writes: a handful of statements for the
        # batch, whatever the number of customers stored.
        assert len(statements) <= 11, statements
        reads = [s for s in statements if "FOR UPDATE SKIP LOCKED" in s]
        assert len(reads) == 2  # the due customers, then those with facts waiting (none)
        assert "next_due_at <=" in reads[0] and "pending_from <=" in reads[1]

        rows = await ns.sql(
            "lifecycle",
            "SELECT customer_id, partition, stage, stage_entered_at FROM customer_stages "
            "WHERE customer_id = ANY(:ids) ORDER BY customer_id", ids=due)
        swept = {r.customer_id for r in rows if r.stage == "dormant"}
        assert swept == {r.customer_id for r in rows if r.partition == 0}
        assert {r.stage_entered_at for r in rows if r.stage == "dormant"} == {
            T0 + timedelta(days=90)}
        outbox = await ns.sql("lifecycle", "SELECT count(*) FROM outbox")
        assert outbox[0][0] == DUE_PER_PARTITION
        assert await sweeper.sweep() == 0  # nothing due any more
    finally:
        await engine.dispose()
