"""Ingress tables: the partner registry and the shared-customer mapping (schema `ingress`)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

_meta = sa.MetaData()
partners = sa.Table(
    "partners",
    _meta,
    sa.Column("partner_id", sa.Text, primary_key=True),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True)),
    sa.Column("rotated_at", sa.DateTime(timezone=True)),
    sa.Column("removed_at", sa.DateTime(timezone=True)),
)
partner_customers = sa.Table(
    "partner_customers",
    _meta,
    sa.Column("partner_id", sa.Text, primary_key=True),
    sa.Column("partner_customer_id", sa.Text, primary_key=True),
    sa.Column("customer_id", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True)),
)


class UnknownPartner(LookupError):
    pass


async def lookup(
    conn: AsyncConnection, pairs: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], str]:
    """The bank's customer id for each (partner, partner's customer id) that is mapped."""
    wanted = sorted(set(pairs))
    if not wanted:
        return {}
    rows = await conn.execute(
        sa.select(
            partner_customers.c.partner_id,
            partner_customers.c.partner_customer_id,
            partner_customers.c.customer_id,
        ).where(
            sa.tuple_(partner_customers.c.partner_id, partner_customers.c.partner_customer_id).in_(
                wanted
            )
        )
    )
    return {(r.partner_id, r.partner_customer_id): r.customer_id for r in rows}


async def register(conn: AsyncConnection, partner_id: str, now: datetime) -> bool:
    """Record a partner as active; False if it already was."""
    stmt = pg_insert(partners).values(partner_id=partner_id, status="active", created_at=now)
    stmt = stmt.on_conflict_do_update(
        index_elements=[partners.c.partner_id],
        set_={"status": "active", "removed_at": None, "created_at": now},
        where=partners.c.status != "active",
    ).returning(partners.c.partner_id)
    return (await conn.execute(stmt)).first() is not None


async def mark_removed(conn: AsyncConnection, partner_id: str, now: datetime) -> bool:
    result = await conn.execute(
        partners.update()
        .where(partners.c.partner_id == partner_id, partners.c.status == "active")
        .values(status="removed", removed_at=now)
    )
    return bool(result.rowcount)


async def mark_rotated(conn: AsyncConnection, partner_id: str, now: datetime) -> None:
    await conn.execute(
        partners.update().where(partners.c.partner_id == partner_id).values(rotated_at=now)
    )


async def partner(conn: AsyncConnection, partner_id: str) -> dict[str, Any] | None:
    row = (
        await conn.execute(sa.select(partners).where(partners.c.partner_id == partner_id))
    ).first()
    return dict(row._mapping) if row else None


async def all_partners(conn: AsyncConnection) -> list[dict[str, Any]]:
    counts = (
        sa.select(partner_customers.c.partner_id, sa.func.count().label("mapped_customers"))
        .group_by(partner_customers.c.partner_id)
        .subquery()
    )
    rows = await conn.execute(
        sa.select(partners, sa.func.coalesce(counts.c.mapped_customers, 0).label("mapped_customers"))
        .select_from(partners.outerjoin(counts, counts.c.partner_id == partners.c.partner_id))
        .order_by(partners.c.partner_id)
    )
    return [dict(r._mapping) for r in rows]


async def map_customer(
    conn: AsyncConnection, partner_id: str, partner_customer_id: str, customer_id: str,
    now: datetime,
) -> None:
    """Let the partner speak for the bank's customer under its own id (replaces a mapping)."""
    if await partner(conn, partner_id) is None:
        raise UnknownPartner(f"no partner {partner_id!r}: add it first (tenure partners add)")
    stmt = pg_insert(partner_customers).values(
        partner_id=partner_id, partner_customer_id=partner_customer_id,
        customer_id=customer_id, created_at=now,
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=[partner_customers.c.partner_id, partner_customers.c.partner_customer_id],
        set_={"customer_id": customer_id, "created_at": now},
    )
    await conn.execute(stmt)


async def unmap_customer(conn: AsyncConnection, partner_id: str, partner_customer_id: str) -> bool:
    result = await conn.execute(
        partner_customers.delete().where(
            partner_customers.c.partner_id == partner_id,
            partner_customers.c.partner_customer_id == partner_customer_id,
        )
    )
    return bool(result.rowcount)


async def mappings(
    conn: AsyncConnection, partner_id: str, *, limit: int, after: str | None = None
) -> list[dict[str, Any]]:
    query = (
        sa.select(partner_customers.c.partner_customer_id, partner_customers.c.customer_id,
                  partner_customers.c.created_at)
        .where(partner_customers.c.partner_id == partner_id)
        .order_by(partner_customers.c.partner_customer_id)
        .limit(limit)
    )
    if after is not None:
        query = query.where(partner_customers.c.partner_customer_id > after)
    return [dict(r._mapping) for r in await conn.execute(query)]


class IngressStore:
    """The consumer's store: the kit calls `erase` when the bank erases a customer, so no
    partner can be mapped to (and speak for) them any more."""

    def __init__(self, conn: AsyncConnection):
        self.conn = conn

    async def erase(self, customer_id: str) -> None:
        await self.conn.execute(
            partner_customers.delete().where(partner_customers.c.customer_id == customer_id)
        )
