"""Scoring's handlers: score every profile update, re-score as silence grows, and gather the
evidence that resolves pending labels.

Time-driven points (re-scores and learning samples) are a per-customer schedule in event
time: weekly while the customer is recent, less often as silence grows. A point is taken
with what was known then: points before a new profile update are caught up with the old
snapshot before the update is applied; the others are swept after each batch, up to the
partition's clock. Their event ids come from the customer and the point's time, so a replay
re-emits the same ids."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from services.scoring.domain import Memory, facts_at, rescore_after
from services.scoring.model import Assessment, assess_facts
from services.scoring.store import CustomerState, Evidence, ScoringStore
from shared.events import (
    ChurnScore,
    ChurnScored,
    EngagementDecided,
    ProfileSnapshot,
    ProfileUpdated,
    ScoreReason,
    derived_event_id,
)
from shared.kit import UnitOfWork, partition_of
from shared.settings import OUTPUT_TOPICS

Uow = UnitOfWork[ScoringStore]
# A customer is caught up at most this many time-driven points per pass (the rest follow).
MAX_POINTS_PER_PASS = 400


async def on_profile_updated(event: ProfileUpdated, *, uow: Uow, now: datetime) -> None:
    settings: Any = uow.settings
    store = uow.store
    snapshot = event.payload
    cid = event.customer_id
    state = await store.state(cid)
    if state is not None and not state.closed:
        # Points before this update are judged with what was known before it.
        await catch_up(uow, state, until=event.occurred_at, inclusive=False)
    as_of = max(snapshot.as_of, now)
    if state is not None and state.score is not None and state.score["as_of"] > as_of:
        as_of = state.score["as_of"]  # a late update: corrects the score at the latest time
    previous = state.snapshot if state is not None else None
    if state is None:
        state = CustomerState(
            customer_id=cid,
            partition=partition_of(cid, settings.partitions),
            snapshot=snapshot,
            first_seen_at=event.occurred_at,
            memory=Memory(first_seen_at=event.occurred_at),
        )
    state.snapshot = snapshot
    state.first_seen_at = min(state.first_seen_at, event.occurred_at)
    state.memory = state.memory.observe(float(snapshot.total_balance), as_of)
    facts = facts_at(snapshot, as_of, state.memory)
    assessment = assess_facts(store.model, facts, settings.band_cuts, settings.top_reasons)
    await _emit(uow, state, assessment, as_of,
                event_id=derived_event_id("churn.scored", event.event_id),
                occurred_at=event.occurred_at, causation_id=event.event_id)

    closed_all = not snapshot.products and snapshot.features.get("accounts_closed", 0.0) > 0
    if closed_all and not state.closed:
        state.closed = True
        state.next_due_at = None
        store.closure(cid, event.occurred_at)
    elif not closed_all and (state.closed or state.next_due_at is None):
        state.closed = False
        state.next_due_at = as_of + rescore_after(facts["recency_days"],
                                                  settings.rescore_min_days,
                                                  settings.rescore_max_days)
    _gather_activity(store, cid, previous, snapshot, now)
    store.put(state)


def _gather_activity(
    store: ScoringStore, cid: str, previous: ProfileSnapshot | None,
    snapshot: ProfileSnapshot, now: datetime,
) -> None:
    """New customer-initiated activity resolves the customer's open windows."""
    at = snapshot.last_activity_at
    if at is None:
        return
    before = previous.last_activity_at if previous is not None else None
    if before is not None and at <= before:
        return
    if previous is None:
        known, seen = True, at
    else:
        new_transactions = snapshot.transaction_count - previous.transaction_count
        active_days = snapshot.features.get("active_days_30", 0.0)
        known = new_transactions <= 1 and active_days <= 1
        seen = previous.as_of
    store.activity(Evidence(cid, at, seen, known, late=at <= now))


