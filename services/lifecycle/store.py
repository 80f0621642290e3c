"""Lifecycle's tables (schema `lifecycle`) and the queries of its write path.

customer_stages holds each customer's current stage, the walk's position (the checkpoint the
next facts continue from), the base (an older checkpoint that late facts are replayed from),
and next_due_at: the event time of the customer's next threshold, which the sweeper reads
through an index. facts keeps the facts since the base; stage_history every announced
transition, with corrections and what they retracted.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from services.lifecycle.domain import Position, Transition
from services.lifecycle.facts import Fact
from shared.kit import partition_of

metadata = sa.MetaData()

customer_stages = sa.Table(
    "customer_stages",
    metadata,
    sa.Column("customer_id", sa.Text, primary_key=True),
    sa.Column("stage", sa.Text),
    sa.Column("stage_entered_at", sa.DateTime(timezone=True)),
    sa.Column("rule", sa.Text),
    sa.Column("partition", sa.Integer),
    sa.Column("position", JSONB),
    sa.Column("base", JSONB),
    sa.Column("log_start", sa.DateTime(timezone=True)),
    sa.Column("evaluated_at", sa.DateTime(timezone=True)),
    sa.Column("pending_from", sa.DateTime(timezone=True)),
    sa.Column("next_due_at", sa.DateTime(timezone=True)),
    sa.Column("history_seq", sa.Integer),
    sa.Column("updated_at", sa.DateTime(timezone=True)),
)
stage_history = sa.Table(
    "stage_history",
    metadata,
    sa.Column("event_id", sa.Uuid, primary_key=True),
    sa.Column("customer_id", sa.Text),
    sa.Column("seq", sa.Integer),
    sa.Column("kind", sa.Text),  # 'transition' or 'correction'
    sa.Column("from_stage", sa.Text),
    sa.Column("to_stage", sa.Text),
    sa.Column("rule", sa.Text),
    sa.Column("evidence", JSONB),
    sa.Column("transition_at", sa.DateTime(timezone=True)),
    sa.Column("lineage", sa.Uuid),  # the id the transition would have had on first announce
    sa.Column("cause", sa.Uuid),
    sa.Column("retracted_by", sa.Uuid),
    sa.Column("recorded_at", sa.DateTime(timezone=True)),
)
facts = sa.Table(
    "facts",
    metadata,
    sa.Column("customer_id", sa.Text, primary_key=True),
    sa.Column("occurred_at", sa.DateTime(timezone=True), primary_key=True),
    sa.Column("event_id", sa.Uuid, primary_key=True),
    sa.Column("kind", sa.Text),
    sa.Column("data", JSONB),
)

EFFECTIVE = sa.and_(stage_history.c.kind == "transition", stage_history.c.retracted_by.is_(None))

_ROW_COLUMNS = [
    customer_stages.c.customer_id, customer_stages.c.stage, customer_stages.c.stage_entered_at,
    customer_stages.c.rule, customer_stages.c.partition, customer_stages.c.position,
    customer_stages.c.log_start, customer_stages.c.evaluated_at, customer_stages.c.pending_from,
    customer_stages.c.next_due_at, customer_stages.c.history_seq,
]  # fmt: skip
_PLACEHOLDERS = sa.text(
    "INSERT INTO customer_stages (customer_id, partition) "
    "SELECT c, p FROM unnest(CAST(:ids AS text[]), CAST(:parts AS int[])) AS q(c, p) "
    "ORDER BY c ON CONFLICT DO NOTHING"
)
_FACTS_SINCE = sa.text(
    "SELECT f.customer_id, f.occurred_at, f.event_id, f.kind, f.data FROM facts f "
    "JOIN unnest(CAST(:ids AS text[]), CAST(:since AS timestamptz[])) AS q(c, s) "
    "ON f.customer_id = q.c AND f.occurred_at > q.s"
).columns(customer_id=sa.Text, occurred_at=sa.DateTime(timezone=True), event_id=sa.Uuid,
          kind=sa.Text, data=JSONB)
_INSERT_FACTS = pg_insert(facts).on_conflict_do_nothing()


@dataclass
class CustomerRow:
    """A customer's stored state, read under a row lock."""

    customer_id: str
    partition: int
    stage: str | None
    stage_entered_at: datetime | None
    rule: str | None
    position: Position
    log_start: datetime | None
    evaluated_at: datetime | None
    pending_from: datetime | None
    next_due_at: datetime | None
    history_seq: int
    legacy: bool = False  # written before facts were logged: no position, a stored stage

    @classmethod
    def from_db(cls, r: Any) -> CustomerRow:
        if r.position is not None:
            position = Position.from_json(r.position)
        else:
            # New (placeholder) or written before facts were kept: its stored history is
            # where the walk starts.
            position = Position(stage=r.stage, stage_entered_at=r.stage_entered_at,
                                rule=r.rule, at=r.stage_entered_at, count=r.history_seq or 0)
        return cls(r.customer_id, r.partition, r.stage, r.stage_entered_at, r.rule, position,
                   r.log_start, r.evaluated_at, r.pending_from, r.next_due_at,
                   r.history_seq or 0, legacy=r.position is None and r.stage is not None)


