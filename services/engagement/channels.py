"""Delivery: due actions go out through their channel, at least once, idempotent by action id.

Consent is checked again at delivery; the address is fetched from profile's API at the
moment of sending (engagement keeps no personal data); a failing channel is retried with
exponential backoff and marked dead after N attempts."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import smtplib
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any

import httpx
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert

from services.engagement.store import EngagementStore, actions, rm_tasks
from shared.auth import ServiceTokens
from shared.events import EngagementDelivered, EngagementDelivery, derived_event_id
from shared.kit import UnitOfWork
from shared.logs import customer_ref
from shared.settings import OUTPUT_TOPICS

log = logging.getLogger("tenure.engagement.delivery")


class DeliveryError(Exception):
    """The channel refused or could not be reached; the action will be retried."""


def signature(secret: str, body: bytes) -> str:
    """HMAC-SHA256 over the exact body, as the gateway verifies it (RFC 4231 case 2).

    >>> signature("Jefe", b"what do ya want for nothing?")[:23]
    'sha256=5bdcc146bf60754e'
    """
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class Deliverer:
    def __init__(self, settings: Any, engine: Any, relay: Any):
        self.settings = settings
        self.engine = engine
        self.relay = relay
        self.client = httpx.AsyncClient(timeout=10)
        # dev: minted with the dev key; oidc: the IdP's client-credentials grant, cached
        self.tokens = ServiceTokens(settings, subject="engagement-delivery",
                                    scopes=["profile:read", "pii:read"])
        self._stopping = asyncio.Event()
        self.delivered = 0

    async def run(self) -> None:
        while not self._stopping.is_set():
            try:
                done = await self.deliver_due()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - an outage pauses delivery, never ends it
                log.warning("delivery loop failed", extra={"reason": type(exc).__name__})
                done = 0
            if not done:
                try:
                    await asyncio.wait_for(self._stopping.wait(),
                                           self.settings.delivery_poll_seconds)
                except TimeoutError:
                    pass
        await self.client.aclose()

    def stop(self) -> None:
        self._stopping.set()

    async def deliver_due(self, limit: int = 20) -> int:
        now = datetime.now(UTC)
        async with self.engine.begin() as conn:
            rows = (await conn.execute(
                sa.select(actions)
                .where(actions.c.status == "pending", actions.c.next_attempt_at <= now)
                .order_by(actions.c.next_attempt_at)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )).all()
            if not rows:
                return 0
            store = EngagementStore(conn)
            uow: UnitOfWork[EngagementStore] = UnitOfWork(conn, store, self.settings)
            for row in rows:
                await self._deliver_one(uow, dict(row._mapping), now)
            await uow.flush()
        self.relay.notify()
        return len(rows)

    async def _deliver_one(self, uow: UnitOfWork[EngagementStore], a: dict[str, Any],
                           now: datetime) -> None:
        channel = a["channel"]
        if channel != "rm_task":
            consent = await uow.store.consent_of(a["customer_id"])
            if not consent.get((channel, a["purpose"]), False):
                await self._finish(uow, a, "cancelled", "consent withdrawn before delivery")
                return
        try:
            if channel == "rm_task":
                contact = await uow.store.contact(a["customer_id"]) or {}
                await uow.conn.execute(
                    pg_insert(rm_tasks).values(
                        task_id=a["action_id"], customer_id=a["customer_id"],
                        rm_id=contact.get("rm_id"), playbook=a["playbook"],
                        template=a["template"] or a["action"], status="open",
                    ).on_conflict_do_nothing()
                )
            elif channel == "email" and self.settings.smtp_host:
                await self._email(a)
            elif self.settings.webhook_url:
                await self._webhook(a)
            else:
                await self._finish(uow, a, "undeliverable",
                                   f"no gateway configured for channel {channel}")
                return
        except DeliveryError as exc:
            attempts = a["attempts"] + 1
            if attempts >= self.settings.delivery_max_attempts:
                await self._finish(uow, a, "dead", str(exc), attempts)
                return
            backoff = self.settings.delivery_backoff_seconds * 2 ** (attempts - 1)
            await uow.conn.execute(
                actions.update().where(actions.c.action_id == a["action_id"]).values(
                    attempts=attempts, last_error=str(exc)[:300],
                    next_attempt_at=now + timedelta(seconds=backoff),
                )
            )
            return
        await self._finish(uow, a, "delivered", None, a["attempts"] + 1)

    async def _finish(self, uow: UnitOfWork[EngagementStore], a: dict[str, Any], status: str,
                      detail: str | None, attempts: int | None = None) -> None:
        await uow.conn.execute(
            actions.update().where(actions.c.action_id == a["action_id"]).values(
                status=status, last_error=detail, attempts=attempts or a["attempts"],
                delivered_at=datetime.now(UTC) if status == "delivered" else None,
            )
        )
        wire = {"delivered": "delivered", "dead": "dead"}.get(status, "failed")
        await uow.emit(
            EngagementDelivered(
                event_id=derived_event_id("engagement.delivered", a["action_id"], status),
                customer_id=a["customer_id"],
                occurred_at=datetime.now(UTC),
                source=self.settings.source_id,
                causation_id=a["action_id"],
                payload=EngagementDelivery(action_id=a["action_id"], channel=a["channel"],
                                           status=wire, attempts=attempts or a["attempts"],
                                           detail=detail),
            ),
            OUTPUT_TOPICS["engagement_actions"],
        )
        self.delivered += status == "delivered"
        log.info("action finished", extra={"customer": customer_ref(a["customer_id"]),
                                           "status": status})

    async def _address(self, customer_id: str) -> dict[str, Any]:
        """Personal data only at the moment of sending, from profile, with a service token."""
        try:
            token = await self.tokens.get()
        except (httpx.HTTPError, RuntimeError, KeyError, ValueError) as exc:
            raise DeliveryError(f"no service token: {type(exc).__name__}") from None
        try:
            r = await self.client.get(f"{self.settings.profile_url}/v1/customers/{customer_id}",
                                      headers={"Authorization": f"Bearer {token}"})
        except httpx.HTTPError as exc:
            raise DeliveryError(f"profile unreachable: {type(exc).__name__}") from None
        if r.status_code != 200:
            raise DeliveryError(f"profile answered {r.status_code}")
        identity: dict[str, Any] = r.json()["identity"]
        return identity

    async def _webhook(self, a: dict[str, Any]) -> None:
        identity = await self._address(a["customer_id"])
        to = identity.get("phone") if a["channel"] in ("sms", "phone") else identity.get("email")
        body = json.dumps({
            "action_id": str(a["action_id"]), "customer_id": a["customer_id"],
            "channel": a["channel"], "template": a["template"], "offer": a["offer"],
            "to": to, "language": None,
        }, sort_keys=True).encode()
        try:
            r = await self.client.post(
                self.settings.webhook_url, content=body,
                headers={"Content-Type": "application/json",
                         "X-Tenure-Signature": signature(self.settings.webhook_secret, body),
                         "Idempotency-Key": str(a["action_id"])},
            )
        except httpx.HTTPError as exc:
            raise DeliveryError(f"gateway unreachable: {type(exc).__name__}") from None
        if r.status_code >= 300:
            raise DeliveryError(f"gateway answered {r.status_code}")

    async def _email(self, a: dict[str, Any]) -> None:
        identity = await self._address(a["customer_id"])
        if not identity.get("email"):
            raise DeliveryError("no e-mail address on file")
        message = EmailMessage()
        message["From"] = self.settings.mail_from
        message["To"] = identity["email"]
        message["Subject"] = f"[{a['template']}]"
        message["Message-ID"] = f"<{a['action_id']}@tenure>"
        message.set_content(f"template {a['template']} offer {a['offer'] or '-'}")

        def send() -> None:
            with smtplib.SMTP(self.settings.smtp_host, self.settings.smtp_port, timeout=10) as s:
                s.send_message(message)

        try:
            await asyncio.to_thread(send)
        except (OSError, smtplib.SMTPException) as exc:
            raise DeliveryError(f"smtp failed: {type(exc).__name__}") from None
