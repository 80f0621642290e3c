"""Two instances of one service in one consumer group on the real broker: the partitions are
split between them, move to the survivor when one dies, and no event is applied twice."""

from __future__ import annotations

import collections
import random
from pathlib import Path
from typing import Any

import httpx
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment

from services.profile.consumer import TOPICS
from tests.support import factories as f
from tests.support.platform import Namespace, eventually
from tests.support.processes import ServiceProcess

CUSTOMERS = 60


async def group_assignment(ns: Namespace, group: str) -> list[set[tuple[str, int]]]:
    """Each live member's partitions, as the group coordinator records them."""
    admin = AIOKafkaAdminClient(bootstrap_servers=ns.bootstrap)
    await admin.start()
    try:
        (response,) = await admin.describe_consumer_groups([group])
    finally:
        await admin.close()
    (described,) = response.groups
    state, members = described[2], described[5]
    if state != "Stable":
        return []
    out = []
    for member in members:
        raw = member[-1]
        if not raw:
            continue
        assignment = ConsumerProtocolMemberAssignment.decode(raw)
        out.append({(tp.topic, tp.partition) for tp in assignment.partitions()})
    return out


async def assigned(service: ServiceProcess) -> int:
    async with httpx.AsyncClient(base_url=service.url, timeout=5) as client:
        body = (await client.get("/readyz")).json()
    return int(body["checks"].get("assigned_partitions", 0))


async def processed(service: ServiceProcess) -> float:
    async with httpx.AsyncClient(base_url=service.url, timeout=5) as client:
        text = (await client.get("/metrics")).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("tenure_profile_events_processed_total{"))


async def publish_transactions(ns: Namespace, n: int, rng: random.Random,
                               counts: collections.Counter[str]) -> None:
    start = f.now() - f.minutes(100_000)
    for _ in range(n):
        cid = f"S-{rng.randrange(CUSTOMERS):03d}"
        counts[cid] += 1
        event = f.transaction(cid, start + f.minutes(sum(counts.values())))
        await ns.producer.send(  # type: ignore[union-attr]
            ns.topic("tenure.transactions.v1"), event.model_dump_json().encode(),
            key=cid.encode())
    await ns.producer.flush()  # type: ignore[union-attr]


async def test_two_instances_split_partitions_and_the_survivor_takes_over(
    ns: Namespace, tmp_path: Path
) -> None:
    all_partitions = {(ns.topic(t), p) for t in TOPICS for p in range(ns.partitions)}
    group = ns.settings("profile").consumer_group
    env = {**ns.env, "TENURE_PROFILE_BATCH_MAX_RECORDS": "50"}
    first = ServiceProcess("profile", env, tmp_path / "first.log")
    second = ServiceProcess("profile", env, tmp_path / "second.log")
    rng = random.Random(9)
    published: collections.Counter[str] = collections.Counter()

    async def inbox() -> int:
        return int((await ns.sql("profile", "SELECT count(*) FROM inbox"))[0][0])

    first.start()
    second.start()
    try:
        async def split() -> list[set[tuple[str, int]]] | None:
            members = await group_assignment(ns, group)
            counts = [await assigned(first), await assigned(second)]
            if len(members) == 2 and all(members) and all(counts) and (
                    sum(counts) == len(all_partitions)):
                return members
            return None

        a, b = await eventually(split, timeout=90, interval=0.5, what="two members, split")
        assert a.isdisjoint(b) and a | b == all_partitions
        # Range assignment keeps a partition index on one member for every topic, so one
        # customer's events (same index everywhere) stay with one instance.
        assert {p for _, p in a}.isdisjoint({p for _, p in b})

        await publish_transactions(ns, 600, rng, published)

        async def both_worked() -> bool:
            return await processed(first) > 0 and await processed(second) > 0

        await eventually(both_worked, timeout=60, what="both instances applying events")
        await publish_transactions(ns, 1500, rng, published)
        second.kill()  # mid-stream, without a goodbye: its session has to expire

        async def survivor_owns_all() -> bool:
            members = await group_assignment(ns, group)
            return members == [all_partitions] and await assigned(first) == len(all_partitions)

        await eventually(survivor_owns_all, timeout=90, interval=0.5,
                         what="the survivor owning every partition")
        total = sum(published.values())
        await eventually(lambda: _at_least(inbox, total), timeout=120, what="every event")
    finally:
        first.stop()
        second.stop()

    # Every event applied exactly once: one inbox row each, and each customer's
    # transaction count equals what was published for them.
    assert await inbox() == total
    rows = await ns.sql("profile", "SELECT customer_id, transaction_count FROM customers")
    assert {r[0]: r[1] for r in rows} == dict(published)
    assert (await ns.read_topic("tenure.dlq.v1")) == []


async def _at_least(probe: Any, n: int) -> bool:
    return await probe() >= n
