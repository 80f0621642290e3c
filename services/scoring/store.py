"""Scoring's tables and queries (schema `scoring`): scores and their history, each customer's
schedule and memory, pending samples and the evidence that resolves them, labels.

Handlers fold a batch in memory (`CustomerState`, samples, evidence); `flush` writes it with
a handful of set-based statements, in an order that makes the batch's own evidence apply to
the samples it created."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from services.scoring.domain import Memory
from services.scoring.metrics import ScoringMetrics
from services.scoring.model import ChurnModel
from shared.events import EnvelopeBase, ProfileSnapshot

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
    sa.Column("reasons", JSONB(none_as_null=True)),
    sa.Column("features", JSONB(none_as_null=True)),
    sa.Column("snapshot", JSONB(none_as_null=True)),
    sa.Column("first_seen_at", sa.DateTime(timezone=True)),
    sa.Column("as_of", sa.DateTime(timezone=True)),
    sa.Column("event_id", sa.Uuid),
    sa.Column("partition", sa.Integer),
    sa.Column("next_due_at", sa.DateTime(timezone=True)),
    sa.Column("last_sample_at", sa.DateTime(timezone=True)),
    sa.Column("closed", sa.Boolean),
    sa.Column("memory", JSONB),
    sa.Column("treated_at", ARRAY(sa.DateTime(timezone=True))),
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
pending_samples = sa.Table(
    "pending_samples",
    metadata,
    sa.Column("id", sa.BigInteger, primary_key=True),
    sa.Column("customer_id", sa.Text),
    sa.Column("partition", sa.Integer),
    sa.Column("sampled_at", sa.DateTime(timezone=True)),
    sa.Column("horizon_end", sa.DateTime(timezone=True)),
    sa.Column("facts", JSONB),
    sa.Column("weight", sa.Float),
    sa.Column("prediction", sa.Float),
    sa.Column("model_version", sa.Integer),
    sa.Column("treated", sa.Boolean),
    sa.Column("label", sa.Boolean),
    sa.Column("outcome", sa.Text),
    sa.Column("resolved_at", sa.DateTime(timezone=True)),
    sa.Column("recorded_at", sa.DateTime(timezone=True)),
    sa.Column("closed_at", sa.DateTime(timezone=True)),
)
labels = sa.Table(
    "labels",
    metadata,
    sa.Column("id", sa.BigInteger, primary_key=True),
    sa.Column("customer_id", sa.Text),
    sa.Column("sampled_at", sa.DateTime(timezone=True)),
    sa.Column("horizon_end", sa.DateTime(timezone=True)),
    sa.Column("label", sa.Boolean),
    sa.Column("outcome", sa.Text),
    sa.Column("resolved_at", sa.DateTime(timezone=True)),
    sa.Column("treated", sa.Boolean),
    sa.Column("weight", sa.Float),
    sa.Column("prediction", sa.Float),
    sa.Column("model_version", sa.Integer),
    sa.Column("champion_probability", sa.Float),
    sa.Column("learnt_in", sa.Integer),
    sa.Column("late_correction", sa.Boolean),
    sa.Column("recorded_at", sa.DateTime(timezone=True)),
)
checkpoints = sa.Table(
    "checkpoints",
    metadata,
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("created_at", sa.DateTime(timezone=True)),
    sa.Column("river_version", sa.Text),
    sa.Column("reason", sa.Text),
    sa.Column("champion", sa.Text),
    sa.Column("challenger", sa.Text),
    sa.Column("labels_learnt", sa.BigInteger),
    sa.Column("champion_blob", sa.LargeBinary),
    sa.Column("champion_signature", sa.LargeBinary),
    sa.Column("state_blob", sa.LargeBinary),
    sa.Column("state_signature", sa.LargeBinary),
    sa.Column("card", JSONB),
    sa.Column("pinned", sa.Boolean),
)
model_events = sa.Table(
    "model_events",
    metadata,
    sa.Column("id", sa.BigInteger, primary_key=True),
    sa.Column("kind", sa.Text),
    sa.Column("version", sa.Integer),
    sa.Column("created_at", sa.DateTime(timezone=True)),
    sa.Column("details", JSONB),
)
model_commands = sa.Table(
    "model_commands",
    metadata,
    sa.Column("id", sa.BigInteger, primary_key=True),
    sa.Column("kind", sa.Text),
    sa.Column("target_version", sa.Integer),
    sa.Column("requested_by", sa.Text),
    sa.Column("requested_at", sa.DateTime(timezone=True)),
    sa.Column("status", sa.Text),
    sa.Column("result", JSONB),
    sa.Column("done_at", sa.DateTime(timezone=True)),
)

STATEFUL = frozenset({"profile.updated", "transaction.posted", "app.click",
                      "feedback.submitted"})


def _stateful(event: EnvelopeBase) -> bool:
    """Events whose handler reads the customer's state (bank postings and decisions that
    treat nobody do not)."""
    if event.event_type == "transaction.posted":
        return event.payload.initiated_by.value == "customer"  # type: ignore[attr-defined]
    if event.event_type == "engagement.decided":
        return bool(event.payload.treated)  # type: ignore[attr-defined]
    return event.event_type in STATEFUL


STATE_COLUMNS = (
    "customer_id", "probability", "band", "model", "model_version", "cold_start", "reasons",
    "features", "snapshot", "first_seen_at", "as_of", "event_id", "partition", "next_due_at",
    "last_sample_at", "closed", "memory", "treated_at",
)


def _upsert_scores() -> Any:
    stmt = pg_insert(scores)
    x = stmt.excluded
    return stmt.on_conflict_do_update(
        index_elements=[scores.c.customer_id],
        set_={
            **{k: x[k] for k in STATE_COLUMNS if k not in ("customer_id", "first_seen_at")},
            "first_seen_at": sa.func.least(scores.c.first_seen_at, x.first_seen_at),
        },
    )


UPSERT_SCORES = _upsert_scores()
INSERT_HISTORY = pg_insert(score_history).on_conflict_do_nothing()
INSERT_SAMPLES = pg_insert(pending_samples).on_conflict_do_nothing(
    index_elements=[pending_samples.c.customer_id, pending_samples.c.sampled_at]
)

# Activity resolves a sample negative at its first activity in (t, t + H]; one that arrives
# late still corrects a positive the learner has not learnt yet (activity came first).
_NEGATIVE = sa.text(
    """
    WITH hits AS (
      SELECT s.id, s.outcome AS was, min(q.at) AS at
      FROM unnest(CAST(:ids AS text[]), CAST(:ats AS timestamptz[])) AS q(customer_id, at)
      JOIN pending_samples s ON s.customer_id = q.customer_id
       AND q.at > s.sampled_at AND q.at <= s.horizon_end
      WHERE s.outcome IS NULL OR s.outcome = 'horizon'
         OR (s.outcome = 'closure' AND q.at < s.resolved_at)
      GROUP BY s.id, s.outcome
    )
    UPDATE pending_samples p
    SET label = false, outcome = 'activity', resolved_at = hits.at, recorded_at = now()
    FROM hits WHERE p.id = hits.id AND (p.outcome IS DISTINCT FROM 'activity')
    RETURNING hits.was
    """
)
# Activity after the window ends, for a sample still open: evidence arrives in order, so the
# window was silent (a late activity inside it would correct this, as above).
_BEYOND = sa.text(
    """
    UPDATE pending_samples s
    SET label = true, outcome = 'horizon', resolved_at = s.horizon_end, recorded_at = now()
    FROM unnest(CAST(:ids AS text[]), CAST(:ats AS timestamptz[])) AS q(customer_id, at)
    WHERE s.customer_id = q.customer_id AND s.outcome IS NULL AND s.horizon_end < q.at
    """
)
_CLOSURE = sa.text(
    """
    UPDATE pending_samples s
    SET label = true, outcome = 'closure', resolved_at = q.at, recorded_at = now()
    FROM unnest(CAST(:ids AS text[]), CAST(:ats AS timestamptz[])) AS q(customer_id, at)
    WHERE s.customer_id = q.customer_id AND s.outcome IS NULL
      AND q.at > s.sampled_at AND q.at <= s.horizon_end
    """
)
# Points taken after the closure (its snapshot may come after the clock moved on) were not
# taken from a customer: they go.
_AFTER_CLOSURE = sa.text(
    """
    DELETE FROM pending_samples s
    USING unnest(CAST(:ids AS text[]), CAST(:ats AS timestamptz[])) AS q(customer_id, at)
    WHERE s.customer_id = q.customer_id AND s.outcome IS NULL AND s.sampled_at >= q.at
    """
)
_TREATED = sa.text(
    """
    UPDATE pending_samples s SET treated = true
    FROM unnest(CAST(:ids AS text[]), CAST(:ats AS timestamptz[])) AS q(customer_id, at)
    WHERE s.customer_id = q.customer_id AND NOT s.treated
      AND q.at > s.sampled_at AND q.at <= s.horizon_end
      AND (s.outcome IS NULL OR s.resolved_at >= q.at)
    """
)
# A late activity for a label already learnt cannot be unlearnt: it is recorded.
_LATE_LEARNT = sa.text(
    """
    UPDATE labels l SET late_correction = true
    FROM unnest(CAST(:ids AS text[]), CAST(:ats AS timestamptz[])) AS q(customer_id, at)
    WHERE l.customer_id = q.customer_id AND l.label AND NOT l.late_correction
      AND q.at > l.sampled_at AND q.at <= l.horizon_end
      AND (l.outcome = 'horizon' OR q.at < l.resolved_at)
    """
)
# The partition's clock passed t + H: an open window resolves positive (no activity seen),
# and every window up to there is closed, so the learner may learn it. Labels are learnt
# only from closed windows, in horizon-end order: a negative resolves at the first
# activity, often long before a positive can, so learning at resolution would feed the
# model the early negatives of recent points without their positives (a bias towards
# "stays" for exactly the customers still in their window).
_HORIZON = sa.text(
    """
    WITH due AS (
      SELECT s.id, s.outcome IS NULL AS opened
      FROM unnest(CAST(:parts AS integer[]), CAST(:wms AS timestamptz[])) AS w(partition, wm)
      JOIN pending_samples s ON s.partition = w.partition AND s.closed_at IS NULL
       AND s.horizon_end < w.wm
      FOR UPDATE OF s
    )
    UPDATE pending_samples p
    SET closed_at = now(),
        label = CASE WHEN due.opened THEN true ELSE p.label END,
        outcome = CASE WHEN due.opened THEN 'horizon' ELSE p.outcome END,
        resolved_at = CASE WHEN due.opened THEN p.horizon_end ELSE p.resolved_at END,
        recorded_at = CASE WHEN due.opened THEN now() ELSE p.recorded_at END
    FROM due WHERE p.id = due.id
    RETURNING due.opened
    """
)
_DUE = sa.text(
    """
    SELECT s.* FROM unnest(CAST(:parts AS integer[]), CAST(:wms AS timestamptz[]))
         AS w(partition, wm)
    JOIN scores s ON s.partition = w.partition AND s.next_due_at <= w.wm
    ORDER BY s.next_due_at, s.customer_id
    LIMIT :limit
    """
)


@dataclass
class CustomerState:
    """What scoring keeps per customer between events: the latest snapshot and score, the
    time-driven schedule, the last sample, and the memory of balances and activity. A
    customer may be known from their activity before profile's first snapshot arrives."""

    customer_id: str
    partition: int
    first_seen_at: datetime
    snapshot_json: dict[str, Any] | None = None
    memory: Memory = field(default_factory=Memory)
    next_due_at: datetime | None = None
    last_sample_at: datetime | None = None
    closed: bool = False
    score: dict[str, Any] | None = None
    # Treatments (engagement.decided, treated) after the last sample: a window opened later
    # (its point taken after the decision arrived, the clock being behind it) holds them too.
    treatments: list[datetime] = field(default_factory=list)
    _snapshot: ProfileSnapshot | None = None

    @property
    def snapshot(self) -> ProfileSnapshot | None:
        if self._snapshot is None and self.snapshot_json is not None:
            self._snapshot = ProfileSnapshot.model_validate(self.snapshot_json)
        return self._snapshot

    def set_snapshot(self, snapshot: ProfileSnapshot) -> None:
        self._snapshot = snapshot
        self.snapshot_json = snapshot.model_dump(mode="json", by_alias=True)

    @property
    def scored(self) -> bool:
        return self.snapshot_json is not None and self.score is not None

    @classmethod
    def from_row(cls, row: Any) -> CustomerState:
        m = row._mapping
        score = None
        if m["probability"] is not None:
            score = {k: m[k] for k in ("probability", "band", "model", "model_version",
                                       "cold_start", "reasons", "features", "as_of",
                                       "event_id")}
        return cls(
            customer_id=m["customer_id"],
            partition=m["partition"],
            first_seen_at=m["first_seen_at"],
            snapshot_json=m["snapshot"],
            memory=Memory.from_json(m["memory"]),
            next_due_at=m["next_due_at"],
            last_sample_at=m["last_sample_at"],
            closed=m["closed"],
            score=score,
            treatments=list(m["treated_at"] or ()),
        )

    def row(self) -> dict[str, Any]:
        score = self.score or dict.fromkeys(
            ("probability", "band", "model", "model_version", "cold_start", "reasons",
             "features", "as_of", "event_id"))
        return {
            "customer_id": self.customer_id,
            **score,
            "snapshot": self.snapshot_json,
            "first_seen_at": self.first_seen_at,
            "partition": self.partition,
            "next_due_at": self.next_due_at,
            "last_sample_at": self.last_sample_at,
            "closed": self.closed,
            "memory": self.memory.to_json(),
            "treated_at": sorted(self.treatments),
        }


