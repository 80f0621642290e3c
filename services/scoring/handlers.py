"""Scoring's handlers: score every profile update."""

from __future__ import annotations

from datetime import datetime

from services.scoring.model import assess
from services.scoring.store import ScoringStore
from shared.events import ChurnScore, ChurnScored, ProfileUpdated, ScoreReason, derived_event_id
from shared.kit import UnitOfWork
from shared.settings import OUTPUT_TOPICS

Uow = UnitOfWork[ScoringStore]


async def on_profile_updated(event: ProfileUpdated, *, uow: Uow, now: datetime) -> None:
    settings = uow.settings
    model = uow.store.model
    as_of = max(event.payload.as_of, now)
    a = assess(model, event.payload, as_of, settings.band_cuts, settings.top_reasons)  # type: ignore[attr-defined]
    out = ChurnScored(
        event_id=derived_event_id("churn.scored", event.event_id),
        customer_id=event.customer_id,
        occurred_at=event.occurred_at,
        source=settings.source_id,
        causation_id=event.event_id,
        payload=ChurnScore(
            probability=a.probability,
            band=a.band,
            horizon_days=model.horizon_days,
            model=a.model,
            model_version=a.version,
            cold_start=a.cold_start,
            reasons=[
                ScoreReason(feature=r.feature, text=r.text, contribution=r.contribution)
                for r in a.reasons
            ],
            as_of=as_of,
        ),
    )
    await uow.store.save_score(
        {
            "customer_id": event.customer_id,
            "probability": a.probability,
            "band": a.band.value,
            "model": a.model,
            "model_version": a.version,
            "cold_start": a.cold_start,
            "reasons": [r.model_dump() for r in out.payload.reasons],
            "features": a.features,
            "snapshot": event.payload.model_dump(mode="json", by_alias=True),
            "first_seen_at": event.occurred_at,
            "as_of": as_of,
            "event_id": out.event_id,
        }
    )
    await uow.emit(out, OUTPUT_TOPICS["churn_scores"])


HANDLERS = {"profile.updated": on_profile_updated}
