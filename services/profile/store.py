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
from shared.events import EnvelopeBase

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
UPSERT_CONSENT = _upsert_consent()
UPSERT_ACCOUNTS = _upsert_accounts()
_ATTRIBUTE_UPSERTS: dict[tuple[str, ...], Any] = {}


@dataclass
class Touch:
    """The last event of a customer in this batch: what the profile.updated answers to."""

    event: EnvelopeBase
    now: datetime


@dataclass
class ProfileStore:
    conn: AsyncConnection
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
