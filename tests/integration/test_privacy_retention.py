"""Retention on the real database: the purge removes what is past its period and nothing else,
a legal hold keeps a customer's records (and refuses their erasure) until released, ended
relationships are erased through the platform, topics get their retention, and every table of
every service has a rule."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from sqlalchemy.ext.asyncio import create_async_engine

from shared.db import migrate
from tenure_cli import retention
from tenure_cli.services import SERVICE_NAMES, migrations_dir
from tests.support.platform import Namespace, eventually, token

NOW = datetime.now(UTC).replace(microsecond=0)
YEAR = timedelta(days=365)


async def execute(ns: Namespace, schema: str, statement: str, **params: object) -> None:
    engine = create_async_engine(ns.database_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(sa.text(f'SET LOCAL search_path TO "{ns.prefix}_{schema}"'))
            await conn.execute(sa.text(statement), params)
    finally:
        await engine.dispose()


async def seed(ns: Namespace, customer_id: str, *, last_event_at: datetime) -> None:
    """A customer with an old and a recent day of activity, timeline and audit rows."""
    await execute(ns, "profile", "INSERT INTO customers (customer_id, registered, last_event_at) "
                  "VALUES (:c, true, :t)", c=customer_id, t=last_event_at)
    await execute(ns, "profile", "INSERT INTO accounts (customer_id, account_id, product_type, "
                  "currency, closed_at) VALUES (:c, :a, 'current', 'EUR', :t)",
                  c=customer_id, a=f"{customer_id}-CUR", t=last_event_at)
    for when in (NOW - 2 * YEAR, NOW - timedelta(days=3)):
        await execute(ns, "profile", "INSERT INTO activity_days (customer_id, day, transactions) "
                      "VALUES (:c, :d, 1)", c=customer_id, d=when.date())
        await execute(ns, "profile", "INSERT INTO timeline (customer_id, event_id, occurred_at, "
                      "event_type, summary) VALUES (:c, :e, :t, 'app.click', '{}')",
                      c=customer_id, e=uuid.uuid4(), t=when - YEAR)
        await execute(ns, "profile", "INSERT INTO audit_log (at, subject, kind, action, "
                      "customer_id) VALUES (:t, 'rm-1', 'person', 'read_profile', :c)",
                      t=when - 6 * YEAR, c=customer_id)
        await execute(ns, "engagement", "INSERT INTO churn_events (customer_id, stage, at) "
                      "VALUES (:c, 'churned', :t)", c=customer_id, t=when - 2 * YEAR)


async def counts(ns: Namespace, customer_id: str) -> dict[str, int]:
    out = {}
    for schema, table in (("profile", "activity_days"), ("profile", "timeline"),
                          ("profile", "audit_log"), ("engagement", "churn_events")):
        [[n]] = await ns.sql(schema, f"SELECT count(*) FROM {table} WHERE customer_id = :c",
                             c=customer_id)
        out[f"{schema}.{table}"] = n
    return out


async def test_purge_keeps_what_is_recent_and_what_is_held(ns: Namespace) -> None:
    plain, held, ended, active = (f"C-RET-{k}-{uuid.uuid4().hex[:6]}"
                                  for k in ("plain", "held", "ended", "active"))
    await seed(ns, plain, last_event_at=NOW - timedelta(days=3))
    await seed(ns, held, last_event_at=NOW - 8 * YEAR)
    await seed(ns, ended, last_event_at=NOW - 8 * YEAR)
    await execute(ns, "profile", "INSERT INTO customers (customer_id, last_event_at) "
                  "VALUES (:c, :t)", c=active, t=NOW - 8 * YEAR)
    await execute(ns, "profile", "INSERT INTO accounts (customer_id, account_id, product_type, "
                  "currency) VALUES (:c, 'A1', 'savings', 'EUR')", c=active)  # still open
    old_event, new_event = uuid.uuid4(), uuid.uuid4()
    await execute(ns, "scoring", "INSERT INTO inbox (event_id, processed_at) VALUES (:e, :t)",
                  e=old_event, t=NOW - 2 * YEAR)
    await execute(ns, "scoring", "INSERT INTO inbox (event_id) VALUES (:e)", e=new_event)
    # An erased customer's partner mapping (the ingress never hears of erasures).
    await migrate(ns.settings("ingress"), migrations_dir("ingress"))
    await execute(ns, "ingress", "INSERT INTO partners (partner_id, status) VALUES ('bank-x', "
                  "'active')")
    for partner_customer_id, customer_id in (("X-1", "C-GONE"), ("X-2", plain)):
        await execute(ns, "ingress", "INSERT INTO partner_customers (partner_id, "
                      "partner_customer_id, customer_id) VALUES ('bank-x', :p, :c)",
                      p=partner_customer_id, c=customer_id)
    settings = ns.platform()
    hold_id = await retention.place_hold(settings, held, reason="litigation 2026-117",
                                         placed_by="legal")
    await execute(ns, "privacy", "INSERT INTO shredded_customers (customer_id) VALUES ('C-GONE')")

    report = await retention.run(settings, now=NOW)

    # Past their period: gone. Recent: kept. Held: kept whatever their age.
    assert await counts(ns, plain) == {"profile.activity_days": 1, "profile.timeline": 1,
                                       "profile.audit_log": 1, "engagement.churn_events": 1}
    assert await counts(ns, held) == {"profile.activity_days": 2, "profile.timeline": 2,
                                      "profile.audit_log": 2, "engagement.churn_events": 2}
    assert [tuple(r) for r in await ns.sql("scoring", "SELECT event_id FROM inbox")] == [
        (new_event,)]
    assert report.removed["profile.activity_days"] == 2  # plain's and ended's old days
    assert report.held["profile.activity_days"] == 1
    assert report.removed["scoring.inbox"] == 1
    assert [tuple(r) for r in await ns.sql("ingress", "SELECT customer_id FROM "
                                           "partner_customers")] == [(plain,)]
    # End of relationship: the long-silent customer without an open account is erased, the
    # held one and the one with an open account are not.
    assert report.erased_customers == [ended]
    assert report.held["profile.customers"] == 1
    runs = await ns.sql("privacy", "SELECT target, removed, held FROM retention_runs "
                        "WHERE target = 'profile.activity_days'")
    assert [tuple(r) for r in runs] == [("profile.activity_days", 2, 1)]

    # Topics got their periods.
    admin = AIOKafkaAdminClient(bootstrap_servers=ns.bootstrap)
    await admin.start()
    try:
        [described] = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, ns.topic("tenure.dlq.v1"))])
        entries = {e[0]: e[1] for e in described.resources[0][4]}
    finally:
        await admin.close()
    assert entries["retention.ms"] == str(30 * 86_400_000)
    assert entries["max.message.bytes"] == str(4 * 1024 * 1024)  # the other settings stay

    async with ns.service("profile") as profile:
        # The erasure the retention run published is applied by the platform.
        async def erased() -> bool:
            rows = await ns.sql("profile", "SELECT 1 FROM erased_customers WHERE customer_id=:c",
                                c=ended)
            return bool(rows)

        await eventually(erased, timeout=60, what="end-of-relationship erasure")
        assert await ns.sql("profile", "SELECT 1 FROM customers WHERE customer_id = :c",
                            c=ended) == []
        # A held customer's erasure is refused with the reason, and nothing is deleted.
        eraser = {"Authorization": f"Bearer {token('profile:erase')}"}
        r = await profile.client.delete(f"/v1/customers/{held}", headers=eraser)
        assert r.status_code == 409 and "legal hold" in r.json()["detail"]
        assert (await counts(ns, held))["profile.activity_days"] == 2

        # Released: the next run purges the old rows, and the erasure goes through.
        assert await retention.release_hold(settings, hold_id)
        assert not await retention.release_hold(settings, hold_id)
        report = await retention.run(settings, now=NOW, topics=False, erase=False)
        assert await counts(ns, held) == {"profile.activity_days": 1, "profile.timeline": 1,
                                          "profile.audit_log": 1, "engagement.churn_events": 1}
        assert report.erased_customers == []
        r = await profile.client.delete(f"/v1/customers/{held}", headers=eraser)
        assert r.status_code == 202


async def test_every_table_of_every_service_has_a_retention_rule(ns: Namespace) -> None:
    await migrate(ns.settings("ingress"), migrations_dir("ingress"))
    await retention.run(ns.platform(), topics=False, erase=False)  # creates the privacy schema
    engine = create_async_engine(ns.database_url)
    missing, stale, bad_columns = [], [], []
    try:
        async with engine.connect() as conn:
            for service in (*SERVICE_NAMES, "ingress", "privacy"):
                schema = f"{ns.prefix}_{service}"
                columns: dict[str, set[str]] = {}
                rows = await conn.execute(sa.text(
                    "SELECT table_name, column_name FROM information_schema.columns "
                    "WHERE table_schema = :s"), {"s": schema})
                for table, column in rows:
                    columns.setdefault(table, set()).add(column)
                rules = {r.table: r for r in retention.rules_for(service)}
                missing += [f"{service}.{t}" for t in columns if t not in rules]
                stale += [f"{service}.{r.table}" for r in rules.values()
                          if r.service != "*" and r.table not in columns]
                for rule in rules.values():
                    if rule.kind == "age" and rule.table in columns:
                        need = {rule.column} | ({"customer_id"} if rule.holdable else set())
                        if not need <= columns[rule.table]:
                            bad_columns.append(f"{service}.{rule.table}")
    finally:
        await engine.dispose()
    assert not missing, f"tables without a retention rule in tenure_cli/retention.py: {missing}"
    assert not stale, f"rules for tables that do not exist: {stale}"
    assert not bad_columns, f"age rules naming missing columns: {bad_columns}"