@dataclass
class Written:
    """What advancing one customer changes, ready to write."""

    row: CustomerRow
    position: Position
    base: Position | None  # a new base checkpoint, when the facts log was rolled forward
    pending_from: datetime | None
    next_due_at: datetime | None
    log_start: datetime | None
    history: list[dict[str, Any]] = field(default_factory=list)
    retract: list[tuple[UUID, UUID]] = field(default_factory=list)  # (event_id, correction)


@dataclass
class LifecycleStore:
    """Handlers fold facts here; the batch hook advances the customers they touched."""

    conn: AsyncConnection
    partitions: int = 6
    pending: list[tuple[str, Fact]] = field(default_factory=list)
    batch: dict[str, list[Fact]] = field(default_factory=dict)

    def add(self, customer_id: str, fact: Fact) -> None:
        self.pending.append((customer_id, fact))

    def discard(self) -> None:
        self.pending.clear()

    async def flush(self) -> None:
        """Keep the facts the handlers folded (the log late facts are replayed from)."""
        if not self.pending:
            return
        pending, self.pending = self.pending, []
        await self.conn.execute(_INSERT_FACTS, [f.to_row(cid) for cid, f in pending])
        for cid, fact in pending:
            self.batch.setdefault(cid, []).append(fact)

    def take_batch(self) -> dict[str, list[Fact]]:
        batch, self.batch = self.batch, {}
        return batch

    async def erase(self, customer_id: str) -> None:
        """customer.erased: everything this service keeps about the customer goes."""
        self.batch.pop(customer_id, None)
        self.pending = [(c, f) for c, f in self.pending if c != customer_id]
        for table in (customer_stages, stage_history, facts):
            await self.conn.execute(sa.delete(table).where(table.c.customer_id == customer_id))

    # -------------------------------------------------------------- reads under lock

    async def lock(self, customer_ids: Iterable[str]) -> dict[str, CustomerRow]:
        """The customers' rows, locked for this transaction (created empty when new), in
        customer order so two writers never wait on each other in a cycle."""
        ids = sorted(set(customer_ids))
        if not ids:
            return {}
        await self.conn.execute(
            _PLACEHOLDERS, {"ids": ids, "parts": [partition_of(c, self.partitions) for c in ids]}
        )
        rows = await self.conn.execute(
            sa.select(*_ROW_COLUMNS)
            .where(customer_stages.c.customer_id.in_(ids))
            .order_by(customer_stages.c.customer_id)
            .with_for_update()
        )
        out = {r.customer_id: CustomerRow.from_db(r) for r in rows}
        for cid, row in out.items():
            row.partition = partition_of(cid, self.partitions)
        return out

    async def due(self, partition: int, clock: datetime, limit: int) -> dict[str, CustomerRow]:
        """The sweeper's query: customers of one partition whose next threshold has passed
        the partition's watermark, earliest first, through the next-due index; rows another
        writer holds are skipped."""
        rows = await self.conn.execute(due_query(partition, clock, limit))
        return {r.customer_id: CustomerRow.from_db(r) for r in rows}

    async def waiting(self, partition: int, facts: datetime, limit: int) -> dict[str, CustomerRow]:
        """Customers of one partition with facts that can now be applied (they waited for a
        slower input topic), through the (partition, pending_from) index."""
        rows = await self.conn.execute(waiting_query(partition, facts, limit))
        return {r.customer_id: CustomerRow.from_db(r) for r in rows}

    async def facts_since(self, since: dict[str, datetime | None]) -> dict[str, list[Fact]]:
        """Each customer's logged facts after a time (None: all of them)."""
        if not since:
            return {}
        ids = list(since)
        floor = datetime.fromisoformat("0001-01-02T00:00:00+00:00")
        rows = await self.conn.execute(
            _FACTS_SINCE, {"ids": ids, "since": [since[c] or floor for c in ids]}
        )
        out: dict[str, list[Fact]] = {c: [] for c in ids}
        for r in rows:
            out[r.customer_id].append(Fact(r.occurred_at, r.kind, str(r.event_id), r.data))
        return out

    async def bases(self, customer_ids: Sequence[str]) -> dict[str, Position | None]:
        rows = await self.conn.execute(
            sa.select(customer_stages.c.customer_id, customer_stages.c.base)
            .where(customer_stages.c.customer_id.in_(list(customer_ids)))
        )
        return {r.customer_id: Position.from_json(r.base) if r.base else None for r in rows}

    async def announced(
        self, customer_ids: Sequence[str]
    ) -> dict[str, list[tuple[UUID, Transition]]]:
        """Each customer's history as announced and standing (corrections applied), in order."""
        rows = await self.conn.execute(
            sa.select(stage_history)
            .where(stage_history.c.customer_id.in_(list(customer_ids)), EFFECTIVE)
            .order_by(stage_history.c.customer_id, stage_history.c.seq)
        )
        out: dict[str, list[tuple[UUID, Transition]]] = {c: [] for c in customer_ids}
        for r in rows:
            out[r.customer_id].append((r.event_id, Transition(
                r.from_stage, r.to_stage, r.rule, r.transition_at, r.evidence or {},
                str(r.cause) if r.cause else None)))
        return out

    async def lineage_counts(self, lineages: Sequence[UUID]) -> dict[UUID, int]:
        """How many rows already carry each lineage (a transition announced, retracted and
        true again gets a fresh id, or consumers would drop it as a duplicate)."""
        if not lineages:
            return {}
        rows = await self.conn.execute(
            sa.select(stage_history.c.lineage, sa.func.count())
            .where(stage_history.c.lineage.in_(list(set(lineages))))
            .group_by(stage_history.c.lineage)
        )
        return {r[0]: int(r[1]) for r in rows}

    # -------------------------------------------------------------- writes

    async def write(self, changes: Sequence[Written]) -> None:
        if not changes:
            return
        await self.conn.execute(_UPDATE_ROW, [_row_values(w) for w in changes])
        history = [h for w in changes for h in w.history]
        if history:
            await self.conn.execute(stage_history.insert(), history)
        retract = [{"b_event_id": e, "b_by": c} for w in changes for e, c in w.retract]
        if retract:
            await self.conn.execute(_RETRACT, retract)
        rolled = [{"b_customer_id": w.row.customer_id, "b_until": w.base.at}
                  for w in changes if w.base is not None and w.base.at is not None]
        if rolled:
            await self.conn.execute(_DROP_FACTS, rolled)


