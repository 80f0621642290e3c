"""Engagement's REST surface: playbook CRUD, RM tasks and outcomes, next best action, uplift."""

from __future__ import annotations

import contextlib

from shared import events as ev
from tests.support import factories as f
from tests.support.platform import Namespace, eventually, token

ADMIN = {"Authorization": f"Bearer {token('engagement:read', 'engagement:admin', 'engagement:write')}"}


async def test_playbooks_tasks_outcomes_and_next_best_action(ns: Namespace) -> None:
    async with contextlib.AsyncExitStack() as stack:
        for name in ("profile", "scoring", "lifecycle"):
            await stack.enter_async_context(ns.service(name))
        # No quiet hours here (they are tested in test_engagement_delivery.py and the policy's
        # unit tests): this test's tasks would otherwise wait for the morning whenever it
        # runs after 21:00 in the customers' zone.
        engagement = await stack.enter_async_context(
            ns.service("engagement", global_holdout_share=0.0, quiet_start="00:00",
                       quiet_end="00:00"))
        client = engagement.client

        bad = {"trigger": "stage.changed", "when": "open('/etc/passwd')",
               "action": {"channel": "email", "template": "x"}, "purpose": "marketing",
               "priority": 1, "cooldown_days": 1}
        r = await client.put("/v1/playbooks/sneaky", json=bad, headers=ADMIN)
        assert r.status_code == 422 and "sneaky" in r.json()["detail"]
        good = {**bad, "when": 'to == "dormant" and tier == "high"'}
        r = await client.put("/v1/playbooks/vip_wake_up", json=good, headers=ADMIN)
        assert r.status_code == 200
        listed = (await engagement.get("/v1/playbooks")).json()["playbooks"]
        assert "vip_wake_up" in [p["id"] for p in listed]
        assert (await client.delete("/v1/playbooks/vip_wake_up", headers=ADMIN)).status_code == 204
        assert (await engagement.get("/v1/playbooks/vip_wake_up")).status_code == 404

        # A resolved complaint gives the customer's RM a follow-up call task.
        t0 = f.now() - f.minutes(30)
        await ns.publish("tenure.customers.v1", f.registered("C-RM", t0, rm_id="RM9"))
        await ns.publish("tenure.transactions.v1", f.transaction("C-RM", t0 + f.minutes(1)))
        resolved = ev.FeedbackSubmitted(
            event_id=f.new_id(), customer_id="C-RM", occurred_at=t0 + f.minutes(5),
            source="complaint-desk",
            payload=ev.FeedbackDetails(kind="complaint_resolved", complaint_id="K1"))
        await ns.publish("tenure.feedback.v1", resolved)

        async def task() -> dict | None:
            r = await client.get("/v1/rm-tasks?rm=RM9", headers=ADMIN)
            tasks = r.json()["tasks"]
            return tasks[0] if tasks else None

        # The task reaches RM9 even when the complaint is decided before engagement has read
        # the profile naming RM9 (topics are not ordered with each other): it follows the RM.
        found = await eventually(task, timeout=90, what="the RM's follow-up task")
        assert found["playbook"] == "complaint_follow_up" and found["customer_id"] == "C-RM"
        r = await client.post(f"/v1/rm-tasks/{found['task_id']}:complete",
                              json={"outcome": "satisfied"}, headers=ADMIN)
        assert r.status_code == 200
        assert (await client.get("/v1/rm-tasks?rm=RM9", headers=ADMIN)).json()["tasks"] == []
        other_rm = {"Authorization": f"Bearer {token('engagement:read', rm_id='RM1')}"}
        assert (await client.get("/v1/rm-tasks?rm=RM9", headers=other_rm)).status_code == 403

        # A task decided before engagement knows the customer's RM reaches the RM once it does.
        late = ev.FeedbackSubmitted(
            event_id=f.new_id(), customer_id="C-LATE", occurred_at=f.now() - f.minutes(3),
            source="complaint-desk",
            payload=ev.FeedbackDetails(kind="complaint_resolved", complaint_id="K2"))
        await ns.publish("tenure.feedback.v1", late)

        async def orphan() -> bool:
            rows = await ns.sql("engagement", "SELECT rm_id FROM rm_tasks "
                                "WHERE customer_id = 'C-LATE'")
            return len(rows) == 1 and rows[0][0] is None

        await eventually(orphan, timeout=90, what="a task without an RM")
        await ns.publish("tenure.customers.v1",
                         f.registered("C-LATE", f.now() - f.minutes(1), rm_id="RM5"))

        async def reassigned() -> list:
            r = await client.get("/v1/rm-tasks?rm=RM5", headers=ADMIN)
            return r.json()["tasks"]

        [late_task] = await eventually(reassigned, timeout=90, what="the task reaching RM5")
        assert late_task["customer_id"] == "C-LATE" and late_task["rm_id"] == "RM5"

        async def outcome_on_wire() -> bool:
            wire = await ns.read_topic("tenure.engagement-actions.v1")
            return any(m["value"]["event_type"] == "engagement.outcome" for m in wire)

        await eventually(outcome_on_wire, what="engagement.outcome published")

        # Next best action: the onboarding welcome has been decided already (cooldown).
        async def nba() -> dict | None:
            body = (await engagement.get("/v1/customers/C-RM/next-best-action")).json()
            return body if body["candidates"] else None

        body = await eventually(nba, what="next best action")
        assert body["stage"] == "onboarding"
        [welcome] = [c for c in body["candidates"] if c["playbook"] == "onboarding_welcome"]
        assert welcome["decision"] == "suppressed"  # no consent was given for e-mail

        uplift = (await engagement.get("/v1/playbooks/onboarding_welcome/uplift")).json()
        assert set(uplift) >= {"treated", "holdout", "uplift", "ci_low", "ci_high", "window_days"}
        before = await engagement.get("/v1/playbooks/onboarding_welcome/uplift",
                                      params={"decided_before": "2000-01-01T00:00:00+00:00"})
        assert before.status_code == 200
        assert (before.json()["treated"], before.json()["holdout"]) == (0, 0)
        naive = await engagement.get("/v1/playbooks/onboarding_welcome/uplift",
                                     params={"decided_before": "2026-01-01T00:00:00"})
        assert naive.status_code == 422 and "UTC offset" in naive.text
