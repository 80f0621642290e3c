"""Lifecycle's read queries for the API: a customer's stage and history, counts, flows."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from services.lifecycle.store import EFFECTIVE, customer_stages, stage_history
from shared.events import Stage


def _history_entry(h: Any) -> dict[str, Any]:
    return {
        "event_id": str(h.event_id),
        "from": h.from_stage,
        "to": h.to_stage,
        "rule": h.rule,
        "transition_at": h.transition_at,
        "evidence": h.evidence,
    }


async def view(conn: AsyncConnection, customer_id: str) -> dict[str, Any] | None:
    row = (
        await conn.execute(
            sa.select(customer_stages).where(customer_stages.c.customer_id == customer_id)
        )
    ).first()
    if row is None or row.stage is None:
        return None
    rows = (
        await conn.execute(
            sa.select(stage_history)
            .where(stage_history.c.customer_id == customer_id)
            .order_by(stage_history.c.seq)
        )
    ).all()
    history = [_history_entry(h) for h in rows if h.kind == "transition" and h.retracted_by is None]
    corrections = [
        {**_history_entry(h), "retracted": (h.evidence or {}).get("retracted", [])}
        for h in rows if h.kind == "correction"
    ]
    return {
        "customer_id": customer_id,
        "stage": row.stage,
        "since": row.stage_entered_at,
        "rule": row.rule,
        "evidence": history[-1]["evidence"] if history else {},
        "as_of": row.evaluated_at,
        "next_review_at": row.next_due_at,
        "history": history,
        "corrections": corrections,
    }


async def counts(conn: AsyncConnection) -> dict[str, int]:
    rows = await conn.execute(
        sa.select(customer_stages.c.stage, sa.func.count())
        .where(customer_stages.c.stage.is_not(None))
        .group_by(customer_stages.c.stage)
    )
    found = {r[0]: int(r[1]) for r in rows}
    return {s.value: found.get(s.value, 0) for s in Stage}


async def page(
    conn: AsyncConnection, *, after: str | None, limit: int, stage: Stage | None = None
) -> list[dict[str, Any]]:
    c = customer_stages.c
    query = (
        sa.select(c.customer_id, c.stage, c.stage_entered_at, c.rule)
        .where(c.stage.is_not(None))
        .order_by(c.customer_id)
        .limit(limit)
    )
    if after is not None:
        query = query.where(c.customer_id > after)
    if stage is not None:
        query = query.where(c.stage == stage.value)
    return [
        {"customer_id": r.customer_id, "stage": r.stage, "since": r.stage_entered_at,
         "rule": r.rule}
        for r in await conn.execute(query)
    ]


async def histories(
    conn: AsyncConnection, *, after: str | None, limit: int
) -> list[dict[str, Any]]:
    """A page of customers with their standing histories (an export for evaluation and BI)."""
    customers = await page(conn, after=after, limit=limit)
    if not customers:
        return []
    ids = [c["customer_id"] for c in customers]
    rows = await conn.execute(
        sa.select(stage_history.c.customer_id, stage_history.c.from_stage,
                  stage_history.c.to_stage, stage_history.c.rule,
                  stage_history.c.transition_at)
        .where(stage_history.c.customer_id.in_(ids), EFFECTIVE)
        .order_by(stage_history.c.customer_id, stage_history.c.seq)
    )
    by_customer: dict[str, list[dict[str, Any]]] = {cid: [] for cid in ids}
    for r in rows:
        by_customer[r.customer_id].append(
            {"from": r.from_stage, "to": r.to_stage, "rule": r.rule,
             "transition_at": r.transition_at}
        )
    return [{**c, "history": by_customer[c["customer_id"]]} for c in customers]


async def flows(
    conn: AsyncConnection, *, from_stage: Stage | None, to_stage: Stage | None,
    since: datetime | None, until: datetime | None,
) -> list[dict[str, Any]]:
    """Transitions between stages whose event time falls in [since, until)."""
    h = stage_history.c
    query = (
        sa.select(h.from_stage, h.to_stage, sa.func.count().label("n"))
        .where(EFFECTIVE)
        .group_by(h.from_stage, h.to_stage)
        .order_by(sa.desc("n"), h.from_stage, h.to_stage)
    )
    if since is not None:
        query = query.where(h.transition_at >= since)
    if until is not None:
        query = query.where(h.transition_at < until)
    if from_stage is not None:
        query = query.where(h.from_stage == from_stage.value)
    if to_stage is not None:
        query = query.where(h.to_stage == to_stage.value)
    return [{"from": r.from_stage, "to": r.to_stage, "count": int(r.n)}
            for r in await conn.execute(query)]
