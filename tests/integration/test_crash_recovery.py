"""SIGKILL in the middle of a stream: every input accounted for, every effect exactly once."""

from __future__ import annotations

import collections
import random
from pathlib import Path

from tests.support import factories as f
from tests.support.platform import Namespace, eventually
from tests.support.processes import ServiceProcess

EVENTS = 5_000
CUSTOMERS = 250


async def test_profile_killed_mid_stream_loses_nothing_and_duplicates_no_effect(
    ns: Namespace, tmp_path: Path
) -> None:
    rng = random.Random(42)
    start = f.now() - f.minutes(10_000)
    expected = collections.Counter()
    for i in range(EVENTS):
        cid = f"K-{rng.randrange(CUSTOMERS):04d}"
        expected[cid] += 1
        await ns.producer.send(  # type: ignore[union-attr]
            ns.topic("tenure.transactions.v1"),
            f.transaction(cid, start + f.minutes(i), balance_after=f"{i}.00")
            .model_dump_json().encode(),
            key=cid.encode(),
        )
    await ns.producer.flush()  # type: ignore[union-attr]

    env = {**ns.env, "TENURE_PROFILE_BATCH_MAX_RECORDS": "100"}
    service = ServiceProcess("profile", env, tmp_path / "profile.log")
    service.start()

    async def inbox_count() -> int:
        return int((await ns.sql("profile", "SELECT count(*) FROM inbox"))[0][0])

    # Kill it while it is part-way through the stream.
    await eventually(lambda: _at_least(inbox_count, 800), timeout=60, interval=0.02,
                     what="the first batches")
    service.kill()
    killed_at = await inbox_count()
    assert killed_at < EVENTS, "the stream finished before the kill: raise EVENTS"

    service.start()
    try:
        await eventually(lambda: _at_least(inbox_count, EVENTS), timeout=120, what="all events")
        outbox_empty = lambda: _outbox_empty(ns)  # noqa: E731
        await eventually(outbox_empty, timeout=60, what="outbox drained")
    finally:
        service.stop()

    # State: every transaction counted exactly once per customer.
    rows = await ns.sql("profile", "SELECT customer_id, transaction_count FROM customers")
    assert {r[0]: r[1] for r in rows} == dict(expected)
    assert await inbox_count() == EVENTS
    assert (await ns.read_topic("tenure.dlq.v1")) == []

    # Outputs: duplicates on the wire are possible (crash between publish and delete); their
    # ids are deterministic, so a consumer applies each once.
    wire = await ns.read_topic("tenure.profile-updates.v1", timeout=10)
    ids = [m["value"]["event_id"] for m in wire]
    distinct = set(ids)
    wire_duplicates = len(ids) - len(distinct)
    print(f"killed after {killed_at} events; {len(ids)} outputs on the wire, "
          f"{len(distinct)} distinct, {wire_duplicates} wire duplicates")
    last_state = {}
    for m in wire:
        last_state[m["value"]["customer_id"]] = m["value"]["payload"]["transaction_count"]
    assert last_state == dict(expected), "the last snapshot per customer is the final state"

    # Downstream: scoring consumes the outputs, wire duplicates included, and applies each once.
    # (It also reads the transactions themselves, as activity evidence: each once too.)
    async with ns.service("scoring") as scoring:
        async def consumed_all() -> bool:
            # processed + dropped-as-duplicate covers every message on the wire
            text = (await scoring.client.get("/metrics")).text
            seen = sum(
                float(line.rsplit(" ", 1)[1])
                for line in text.splitlines()
                if line.startswith(('tenure_scoring_events_processed_total{event_type="profile.',
                                    "tenure_scoring_events_duplicate_total"))
            )
            causes = await ns.sql("scoring", "SELECT count(*) FROM inbox")
            return seen >= len(ids) and causes[0][0] >= len(distinct) + EVENTS

        await eventually(consumed_all, timeout=60, what="scoring consumed every output")
        history = await ns.sql("scoring", "SELECT count(*) FROM score_history")
        assert history[0][0] == len(distinct)
        causes = await ns.sql("scoring", "SELECT count(*) FROM inbox")
        assert causes[0][0] == len(distinct) + EVENTS


async def _at_least(probe, n: int) -> bool:  # type: ignore[no-untyped-def]
    return (await probe()) >= n


async def _outbox_empty(ns: Namespace) -> bool:
    return (await ns.sql("profile", "SELECT count(*) FROM outbox"))[0][0] == 0
