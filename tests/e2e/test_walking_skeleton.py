"""One event through all four services: register, consent, transact; observe every output."""

from __future__ import annotations

import contextlib

from tests.support import factories as f
from tests.support.platform import Namespace, eventually


async def test_two_customers_flow_through_all_four_services(ns: Namespace) -> None:
    async with contextlib.AsyncExitStack() as stack:
        svc = {
            name: await stack.enter_async_context(ns.service(name))
            for name in ("profile", "scoring", "lifecycle", "engagement")
        }
        t0 = f.now() - f.minutes(30)
        # C-OK consents to marketing e-mail; C-NO never does.
        for cid in ("C-OK", "C-NO"):
            # Living where it is early afternoon: outside the quiet hours whenever this runs.
            await ns.publish("tenure.customers.v1",
                             f.registered(cid, t0, time_zone=f.daytime_zone()))
        await ns.publish("tenure.customers.v1", f.consent("C-OK", "email", "marketing", True, t0))

        async def consent_known() -> bool:
            r = await svc["engagement"].get("/v1/customers/C-OK/actions")
            return r.status_code == 200 and r.json()["consent"].get("email:marketing") is True

        await eventually(consent_known, what="engagement to learn C-OK's consent")

        for cid, balance in (("C-OK", "1500.00"), ("C-NO", "80.50")):
            await ns.publish(
                "tenure.transactions.v1",
                f.transaction(cid, t0 + f.minutes(5), balance_after=balance),
            )

        # profile: transaction count, last activity, balance
        async def profile_of(cid: str) -> dict | None:
            r = await svc["profile"].get(f"/v1/customers/{cid}")
            if r.status_code == 200 and r.json()["activity"]["transaction_count"] == 1:
                return r.json()
            return None

        ok = await eventually(lambda: profile_of("C-OK"), what="profile of C-OK")
        assert ok["holdings"]["total_balance"] == "1500.000000"
        assert ok["activity"]["last_activity_at"].startswith((t0 + f.minutes(5)).isoformat()[:19])
        no = await eventually(lambda: profile_of("C-NO"), what="profile of C-NO")
        assert no["holdings"]["total_balance"] == "80.500000"

        # scoring: a real score with a band and reasons
        async def churn_of(cid: str) -> dict | None:
            r = await svc["scoring"].get(f"/v1/customers/{cid}/churn")
            return r.json() if r.status_code == 200 else None

        score = await eventually(lambda: churn_of("C-OK"), what="churn score")
        assert 0.0 <= score["probability"] <= 1.0
        assert score["band"] in {"low", "medium", "high", "critical"}
        assert score["horizon_days"] == 90

        # lifecycle: prospect -> onboarding, in event time
        async def stage_of(cid: str) -> dict | None:
            r = await svc["lifecycle"].get(f"/v1/customers/{cid}/stage")
            return r.json() if r.status_code == 200 and r.json()["stage"] == "onboarding" else None

        stage = await eventually(lambda: stage_of("C-OK"), what="onboarding stage")
        assert [(h["from"], h["to"]) for h in stage["history"]] == [
            (None, "prospect"),
            ("prospect", "onboarding"),
        ]
        assert stage["since"].startswith((t0 + f.minutes(5)).isoformat()[:19])

        # engagement: the welcome is sent to the consenting customer, suppressed for the other
        async def decision_of(cid: str) -> dict | None:
            r = await svc["engagement"].get(f"/v1/customers/{cid}/actions")
            actions = r.json()["actions"] if r.status_code == 200 else []
            return actions[0] if actions else None

        sent = await eventually(lambda: decision_of("C-OK"), what="C-OK decision")
        assert (sent["playbook"], sent["decision"]) == ("onboarding_welcome", "sent")
        suppressed = await eventually(lambda: decision_of("C-NO"), what="C-NO decision")
        assert (suppressed["decision"], suppressed["reason"]) == ("suppressed", "no_consent")

        # The outputs on the wire: one of each kind per cause, no personal data.
        async def outputs_complete() -> dict | None:
            got = {
                t: await ns.read_topic(t)
                for t in (
                    "tenure.profile-updates.v1",
                    "tenure.churn-scores.v1",
                    "tenure.lifecycle-stages.v1",
                    "tenure.engagement-actions.v1",
                )
            }
            # Only the decisions: the delivery worker may already have reported the sent one
            # (engagement.delivered, no gateway configured here), depending on timing.
            got["decided"] = [m for m in got["tenure.engagement-actions.v1"]
                              if (m["value"] or {}).get("event_type") == "engagement.decided"]
            return got if len(got["decided"]) == 2 else None

        wire = await eventually(outputs_complete, what="engagement.decided on the wire")
        decided = {m["value"]["customer_id"]: m["value"] for m in wire["decided"]}
        assert decided["C-OK"]["payload"]["decision"] == "sent"
        assert decided["C-NO"]["payload"]["reason"] == "no_consent"
        assert {m["value"]["event_type"] for m in wire["tenure.churn-scores.v1"]} == {"churn.scored"}
        for m in wire["tenure.profile-updates.v1"]:
            assert b"Test Person" not in m["raw"] and b"7700" not in m["raw"]
