"""Late events are facts: applied, and when they change a customer's history, corrected on
the wire. The final stages equal those of the same events delivered in order."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.integration.test_lifecycle_service import (
    FAST,
    account,
    day,
    iso,
    lifecycle_namespace,
    moves,
    publish,
    same_partition,
    settled,
    snapshot,
    stage_events,
    stage_of,
    until_stage,
)
from tests.support.platform import Namespace, eventually


@pytest.fixture
async def lc_ns() -> AsyncIterator[Namespace]:
    async with lifecycle_namespace() as namespace:
        yield namespace


async def test_a_late_activity_withdraws_a_dormancy_already_announced(lc_ns: Namespace) -> None:
    ns = lc_ns
    in_order, late, clock = same_partition("LATE", 3)
    async with ns.service("lifecycle", **FAST) as svc:
        # In order: opened on day 0, active again on day 80.
        await publish(ns, account(in_order, day(0)), snapshot(in_order, day(0)),
                      snapshot(in_order, day(80)))
        # Late: the same facts, but day 80's activity is delayed past the watermark.
        await publish(ns, account(late, day(0)), snapshot(late, day(0)))
        await until_stage(svc, late, "onboarding")
        await publish(ns, snapshot(clock, day(120)))
        announced = await until_stage(svc, late, "dormant")
        assert announced["since"] == iso(day(90))

        await publish(ns, snapshot(late, day(80)))  # 40 days behind the watermark

        async def corrected() -> dict[str, Any] | None:
            view = await stage_of(svc, late)
            return view if view and view["corrections"] else None

        view = await eventually(corrected, what="the correction")
        reference = await stage_of(svc, in_order)
        assert reference is not None
        assert view["stage"] == reference["stage"] == "active"
        assert moves(view) == moves(reference) == [
            (None, "prospect", "first_seen", iso(day(0))),
            ("prospect", "onboarding", "first_product", iso(day(0))),
            ("onboarding", "active", "onboarding_complete", iso(day(90))),
        ]
        assert view["next_review_at"] == reference["next_review_at"] == iso(day(170))
        [correction] = view["corrections"]
        assert (correction["from"], correction["to"], correction["rule"]) == (
            "dormant", "onboarding", "correction")
        assert correction["transition_at"] == iso(day(90))
        assert [r["to"] for r in correction["retracted"]] == ["dormant"]
        await settled(svc)

        # On the wire the late customer's stream reads: ..., dormant, correction back to
        # onboarding, then the corrected transition; a consumer that applies them in order
        # ends in the same stage as the in-order customer.
        async def wire() -> list[dict[str, Any]] | None:
            found = [e for e in await stage_events(ns) if e["customer_id"] == late]
            return found if len(found) == 5 else None

        stream = await eventually(wire, what="the corrected stream")
        assert [(e["payload"]["to"], e["payload"]["rule"]) for e in stream] == [
            ("prospect", "first_seen"), ("onboarding", "first_product"),
            ("dormant", "dormant_after_inactivity"), ("onboarding", "correction"),
            ("active", "onboarding_complete"),
        ]
        retracted = stream[3]["payload"]["evidence"]["retracted"]
        assert retracted[0]["event_id"] == stream[2]["event_id"]
        assert stream[3]["payload"]["evidence"]["late_facts"][0]["occurred_at"].startswith(
            iso(day(80))[:19])
        reference_stream = [e for e in await stage_events(ns) if e["customer_id"] == in_order]
        assert [e["payload"]["to"] for e in reference_stream] == [
            "prospect", "onboarding", "active"]
