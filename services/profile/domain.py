"""Profile's pure logic: the feature snapshot of one customer as of an event time."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
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


def snapshot(customer: dict[str, Any], as_of: datetime) -> ProfileSnapshot:
    """What scoring, lifecycle and engagement need to know, without personal data."""
    accounts = customer.get("accounts", [])
    products = open_products(accounts)
    balance = sum(
        (Decimal(a["balance"]) for a in accounts if a["closed_at"] is None), Decimal(0)
    )
    recency = days_between(customer.get("last_activity_at"), as_of)
    tenure_start = customer.get("registered_at") or customer.get("first_activity_at")
    tenure = days_between(tenure_start, as_of)
    features: dict[str, float] = {
        "transaction_count": float(customer.get("transaction_count") or 0),
        "product_count": float(sum(products.values())),
        "total_balance": float(balance),
        "accounts_ever": float(len(accounts)),
        "accounts_closed": float(sum(1 for a in accounts if a["closed_at"] is not None)),
    }
    if recency is not None:
        features["recency_days"] = round(recency, 4)
    if tenure is not None:
        features["tenure_days"] = round(tenure, 4)
    return ProfileSnapshot(
        as_of=as_of,
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
        products=products,
        total_balance=balance,
        features=features,
    )
