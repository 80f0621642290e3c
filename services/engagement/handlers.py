"""Engagement's handlers: learn contact facts, decide playbooks on stage changes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.engagement.domain import decide, playbooks_for_stage
from services.engagement.store import EngagementStore
from shared.events import (
    ConsentChanged,
    EngagementDecided,
    EngagementDecision,
    ProfileUpdated,
    StageChanged,
    derived_event_id,
)
from shared.kit import UnitOfWork
from shared.settings import OUTPUT_TOPICS

Uow = UnitOfWork[EngagementStore]


async def on_profile_updated(event: ProfileUpdated, *, uow: Uow, now: datetime) -> None:
    p = event.payload
    await uow.store.upsert_contact(
        event.customer_id,
        time_zone=p.time_zone,
        rm_id=p.rm_id,
        flags=p.flags.model_dump(),
        value_tier=p.value_tier,
        tags=list(p.tags),
    )


async def on_consent_changed(event: ConsentChanged, *, uow: Uow, now: datetime) -> None:
    p = event.payload
    await uow.store.set_consent(
        event.customer_id, p.channel.value, p.purpose.value, p.granted, event.occurred_at
    )


async def on_stage_changed(event: StageChanged, *, uow: Uow, now: datetime) -> None:
    settings = uow.settings
    for playbook in playbooks_for_stage(event.payload.to_stage):
        contact = await uow.store.contact(event.customer_id) or {}
        verdict = decide(
            playbook,
            consent=await uow.store.consent_of(event.customer_id),
            flags=contact.get("flags") or {},
            trigger_at=event.occurred_at,
            wall_clock=datetime.now(UTC),
            freshness=timedelta(hours=settings.freshness_hours),  # type: ignore[attr-defined]
        )
        action_id = derived_event_id("action", event.event_id, playbook.name)
        await uow.store.record_action(
            {
                "action_id": action_id,
                "customer_id": event.customer_id,
                "playbook": playbook.name,
                "action": playbook.action,
                "channel": playbook.channel.value,
                "decision": verdict.decision.value,
                "reason": verdict.reason,
                "policy": verdict.policy,
                "trigger_event_id": event.event_id,
                "decided_at": event.occurred_at,
            }
        )
        await uow.emit(
            EngagementDecided(
                event_id=derived_event_id("engagement.decided", event.event_id, playbook.name),
                customer_id=event.customer_id,
                occurred_at=event.occurred_at,
                source=settings.source_id,
                causation_id=event.event_id,
                payload=EngagementDecision(
                    action_id=action_id,
                    playbook=playbook.name,
                    action=playbook.action,
                    channel=playbook.channel,
                    decision=verdict.decision,
                    reason=verdict.reason,
                    policy=verdict.policy,
                    treated=verdict.decision.value == "sent",
                ),
            ),
            OUTPUT_TOPICS["engagement_actions"],
        )


HANDLERS = {
    "profile.updated": on_profile_updated,
    "consent.changed": on_consent_changed,
    "stage.changed": on_stage_changed,
}
