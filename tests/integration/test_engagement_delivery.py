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
    gateway = Gateway(SECRET)
    await gateway.start()
    now = datetime.now(UTC)
    # Quiet hours from an hour ago until a few seconds from now (UTC customers): deferred.
    quiet_start = (now - timedelta(hours=1)).strftime("%H:%M:%S")
    quiet_end = (now + timedelta(seconds=8)).strftime("%H:%M:%S")
    try:
        async with platform(ns, tmp_path, webhook_url=gateway.url, quiet_start=quiet_start,
                            quiet_end=quiet_end) as engagement:
            t0 = f.now() - f.minutes(10)
            await _welcome(ns, "C-X", "email", t0)
            await eventually(lambda: _consent(engagement, "C-X"), what="consent")
            await ns.publish("tenure.transactions.v1", f.transaction("C-X", f.now()))

            async def deferred() -> dict | None:
                found = [a for a in await _actions(engagement, "C-X") if a["decision"] == "deferred"]
                return found[0] if found else None

            action = await eventually(deferred, what="a deferred decision")
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

            decisions = await eventually(decided_all, timeout=120, what="history decided")
            assert {a["decision"] for a in decisions} <= {"historical", "suppressed", "holdout"}
            assert any(a["decision"] == "historical" for a in decisions)
            assert all(a["status"] == "none" for a in decisions)
            runtime = engagement.runtime
            assert runtime.deliverer.delivered == 0
            assert gateway.requests == [] and smtp.inbox.messages == []
    finally:
        smtp.stop()
        await gateway.stop()
