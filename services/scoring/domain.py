"""Scoring's pure logic: features at scoring time, the prior, bands and readable reasons."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

from shared.events import ChurnBand, ProfileSnapshot

Features = dict[str, float]

# Reference values a reason is measured against: a typical engaged customer.
REFERENCE: Features = {
    "recency_days": 7.0,
    "log_transaction_count": math.log1p(30.0),
    "product_count": 2.0,
    "log_total_balance": math.log1p(5_000.0),
    "tenure_years": 3.0,
    "accounts_closed": 0.0,
}

REASON_TEXT: dict[str, Callable[[float], str]] = {
    "recency_days": lambda v: f"no customer-initiated activity for {v:.0f} days",
    "log_transaction_count": lambda v: f"{math.expm1(v):.0f} transactions on record",
    "product_count": lambda v: f"holds {v:.0f} open product(s)",
    "log_total_balance": lambda v: f"total balance {math.expm1(v):,.0f}",
    "tenure_years": lambda v: f"customer for {v:.1f} years",
    "accounts_closed": lambda v: f"{v:.0f} account(s) closed",
}


def features_at(snapshot: ProfileSnapshot, as_of: datetime) -> Features:
    """Model inputs with time-dependent ones measured at `as_of` (never stage or score).

    >>> from datetime import UTC, datetime
    >>> s = ProfileSnapshot(as_of=datetime(2026, 3, 1, tzinfo=UTC),
    ...     last_activity_at=datetime(2026, 2, 1, tzinfo=UTC), transaction_count=3)
    >>> features_at(s, datetime(2026, 3, 11, tzinfo=UTC))["recency_days"]
    38.0
    """
    f = snapshot.features
    if snapshot.last_activity_at is not None:
        recency = max((as_of - snapshot.last_activity_at).total_seconds(), 0.0) / 86_400
    else:
        recency = 365.0
    tenure_days = f.get("tenure_days", 0.0) + max(
        (as_of - snapshot.as_of).total_seconds(), 0.0
    ) / 86_400
    return {
        "recency_days": round(recency, 4),
        "log_transaction_count": math.log1p(max(snapshot.transaction_count, 0)),
        "product_count": float(sum(snapshot.products.values())),
        "log_total_balance": math.log1p(max(float(snapshot.total_balance), 0.0)),
        "tenure_years": round(tenure_days / 365.25, 4),
        "accounts_closed": f.get("accounts_closed", 0.0),
    }


def recency_prior(features: Mapping[str, float], horizon_days: int = 90) -> float:
    """The cold-start prior: churn risk grows with silence, measured against the horizon.

    A customer silent for the whole horizon already meets the churn definition, so the
    prior approaches 1 there; recent activity keeps it low. Closed accounts and an empty
    product list add risk.

    >>> round(recency_prior({"recency_days": 0.0}), 3) < round(recency_prior({"recency_days": 60.0}), 3)
    True
    """
    recency = features.get("recency_days", 0.0)
    z = -2.5 + 4.0 * (recency / horizon_days)
    if features.get("product_count", 1.0) == 0.0:
        z += 1.0
    z += 0.5 * features.get("accounts_closed", 0.0)
    return 1.0 / (1.0 + math.exp(-z))


def band_of(probability: float, cuts: tuple[float, float, float]) -> ChurnBand:
    """
    >>> band_of(0.1, (0.25, 0.5, 0.75)).value, band_of(0.8, (0.25, 0.5, 0.75)).value
    ('low', 'critical')
    """
    if probability >= cuts[2]:
        return ChurnBand.critical
    if probability >= cuts[1]:
        return ChurnBand.high
    if probability >= cuts[0]:
        return ChurnBand.medium
    return ChurnBand.low


@dataclass(frozen=True)
class Reason:
    feature: str
    text: str
    contribution: float


def reasons_for(
    predict: Callable[[Features], float], features: Features, top: int = 3
) -> list[Reason]:
    """Model-agnostic reasons: how much the probability moves when one feature is set back
    to the reference customer's value. Positive contributions raise risk; the largest first.
    """
    base = predict(features)
    found: list[Reason] = []
    for name, value in features.items():
        if name not in REFERENCE or value == REFERENCE[name]:
            continue
        counterfactual = dict(features)
        counterfactual[name] = REFERENCE[name]
        delta = base - predict(counterfactual)
        if delta > 1e-6:
            found.append(Reason(name, REASON_TEXT[name](value), round(delta, 4)))
    found.sort(key=lambda r: r.contribution, reverse=True)
    return found[:top]
