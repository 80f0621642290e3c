"""Scoring's labels against the real broker and database: negative at the first activity,
positive when the partition's clock passes t + H, positive at closure, late activity, the
sampling bound, treated customers, and time-driven re-scores with deterministic ids.

Activity is the customer's own events (here card purchases); time moves with the activity
topics' watermark (a "clock" customer on the same partition); snapshots come from
profile.updated."""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from services.scoring.learner import Learner
from shared.events import (
    EngagementDecided,
    EngagementDecision,
    ProfileSnapshot,
    ProfileUpdated,
    derived_event_id,
)
from shared.kit import partition_of
from tests.support import factories as f
from tests.support.platform import Namespace, eventually
from tests.support.scoring import FAST

T0 = datetime(2025, 1, 6, 12, tzinfo=UTC)
DAY = timedelta(days=1)


def ids_on(partition: int, prefix: str, n: int, partitions: int = 3) -> list[str]:
    found = (f"{prefix}{i}" for i in itertools.count())
    return list(itertools.islice((c for c in found if partition_of(c, partitions) == partition),
                                 n))


def update(
    cid: str, at: datetime, *, last_activity: datetime | None, txns: int = 1,
    products: dict[str, int] | None = None, closed: int = 0, first: datetime = T0,
    **features: float,
) -> ProfileUpdated:
    """A profile.updated as the profile service would emit it after an event at `at`."""
    return ProfileUpdated(
        event_id=uuid.uuid4(),
        customer_id=cid,
        occurred_at=at,
        source="tenure-profile",
        payload=ProfileSnapshot(
            as_of=at,
            first_activity_at=first,
            last_activity_at=last_activity,
            transaction_count=txns,
            products={"card": 1} if products is None else products,
            total_balance=Decimal("100"),
            features={"tenure_days": (at - first).total_seconds() / 86400,
                      "accounts_closed": float(closed), **features},
        ),
    )


async def publish(ns: Namespace, *events: ProfileUpdated) -> None:
    for e in events:
        await ns.publish("tenure.profile-updates.v1", e)


async def act(
    ns: Namespace, cid: str, at: datetime, *, by: str = "customer",
    last_activity: datetime | None = None, snapshot: bool = True,
) -> None:
    """A transaction (the customer's own activity, or the bank's, which only moves time),
    followed by the snapshot profile would emit for it."""
    await ns.publish("tenure.transactions.v1", f.transaction(cid, at, initiated_by=by))
    if snapshot:
        last = at if by == "customer" else last_activity
        await publish(ns, update(cid, at, last_activity=last))


async def samples(ns: Namespace, cid: str) -> list[Any]:
    return await ns.sql(
        "scoring",
        "SELECT sampled_at, horizon_end, label, outcome, resolved_at, treated, weight "
        "FROM pending_samples WHERE customer_id = :c ORDER BY sampled_at", c=cid)


async def processed(ns: Namespace, n: int) -> bool:
    rows = await ns.sql("scoring", "SELECT count(*) FROM inbox")
    return rows[0][0] >= n


