"""Engagement's tables and queries (schema `engagement`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from services.engagement.policy import Past

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
    sa.Column("open_complaints", sa.Integer),
    sa.Column("rfm_segment", sa.Text),
    sa.Column("segment", sa.Text),
    sa.Column("stage", sa.Text),
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
    sa.Column("purpose", sa.Text),
    sa.Column("template", sa.Text),
    sa.Column("offer", sa.Text),
    sa.Column("treated", sa.Boolean),
    sa.Column("deliver_at", sa.DateTime(timezone=True)),
    sa.Column("status", sa.Text),
    sa.Column("attempts", sa.Integer),
    sa.Column("next_attempt_at", sa.DateTime(timezone=True)),
    sa.Column("last_error", sa.Text),
    sa.Column("delivered_at", sa.DateTime(timezone=True)),
)
playbooks = sa.Table(
    "playbooks",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("definition", JSONB),
    sa.Column("source", sa.Text),
    sa.Column("updated_at", sa.DateTime(timezone=True)),
)
rm_tasks = sa.Table(
    "rm_tasks",
    metadata,
    sa.Column("task_id", sa.Uuid, primary_key=True),
    sa.Column("customer_id", sa.Text),
    sa.Column("rm_id", sa.Text),
    sa.Column("playbook", sa.Text),
    sa.Column("template", sa.Text),
    sa.Column("status", sa.Text),
    sa.Column("outcome", sa.Text),
    sa.Column("created_at", sa.DateTime(timezone=True)),
    sa.Column("completed_at", sa.DateTime(timezone=True)),
)
outcomes = sa.Table(
    "outcomes",
    metadata,
    sa.Column("action_id", sa.Uuid, primary_key=True),
    sa.Column("outcome", sa.Text, primary_key=True),
    sa.Column("at", sa.DateTime(timezone=True)),
    sa.Column("detail", sa.Text),
)
churn_events = sa.Table(
    "churn_events",
    metadata,
    sa.Column("customer_id", sa.Text, primary_key=True),
    sa.Column("stage", sa.Text, primary_key=True),
    sa.Column("at", sa.DateTime(timezone=True), primary_key=True),
)


@dataclass
class EngagementStore:
    conn: AsyncConnection
    registry: Any = None  # services.engagement.bootstrap.Registry (playbooks, policy)

    async def erase(self, customer_id: str) -> None:
        """customer.erased: everything this service keeps about the customer goes, outcomes
        (an RM's note on a call can be personal) with the actions they belong to."""
        mine = sa.select(actions.c.action_id).where(actions.c.customer_id == customer_id)
        await self.conn.execute(sa.delete(outcomes).where(outcomes.c.action_id.in_(mine)))
        for table in (contacts, consents, actions, rm_tasks, churn_events):
            await self.conn.execute(sa.delete(table).where(table.c.customer_id == customer_id))

    async def upsert_contact(self, customer_id: str, **values: Any) -> None:
        stmt = pg_insert(contacts).values(customer_id=customer_id, **values)
        await self.conn.execute(
            stmt.on_conflict_do_update(
                index_elements=[contacts.c.customer_id],
                set_={k: stmt.excluded[k] for k in values},
            )
        )

    async def reassign_open_tasks(self, customer_id: str, rm_id: str | None) -> None:
        """Open tasks follow the customer's relationship manager: a new RM inherits them, and
        a task created before engagement learnt who the RM is (topics are not ordered with
        each other) reaches the RM once it does."""
        if rm_id is None:
            return
        await self.conn.execute(
            rm_tasks.update()
            .where(rm_tasks.c.customer_id == customer_id, rm_tasks.c.status == "open",
                   rm_tasks.c.rm_id.is_distinct_from(rm_id))
            .values(rm_id=rm_id)
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

    async def history(self, customer_id: str) -> list[Past]:
        rows = await self.conn.execute(
            sa.select(actions.c.playbook, actions.c.purpose, actions.c.decision,
                      actions.c.decided_at)
            .where(actions.c.customer_id == customer_id)
        )
        return [Past(r.playbook, r.purpose, r.decision, r.decided_at) for r in rows]

    async def budget_used(self, playbook_ids: list[str], at: datetime) -> dict[str, int]:
        """Treatments per playbook in the calendar month (UTC) of `at`."""
        start = at.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        rows = await self.conn.execute(
            sa.select(actions.c.playbook, sa.func.count())
            .where(actions.c.playbook.in_(playbook_ids),
                   actions.c.decision.in_(["sent", "deferred"]),
                   actions.c.decided_at >= start, actions.c.decided_at <= at)
            .group_by(actions.c.playbook)
        )
        return {r[0]: int(r[1]) for r in rows}

    async def record_action(self, row: dict[str, Any]) -> bool:
        result = await self.conn.execute(
            pg_insert(actions).values(**row).on_conflict_do_nothing().returning(actions.c.action_id)
        )
        return result.first() is not None

    async def record_churn_event(self, customer_id: str, stage: str, at: datetime) -> None:
        await self.conn.execute(
            pg_insert(churn_events).values(customer_id=customer_id, stage=stage, at=at)
            .on_conflict_do_nothing()
        )

    async def actions_of(self, customer_id: str, limit: int = 100) -> list[dict[str, Any]]:
        rows = await self.conn.execute(
            sa.select(actions)
            .where(actions.c.customer_id == customer_id)
            .order_by(actions.c.decided_at.desc(), actions.c.playbook)
            .limit(limit)
        )
        found = [dict(r._mapping) for r in rows]
        linked = await self.conn.execute(
            sa.select(outcomes).where(outcomes.c.action_id.in_([a["action_id"] for a in found]))
            .order_by(outcomes.c.at)
        )
        by_action: dict[UUID, list[dict[str, Any]]] = {}
        for o in linked:
            by_action.setdefault(o.action_id, []).append(
                {"outcome": o.outcome, "at": o.at, "detail": o.detail})
        for a in found:
            a["outcomes"] = by_action.get(a["action_id"], [])
        return found

    async def action(self, action_id: UUID) -> dict[str, Any] | None:
        row = (await self.conn.execute(
            sa.select(actions).where(actions.c.action_id == action_id))).first()
        return dict(row._mapping) if row else None
