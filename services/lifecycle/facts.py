"""What lifecycle knows about a customer: facts from its input events, folded per customer.

A fact is the part of an input event the rules can use, at the event's time. Folding is
order-insensitive where it can be (latest snapshot and score by time, first and last times
by min and max, accounts and complaints by id), so the same facts give the same figures in
any arrival order; the walk (domain.py) applies them in event-time order.

>>> from datetime import UTC, datetime
>>> t = datetime(2026, 1, 1, tzinfo=UTC)
>>> f = CustomerFacts()
>>> f.apply(Fact(t, "account_opened", "e1", {"account_id": "A", "product_type": "current"}))
>>> f.apply(Fact(t.replace(day=5), "account_closed", "e2", {"account_id": "A",
...                                                         "product_type": "current"}))
>>> f.open_products(), f.products_ever(), f.first_product_at.day
({}, 1, 1)
"""

from __future__ import annotations

import math
from bisect import bisect_left
from dataclasses import dataclass, field
from functools import lru_cache
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from shared.events import (
    AccountClosed,
    AccountOpened,
    ChurnScored,
    CustomerRegistered,
    EnvelopeBase,
    FeedbackSubmitted,
    ProfileUpdated,
)

KIND_ORDER = {
    "registered": 0,
    "account_opened": 1,
    "account_closed": 2,
    "feedback": 3,
    "snapshot": 4,
    "churn_score": 5,
}
# Snapshot features the rules may read (profile computes them; see services/profile/view.py).
SNAPSHOT_FEATURES = (
    "frequency_30", "frequency_90", "frequency_365", "monetary_30", "monetary_90",
    "monetary_365", "sessions_30", "sessions_prev_30", "engagement_trend", "active_days_30",
    "salary_credits_90", "days_since_salary", "last_nps", "accounts_ever", "accounts_closed",
)  # fmt: skip
BALANCE_DAYS = 90
BALANCE_RECENT_DAYS = 30
BALANCE_MIN_PRIOR_DAYS = 30
# The customer's usual churn probability: the time-weighted average log-odds of their past
# scores (each weighted by the days it stood), forgetting with a time constant of 180 days;
# known once scores have stood for 60 days.
USUAL_SCORE_DAYS = 180.0
USUAL_SCORE_MIN_DAYS = 60.0
_LOGIT_BOUND = 9.0  # probabilities clipped to about [0.0001, 0.9999]


@dataclass(frozen=True)
class Fact:
    at: datetime
    kind: str
    event_id: str
    data: dict[str, Any] = field(compare=False, hash=False, repr=False)

    def sort_key(self) -> tuple[datetime, int, str]:
        return (self.at, KIND_ORDER[self.kind], self.event_id)

    def to_row(self, customer_id: str) -> dict[str, Any]:
        return {"customer_id": customer_id, "occurred_at": self.at, "event_id": self.event_id,
                "kind": self.kind, "data": self.data}


def fact_from_event(event: EnvelopeBase) -> Fact | None:
    """The fact an input event carries, or None for events that tell lifecycle nothing."""
    at, eid = event.occurred_at, str(event.event_id)
    if isinstance(event, CustomerRegistered):
        return Fact(at, "registered", eid, {})
    if isinstance(event, AccountOpened | AccountClosed):
        kind = "account_opened" if isinstance(event, AccountOpened) else "account_closed"
        return Fact(at, kind, eid, {"account_id": event.payload.account_id,
                                    "product_type": event.payload.product_type.value})
    if isinstance(event, FeedbackSubmitted):
        return Fact(at, "feedback", eid, {"kind": event.payload.kind.value,
                                          "complaint_id": event.payload.complaint_id})
    if isinstance(event, ChurnScored):
        return Fact(at, "churn_score", eid, {"probability": event.payload.probability,
                                             "band": event.payload.band.value})
    if isinstance(event, ProfileUpdated):
        p = event.payload
        return Fact(at, "snapshot", eid, {
            "as_of": p.as_of.isoformat(),
            "registered": p.registered,
            "segment": p.segment.value if p.segment else None,
            "value_tier": p.value_tier,
            "tags": list(p.tags),
            "first_activity_at": _iso(p.first_activity_at),
            "last_activity_at": _iso(p.last_activity_at),
            "transaction_count": p.transaction_count,
            "products": dict(p.products),
            "total_balance": float(p.total_balance),
            "features": {k: p.features[k] for k in SNAPSHOT_FEATURES if k in p.features},
        })
    return None


