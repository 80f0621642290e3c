"""Partner banks publish through their own lane: a real partner client (aiokafka over
SASL_SSL with SCRAM-SHA-512) against a real broker whose ACLs are enforced by Kafka's
StandardAuthorizer, and the ingress service routing what it reads.

The broker is this module's own (tests.support.partner_broker): the shared test broker is
never reconfigured.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError, TopicAuthorizationFailedError

from services.ingress.settings import IngressSettings
from shared import events as ev
from shared.events import EnvelopeBase, derived_event_id, encode_event
from tenure_cli import partners
from tenure_cli.main import main as tenure_main
from tests.support import factories as f
from tests.support.partner_broker import PartnerBroker
from tests.support.platform import Namespace, RunningService, eventually, require_infrastructure

pytestmark = pytest.mark.asyncio(loop_scope="session")


@dataclass
class Lane:
    broker: PartnerBroker
    ns: Namespace
    settings: IngressSettings
    creds: dict[str, partners.Credentials]
    ingress: RunningService

    def client_options(self, partner_id: str, password: str | None = None) -> dict[str, Any]:
        creds = self.creds[partner_id]
        return {
            "bootstrap_servers": creds.bootstrap_servers,
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_plain_username": creds.username,
            "sasl_plain_password": password or creds.password,
            "ssl_context": self.broker.ssl_context(),
            "request_timeout_ms": 15_000,
        }

    async def producer(self, partner_id: str, password: str | None = None) -> AIOKafkaProducer:
        producer = AIOKafkaProducer(**self.client_options(partner_id, password))
        try:
            await producer.start()
        except BaseException:
            await producer.stop()
            raise
        return producer


@pytest.fixture(scope="module")
async def lane(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Lane]:
    _, database = require_infrastructure()
    broker = PartnerBroker(tmp_path_factory.mktemp("partner-broker"))
    broker.start()
    ns = Namespace(broker.bootstrap, database, f"partner{uuid.uuid4().hex[:8]}")
    try:
        await ns.setup(())
        settings = IngressSettings(
            **{k.removeprefix("TENURE_").lower(): v for k, v in ns.env.items()},
            partner_bootstrap=broker.partner_bootstrap,
        )
        creds = {p: await partners.add_partner(settings, p) for p in ("bank-x", "bank-y")}
        await partners.map_customers(settings, "bank-x", [("X-1", "C-1"), ("X-2", "C-2")])
        async with ns.service("ingress", partner_bootstrap=broker.partner_bootstrap,
                              topic_refresh_ms=1000) as ingress:
            yield Lane(broker, ns, settings, creds, ingress)
    finally:
        await ns.teardown()
        broker.stop()


def partner_transaction(partner_id: str, customer_id: str, **kw: Any) -> EnvelopeBase:
    event = f.transaction(customer_id, account_id=kw.pop("account_id", "CARD-7"), **kw)
    return event.model_copy(update={"source": f"partner:{partner_id}"})


async def publish(producer: AIOKafkaProducer, topic: str, event: EnvelopeBase) -> Any:
    return await producer.send_and_wait(topic, encode_event(event), key=event.customer_id.encode())


async def dead_letters(lane: Lane) -> list[dict[str, Any]]:
    return [m for m in await lane.ns.read_topic("tenure.dlq.v1")
            if m["headers"].get("dlq.service") == "ingress"]


async def test_allowed_publish_lands_on_the_internal_topic_under_the_banks_customer(
    lane: Lane,
) -> None:
    event = partner_transaction("bank-x", "X-1")
    producer = await lane.producer("bank-x")
    try:
        await publish(producer, lane.creds["bank-x"].topics["transactions"], event)
    finally:
        await producer.stop()
    translated_id = str(derived_event_id("partner", "bank-x", event.event_id))

    async def landed() -> list[dict[str, Any]]:
        return [m for m in await lane.ns.read_topic("tenure.transactions.v1")
                if m["value"]["event_id"] == translated_id]

    [message] = await eventually(landed, timeout=60, what="the partner event inside")
    assert message["key"] == b"C-1"
    assert message["value"]["customer_id"] == "C-1"
    assert message["value"]["source"] == "partner:bank-x"
    assert message["value"]["causation_id"] == str(event.event_id)
    assert message["value"]["payload"]["account_id"] == "bank-x:CARD-7"


async def test_broker_refuses_other_lanes_internal_topics_and_reading(lane: Lane) -> None:
    producer = await lane.producer("bank-x")
    try:
        with pytest.raises(TopicAuthorizationFailedError):
            await publish(producer, lane.creds["bank-y"].topics["transactions"],
                          partner_transaction("bank-x", "X-1"))
        with pytest.raises(TopicAuthorizationFailedError):
            await publish(producer, lane.ns.topic("tenure.transactions.v1"),
                          partner_transaction("bank-x", "C-1"))
    finally:
        await producer.stop()

    own_topic = lane.creds["bank-x"].topics["transactions"]
    consumer = AIOKafkaConsumer(**lane.client_options("bank-x"), group_id=None,
                                auto_offset_reset="earliest")
    await consumer.start()
    try:
        consumer.assign([TopicPartition(own_topic, 0)])
        with pytest.raises(TopicAuthorizationFailedError):
            await asyncio.wait_for(consumer.getone(), 30)
    finally:
        await consumer.stop()


async def test_spoofed_source_and_unmapped_customer_are_dead_lettered(lane: Lane) -> None:
    spoofed = partner_transaction("bank-y", "X-1")  # bank-x claiming to be bank-y
    unmapped = partner_transaction("bank-x", "X-404")
    foreign_type = f.consent("X-2").model_copy(update={"source": "partner:bank-x"})
    producer = await lane.producer("bank-x")
    try:
        topic = lane.creds["bank-x"].topics["transactions"]
        # Where each landed: the DLQ names the original topic, partition and offset.
        where = {}
        for name, event in (("spoofed", spoofed), ("unmapped", unmapped),
                            ("foreign", foreign_type)):
            sent = await publish(producer, topic, event)
            where[(sent.topic, str(sent.partition), str(sent.offset))] = name
    finally:
        await producer.stop()

    async def all_refused() -> dict[str, str] | None:
        reasons = {}
        for m in await dead_letters(lane):
            h = m["headers"]
            name = where.get((h["dlq.topic"], h["dlq.partition"], h["dlq.offset"]))
            if name:
                reasons[name] = h["dlq.reason"]
        return reasons if len(reasons) == len(where) else None

    reasons = await eventually(all_refused, timeout=60, what="three refusals in the DLQ")
    assert "is not the partner that owns this topic" in reasons["spoofed"]
    assert "may not speak for this customer" in reasons["unmapped"]
    assert "may not be published on the partner's transactions stream" in reasons["foreign"]
    inside = {m["value"]["causation_id"] for m in await lane.ns.read_topic("tenure.transactions.v1")}
    inside |= {m["value"]["causation_id"] for m in await lane.ns.read_topic("tenure.customers.v1")}
    assert not {str(e.event_id) for e in (spoofed, unmapped, foreign_type)} & inside


async def test_mapping_over_rest_needs_the_partners_scope(lane: Lane) -> None:
    from tests.support.platform import token

    client = lane.ingress.client
    url = "/v1/partners/bank-y/customers/Y-1"
    denied = await client.put(url, json={"customer_id": "C-9"},
                              headers={"Authorization": f"Bearer {token('partners:read')}"})
    assert denied.status_code == 403
    written = await client.put(url, json={"customer_id": "C-9"},
                               headers={"Authorization": f"Bearer {token('partners:write')}"})
    assert written.status_code == 204
    listed = await client.get("/v1/partners/bank-y/customers",
                              headers={"Authorization": f"Bearer {token('partners:read')}"})
    assert listed.json()["customers"][0]["customer_id"] == "C-9"
    unknown = await client.put("/v1/partners/nobody/customers/Y-1", json={"customer_id": "C-9"},
                               headers={"Authorization": f"Bearer {token('partners:write')}"})
    assert unknown.status_code == 404


async def test_cli_lists_what_the_broker_holds(
    lane: Lane, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for key, value in lane.ns.env.items():
        monkeypatch.setenv(key, value)
    assert await asyncio.to_thread(tenure_main, ["partners", "--json", "list"]) == 0
    rows = {r["partner_id"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["bank-x"]["credential"] is True
    assert rows["bank-x"]["mapped_customers"] == 2
    assert rows["bank-x"]["acls"] == [
        f"ALLOW User:partner-bank-x WRITE on TOPIC prefixed '{lane.ns.prefix}.tenure.partner.bank-x.'"
    ]
    assert await asyncio.to_thread(tenure_main, ["partners", "add", "Bad.Id"]) == 2
    assert "partner id 'Bad.Id'" in capsys.readouterr().err


async def test_rotate_then_remove_stops_the_partner_at_the_broker(lane: Lane) -> None:
    old = lane.creds["bank-y"].password
    rotated = await partners.rotate_partner(lane.settings, "bank-y")
    with pytest.raises(KafkaError):
        await lane.producer("bank-y", password=old)
    producer = await lane.producer("bank-y", password=rotated.password)
    topic = lane.creds["bank-y"].topics["transactions"]
    try:
        await publish(producer, topic, partner_transaction("bank-y", "Y-1"))
        result = await partners.remove_partner(lane.settings, "bank-y")
        assert result["acls_deleted"] == 1 and result["credential_deleted"]
        # The open session is refused at once: every request is authorized anew.
        with pytest.raises(TopicAuthorizationFailedError):
            await publish(producer, topic, partner_transaction("bank-y", "Y-1"))
    finally:
        await producer.stop()
    with pytest.raises(KafkaError):  # and no new session starts
        await lane.producer("bank-y", password=rotated.password)


async def test_a_partners_complaint_text_is_sealed_before_it_goes_inside(lane: Lane) -> None:
    complaint = ev.FeedbackSubmitted(
        event_id=f.new_id(), customer_id="X-2", occurred_at=f.now(), source="partner:bank-x",
        payload=ev.FeedbackDetails(kind="complaint_opened", category="cards",
                                   text="My card was blocked abroad, call me on 0700 900 123"),
    )
    producer = await lane.producer("bank-x")
    try:
        await publish(producer, lane.creds["bank-x"].topics["feedback"], complaint)
    finally:
        await producer.stop()

    async def landed() -> list[dict[str, Any]]:
        return [m for m in await lane.ns.read_topic("tenure.feedback.v1")
                if m["value"]["causation_id"] == str(complaint.event_id)]

    [message] = await eventually(landed, timeout=60, what="the complaint inside")
    assert message["value"]["customer_id"] == "C-2"
    assert message["value"]["payload"]["text"] is None
    assert message["value"]["payload"]["sealed"]["kid"]
    assert b"blocked" not in message["raw"] and b"900 123" not in message["raw"]


async def test_the_banks_erasure_ends_the_partners_mapping(lane: Lane) -> None:
    await partners.map_customers(lane.settings, "bank-x", [("X-3", "C-3")])
    erased = ev.CustomerErased(event_id=f.new_id(), customer_id="C-3", occurred_at=f.now(),
                               source="core-banking",
                               payload=ev.ErasureRequest(requested_by="dpo"))
    await lane.ns.publish("tenure.customers.v1", erased)

    async def unmapped() -> bool:
        rows = await lane.ns.sql("ingress", "SELECT 1 FROM partner_customers "
                                 "WHERE partner_id = 'bank-x' AND partner_customer_id = 'X-3'")
        return not rows

    await eventually(unmapped, timeout=60, what="the mapping erased")
    later = partner_transaction("bank-x", "X-3")
    producer = await lane.producer("bank-x")
    try:
        sent = await publish(producer, lane.creds["bank-x"].topics["transactions"], later)
    finally:
        await producer.stop()

    async def refused() -> str | None:
        for m in await dead_letters(lane):
            h = m["headers"]
            if (h["dlq.topic"], h["dlq.offset"]) == (sent.topic, str(sent.offset)) and \
                    h["dlq.partition"] == str(sent.partition):
                return str(h["dlq.reason"])
        return None

    assert "may not speak for this customer" in await eventually(
        refused, timeout=60, what="the later event refused")
