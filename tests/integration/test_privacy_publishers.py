"""The project's publishers seal personal fields before they reach Kafka: `tenure import` and
`tenure simulate`, run as an operator runs them, leave no plaintext personal data on the
ingress topics, and keep everything else of the event (ids, payload) as it was."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

from sqlalchemy.ext.asyncio import create_async_engine

from shared.events import encode_event
from shared.keys import KeySettings, KeyStore, ensure_schema, seal_in_transaction
from tests.support.factories import registered
from tests.support.platform import Namespace

ROOT = Path(__file__).resolve().parents[2]


async def tenure(ns: Namespace, *args: str) -> str:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tenure_cli.main", *args, cwd=str(ROOT),
        env={**os.environ, **ns.env},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, err.decode()[-2000:]
    return out.decode()


async def test_import_seals_personal_fields_and_keeps_the_events_ids(
    ns: Namespace, tmp_path: Path
) -> None:
    rows = [
        {"event_id": "00000000-0000-4000-8000-000000000001", "event_type": "customer.registered",
         "schema_version": 1, "customer_id": "IMP-1", "occurred_at": "2024-01-01T09:00:00Z",
         "source": "core-banking",
         "payload": {"name": "Imogen Importwright", "email": "imogen@import.example",
                     "phone": "+44 7700 955001", "segment": "premier"}},
        {"event_id": "00000000-0000-4000-8000-000000000002", "event_type": "feedback.submitted",
         "schema_version": 1, "customer_id": "IMP-1", "occurred_at": "2024-01-02T09:00:00Z",
         "source": "complaint-desk",
         "payload": {"kind": "complaint_opened", "text": "Overcharged at the Wapping branch"}},
    ]
    source = tmp_path / "history.jsonl"
    source.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    await tenure(ns, "import", "--quiet", str(source))

    messages = await ns.read_topic("tenure.customers.v1") + await ns.read_topic(
        "tenure.feedback.v1")
    assert sorted(m["value"]["event_id"] for m in messages) == [r["event_id"] for r in rows]
    for message in messages:
        for plain in (b"Imogen", b"imogen@", b"955001", b"Wapping"):
            assert plain not in message["raw"]
        assert message["value"]["payload"]["sealed"]["kid"].startswith("dk-")
    registered = next(m for m in messages if m["value"]["event_type"] == "customer.registered")
    assert registered["value"]["payload"]["segment"] == "premier"
    keys = await ns.sql("privacy", "SELECT count(*) FROM customer_keys WHERE customer_id='IMP-1'")
    assert keys[0][0] == 1, "one data key for the customer, whatever the number of events"


async def test_simulate_seals_every_registration(ns: Namespace) -> None:
    await tenure(ns, "simulate", "--customers", "4", "--days", "60", "--seed", "3",
                 "--id-prefix", "SIMP", "--limit", "200")
    registrations = [m for m in await ns.read_topic("tenure.customers.v1")
                     if m["value"]["event_type"] == "customer.registered"]
    assert 1 <= len(registrations) <= 4
    for message in registrations:
        assert b"Sim Customer" not in message["raw"] and b"@example.test" not in message["raw"]
        assert message["value"]["payload"]["name"] is None
        assert message["value"]["payload"]["sealed"]["ciphertext"]


async def test_sealing_inside_a_consumers_transaction_mints_once_and_withholds_after_shredding(
    ns: Namespace,
) -> None:
    settings = KeySettings(**ns.platform().model_dump())
    store = KeyStore.from_settings(settings)
    event = registered("C-TX-1", name="Terence Transactional", email="terence@tx.example")
    engine = create_async_engine(ns.database_url)
    try:
        async with engine.begin() as conn:
            await ensure_schema(conn, store.schema)
            first = await seal_in_transaction(conn, store, event)
            second = await seal_in_transaction(conn, store, event)
        for sealed in (first, second):
            assert b"Terence" not in encode_event(sealed)
        assert first.payload.sealed.kid == second.payload.sealed.kid  # type: ignore[attr-defined]
        async with engine.begin() as conn:
            assert await store.shred(conn, "C-TX-1")
            after = await seal_in_transaction(conn, store, event)
        assert after.payload.name is None and after.payload.sealed is None  # type: ignore[attr-defined]
        assert b"Terence" not in encode_event(after)
    finally:
        await engine.dispose()
