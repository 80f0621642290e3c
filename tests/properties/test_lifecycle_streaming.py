"""Property: streaming lifecycle == one walk over all the facts.

Facts arrive in random batches, some late (out of order), with sweeps at random watermarks in
between; the service's own progress code (services/lifecycle/progress.py) runs against an
in-memory store with the same contract as the PostgreSQL one. Whatever the batching and the
order, the history that stands at the end, the final stage and what consumers end up
believing equal a single walk over every fact; no output event id is ever emitted twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.lifecycle.clock import Limits
from services.lifecycle.domain import Position, Transition, advance, default_rules
from services.lifecycle.facts import Fact
from services.lifecycle.progress import Context, advance_customers
from services.lifecycle.settings import LifecycleSettings
from shared.kit import UnitOfWork
from tests.support.lifecycle_fakes import FakeStore

RULES = default_rules()
T0 = datetime(2025, 1, 1, tzinfo=UTC)
WINDOW = timedelta(days=20)
LATENESS = timedelta(minutes=5)


def ctx() -> Context:
    return Context(RULES, LATENESS, WINDOW)


async def stream(
    batches: list[list[tuple[str, Fact]]], sweeps: list[float]
) -> tuple[FakeStore, list[Any]]:
    store = FakeStore()
    uow: UnitOfWork[Any] = UnitOfWork(None, store, LifecycleSettings())  # type: ignore[arg-type]
    seen: datetime | None = None
    for n, batch in enumerate(batches):
        grouped: dict[str, list[Fact]] = {}
        for cid, f in batch:
            grouped.setdefault(cid, []).append(f)
            store.keep(cid, [f])
            seen = f.at if seen is None or f.at > seen else seen
        assert seen is not None
        limits = Limits(seen, seen - LATENESS)
        rows = await store.lock(grouped)
        await advance_customers(uow, rows, grouped, lambda _, lim=limits: lim, ctx())  # type: ignore[arg-type]
        if sweeps and n % 2 == 1:
            clock = seen - LATENESS - timedelta(days=sweeps[n % len(sweeps)])
            swept = Limits(seen, max(clock, T0))
            await advance_customers(uow, store.due(swept.timers), {}, lambda _, lim=swept: lim,
                                    ctx())  # type: ignore[arg-type]
    end = Limits(seen + timedelta(days=400), seen + timedelta(days=400)) if seen else None
    if end is not None:
        assert end.timers is not None
        await advance_customers(uow, store.due(end.timers), {}, lambda _: end, ctx())  # type: ignore[arg-type]
    return store, uow.emitted


# ------------------------------------------------------------------ facts


@st.composite
def customer_facts(draw: Any, cid: str) -> list[Fact]:
    n = draw(st.integers(3, 18))
    out: list[Fact] = []
    accounts = ["A", "B"]
    for i in range(n):
        at = T0 + timedelta(days=draw(st.integers(0, 300)), hours=draw(st.integers(0, 23)))
        eid = f"00000000-0000-4000-8000-{abs(hash((cid, i))) % 10**12:012d}"
        kind = draw(st.sampled_from(
            ["snapshot", "snapshot", "snapshot", "churn_score", "account_opened",
             "account_closed", "feedback"]))
        if kind == "snapshot":
            last = at - timedelta(days=draw(st.sampled_from([0, 0, 5, 40, 120])))
            data = {
                "as_of": at.isoformat(), "registered": True, "segment": "retail",
                "value_tier": "mid", "tags": [], "first_activity_at": T0.isoformat(),
                "last_activity_at": last.isoformat(), "transaction_count": 3,
                "products": {"current": 1},
                "total_balance": float(draw(st.sampled_from([0, 900, 3000]))),
                "features": {"frequency_90": draw(st.sampled_from([0, 2, 12])), "active_days_30": 6,
                             "sessions_30": 2, "sessions_prev_30": draw(st.sampled_from([0, 12])),
                             "engagement_trend": -0.8,
                             **({"days_since_salary": draw(st.integers(0, 60))}
                                if draw(st.booleans()) else {})},
            }
        elif kind == "churn_score":
            data = {"probability": draw(st.sampled_from([0.1, 0.3, 0.5, 0.7, 0.9])), "band": "x"}
        elif kind in ("account_opened", "account_closed"):
            data = {"account_id": draw(st.sampled_from(accounts)), "product_type": "current"}
        else:
            kinds = ["complaint_opened", "complaint_resolved", "nps"]
            data = {"kind": draw(st.sampled_from(kinds)), "complaint_id": "K"}
        out.append(Fact(at, kind, eid, data))
    return out


@st.composite
def arrivals(draw: Any) -> tuple[list[tuple[str, Fact]], list[list[tuple[str, Fact]]], list[float]]:
    facts = [("C1", f) for f in draw(customer_facts("C1"))]
    facts += [("C2", f) for f in draw(customer_facts("C2"))]
    # Arrival: event time plus a delay under the correction window, so some come late.
    delays = [timedelta(days=draw(st.sampled_from([0, 0, 0, 1, 7, 15]))) for _ in facts]
    arrival = [f for _, f in sorted(zip(delays, facts, strict=True),
                                    key=lambda d: (d[1][1].at + d[0], d[1][1].event_id))]
    cuts = sorted(draw(st.sets(st.integers(1, max(len(arrival) - 1, 1)), max_size=8)))
    batches, last = [], 0
    for cut in [*cuts, len(arrival)]:
        if cut > last:
            batches.append(arrival[last:cut])
            last = cut
    sweeps = draw(st.lists(st.sampled_from([0.0, 3.0, 30.0]), max_size=3))
    return facts, batches, sweeps


def reference(facts: list[tuple[str, Fact]], cid: str, until: datetime) -> list[Transition]:
    mine = [f for c, f in facts if c == cid]
    return advance(Position(), mine, fact_limit=until, timer_limit=until, rules=RULES).transitions


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(arrivals())
def test_streaming_with_late_facts_and_sweeps_equals_one_walk(case: Any) -> None:
    facts, batches, sweeps = case
    store, emitted = asyncio.run(stream(batches, sweeps))
    until = max(f.at for _, f in facts) + timedelta(days=400)
    ids = [e.event_id for e in emitted]
    assert len(ids) == len(set(ids)), "an output event id was emitted twice"
    for cid in ("C1", "C2"):
        expected = [t.key for t in reference(facts, cid, until)]
        standing = [
            (h["from_stage"], h["to_stage"], h["rule"], h["transition_at"])
            for h in sorted(store.history, key=lambda h: h["seq"])
            if h["customer_id"] == cid and h["kind"] == "transition" and not h["retracted_by"]
        ]
        assert standing == expected
        assert store.rows[cid]["stage"] == (expected[-1][1] if expected else None)
        # What a consumer believes after reading the stream in order: corrections withdraw.
        believed: list[tuple[Any, ...]] = []
        by_id: dict[Any, tuple[Any, ...]] = {}
        for e in emitted:
            if e.customer_id != cid:
                continue
            p = e.payload
            if p.rule == "correction":
                gone = {r["event_id"] for r in p.evidence["retracted"]}
                believed = [b for b in believed if str(by_id[b]) not in gone]
                believed_stage = p.to_stage.value
            else:
                key = (p.from_stage.value if p.from_stage else None, p.to_stage.value, p.rule,
                       p.transition_at)
                by_id[key] = e.event_id
                believed.append(key)
                believed_stage = p.to_stage.value
        assert believed == expected
        if expected:
            assert believed_stage == expected[-1][1]
