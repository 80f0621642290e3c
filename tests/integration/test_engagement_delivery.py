"""Engagement delivers through real local peers: a flaky webhook gateway and an SMTP server."""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tenure_cli.procs import ServiceProcess
from tests.support import factories as f
from tests.support.gateways import Gateway, SmtpServer
from tests.support.platform import Namespace, eventually

SECRET = "test-gateway-secret"


async def _actions(engagement, cid: str) -> list[dict]:  # type: ignore[no-untyped-def]
    r = await engagement.get(f"/v1/customers/{cid}/actions")
    return r.json()["actions"] if r.status_code == 200 else []


async def _status(engagement, cid: str, status: str) -> dict | None:  # type: ignore[no-untyped-def]
    found = [a for a in await _actions(engagement, cid) if a["status"] == status]
    return found[0] if found else None


@contextlib.asynccontextmanager
async def platform(ns: Namespace, tmp_path: Path, **engagement_settings):  # type: ignore[no-untyped-def]
    """Profile as a process (engagement fetches addresses over HTTP), the rest in-process."""
    profile = ServiceProcess("profile", ns.env, tmp_path / "profile.log")
    profile.start()
    try:
        async with contextlib.AsyncExitStack() as stack:
            for name in ("scoring", "lifecycle"):
                await stack.enter_async_context(ns.service(name))
            engagement = await stack.enter_async_context(ns.service(
                "engagement", profile_url=profile.url, webhook_secret=SECRET,
                delivery_backoff_seconds=0.2, delivery_poll_seconds=0.2,
                global_holdout_share=0.0, **engagement_settings))
            yield engagement
    finally:
        profile.stop()


async def _welcome(ns: Namespace, cid: str, channel: str, at: datetime) -> None:
    await ns.publish("tenure.customers.v1", f.registered(cid, at, email=f"{cid}@example.test"))
    await ns.publish("tenure.customers.v1", f.consent(cid, channel, "marketing", True, at))


async def test_webhook_is_signed_retried_then_delivered_once(ns: Namespace, tmp_path: Path) -> None:
    gateway = Gateway(SECRET, failures=2)
    await gateway.start()
    try:
        async with platform(ns, tmp_path, webhook_url=gateway.url, quiet_start="00:00",
                            quiet_end="00:00") as engagement:
            # The welcome goes by e-mail; with no SMTP configured, the gateway carries it.
            t0 = f.now() - f.minutes(10)
            await _welcome(ns, "C-W", "email", t0)
            await eventually(lambda: _consent(engagement, "C-W"), what="consent")
            await ns.publish("tenure.transactions.v1", f.transaction("C-W", t0 + f.minutes(1)))
            delivered = await eventually(lambda: _status(engagement, "C-W", "delivered"),
                                         timeout=60, what="delivery after retries")
            assert delivered["attempts"] == 3
            assert len(gateway.requests) == 3 and all(r["signed"] for r in gateway.requests)
            body = json.loads(gateway.requests[-1]["body"])
            assert body["to"] == "C-W@example.test" and body["template"] == "welcome_series_1"
            keys = {r["headers"]["idempotency-key"] for r in gateway.requests}
            assert keys == {delivered["action_id"]}
            wire = await ns.read_topic("tenure.engagement-actions.v1")
            statuses = [m["value"]["payload"].get("status") for m in wire
                        if m["value"]["event_type"] == "engagement.delivered"]
            assert statuses == ["delivered"]
    finally:
        await gateway.stop()


async def test_dead_after_max_attempts(ns: Namespace, tmp_path: Path) -> None:
    gateway = Gateway(SECRET, failures=100)
    await gateway.start()
    try:
        async with platform(ns, tmp_path, webhook_url=gateway.url, delivery_max_attempts=3,
                            quiet_start="00:00", quiet_end="00:00") as engagement:
            t0 = f.now() - f.minutes(10)
            await _welcome(ns, "C-D", "email", t0)
            await eventually(lambda: _consent(engagement, "C-D"), what="consent")
            await ns.publish("tenure.transactions.v1", f.transaction("C-D", t0 + f.minutes(1)))
            dead = await eventually(lambda: _status(engagement, "C-D", "dead"), timeout=60,
                                    what="dead after three attempts")
            assert dead["attempts"] == 3 and len(gateway.requests) == 3
    finally:
        await gateway.stop()


