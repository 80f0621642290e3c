"""After erasure, nothing of the customer is readable anywhere: not in any table of any service
schema, not on any topic or in the DLQ (their personal fields were sealed with a key that is now
shredded), and a replay brings nothing back; the audit record of the erasure stays."""

from __future__ import annotations

import contextlib
import uuid
from datetime import date
from typing import Any

import sqlalchemy as sa
from aiokafka.admin import AIOKafkaAdminClient
from sqlalchemy.ext.asyncio import create_async_engine

from shared import events as ev
from shared.crypto import SealError, b64url, unb64url
from shared.keys import KeySettings, KeyStore, PiiOpener
from tenure_cli.publish import EventPublisher
from tests.support import factories as f
from tests.support.platform import Namespace, eventually, token

SERVICES = ("profile", "scoring", "lifecycle", "engagement")


def person(tag: str) -> dict[str, Any]:
    """Distinctive personal data, so a match in a table or a topic cannot be a coincidence."""
    digits = str(uuid.uuid4().int)[:7]
    return {
        "customer_id": f"C-{tag}-{uuid.uuid4().hex[:8]}",
        "name": f"Zebedee {tag.title()}{digits} Quartermaine",
        "phone": f"+44770{digits}",
        "email": f"zq.{tag}.{digits}@privacy-test.example",
        "national_id": f"QZ{digits}X",
        "birth_date": date(1961, 3, 17),
        "complaint": f"My neighbour {tag}{digits}-Featherstonehaugh was overcharged",
    }


def needles(p: dict[str, Any]) -> list[str]:
    """Personal values as they may be stored: as sent, digits only, lower case."""
    return [p["name"], p["phone"], p["phone"].lstrip("+"), p["email"], p["national_id"],
            p["complaint"], p["name"].split()[1]]


def customer_events(p: dict[str, Any], t0: Any) -> list[ev.EnvelopeBase]:
    cid = p["customer_id"]
    registered = f.registered(cid, t0, name=p["name"], phone=p["phone"], email=p["email"],
                              national_id=p["national_id"], birth_date=p["birth_date"],
                              rm_id="RM-PRIV")
    return [
        registered,
        f.consent(cid, "email", "marketing", True, t0),
        ev.AccountOpened(event_id=f.new_id(), customer_id=cid, occurred_at=t0 + f.minutes(1),
                         source="core-banking",
                         payload=ev.AccountChange(account_id=f"{cid}-CUR", product_type="current",
                                                  currency="EUR")),
        f.transaction(cid, t0 + f.minutes(2), balance_after="2500.00"),
        ev.FeedbackSubmitted(event_id=f.new_id(), customer_id=cid, occurred_at=t0 + f.minutes(3),
                             source="complaint-desk",
                             payload=ev.FeedbackDetails(kind="complaint_opened", complaint_id="K1",
                                                        category="fees", severity="high",
                                                        text=p["complaint"])),
    ]


async def all_rows_as_text(ns: Namespace) -> dict[str, list[str]]:
    """Every row of every table in every schema of the namespace, as PostgreSQL's text."""
    engine = create_async_engine(ns.database_url)
    out: dict[str, list[str]] = {}
    try:
        async with engine.connect() as conn:
            tables = (await conn.execute(sa.text(
                "SELECT table_schema, table_name FROM information_schema.tables "
                "WHERE table_schema LIKE :p AND table_type = 'BASE TABLE'"),
                {"p": f"{ns.prefix}\\_%"})).all()
            for schema, table in tables:
                rows = await conn.execute(sa.text(f'SELECT t::text FROM "{schema}"."{table}" t'))
                out[f"{schema.removeprefix(ns.prefix + '_')}.{table}"] = list(rows.scalars())
    finally:
        await engine.dispose()
    return out


