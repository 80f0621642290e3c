"""Scoring's tables and queries (schema `scoring`)."""

from __future__ import annotations

from dataclasses import dataclass, field
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


SCORE_COLUMNS = (
    "customer_id", "probability", "band", "model", "model_version", "cold_start", "reasons",
    "features", "snapshot", "first_seen_at", "as_of", "event_id",
)


def _upsert_score() -> Any:
    stmt = pg_insert(scores)
    x = stmt.excluded
    return stmt.on_conflict_do_update(
        index_elements=[scores.c.customer_id],
        set_={
            **{k: x[k] for k in SCORE_COLUMNS if k not in ("customer_id", "first_seen_at")},
            "first_seen_at": sa.func.least(scores.c.first_seen_at, x.first_seen_at),
        },
        # A late profile update never overwrites a newer score.
        where=scores.c.as_of <= x.as_of,
    )


UPSERT_SCORE = _upsert_score()
INSERT_HISTORY = pg_insert(score_history).on_conflict_do_nothing()


@dataclass
class ScoringStore:
    """Scores are folded per batch: the latest per customer is upserted, every one is kept
    in the history, each with one set-based statement at flush."""

    conn: AsyncConnection
    model: ChurnModel
    pending_latest: dict[str, dict[str, Any]] = field(default_factory=dict)
    pending_history: list[dict[str, Any]] = field(default_factory=list)

    async def save_score(self, row: dict[str, Any]) -> None:
        current = self.pending_latest.get(row["customer_id"])
        if current is None or row["as_of"] >= current["as_of"]:
            if current is not None:
                row = {**row, "first_seen_at": min(row["first_seen_at"], current["first_seen_at"])}
            self.pending_latest[row["customer_id"]] = row
        self.pending_history.append(
            {k: row[k] for k in ("event_id", "customer_id", "probability", "band",
                                 "model_version", "as_of")}
        )

    def discard(self) -> None:
        self.pending_latest.clear()
        self.pending_history.clear()

    async def flush(self) -> None:
        latest, self.pending_latest = self.pending_latest, {}
        history, self.pending_history = self.pending_history, []
        if latest:
            await self.conn.execute(UPSERT_SCORE, list(latest.values()))
        if history:
            await self.conn.execute(INSERT_HISTORY, history)


    async def erase(self, customer_id: str) -> None:
        """customer.erased: everything this service keeps about the customer goes."""
        await self.conn.execute(sa.delete(scores).where(scores.c.customer_id == customer_id))
        await self.conn.execute(sa.delete(score_history).where(score_history.c.customer_id == customer_id))

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