async def test_email_over_smtp(ns: Namespace, tmp_path: Path) -> None:
    smtp = SmtpServer()
    smtp.start()
    try:
        async with platform(ns, tmp_path, smtp_host="127.0.0.1", smtp_port=smtp.port,
                            quiet_start="00:00", quiet_end="00:00") as engagement:
            t0 = f.now() - f.minutes(10)
            await _welcome(ns, "C-M", "email", t0)
            await eventually(lambda: _consent(engagement, "C-M"), what="consent")
            await ns.publish("tenure.transactions.v1", f.transaction("C-M", t0 + f.minutes(1)))
            await eventually(lambda: _status(engagement, "C-M", "delivered"), timeout=60,
                             what="e-mail delivered")
            [message] = smtp.inbox.messages
            assert message.rcpt_tos == ["C-M@example.test"]
            assert b"welcome_series_1" in message.content
    finally:
        smtp.stop()


async def test_consent_withdrawn_before_delivery_cancels_it(ns: Namespace, tmp_path: Path) -> None:
    from dataclasses import replace

    gateway = Gateway(SECRET)
    await gateway.start()
    try:
        async with platform(ns, tmp_path, webhook_url=gateway.url) as engagement:
            t0 = f.now() - f.minutes(10)
            await _welcome(ns, "C-X", "email", t0)
            await eventually(lambda: _consent(engagement, "C-X"), what="consent")
            # Quiet hours from an hour ago until shortly after the trigger (UTC customers),
            # set once the platform is up (start-up time on a busy machine is no factor):
            # the welcome is deferred to the end of the quiet hours, and delivered then.
            now = datetime.now(UTC)
            registry = engagement.runtime.registry
            registry.policy = replace(registry.policy,
                                      quiet_start=(now - timedelta(hours=1)).time(),
                                      quiet_end=(now + timedelta(seconds=40)).time())
            await ns.publish("tenure.transactions.v1", f.transaction("C-X", now))

            async def deferred() -> dict | None:
                found = [a for a in await _actions(engagement, "C-X") if a["decision"] == "deferred"]
                return found[0] if found else None

            action = await eventually(deferred, timeout=90, what="a deferred decision")
            assert action["reason"] == "quiet_hours"
            await ns.publish("tenure.customers.v1",
                             f.consent("C-X", "email", "marketing", False, f.now()))
            cancelled = await eventually(lambda: _status(engagement, "C-X", "cancelled"),
                                         timeout=60, what="delivery cancelled")
            assert cancelled["action_id"] == action["action_id"]
            assert gateway.requests == []
    finally:
        await gateway.stop()


async def _consent(engagement, cid: str) -> bool:  # type: ignore[no-untyped-def]
    r = await engagement.get(f"/v1/customers/{cid}/actions")
    return r.status_code == 200 and r.json()["consent"].get("email:marketing") is not None


async def test_importing_a_year_of_history_contacts_nobody(ns: Namespace, tmp_path: Path) -> None:
    from shared.settings import PlatformSettings
    from tenure_cli.publish import EventPublisher
    from tenure_cli.simulator import SimConfig, simulate

    gateway = Gateway(SECRET)
    await gateway.start()
    smtp = SmtpServer()
    smtp.start()
    try:
        async with platform(ns, tmp_path, webhook_url=gateway.url, smtp_host="127.0.0.1",
                            smtp_port=smtp.port) as engagement:
            config = SimConfig(customers=25, seed=5, days=365,
                               start=datetime.now(UTC) - timedelta(days=400))
            settings = PlatformSettings(**{k.removeprefix("TENURE_").lower(): v
                                           for k, v in ns.env.items()})
            customers = set()
            async with EventPublisher(settings) as publisher:
                for event in simulate(config):
                    customers.add(event.customer_id)
                    await publisher.send(event)

            async def decided_all() -> list:
                found = []
                for cid in sorted(customers):
                    found += await _actions(engagement, cid)
                welcomed = {a["playbook"] for a in found}
                return found if "onboarding_welcome" in welcomed and len(found) >= 20 else []

            decisions = await eventually(decided_all, timeout=300, what="history decided")
            assert {a["decision"] for a in decisions} <= {"historical", "suppressed", "holdout"}
            assert any(a["decision"] == "historical" for a in decisions)
            assert all(a["status"] == "none" for a in decisions)
            runtime = engagement.runtime
            assert runtime.deliverer.delivered == 0
            assert gateway.requests == [] and smtp.inbox.messages == []
    finally:
        smtp.stop()
        await gateway.stop()


