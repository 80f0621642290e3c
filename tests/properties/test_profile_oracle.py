"""Property: after any order-preserving sequence of events (late ones and duplicates
included), profile's streaming view equals an independent recomputation from the events."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared import events as ev
from tests.support.platform import Namespace, eventually, new_namespace

AS_OF = datetime(2026, 6, 30, 23, 0, tzinfo=UTC)
CHANNELS = ["branch", "atm", "mobile", "web", "pos"]


class Harness:
    """One namespace and one profile service on a loop of their own, shared by examples."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.ns: Namespace = new_namespace()
        self._stack: Any = None
        self.profile: Any = None
        self.run(self._start())

    def run(self, coro: Any, timeout: float = 120) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _start(self) -> None:
        import contextlib

        await self.ns.setup(("profile",))
        self._stack = contextlib.AsyncExitStack()
        self.profile = await self._stack.enter_async_context(self.ns.service("profile"))

    async def _stop(self) -> None:
        await self._stack.aclose()
        await self.ns.teardown()

    def close(self) -> None:
        self.run(self._stop())
        self.loop.call_soon_threadsafe(self.loop.stop)


@pytest.fixture(scope="module")
def harness() -> Iterator[Harness]:
    h = Harness()
    yield h
    h.close()


@st.composite
def histories(draw: st.DrawFn) -> list[tuple[str, dict[str, Any]]]:
    """A customer's events as (kind, fields), in publishing order (times may go backwards)."""
    n = draw(st.integers(1, 14))
    out = []
    for i in range(n):
        kind = draw(st.sampled_from(["txn", "txn", "txn", "bank_txn", "login", "click", "nps",
                                      "complaint_opened", "complaint_resolved"]))
        out.append((kind, {
            # Distinct times (minutes apart) over ~15 months before AS_OF, any order.
            "minutes_before": draw(st.integers(0, 650_000)) * 10 + i,
            "amount": draw(st.decimals(min_value=Decimal("0.01"), max_value=Decimal("5000"),
                                       places=2)),
            "balance": draw(st.decimals(min_value=Decimal("-1000"), max_value=Decimal("90000"),
                                        places=2)),
            "account": draw(st.sampled_from(["A", "B"])),
            "channel": draw(st.sampled_from(CHANNELS)),
            "score": draw(st.integers(0, 10)),
            "duplicate": draw(st.booleans()) and draw(st.booleans()),
        }))
    return out


def _to_events(cid: str, history: list[tuple[str, dict[str, Any]]]) -> list[ev.EnvelopeBase]:
    events: list[ev.EnvelopeBase] = []
    for kind, x in history:
        at = AS_OF - timedelta(minutes=x["minutes_before"])
        base = {"event_id": uuid.uuid4(), "customer_id": cid, "occurred_at": at,
                "source": "core-banking"}
        if kind in ("txn", "bank_txn"):
            e: ev.EnvelopeBase = ev.TransactionPosted(**base, payload=ev.TransactionDetails(
                account_id=f"{cid}-{x['account']}", product_type="current", amount=x["amount"],
                currency="EUR", direction="debit",
                category="card_purchase" if kind == "txn" else "fee",
                channel=x["channel"] if kind == "txn" else "batch",
                initiated_by="customer" if kind == "txn" else "bank",
                balance_after=x["balance"]))
        elif kind in ("login", "click"):
            e = ev.AppClicked(**base, payload=ev.AppClick(
                session_id="s", action="login" if kind == "login" else "view_page",
                channel="mobile"))
        elif kind == "nps":
            e = ev.FeedbackSubmitted(**base, payload=ev.FeedbackDetails(kind="nps",
                                                                        score=x["score"]))
        else:
            e = ev.FeedbackSubmitted(**base, payload=ev.FeedbackDetails(
                kind=kind, complaint_id="K1"))
        events.append(e)
        if x["duplicate"]:
            events.append(e)
    return events


