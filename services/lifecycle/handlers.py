"""Lifecycle's handlers: move the customer through stages and announce each move."""

from __future__ import annotations

from datetime import datetime

from services.lifecycle.domain import transitions
from services.lifecycle.store import LifecycleStore
from shared.events import ProfileUpdated, StageChange, StageChanged, derived_event_id
from shared.kit import UnitOfWork
from shared.settings import OUTPUT_TOPICS

Uow = UnitOfWork[LifecycleStore]


async def on_profile_updated(event: ProfileUpdated, *, uow: Uow, now: datetime) -> None:
    current = await uow.store.current(event.customer_id)
    for t in transitions(current, event.payload, event.occurred_at):
        # Deterministic by customer, rule and event time: a replay re-derives the same id.
        event_id = derived_event_id(
            "stage.changed", event.customer_id, t.to_stage.value, t.rule, t.transition_at.isoformat()
        )
        await uow.store.record(event.customer_id, t, event_id)
        await uow.emit(
            StageChanged(
                event_id=event_id,
                customer_id=event.customer_id,
                occurred_at=t.transition_at,
                source=uow.settings.source_id,
                causation_id=event.event_id,
                payload=StageChange(
                    from_stage=t.from_stage,
                    to_stage=t.to_stage,
                    rule=t.rule,
                    evidence=t.evidence,
                    transition_at=t.transition_at,
                ),
            ),
            OUTPUT_TOPICS["lifecycle_stages"],
        )


HANDLERS = {"profile.updated": on_profile_updated}
