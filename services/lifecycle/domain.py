"""Lifecycle's pure logic: which stage a customer's snapshot puts them in, and why."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from shared.events import ProfileSnapshot, Stage


@dataclass(frozen=True)
class Transition:
    from_stage: Stage | None
    to_stage: Stage
    rule: str
    transition_at: datetime
    evidence: dict[str, Any] = field(default_factory=dict)


def transitions(current: Stage | None, snap: ProfileSnapshot, at: datetime) -> list[Transition]:
    """The transitions a snapshot causes from `current`, in order (walking skeleton rules:
    a registered customer is a prospect; the first product or activity starts onboarding).

    >>> from datetime import UTC, datetime
    >>> t0 = datetime(2026, 1, 1, tzinfo=UTC)
    >>> [t.to_stage.value for t in transitions(None, ProfileSnapshot(as_of=t0, registered=True), t0)]
    ['prospect']
    >>> s = ProfileSnapshot(as_of=t0, registered=True, transaction_count=1, first_activity_at=t0)
    >>> [(t.from_stage, t.to_stage.value) for t in transitions(Stage.prospect, s, t0)]
    [(<Stage.prospect: 'prospect'>, 'onboarding')]
    """
    out: list[Transition] = []
    stage = current
    if stage is None:
        out.append(Transition(None, Stage.prospect, "registered", at, {"registered": snap.registered}))
        stage = Stage.prospect
    if stage is Stage.prospect:
        has_products = sum(snap.products.values()) > 0
        if has_products or snap.transaction_count > 0 or snap.first_activity_at is not None:
            when = snap.first_activity_at or at
            out.append(
                Transition(
                    Stage.prospect,
                    Stage.onboarding,
                    "first_product_or_activity",
                    max(when, out[-1].transition_at) if out else when,
                    {
                        "products": dict(snap.products),
                        "transaction_count": snap.transaction_count,
                        "first_activity_at": (
                            snap.first_activity_at.isoformat() if snap.first_activity_at else None
                        ),
                    },
                )
            )
    return out
