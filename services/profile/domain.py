"""Profile's pure logic: the feature snapshot of one customer as of an event time."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from shared.events import CustomerFlags, ProfileSnapshot

SECONDS_PER_DAY = 86_400.0


def days_between(earlier: datetime | None, later: datetime) -> float | None:
    """Whole and fractional days from `earlier` to `later`; None when there is no `earlier`.

    >>> from datetime import UTC, datetime
    >>> days_between(datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 11, 12, tzinfo=UTC))
    10.5
    """
    if earlier is None:
        return None
    return max((later - earlier).total_seconds(), 0.0) / SECONDS_PER_DAY


def open_products(accounts: list[dict[str, Any]]) -> dict[str, int]:
    """Open accounts per product type.

    >>> open_products([{"product_type": "card", "closed_at": None},
    ...                {"product_type": "card", "closed_at": "2026-01-01"},
    ...                {"product_type": "savings", "closed_at": None}])
    {'card': 1, 'savings': 1}
    """
    counts = Counter(a["product_type"] for a in accounts if a["closed_at"] is None)
    return dict(sorted(counts.items()))


def snapshot_from_view(customer: dict[str, Any], view: Any, tags: list[str]) -> ProfileSnapshot:
    """The 360° view reduced to what other services may know: no personal data."""
    return ProfileSnapshot(
        as_of=view.as_of,
        registered=bool(customer.get("registered")),
        segment=customer.get("segment"),
        time_zone=customer.get("time_zone") or "UTC",
        language=customer.get("language") or "en",
        rm_id=customer.get("rm_id"),
        flags=CustomerFlags(**(customer.get("flags") or {})),
        consent=dict(customer.get("consent") or {}),
        first_activity_at=customer.get("first_activity_at"),
        last_activity_at=customer.get("last_activity_at"),
        transaction_count=int(customer.get("transaction_count") or 0),
        products=view.products,
        total_balance=view.total_balance,
        features=view.features,
        tags=tags,
        value_tier=view.valuation["value_tier"],
        rfm_segment=view.valuation["rfm_segment"],
        quadrant=view.valuation["quadrant"],
        clv=view.valuation["clv"],
    )


# ------------------------------------------------------------------ the batch fold


def _earliest(a: datetime | None, b: datetime | None) -> datetime | None:
    return b if a is None else a if b is None else min(a, b)


def _latest(a: datetime | None, b: datetime | None) -> datetime | None:
    return b if a is None else a if b is None else max(a, b)


@dataclass
class ActivityDelta:
    transactions: int = 0
    first_activity_at: datetime | None = None
    last_activity_at: datetime | None = None
    last_event_at: datetime | None = None


@dataclass
class AccountDelta:
    product_type: str
    currency: str
    opened_at: datetime | None = None
    closed_at: datetime | None = None
    close_reason: str | None = None
    margin_rate: Decimal | None = None
    balance: Decimal | None = None
    balance_at: datetime | None = None


@dataclass
class ProfileFold:
    """What one batch changes, folded per customer and per account, in event order.

    The store writes it with one set-based statement per table, so a batch of 500 events
    costs a handful of round trips instead of a thousand. Every fold here is also what the
    database does on conflict (counts add, first/last take min/max, newer balances win), so
    folding a batch and then merging equals applying its events one by one.

    >>> from datetime import UTC, datetime
    >>> f = ProfileFold()
    >>> f.activity("C1", datetime(2026, 1, 2, tzinfo=UTC), customer_initiated=True, transactions=1)
    >>> f.activity("C1", datetime(2026, 1, 1, tzinfo=UTC), customer_initiated=False, transactions=1)
    >>> d = f.activities["C1"]
    >>> d.transactions, d.first_activity_at.day, d.last_activity_at.day, d.last_event_at.day
    (2, 2, 2, 2)
    """

    attributes: dict[str, dict[str, Any]] = field(default_factory=dict)
    consents: dict[str, dict[str, bool]] = field(default_factory=dict)
    activities: dict[str, ActivityDelta] = field(default_factory=dict)
    accounts: dict[tuple[str, str], AccountDelta] = field(default_factory=dict)
    days: dict[tuple[str, date], dict[str, Any]] = field(default_factory=dict)
    pii: dict[tuple[str, str], bytes | None] = field(default_factory=dict)
    blind: dict[tuple[str, str], bytes | None] = field(default_factory=dict)
    complaints: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    timeline: list[dict[str, Any]] = field(default_factory=list)
    signals: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(
            self.attributes or self.consents or self.activities or self.accounts or self.days
            or self.pii or self.complaints or self.timeline or self.signals
        )

    def day(self, customer_id: str, at: datetime, **counts: Any) -> None:
        """Add to the customer's daily activity bucket (UTC day of the event)."""
        bucket = self.days.setdefault((customer_id, at.astimezone(UTC).date()), {})
        for name, value in counts.items():
            bucket[name] = bucket.get(name, 0) + value

    def signal(self, customer_id: str, **values: Any) -> None:
        """Latest churn score or stage seen for the customer (no snapshot is emitted)."""
        self.signals.setdefault(customer_id, {}).update(values)

    def customer_attributes(self, customer_id: str, at: datetime, values: dict[str, Any]) -> None:
        merged = self.attributes.setdefault(customer_id, {})
        if "registered_at" in merged and "registered_at" in values:
            values = {**values, "registered_at": min(merged["registered_at"], values["registered_at"])}
        merged.update(values)
        self.activity(customer_id, at, customer_initiated=False, transactions=0)

    def consent(self, customer_id: str, at: datetime, key: str, granted: bool) -> None:
        self.consents.setdefault(customer_id, {})[key] = granted
        self.activity(customer_id, at, customer_initiated=False, transactions=0)

    def activity(
        self, customer_id: str, at: datetime, *, customer_initiated: bool, transactions: int
    ) -> None:
        d = self.activities.setdefault(customer_id, ActivityDelta())
        d.transactions += transactions
        d.last_event_at = _latest(d.last_event_at, at)
        if customer_initiated:
            d.first_activity_at = _earliest(d.first_activity_at, at)
            d.last_activity_at = _latest(d.last_activity_at, at)

    def account(self, customer_id: str, account_id: str, product_type: str, currency: str) -> AccountDelta:
        key = (customer_id, account_id)
        delta = self.accounts.get(key)
        if delta is None:
            delta = self.accounts[key] = AccountDelta(product_type, currency)
        return delta

    def open_account(
        self, customer_id: str, account_id: str, product_type: str, currency: str,
        at: datetime, margin_rate: Decimal | None,
    ) -> None:
        a = self.account(customer_id, account_id, product_type, currency)
        a.product_type, a.currency = product_type, currency
        a.opened_at = _earliest(a.opened_at, at)
        if margin_rate is not None:
            a.margin_rate = margin_rate

    def close_account(
        self, customer_id: str, account_id: str, product_type: str, currency: str,
        at: datetime, reason: str | None,
    ) -> None:
        a = self.account(customer_id, account_id, product_type, currency)
        a.closed_at, a.close_reason = at, reason

    def balance(
        self, customer_id: str, account_id: str, product_type: str, currency: str,
        amount: Decimal, at: datetime,
    ) -> None:
        # An account first seen through a transaction counts as opened then.
        a = self.account(customer_id, account_id, product_type, currency)
        a.opened_at = _earliest(a.opened_at, at)
        if a.balance_at is None or at >= a.balance_at:
            a.balance, a.balance_at = amount, at
