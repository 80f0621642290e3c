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
    sa.Column("margin_rate", sa.Numeric(9, 6)),
    sa.Column("opened_at", sa.DateTime(timezone=True)),
    sa.Column("closed_at", sa.DateTime(timezone=True)),
    sa.Column("close_reason", sa.Text),
)


@dataclass
class Touch:
    """The last event of a customer in this batch: what the profile.updated answers to."""

    event: EnvelopeBase
    now: datetime


@dataclass
class ProfileStore:
    conn: AsyncConnection
    touched: dict[str, Touch] = field(default_factory=dict)

    def touch(self, event: EnvelopeBase, now: datetime) -> None:
        self.touched[event.customer_id] = Touch(event, now)

    async def upsert_customer(self, customer_id: str, event_time: datetime, **values: Any) -> None:
        stmt = pg_insert(customers).values(
            customer_id=customer_id, last_event_at=event_time, **values
        )
        update = {k: stmt.excluded[k] for k in values}
        update["last_event_at"] = sa.func.greatest(
            customers.c.last_event_at, stmt.excluded.last_event_at
        )
        update["updated_at"] = sa.func.now()
        await self.conn.execute(
            stmt.on_conflict_do_update(index_elements=[customers.c.customer_id], set_=update)
        )

    async def record_activity(
        self, customer_id: str, at: datetime, *, customer_initiated: bool, transactions: int
    ) -> None:
        """Counts a transaction and moves first/last customer-initiated activity (event time)."""
        activity = at if customer_initiated else None
        stmt = pg_insert(customers).values(
            customer_id=customer_id,
            last_event_at=at,
            first_activity_at=activity,
            last_activity_at=activity,
            transaction_count=transactions,
        )
        c = customers.c
        await self.conn.execute(
            stmt.on_conflict_do_update(
                index_elements=[c.customer_id],
                set_={
                    "last_event_at": sa.func.greatest(c.last_event_at, stmt.excluded.last_event_at),
                    "first_activity_at": sa.func.least(
                        c.first_activity_at, stmt.excluded.first_activity_at
                    ),
                    "last_activity_at": sa.func.greatest(
                        c.last_activity_at, stmt.excluded.last_activity_at
                    ),
                    "transaction_count": c.transaction_count + stmt.excluded.transaction_count,
                    "updated_at": sa.func.now(),
                },
            )
        )

    async def set_consent(self, customer_id: str, at: datetime, key: str, granted: bool) -> None:
        stmt = pg_insert(customers).values(
            customer_id=customer_id, last_event_at=at, consent={key: granted}
        )
        await self.conn.execute(
            stmt.on_conflict_do_update(
                index_elements=[customers.c.customer_id],
                set_={
                    "consent": customers.c.consent.op("||")(stmt.excluded.consent),
                    "last_event_at": sa.func.greatest(
                        customers.c.last_event_at, stmt.excluded.last_event_at
                    ),
                },
            )
        )

    async def open_account(self, customer_id: str, **values: Any) -> None:
        stmt = pg_insert(accounts).values(customer_id=customer_id, **values)
        await self.conn.execute(
            stmt.on_conflict_do_update(
                index_elements=[accounts.c.customer_id, accounts.c.account_id],
                set_={
                    "product_type": stmt.excluded.product_type,
                    "currency": stmt.excluded.currency,
                    "margin_rate": sa.func.coalesce(
                        stmt.excluded.margin_rate, accounts.c.margin_rate
                    ),
                    "opened_at": sa.func.least(accounts.c.opened_at, stmt.excluded.opened_at),
                },
            )
        )

    async def close_account(
        self, customer_id: str, account_id: str, product_type: str, currency: str,
        at: datetime, reason: str | None,
    ) -> None:
        stmt = pg_insert(accounts).values(
            customer_id=customer_id, account_id=account_id, product_type=product_type,
            currency=currency, closed_at=at, close_reason=reason,
        )
        await self.conn.execute(
            stmt.on_conflict_do_update(
                index_elements=[accounts.c.customer_id, accounts.c.account_id],
                set_={"closed_at": stmt.excluded.closed_at, "close_reason": stmt.excluded.close_reason},
            )
        )

    async def set_balance(
        self, customer_id: str, account_id: str, product_type: str, currency: str,
        balance: Decimal, at: datetime,
    ) -> None:
        """The balance a transaction reports; an account first seen here counts as opened then."""
        stmt = pg_insert(accounts).values(
            customer_id=customer_id, account_id=account_id, product_type=product_type,
            currency=currency, balance=balance, opened_at=at,
        )
        await self.conn.execute(
            stmt.on_conflict_do_update(
                index_elements=[accounts.c.customer_id, accounts.c.account_id],
                set_={"balance": stmt.excluded.balance},
            )
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
