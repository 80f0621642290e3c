"""Profile's read side: figures as of a date, population histograms, lists, timeline, audit,
erasure. SQL that aggregates in PostgreSQL, so no request scans every profile."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from services.profile.store import (
    accounts,
    activity_days,
    blind_index,
    complaints,
    customer_pii,
    customers,
    timeline,
)

# Windows are the days (as_of - N, as_of], UTC days, as_of inclusive.
_FIGURES = sa.text(
    """
    SELECT a.customer_id,
      coalesce(sum(a.transactions) FILTER (WHERE a.day > q.d - 30), 0) AS frequency_30,
      coalesce(sum(a.transactions) FILTER (WHERE a.day > q.d - 90), 0) AS frequency_90,
      coalesce(sum(a.transactions), 0) AS frequency_365,
      coalesce(sum(a.amount) FILTER (WHERE a.day > q.d - 30), 0) AS monetary_30,
      coalesce(sum(a.amount) FILTER (WHERE a.day > q.d - 90), 0) AS monetary_90,
      coalesce(sum(a.amount), 0) AS monetary_365,
      coalesce(sum(a.card_spend), 0) AS card_spend_365,
      coalesce(sum(a.sessions) FILTER (WHERE a.day > q.d - 30), 0) AS sessions_30,
      coalesce(sum(a.sessions) FILTER (WHERE a.day > q.d - 60 AND a.day <= q.d - 30), 0)
        AS sessions_prev_30,
      count(*) FILTER (WHERE a.day > q.d - 30
        AND (a.transactions > 0 OR a.app_events > 0 OR a.feedback > 0)) AS active_days_30,
      coalesce(sum(a.salary_credits) FILTER (WHERE a.day > q.d - 90), 0) AS salary_credits_90,
      max(a.day) FILTER (WHERE a.salary_credits > 0) AS last_salary_day,
      coalesce(sum(a.ch_branch) FILTER (WHERE a.day > q.d - 90), 0) AS ch_branch,
      coalesce(sum(a.ch_atm) FILTER (WHERE a.day > q.d - 90), 0) AS ch_atm,
      coalesce(sum(a.ch_mobile) FILTER (WHERE a.day > q.d - 90), 0) AS ch_mobile,
      coalesce(sum(a.ch_web) FILTER (WHERE a.day > q.d - 90), 0) AS ch_web,
      coalesce(sum(a.ch_call_centre) FILTER (WHERE a.day > q.d - 90), 0) AS ch_call_centre,
      coalesce(sum(a.ch_pos) FILTER (WHERE a.day > q.d - 90), 0) AS ch_pos
    FROM unnest(CAST(:ids AS text[]), CAST(:days AS date[])) AS q(customer_id, d)
    JOIN activity_days a ON a.customer_id = q.customer_id
     AND a.day > q.d - 365 AND a.day <= q.d
    GROUP BY a.customer_id
    """
)


async def figures(conn: AsyncConnection, as_of: dict[str, date]) -> dict[str, dict[str, Any]]:
    """Windowed activity figures per customer, each as of their own date."""
    if not as_of:
        return {}
    ids = list(as_of)
    rows = await conn.execute(_FIGURES, {"ids": ids, "days": [as_of[c] for c in ids]})
    return {r.customer_id: dict(r._mapping) for r in rows}


async def complaints_of(conn: AsyncConnection, ids: Iterable[str]) -> dict[str, list[dict[str, Any]]]:
    ids = list(ids)
    out: dict[str, list[dict[str, Any]]] = {c: [] for c in ids}
    if not ids:
        return out
    rows = await conn.execute(
        sa.select(complaints).where(complaints.c.customer_id.in_(ids))
        .order_by(complaints.c.opened_at)
    )
    for r in rows:
        out[r.customer_id].append(dict(r._mapping))
    return out


# The customer view's reads in one round trip (one statement, so one snapshot): the customer
# row, and as JSON beside it their accounts, complaints, encrypted personal-data tokens and the
# population histograms. A GET then costs two statements (this and the windowed figures).
_BUNDLE = sa.text(
    """
    SELECT c.*,
      (SELECT CAST(coalesce(json_agg(to_jsonb(a) ORDER BY a.account_id), '[]') AS text)
         FROM accounts a WHERE a.customer_id = c.customer_id) AS bundle_accounts,
      (SELECT CAST(coalesce(json_agg(to_jsonb(k) ORDER BY k.opened_at), '[]') AS text)
         FROM complaints k WHERE k.customer_id = c.customer_id) AS bundle_complaints,
      (SELECT CAST(coalesce(json_object_agg(p.field, encode(p.token, 'base64')), '{}') AS text)
         FROM customer_pii p WHERE p.customer_id = c.customer_id) AS bundle_pii,
      (SELECT CAST(coalesce(json_agg(json_build_array(measure, bucket, customers)), '[]')
                   AS text)
         FROM population WHERE customers > 0) AS bundle_population
    FROM customers c WHERE c.customer_id = :id
    """
).columns(**{c.name: c.type for c in customers.c})  # by name: JSONB columns decoded


@dataclass(frozen=True)
class Bundle:
    """What the customer view reads of one customer (and the population's histograms)."""

    customer: dict[str, Any]  # the customers row, with "accounts" as ProfileStore.load gives
    complaints: list[dict[str, Any]]
    pii: dict[str, bytes]
    population: dict[str, dict[int, int]]


def _typed(table: sa.Table, row: dict[str, Any]) -> dict[str, Any]:
    """A row that PostgreSQL rendered as JSON, back in the types the table's columns give."""
    out: dict[str, Any] = {}
    for column in table.c:
        value = row.get(column.name)
        if value is not None:
            if isinstance(column.type, sa.DateTime):
                value = datetime.fromisoformat(value)
            elif isinstance(column.type, sa.Numeric) and not isinstance(column.type, sa.Float):
                value = Decimal(value) if not isinstance(value, Decimal) else value
        out[column.name] = value
    return out


async def bundle(conn: AsyncConnection, customer_id: str) -> Bundle | None:
    """One customer's row, accounts, complaints, personal-data tokens and the population."""
    row = (await conn.execute(_BUNDLE, {"id": customer_id})).mappings().first()
    if row is None:
        return None
    data = dict(row)
    accounts_json = json.loads(data.pop("bundle_accounts"), parse_float=Decimal)
    complaints_json = json.loads(data.pop("bundle_complaints"))
    pii_json = json.loads(data.pop("bundle_pii"))
    population_json = json.loads(data.pop("bundle_population"))
    data["accounts"] = [_typed(accounts, a) for a in accounts_json]
    population_out: dict[str, dict[int, int]] = {}
    for measure, b, n in population_json:
        population_out.setdefault(measure, {})[int(b)] = int(n)
    return Bundle(
        customer=data,
        complaints=[_typed(complaints, k) for k in complaints_json],
        pii={f: base64.b64decode(t) for f, t in pii_json.items() if t is not None},
        population=population_out,
    )


_POPULATION = sa.text("SELECT measure, bucket, customers FROM population WHERE customers > 0")
_MOVE = sa.text(
    "INSERT INTO population (measure, bucket, customers) VALUES (:measure, :bucket, :delta) "
    "ON CONFLICT (measure, bucket) DO UPDATE SET customers = population.customers + :delta"
)


async def population(conn: AsyncConnection) -> dict[str, dict[int, int]]:
    out: dict[str, dict[int, int]] = {}
    for r in await conn.execute(_POPULATION):
        out.setdefault(r.measure, {})[r.bucket] = int(r.customers)
    return out


async def move_population(conn: AsyncConnection, deltas: dict[tuple[str, int], int]) -> None:
    rows = [
        {"measure": m, "bucket": b, "delta": d} for (m, b), d in sorted(deltas.items()) if d
    ]
    if rows:
        await conn.execute(_MOVE, rows)


async def timeline_of(conn: AsyncConnection, customer_id: str, limit: int) -> list[dict[str, Any]]:
    rows = await conn.execute(
        sa.select(timeline)
        .where(timeline.c.customer_id == customer_id)
        .order_by(timeline.c.occurred_at.desc(), timeline.c.event_id)
        .limit(limit)
    )
    return [dict(r._mapping) for r in rows]


async def pii_of(conn: AsyncConnection, customer_id: str) -> dict[str, bytes]:
    rows = await conn.execute(
        sa.select(customer_pii.c.field, customer_pii.c.token).where(
            customer_pii.c.customer_id == customer_id
        )
    )
    return {r.field: r.token for r in rows}


async def find_by_index(conn: AsyncConnection, kind: str, digest: bytes) -> list[str]:
    rows = await conn.execute(
        sa.select(blind_index.c.customer_id)
        .where(blind_index.c.kind == kind, blind_index.c.digest == digest)
        .order_by(blind_index.c.customer_id)
    )
    return list(rows.scalars())


async def page(
    conn: AsyncConnection,
    *,
    segment: str | None,
    tier: str | None,
    tag: str | None,
    stage: str | None,
    min_churn: float | None,
    only: list[str] | None,
    rm_id: str | None,
    after: str | None,
    limit: int,
) -> list[dict[str, Any]]:
    c = customers.c
    query = sa.select(
        c.customer_id, c.segment, c.rm_id, c.rfm_segment, c.value_tier, c.quadrant, c.stage,
        c.churn_probability, c.churn_band, c.tags, c.clv, c.last_activity_at,
    ).order_by(c.customer_id).limit(limit)
    if segment:
        query = query.where(c.rfm_segment == segment)
    if tier:
        query = query.where(c.value_tier == tier)
    if tag:
        query = query.where(c.tags.contains([tag]))
    if stage:
        query = query.where(c.stage == stage)
    if min_churn is not None:
        query = query.where(c.churn_probability >= min_churn)
    if only is not None:
        query = query.where(c.customer_id.in_(only))
    if rm_id is not None:
        query = query.where(c.rm_id == rm_id)
    if after:
        query = query.where(c.customer_id > after)
    return [dict(r._mapping) for r in await conn.execute(query)]


async def segment_counts(conn: AsyncConnection) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for column in ("rfm_segment", "value_tier", "quadrant", "stage"):
        col = customers.c[column]
        rows = await conn.execute(sa.select(col, sa.func.count()).group_by(col))
        out[column] = {str(k) if k is not None else "unknown": int(n) for k, n in rows}
    return out


async def audit(
    conn: AsyncConnection, *, subject: str, kind: str, action: str, customer_id: str | None,
    purpose: str | None, detail: dict[str, Any] | None = None,
) -> None:
    await conn.execute(
        sa.text(
            "INSERT INTO audit_log (subject, kind, action, customer_id, purpose, detail) "
            "VALUES (:s, :k, :a, :c, :p, CAST(:d AS jsonb))"
        ),
        {"s": subject, "k": kind, "a": action, "c": customer_id, "p": purpose,
         "d": json.dumps(detail or {})},
    )


async def erase(
    conn: AsyncConnection, customer_id: str, at: datetime, *, privacy_schema: str | None = None
) -> bool:
    """Remove everything profile keeps about the customer; remember the id (replays).

    With `privacy_schema`, the customer's data key is shredded in the same transaction, so
    every sealed copy of their personal data on topics and in the DLQ becomes unreadable.
    """
    existed = bool(
        await conn.scalar(sa.select(sa.func.count()).where(customers.c.customer_id == customer_id))
    )
    buckets = await conn.scalar(
        sa.select(customers.c.buckets).where(customers.c.customer_id == customer_id)
    )
    deltas = {(m, int(b)): -1 for m, b in (buckets or {}).items() if b is not None}
    await move_population(conn, deltas)
    for table in (customer_pii, blind_index, activity_days, complaints, timeline, accounts,
                  customers):
        await conn.execute(sa.delete(table).where(table.c.customer_id == customer_id))
    await conn.execute(
        sa.text(
            "INSERT INTO erased_customers (customer_id, erased_at) VALUES (:c, :t) "
            "ON CONFLICT DO NOTHING"
        ),
        {"c": customer_id, "t": at},
    )
    if privacy_schema is not None:
        from shared.keys import shred

        await shred(conn, privacy_schema, customer_id)
    return existed


async def tokens_of(conn: AsyncConnection, ids: list[str], field: str) -> dict[str, bytes]:
    rows = await conn.execute(
        sa.select(customer_pii.c.customer_id, customer_pii.c.token).where(
            customer_pii.c.customer_id.in_(ids), customer_pii.c.field == field
        )
    )
    return {r.customer_id: r.token for r in rows}