async def test_dry_run_records_decisions_and_contacts_nobody(ns: Namespace, tmp_path: Path) -> None:
    """A year of simulated history ending now, then a fresh welcome: in dry-run mode the
    history is historical, the fresh decisions are recorded as dry runs, and neither the
    gateway nor the SMTP server hears anything."""
    from shared.settings import PlatformSettings
    from tenure_cli.publish import EventPublisher
    from tenure_cli.simulator import SimConfig, simulate

    gateway = Gateway(SECRET)
    await gateway.start()
    smtp = SmtpServer()
    smtp.start()
    try:
        async with platform(ns, tmp_path, webhook_url=gateway.url, smtp_host="127.0.0.1",
                            smtp_port=smtp.port, dry_run=True, quiet_start="00:00",
                            quiet_end="00:00") as engagement:
            config = SimConfig(customers=12, seed=11, days=365,
                               start=datetime.now(UTC) - timedelta(days=366))
            settings = PlatformSettings(**{k.removeprefix("TENURE_").lower(): v
                                           for k, v in ns.env.items()})
            customers = set()
            async with EventPublisher(settings) as publisher:
                for event in simulate(config):
                    customers.add(event.customer_id)
                    await publisher.send(event)
            # A customer who joins now: the welcome would go out at once without dry run.
            t0 = f.now() - f.minutes(10)
            await _welcome(ns, "C-DRY", "email", t0)
            await eventually(lambda: _consent(engagement, "C-DRY"), what="consent")
            await ns.publish("tenure.transactions.v1", f.transaction("C-DRY", t0 + f.minutes(1)))

            async def welcome_decided() -> dict | None:
                found = [a for a in await _actions(engagement, "C-DRY")
                         if a["playbook"] == "onboarding_welcome"]
                return found[0] if found else None

            welcome = await eventually(welcome_decided, timeout=120, what="the fresh welcome")
            assert welcome["decision"] == "sent" and welcome["reason"] == "dry_run"
            assert welcome["treated"] is False and welcome["status"] == "none"
            assert welcome["policy"]["dry_run"] is True
            assert welcome["policy"]["policy_reason"] == "policy_passed"

            async def history_decided() -> list:
                found = []
                for cid in sorted(customers):
                    found += await _actions(engagement, cid)
                return found if len(found) >= 10 else []

            decisions = await eventually(history_decided, timeout=300, what="history decided")
            assert any(a["decision"] == "historical" for a in decisions)
            assert all(a["status"] == "none" and not a["treated"] for a in decisions)
            wire = await ns.read_topic("tenure.engagement-actions.v1")
            decided = [m["value"] for m in wire if m["value"]["event_type"] == "engagement.decided"]
            assert decided and not any(d["payload"]["treated"] for d in decided)
            assert not any(m["value"]["event_type"] == "engagement.delivered" for m in wire)
            assert engagement.runtime.deliverer.delivered == 0
            assert gateway.requests == [] and smtp.inbox.messages == []
    finally:
        smtp.stop()
        await gateway.stop()


