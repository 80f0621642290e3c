"""Engagement's handlers: learn contact facts, run playbooks under the contact policy."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

from services.engagement.playbooks import festival_calendar, festival_on
from services.engagement.policy import Contact, decide, local_date
from services.engagement.store import EngagementStore
from shared.events import (
    ChurnScored,
    ConsentChanged,
    Decision,
    EngagementDecided,
    EngagementDecision,
    EnvelopeBase,
    FeedbackSubmitted,
    ProfileUpdated,
    StageChanged,
    derived_event_id,
)
from shared.kit import UnitOfWork
from shared.settings import OUTPUT_TOPICS

Uow = UnitOfWork[EngagementStore]


def _contact_variables(contact: dict[str, Any]) -> dict[str, Any]:
    return {
        "tier": contact.get("value_tier"),
        "tags": list(contact.get("tags") or []),
        "rfm_segment": contact.get("rfm_segment"),
        "segment": contact.get("segment"),
        "rm_id": contact.get("rm_id"),
        "flags": dict(contact.get("flags") or {}),
        "open_complaints": int(contact.get("open_complaints") or 0),
    }


async def run_playbooks(
    event: EnvelopeBase, trigger: dict[str, Any], *, uow: Uow, wall_clock: datetime | None = None,
    record: bool = True, known_contact: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Decide every playbook the event fires; record and emit each decision (if `record`)."""
    store = uow.store
    registry = store.registry
    if not any(p.spec.trigger == event.event_type and p.spec.enabled
               for p in registry.playbooks.values()):
        return []
    contact = known_contact if known_contact is not None else (
        await store.contact(event.customer_id) or {})
    zone = contact.get("time_zone") or "UTC"
    calendar = festival_calendar(uow.settings.playbooks_dir)  # type: ignore[attr-defined]
    variables = {**_contact_variables(contact), **trigger,
                 "festival": festival_on(local_date(event.occurred_at, zone), calendar)}
    fired = [p for p in registry.playbooks.values()
             if p.spec.trigger == event.event_type and p.fires(variables)]
    if not fired:
        return []
    consent = await store.consent_of(event.customer_id)
    history = await store.history(event.customer_id)
    budget = await store.budget_used([p.id for p in fired], event.occurred_at)
    who = Contact(event.customer_id, contact.get("time_zone") or "UTC", consent,
                  dict(contact.get("flags") or {}), int(contact.get("open_complaints") or 0))
    groups: dict[str, list[Any]] = defaultdict(list)
    for p in fired:
        groups[p.spec.group].append(p)
    wall = wall_clock or datetime.now(UTC)
    decisions = []
    for members in groups.values():
        by_id = {p.id: p for p in members}
        for verdict in decide([p.candidate() for p in members], who, history, budget,
                              trigger_at=event.occurred_at, wall_clock=wall,
                              policy=registry.policy):
            spec = by_id[verdict.playbook].spec
            action_id = derived_event_id("action", event.event_id, spec.id)
            # Dry run: the verdict is recorded as the policy gave it, but nobody is contacted,
            # so the row is not a treatment (scoring and uplift must not count it as one).
            dry_run = verdict.treated and uow.settings.dry_run  # type: ignore[attr-defined]
            deliver = verdict.treated and not dry_run
            figures = {**verdict.figures, "dry_run": True, "policy_reason": verdict.reason} \
                if dry_run else verdict.figures
            row = {
                "action_id": action_id,
                "customer_id": event.customer_id,
                "playbook": spec.id,
                "action": spec.action.template,
                "template": spec.action.template,
                "offer": spec.action.offer,
                "channel": spec.action.channel,
                "purpose": spec.purpose,
                "decision": verdict.decision.value,
                "reason": "dry_run" if dry_run else verdict.reason,
                "policy": figures,
                "treated": deliver,
                "trigger_event_id": event.event_id,
                "decided_at": event.occurred_at,
                "deliver_at": verdict.deliver_at,
                "status": "pending" if deliver else "none",
                "next_attempt_at": verdict.deliver_at if deliver else None,
            }
            decisions.append(row)
            if not record:
                continue
            if not await store.record_action(row):
                continue
            await uow.emit(
                EngagementDecided(
                    event_id=derived_event_id("engagement.decided", event.event_id, spec.id),
                    customer_id=event.customer_id,
                    occurred_at=event.occurred_at,
                    source=uow.settings.source_id,
                    causation_id=event.event_id,
                    payload=EngagementDecision(
                        action_id=action_id, playbook=spec.id, action=spec.action.template,
                        channel=spec.action.channel, decision=verdict.decision,
                        reason=row["reason"], policy=figures, treated=deliver,
                    ),
                ),
                OUTPUT_TOPICS["engagement_actions"],
            )
            if verdict.decision in (Decision.sent, Decision.deferred):
                history.append(_past(row))
                budget[spec.id] = budget.get(spec.id, 0) + 1
    return decisions


def _past(row: dict[str, Any]) -> Any:
    from services.engagement.policy import Past

    return Past(row["playbook"], row["purpose"], row["decision"], row["decided_at"])


async def on_profile_updated(event: ProfileUpdated, *, uow: Uow, now: datetime) -> None:
    p = event.payload
    contact = {
        "time_zone": p.time_zone,
        "rm_id": p.rm_id,
        "flags": p.flags.model_dump(),
        "value_tier": p.value_tier,
        "tags": list(p.tags),
        "open_complaints": int(p.features.get("open_complaints", 0)),
        "rfm_segment": p.rfm_segment,
        "segment": p.segment.value if p.segment else None,
    }
    await uow.store.upsert_contact(event.customer_id, **contact)
    await uow.store.reassign_open_tasks(event.customer_id, p.rm_id)
    await run_playbooks(event, {}, uow=uow, known_contact=contact)


async def on_consent_changed(event: ConsentChanged, *, uow: Uow, now: datetime) -> None:
    p = event.payload
    await uow.store.set_consent(
        event.customer_id, p.channel.value, p.purpose.value, p.granted, event.occurred_at
    )


async def on_stage_changed(event: StageChanged, *, uow: Uow, now: datetime) -> None:
    p = event.payload
    await uow.store.upsert_contact(event.customer_id, stage=p.to_stage.value)
    if p.to_stage.value in ("dormant", "churned"):
        await uow.store.record_churn_event(event.customer_id, p.to_stage.value, p.transition_at)
    trigger = {"to": p.to_stage.value, "from": p.from_stage.value if p.from_stage else None,
               "rule": p.rule}
    await run_playbooks(event, trigger, uow=uow)


async def on_churn_scored(event: ChurnScored, *, uow: Uow, now: datetime) -> None:
    p = event.payload
    await run_playbooks(event, {"probability": p.probability, "band": p.band.value}, uow=uow)


async def on_feedback(event: FeedbackSubmitted, *, uow: Uow, now: datetime) -> None:
    p = event.payload
    await run_playbooks(event, {"kind": p.kind.value, "score": p.score, "category": p.category},
                        uow=uow)


HANDLERS = {
    "profile.updated": on_profile_updated,
    "consent.changed": on_consent_changed,
    "stage.changed": on_stage_changed,
    "churn.scored": on_churn_scored,
    "feedback.submitted": on_feedback,
}
