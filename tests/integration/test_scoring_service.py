"""The scoring service end to end on the real broker and database: a concept change fed
through Kafka proposes the challenger and an approval promotes it; the churn API's full
response and its access rules; treated customers' labels recorded but not learnt; silent
customers re-scored, with rising risk, as other customers' events move event time.

Activity is the customers' own card purchases; snapshots are the profile.updated profile
would emit; time moves with the partition's watermark (every customer of a test lives on one
partition)."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from shared.events import (
    EngagementDecided,
    EngagementDecision,
    EnvelopeBase,
    ProfileSnapshot,
    ProfileUpdated,
    encode_event,
)
from shared.kit import partition_of
from tests.support import factories as f
from tests.support.platform import Namespace, eventually, token
from tests.support.scoring import FAST

T0 = datetime(2025, 1, 6, tzinfo=UTC)
DAY = timedelta(days=1)
TRANSACTIONS = "tenure.transactions.v1"
PROFILE_UPDATES = "tenure.profile-updates.v1"
# The UUIDv5 namespace of Tenure's derived event ids (shared/events.py), spelt out here so a
# change of the derivation fails this test instead of silently re-keying every replay.
TENURE_NAMESPACE = uuid.UUID("6f1c7f0e-5a7b-4f38-9a43-2f6c1f3e9b10")


def ids_on(partition: int, prefix: str, n: int, partitions: int = 3) -> list[str]:
    found = (f"{prefix}{i}" for i in itertools.count())
    return list(itertools.islice((c for c in found if partition_of(c, partitions) == partition),
                                 n))


def snapshot(cid: str, at: datetime, *, last_activity: datetime | None,
             rm_id: str | None = None, closed: int = 0) -> ProfileUpdated:
    """The profile.updated profile would emit after an event at `at`."""
    return ProfileUpdated(
        event_id=uuid.uuid4(),
        customer_id=cid,
        occurred_at=at,
        source="tenure-profile",
        payload=ProfileSnapshot(
            as_of=at, rm_id=rm_id, first_activity_at=T0, last_activity_at=last_activity,
            transaction_count=1, products={"card": 1}, total_balance=Decimal("100"),
            features={"tenure_days": (at - T0).total_seconds() / 86400,
                      "accounts_closed": float(closed)},
        ),
    )


def purchase(
    cid: str, at: datetime, *, rm_id: str | None = None, closed: int = 0,
) -> list[tuple[str, EnvelopeBase]]:
    """A customer's own card purchase and the snapshot that follows it."""
    return [(TRANSACTIONS, f.transaction(cid, at)),
            (PROFILE_UPDATES, snapshot(cid, at, last_activity=at, rm_id=rm_id, closed=closed))]


async def publish(ns: Namespace, events: Iterable[tuple[str, EnvelopeBase]]) -> None:
    """In this order (one producer, keyed by customer: one partition keeps it), pipelined."""
    assert ns.producer is not None
    sent = [await ns.producer.send(ns.topic(topic), encode_event(e),
                                   key=e.customer_id.encode()) for topic, e in events]
    await asyncio.gather(*sent)


async def processed(ns: Namespace, n: int) -> bool:
    rows = await ns.sql("scoring", "SELECT count(*) FROM inbox")
    return bool(rows[0][0] >= n)


