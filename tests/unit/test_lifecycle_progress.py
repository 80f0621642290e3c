"""Lifecycle's progress code against an in-memory store (pure): a fact that waits for a slower
input topic holds the customer's clock back, however the customer is found again."""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

from services.lifecycle.clock import Limits
from services.lifecycle.domain import Position, advance, default_rules, next_due
from services.lifecycle.facts import Fact
from services.lifecycle.progress import Context, advance_customers
from services.lifecycle.settings import LifecycleSettings
from shared.kit import UnitOfWork
from tests.support.lifecycle_fakes import FakeStore

RULES = default_rules()
T0 = datetime(2025, 1, 1, tzinfo=UTC)
JUST = timedelta(microseconds=1)
_ids = itertools.count(1)


def day(n: float) -> datetime:
    return T0 + timedelta(days=n)


def fact(kind: str, at: datetime, /, **data: Any) -> Fact:
    return Fact(at, kind, f"00000000-0000-4000-8000-{next(_ids):012d}", data)


def snap(at: datetime) -> Fact:
    return fact("snapshot", at, as_of=at.isoformat(), registered=True,
                first_activity_at=T0.isoformat(), last_activity_at=at.isoformat(),
                transaction_count=5, products={"current": 1}, total_balance=100.0,
                features={"frequency_90": 1})


def run(store: FakeStore, uow: Any, rows: Any, new: dict[str, list[Fact]],
        limits: Limits) -> None:
    asyncio.run(advance_customers(uow, rows, new, lambda _: limits,
                                  Context(RULES, timedelta(minutes=5), timedelta(days=35))))


def test_a_waiting_fact_stops_the_clock_however_the_customer_is_found_again() -> None:
    store = FakeStore()
    uow: UnitOfWork[Any] = UnitOfWork(None, store, LifecycleSettings())  # type: ignore[arg-type]
    opened = fact("account_opened", day(0), account_id="A", product_type="current")
    returned = snap(day(150))  # arrived on a topic whose slower partner has not caught up
    store.keep("C", [opened, returned])

    # Facts may be applied up to day 120, but the idle clock has run to day 400.
    run(store, uow, asyncio.run(store.lock(["C"])), {"C": [opened, returned]},
        Limits(day(120), day(400)))
    row = store.rows["C"]
    assert row["pending_from"] == day(150)
    assert row["at"] == day(150) - JUST  # time is not judged past the waiting fact
    assert row["next_due_at"] is None  # found again through the waiting fact, not the clock

    # Found again before the fact applies, by a sweep or by a later fact that must wait too:
    # the waiting fact is not read from the log, and still holds the clock back.
    run(store, uow, asyncio.run(store.lock(["C"])), {}, Limits(day(120), day(500)))
    later = snap(day(160))
    store.keep("C", [later])
    run(store, uow, asyncio.run(store.lock(["C"])), {"C": [later]}, Limits(day(120), day(600)))
    assert store.rows["C"]["at"] == day(150) - JUST
    assert store.rows["C"]["pending_from"] == day(150)
    assert store.rows["C"]["stage"] == "dormant"  # not churned on day 270

    # The slower topic catches up: the facts apply, and nothing announced is withdrawn.
    run(store, uow, asyncio.run(store.lock(["C"])), {}, Limits(day(600), day(600)))
    assert all(h["kind"] == "transition" for h in store.history), "nothing was corrected"
    standing = [(h["from_stage"], h["to_stage"], h["rule"], h["transition_at"])
                for h in sorted(store.history, key=lambda h: h["seq"])]
    expected = advance(Position(), [opened, returned, later], fact_limit=day(600),
                       timer_limit=day(600), rules=RULES).transitions
    assert standing == [t.key for t in expected]
    assert ("dormant", "active", "reactivated", day(150)) in standing


def test_next_due_yields_to_a_waiting_fact_that_comes_first() -> None:
    opened = fact("account_opened", day(0), account_id="A", product_type="current")
    step = advance(Position(), [opened], fact_limit=day(0), timer_limit=day(10), rules=RULES)
    due = next_due(step.position, RULES)
    assert due == day(30)  # the floor of silence beyond the customer's own pace
    assert next_due(step.position, RULES, waiting_from=day(200)) == due
    assert next_due(step.position, RULES, waiting_from=day(30)) is None
    clamped = advance(step.position, [], fact_limit=day(10), timer_limit=day(400),
                      rules=RULES, waiting_from=day(60))
    assert clamped.transitions == [] and clamped.position.at == day(60) - JUST