@dataclass
class Evidence:
    """A customer-initiated event at `at`; `late` when the partition's clock had passed it."""

    customer_id: str
    at: datetime
    late: bool = False


@dataclass
class Resolved:
    """Counts of labels resolved by the last flush (for metrics)."""

    activity: int = 0
    corrected: int = 0
    horizon: int = 0
    closure: int = 0


@dataclass
class ScoringStore:
    conn: AsyncConnection
    model: ChurnModel
    states: dict[str, CustomerState] = field(default_factory=dict)
    dirty: set[str] = field(default_factory=set)
    history_rows: list[dict[str, Any]] = field(default_factory=list)
    sample_rows: list[dict[str, Any]] = field(default_factory=list)
    evidence: list[Evidence] = field(default_factory=list)
    closures: list[tuple[str, datetime]] = field(default_factory=list)
    treatments: list[tuple[str, datetime]] = field(default_factory=list)
    resolved: Resolved = field(default_factory=Resolved)
    metrics: ScoringMetrics | None = None
    clock: Any = None  # services.scoring.sweep.Clock: how far activity is known
    scored: dict[str, int] = field(default_factory=dict)
    # Looked up in this unit of work and not there: new customers (a replay is mostly them)
    # are not looked up twice.
    absent: set[str] = field(default_factory=set)

    # ------------------------------------------------------------------ reading state

    async def prepare(self, events: Sequence[EnvelopeBase]) -> None:
        """Load the state of every customer the batch's handlers touch, in one query."""
        wanted = {e.customer_id for e in events if _stateful(e)}
        await self._load([c for c in wanted if c not in self.states and c not in self.absent])

    async def _load(self, ids: list[str]) -> None:
        if not ids:
            return
        rows = await self.conn.execute(sa.select(scores).where(scores.c.customer_id.in_(ids)))
        for row in rows:
            self.states[row.customer_id] = CustomerState.from_row(row)
        self.absent.update(c for c in ids if c not in self.states)

    async def state(self, customer_id: str) -> CustomerState | None:
        if customer_id not in self.states and customer_id not in self.absent:
            await self._load([customer_id])
        return self.states.get(customer_id)

    def put(self, state: CustomerState) -> None:
        self.states[state.customer_id] = state
        self.dirty.add(state.customer_id)

    async def due(
        self, watermarks: dict[int, datetime], limit: int
    ) -> list[CustomerState]:
        """Customers whose next time-driven score is due by their partition's clock."""
        if not watermarks:
            return []
        parts = list(watermarks)
        rows = await self.conn.execute(
            _DUE, {"parts": parts, "wms": [watermarks[p] for p in parts], "limit": limit}
        )
        out = []
        for row in rows:
            state = self.states.get(row.customer_id) or CustomerState.from_row(row)
            self.states[row.customer_id] = state
            out.append(state)
        return out

    # ------------------------------------------------------------------ folding a batch

    def record_history(self, row: dict[str, Any]) -> None:
        self.history_rows.append(row)

    def add_sample(self, row: dict[str, Any]) -> None:
        self.sample_rows.append(row)

    def activity(self, evidence: Evidence) -> None:
        self.evidence.append(evidence)

    def closure(self, customer_id: str, at: datetime) -> None:
        self.closures.append((customer_id, at))

    def treated(self, customer_id: str, at: datetime) -> None:
        self.treatments.append((customer_id, at))

    def count_score(self, time_driven: bool) -> None:
        trigger = "time" if time_driven else "event"
        self.scored[trigger] = self.scored.get(trigger, 0) + 1

    def discard(self) -> None:
        """A failed event's savepoint rolled back: forget everything not yet written."""
        self.scored.clear()
        self.states.clear()
        self.dirty.clear()
        self.history_rows.clear()
        self.sample_rows.clear()
        self.evidence.clear()
        self.closures.clear()
        self.treatments.clear()

    async def flush(self) -> None:
        conn = self.conn
        if self.dirty:
            rows = [self.states[c].row() for c in sorted(self.dirty) if c in self.states]
            self.dirty.clear()
            if rows:
                await conn.execute(UPSERT_SCORES, rows)
        if self.history_rows:
            rows, self.history_rows = self.history_rows, []
            await conn.execute(INSERT_HISTORY, rows)
        if self.sample_rows:
            rows, self.sample_rows = self.sample_rows, []
            await conn.execute(INSERT_SAMPLES, rows)
            if self.metrics is not None:
                self.metrics.samples.inc(len(rows))
        if self.metrics is not None and self.scored:
            for trigger, n in self.scored.items():
                self.metrics.scores.labels(trigger).inc(n)
        self.scored.clear()
        if self.evidence:
            evidence, self.evidence = self.evidence, []
            ids = [e.customer_id for e in evidence]
            ats = [e.at for e in evidence]
            was = (await conn.execute(_NEGATIVE, {"ids": ids, "ats": ats})).scalars().all()
            self.resolved.activity += len(was)
            self.resolved.corrected += sum(1 for w in was if w is not None)
            beyond = await conn.execute(_BEYOND, {"ids": ids, "ats": ats})
            self.resolved.horizon += beyond.rowcount or 0
            late = [e for e in evidence if e.late]
            if late:
                await conn.execute(_LATE_LEARNT, {"ids": [e.customer_id for e in late],
                                                  "ats": [e.at for e in late]})
        if self.closures:
            closures, self.closures = self.closures, []
            params = {"ids": [c for c, _ in closures], "ats": [a for _, a in closures]}
            result = await conn.execute(_CLOSURE, params)
            self.resolved.closure += result.rowcount or 0
            await conn.execute(_AFTER_CLOSURE, params)
        self._report_resolved()
        if self.treatments:
            treatments, self.treatments = self.treatments, []
            await conn.execute(_TREATED, {"ids": [c for c, _ in treatments],
                                          "ats": [a for _, a in treatments]})

    async def resolve_horizons(self, watermarks: dict[int, datetime]) -> int:
        """Positive when the partition's clock passes t + H with no activity seen; every
        window the clock passed is closed (learnable)."""
        if not watermarks:
            return 0
        parts = list(watermarks)
        opened = (await self.conn.execute(
            _HORIZON, {"parts": parts, "wms": [watermarks[p] for p in parts]}
        )).scalars().all()
        count = sum(1 for o in opened if o)
        self.resolved.horizon += count
        self._report_resolved()
        return count

    def _report_resolved(self) -> None:
        if self.metrics is None:
            return
        for outcome in ("activity", "corrected", "horizon", "closure"):
            n = getattr(self.resolved, outcome)
            if n:
                self.metrics.resolved.labels(outcome).inc(n)
        self.resolved = Resolved()

    async def erase(self, customer_id: str) -> None:
        """customer.erased: everything this service keeps about the customer goes (what the
        model has already learnt from them cannot be unlearnt; it holds no personal data)."""
        self.states.pop(customer_id, None)
        self.dirty.discard(customer_id)
        for table in (scores, score_history, pending_samples, labels):
            await self.conn.execute(sa.delete(table).where(table.c.customer_id == customer_id))

    # ------------------------------------------------------------------ reads for the API

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
            sa.select(scores.c.customer_id, scores.c.snapshot, scores.c.memory)
            .where(scores.c.first_seen_at <= seen_by, scores.c.snapshot.isnot(None))
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


async def pending_counts(conn: AsyncConnection) -> dict[str, Any]:
    """Samples waiting for their label, resolved ones waiting for their window to close, and
    closed ones waiting to be learnt."""
    pending = (await conn.execute(sa.text(
        "SELECT count(*) FILTER (WHERE outcome IS NULL) AS open, "
        "count(*) FILTER (WHERE outcome IS NOT NULL AND closed_at IS NULL) AS resolved, "
        "count(*) FILTER (WHERE closed_at IS NOT NULL) AS closed FROM pending_samples"
    ))).one()
    return {"pending": pending.open, "resolved_window_open": pending.resolved,
            "closed_not_learnt": pending.closed}


async def label_counts(conn: AsyncConnection) -> dict[str, Any]:
    """Pending counts and the record of resolved labels (for the model card)."""
    learnt = (await conn.execute(sa.text(
        "SELECT count(*) FILTER (WHERE learnt_in IS NOT NULL) AS learnt, "
        "count(*) FILTER (WHERE treated) AS treated, "
        "count(*) FILTER (WHERE label) AS positive, "
        "count(*) FILTER (WHERE late_correction) AS late_corrections FROM labels"
    ))).one()
    return {**await pending_counts(conn), **dict(learnt._mapping)}
