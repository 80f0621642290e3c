"""Engagement's tables and queries (schema `engagement`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

metadata = sa.MetaData()
contacts = sa.Table(
    "contacts",
    metadata,
    sa.Column("customer_id", sa.Text, primary_key=True),
    sa.Column("time_zone", sa.Text),
    sa.Column("rm_id", sa.Text),
    sa.Column("flags", JSONB),
    sa.Column("value_tier", sa.Text),
    sa.Column("tags", JSONB),
)
consents = sa.Table(
    "consents",
    metadata,
    sa.Column("customer_id", sa.Text, primary_key=True),
    sa.Column("channel", sa.Text, primary_key=True),
    sa.Column("purpose", sa.Text, primary_key=True),
    sa.Column("granted", sa.Boolean),
    sa.Column("changed_at", sa.DateTime(timezone=True)),
)
actions = sa.Table(
    "actions",
    metadata,
    sa.Column("action_id", sa.Uuid, primary_key=True),
    sa.Column("customer_id", sa.Text),
    sa.Column("playbook", sa.Text),
    sa.Column("action", sa.Text),
    sa.Column("channel", sa.Text),
    sa.Column("decision", sa.Text),
    sa.Column("reason", sa.Text),
    sa.Column("policy", JSONB),
    sa.Column("trigger_event_id", sa.Uuid),
    sa.Column("decided_at", sa.DateTime(timezone=True)),
)


@dataclass
class EngagementStore:
    conn: AsyncConnection


    async def erase(self, customer_id: str) -> None:
        """customer.erased: everything this service keeps about the customer goes."""
        await self.conn.execute(sa.delete(contacts).where(contacts.c.customer_id == customer_id))
        await self.conn.execute(sa.delete(consents).where(consents.c.customer_id == customer_id))
        await self.conn.execute(sa.delete(actions).where(actions.c.customer_id == customer_id))

    async def upsert_contact(self, customer_id: str, **values: Any) -> None:
        stmt = pg_insert(contacts).values(customer_id=customer_id, **values)
        await self.conn.execute(
            stmt.on_conflict_do_update(
                index_elements=[contacts.c.customer_id],
                set_={k: stmt.excluded[k] for k in values},
            )
        )

    async def set_consent(
        self, customer_id: str, channel: str, purpose: str, granted: bool, at: datetime
    ) -> None:
        stmt = pg_insert(consents).values(
            customer_id=customer_id, channel=channel, purpose=purpose, granted=granted,
            changed_at=at,
        )
        await self.conn.execute(
            stmt.on_conflict_do_update(
                index_elements=[consents.c.customer_id, consents.c.channel, consents.c.purpose],
                set_={"granted": stmt.excluded.granted, "changed_at": stmt.excluded.changed_at},
                where=consents.c.changed_at <= stmt.excluded.changed_at,
            )
        )

    async def consent_of(self, customer_id: str) -> dict[tuple[str, str], bool]:
        rows = await self.conn.execute(
            sa.select(consents).where(consents.c.customer_id == customer_id)
        )
        return {(r.channel, r.purpose): r.granted for r in rows}

    async def contact(self, customer_id: str) -> dict[str, Any] | None:
        row = (
            await self.conn.execute(sa.select(contacts).where(contacts.c.customer_id == customer_id))
        ).first()
        return dict(row._mapping) if row else None

    async def record_action(self, row: dict[str, Any]) -> None:
        await self.conn.execute(pg_insert(actions).values(**row).on_conflict_do_nothing())

    async def actions_of(self, customer_id: str, limit: int = 100) -> list[dict[str, Any]]:
        rows = await self.conn.execute(
            sa.select(actions)
            .where(actions.c.customer_id == customer_id)
            .order_by(actions.c.decided_at.desc())
            .limit(limit)
        )
        return [dict(r._mapping) for r in rows]