def at_of(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


# ------------------------------------------------------------------ drift and promotion

PHASE_1_DAYS = 8
PHASE_2_DAYS = 20
CYCLE_DAYS = 6  # phase 2: everyone buys every 6 days, two more than the 4-day horizon
FLIP = T0 + PHASE_1_DAYS * DAY


def concept_change(customers: list[str], clock: str) -> list[tuple[str, EnvelopeBase]]:
    """Phase 1: half the customers buy daily, half fall silent; silence is churn. Phase 2:
    everyone buys once every six days, so with a four-day horizon a customer who has just
    bought is the one who churns (no purchase in the next four days) and one silent for
    two days or more is about to come back: the same facts now mean the opposite. A clock
    customer's bank postings (not activity, never scored) move event time at every day's
    end."""
    timed: list[tuple[datetime, str, EnvelopeBase]] = []

    def buy(cid: str, at: datetime) -> None:
        timed.extend((at, topic, e) for topic, e in purchase(cid, at))

    for cid in customers:
        buy(cid, T0)
    for day in range(PHASE_1_DAYS):
        for cid in customers[::2]:
            buy(cid, T0 + day * DAY + DAY / 2)
    for i, cid in enumerate(customers):
        for day in range(i % CYCLE_DAYS, PHASE_2_DAYS, CYCLE_DAYS):
            buy(cid, FLIP + day * DAY + DAY / 2)
    for day in range(1, PHASE_1_DAYS + PHASE_2_DAYS + 1):
        at = T0 + day * DAY - timedelta(minutes=1)
        timed.append((at, TRANSACTIONS, f.transaction(clock, at, initiated_by="bank")))
    timed.sort(key=lambda t: t[0])
    return [(topic, e) for _, topic, e in timed]


async def test_a_concept_change_through_kafka_proposes_the_challenger_and_approval_promotes_it(
    ns: Namespace,
) -> None:
    *customers, clock = ids_on(0, "DRF-", 41)
    settings = {
        **FAST,
        # Four-day windows, a point and a sample every day: hundreds of labels in a month.
        "horizon_days": 4, "sample_period_days": 1, "rescore_min_days": 1,
        "rescore_max_days": 1, "max_sample_weight": 1,
        "promotion": "approve", "compare_window": 100, "min_compare": 50,
        "metrics_window": 200, "min_labels_for_model": 50,
    }
    admin = {"Authorization": f"Bearer {token('scoring:admin')}"}
    async with ns.service("scoring", **settings) as svc:
        await publish(ns, concept_change(customers, clock))

        async def proposed() -> dict[str, Any] | None:
            card = (await svc.get("/v1/model")).json()
            return card if card["promotion"]["proposal"] else None

        card = await eventually(proposed, timeout=120, interval=0.5,
                                what="the challenger proposed after the concept change")
        proposal = card["promotion"]["proposal"]
        assert (proposal["from"], proposal["to"]) == ("btyd-logit", "hoeffding-tree")
        assert proposal["policy"] == "approve"
        # Proposed on the new concept's labels, not during the first phase.
        assert at_of(proposal["event_time"]) >= FLIP, proposal
        figures = proposal["figures"]
        assert figures["challenger"]["log_loss"] < 0.99 * figures["champion"]["log_loss"]
        # ...and ranks no worse (within the week, where the rule compares that way).
        ranking = "auc_within_week" if "auc_within_week" in figures["champion"] else "auc"
        assert figures["challenger"][ranking] >= figures["champion"][ranking]
        # ADWIN on the champion's error saw the change; the proposal waits for approval.
        drifts = card["drift"]["events"]
        assert any(at_of(d["event_time"]) >= FLIP for d in drifts), drifts
        assert card["champion"]["model"] == "btyd-logit"
        assert svc.runtime.scoring.holder.current.kind == "btyd-logit"
        recorded = [h for h in card["promotion"]["history"] if h["kind"] == "proposal"]
        assert [h["to"] for h in recorded] == ["hoeffding-tree"]
        assert not [h for h in card["promotion"]["history"] if h["kind"] == "promotion"]

        promoted = await svc.client.post("/v1/model:promote", headers=admin)
        assert promoted.status_code == 200, promoted.text
        body = promoted.json()
        assert body["status"] == "done"
        assert (body["from"], body["to"]) == ("btyd-logit", "hoeffding-tree")
        assert body["reason"] == "approved by test-user"
        assert {"champion", "challenger", "window"} <= set(body["figures"])
        assert svc.runtime.scoring.holder.current.kind == "hoeffding-tree"
        assert svc.runtime.scoring.holder.version >= body["version"]

        after = (await svc.get("/v1/model")).json()
        assert after["champion"]["model"] == "hoeffding-tree"
        assert after["challenger"]["model"] == "btyd-logit"
        assert after["promotion"]["proposal"] is None
        switch = next(h for h in after["promotion"]["history"] if h["kind"] == "promotion")
        assert switch["version"] == body["version"]
        assert (switch["from"], switch["to"]) == ("btyd-logit", "hoeffding-tree")
        assert switch["figures"]["champion"]["model"] == "btyd-logit"
        assert switch["figures"]["challenger"]["log_loss"] is not None
        assert any(c["version"] == body["version"] and c["pinned"]
                   for c in after["checkpoints"]), "a promoted version is kept"

        # The next score comes from the promoted model, and says so.
        end = FLIP + (PHASE_2_DAYS + 1) * DAY
        await publish(ns, purchase(customers[0], end))

        async def rescored() -> dict[str, Any] | None:
            r = await svc.get(f"/v1/customers/{customers[0]}/churn")
            latest = r.json()
            return latest if r.status_code == 200 and at_of(latest["as_of"]) >= end else None

        churn = await eventually(rescored, what="a score by the promoted model")
        assert churn["model"] == "hoeffding-tree" and churn["cold_start"] is False
        assert churn["model_version"] >= body["version"]


# ------------------------------------------------------------------ the churn API


def band(probability: float, cuts: tuple[float, float, float]) -> str:
    return ("low", "medium", "high", "critical")[sum(probability >= c for c in cuts)]


async def test_churn_response_reasons_history_and_access(ns: Namespace) -> None:
    cid, other, clock = ids_on(1, "API-", 3)
    # Cut points inside the range this customer's risk crosses in four weeks of silence,
    # none at the defaults: the bands must follow the configured ones.
    cuts = (0.3, 0.5, 0.6)
    async with ns.service("scoring", run_learner=False, horizon_days=60,
                          band_cuts=list(cuts), **FAST) as svc:
        await publish(ns, [*purchase(cid, T0, rm_id="RM-A", closed=1), *purchase(other, T0, rm_id="RM-B"),
                           *purchase(clock, T0)])

        async def scored(n: int) -> dict[str, Any] | None:
            r = await svc.get(f"/v1/customers/{cid}/churn")
            return r.json() if r.status_code == 200 and len(r.json()["history"]) >= n else None

        first = await eventually(lambda: scored(1), what="the first score")
        assert first["customer_id"] == cid
        assert 0.0 < first["probability"] < 1.0
        assert first["band"] == band(first["probability"], cuts)
        assert first["horizon_days"] == 60
        assert (first["model"], first["model_version"], first["cold_start"]) == (
            "prior:recency", 0, True)
        assert at_of(first["as_of"]) == T0
        assert at_of(first["next_rescore_at"]) == T0 + 7 * DAY
        assert [h["probability"] for h in first["history"]] == [first["probability"]]

        # Four weeks of silence: the clock customer moves event time; weekly re-scores.
        await publish(ns, purchase(clock, T0 + 30 * DAY))
        latest = await eventually(lambda: scored(5), what="four weekly re-scores")
        history = latest["history"]
        assert [at_of(h["as_of"]) for h in history] == [T0 + d * DAY for d in (28, 21, 14, 7, 0)]
        probabilities = [h["probability"] for h in history]
        assert probabilities == sorted(probabilities, reverse=True), "risk rises with silence"
        assert all(h["band"] == band(h["probability"], cuts) for h in history)
        assert len({h["band"] for h in history}) >= 2, "the cut points split this history"
        assert all(h["model_version"] == 0 for h in history)
        assert at_of(latest["as_of"]) == T0 + 28 * DAY
        assert latest["probability"] == probabilities[0]
        assert latest["band"] == band(latest["probability"], cuts)
        assert at_of(latest["next_rescore_at"]) == T0 + 35 * DAY

        reasons = latest["reasons"]
        assert 1 <= len(reasons) <= 3
        contributions = [r["contribution"] for r in reasons]
        assert all(c > 0 for c in contributions)
        assert contributions == sorted(contributions, reverse=True)
        assert all(r["text"] and r["text"] != r["feature"] and "_" not in r["text"]
                   for r in reasons)
        silence = next(r for r in reasons if r["feature"] == "recency_days")
        assert silence["text"] == "no customer-initiated activity for 28 days"

        # Unknown customer; no token; a token without the scope; relationship managers' books.
        unknown = await svc.get("/v1/customers/NOBODY-1/churn")
        assert unknown.status_code == 404 and "NOBODY-1" in unknown.json()["detail"]
        anonymous = await svc.client.get(f"/v1/customers/{cid}/churn")
        assert anonymous.status_code == 401
        unscoped = await svc.get(f"/v1/customers/{cid}/churn", "profile:read")
        assert unscoped.status_code == 403

        def rm(rm_id: str, *extra: str) -> dict[str, str]:
            bearer = token("scoring:read", *extra, subject=f"u-{rm_id.lower()}", rm_id=rm_id)
            return {"Authorization": f"Bearer {bearer}", "X-Purpose": "portfolio review"}

        own = await svc.client.get(f"/v1/customers/{cid}/churn", headers=rm("RM-A"))
        assert own.status_code == 200 and own.json()["probability"] == latest["probability"]
        theirs = await svc.client.get(f"/v1/customers/{other}/churn", headers=rm("RM-A"))
        assert theirs.status_code == 403
        assert other not in theirs.text
        wider = await svc.client.get(f"/v1/customers/{other}/churn",
                                     headers=rm("RM-A", "scoring:all-books"))
        assert wider.status_code == 200


# ------------------------------------------------------------------ treated customers


def decided(cid: str, at: datetime) -> EngagementDecided:
    return EngagementDecided(
        event_id=uuid.uuid4(), customer_id=cid, occurred_at=at, source="tenure-engagement",
        payload=EngagementDecision(action_id=uuid.uuid4(), playbook="retention_offer",
                                   action="offer", channel="email", decision="sent",
                                   reason="sent", treated=True),
    )


async def test_treated_labels_are_recorded_but_not_learnt(ns: Namespace) -> None:
    """Three customers of the same shape (one purchase, then silence): one treated after its
    first point, one treated before its first point was taken (the decision arrives ahead of
    the partition's clock), one untreated. Every window holding a decision is recorded as
    treated and not learnt; the untreated twin's label of the same shape is learnt."""
    treated, early, twin, clock = ids_on(2, "TRT-", 4)
    async with ns.service("scoring", **FAST) as svc:
        await publish(ns, [*purchase(treated, T0), *purchase(early, T0), *purchase(twin, T0),
                           *purchase(clock, T0 + DAY)])
        await eventually(lambda: processed(ns, 8), what="the first purchases")
        # Engagement decides at day 8 for `early` while scoring's clock is still at day 1.
        await publish(ns, [("tenure.engagement-actions.v1", decided(early, T0 + 8 * DAY))])
        await eventually(lambda: processed(ns, 9), what="the early decision")
        await publish(ns, purchase(clock, T0 + 10 * DAY))

        async def first_samples() -> bool:
            rows = await ns.sql("scoring", "SELECT count(*) FROM pending_samples "
                                           "WHERE sampled_at = :at", at=T0 + 7 * DAY)
            return bool(rows[0][0] == 3)

        await eventually(first_samples, what="every customer's sample at day 7")
        await publish(ns, [("tenure.engagement-actions.v1", decided(treated, T0 + 8 * DAY))])
        await eventually(lambda: processed(ns, 12), what="the decision")
        # The windows of day 7 and day 14 close (positive: nobody came back) once the clock
        # passes day 104.
        await publish(ns, purchase(clock, T0 + 110 * DAY))

        async def labelled() -> list[Any] | None:
            rows = await ns.sql(
                "scoring",
                "SELECT customer_id, sampled_at, horizon_end, label, outcome, weight, treated, "
                "learnt_in, champion_probability FROM labels WHERE customer_id <> :clock "
                "ORDER BY customer_id, sampled_at", clock=clock)
            days = {(r.customer_id, r.sampled_at) for r in rows}
            wanted = {(c, T0 + d * DAY) for c in (treated, early, twin) for d in (7, 14)}
            return rows if wanted <= days else None

        rows = await eventually(labelled, timeout=60, what="the labels learnt")
        by = {(r.customer_id, (r.sampled_at - T0).days): r for r in rows}
        for cid in (treated, early):
            first = by[(cid, 7)]
            assert first.treated, f"{cid}'s window (day 7, day 97] holds the decision"
            assert first.learnt_in is None and first.champion_probability is None
            assert (first.label, first.outcome) == (True, "horizon")
            later = by[(cid, 14)]
            assert not later.treated, "a window opened after the decision is not treated"
            assert later.learnt_in is not None
        same = by[(twin, 7)]
        assert not same.treated and same.learnt_in is not None
        assert same.champion_probability is not None
        assert (same.label, same.outcome, same.weight, same.horizon_end) == (
            by[(treated, 7)].label, by[(treated, 7)].outcome, by[(treated, 7)].weight,
            by[(treated, 7)].horizon_end)
        for r in rows:
            assert (r.learnt_in is None) == r.treated, r

        everything = await ns.sql("scoring", "SELECT treated, learnt_in FROM labels")
        learnt = sum(1 for r in everything if r.learnt_in is not None)
        assert sum(1 for r in everything if r.treated) == 2

        async def card_counts() -> dict[str, Any] | None:
            card = (await svc.get("/v1/model")).json()
            return card if card["champion"].get("labels_learnt") == learnt else None

        card = await eventually(card_counts, what="the checkpoint with every label")
        assert card["labels"]["treated"] == 2
        assert card["labels"]["treated_policy"] == "recorded; not learnt"
        assert card["labels"]["learnt"] == learnt == len(everything) - 2
        metrics = (await svc.client.get("/metrics")).text
        assert "tenure_scoring_labels_treated_not_learnt_total 2.0" in metrics


# ------------------------------------------------------------------ re-scores as time moves


def schedule(until: datetime, last_activity: datetime) -> list[datetime]:
    """Time-driven points of a silent customer (docs/scoring.md): weekly while recent, then a
    quarter of the silence, at least every 28 days."""
    points, at = [], last_activity
    while True:
        silence = (at - last_activity) / DAY
        at += DAY * min(max(silence / 4, 7.0), 28.0)
        if at > until:
            return points
        points.append(at)


async def timed_scores(ns: Namespace, cid: str) -> list[dict[str, Any]]:
    wire = [m["value"] for m in await ns.read_topic("tenure.churn-scores.v1")]
    return sorted((m for m in wire if m["customer_id"] == cid and m["causation_id"] is None),
                  key=lambda m: m["occurred_at"])


async def test_a_silent_customer_is_rescored_with_rising_risk_as_the_watermark_advances(
    ns: Namespace,
) -> None:
    silent, clock = ids_on(0, "WM-", 2)
    async with ns.service("scoring", run_learner=False, **FAST) as svc:
        await publish(ns, purchase(silent, T0))
        await publish(ns, purchase(clock, T0 + 3 * DAY))

        async def relayed() -> bool:
            wire = [m["value"] for m in await ns.read_topic("tenure.churn-scores.v1")]
            return any(m["customer_id"] == clock for m in wire)

        # Nothing is due before the first week: no time-driven score yet (the clock
        # customer's score, written after the silent customer's, is already out).
        await eventually(relayed, what="the first scores on the topic")
        assert await timed_scores(ns, silent) == []

        seen: list[dict[str, Any]] = []
        # Only the other customer's events move the partition's event time.
        for day in (10, 20, 45, 80, 170):
            until = T0 + day * DAY
            await publish(ns, purchase(clock, until))
            expected = schedule(until, T0)

            async def caught_up(expected: list[datetime] = expected) -> list[dict[str, Any]]:
                got = await timed_scores(ns, silent)
                return got if len(got) >= len(expected) else []

            seen = await eventually(caught_up, what=f"the points up to day {day}")
            got = [at_of(m["occurred_at"]) for m in seen]
            assert len(got) == len(expected), (day, got, expected)
            # Recency is kept to 1e-4 days: the thinned points may differ by a second.
            assert all(abs(a - b) < timedelta(seconds=10) for a, b in zip(got, expected)), day

        points = [at_of(m["occurred_at"]) for m in seen]
        assert points[:4] == [T0 + d * DAY for d in (7, 14, 21, 28)]
        gaps = [(b - a) / DAY for a, b in itertools.pairwise(points)]
        assert all(b >= a - 1e-3 for a, b in itertools.pairwise(gaps))
        assert gaps[:3] == [7, 7, 7] and abs(max(gaps) - 28) < 1e-3
        probabilities = [m["payload"]["probability"] for m in seen]
        assert all(a < b for a, b in itertools.pairwise(probabilities)), probabilities
        for m, at in zip(seen, points, strict=True):
            assert at_of(m["payload"]["as_of"]) == at
            assert m["payload"]["cold_start"] is True
            assert m["payload"]["model"] == "prior:recency"
            expected_id = uuid.uuid5(TENURE_NAMESPACE, f"churn.scored|{silent}|{at.isoformat()}")
            assert m["event_id"] == str(expected_id)
        # The customer's own event-driven score is the only other one they got.
        wire = [m["value"] for m in await ns.read_topic("tenure.churn-scores.v1")]
        own = [m for m in wire if m["customer_id"] == silent and m["causation_id"] is not None]
        assert len(own) == 1 and at_of(own[0]["payload"]["as_of"]) == T0
        # The API's latest score is the last point's, and its history holds every point.
        r = await svc.get(f"/v1/customers/{silent}/churn")
        body = r.json()
        assert at_of(body["as_of"]) == points[-1]
        assert body["probability"] == probabilities[-1]
        assert [at_of(h["as_of"]) for h in body["history"]] == [*reversed(points), T0]