def oracle(events: list[ev.EnvelopeBase]) -> dict[str, Any]:
    """Plain recomputation from the events, sharing no code with the service."""
    unique = list({e.event_id: e for e in events}.values())
    day = AS_OF.date()

    def within(e: ev.EnvelopeBase, n: int) -> bool:
        return day - timedelta(days=n) < e.occurred_at.date() <= day

    customer_txns = [e for e in unique if isinstance(e, ev.TransactionPosted)
                     and e.payload.initiated_by.value == "customer"]
    activity = customer_txns + [e for e in unique
                                if isinstance(e, ev.AppClicked | ev.FeedbackSubmitted)]
    balances: dict[str, tuple[datetime, Decimal]] = {}
    for e in unique:
        if isinstance(e, ev.TransactionPosted):
            prev = balances.get(e.payload.account_id)
            if prev is None or e.occurred_at >= prev[0]:
                balances[e.payload.account_id] = (e.occurred_at, e.payload.balance_after)
    opened = [e.occurred_at for e in unique if isinstance(e, ev.FeedbackSubmitted)
              and e.payload.kind.value == "complaint_opened"]
    resolved = [e.occurred_at for e in unique if isinstance(e, ev.FeedbackSubmitted)
                and e.payload.kind.value == "complaint_resolved"]
    logins = [e for e in unique if isinstance(e, ev.AppClicked) and e.payload.action == "login"]
    return {
        "transaction_count": sum(isinstance(e, ev.TransactionPosted) for e in unique),
        "last_activity_at": max((e.occurred_at for e in activity), default=None),
        "frequency_30": sum(within(e, 30) for e in customer_txns),
        "frequency_90": sum(within(e, 90) for e in customer_txns),
        "frequency_365": sum(within(e, 365) for e in customer_txns),
        "monetary_365": sum((e.payload.amount for e in customer_txns if within(e, 365)),
                            Decimal(0)),
        "sessions_30": sum(within(e, 30) for e in logins),
        "total_balance": sum((b for _, b in balances.values()), Decimal(0)),
        "open_complaints": 1 if opened and not resolved else 0,
    }


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(history=histories())
def test_streaming_view_equals_recomputation(harness: Harness, history: list) -> None:
    cid = f"P-{uuid.uuid4().hex[:10]}"
    events = _to_events(cid, history)
    expected = oracle(events)

    async def publish_and_read() -> dict[str, Any]:
        for e in events:
            await harness.ns.publish(ev_topic(e), e)

        async def settled() -> dict[str, Any] | None:
            # The inbox row commits with the state it claims, so once every event
            # is in the inbox the view read *afterwards* reflects all of them
            # (events of different topics land in different batches).
            inbox = await harness.ns.sql(
                "profile", "SELECT count(*) FROM inbox WHERE event_id = ANY(CAST(:ids AS uuid[]))",
                ids=[str(e.event_id) for e in events])
            if inbox[0][0] != len({e.event_id for e in events}):
                return None
            r = await harness.profile.get(f"/v1/customers/{cid}",
                                          params={"as_of": AS_OF.isoformat()})
            return r.json() if r.status_code == 200 else None

        return await eventually(settled, timeout=30, what="all events applied")

    view = harness.run(publish_and_read())
    activity = view["activity"]
    last = activity["last_activity_at"]
    assert (datetime.fromisoformat(last) if last else None) == expected["last_activity_at"]
    for key in ("transaction_count", "frequency_30", "frequency_90", "frequency_365",
                "sessions_30"):
        assert activity[key] == expected[key], key
    assert Decimal(str(activity["monetary_365"])) == expected["monetary_365"]
    assert Decimal(view["holdings"]["total_balance"]) == expected["total_balance"]
    assert view["feedback"]["open_complaints"] == expected["open_complaints"]


def ev_topic(e: ev.EnvelopeBase) -> str:
    from shared.settings import topic_of

    return topic_of(e.event_type)
