"""The 360° view of one customer as of an event time: pure composition of stored facts,
windowed figures, feedback and the population's histograms."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from services.profile import valuation as v
from services.profile.domain import days_between, open_products

CHANNELS = ("branch", "atm", "mobile", "web", "call_centre", "pos")


def nps_category(score: int | None) -> str | None:
    """
    >>> nps_category(10), nps_category(7), nps_category(6), nps_category(None)
    ('promoter', 'passive', 'detractor', None)
    """
    if score is None:
        return None
    return "promoter" if score >= 9 else "passive" if score >= 7 else "detractor"


@dataclass
class View:
    as_of: datetime
    features: dict[str, float]
    figures: dict[str, Any]
    feedback: dict[str, Any]
    valuation: dict[str, Any]
    buckets: dict[str, int | None]
    channel_mix: dict[str, float]
    products: dict[str, int]
    total_balance: Decimal
    variables: dict[str, Any] = field(default_factory=dict)


def _num(x: Any) -> float:
    return float(x or 0)


def compute_view(
    customer: Mapping[str, Any],
    as_of: datetime,
    figures: Mapping[str, Any] | None,
    complaints: list[Mapping[str, Any]],
    population: Mapping[str, Mapping[int, int]],
    birth_date: date | None = None,
) -> View:
    accounts = customer.get("accounts", [])
    products = open_products(accounts)
    open_accounts = [a for a in accounts if a["closed_at"] is None]
    balance = sum((Decimal(a["balance"]) for a in open_accounts), Decimal(0))
    capability = float(sum((max(Decimal(a["balance"]), Decimal(0)) for a in open_accounts),
                           Decimal(0)))
    f = dict(figures or {})
    recency = days_between(customer.get("last_activity_at"), as_of)
    tenure = days_between(customer.get("registered_at") or customer.get("first_activity_at"),
                          as_of)
    sessions_30, sessions_prev = _num(f.get("sessions_30")), _num(f.get("sessions_prev_30"))
    engagement_trend = (
        (sessions_30 - sessions_prev) / sessions_prev if sessions_prev > 0
        else (1.0 if sessions_30 > 0 else 0.0)
    )
    last_salary: date | None = f.get("last_salary_day")
    days_since_salary = (as_of.date() - last_salary).days if last_salary else None
    channel_counts = {c: _num(f.get(f"ch_{c}")) for c in CHANNELS}
    channel_total = sum(channel_counts.values())
    channel_mix = {
        c: round(n / channel_total, 4) if channel_total else 0.0 for c, n in channel_counts.items()
    }

    open_complaints = [c for c in complaints if c.get("resolved_at") is None and c.get("opened_at")]
    oldest_open = min((c["opened_at"] for c in open_complaints), default=None)
    nps = customer.get("last_nps")
    feedback = {
        "last_nps": nps,
        "last_nps_at": customer.get("last_nps_at"),
        "nps_category": nps_category(nps),
        "open_complaints": len(open_complaints),
        "oldest_open_complaint_days": days_between(oldest_open, as_of),
        "resolved_complaints": sum(1 for c in complaints if c.get("resolved_at") is not None),
    }

    last_activity = customer.get("last_activity_at")
    buckets: dict[str, int | None] = {
        "last_activity_day": v.day_bucket(last_activity.date() if last_activity else None),
        "frequency_365": v.bucket_of(_num(f.get("frequency_365"))),
        "monetary_365": v.bucket_of(_num(f.get("monetary_365"))),
        "capability": v.bucket_of(capability),
    }
    r = v.score_1_to_5(v.percentile(population.get("last_activity_day", {}),
                                     buckets["last_activity_day"]))
    fs = v.score_1_to_5(v.percentile(population.get("frequency_365", {}),
                                      buckets["frequency_365"]))
    m = v.score_1_to_5(v.percentile(population.get("monetary_365", {}), buckets["monetary_365"]))
    lifetime = v.clv(
        [(a["product_type"], Decimal(a["balance"]),
          Decimal(a["margin_rate"]) if a.get("margin_rate") is not None else None)
         for a in open_accounts],
        _num(f.get("card_spend_365")),
        customer.get("churn_probability"),
    )
    buckets["clv"] = v.bucket_of(lifetime.value)
    clv_share = v.percentile(population.get("clv", {}), buckets["clv"])
    capability_share = v.percentile(population.get("capability", {}), buckets["capability"])
    will = v.willingness(sum(products.values()), int(_num(f.get("active_days_30"))), tenure)
    valuation = {
        "r": r, "f": fs, "m": m,
        "rfm_segment": v.rfm_segment(r, fs, m),
        "clv": round(lifetime.value, 2),
        "clv_inputs": {
            "annual_margin": round(lifetime.annual_margin, 2),
            "annual_retention": round(lifetime.annual_retention, 4),
            "discount_rate": lifetime.discount_rate,
            "basis": lifetime.basis,
        },
        "value_tier": v.value_tier(clv_share),
        "capability": round(capability, 2),
        "willingness": will,
        "quadrant": v.quadrant(capability_share, will),
    }
    figures_out = {
        "recency_days": round(recency, 4) if recency is not None else None,
        "frequency_30": int(_num(f.get("frequency_30"))),
        "frequency_90": int(_num(f.get("frequency_90"))),
        "frequency_365": int(_num(f.get("frequency_365"))),
        "monetary_30": Decimal(f.get("monetary_30") or 0),
        "monetary_90": Decimal(f.get("monetary_90") or 0),
        "monetary_365": Decimal(f.get("monetary_365") or 0),
        "sessions_30": int(sessions_30),
        "sessions_prev_30": int(sessions_prev),
        "engagement_trend": round(engagement_trend, 4),
        "active_days_30": int(_num(f.get("active_days_30"))),
        "salary_credits_90": int(_num(f.get("salary_credits_90"))),
        "days_since_salary": days_since_salary,
    }
    features: dict[str, float] = {
        "transaction_count": float(customer.get("transaction_count") or 0),
        "product_count": float(sum(products.values())),
        "total_balance": float(balance),
        "accounts_ever": float(len(accounts)),
        "accounts_closed": float(sum(1 for a in accounts if a["closed_at"] is not None)),
        "open_complaints": float(feedback["open_complaints"]),
        **{k: float(x) for k, x in figures_out.items()
           if x is not None and k != "recency_days"},
        **{f"channel_share_{c}": s for c, s in channel_mix.items()},
    }
    if nps is not None:
        features["last_nps"] = float(nps)
    if recency is not None:
        features["recency_days"] = round(recency, 4)
    if tenure is not None:
        features["tenure_days"] = round(tenure, 4)

    days_until_birthday = None
    if birth_date is not None:
        days_until_birthday = _days_until_anniversary(birth_date, as_of.date())
    variables: dict[str, Any] = {
        **{k: float(x) if isinstance(x, Decimal) else x for k, x in figures_out.items()},
        **{k: val for k, val in feedback.items() if not k.endswith("_at")},
        **{k: val for k, val in valuation.items() if k != "clv_inputs"},
        "tier": valuation["value_tier"],
        "segment": customer.get("segment"),
        "stage": customer.get("stage"),
        "churn_probability": customer.get("churn_probability"),
        "product_count": sum(products.values()),
        "products": sorted(products),
        "total_balance": float(balance),
        "tenure_days": tenure,
        "channel_mix": channel_mix,
        "digital_share": round(channel_mix["mobile"] + channel_mix["web"], 4),
        "days_until_birthday": days_until_birthday,
        "flags": dict(customer.get("flags") or {}),
    }
    return View(as_of, features, figures_out, feedback, valuation, buckets, channel_mix,
                products, balance, variables)


def _days_until_anniversary(birth: date, today: date) -> int:
    """
    >>> _days_until_anniversary(date(1990, 3, 5), date(2026, 3, 1))
    4
    >>> _days_until_anniversary(date(1992, 2, 29), date(2026, 3, 2))
    364
    """
    for year in (today.year, today.year + 1):
        try:
            next_day = birth.replace(year=year)
        except ValueError:  # 29 February in a common year: celebrated on 1 March
            next_day = date(year, 3, 1)
        if next_day >= today:
            return (next_day - today).days
    return 365
