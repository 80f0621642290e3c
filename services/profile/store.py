"""Profile's tables and queries (schema `profile`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from services.profile.domain import ProfileFold
from services.profile.pii import BlindIndex, FieldCipher, key_id_of
from shared.events import EnvelopeBase
from shared.keys import PiiOpener

metadata = sa.MetaData()

customers = sa.Table(
    "customers",
    metadata,
    sa.Column("customer_id", sa.Text, primary_key=True),
    sa.Column("registered", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("segment", sa.Text),
    sa.Column("time_zone", sa.Text, nullable=False, server_default="UTC"),
    sa.Column("language", sa.Text, nullable=False, server_default="en"),
    sa.Column("rm_id", sa.Text),
    sa.Column("flags", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
    sa.Column("consent", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
    sa.Column("registered_at", sa.DateTime(timezone=True)),
    sa.Column("first_activity_at", sa.DateTime(timezone=True)),
    sa.Column("last_activity_at", sa.DateTime(timezone=True)),
    sa.Column("last_event_at", sa.DateTime(timezone=True)),
    sa.Column("transaction_count", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
    sa.Column("last_nps", sa.SmallInteger),
    sa.Column("last_nps_at", sa.DateTime(timezone=True)),
    sa.Column("churn_probability", sa.Float),
    sa.Column("churn_band", sa.Text),
    sa.Column("churn_reasons", JSONB),
    sa.Column("churn_as_of", sa.DateTime(timezone=True)),
    sa.Column("stage", sa.Text),
    sa.Column("stage_since", sa.DateTime(timezone=True)),
    sa.Column("tags", JSONB),
    sa.Column("buckets", JSONB),
    sa.Column("rfm_segment", sa.Text),
    sa.Column("value_tier", sa.Text),
    sa.Column("quadrant", sa.Text),
    sa.Column("clv", sa.Float),
)

accounts = sa.Table(
    "accounts",
    metadata,
    sa.Column("customer_id", sa.Text, primary_key=True),
    sa.Column("account_id", sa.Text, primary_key=True),
    sa.Column("product_type", sa.Text, nullable=False),
    sa.Column("currency", sa.Text, nullable=False),
    sa.Column("balance", sa.Numeric(24, 6), nullable=False, server_default="0"),
    sa.Column("balance_at", sa.DateTime(timezone=True)),
    sa.Column("margin_rate", sa.Numeric(9, 6)),
    sa.Column("opened_at", sa.DateTime(timezone=True)),
    sa.Column("closed_at", sa.DateTime(timezone=True)),
    sa.Column("close_reason", sa.Text),
)


DAY_COUNTS = (
    "transactions", "amount", "card_spend", "salary_credits", "sessions", "app_events",
    "feedback", "ch_branch", "ch_atm", "ch_mobile", "ch_web", "ch_call_centre", "ch_pos",
)
activity_days = sa.Table(
    "activity_days",
    metadata,
    sa.Column("customer_id", sa.Text, primary_key=True),
    sa.Column("day", sa.Date, primary_key=True),
    *[
        sa.Column(c, sa.Numeric(24, 6) if c in ("amount", "card_spend") else sa.Integer)
        for c in DAY_COUNTS
    ],
)
customer_pii = sa.Table(
    "customer_pii",
    metadata,
    sa.Column("customer_id", sa.Text, primary_key=True),
    sa.Column("field", sa.Text, primary_key=True),
    sa.Column("token", sa.LargeBinary),
    sa.Column("key_id", sa.Text),
)
blind_index = sa.Table(
    "blind_index",
    metadata,
    sa.Column("kind", sa.Text, primary_key=True),
    sa.Column("digest", sa.LargeBinary, primary_key=True),
    sa.Column("customer_id", sa.Text, primary_key=True),
)
complaints = sa.Table(
    "complaints",
    metadata,
    sa.Column("customer_id", sa.Text, primary_key=True),
    sa.Column("complaint_id", sa.Text, primary_key=True),
    sa.Column("category", sa.Text),
    sa.Column("severity", sa.Text),
    sa.Column("opened_at", sa.DateTime(timezone=True)),
    sa.Column("resolved_at", sa.DateTime(timezone=True)),
)
timeline = sa.Table(
    "timeline",
    metadata,
    sa.Column("customer_id", sa.Text, primary_key=True),
    sa.Column("event_id", sa.Uuid, primary_key=True),
    sa.Column("occurred_at", sa.DateTime(timezone=True)),
    sa.Column("event_type", sa.Text),
    sa.Column("summary", JSONB),
)
TIMELINE_KEEP = 100


def _upsert_days() -> Any:
    stmt = pg_insert(activity_days)
    a, x = activity_days.c, stmt.excluded
    return stmt.on_conflict_do_update(
        index_elements=[a.customer_id, a.day], set_={c: a[c] + x[c] for c in DAY_COUNTS}
    )


def _upsert_complaints() -> Any:
    stmt = pg_insert(complaints)
    c, x = complaints.c, stmt.excluded
    return stmt.on_conflict_do_update(
        index_elements=[c.customer_id, c.complaint_id],
        set_={
            "category": sa.func.coalesce(x.category, c.category),
            "severity": sa.func.coalesce(x.severity, c.severity),
            "opened_at": sa.func.least(c.opened_at, x.opened_at),
            "resolved_at": sa.func.greatest(c.resolved_at, x.resolved_at),
        },
    )


def _upsert_pii() -> Any:
    stmt = pg_insert(customer_pii)
    return stmt.on_conflict_do_update(
        index_elements=[customer_pii.c.customer_id, customer_pii.c.field],
        set_={"token": stmt.excluded.token, "key_id": stmt.excluded.key_id},
    )


_TRIM_TIMELINE = sa.text(
    "DELETE FROM timeline t USING ("
    "  SELECT customer_id, event_id FROM ("
    "    SELECT customer_id, event_id, row_number() OVER ("
    "      PARTITION BY customer_id ORDER BY occurred_at DESC, event_id) AS n"
    "    FROM timeline WHERE customer_id = ANY(CAST(:ids AS text[]))) ranked"
    f"  WHERE n > {TIMELINE_KEEP}) old "
    "WHERE t.customer_id = old.customer_id AND t.event_id = old.event_id"
)


def _upsert_activity() -> Any:
    stmt = pg_insert(customers)
    c, x = customers.c, stmt.excluded
    return stmt.on_conflict_do_update(
        index_elements=[c.customer_id],
        set_={
            "last_event_at": sa.func.greatest(c.last_event_at, x.last_event_at),
            "first_activity_at": sa.func.least(c.first_activity_at, x.first_activity_at),
            "last_activity_at": sa.func.greatest(c.last_activity_at, x.last_activity_at),
            "transaction_count": c.transaction_count + x.transaction_count,
            "updated_at": sa.func.now(),
        },
    )


def _upsert_attributes(columns: tuple[str, ...]) -> Any:
    stmt = pg_insert(customers)
    c, x = customers.c, stmt.excluded
    updates: dict[str, Any] = {k: x[k] for k in columns if k != "registered_at"}
    if "registered_at" in columns:
        updates["registered_at"] = sa.func.least(c.registered_at, x.registered_at)
    return stmt.on_conflict_do_update(index_elements=[c.customer_id], set_=updates)


def _upsert_consent() -> Any:
    stmt = pg_insert(customers)
    c = customers.c
    return stmt.on_conflict_do_update(
        index_elements=[c.customer_id], set_={"consent": c.consent.op("||")(stmt.excluded.consent)}
    )


def _upsert_accounts() -> Any:
    stmt = pg_insert(accounts)
    a, x = accounts.c, stmt.excluded
    newer = sa.and_(
        x.balance_at.is_not(None), sa.or_(a.balance_at.is_(None), x.balance_at >= a.balance_at)
    )
    return stmt.on_conflict_do_update(
        index_elements=[a.customer_id, a.account_id],
        set_={
            "product_type": x.product_type,
            "currency": x.currency,
            "opened_at": sa.func.least(a.opened_at, x.opened_at),
            "closed_at": sa.func.coalesce(x.closed_at, a.closed_at),
            "close_reason": sa.func.coalesce(x.close_reason, a.close_reason),
            "margin_rate": sa.func.coalesce(x.margin_rate, a.margin_rate),
            "balance": sa.case((newer, x.balance), else_=a.balance),
            "balance_at": sa.case((newer, x.balance_at), else_=a.balance_at),
        },
    )


UPSERT_ACTIVITY = _upsert_activity()
UPSERT_DAYS = _upsert_days()
UPSERT_COMPLAINTS = _upsert_complaints()
UPSERT_PII = _upsert_pii()
INSERT_BLIND = pg_insert(blind_index).on_conflict_do_nothing()
INSERT_TIMELINE = pg_insert(timeline).on_conflict_do_nothing()
UPSERT_CONSENT = _upsert_consent()
UPSERT_ACCOUNTS = _upsert_accounts()
_ATTRIBUTE_UPSERTS: dict[tuple[str, ...], Any] = {}


@dataclass
class Touch:
    """The last event of a customer in this batch: what the profile.updated answers to."""

    event: EnvelopeBase
    now: datetime


@dataclass
class Protection:
    """What profile needs to keep personal data: the cipher, the blind index, tag rules."""

    cipher: FieldCipher
    blind: BlindIndex
    tags: Any  # services.profile.tags.TagRules, swapped on reload
    opener: PiiOpener | None = None  # opens personal fields sealed by publishers


@dataclass
class ProfileStore:
    conn: AsyncConnection
    protection: Protection | None = None
    fold: ProfileFold = field(default_factory=ProfileFold)
    touched: dict[str, Touch] = field(default_factory=dict)

    def touch(self, event: EnvelopeBase, now: datetime) -> None:
        self.touched[event.customer_id] = Touch(event, now)

    def discard(self) -> None:
        self.fold = ProfileFold()

    async def flush(self) -> None:
        """Write the batch's fold: one set-based upsert per table."""
        fold, self.fold = self.fold, ProfileFold()
        if not fold:
            return
        shapes: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for customer_id, values in fold.attributes.items():
            shapes.setdefault(tuple(sorted(values)), []).append(
                {"customer_id": customer_id, **values}
            )
        for columns, rows in shapes.items():
            stmt = _ATTRIBUTE_UPSERTS.get(columns)
            if stmt is None:
                stmt = _ATTRIBUTE_UPSERTS[columns] = _upsert_attributes(columns)
            await self.conn.execute(stmt, rows)
        if fold.consents:
            await self.conn.execute(
                UPSERT_CONSENT,
                [{"customer_id": c, "consent": v} for c, v in fold.consents.items()],
            )
        if fold.activities:
            await self.conn.execute(
                UPSERT_ACTIVITY,
                [
                    {
                        "customer_id": c,
                        "last_event_at": d.last_event_at,
                        "first_activity_at": d.first_activity_at,
                        "last_activity_at": d.last_activity_at,
                        "transaction_count": d.transactions,
                    }
                    for c, d in fold.activities.items()
                ],
            )
        if fold.accounts:
            await self.conn.execute(
                UPSERT_ACCOUNTS,
                [
                    {
                        "customer_id": c,
                        "account_id": a,
                        "product_type": d.product_type,
                        "currency": d.currency,
                        "opened_at": d.opened_at,
                        "closed_at": d.closed_at,
                        "close_reason": d.close_reason,
                        "margin_rate": d.margin_rate,
                        "balance": d.balance if d.balance is not None else Decimal(0),
                        "balance_at": d.balance_at,
                    }
                    for (c, a), d in fold.accounts.items()
                ],
            )
        await self._flush_360(fold)

    async def _flush_360(self, fold: ProfileFold) -> None:
        if fold.days:
            await self.conn.execute(
                UPSERT_DAYS,
                [
                    {"customer_id": c, "day": d, **{k: counts.get(k, 0) for k in DAY_COUNTS}}
                    for (c, d), counts in fold.days.items()
                ],
            )
        if fold.pii:
            present = [
                {"customer_id": c, "field": f, "token": t, "key_id": key_id_of(t)}
                for (c, f), t in fold.pii.items() if t is not None
            ]
            if present:
                await self.conn.execute(UPSERT_PII, present)
            for (c, f), t in fold.pii.items():
                if t is None:  # the publisher cleared the field
                    await self.conn.execute(
                        sa.delete(customer_pii).where(
                            customer_pii.c.customer_id == c, customer_pii.c.field == f
                        )
                    )
        if fold.blind:
            for (c, kind) in fold.blind:
                await self.conn.execute(
                    sa.delete(blind_index).where(
                        blind_index.c.customer_id == c, blind_index.c.kind == kind
                    )
                )
            rows = [
                {"kind": kind, "digest": d, "customer_id": c}
                for (c, kind), d in fold.blind.items() if d is not None
            ]
            if rows:
                await self.conn.execute(INSERT_BLIND, rows)
        if fold.complaints:
            await self.conn.execute(
                UPSERT_COMPLAINTS,
                [
                    {"customer_id": c, "complaint_id": k, "category": v.get("category"),
                     "severity": v.get("severity"), "opened_at": v.get("opened_at"),
                     "resolved_at": v.get("resolved_at")}
                    for (c, k), v in fold.complaints.items()
                ],
            )
        if fold.timeline:
            await self.conn.execute(INSERT_TIMELINE, fold.timeline)
            ids = sorted({row["customer_id"] for row in fold.timeline})
            await self.conn.execute(_TRIM_TIMELINE, {"ids": ids})
        for customer_id, values in fold.signals.items():
            await self.conn.execute(
                sa.update(customers).where(customers.c.customer_id == customer_id).values(**values)
            )

    async def load(self, customer_ids: list[str]) -> dict[str, dict[str, Any]]:
        """Customers with their accounts, for snapshots and the REST view."""
        if not customer_ids:
            return {}
        rows = await self.conn.execute(
            sa.select(customers).where(customers.c.customer_id.in_(customer_ids))
        )
        found = {r.customer_id: dict(r._mapping) | {"accounts": []} for r in rows}
        acc = await self.conn.execute(
            sa.select(accounts)
            .where(accounts.c.customer_id.in_(list(found)))
            .order_by(accounts.c.customer_id, accounts.c.account_id)
        )
        for a in acc:
            found[a.customer_id]["accounts"].append(dict(a._mapping))
        return found