async def test_labels_resolve_at_activity_horizon_and_closure_and_late_activity_corrects(
    ns: Namespace,
) -> None:
    active, silent, closing, late, clock = ids_on(0, "LBL-", 5)
    async with ns.service("scoring", run_learner=False, **FAST) as svc:
        for c in (active, silent, closing, late, clock):
            await act(ns, c, T0)
        await eventually(lambda: processed(ns, 10), what="first events")
        # The clock customer moves the partition's event time: everyone's first weekly
        # point (T0 + 7) is taken with what was known then.
        await act(ns, clock, T0 + 10 * DAY)

        async def first_points() -> bool:
            return all([len(await samples(ns, c)) == 1 for c in (active, silent, closing, late)])

        await eventually(first_points, what="a sample at T0 + 7 for every customer")
        (s,) = await samples(ns, silent)
        assert s.sampled_at == T0 + 7 * DAY and s.horizon_end == T0 + 97 * DAY
        assert s.outcome is None and s.weight == 1.0

        # Activity: negative at the first activity in (t, t + H]; it also moves the clock.
        await act(ns, active, T0 + 20 * DAY)

        async def resolved(cid: str, outcome: str) -> Any:
            rows = await samples(ns, cid)
            return rows[0] if rows and rows[0].outcome == outcome else None

        neg = await eventually(lambda: resolved(active, "activity"), what="negative")
        assert neg.label is False and neg.resolved_at == T0 + 20 * DAY
        # Resolved, but learnt only once the window has closed (the clock passed t + H):
        # learning early negatives before their window's positives could resolve biases the
        # model towards "stays".
        runtime = svc.runtime
        learner = Learner(runtime.settings, runtime.engine, runtime.scoring.holder,
                          runtime.scoring.metrics)
        async with runtime.engine.connect() as conn:
            assert await learner.round(conn) == 0
        # Closure: every account closed -> positive at closure, for every point before it.
        await publish(ns, update(closing, T0 + 30 * DAY, last_activity=T0, products={},
                                 closed=1))
        pos = await eventually(lambda: resolved(closing, "closure"), what="closure")
        assert pos.label is True and pos.resolved_at == T0 + 30 * DAY
        before = await samples(ns, closing)
        assert [r.sampled_at for r in before] == [T0 + 7 * DAY, T0 + 14 * DAY]
        assert {(r.outcome, r.resolved_at) for r in before} == {("closure", T0 + 30 * DAY)}

        # Horizon: the clock passes T0 + 97 with no activity from `silent` or `late`.
        await act(ns, clock, T0 + 98 * DAY)
        horizon = await eventually(lambda: resolved(silent, "horizon"), what="horizon")
        assert horizon.label is True and horizon.resolved_at == T0 + 97 * DAY
        await eventually(lambda: resolved(late, "horizon"), what="horizon for late")
        assert len(await samples(ns, closing)) == 2, "a closed customer is no longer sampled"

        # A late event: activity at T0 + 50 arrives after the clock passed the window's end.
        # The positive was not learnt yet, so the label is corrected to negative.
        await act(ns, late, T0 + 50 * DAY, snapshot=False)
        corrected = await eventually(lambda: resolved(late, "activity"), what="correction")
        assert corrected.label is False and corrected.resolved_at == T0 + 50 * DAY

        # Closed windows wait for a learner, and /readyz says how many (tenure churn-report
        # waits for 0, or it would score with a model behind the data).
        backlog = (await runtime.readiness())["learning_backlog"]
        closed = await ns.sql("scoring", "SELECT count(*) AS n FROM pending_samples "
                                         "WHERE closed_at IS NOT NULL")
        assert backlog == closed[0].n > 0
        # Once learnt, a label cannot be unlearnt: a late activity is recorded against it.
        async with runtime.engine.connect() as conn:
            assert await learner.round(conn) > 0
        assert (await runtime.readiness())["learning_backlog"] < backlog
        learnt_now = await ns.sql("scoring", "SELECT customer_id, horizon_end FROM labels")
        assert learnt_now and all(r.horizon_end < T0 + 98 * DAY for r in learnt_now)
        assert {r.customer_id for r in learnt_now} >= {active, silent}
        await act(ns, silent, T0 + 60 * DAY, snapshot=False)

        async def flagged() -> Any:
            rows = await ns.sql("scoring", "SELECT sampled_at, late_correction FROM labels "
                                           "WHERE customer_id = :c ORDER BY sampled_at", c=silent)
            return rows if rows and rows[0].late_correction else None

        learnt = await eventually(flagged, what="the late correction recorded")
        assert learnt[0].sampled_at == T0 + 7 * DAY

        # Weekly points while recent, then rarer as silence grows (a quarter of it).
        points = [r.sampled_at for r in await ns.sql(
            "scoring", "SELECT sampled_at FROM labels WHERE customer_id = :c UNION ALL "
            "SELECT sampled_at FROM pending_samples WHERE customer_id = :c ORDER BY 1", c=silent)]
        gaps = [(b - a).days for a, b in itertools.pairwise(points)]
        assert gaps[:3] == [7, 7, 7] and gaps == sorted(gaps) and max(gaps) <= 28
        weights = [r.weight for r in await ns.sql(
            "scoring", "SELECT weight FROM labels WHERE customer_id = :c UNION ALL "
            "SELECT weight FROM pending_samples WHERE customer_id = :c", c=silent)]
        assert max(weights) > 1.0, "thinned points stand for the time they cover"

    # Time-driven scores carry deterministic ids from the customer and the point's time.
    wire = [m["value"] for m in await ns.read_topic("tenure.churn-scores.v1")]
    timed = [m for m in wire if m["customer_id"] == silent and m["causation_id"] is None]
    assert timed, "silent customers are re-scored as their silence grows"
    for m in timed:
        at = datetime.fromisoformat(m["occurred_at"].replace("Z", "+00:00"))
        assert m["event_id"] == str(derived_event_id("churn.scored", silent, at.isoformat()))
        assert m["payload"]["as_of"] == m["occurred_at"]
    probabilities = [m["payload"]["probability"] for m in sorted(timed,
                                                                 key=lambda m: m["occurred_at"])]
    assert probabilities == sorted(probabilities), "risk rises with silence"


