"""`tenure retention`: every table and topic's retention period, the purge job, legal holds.

The policy below is the single source; docs/data-protection.md explains it, and a test checks
that every table of every service schema has a rule here (a new table without one fails).

Kinds of rule:

* ``age``: rows whose time column is older than the period are deleted, except rows of a
  customer under an active legal hold;
* ``customer``: the row lives as long as the customer's relationship; it goes with the
  customer's erasure (a request, or the end-of-relationship rule below);
* ``keep``: kept for the stated reason (no personal data, or needed to honour erasures).

End of relationship: a customer of profile with no open account and no event for
`RELATIONSHIP_YEARS` years is erased everywhere (a `customer.erased` event, as an erasure
request would), unless under legal hold.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from shared.events import CustomerErased, ErasureRequest, derived_event_id
from shared.keys import KeySettings, ensure_schema
from shared.settings import DLQ_TOPIC, INPUT_TOPICS, OUTPUT_TOPICS, PlatformSettings

RELATIONSHIP_YEARS = 7
DAY = timedelta(days=1)


@dataclass(frozen=True)
class Rule:
    service: str  # "profile", ... or "*" for the kit's tables in every service schema
    table: str
    kind: Literal["age", "customer", "keep"]
    days: int | None = None  # for "age"
    column: str | None = None  # the time column "age" compares
    condition: str | None = None  # extra SQL: only rows that are finished may go
    holdable: bool = True  # rows carry customer_id, so a legal hold protects them
    why: str = ""


POLICY: tuple[Rule, ...] = (
    # The kit's tables, in every service schema.
    Rule("*", "inbox", "age", 400, "processed_at", holdable=False,
         why="event ids seen: kept longer than the input topics, so a replay stays idempotent"),
    Rule("*", "outbox", "keep", holdable=False,
         why="deleted by the relay once published; an unpublished row is never purged"),
    Rule("*", "watermarks", "keep", holdable=False, why="one row per partition, no personal data"),
    Rule("*", "erased_customers", "keep", holdable=False,
         why="erased ids only: remembered so a replay never brings a customer back"),
    Rule("*", "alembic_version", "keep", holdable=False, why="schema version"),
    # profile
    Rule("profile", "customers", "customer",
         why=f"relationship, then {RELATIONSHIP_YEARS} years after the last event with no "
         "open account"),
    Rule("profile", "accounts", "customer", why="with the customer"),
    Rule("profile", "customer_pii", "customer", why="with the customer (encrypted)"),
    Rule("profile", "blind_index", "customer", why="with the customer (keyed digests)"),
    Rule("profile", "activity_days", "age", 400, "day",
         why="daily counts feed 365-day windows (RFM, CLV)"),
    Rule("profile", "complaints", "age", 6 * 365, "resolved_at",
         condition="resolved_at IS NOT NULL", why="complaint records: 6 years after resolution"),
    Rule("profile", "timeline", "age", 2 * 365, "occurred_at",
         why="the last 100 events per customer, at most 2 years old"),
    Rule("profile", "population", "keep", holdable=False,
         why="histogram counts, no personal data"),
    Rule("profile", "audit_log", "age", 7 * 365, "at",
         why="who read or erased whom: a legal record, 7 years (erasure audits stay)"),
    # scoring
    Rule("scoring", "scores", "customer", why="latest score per customer"),
    Rule("scoring", "score_history", "age", 2 * 365, "as_of", why="score trail for review"),
    Rule("scoring", "pending_samples", "age", 400, "sampled_at",
         condition="resolved_at IS NOT NULL", why="resolved samples only; open ones wait"),
    Rule("scoring", "labels", "age", 3 * 365, "recorded_at",
         why="resolved churn labels: model evidence, 3 years"),
    Rule("scoring", "checkpoints", "keep", holdable=False,
         why="model state, no personal data; pinned versions are the audit of decisions"),
    Rule("scoring", "model_events", "age", 3 * 365, "created_at", holdable=False,
         why="promotions, rollbacks, drift: 3 years"),
    Rule("scoring", "model_commands", "age", 365, "done_at", holdable=False,
         condition="done_at IS NOT NULL", why="operator commands, once done"),
    # lifecycle
    Rule("lifecycle", "customer_stages", "customer", why="current stage per customer"),
    Rule("lifecycle", "stage_history", "age", 7 * 365, "transition_at",
         why="why a customer was treated as they were: 7 years"),
    Rule("lifecycle", "facts", "age", 2 * 365, "occurred_at",
         why="activity facts the stage rules read; the longest rule window is under 2 years"),
    # engagement
    Rule("engagement", "contacts", "customer", why="what the contact policy needs"),
    Rule("engagement", "consents", "customer",
         why="consent evidence, for the relationship"),
    Rule("engagement", "actions", "age", 3 * 365, "decided_at",
         why="decisions and deliveries: caps, uplift and complaints handling, 3 years"),
    Rule("engagement", "playbooks", "keep", holdable=False, why="configuration"),
    Rule("engagement", "rm_tasks", "age", 2 * 365, "completed_at",
         condition="completed_at IS NOT NULL", why="completed RM tasks, 2 years"),
    Rule("engagement", "outcomes", "age", 3 * 365, "at", holdable=False,
         why="outcomes of actions, as long as the actions"),
    Rule("engagement", "churn_events", "age", 3 * 365, "at", why="uplift evidence"),
    # ingress (partner lanes)
    Rule("ingress", "partners", "keep", holdable=False,
         why="which partners exist and when they were removed: contract record"),
    Rule("ingress", "partner_customers", "customer",
         why="which partner may speak for which customer, for the relationship"),
    # The key store.
    Rule("privacy", "customer_keys", "customer",
         why="one data key per customer, shredded at erasure"),
    Rule("privacy", "shredded_customers", "keep", holdable=False,
         why="erased ids only: no key is minted again for them"),
    Rule("privacy", "legal_holds", "keep", holdable=False, why="legal record"),
    Rule("privacy", "retention_runs", "age", 7 * 365, "ran_at", holdable=False,
         why="the purge job's own record"),
)

#: Topic retention in days (applied with `tenure retention run`).
TOPIC_RETENTION_DAYS: dict[str, int] = {
    **{topic: 400 for topic in INPUT_TOPICS.values()},
    **{topic: 90 for topic in OUTPUT_TOPICS.values()},
    DLQ_TOPIC: 30,
}


def rules_for(service: str) -> list[Rule]:
    return [r for r in POLICY if r.service in (service, "*")]


def cutoff(now: datetime, rule: Rule) -> datetime:
    """The instant before which an `age` rule's rows go.

    >>> cutoff(datetime(2026, 1, 31, tzinfo=UTC), Rule("x", "t", "age", 30, "at")).isoformat()
    '2026-01-01T00:00:00+00:00'
    """
    assert rule.days is not None
    return now - rule.days * DAY


@dataclass
class RunReport:
    now: str
    removed: dict[str, int] = field(default_factory=dict)
    held: dict[str, int] = field(default_factory=dict)
    erased_customers: list[str] = field(default_factory=list)
    topics: dict[str, int] = field(default_factory=dict)


def _schemas(settings: PlatformSettings) -> dict[str, str]:
    from tenure_cli.services import SERVICE_NAMES

    out = {name: f"{settings.schema_prefix}{name}" for name in (*SERVICE_NAMES, "ingress")}
    out["privacy"] = f"{settings.schema_prefix}privacy"
    return out


async def _tables(conn: AsyncConnection, schema: str) -> set[str]:
    rows = await conn.execute(
        sa.text("SELECT table_name FROM information_schema.tables WHERE table_schema = :s"),
        {"s": schema},
    )
    return set(rows.scalars())


async def purge(
    conn: AsyncConnection, settings: PlatformSettings, now: datetime, report: RunReport
) -> None:
    """One pass of every `age` rule over every schema, legal holds respected."""
    schemas = _schemas(settings)
    holds = f'"{schemas["privacy"]}".legal_holds'
    for service, schema in schemas.items():
        present = await _tables(conn, schema)
        for rule in rules_for(service):
            if rule.kind != "age" or rule.table not in present:
                continue
            where = f"{rule.column} < :cutoff"
            if rule.condition:
                where += f" AND {rule.condition}"
            target = f'"{schema}".{rule.table}'
            params = {"cutoff": cutoff(now, rule)}
            if rule.holdable:
                held_sql = (f"EXISTS (SELECT 1 FROM {holds} h WHERE h.customer_id = "
                            f"{target}.customer_id AND h.released_at IS NULL)")
                held = await conn.scalar(
                    sa.text(f"SELECT count(*) FROM {target} WHERE {where} AND {held_sql}"), params
                )
                where += f" AND NOT {held_sql}"
            else:
                held = 0
            result = await conn.execute(sa.text(f"DELETE FROM {target} WHERE {where}"), params)
            name = f"{service}.{rule.table}"
            report.removed[name] = int(result.rowcount or 0)
            if held:
                report.held[name] = int(held)
            await conn.execute(
                sa.text(f'INSERT INTO "{schemas["privacy"]}".retention_runs '
                        "(target, removed, held) VALUES (:t, :r, :h)"),
                {"t": name, "r": report.removed[name], "h": int(held or 0)},
            )


async def forget_erased_mappings(
    conn: AsyncConnection, settings: PlatformSettings, report: RunReport
) -> None:
    """Partner-to-bank id mappings of erased customers: the ingress reads partner topics only,
    so it never sees `customer.erased`; the nightly run removes what erasure left there."""
    schemas = _schemas(settings)
    if "partner_customers" not in await _tables(conn, schemas["ingress"]):
        return
    result = await conn.execute(sa.text(
        f'DELETE FROM "{schemas["ingress"]}".partner_customers m '
        f'USING "{schemas["privacy"]}".shredded_customers s WHERE m.customer_id = s.customer_id'
    ))
    report.removed["ingress.partner_customers"] = int(result.rowcount or 0)


async def ended_relationships(
    conn: AsyncConnection, settings: PlatformSettings, now: datetime
) -> tuple[list[str], list[str]]:
    """(customers to erase, customers kept by a legal hold): profile customers with no open
    account and no event for RELATIONSHIP_YEARS years."""
    schemas = _schemas(settings)
    profile = f'"{schemas["profile"]}"'
    holds = f'"{schemas["privacy"]}".legal_holds'
    rows = await conn.execute(
        sa.text(
            f"SELECT c.customer_id, EXISTS (SELECT 1 FROM {holds} h WHERE h.customer_id = "
            f"c.customer_id AND h.released_at IS NULL) AS held FROM {profile}.customers c "
            "WHERE coalesce(c.last_event_at, c.updated_at) < :cutoff AND NOT EXISTS ("
            f"SELECT 1 FROM {profile}.accounts a WHERE a.customer_id = c.customer_id "
            "AND a.closed_at IS NULL) ORDER BY c.customer_id"
        ),
        {"cutoff": now - RELATIONSHIP_YEARS * 365 * DAY},
    )
    erase, kept = [], []
    for customer_id, held in rows:
        (kept if held else erase).append(customer_id)
    return erase, kept


def erasure_event(customer_id: str, now: datetime) -> CustomerErased:
    return CustomerErased(
        event_id=derived_event_id("customer.erased", customer_id),
        customer_id=customer_id,
        occurred_at=now,
        source="tenure-profile",
        payload=ErasureRequest(requested_by="retention-policy"),
    )


async def apply_topic_retention(settings: PlatformSettings) -> dict[str, int]:
    """Set each topic's retention.ms. AlterConfigs replaces a topic's whole dynamic config,
    so the request carries the platform's other settings of the topic too."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    from shared.topics import topic_configs

    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap,
                                request_timeout_ms=30_000)
    await admin.start()
    try:
        resources = [
            ConfigResource(ConfigResourceType.TOPIC, settings.topic(topic), configs={
                **topic_configs(topic), "retention.ms": str(days * 86_400_000)})
            for topic, days in TOPIC_RETENTION_DAYS.items()
        ]
        responses = await admin.alter_configs(resources)
    finally:
        await admin.close()
    for response in responses:
        for error_code, message, _type, name in response.resources:
            if error_code:
                raise RuntimeError(f"topic {name}: retention not set ({error_code}: {message})")
    return dict(TOPIC_RETENTION_DAYS)


