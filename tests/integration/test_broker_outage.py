"""The broker stops and starts while a service runs: the service recovers without a restart."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from tests.support import factories as f
from tests.support.platform import Namespace, eventually, require_infrastructure
from tests.support.processes import KafkaBroker


async def test_service_recovers_after_broker_restart(tmp_path: Path) -> None:
    _, database = require_infrastructure()
    broker = KafkaBroker(tmp_path / "kafka")
    broker.start()
    ns = Namespace(broker.bootstrap, database, f"outage{uuid.uuid4().hex[:8]}")
    try:
        await ns.setup(("profile",))
        async with ns.service("profile") as profile:
            await ns.publish("tenure.transactions.v1", f.transaction("C-B", f.now() - f.minutes(5)))

            async def count_is(n: int) -> bool:
                r = await profile.get("/v1/customers/C-B")
                return r.status_code == 200 and r.json()["activity"]["transaction_count"] == n

            await eventually(lambda: count_is(1), what="first transaction")
            await ns.producer.stop()  # type: ignore[union-attr]

            broker.stop()
            await asyncio.sleep(3)  # the outage itself: the service must ride it out
            assert (await profile.client.get("/healthz")).status_code == 200
            broker.start()

            await ns.setup(("profile",))  # a fresh producer for the test's own publishing
            await ns.publish("tenure.transactions.v1", f.transaction("C-B", f.now()))
            await eventually(lambda: count_is(2), timeout=90, what="processing after the outage")

            async def two_outputs() -> bool:
                wire = await ns.read_topic("tenure.profile-updates.v1")
                return len({m["value"]["event_id"] for m in wire}) == 2

            await eventually(two_outputs, timeout=60, what="outbox published after the outage")
            await eventually(profile.ready, timeout=30, what="ready again")
    finally:
        await ns.teardown()
        broker.stop()
