"""Scoring's tables and queries (schema `scoring`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from services.scoring.model import ChurnModel

metadata = sa.MetaData()
scores = sa.Table(
    "scores",
    metadata,
    sa.Column("customer_id", sa.Text, primary_key=True),
    sa.Column("probability", sa.Float),
    sa.Column("band", sa.Text),
    sa.Column("model", sa.Text),
    sa.Column("model_version", sa.Integer),
    sa.Column("cold_start", sa.Boolean),
    sa.Column("reasons", JSONB),
    sa.Column("features", JSONB),
    sa.Column("snapshot", JSONB),
    sa.Column("first_seen_at", sa.DateTime(timezone=True)),
    sa.Column("as_of", sa.DateTime(timezone=True)),
    sa.Column("event_id", sa.Uuid),
)
score_history = sa.Table(
    "score_history",
    metadata,
    sa.Column("event_id", sa.Uuid, primary_key=True),
    sa.Column("customer_id", sa.Text),
    sa.Column("probability", sa.Float),
    sa.Column("band", sa.Text),
    sa.Column("model_version", sa.Integer),
    sa.Column("as_of", sa.DateTime(timezone=True)),
)


@dataclass
class ScoringStore:
    conn: AsyncConnection
    model: ChurnModel

    async def save_score(self, row: dict[str, Any]) -> None:
        stmt = pg_insert(scores).values(**row)
        await self.conn.execute(
            stmt.on_conflict_do_update(
                index_elements=[scores.c.customer_id],
                set_={
                    **{k: stmt.excluded[k] for k in row if k not in ("customer_id", "first_seen_at")},
                    "first_seen_at": sa.func.least(scores.c.first_seen_at, stmt.excluded.first_seen_at),
                },
                where=scores.c.as_of <= stmt.excluded.as_of,
            )
        )
        await self.conn.execute(
            pg_insert(score_history)
            .values(
                event_id=row["event_id"],
                customer_id=row["customer_id"],
                probability=row["probability"],
                band=row["band"],
                model_version=row["model_version"],
                as_of=row["as_of"],
            )
            .on_conflict_do_nothing()
        )

    async def latest(self, customer_id: str) -> dict[str, Any] | None:
        row = (
            await self.conn.execute(sa.select(scores).where(scores.c.customer_id == customer_id))
        ).first()
        return dict(row._mapping) if row else None

    async def page(
        self, *, seen_by: Any, after: str | None, limit: int
    ) -> list[dict[str, Any]]:
        """Scored customers first seen on or before `seen_by`, in customer_id order."""
        query = (
            sa.select(scores.c.customer_id, scores.c.snapshot)
            .where(scores.c.first_seen_at <= seen_by)
            .order_by(scores.c.customer_id)
            .limit(limit)
        )
        if after is not None:
            query = query.where(scores.c.customer_id > after)
        return [dict(r._mapping) for r in await self.conn.execute(query)]

    async def history(self, customer_id: str, limit: int = 50) -> list[dict[str, Any]]:
        rows = await self.conn.execute(
            sa.select(score_history)
            .where(score_history.c.customer_id == customer_id)
            .order_by(score_history.c.as_of.desc())
            .limit(limit)
        )
        return [dict(r._mapping) for r in rows]
