"""Engagement's pure logic: playbook triggers and the contact policy's verdict."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from shared.events import ContactChannel, ContactPurpose, Decision, Stage


@dataclass(frozen=True)
class Playbook:
    name: str
    action: str
    channel: ContactChannel
    purpose: ContactPurpose
    trigger_stage: Stage


ONBOARDING_WELCOME = Playbook(
    name="onboarding_welcome",
    action="welcome_email",
    channel=ContactChannel.email,
    purpose=ContactPurpose.marketing,
    trigger_stage=Stage.onboarding,
)
PLAYBOOKS = (ONBOARDING_WELCOME,)


@dataclass(frozen=True)
class Verdict:
    decision: Decision
    reason: str
    policy: dict[str, Any] = field(default_factory=dict)


def playbooks_for_stage(stage: Stage) -> list[Playbook]:
    return [p for p in PLAYBOOKS if p.trigger_stage is stage]


def decide(
    playbook: Playbook,
    *,
    consent: dict[tuple[str, str], bool],
    flags: dict[str, bool],
    trigger_at: datetime,
    wall_clock: datetime,
    freshness: timedelta,
) -> Verdict:
    """The contact policy, in order: consent, protective flags, freshness.

    >>> from datetime import UTC, datetime, timedelta
    >>> t = datetime(2026, 1, 1, tzinfo=UTC)
    >>> decide(ONBOARDING_WELCOME, consent={}, flags={}, trigger_at=t, wall_clock=t,
    ...        freshness=timedelta(hours=48)).reason
    'no_consent'
    >>> decide(ONBOARDING_WELCOME, consent={("email", "marketing"): True}, flags={},
    ...        trigger_at=t, wall_clock=t + timedelta(days=3),
    ...        freshness=timedelta(hours=48)).decision.value
    'historical'
    """
    key = (playbook.channel.value, playbook.purpose.value)
    figures: dict[str, Any] = {
        "channel": key[0],
        "purpose": key[1],
        "consent": consent.get(key),
        "trigger_age_hours": round((wall_clock - trigger_at).total_seconds() / 3600, 3),
        "freshness_hours": freshness.total_seconds() / 3600,
    }
    if not consent.get(key, False):
        return Verdict(Decision.suppressed, "no_consent", figures)
    for flag in ("vulnerable", "collections"):
        if flags.get(flag) and playbook.purpose is ContactPurpose.marketing:
            return Verdict(Decision.suppressed, f"flag_{flag}", figures)
    if wall_clock - trigger_at > freshness:
        return Verdict(Decision.historical, "trigger_not_fresh", figures)
    return Verdict(Decision.sent, "policy_passed", figures)