async def all_topic_records(ns: Namespace) -> dict[str, list[dict[str, Any]]]:
    admin = AIOKafkaAdminClient(bootstrap_servers=ns.bootstrap)
    await admin.start()
    try:
        names = [t for t in await admin.list_topics() if t.startswith(f"{ns.prefix}.")]
    finally:
        await admin.close()
    return {name: await ns.read_topic(name.removeprefix(f"{ns.prefix}."), timeout=20)
            for name in names}


def contains(blob: str | bytes, needle: str) -> bool:
    if isinstance(blob, bytes):
        return needle.encode() in blob or needle.lower().encode() in blob.lower()
    hexed = needle.encode().hex()
    return needle.lower() in blob.lower() or hexed in blob


async def test_erasure_leaves_nothing_readable_in_any_schema_topic_or_dlq(
    ns: Namespace,
) -> None:
    victim, keeper = person("victim"), person("keeper")
    t0 = f.now() - f.minutes(30)
    settings = ns.platform()
    async with contextlib.AsyncExitStack() as stack:
        svc = {name: await stack.enter_async_context(ns.service(name)) for name in SERVICES}
        async with EventPublisher(settings) as publisher:
            for p in (victim, keeper):
                for event in customer_events(p, t0):
                    await publisher.send(event)
            assert publisher.sealer is not None and publisher.sealer.sealed == 4
            # A sealed update that fails authentication (tampered in transit): profile
            # dead-letters it, and the DLQ keeps the original, sealed, bytes.
            update = ev.CustomerUpdated(
                event_id=f.new_id(), customer_id=victim["customer_id"],
                occurred_at=t0 + f.minutes(4), source="crm",
                payload=ev.CustomerDetails(name=victim["name"], email=victim["email"]))
            sealed = await publisher.sealer.seal(update)
            box = sealed.payload.sealed  # type: ignore[attr-defined]
            raw = bytearray(unb64url(box.ciphertext, what="test"))
            raw[-1] ^= 0x01
            payload = sealed.payload.model_copy(  # type: ignore[attr-defined]
                update={"sealed": ev.SealedPII(kid=box.kid, ciphertext=b64url(bytes(raw)))})
            await publisher.send(sealed.model_copy(update={"payload": payload}))

        cid = victim["customer_id"]
        pii_reader = {"Authorization": f"Bearer {token('profile:read', 'pii:read')}"}

        async def profile_knows(p: dict[str, Any]) -> bool:
            r = await svc["profile"].client.get(f"/v1/customers/{p['customer_id']}",
                                                headers=pii_reader)
            return r.status_code == 200 and r.json()["identity"].get("name") == p["name"]

        # Profile opened the sealed fields with each customer's key.
        for p in (victim, keeper):
            await eventually(lambda p=p: profile_knows(p), timeout=60, what="sealed PII opened")
        r = await svc["profile"].client.get(f"/v1/customers/{cid}", headers=pii_reader)
        assert r.json()["identity"]["email"] == victim["email"]

        async def everyone_has(customer_id: str) -> bool:
            stage = await svc["lifecycle"].get(f"/v1/customers/{customer_id}/stage")
            dlq = await ns.read_topic("tenure.dlq.v1")
            return stage.status_code == 200 and any(r["key"] == cid.encode() for r in dlq)

        await eventually(lambda: everyone_has(cid), timeout=60, what="lifecycle and the DLQ")

        # Erase.
        eraser = {"Authorization": f"Bearer {token('profile:erase', subject='dpo-officer')}",
                  "X-Purpose": "GDPR article 17 request"}
        r = await svc["profile"].client.delete(f"/v1/customers/{cid}", headers=eraser)
        assert r.status_code == 202

        async def erased_everywhere() -> bool:
            for name in SERVICES:
                rows = await ns.sql(name, "SELECT 1 FROM erased_customers WHERE customer_id=:c",
                                    c=cid)
                outbox = await ns.sql(name, "SELECT count(*) FROM outbox")
                if not rows or outbox[0][0]:
                    return False
            return True

        await eventually(erased_everywhere, timeout=90, what="erasure in every service")

        # A replay: the victim's registration again, and a new event. The sealer has no key
        # for a shredded customer (the personal fields are withheld), and every service drops
        # the events of an erased id.
        async with EventPublisher(settings) as publisher:
            for event in customer_events(victim, t0 + f.minutes(10))[:4]:
                await publisher.send(event)
            assert publisher.sealer is not None and publisher.sealer.withheld == 1
            marker = f.transaction(keeper["customer_id"], t0 + f.minutes(20),
                                   balance_after="3100.00")
            await publisher.send(marker)

        async def keeper_caught_up() -> bool:
            r = await svc["profile"].get(f"/v1/customers/{keeper['customer_id']}")
            return r.status_code == 200 and r.json()["holdings"]["total_balance"].startswith(
                "3100")

        await eventually(keeper_caught_up, timeout=60, what="the marker after the replay")
        await eventually(erased_everywhere, timeout=60, what="outboxes drained")
        assert (await svc["profile"].get(f"/v1/customers/{cid}")).status_code == 404

    # Every table of every schema: no personal value of the victim, and their id only where
    # the erasure itself is recorded.
    allowed_id = {f"{s}.erased_customers" for s in SERVICES} | {
        "privacy.shredded_customers", "profile.audit_log"}
    tables = await all_rows_as_text(ns)
    assert {"profile.customer_pii", "privacy.customer_keys", "engagement.actions"} <= set(tables)
    found: list[tuple[str, str]] = []
    for table, rows in tables.items():
        for row in rows:
            for needle in needles(victim):
                if contains(row, needle):
                    found.append((table, needle))
            if table not in allowed_id and cid in row:
                found.append((table, "customer_id"))
    assert not found, found
    # The keeper is still there in full (the scan would have seen the victim the same way).
    assert any(keeper["customer_id"] in row for row in tables["profile.customer_pii"])
    assert any(keeper["customer_id"] in row for row in tables["privacy.customer_keys"])

    # The audit record of the erasure stays.
    audit = await ns.sql("profile", "SELECT subject, action, purpose FROM audit_log "
                         "WHERE customer_id = :c AND action = 'erase'", c=cid)
    assert [tuple(a) for a in audit] == [("dpo-officer", "erase", "GDPR article 17 request")]

    # Every topic and the DLQ: no plaintext, and the victim's sealed fields no longer open.
    records = await all_topic_records(ns)
    dlq = records[ns.topic("tenure.dlq.v1")]
    assert any(r["key"] == cid.encode() for r in dlq), "the tampered event is in the DLQ"
    key_settings = KeySettings(**settings.model_dump())
    opener = PiiOpener(KeyStore.from_settings(key_settings))
    engine = create_async_engine(ns.database_url)
    opened = {"victim": 0, "keeper": 0, "victim_refused": 0}
    try:
        async with engine.connect() as conn:
            for topic, recs in records.items():
                for record in recs:
                    raw = record["raw"] or b""
                    # Nothing plain on the wire for anyone: publishers seal.
                    for needle in needles(victim) + needles(keeper):
                        assert not contains(raw, needle), (topic, needle)
                    value = record["value"]
                    sealed = isinstance(value, dict) and isinstance(value.get("payload"), dict) \
                        and value["payload"].get("sealed")
                    if not sealed or record["headers"].get("dlq.reason"):
                        continue
                    box = ev.SealedPII(**sealed)
                    who = value["customer_id"]
                    try:
                        await opener.open(conn, box, customer_id=who,
                                          purpose=value["event_type"])
                    except SealError:
                        assert who == cid
                        opened["victim_refused"] += 1
                    else:
                        assert who != cid, "a sealed field of the erased customer still opens"
                        opened["keeper"] += 1
    finally:
        await engine.dispose()
    assert opened["victim_refused"] >= 2 and opened["keeper"] >= 2, opened
