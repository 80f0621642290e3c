"""At-least-once in, effectively-once out: a duplicated event changes nothing."""

from __future__ import annotations

import contextlib

from tests.support import factories as f
from tests.support.platform import Namespace, eventually


async def test_same_event_published_twice_has_one_effect(ns: Namespace) -> None:
    t0 = f.now() - f.minutes(20)
    registration = f.registered("C-DUP", t0, time_zone=f.daytime_zone())  # outside quiet hours
    consent = f.consent("C-DUP", at=t0)
    txn = f.transaction("C-DUP", t0 + f.minutes(1))
    async with contextlib.AsyncExitStack() as stack:
        svc = {
            n: await stack.enter_async_context(ns.service(n))
            for n in ("profile", "scoring", "lifecycle", "engagement")
        }
        for event in (registration, consent):
            await ns.publish("tenure.customers.v1", event)
        await eventually(
            lambda: _consent(svc["engagement"], "C-DUP"), what="consent known to engagement"
        )
        await ns.publish("tenure.transactions.v1", txn)
        await ns.publish("tenure.transactions.v1", txn)  # the same event again

        async def decided() -> list:
            msgs = await ns.read_topic("tenure.engagement-actions.v1")
            return msgs

        await eventually(decided, what="the welcome decision")
        # Publish the duplicate once more after everything settled, then let it drain.
        await ns.publish("tenure.transactions.v1", txn)
        await eventually(
            lambda: _processed_at_least(svc["profile"], 4), what="profile consumed the copies"
        )
        r = await svc["profile"].get("/v1/customers/C-DUP")
        assert r.json()["activity"]["transaction_count"] == 1
        dup = await ns.sql("profile", "SELECT count(*) FROM inbox WHERE event_id = :e", e=txn.event_id)
        assert dup[0][0] == 1
        actions = (await svc["engagement"].get("/v1/customers/C-DUP/actions")).json()["actions"]
        assert len(actions) == 1 and actions[0]["decision"] == "sent"
        stages = (await svc["lifecycle"].get("/v1/customers/C-DUP/stage")).json()["history"]
        assert [h["to"] for h in stages] == ["prospect", "onboarding"]
        metrics = (await svc["profile"].client.get("/metrics")).text
        assert "tenure_profile_events_duplicate_total 2.0" in metrics


async def _consent(engagement, cid: str) -> bool:  # type: ignore[no-untyped-def]
    r = await engagement.get(f"/v1/customers/{cid}/actions")
    return r.status_code == 200 and bool(r.json()["consent"])


async def _processed_at_least(profile, n: int) -> bool:  # type: ignore[no-untyped-def]
    text = (await profile.client.get("/metrics")).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith(("tenure_profile_events_processed_total", "tenure_profile_events_duplicate_total")):
            total += float(line.rsplit(" ", 1)[1])
    return total >= n