async def run(
    settings: PlatformSettings, *, now: datetime | None = None, topics: bool = True,
    erase: bool = True,
) -> RunReport:
    """Purge every table by its rule, erase ended relationships, set topic retention."""
    now = now or datetime.now(UTC)
    report = RunReport(now=now.isoformat())
    key_settings = KeySettings(**settings.model_dump(include=set(PlatformSettings.model_fields)))
    engine = create_async_engine(settings.database_url, pool_size=1)
    try:
        async with engine.begin() as conn:
            await ensure_schema(conn, key_settings.privacy_schema)
            await purge(conn, settings, now, report)
            await forget_erased_mappings(conn, settings, report)
            to_erase, kept = await ended_relationships(conn, settings, now)
            if kept:
                report.held["profile.customers"] = len(kept)
    finally:
        await engine.dispose()
    if erase and to_erase:
        from tenure_cli.publish import EventPublisher

        async with EventPublisher(settings, seal_pii=False) as publisher:
            for customer_id in to_erase:
                await publisher.send(erasure_event(customer_id, now))
        report.erased_customers = to_erase
    if topics:
        report.topics = await apply_topic_retention(settings)
    return report


async def place_hold(
    settings: PlatformSettings, customer_id: str, *, reason: str, placed_by: str
) -> int:
    schema = _schemas(settings)["privacy"]
    engine = create_async_engine(settings.database_url, pool_size=1)
    try:
        async with engine.begin() as conn:
            await ensure_schema(conn, schema)
            return int(await conn.scalar(
                sa.text(f'INSERT INTO "{schema}".legal_holds (customer_id, reason, placed_by) '
                        "VALUES (:c, :r, :p) RETURNING hold_id"),
                {"c": customer_id, "r": reason, "p": placed_by},
            ))
    finally:
        await engine.dispose()


