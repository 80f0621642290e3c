"""No personal data in logs, output topics or metric labels: the simulator's customers (sealed
publishing) plus an outside publisher sending personal fields in plain text, and refused
events that carry them, go through all four services; every captured log line, every output
topic and every /metrics text is searched for every name, phone, e-mail and complaint text."""

from __future__ import annotations

import contextlib
import io
import logging
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson

from shared import events as ev
from shared.logs import JsonFormatter
from shared.settings import OUTPUT_TOPICS
from tenure_cli.publish import EventPublisher
from tenure_cli.report import consumer_lag
from tenure_cli.simulator import SimConfig, simulate
from tests.support import factories as f
from tests.support.platform import Namespace, eventually, token

SERVICES = ("profile", "scoring", "lifecycle", "engagement")


def personal_values(event: ev.EnvelopeBase) -> list[str]:
    payload = event.payload
    values: list[str] = []
    if isinstance(payload, ev.CustomerDetails):
        values += [v for v in (payload.name, payload.email, payload.national_id) if v]
        if payload.phone:
            values += [payload.phone, "".join(c for c in payload.phone if c.isdigit())[2:]]
    if isinstance(payload, ev.FeedbackDetails) and payload.text:
        values.append(payload.text)
    return values


def plain_customer(i: int) -> tuple[list[ev.EnvelopeBase], list[str]]:
    """An outside publisher's customer, personal fields in plain text on the topic."""
    tag = uuid.uuid4().hex[:6]
    cid = f"C-PLAIN-{i}-{tag}"
    name, phone = f"Philippa Plaintext{tag}", f"+44 7911 {100000 + i:06d}"
    email, text = f"philippa.{tag}@plain.example", f"Branch manager Mr Grimsdyke{tag} was rude"
    at = f.now() - f.minutes(40)
    events: list[ev.EnvelopeBase] = [
        f.registered(cid, at, name=name, phone=phone, email=email, national_id=f"QP{tag}",
                     birth_date=date(1970, 1, 1)),
        f.consent(cid, "email", "marketing", True, at),
        f.transaction(cid, at + f.minutes(1)),
        ev.FeedbackSubmitted(event_id=f.new_id(), customer_id=cid, occurred_at=at + f.minutes(2),
                             source="complaint-desk",
                             payload=ev.FeedbackDetails(kind="complaint_opened", complaint_id="K9",
                                                        severity="high", text=text)),
    ]
    return events, [name, phone, "".join(c for c in phone if c.isdigit())[2:], email, text,
                    f"QP{tag}"]


