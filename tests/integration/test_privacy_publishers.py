"""The project's publishers seal personal fields before they reach Kafka: `tenure import`
leaves no plaintext personal data on the ingress topics and keeps everything else of the event
(ids, payload); a consumer that re-publishes (the partner ingress) seals in its transaction.
The simulator's path (`EventPublisher.send`) is checked by test_privacy_logscan."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import create_async_engine

from shared.events import encode_event
from shared.keys import KeySettings, KeyStore, seal_in_transaction
from tenure_cli.importer import ImportOptions, run_import
from tests.support.factories import registered
from tests.support.platform import Namespace


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
    result = await run_import(ImportOptions(path=source, progress=False), ns.platform())
    assert result.published == 2

    messages = await ns.read_topic("tenure.customers.v1") + await ns.read_topic(
        "tenure.feedback.v1")
    assert sorted(m["value"]["event_id"] for m in messages) == [r["event_id"] for r in rows]
    for message in messages:
        for plain in (b"Imogen", b"imogen@", b"955001", b"Wapping"):
            assert plain not in message["raw"]
        assert message["value"]["payload"]["sealed"]["kid"].startswith("dk-")
    registered_ = next(m for m in messages if m["value"]["event_type"] == "customer.registered")
    assert registered_["value"]["payload"]["segment"] == "premier"
    keys = await ns.sql("privacy", "SELECT count(*) FROM customer_keys WHERE customer_id='IMP-1'")
    assert keys[0][0] == 1, "one data key for the customer, whatever the number of events"

    # Inside a consumer's transaction: the same customer's key, and after shredding the
    # personal fields are withheld rather than sent in clear.
    store = KeyStore.from_settings(KeySettings(**ns.platform().model_dump()))
    event = registered("IMP-1", name="Imogen Importwright", email="imogen@import.example")
    engine = create_async_engine(ns.database_url)
    try:
        async with engine.begin() as conn:
            sealed: Any = await seal_in_transaction(conn, store, event)
        assert b"Imogen" not in encode_event(sealed)
        assert sealed.payload.sealed.kid == registered_["value"]["payload"]["sealed"]["kid"]
        async with engine.begin() as conn:
            assert await store.shred(conn, "IMP-1")
            after: Any = await seal_in_transaction(conn, store, event)
        assert after.payload.name is None and after.payload.sealed is None
        assert b"Imogen" not in encode_event(after)
    finally:
        await engine.dispose()