def due_query(partition: int, clock: datetime, limit: int) -> Any:
    return (
        sa.select(*_ROW_COLUMNS)
        .where(customer_stages.c.partition == partition,
               customer_stages.c.next_due_at <= clock)
        .order_by(customer_stages.c.next_due_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )


def waiting_query(partition: int, facts: datetime, limit: int) -> Any:
    return (
        sa.select(*_ROW_COLUMNS)
        .where(customer_stages.c.partition == partition,
               customer_stages.c.pending_from <= facts)
        .order_by(customer_stages.c.pending_from)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )


_UPDATE_ROW = (
    customer_stages.update()
    .where(customer_stages.c.customer_id == sa.bindparam("b_customer_id"))
    .values(
        stage=sa.bindparam("b_stage"),
        stage_entered_at=sa.bindparam("b_since"),
        rule=sa.bindparam("b_rule"),
        partition=sa.bindparam("b_partition"),
        position=sa.bindparam("b_position", type_=JSONB),
        base=sa.func.coalesce(
            sa.bindparam("b_base", type_=JSONB(none_as_null=True)), customer_stages.c.base
        ),
        log_start=sa.bindparam("b_log_start"),
        evaluated_at=sa.bindparam("b_evaluated_at"),
        pending_from=sa.bindparam("b_pending_from"),
        next_due_at=sa.bindparam("b_next_due_at"),
        history_seq=sa.bindparam("b_history_seq"),
        updated_at=sa.func.now(),
    )
)
_RETRACT = (
    stage_history.update()
    .where(stage_history.c.event_id == sa.bindparam("b_event_id"))
    .values(retracted_by=sa.bindparam("b_by"))
)
_DROP_FACTS = facts.delete().where(
    facts.c.customer_id == sa.bindparam("b_customer_id"),
    facts.c.occurred_at <= sa.bindparam("b_until"),
)


def _row_values(w: Written) -> dict[str, Any]:
    p = w.position
    return {
        "b_customer_id": w.row.customer_id,
        "b_stage": p.stage,
        "b_since": p.stage_entered_at,
        "b_rule": p.rule,
        "b_partition": w.row.partition,
        "b_position": p.to_json(),
        "b_base": w.base.to_json() if w.base is not None else None,
        "b_log_start": w.log_start,
        "b_evaluated_at": p.at,
        "b_pending_from": w.pending_from,
        "b_next_due_at": w.next_due_at,
        "b_history_seq": w.row.history_seq + len(w.history),
    }