async def test_pending_samples_stay_bounded_with_many_updates_per_customer(
    ns: Namespace,
) -> None:
    """A profile update and a bank posting every day for 200 days, no activity of their own:
    at most one open sample per customer per period, however many updates arrive."""
    customers = ids_on(1, "BND-", 4)
    async with ns.service("scoring", run_learner=False, **FAST):
        for cid in customers:
            await act(ns, cid, T0)
        events = 0
        for day in range(1, 200):
            for n, cid in enumerate(customers):
                at = T0 + day * DAY + n * timedelta(minutes=1)
                await act(ns, cid, at, by="bank", last_activity=T0)
                events += 2
        await eventually(lambda: processed(ns, events + 2 * len(customers)), timeout=120,
                         what="all updates")

        async def counts() -> list[Any] | None:
            rows = await ns.sql(
                "scoring",
                "SELECT customer_id, count(*) FILTER (WHERE outcome IS NULL), count(*), "
                "max(sampled_at) FROM pending_samples GROUP BY customer_id")
            done = len(rows) == len(customers) and all(
                r.max >= T0 + 170 * DAY for r in rows)
            return rows if done else None

        rows = await eventually(counts, what="points up to the end")
    bound = 90 // 7 + 1
    for r in rows:
        assert r[1] <= bound, f"{r[1]} open samples for one customer (bound {bound})"
        assert r[2] < 60, "one sample per period at most, not one per update"


async def test_treated_customers_labels_are_recorded(ns: Namespace) -> None:
    cid, clock = ids_on(2, "TRT-", 2)
    async with ns.service("scoring", run_learner=False, **FAST):
        await act(ns, cid, T0)
        await eventually(lambda: processed(ns, 2), what="first events")
        await act(ns, clock, T0 + 10 * DAY)
        await eventually(lambda: samples(ns, cid), what="a sample")
        decided = EngagementDecided(
            event_id=uuid.uuid4(), customer_id=cid, occurred_at=T0 + 12 * DAY,
            source="tenure-engagement",
            payload=EngagementDecision(action_id=uuid.uuid4(), playbook="retention_offer",
                                       action="offer", channel="email", decision="sent",
                                       reason="sent", treated=True),
        )
        await ns.publish("tenure.engagement-actions.v1", decided)

        async def treated() -> bool:
            rows = await samples(ns, cid)
            return bool(rows) and rows[0].treated

        await eventually(treated, what="the open window records the treatment")