async def test_no_personal_data_in_logs_outputs_or_metrics(ns: Namespace) -> None:
    config = SimConfig(customers=12, seed=7, days=120, id_prefix=f"LS{uuid.uuid4().hex[:4]}",
                       start=datetime.now(UTC).replace(hour=0, minute=0, second=0,
                                                      microsecond=0) - timedelta(days=120))
    simulated = list(simulate(config))
    needles: set[str] = set()
    for event in simulated:
        needles.update(personal_values(event))
    assert any("@" in n for n in needles) and len(needles) > 30

    captured = io.StringIO()
    handler = logging.StreamHandler(captured)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    level = root.level
    async with contextlib.AsyncExitStack() as stack:
        svc = {name: await stack.enter_async_context(ns.service(name)) for name in SERVICES}
        root.addHandler(handler)
        root.setLevel(logging.DEBUG)
        stack.callback(root.setLevel, level)
        stack.callback(root.removeHandler, handler)

        async with EventPublisher(ns.platform()) as publisher:
            for event in simulated:
                await publisher.send(event)
            # A sealed registration that fails authentication: profile's handler refuses it.
            assert publisher.sealer is not None
            forged = await publisher.sealer.seal(f.registered(
                "C-FORGED-1", name="Fenella Forgery", email="fenella@forged.example"))
            box: Any = forged.payload.sealed  # type: ignore[attr-defined]
            other = await publisher.sealer.seal(f.registered("C-FORGED-2", name="Someone Else"))
            moved: Any = other.payload.sealed  # type: ignore[attr-defined]
            # Another customer's sealed blob under this customer's kid: authentication fails.
            payload = forged.payload.model_copy(  # type: ignore[attr-defined]
                update={"sealed": ev.SealedPII(kid=box.kid, ciphertext=moved.ciphertext)})
            await publisher.send(forged.model_copy(update={"payload": payload}))
            needles.update({"Fenella Forgery", "fenella@forged.example", "Someone Else"})
        for i in range(3):
            events, values = plain_customer(i)
            needles.update(values)
            for event in events:
                await ns.publish(f"tenure.{_topic(event)}.v1", event)
        # Refused events that carry personal data: their reasons are logged and counted.
        bad = orjson.loads(ev.encode_event(f.registered("C-BAD-1", name="Reginald Refused-Tz",
                                                        email="reginald@refused.example")))
        bad["payload"]["time_zone"] = "Mars/Olympus_Mons"
        await ns.publish_raw("tenure.customers.v1", orjson.dumps(bad), b"C-BAD-1")
        bad["payload"]["time_zone"] = "UTC"
        bad["payload"]["name"] = "Reginald Toolong " * 20
        bad["event_id"] = str(uuid.uuid4())
        await ns.publish_raw("tenure.customers.v1", orjson.dumps(bad), b"C-BAD-1")
        await ns.publish_raw("tenure.customers.v1",
                             b'{"name": "Reginald Broken", "email": "reginald@broken', b"C-BAD-2")
        needles.update({"Reginald", "reginald@refused.example", "reginald@broken"})

        # Reads of the 360 view by a person (audited) must not log what they return.
        some = simulated[0].customer_id
        reader = {"Authorization": f"Bearer {token('profile:read', 'pii:read')}"}

        async def caught_up() -> bool:
            lags = await consumer_lag(ns.platform())
            backlog = [(await ns.sql(name, "SELECT count(*) FROM outbox"))[0][0]
                       for name in SERVICES]
            return not any(lags.values()) and not any(backlog)

        await eventually(caught_up, timeout=240, interval=1.0, what="all services caught up")
        r = await svc["profile"].client.get(f"/v1/customers/{some}", headers=reader)
        assert r.status_code == 200 and r.json()["identity"]["name"].startswith("Sim Customer")
        metrics = {name: (await s.client.get("/metrics")).text for name, s in svc.items()}

    lines = captured.getvalue().splitlines()
    assert len(lines) > 10, "the services' logs were captured"
    assert any("dead-lettered" in line for line in lines), "refusals were logged"
    assert any("handler failed" in line for line in lines), "the forged seal was refused"
    leaks = [(needle, line) for line in lines for needle in needles
             if needle.lower() in line.lower()]
    assert not leaks, leaks[:5]

    for name, text in metrics.items():
        assert "tenure_" in text
        found = [needle for needle in needles if needle.lower() in text.lower()]
        assert not found, (name, found[:5])

    # The simulator's personal data travelled sealed.
    registrations = [m for m in await ns.read_topic("tenure.customers.v1", timeout=20)
                     if (m["value"] or {}).get("event_type") == "customer.registered"
                     and m["value"]["customer_id"].startswith(config.id_prefix)]
    assert len(registrations) == config.customers
    assert all(m["value"]["payload"]["sealed"] and m["value"]["payload"]["name"] is None
               for m in registrations)

    # Dead-letter reasons travel in headers, never encrypted: they name fields, not values.
    dead = await ns.read_topic("tenure.dlq.v1", timeout=20)
    assert any("handler error: SealError" in r["headers"].get("dlq.reason", "") for r in dead)
    for record in dead:
        reasons = " ".join(record["headers"].values()).lower()
        assert not [needle for needle in needles if needle.lower() in reasons], record["headers"]

    outputs: dict[str, int] = {}
    for topic in OUTPUT_TOPICS.values():
        for record in await ns.read_topic(topic, timeout=20):
            outputs[topic] = outputs.get(topic, 0) + 1
            raw = (record["raw"] or b"").lower()
            found = [needle for needle in needles if needle.lower().encode() in raw]
            assert not found, (topic, found[:5])
    assert set(outputs) == set(OUTPUT_TOPICS.values()), f"every service produced: {outputs}"


def _topic(event: ev.EnvelopeBase) -> str:
    return {"customer": "customers", "consent": "customers", "transaction": "transactions",
            "feedback": "feedback"}[event.event_type.split(".")[0]]



