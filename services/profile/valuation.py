"""Customer layering (客户分层): RFM scores and segments, value tier, CLV, the capability ×
willingness quadrant. Pure functions over a customer's figures and population histograms.

Population scores come from histograms kept in PostgreSQL rather than from a scan of every
profile: each customer sits in one log-spaced bucket per measure, and a score is the share
of the population in lower buckets. Tolerance: a customer's percentile is exact up to the
customers sharing their bucket (buckets are ~19% wide in value, so a score can differ from
exact quintiles only for customers within one bucket of a quintile boundary), and a silent
customer's frequency and monetary entries are as of their last event.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

# Log-spaced buckets: bucket(v) = floor(log(1 + v) / log(BASE)); 0 for v <= 0.
BASE = 1.19
MAX_BUCKET = 200

# Recency is ranked through the day of the last activity (its rank does not age: everyone's
# recency grows by the same amount each day), counted in days since this epoch.
EPOCH = date(2000, 1, 1)

MEASURES = ("last_activity_day", "frequency_365", "monetary_365", "clv", "capability")


def bucket_of(value: float | None) -> int | None:
    """The histogram bucket of a non-negative measure.

    >>> bucket_of(0), bucket_of(1.0), bucket_of(100.0), bucket_of(None)
    (0, 3, 26, None)
    """
    if value is None or math.isnan(value):
        return None
    if value <= 0:
        return 0
    return min(int(math.log1p(value) / math.log(BASE)), MAX_BUCKET)


def day_bucket(day: date | None) -> int | None:
    """Days since EPOCH: the exact bucket for the last-activity day."""
    return None if day is None else (day - EPOCH).days


def percentile(histogram: Mapping[int, int], bucket: int | None) -> float | None:
    """Share of the population strictly below `bucket`, plus half of its own bucket.

    >>> percentile({0: 10, 5: 10, 9: 20}, 5)
    0.375
    >>> percentile({}, 3) is None
    True
    """
    if bucket is None:
        return None
    total = sum(histogram.values())
    if total <= 0:
        return None
    below = sum(n for b, n in histogram.items() if b < bucket)
    return (below + histogram.get(bucket, 0) / 2) / total


def score_1_to_5(share: float | None) -> int | None:
    """Quintile score: 1 for the bottom fifth, 5 for the top fifth.

    >>> [score_1_to_5(x) for x in (0.0, 0.19, 0.2, 0.5, 0.81, 1.0)]
    [1, 1, 2, 3, 5, 5]
    """
    if share is None:
        return None
    return min(int(share * 5) + 1, 5)


def rfm_segment(r: int | None, f: int | None, m: int | None) -> str | None:
    """Named RFM segment from the three 1–5 scores (the usual retail-banking grid).

    >>> rfm_segment(5, 5, 5), rfm_segment(5, 1, 1), rfm_segment(1, 5, 5), rfm_segment(1, 1, 1)
    ('champions', 'new', "can't lose", 'lost')
    """
    if r is None or f is None or m is None:
        return None
    fm = (f + m) / 2
    if r >= 4 and fm >= 4:
        return "champions"
    if r == 5 and f == 1:
        return "new"
    if r == 4 and f == 1:
        return "promising"
    if r >= 3 and fm >= 3.5:
        return "loyal"
    if r >= 4:
        return "potential loyalist"
    if r == 3 and f >= 3:
        return "need attention"
    if r == 3:
        return "about to sleep"
    if r == 1 and f >= 4 and m >= 4:
        return "can't lose"
    if r <= 2 and f >= 3:
        return "at risk"
    if r == 2:
        return "hibernating"
    return "lost"


def value_tier(clv_share: float | None) -> str | None:
    """high = top 20% by value, mid = next 30%, low = the rest.

    >>> value_tier(0.85), value_tier(0.6), value_tier(0.1), value_tier(None)
    ('high', 'mid', 'low', None)
    """
    if clv_share is None:
        return None
    if clv_share >= 0.8:
        return "high"
    if clv_share >= 0.5:
        return "mid"
    return "low"


# Annual margin assumed for a product when the bank did not send one (documented in
# docs/profile.md); card spend earns interchange.
DEFAULT_MARGIN = {
    "current": Decimal("0.015"),
    "savings": Decimal("0.008"),
    "card": Decimal("0.12"),
    "loan": Decimal("0.045"),
    "mortgage": Decimal("0.018"),
    "insurance": Decimal("0.06"),
    "investment": Decimal("0.01"),
}
INTERCHANGE = 0.005
DISCOUNT_RATE = 0.10
BASELINE_ANNUAL_RETENTION = 0.85


@dataclass(frozen=True)
class Clv:
    value: float
    annual_margin: float
    annual_retention: float
    discount_rate: float
    basis: str


def clv(
    accounts: list[tuple[str, Decimal, Decimal | None]],
    card_spend_365: float,
    churn_probability_90d: float | None,
) -> Clv:
    """Customer lifetime value = m · r / (1 + d − r) (the constant-margin, constant-retention
    formula), with m the annual margin (balances × product margin + interchange on spend),
    r the annual retention implied by the 90-day churn probability (r = (1 − p)^4, or a
    baseline when there is no score yet) and d the discount rate.

    >>> c = clv([("savings", Decimal("10000"), None)], 0.0, 0.1)
    >>> round(c.annual_margin, 2), round(c.annual_retention, 4), round(c.value, 2)
    (80.0, 0.6561, 118.24)
    """
    margin = 0.0
    for product, balance, rate in accounts:
        r = rate if rate is not None else DEFAULT_MARGIN.get(product, Decimal("0.01"))
        margin += abs(float(balance)) * float(r)
    margin += INTERCHANGE * max(card_spend_365, 0.0)
    if churn_probability_90d is None:
        retention, basis = BASELINE_ANNUAL_RETENTION, "baseline retention (no churn score yet)"
    else:
        retention = (1.0 - min(max(churn_probability_90d, 0.0), 1.0)) ** 4
        basis = "retention from the latest 90-day churn probability"
    value = margin * retention / (1.0 + DISCOUNT_RATE - retention)
    return Clv(value, margin, retention, DISCOUNT_RATE, basis)


def willingness(product_count: int, active_days_30: int, tenure_days: float | None) -> float:
    """Depth of relationship and engagement, 0–1: products held, active days, tenure.

    >>> willingness(3, 10, 3 * 365.25), willingness(0, 0, None)
    (1.0, 0.0)
    """
    tenure_years = (tenure_days or 0.0) / 365.25
    return round(
        0.4 * min(product_count / 3, 1.0)
        + 0.3 * min(active_days_30 / 10, 1.0)
        + 0.3 * min(tenure_years / 3, 1.0),
        4,
    )


def quadrant(capability_share: float | None, willingness_score: float) -> str | None:
    """The bancassurance grid: capability (balances, top 30%) × willingness (≥ 0.5).

    >>> quadrant(0.9, 0.8), quadrant(0.9, 0.2), quadrant(0.1, 0.8), quadrant(0.1, 0.2)
    ('pamper', 'cultivate', 'maintain', 'develop')
    """
    if capability_share is None:
        return None
    high_capability = capability_share >= 0.7
    high_willingness = willingness_score >= 0.5
    if high_capability:
        return "pamper" if high_willingness else "cultivate"
    return "maintain" if high_willingness else "develop"