async def catch_up(uow: Uow, state: CustomerState, *, until: datetime, inclusive: bool) -> int:
    """Every time-driven point of the customer before (or at) `until`: a score with the
    facts of that moment, and a learning sample when a period has passed since the last."""
    settings: Any = uow.settings
    done = 0
    while (
        state.next_due_at is not None and not state.closed and done < MAX_POINTS_PER_PASS
        and (state.next_due_at <= until if inclusive else state.next_due_at < until)
    ):
        at = state.next_due_at
        facts = facts_at(state.snapshot, at, state.memory)
        assessment = assess_facts(uow.store.model, facts, settings.band_cuts,
                                  settings.top_reasons)
        await _emit(uow, state, assessment, at,
                    event_id=derived_event_id("churn.scored", state.customer_id,
                                              at.isoformat()),
                    occurred_at=at, causation_id=None)
        _sample(uow, state, at, facts, assessment)
        state.next_due_at = at + rescore_after(facts["recency_days"], settings.rescore_min_days,
                                               settings.rescore_max_days)
        done += 1
    if done:
        uow.store.put(state)
    return done


def _sample(
    uow: Uow, state: CustomerState, at: datetime, facts: dict[str, float],
    assessment: Assessment,
) -> None:
    """One pending prediction per customer per period at most; its weight is the time it
    stands for (so thinned samples of long-silent customers still count for their time)."""
    settings: Any = uow.settings
    period = timedelta(days=settings.sample_period_days)
    last = state.last_sample_at
    if last is not None and at - last < period:
        return
    weight = 1.0 if last is None else min((at - last) / period, settings.max_sample_weight)
    uow.store.add_sample({
        "customer_id": state.customer_id,
        "partition": state.partition,
        "sampled_at": at,
        "horizon_end": at + timedelta(days=settings.horizon_days),
        "facts": facts,
        "weight": round(weight, 4),
        "prediction": assessment.probability,
        "model_version": assessment.version,
    })
    state.last_sample_at = at


async def _emit(
    uow: Uow, state: CustomerState, a: Assessment, as_of: datetime, *, event_id: Any,
    occurred_at: datetime, causation_id: Any,
) -> None:
    settings: Any = uow.settings
    reasons = [ScoreReason(feature=r.feature, text=r.text, contribution=r.contribution)
               for r in a.reasons]
    out = ChurnScored(
        event_id=event_id,
        customer_id=state.customer_id,
        occurred_at=occurred_at,
        source=settings.source_id,
        causation_id=causation_id,
        payload=ChurnScore(
            probability=a.probability,
            band=a.band,
            horizon_days=settings.horizon_days,
            model=a.model,
            model_version=a.version,
            cold_start=a.cold_start,
            reasons=reasons,
            as_of=as_of,
        ),
    )
    if state.score is None or as_of >= state.score["as_of"]:
        state.score = {
            "probability": a.probability, "band": a.band.value, "model": a.model,
            "model_version": a.version, "cold_start": a.cold_start,
            "reasons": [r.model_dump() for r in reasons], "features": a.features,
            "as_of": as_of, "event_id": event_id,
        }
    uow.store.record_history({
        "event_id": event_id, "customer_id": state.customer_id, "probability": a.probability,
        "band": a.band.value, "model_version": a.version, "as_of": as_of,
    })
    uow.store.count_score(time_driven=causation_id is None)
    await uow.emit(out, OUTPUT_TOPICS["churn_scores"])


async def on_engagement_decided(event: EngagementDecided, *, uow: Uow, now: datetime) -> None:
    """A playbook acted on the customer: their open windows record that they were treated."""
    if event.payload.treated:
        uow.store.treated(event.customer_id, event.occurred_at)


def sweeper(clock: Callable[[], dict[int, datetime]], chunk: int = 1000) -> Any:
    """The batch hook: every customer due by their partition's clock gets their time-driven
    points, then windows the clock has passed resolve positive."""

    async def after_batch(uow: Uow) -> None:
        watermarks = clock()
        if not watermarks:
            return
        while True:
            due = await uow.store.due(watermarks, chunk)
            if not due:
                break
            progressed = 0
            for state in due:
                progressed += await catch_up(uow, state, until=watermarks[state.partition],
                                             inclusive=True)
            await uow.flush()
            if not progressed:
                break
        await uow.store.resolve_horizons(watermarks)

    return after_batch


HANDLERS = {
    "profile.updated": on_profile_updated,
    "engagement.decided": on_engagement_decided,
}
