"""Bad input goes to the dead-letter topic with its reason; the rest of the batch is applied."""

from __future__ import annotations

import orjson

from services.profile.handlers import HANDLERS, on_transaction_posted
from shared.events import encode_event
from tests.support import factories as f
from tests.support.platform import Namespace, eventually

TXN = "tenure.transactions.v1"


async def _poison_aware(event, *, uow, now):  # type: ignore[no-untyped-def]
    # A handler that fails on one account, as a bug or a corrupt reference would in production.
    if event.payload.account_id == "POISON":
        raise RuntimeError("cannot post to account POISON")
    await on_transaction_posted(event, uow=uow, now=now)


async def test_bad_messages_are_dead_lettered_and_the_rest_applied(ns: Namespace) -> None:
    good = [f.transaction("C-1", f.now() - f.minutes(10 - i)) for i in range(5)]
    valid_doc = orjson.loads(encode_event(good[0]))
    missing_field = {k: v for k, v in valid_doc.items() if k != "customer_id"}
    future_version = {**valid_doc, "schema_version": 2, "event_id": str(f.new_id())}
    unregistered = {**valid_doc, "source": "someone-else", "event_id": str(f.new_id())}
    huge = {**valid_doc, "event_id": str(f.new_id()), "padding": "x" * (2 * 1024 * 1024)}
    poison = f.transaction("C-1", f.now() - f.minutes(1), account_id="POISON")

    # Interleave: good and bad on the same partition (same key), so they share batches.
    key = b"C-1"
    await ns.publish(TXN, good[0])
    await ns.publish_raw(TXN, b'{"event_id": "not json', key=key)
    await ns.publish(TXN, good[1])
    await ns.publish_raw(TXN, orjson.dumps(missing_field), key=key)
    await ns.publish_raw(TXN, orjson.dumps(future_version), key=key)
    await ns.publish(TXN, good[2])
    await ns.publish_raw(TXN, orjson.dumps(unregistered), key=key)
    await ns.publish_raw(TXN, orjson.dumps(huge), key=key)
    await ns.publish(TXN, poison)
    await ns.publish(TXN, good[3])
    await ns.publish(TXN, good[4])

    handlers = {**HANDLERS, "transaction.posted": _poison_aware}
    async with ns.service("profile", parts={"handlers": handlers}) as profile:

        async def all_good_applied() -> bool:
            r = await profile.get("/v1/customers/C-1")
            return r.status_code == 200 and r.json()["activity"]["transaction_count"] == 5

        await eventually(all_good_applied, what="the five good transactions")

        async def six_dead() -> list:
            dead = await ns.read_topic("tenure.dlq.v1")
            return dead if len(dead) >= 6 else []

        dead = await eventually(six_dead, what="six dead letters")
        assert len(dead) == 6
        reasons = [d["headers"]["dlq.reason"] for d in dead]
        assert any(r.startswith("malformed JSON") for r in reasons)
        assert any("customer_id" in r and "Field required" in r for r in reasons)
        assert any(r.startswith("schema_version: unsupported version 2") for r in reasons)
        assert any("not a registered publisher" in r for r in reasons)
        assert any("exceeds the limit" in r for r in reasons)
        assert any(r.startswith("handler error: RuntimeError") for r in reasons)
        for d in dead:
            assert d["headers"]["dlq.topic"] == ns.topic(TXN)
            assert d["headers"]["dlq.service"] == "profile"
            assert int(d["headers"]["dlq.offset"]) >= 0
        # The original bytes, untouched: the 2 MB message is all there.
        assert max(len(d["raw"]) for d in dead) > 2 * 1024 * 1024
        assert any(d["raw"] == b'{"event_id": "not json' for d in dead)

        # The service is still consuming: a new event after the bad ones is applied.
        await ns.publish(TXN, f.transaction("C-1", f.now()))

        async def sixth() -> bool:
            r = await profile.get("/v1/customers/C-1")
            return r.json()["activity"]["transaction_count"] == 6

        await eventually(sixth, what="a transaction after the bad ones")
        metrics = (await profile.client.get("/metrics")).text
        assert 'tenure_profile_events_dead_lettered_total{reason="handler_error"} 1.0' in metrics
