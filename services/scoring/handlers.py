"""Scoring's handlers: score every profile update, gather activity as it happens, and
re-score as silence grows.

Activity comes from the customer-initiated events themselves (a customer's transaction, an
app event, feedback), each at its own time: profile emits one snapshot per customer per
batch, which in a replay merges weeks of a customer's history, so its `last_activity_at`
alone cannot say when a label window first saw activity. Snapshots give everything else.

Time-driven points (re-scores and learning samples) are a per-customer schedule in event
time: weekly while the customer is recent, less often as silence grows. A point is taken
with what was known at its time: activity from the customer's log up to that time, and the
snapshot of that time (the points before a new snapshot are caught up with the previous
one; the others are swept once every snapshot and every activity before them has arrived).
A sample's label resolves at once when the log already holds the answer. Event ids come
from the customer and the point's time, so a replay re-emits the same ids."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from services.scoring.domain import facts_at, rescore_after
from services.scoring.model import Assessment, assess_facts
from services.scoring.store import CustomerState, Evidence, ScoringStore
from shared.events import (
    AppClicked,
    ChurnScore,
    ChurnScored,
    EngagementDecided,
    EnvelopeBase,
    FeedbackSubmitted,
    InitiatedBy,
    ProfileUpdated,
    ScoreReason,
    TransactionPosted,
    derived_event_id,
)
from shared.kit import UnitOfWork, partition_of
from shared.settings import OUTPUT_TOPICS

Uow = UnitOfWork[ScoringStore]
# A customer is caught up at most this many time-driven points per pass (the rest follow).
MAX_POINTS_PER_PASS = 400


async def _state(uow: Uow, event: EnvelopeBase) -> CustomerState:
    state = await uow.store.state(event.customer_id)
    if state is None:
        settings: Any = uow.settings
        state = CustomerState(
            customer_id=event.customer_id,
            partition=partition_of(event.customer_id, settings.partitions),
            first_seen_at=event.occurred_at,
        )
    state.first_seen_at = min(state.first_seen_at, event.occurred_at)
    state.memory.seen(event.occurred_at)
    return state


async def on_profile_updated(event: ProfileUpdated, *, uow: Uow, now: datetime) -> None:
    settings: Any = uow.settings
    store = uow.store
    snapshot = event.payload
    state = await _state(uow, event)
    if state.scored and not state.closed and store.clock is not None:
        # Points before this snapshot are judged with the previous one (while the activity
        # before them is known).
        known = store.clock.activity_of(state.partition)
        if known is not None:
            await catch_up(uow, state, until=min(event.occurred_at, known), inclusive=False,
                           known=known)
    as_of = max(snapshot.as_of, now)
    if state.score is not None and state.score["as_of"] > as_of:
        as_of = state.score["as_of"]  # a late update corrects the score at the latest time
    state.set_snapshot(snapshot)
    state.memory.observe_balance(float(snapshot.total_balance), as_of)
    facts = facts_at(snapshot, as_of, state.memory)
    assessment = assess_facts(store.model, facts, settings.band_cuts, settings.top_reasons)
    await _emit(uow, state, assessment, as_of,
                event_id=derived_event_id("churn.scored", event.event_id),
                occurred_at=event.occurred_at, causation_id=event.event_id)
    closed_all = not snapshot.products and snapshot.features.get("accounts_closed", 0.0) > 0
    if closed_all and not state.closed:
        state.closed = True
        state.next_due_at = None
        store.closure(state.customer_id, event.occurred_at)
    elif not closed_all and (state.closed or state.next_due_at is None):
        # The schedule starts at the customer's own event, not at the watermark: in a replay
        # the snapshot (and the clock) may lead the event by weeks, and a schedule started
        # there would lose a new customer's first points, the ones that teach the model
        # about new customers. The sweep catches up the points already past.
        state.closed = False
        anchor = min(event.occurred_at, as_of)
        recency = facts_at(snapshot, anchor, state.memory)["recency_days"]
        state.next_due_at = anchor + rescore_after(recency, settings.rescore_min_days,
                                                   settings.rescore_max_days)
    store.put(state)


async def _activity(
    uow: Uow, event: EnvelopeBase, now: datetime, *, transaction: bool, amount: float = 0.0
) -> None:
    """A customer-initiated event: it joins the customer's log and resolves their open label
    windows."""
    state = await _state(uow, event)
    state.memory.observe_activity(event.occurred_at, transaction=transaction, amount=amount)
    uow.store.activity(Evidence(event.customer_id, event.occurred_at,
                                late=event.occurred_at <= now))
    uow.store.put(state)


async def on_transaction_posted(event: TransactionPosted, *, uow: Uow, now: datetime) -> None:
    if event.payload.initiated_by is InitiatedBy.customer:
        await _activity(uow, event, now, transaction=True, amount=float(event.payload.amount))


async def on_app_click(event: AppClicked, *, uow: Uow, now: datetime) -> None:
    await _activity(uow, event, now, transaction=False)


async def on_feedback_submitted(event: FeedbackSubmitted, *, uow: Uow, now: datetime) -> None:
    await _activity(uow, event, now, transaction=False)


async def catch_up(
    uow: Uow, state: CustomerState, *, until: datetime, inclusive: bool,
    known: datetime | None = None,
) -> int:
    """Every time-driven point of the customer before (or at) `until`: a score with the
    facts of that moment, and a learning sample when a period has passed since the last."""
    settings: Any = uow.settings
    snapshot = state.snapshot
    if snapshot is None:
        return 0
    done = 0
    while (
        state.next_due_at is not None and not state.closed and done < MAX_POINTS_PER_PASS
        and (state.next_due_at <= until if inclusive else state.next_due_at < until)
    ):
        at = state.next_due_at
        facts = facts_at(snapshot, at, state.memory)
        assessment = assess_facts(uow.store.model, facts, settings.band_cuts,
                                  settings.top_reasons)
        await _emit(uow, state, assessment, at,
                    event_id=derived_event_id("churn.scored", state.customer_id,
                                              at.isoformat()),
                    occurred_at=at, causation_id=None)
        _sample(uow, state, at, facts, assessment, known)
        state.next_due_at = at + rescore_after(facts["recency_days"], settings.rescore_min_days,
                                               settings.rescore_max_days)
        done += 1
    if done:
        uow.store.put(state)
    return done


def _sample(
    uow: Uow, state: CustomerState, at: datetime, facts: dict[str, float],
    assessment: Assessment, known: datetime | None,
) -> None:
    """One pending prediction per customer per period at most; its weight is the time it
    stands for (so thinned points of long-silent customers still count for their time).
    If the customer's log already holds activity in the window (it is counted as it
    arrives, ahead of the points), or the activity clock already passed the window's end,
    the label resolves now."""
    settings: Any = uow.settings
    period = timedelta(days=settings.sample_period_days)
    last = state.last_sample_at
    if last is not None and at - last < period:
        return
    weight = 1.0 if last is None else min((at - last) / period, settings.max_sample_weight)
    end = at + timedelta(days=settings.horizon_days)
    label: bool | None = None
    outcome = resolved = None
    nxt = state.memory.first_activity_after(at)
    if nxt is not None and nxt <= end.timestamp():
        label, outcome = False, "activity"
        resolved = datetime.fromtimestamp(nxt, tz=at.tzinfo)
    elif known is not None and known > end:
        label, outcome, resolved = True, "horizon", end
    # A decision that arrived before this point was taken still marks its window (as the
    # store's update marks the windows already open); later samples cannot hold these.
    treated = any(at < d <= end and (resolved is None or resolved >= d)
                  for d in state.treatments)
    state.treatments = [d for d in state.treatments if d > at]
    uow.store.add_sample({
        "customer_id": state.customer_id,
        "partition": state.partition,
        "sampled_at": at,
        "horizon_end": end,
        "facts": facts,
        "weight": round(weight, 4),
        "prediction": assessment.probability,
        "model_version": assessment.version,
        "label": label,
        "outcome": outcome,
        "resolved_at": resolved,
        "treated": treated,
    })
    state.last_sample_at = at


def churn_scored(
    settings: Any, customer_id: str, a: Assessment, as_of: datetime, *, event_id: Any,
    occurred_at: datetime, causation_id: Any,
) -> ChurnScored:
    """The `churn.scored` event of an assessment."""
    reasons = [ScoreReason(feature=r.feature, text=r.text, contribution=r.contribution)
               for r in a.reasons]
    return ChurnScored(
        event_id=event_id,
        customer_id=customer_id,
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


async def _emit(
    uow: Uow, state: CustomerState, a: Assessment, as_of: datetime, *, event_id: Any,
    occurred_at: datetime, causation_id: Any,
) -> None:
    out = churn_scored(uow.settings, state.customer_id, a, as_of, event_id=event_id,
                       occurred_at=occurred_at, causation_id=causation_id)
    reasons = out.payload.reasons
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
    """A playbook acted on the customer: their open windows record that they were treated,
    and so will the windows of points not taken yet that hold the decision (the partition's
    clock may be behind it)."""
    if not event.payload.treated:
        return
    at = event.occurred_at
    uow.store.treated(event.customer_id, at)
    state = await uow.store.state(event.customer_id)
    if state is None or state.closed:
        return  # never seen (no point before their first event), or no more points
    if (state.last_sample_at is None or at > state.last_sample_at) and at not in state.treatments:
        state.treatments.append(at)
        uow.store.put(state)


HANDLERS = {
    "profile.updated": on_profile_updated,
    "transaction.posted": on_transaction_posted,
    "app.click": on_app_click,
    "feedback.submitted": on_feedback_submitted,
    "engagement.decided": on_engagement_decided,
}
