"""Lifecycle's tables and queries (schema `lifecycle`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from services.lifecycle.domain import Transition
from shared.events import Stage

metadata = sa.MetaData()


@dataclass(frozen=True)
class _Key:
    customer_id: str
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


def _upsert_stage() -> Any:
    stmt = pg_insert(customer_stages)
    x = stmt.excluded
    return stmt.on_conflict_do_update(
        index_elements=[customer_stages.c.customer_id],
        set_={"stage": x.stage, "stage_entered_at": x.stage_entered_at, "rule": x.rule},
    )


UPSERT_STAGE = _upsert_stage()
INSERT_TRANSITION = pg_insert(stage_history).on_conflict_do_nothing()


@dataclass
class LifecycleStore:
    """Current stages are read once per batch (prepare) and written once (flush)."""

    conn: AsyncConnection
    stages: dict[str, Stage | None] = field(default_factory=dict)
    pending_stage: dict[str, dict[str, Any]] = field(default_factory=dict)
    pending_history: list[dict[str, Any]] = field(default_factory=list)

    async def prepare(self, events: list[Any]) -> None:
        wanted = list({e.customer_id for e in events} - set(self.stages))
        if not wanted:
            return
        rows = await self.conn.execute(
            sa.select(customer_stages.c.customer_id, customer_stages.c.stage).where(
                customer_stages.c.customer_id.in_(wanted)
            )
        )
        found = {r.customer_id: Stage(r.stage) for r in rows}
        for cid in wanted:
            self.stages[cid] = found.get(cid)

    async def current(self, customer_id: str) -> Stage | None:
        if customer_id not in self.stages:
            await self.prepare([_Key(customer_id)])
        return self.stages[customer_id]

    async def record(self, customer_id: str, t: Transition, event_id: UUID) -> None:
        self.pending_history.append(
            {
                "event_id": event_id,
                "customer_id": customer_id,
                "from_stage": t.from_stage.value if t.from_stage else None,
                "to_stage": t.to_stage.value,
                "rule": t.rule,
                "evidence": t.evidence,
                "transition_at": t.transition_at,
            }
        )
        self.pending_stage[customer_id] = {
            "customer_id": customer_id,
            "stage": t.to_stage.value,
            "stage_entered_at": t.transition_at,
            "rule": t.rule,
        }
        self.stages[customer_id] = t.to_stage

    def discard(self) -> None:
        # What the failed event wrote to the cache is unknown: read it again next time.
        for cid in self.pending_stage:
            self.stages.pop(cid, None)
        self.pending_stage.clear()
        self.pending_history.clear()

    async def flush(self) -> None:
        stages, self.pending_stage = self.pending_stage, {}
        history, self.pending_history = self.pending_history, []
        if history:
            await self.conn.execute(INSERT_TRANSITION, history)
        if stages:
            await self.conn.execute(UPSERT_STAGE, list(stages.values()))


    async def erase(self, customer_id: str) -> None:
        """customer.erased: everything this service keeps about the customer goes."""
        self.stages.pop(customer_id, None)
        await self.conn.execute(sa.delete(customer_stages).where(customer_stages.c.customer_id == customer_id))
        await self.conn.execute(sa.delete(stage_history).where(stage_history.c.customer_id == customer_id))

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