async def release_hold(settings: PlatformSettings, hold_id: int) -> bool:
    schema = _schemas(settings)["privacy"]
    engine = create_async_engine(settings.database_url, pool_size=1)
    try:
        async with engine.begin() as conn:
            await ensure_schema(conn, schema)
            result = await conn.execute(
                sa.text(f'UPDATE "{schema}".legal_holds SET released_at = now() '
                        "WHERE hold_id = :h AND released_at IS NULL"),
                {"h": hold_id},
            )
            return bool(result.rowcount)
    finally:
        await engine.dispose()


# ------------------------------------------------------------------ CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="retention_command", required=True)
    run_p = sub.add_parser("run", help="purge what is past its retention period (idempotent)")
    run_p.add_argument("--no-topics", action="store_true", help="leave topic configs alone")
    run_p.add_argument("--no-erase", action="store_true",
                       help="report ended relationships without erasing them")
    sub.add_parser("policy", help="print every table's and topic's retention period")
    hold = sub.add_parser("hold", help="place a legal hold on a customer")
    hold.add_argument("customer_id")
    hold.add_argument("--reason", required=True)
    hold.add_argument("--by", default="cli", help="who places the hold")
    release = sub.add_parser("release", help="release a legal hold by its id")
    release.add_argument("hold_id", type=int)


def main(args: argparse.Namespace) -> int:
    settings = PlatformSettings()
    command = args.retention_command
    if command == "policy":
        print(json.dumps({"tables": [asdict(r) for r in POLICY],
                          "topics_days": TOPIC_RETENTION_DAYS}, indent=2))
        return 0
    if command == "run":
        report = asyncio.run(run(settings, topics=not args.no_topics, erase=not args.no_erase))
        print(json.dumps(asdict(report), indent=2))
        return 0
    if command == "hold":
        hold_id = asyncio.run(place_hold(settings, args.customer_id, reason=args.reason,
                                         placed_by=args.by))
        print(f"legal hold {hold_id} placed")
        return 0
    if command == "release":
        if not asyncio.run(release_hold(settings, args.hold_id)):
            print(f"no active legal hold {args.hold_id}", file=sys.stderr)
            return 2
        print(f"legal hold {args.hold_id} released")
        return 0
    raise AssertionError(command)

