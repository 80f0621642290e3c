"""Replay determinism: the same events, consumed one per batch or a thousand per batch, and
with every event delivered twice, give the same transitions (from, to, rule, event time), the
same final state, and never the same output twice."""

from __future__ import annotations

import contextlib
import random
from collections.abc import AsyncIterator
from typing import Any

import pytest

from shared import events as ev
from shared.kit import partition_of
from tests.integration.test_lifecycle_service import (
    FAST,
    account,
    complaint,
    day,
    lifecycle_namespace,
    publish,
    scored,
    settled,
    snapshot,
    stage_events,
)
from tests.support.platform import Namespace, RunningService, eventually, new_namespace


@pytest.fixture
async def lc_ns() -> AsyncIterator[Namespace]:
    async with lifecycle_namespace() as namespace:
        yield namespace


CUSTOMERS = [f"RP-{n}" for n in range(6)]
# The topics hold the whole history before the services start: a partition that has not
# yielded records for FAST's half second is not idle, it waits its turn behind a busy fetch
# (two services replaying on a loaded host). Taken for idle, it let the clock run ahead of a
# topic's early facts, past the correction window, and the first-seen time then depended on
# fetch order (a flaky failure). The service's default (5 s) is what this test means.
REPLAY = {**FAST, "idle_partition_seconds": 5.0}


def history_events() -> list[ev.EnvelopeBase]:
    """A year of six customers: some stay, one declines, one goes quiet, one leaves."""
    rng = random.Random(7)
    events: list[ev.EnvelopeBase] = []
    for n, cid in enumerate(CUSTOMERS):
        events += [account(cid, day(0)), account(cid, day(0), account_id="S", product="savings")]
        quiet_from = {1: 150, 4: 60}.get(n, 10_000)
        last = day(0)
        for d in range(3, 420, rng.choice((9, 11, 13))):
            if d < quiet_from:
                last = day(d)
            risk = 0.75 if n == 2 and 120 <= d < 200 else 0.15
            events += [
                snapshot(cid, day(d), last_activity=last,
                         products={"current": 1, "savings": 1}),
                scored(cid, day(d), risk),
            ]
        if n == 3:
            events += [complaint(cid, day(40)), complaint(cid, day(80), "complaint_resolved")]
        if n == 5:
            events += [account(cid, day(250), "closed"),
                       account(cid, day(251), "closed", "S", "savings")]
    # Per customer in event time, customers interleaved as a broker would deliver them.
    events.sort(key=lambda e: (e.occurred_at, e.customer_id, e.event_type))
    # Every partition ends at the same event time. Otherwise a partition that finishes first
    # follows a busier one's watermark while it is idle (DESIGN.md "Time"), and its final
    # clock would depend on how fast each run read the others.
    ends = {partition_of(cid, 3): cid for cid in (f"RP-END-{n}" for n in range(40))}
    events += [snapshot(cid, day(500)) for _, cid in sorted(ends.items())]
    return events


async def caught_up(svc: RunningService, consumed: int) -> None:
    async def probe() -> bool:
        total = 0.0
        for line in (await svc.client.get("/metrics")).text.splitlines():
            if line.startswith(("tenure_lifecycle_events_processed_total",
                                "tenure_lifecycle_events_duplicate_total")):
                total += float(line.rsplit(" ", 1)[1])
        return total >= consumed

    # A generous deadline: one event per batch is slow on a loaded machine, not wrong.
    await eventually(probe, timeout=600, what=f"lifecycle consumed {consumed} events")
    await settled(svc)


async def outcome(ns: Namespace, svc: RunningService) -> dict[str, Any]:
    views = {cid: (await svc.get(f"/v1/customers/{cid}/stage")).json() for cid in CUSTOMERS}
    stream = await stage_events(ns)
    ids = [e["event_id"] for e in stream]
    assert len(ids) == len(set(ids)), "an output was emitted twice"
    believed: dict[str, list[tuple[Any, ...]]] = {cid: [] for cid in CUSTOMERS}
    keyed: dict[str, tuple[Any, ...]] = {}
    for e in [e for e in stream if e["customer_id"] in believed]:
        p = e["payload"]
        if p["rule"] == "correction":
            gone = {keyed[r["event_id"]] for r in p["evidence"]["retracted"]}
            believed[e["customer_id"]] = [b for b in believed[e["customer_id"]] if b not in gone]
        else:
            key = (p["from"], p["to"], p["rule"], p["transition_at"])
            keyed[e["event_id"]] = key
            believed[e["customer_id"]].append(key)
    return {
        "stream": sorted((e["event_id"], e["customer_id"], e["payload"]["to"],
                          e["payload"]["transition_at"]) for e in stream),
        "history": {cid: [(h["from"], h["to"], h["rule"], h["transition_at"])
                          for h in v["history"]] for cid, v in views.items()},
        "final": {cid: (v["stage"], v["since"], v["rule"], v["next_review_at"])
                  for cid, v in views.items()},
        "believed": believed,
    }


async def test_batch_size_and_duplicates_change_nothing(lc_ns: Namespace) -> None:
    events = history_events()
    other = new_namespace()
    await other.setup(("lifecycle",))
    try:
        # A replay: the topics hold the whole history before the service starts.
        await publish(lc_ns, *events)
        await publish(other, *events)
        await publish(other, *events)  # every event again: at-least-once delivery
        async with contextlib.AsyncExitStack() as stack:
            one_by_one = await stack.enter_async_context(
                lc_ns.service("lifecycle", batch_max_records=1, **REPLAY))
            thousands = await stack.enter_async_context(
                other.service("lifecycle", batch_max_records=1000, **REPLAY))
            await caught_up(one_by_one, len(events))
            await caught_up(thousands, 2 * len(events))
            first = await outcome(lc_ns, one_by_one)
            second = await outcome(other, thousands)
            assert first["history"] == second["history"], (first["history"], second["history"])
            assert first["final"] == second["final"]
            assert first["believed"] == first["history"] == second["believed"]
            # In-order topics: no correction was needed, the streams are the same events.
            assert first["stream"] == second["stream"]
            visited = {t[1] for h in first["history"].values() for t in h}
            assert {"loyal", "at_risk", "dormant", "churned", "active"} <= visited
            # Nothing new appears once everything has settled and copies come in again.
            before = len(await stage_events(other))
            await publish(other, *events[:20])
            await caught_up(thousands, 2 * len(events) + 20)
            assert len(await stage_events(other)) == before
    finally:
        await other.teardown()