async def test_duplicate_triggers_send_once_and_erasure_removes_everything(
    ns: Namespace, tmp_path: Path
) -> None:
    from shared import events as ev
    from tests.support.platform import token

    admin = {"Authorization": "Bearer "
             f"{token('engagement:read', 'engagement:admin', 'engagement:write')}"}
    gateway = Gateway(SECRET)
    await gateway.start()
    try:
        async with platform(ns, tmp_path, webhook_url=gateway.url, quiet_start="00:00",
                            quiet_end="00:00") as engagement:
            client = engagement.client
            thanks = {"trigger": "feedback.submitted", "when": 'kind == "nps" and score >= 9',
                      "action": {"channel": "sms", "template": "promoter_thanks"},
                      "purpose": "service", "priority": 10, "cooldown_days": 0}
            r = await client.put("/v1/playbooks/promoter_thanks", json=thanks, headers=admin)
            assert r.status_code == 200
            t0 = f.now() - f.minutes(20)
            await ns.publish("tenure.customers.v1", f.registered(
                "C-DUP", t0, rm_id="RM7", email="dup@example.test", phone="+44 7700 900555"))
            await ns.publish("tenure.customers.v1", f.consent("C-DUP", "sms", "service", True, t0))
            await ns.publish("tenure.transactions.v1", f.transaction("C-DUP", t0 + f.minutes(1)))
            await eventually(lambda: _consent_sms(engagement, "C-DUP"), what="consent")
            nps = ev.FeedbackSubmitted(
                event_id=f.new_id(), customer_id="C-DUP", occurred_at=t0 + f.minutes(5),
                source="mobile-app", payload=ev.FeedbackDetails(kind="nps", score=10))
            for _ in range(3):  # the publisher retried: the same event three times
                await ns.publish("tenure.feedback.v1", nps)
            resolved = ev.FeedbackSubmitted(
                event_id=f.new_id(), customer_id="C-DUP", occurred_at=t0 + f.minutes(6),
                source="complaint-desk",
                payload=ev.FeedbackDetails(kind="complaint_resolved", complaint_id="K9"))
            await ns.publish("tenure.feedback.v1", resolved)

            async def thanked() -> dict | None:
                found = [a for a in await _actions(engagement, "C-DUP")
                         if a["playbook"] == "promoter_thanks" and a["status"] == "delivered"]
                return found[0] if found else None

            action = await eventually(thanked, timeout=60, what="the thanks delivered")
            tasks = await eventually(
                lambda: _tasks(client, admin, "RM7"), what="the RM's complaint call")
            # The later events of the partition are processed: the duplicates are long past.
            assert [a["playbook"] for a in await _actions(engagement, "C-DUP")].count(
                "promoter_thanks") == 1
            assert len(gateway.requests) == 1
            body = json.loads(gateway.requests[0]["body"])
            assert body["template"] == "promoter_thanks" and body["to"] == "+44 7700 900555"

            # Outcomes link to their action.
            r = await client.post(f"/v1/actions/{action['action_id']}/outcomes",
                                  json={"outcome": "clicked"}, headers=admin)
            assert r.status_code == 200
            r = await client.post(f"/v1/rm-tasks/{tasks[0]['task_id']}:complete",
                                  json={"outcome": "called, happy now"}, headers=admin)
            assert r.status_code == 200
            [linked] = [a for a in await _actions(engagement, "C-DUP")
                        if a["action_id"] == action["action_id"]]
            assert [o["outcome"] for o in linked["outcomes"]] == ["clicked"]
            # The outcome events leave through the outbox: the relay publishes them soon
            # after the REST calls commit.
            async def outcome_events() -> list[dict] | None:
                wire = await ns.read_topic("tenure.engagement-actions.v1")
                found = [m["value"] for m in wire
                         if m["value"]["event_type"] == "engagement.outcome"]
                return found if len(found) >= 2 else None

            found = await eventually(outcome_events, what="the outcome events on the wire")
            assert {o["payload"]["action_id"] for o in found} == {
                action["action_id"], tasks[0]["task_id"]}

            # Erasure: actions, tasks, outcomes, consent and contact facts all go.
            await ns.publish("tenure.customers.v1", ev.CustomerErased(
                event_id=f.new_id(), customer_id="C-DUP", occurred_at=f.now(),
                source="tenure-profile", payload=ev.ErasureRequest(requested_by="dpo")))

            async def erased() -> bool:
                r = await engagement.get("/v1/customers/C-DUP/actions")
                return r.json()["actions"] == [] and r.json()["consent"] == {}

            await eventually(erased, what="the customer's actions erased")
            left = await ns.sql("engagement", """
                SELECT (SELECT count(*) FROM actions WHERE customer_id = 'C-DUP')
                     + (SELECT count(*) FROM rm_tasks WHERE customer_id = 'C-DUP')
                     + (SELECT count(*) FROM contacts WHERE customer_id = 'C-DUP')
                     + (SELECT count(*) FROM consents WHERE customer_id = 'C-DUP')
                     + (SELECT count(*) FROM outcomes)""")
            assert left[0][0] == 0
            assert await _tasks(client, admin, "RM7", status="completed") is None
            # A replay of the customer's old trigger contacts nobody and records nothing.
            replay = resolved.model_copy(update={"event_id": f.new_id()})
            await ns.publish("tenure.feedback.v1", replay)

            async def replay_consumed() -> bool:
                seen = await ns.sql("engagement", "SELECT count(*) FROM inbox WHERE "
                                    "event_id = CAST(:id AS uuid)", id=str(replay.event_id))
                return seen[0][0] == 1

            await eventually(replay_consumed, what="the replayed trigger consumed")
            assert (await _actions(engagement, "C-DUP")) == []
            assert len(gateway.requests) == 1
    finally:
        await gateway.stop()


async def _consent_sms(engagement, cid: str) -> bool:  # type: ignore[no-untyped-def]
    r = await engagement.get(f"/v1/customers/{cid}/actions")
    return r.status_code == 200 and r.json()["consent"].get("sms:service") is True


async def _tasks(  # type: ignore[no-untyped-def]
    client, headers, rm: str, status: str = "open"
) -> list | None:
    r = await client.get(f"/v1/rm-tasks?rm={rm}&status={status}", headers=headers)
    tasks = r.json()["tasks"]
    return tasks or None
