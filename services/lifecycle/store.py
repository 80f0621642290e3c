"""Lifecycle's tables and queries (schema `lifecycle`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from services.lifecycle.domain import Transition
from shared.events import Stage

metadata = sa.MetaData()
customer_stages = sa.Table(
    "customer_stages",
    metadata,
    sa.Column("customer_id", sa.Text, primary_key=True),
    sa.Column("stage", sa.Text),
    sa.Column("stage_entered_at", sa.DateTime(timezone=True)),
    sa.Column("rule", sa.Text),
)
stage_history = sa.Table(
    "stage_history",
    metadata,
    sa.Column("event_id", sa.Uuid, primary_key=True),
    sa.Column("customer_id", sa.Text),
    sa.Column("from_stage", sa.Text),
    sa.Column("to_stage", sa.Text),
    sa.Column("rule", sa.Text),
    sa.Column("evidence", JSONB),
    sa.Column("transition_at", sa.DateTime(timezone=True)),
)


@dataclass
class LifecycleStore:
    conn: AsyncConnection

    async def current(self, customer_id: str) -> Stage | None:
        stage = await self.conn.scalar(
            sa.select(customer_stages.c.stage).where(customer_stages.c.customer_id == customer_id)
        )
        return Stage(stage) if stage else None

    async def record(self, customer_id: str, t: Transition, event_id: UUID) -> None:
        await self.conn.execute(
            pg_insert(stage_history)
            .values(
                event_id=event_id,
                customer_id=customer_id,
                from_stage=t.from_stage.value if t.from_stage else None,
                to_stage=t.to_stage.value,
                rule=t.rule,
                evidence=t.evidence,
                transition_at=t.transition_at,
            )
            .on_conflict_do_nothing()
        )
        stmt = pg_insert(customer_stages).values(
            customer_id=customer_id,
            stage=t.to_stage.value,
            stage_entered_at=t.transition_at,
            rule=t.rule,
        )
        await self.conn.execute(
            stmt.on_conflict_do_update(
                index_elements=[customer_stages.c.customer_id],
                set_={
                    "stage": stmt.excluded.stage,
                    "stage_entered_at": stmt.excluded.stage_entered_at,
                    "rule": stmt.excluded.rule,
                },
            )
        )

    async def counts(self) -> dict[str, int]:
        rows = await self.conn.execute(
            sa.select(customer_stages.c.stage, sa.func.count()).group_by(customer_stages.c.stage)
        )
        found = {r[0]: int(r[1]) for r in rows}
        return {s.value: found.get(s.value, 0) for s in Stage}

    async def page(
        self, *, after: str | None, limit: int, stage: Stage | None = None
    ) -> list[dict[str, Any]]:
        c = customer_stages.c
        query = sa.select(c.customer_id, c.stage, c.stage_entered_at, c.rule).order_by(
            c.customer_id
        ).limit(limit)
        if after is not None:
            query = query.where(c.customer_id > after)
        if stage is not None:
            query = query.where(c.stage == stage.value)
        return [
            {"customer_id": r.customer_id, "stage": r.stage, "since": r.stage_entered_at,
             "rule": r.rule}
            for r in await self.conn.execute(query)
        ]

    async def view(self, customer_id: str) -> dict[str, Any] | None:
        row = (
            await self.conn.execute(
                sa.select(customer_stages).where(customer_stages.c.customer_id == customer_id)
            )
        ).first()
        if row is None:
            return None
        history = await self.conn.execute(
            sa.select(stage_history)
            .where(stage_history.c.customer_id == customer_id)
            .order_by(stage_history.c.transition_at, stage_history.c.to_stage)
        )
        return {
            "customer_id": customer_id,
            "stage": row.stage,
            "since": row.stage_entered_at,
            "rule": row.rule,
            "history": [
                {
                    "from": h.from_stage,
                    "to": h.to_stage,
                    "rule": h.rule,
                    "transition_at": h.transition_at,
                    "evidence": h.evidence,
                }
                for h in history
            ],
        }