@dataclass
class CustomerFacts:
    """The fold of a customer's facts: what the rules' figures are computed from."""

    registered_at: datetime | None = None
    first_product_at: datetime | None = None
    last_activity_at: datetime | None = None
    accounts: dict[str, dict[str, Any]] = field(default_factory=dict)
    snapshot: dict[str, Any] | None = None
    snapshot_key: tuple[str, str] | None = None
    churn: dict[str, Any] | None = None
    churn_key: tuple[str, str] | None = None
    complaints: dict[str, datetime] = field(default_factory=dict)
    resolved: set[str] = field(default_factory=set)
    balances: dict[str, tuple[str, float]] = field(default_factory=dict)  # day -> (at, balance)
    balance_avg_30: float | None = None
    balance_prior_avg_60: float | None = None
    last_salary_at: datetime | None = None
    # The usual churn level before the latest score: sum of weighted log-odds, sum of weights
    # (days), both forgetting with USUAL_SCORE_DAYS.
    score_logit_sum: float = 0.0
    score_weight_days: float = 0.0
    # Bumped by every fact: what figures computed from the fold may be cached against.
    version: int = field(default=0, compare=False)
    cached: tuple[Any, Any] | None = field(default=None, compare=False, repr=False)

    # -------------------------------------------------------------- folding

    def apply(self, fact: Fact) -> None:
        self.version += 1
        at, d = fact.at, fact.data
        if fact.kind == "registered":
            self.registered_at = _earliest(self.registered_at, at)
        elif fact.kind in ("account_opened", "account_closed"):
            account = self.accounts.setdefault(
                d["account_id"], {"type": d["product_type"], "opened": None, "closed": None}
            )
            account["type"] = d["product_type"]
            self.first_product_at = _earliest(self.first_product_at, at)
            if fact.kind == "account_opened":
                account["opened"] = _earliest(account["opened"], at)
                # Opening an account is the customer's own act (profile counts it too).
                self.last_activity_at = _latest(self.last_activity_at, at)
            else:
                account["closed"] = _latest(account["closed"], at)
        elif fact.kind == "feedback":
            self.last_activity_at = _latest(self.last_activity_at, at)
            complaint = d.get("complaint_id") or fact.event_id
            if d["kind"] == "complaint_opened" and complaint not in self.resolved:
                opened = self.complaints.get(complaint)
                self.complaints[complaint] = at if opened is None else min(opened, at)
            elif d["kind"] == "complaint_resolved":
                self.resolved.add(complaint)
                self.complaints.pop(complaint, None)
        elif fact.kind == "snapshot":
            self._apply_snapshot(fact)
        elif fact.kind == "churn_score":
            key = (at.isoformat(), fact.event_id)
            if self.churn_key is None or key > self.churn_key:
                if self.churn is not None and self.churn_key is not None:
                    self._stood(self.churn["probability"], _parse(self.churn_key[0]), at)
                self.churn, self.churn_key = dict(d), key

    def _stood(self, probability: float, since: datetime | None, until: datetime) -> None:
        """Fold a score that stood from `since` until `until` into the usual level: weight
        the integral of the forgetting curve over its days, after decaying the past."""
        if since is None:
            return
        days = max(0.0, (until - since) / timedelta(days=1))
        decay = math.exp(-days / USUAL_SCORE_DAYS)
        weight = USUAL_SCORE_DAYS * (1.0 - decay)
        self.score_logit_sum = self.score_logit_sum * decay + _logit(probability) * weight
        self.score_weight_days = self.score_weight_days * decay + weight

    def usual_churn_probability(self) -> float | None:
        """The customer's usual churn probability before their latest score: the average of
        their past scores' log-odds, each weighted by the days it stood, forgetting with a time
        constant of 180 days; None until scores have stood for 60 days. A retail customer who
        buys once a season has a high 90-day probability all the time; what is news is a
        probability well above their own usual level.

        >>> t = datetime(2026, 1, 1, tzinfo=UTC)
        >>> f = CustomerFacts()
        >>> for n, p in enumerate([0.8] * 10 + [0.95]):
        ...     f.apply(Fact(t + timedelta(days=10 * n), "churn_score", f"s{n}",
        ...                  {"probability": p, "band": "high"}))
        >>> round(f.usual_churn_probability(), 6), f.churn["probability"]
        (0.8, 0.95)
        """
        if self.score_weight_days < _weight_of(USUAL_SCORE_MIN_DAYS):
            return None
        return 1.0 / (1.0 + math.exp(-self.score_logit_sum / self.score_weight_days))

    def _apply_snapshot(self, fact: Fact) -> None:
        at, d = fact.at, fact.data
        self.last_activity_at = _latest(self.last_activity_at, _parse(d.get("last_activity_at")))
        if d.get("registered"):
            self.registered_at = _earliest(self.registered_at, at)
        features = d.get("features") or {}
        has_product = (d.get("products") or d.get("transaction_count")
                       or features.get("accounts_ever"))
        if has_product:
            self.first_product_at = _earliest(
                self.first_product_at, _parse(d.get("first_activity_at")) or at
            )
        key = (at.isoformat(), fact.event_id)
        if self.snapshot_key is None or key > self.snapshot_key:
            self.snapshot, self.snapshot_key = d, key
        days = features.get("days_since_salary")
        if days is not None:
            # The latest salary any snapshot knew of: profile can emit a later snapshot before
            # it has ingested an earlier salary credit, so the anchor only moves forward.
            as_of = _parse(d.get("as_of")) or at
            salary_day = datetime.combine(as_of.date() - timedelta(days=int(days)), time(), UTC)
            self.last_salary_at = _latest(self.last_salary_at, salary_day)
        day = at.date().isoformat()
        known = self.balances.get(day)
        if known is None or at.isoformat() >= known[0]:
            self.balances[day] = (at.isoformat(), float(d.get("total_balance") or 0.0))
        self._balance_figures(at.date())

    def _balance_figures(self, today: date) -> None:
        """Average end-of-day balance over the last 30 days and the 60 days before, carrying
        the last known balance forward over days without a snapshot.

        The balance is a step function of the day: each known day's balance holds until the
        next known day, so each window's sum is a handful of (value x days) segments, not a
        walk over its 90 days (this runs at every snapshot).

        >>> f = CustomerFacts(balances={"2026-01-01": ("", 100.0), "2026-03-02": ("", 40.0)})
        >>> f._balance_figures(date(2026, 3, 31)); f.balance_avg_30, f.balance_prior_avg_60
        (40.0, 100.0)
        """
        end = today.toordinal() + 1  # windows are [first, recent) and [recent, end)
        first, recent = end - BALANCE_DAYS, end - BALANCE_RECENT_DAYS
        balances = self.balances
        days = sorted(balances)
        before = bisect_left(days, date.fromordinal(first).isoformat())
        if before > 1:  # keep one day before the window to carry its balance forward
            for stale in days[: before - 1]:
                del balances[stale]
            days = days[before - 1:]
        bounds = [*map(_ordinal, days), end]
        prior_sum = recent_sum = 0.0
        prior_days = recent_days = 0
        for i, day in enumerate(days):
            start, stop = max(bounds[i], first), min(bounds[i + 1], end)
            if stop <= start:
                continue
            value = balances[day][1]
            if start < recent:
                covered = min(stop, recent) - start
                prior_sum += value * covered
                prior_days += covered
            if stop > recent:
                covered = stop - max(start, recent)
                recent_sum += value * covered
                recent_days += covered
        self.balance_avg_30 = recent_sum / recent_days if recent_days else None
        self.balance_prior_avg_60 = (
            prior_sum / prior_days if prior_days >= BALANCE_MIN_PRIOR_DAYS else None
        )

    # -------------------------------------------------------------- figures

    def features(self) -> dict[str, Any]:
        return dict((self.snapshot or {}).get("features") or {})

    def open_products(self) -> dict[str, int]:
        """Open accounts per product type. Per type, the newer source wins: the account events
        when one is later than the latest snapshot, else the snapshot (which also knows
        accounts a bank reports only through their transactions)."""
        from_events: dict[str, int] = {}
        changed: dict[str, datetime] = {}
        for account in self.accounts.values():
            kind = account["type"]
            if account["closed"] is None:
                from_events[kind] = from_events.get(kind, 0) + 1
            for moment in (account["opened"], account["closed"]):
                if moment is not None and (kind not in changed or moment > changed[kind]):
                    changed[kind] = moment
        from_snapshot = dict((self.snapshot or {}).get("products") or {})
        snapshot_at = _parse(self.snapshot_key[0]) if self.snapshot_key else None
        out: dict[str, int] = {}
        for kind in set(from_events) | set(from_snapshot) | set(changed):
            newer_event = kind in changed and (snapshot_at is None or changed[kind] > snapshot_at)
            count = from_events.get(kind, 0) if newer_event else from_snapshot.get(kind, 0)
            if count > 0:
                out[kind] = count
        return dict(sorted(out.items()))

    def usual_gap_days(self) -> float | None:
        """The customer's own pace: the average days between their own transactions over the
        last year (or since their first activity, counted as at least 30 days), as of the
        latest snapshot; None without a transaction in that year. Silence is judged against
        it: three weeks without a payment is news from a daily card user, not from a
        customer who pays one bill a month.

        >>> f = CustomerFacts(snapshot={"as_of": "2026-01-01T00:00:00+00:00",
        ...     "first_activity_at": "2025-07-05T00:00:00+00:00",
        ...     "last_activity_at": "2025-12-31T00:00:00+00:00",
        ...     "features": {"frequency_365": 18}})
        >>> f.usual_gap_days()
        9.944444
        """
        snapshot = self.snapshot or {}
        count = (snapshot.get("features") or {}).get("frequency_365")
        as_of = _parse(snapshot.get("as_of"))
        if not count or count < 1 or as_of is None:
            return None
        # The span the customer was active in: a silence does not stretch their own pace.
        last = min(as_of, _parse(snapshot.get("last_activity_at")) or as_of)
        first = _parse(snapshot.get("first_activity_at")) or last
        observed = min(365.0, max(30.0, (last - first) / timedelta(days=1)))
        return round(observed / float(count), 6)

    def products_ever(self) -> int:
        return max(len(self.accounts), int(self.features().get("accounts_ever") or 0))

    @property
    def oldest_open_complaint_at(self) -> datetime | None:
        return min(self.complaints.values(), default=None)

    # -------------------------------------------------------------- storage

    def to_json(self) -> dict[str, Any]:
        return {
            "registered_at": _iso(self.registered_at),
            "first_product_at": _iso(self.first_product_at),
            "last_activity_at": _iso(self.last_activity_at),
            "accounts": {
                k: {"type": a["type"], "opened": _iso(a["opened"]), "closed": _iso(a["closed"])}
                for k, a in self.accounts.items()
            },
            "snapshot": self.snapshot,
            "snapshot_key": list(self.snapshot_key) if self.snapshot_key else None,
            "churn": self.churn,
            "churn_key": list(self.churn_key) if self.churn_key else None,
            "complaints": {k: v.isoformat() for k, v in self.complaints.items()},
            "resolved": sorted(self.resolved),
            "balances": {k: list(v) for k, v in self.balances.items()},
            "balance_avg_30": self.balance_avg_30,
            "balance_prior_avg_60": self.balance_prior_avg_60,
            "last_salary_at": _iso(self.last_salary_at),
            "score_logit_sum": self.score_logit_sum,
            "score_weight_days": self.score_weight_days,
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> CustomerFacts:
        return cls(
            registered_at=_parse(doc.get("registered_at")),
            first_product_at=_parse(doc.get("first_product_at")),
            last_activity_at=_parse(doc.get("last_activity_at")),
            accounts={
                k: {"type": a["type"], "opened": _parse(a["opened"]),
                    "closed": _parse(a["closed"])}
                for k, a in (doc.get("accounts") or {}).items()
            },
            snapshot=doc.get("snapshot"),
            snapshot_key=_key(doc.get("snapshot_key")),
            churn=doc.get("churn"),
            churn_key=_key(doc.get("churn_key")),
            complaints={k: datetime.fromisoformat(v)
                        for k, v in (doc.get("complaints") or {}).items()},
            resolved=set(doc.get("resolved") or ()),
            balances={k: (v[0], float(v[1])) for k, v in (doc.get("balances") or {}).items()},
            balance_avg_30=doc.get("balance_avg_30"),
            balance_prior_avg_60=doc.get("balance_prior_avg_60"),
            last_salary_at=_parse(doc.get("last_salary_at")),
            score_logit_sum=float(doc.get("score_logit_sum") or 0.0),
            score_weight_days=float(doc.get("score_weight_days") or 0.0),
        )


@lru_cache(maxsize=4096)
def _ordinal(day: str) -> int:
    """The day number of an ISO date (cached: a customer's balance days recur at every
    snapshot for three months)."""
    return date.fromisoformat(day).toordinal()


def _logit(probability: float) -> float:
    p = min(max(float(probability), 0.0), 1.0)
    if p <= 0.0 or p >= 1.0:
        return _LOGIT_BOUND if p >= 1.0 else -_LOGIT_BOUND
    return min(_LOGIT_BOUND, max(-_LOGIT_BOUND, math.log(p / (1.0 - p))))


def _weight_of(days: float) -> float:
    """The weight scores carry after standing `days` in all, with nothing forgotten yet to
    speak of (the weight of one score standing that long)."""
    return USUAL_SCORE_DAYS * (1.0 - math.exp(-days / USUAL_SCORE_DAYS))


def _key(value: list[str] | None) -> tuple[str, str] | None:
    return (value[0], value[1]) if value else None


def _earliest(a: datetime | None, b: datetime | None) -> datetime | None:
    return b if a is None else a if b is None else min(a, b)


def _latest(a: datetime | None, b: datetime | None) -> datetime | None:
    return b if a is None else a if b is None else max(a, b)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _parse(value: str | None) -> datetime | None:
    if value is None:
        return None
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
