"""Scoring's pure logic: readable facts at scoring time, model inputs, the prior, bands, reasons.

A customer is described by *facts*: readable quantities a relationship manager recognises
("no activity for 45 days", "logins -70% vs the previous month"), measured at the scoring
time from the latest profile snapshot. Time-dependent facts move with the clock: recency and
tenure grow, windowed counts decay as their events fall out of the window. The model never
sees stage or score.

Models read *inputs* derived from the facts (`model_inputs`): logs, ratios and the
customer's silence measured against their own pace, which is what makes sparse purchase
histories comparable with busy current accounts. Reasons are counterfactual on facts, so
they stay readable and work for any model.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from shared.events import ChurnBand, ProfileSnapshot

Facts = dict[str, float]
Features = Facts  # the name earlier code used for what the model is given

SECONDS_PER_DAY = 86_400.0
MISSING = -1.0  # a fact the customer has no value for (no salary ever, no NPS given)
# A customer with no prior information is assumed to act about once per horizon: the
# smoothing of every rate below (one pseudo-event over `horizon` pseudo-days).
PRIOR_EVENTS = 1.0


def _days(earlier: datetime | None, later: datetime) -> float | None:
    if earlier is None:
        return None
    return max((later - earlier).total_seconds(), 0.0) / SECONDS_PER_DAY


def recent_count(
    counts: tuple[float, ...], edges: tuple[float, ...], quiet_days: float, lookback: float
) -> float:
    """Events in the last `lookback` days before a snapshot, from its cumulative window counts.

    `counts[i]` events happened in the `edges[i]` days before the snapshot and none in the
    last `quiet_days` (the customer was silent since). Within a window segment events are
    taken as evenly spread, so a count decays smoothly as time passes without new events.

    >>> recent_count((3, 6, 12), (30, 90, 365), 0.0, 30)    # the snapshot's own window
    3.0
    >>> recent_count((3, 6, 12), (30, 90, 365), 0.0, 15)    # half of the last 30 days
    1.5
    >>> recent_count((1, 1, 1), (30, 90, 365), 25.0, 20)    # the one event was 25+ days ago
    0.0
    """
    if lookback <= 0:
        return 0.0
    total = 0.0
    low = 0.0
    before = 0.0
    for high, count in zip(edges, counts, strict=True):
        n = max(count - before, 0.0)
        before = max(count, before)
        if n > 0:
            start = min(max(low, quiet_days), high)
            if start >= high:  # day buckets blur the edges: fall back to the whole segment
                start = low
            total += n * max(0.0, min(lookback, high) - start) / (high - start)
        low = high
    return total


def _epoch(at: datetime) -> float:
    return at.timestamp()


@dataclass(frozen=True)
class ActivityView:
    """A customer's own activity as known at one moment (only what happened by then)."""

    last: float | None  # epoch seconds
    previous: float | None  # the last activity of the active day before the last one
    first: float | None
    activities: int  # days with customer-initiated activity on record
    transactions: tuple[int, int, int]  # days with a customer transaction in 30, 90, 365
    spend_365: float
    others: tuple[int, int]  # app events and feedback in the last 30 days, and the 30 before
    active_days_30: int


@dataclass
class Memory:
    """What scoring keeps per customer between events.

    Activity is counted in **active days**, as BG/NBD counts purchase occasions: a purchase
    exported as 30 invoice lines, or three card payments in one afternoon, is one day of
    activity, so a customer's pace does not depend on how their bank or shop writes rows.

    Balances: `balance_anchor` is the balance seen about a month before `balance_recent`,
    so "balances -40% vs a month ago" spans 30 to 60 days. Activity: one entry per UTC day
    with customer-initiated events (first and last time, transactions, spend, other events)
    for the last `KEEP_DAYS` days, older days folded into totals. Facts can then be measured
    at any time the log covers with only what was known then, however far the customer's
    later events have already been counted. Times are epoch seconds.

    >>> from datetime import UTC, datetime, timedelta
    >>> t = datetime(2026, 1, 1, 12, tzinfo=UTC)
    >>> m = Memory()
    >>> m.observe_balance(100.0, t); m.observe_balance(80.0, t + timedelta(days=31))
    >>> m.balance_anchor, m.balance_recent
    (100.0, 80.0)
    >>> for day in (0, 10, 40):
    ...     m.observe_activity(t + timedelta(days=day), transaction=True, amount=20.0)
    >>> v = m.view(t + timedelta(days=20))
    >>> v.activities, v.transactions, round((v.last - v.previous) / 86400)
    (2, (2, 2, 2), 10)
    >>> for line in range(5):  # one invoice of five lines on day 10: still one day
    ...     m.observe_activity(t + timedelta(days=10, minutes=line), transaction=True)
    >>> v = m.view(t + timedelta(days=20))
    >>> v.activities, v.transactions, round((v.last - v.previous) / 86400)
    (2, (2, 2, 2), 10)
    >>> m.first_activity_after(t + timedelta(days=20)) == (t + timedelta(days=40)).timestamp()
    True
    """

    balance_anchor: float | None = None
    balance_anchor_at: float | None = None
    balance_recent: float | None = None
    balance_recent_at: float | None = None
    first_seen_at: float | None = None
    days: list[int] = field(default_factory=list)  # ordinal UTC days, ascending
    first: list[float] = field(default_factory=list)
    last: list[float] = field(default_factory=list)
    transactions: list[int] = field(default_factory=list)
    spend: list[float] = field(default_factory=list)
    others: list[int] = field(default_factory=list)
    # Days that fell out of the log: their activities, their days (events older than the log
    # count one day each), and the last two activity times.
    folded_activities: int = 0
    folded_days: int = 0
    folded_last: float | None = None
    folded_previous: float | None = None
    first_activity: float | None = None

    ROLL_DAYS = 30.0
    KEEP_DAYS = 400

    def seen(self, at: datetime) -> None:
        t = _epoch(at)
        if self.first_seen_at is None or t < self.first_seen_at:
            self.first_seen_at = t

    def observe_balance(self, balance: float, at: datetime) -> None:
        """Remember today's balance; anchors roll monthly."""
        t = _epoch(at)
        self.seen(at)
        if self.balance_recent_at is None:
            self.balance_anchor, self.balance_anchor_at = balance, t
            self.balance_recent, self.balance_recent_at = balance, t
        elif (t - self.balance_recent_at) / SECONDS_PER_DAY >= self.ROLL_DAYS:
            self.balance_anchor, self.balance_anchor_at = (self.balance_recent,
                                                           self.balance_recent_at)
            self.balance_recent, self.balance_recent_at = balance, t

    @property
    def has_activity(self) -> bool:
        return self.first_activity is not None

    def observe_activity(self, at: datetime, *, transaction: bool, amount: float = 0.0) -> None:
        """One customer-initiated event, counted on its own day (late ones too)."""
        t = _epoch(at)
        self.seen(at)
        if self.first_activity is None or t < self.first_activity:
            self.first_activity = t
        day = int(t // SECONDS_PER_DAY)
        i = bisect.bisect_left(self.days, day)
        if i == len(self.days) or self.days[i] != day:
            if self.days and day <= self.days[-1] - self.KEEP_DAYS:
                self.folded_activities += 1  # older than the log: counted, not placed
                self.folded_days += 1
                return
            for column, value in ((self.days, day), (self.first, t), (self.last, t),
                                  (self.transactions, 0), (self.spend, 0.0),
                                  (self.others, 0)):
                column.insert(i, value)  # type: ignore[attr-defined]
        else:
            self.first[i] = min(self.first[i], t)
            self.last[i] = max(self.last[i], t)
        if transaction:
            self.transactions[i] += 1
            self.spend[i] += amount
        else:
            self.others[i] += 1
        self._fold()

    def _fold(self) -> None:
        while self.days and self.days[0] <= self.days[-1] - self.KEEP_DAYS:
            self.folded_activities += self.transactions[0] + self.others[0]
            self.folded_days += 1
            self.folded_previous, self.folded_last = self.folded_last, self.last[0]
            for column in (self.days, self.first, self.last, self.transactions, self.spend,
                           self.others):
                column.pop(0)

    def view(self, at: datetime) -> ActivityView:
        """The activity known at `at`: only events at or before it."""
        t = _epoch(at)
        day = int(t // SECONDS_PER_DAY)
        end = bisect.bisect_right(self.days, day)
        activities = self.folded_days
        last = self.folded_last
        previous = self.folded_previous
        windows = [0, 0, 0]
        others = [0, 0]
        active_days = 0
        spend = 0.0
        for i in range(end):
            if self.days[i] == day and self.first[i] > t:
                break  # that day's events all come later
            activities += 1
            age = day - self.days[i]
            for k, width in enumerate((30, 90, 365)):
                if age < width and self.transactions[i]:
                    windows[k] += 1
            if age < 365:
                spend += self.spend[i]
            if age < 30:
                others[0] += self.others[i]
                active_days += 1
            elif age < 60:
                others[1] += self.others[i]
            at_most = self.last[i] if self.last[i] <= t else self.first[i]
            if last is not None:
                previous = last  # the previous active day's last activity
            last = at_most
        return ActivityView(last, previous, self.first_activity if last is not None else None,
                            activities, (windows[0], windows[1], windows[2]), spend,
                            (others[0], others[1]), active_days)

    def first_activity_after(self, at: datetime) -> float | None:
        """When the customer next acted after `at`, as far as the log knows."""
        t = _epoch(at)
        day = int(t // SECONDS_PER_DAY)
        for i in range(bisect.bisect_left(self.days, day), len(self.days)):
            if self.last[i] > t:
                return self.first[i] if self.first[i] > t else self.last[i]
        return None

    def to_json(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in _MEMORY_FIELDS}

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> Memory:
        if not data:
            return cls()
        memory = cls(**{k: data[k] for k in _MEMORY_FIELDS if k in data})
        if "folded_days" not in data:  # kept before days were counted: one day per activity
            memory.folded_days = memory.folded_activities
        return memory


_MEMORY_FIELDS = (
    "balance_anchor", "balance_anchor_at", "balance_recent", "balance_recent_at",
    "first_seen_at", "days", "first", "last", "transactions", "spend", "others",
    "folded_activities", "folded_days", "folded_last", "folded_previous", "first_activity",
)


# ------------------------------------------------------------------ facts


def _counts(f: Mapping[str, float], names: tuple[str, ...]) -> tuple[float, ...]:
    return tuple(float(f.get(n, 0.0)) for n in names)


_TXN_EDGES = (30.0, 90.0, 365.0)


def facts_at(
    snapshot: ProfileSnapshot, as_of: datetime, memory: Memory | None = None
) -> Facts:
    """The customer's facts measured at `as_of` (never stage or score).

    >>> from datetime import UTC, datetime
    >>> s = ProfileSnapshot(as_of=datetime(2026, 3, 1, tzinfo=UTC),
    ...     last_activity_at=datetime(2026, 2, 1, tzinfo=UTC), transaction_count=3,
    ...     features={"frequency_30": 1, "frequency_90": 3, "frequency_365": 3})
    >>> f = facts_at(s, datetime(2026, 3, 11, tzinfo=UTC))
    >>> f["recency_days"], f["purchases_365"]
    (38.0, 3.0)
    """
    f = snapshot.features
    elapsed = _days(snapshot.as_of, as_of) or 0.0
    quiet_then = _days(snapshot.last_activity_at, snapshot.as_of)
    quiet_then = 0.0 if quiet_then is None else quiet_then
    # Signed: a snapshot newer than `as_of` (events are judged in order, snapshots may lead)
    # does not add its lead to the tenure.
    tenure = float(f.get("tenure_days", 0.0)) + (
        as_of - snapshot.as_of).total_seconds() / SECONDS_PER_DAY
    gap_stretch = MISSING
    view = memory.view(as_of) if memory is not None and memory.has_activity else None
    if view is not None and view.last is not None:
        # Activity as scoring saw it, event by event, up to `as_of` only.
        at = as_of.timestamp()
        recency = max(at - view.last, 0.0) / SECONDS_PER_DAY
        first = min(view.first or at, memory.first_seen_at or at)  # type: ignore[union-attr]
        tenure = max(tenure, (at - first) / SECONDS_PER_DAY)
        n30, n90, n365 = (float(n) for n in view.transactions)
        spend365 = view.spend_365
        lifetime = float(view.activities)
        if view.previous is not None and view.first is not None and view.activities > 1:
            usual = (view.last - view.first) / (view.activities - 1)
            gap_stretch = ((view.last - view.previous + SECONDS_PER_DAY)
                           / (usual + SECONDS_PER_DAY))
    else:
        if snapshot.last_activity_at is not None:
            recency = _days(snapshot.last_activity_at, as_of) or 0.0
        else:
            first_seen = memory.first_seen_at if memory is not None else None
            recency = (max(as_of.timestamp() - first_seen, 0.0) / SECONDS_PER_DAY
                       if first_seen is not None else max(tenure, 0.0))

        def decayed(names: tuple[str, ...], window: float) -> float:
            return recent_count(_counts(f, names), _TXN_EDGES, quiet_then, window - elapsed)

        counts = ("frequency_30", "frequency_90", "frequency_365")
        n30, n90, n365 = (decayed(counts, w) for w in (30.0, 90.0, 365.0))
        spend365 = decayed(("monetary_30", "monetary_90", "monetary_365"), 365.0)
        lifetime = float(max(snapshot.transaction_count, 0))
    tenure = max(tenure, recency)
    year = min(max(tenure, 1.0), 365.0)
    if tenure >= 90.0 and n365 > 0:
        trend = (n90 / min(90.0, tenure)) / (n365 / year) - 1.0
    else:
        trend = 0.0
    if view is not None and view.last is not None:
        # App events and feedback from the log (each event counts, a session is several).
        sessions_30, sessions_prev = float(view.others[0]), float(view.others[1])
        active_days = float(view.active_days_30)
    else:
        sessions_30, sessions_prev, active_days = _snapshot_engagement(f, quiet_then, elapsed)
    if sessions_prev > 0:
        login_trend = (sessions_30 - sessions_prev) / sessions_prev
    else:
        login_trend = 0.0
    if "days_since_salary" in f:
        days_since_salary = float(f["days_since_salary"]) + elapsed
    else:
        days_since_salary = MISSING
    balance = float(snapshot.total_balance)
    change = 0.0
    if memory is not None and memory.balance_anchor is not None:
        anchor = memory.balance_anchor
        change = (balance - anchor) / (abs(anchor) + 100.0)
    return {
        "recency_days": round(recency, 4),
        "purchases_30": round(n30, 4),
        "purchases_90": round(n90, 4),
        "purchases_365": round(n365, 4),
        "purchase_trend": round(min(max(trend, -1.0), 3.0), 4),
        "transactions_lifetime": lifetime,
        "tenure_days": round(tenure, 4),
        "average_spend": round(spend365 / n365, 2) if n365 > 0 else 0.0,
        "gap_stretch": round(gap_stretch, 4),
        "product_count": float(sum(snapshot.products.values())),
        "accounts_closed": float(f.get("accounts_closed", 0.0)),
        "total_balance": round(balance, 2),
        "balance_change": round(min(max(change, -1.0), 3.0), 4),
        "sessions_30": round(sessions_30, 4),
        "login_trend": round(min(max(login_trend, -1.0), 3.0), 4),
        "active_days_30": round(active_days, 4),
        "days_since_salary": round(days_since_salary, 4),
        "salary_credits_90": round(
            recent_count((float(f.get("salary_credits_90", 0.0)),), (90.0,), 0.0,
                         90.0 - elapsed), 4),
        "open_complaints": float(f.get("open_complaints", 0.0)),
        "last_nps": float(f.get("last_nps", MISSING)),
        "digital_share": round(float(f.get("channel_share_mobile", 0.0))
                               + float(f.get("channel_share_web", 0.0)), 4),
    }


features_at = facts_at


def _snapshot_engagement(
    f: Mapping[str, float], quiet_then: float, elapsed: float
) -> tuple[float, float, float]:
    """App sessions in the last 30 days, the 30 before, and active days, from a snapshot's
    windows as they stand `elapsed` days later (nothing happened since)."""
    recent = float(f.get("sessions_30", 0.0))
    both = recent + float(f.get("sessions_prev_30", 0.0))
    sixty = recent_count((recent, both), (30.0, 60.0), quiet_then, 60.0 - elapsed)
    thirty = recent_count((recent, both), (30.0, 60.0), quiet_then, 30.0 - elapsed)
    active = recent_count((float(f.get("active_days_30", 0.0)),), (30.0,), quiet_then,
                          30.0 - elapsed)
    return thirty, sixty - thirty, active


def _years(v: float) -> str:
    return f"customer for {v / 365.25:.1f} years" if v >= 365 else f"customer for {v:.0f} days"


@dataclass(frozen=True)
class Fact:
    name: str
    reference: float  # the value of a typical engaged customer
    text: Callable[[float], str]
    description: str


FACTS: tuple[Fact, ...] = (
    Fact("recency_days", 7.0, lambda v: f"no customer-initiated activity for {v:.0f} days",
         "days since the last customer-initiated activity"),
    Fact("purchases_30", 4.0, lambda v: f"transacted on {v:.0f} of the last 30 days",
         "days with a customer-initiated transaction in the last 30"),
    Fact("purchases_90", 12.0, lambda v: f"transacted on {v:.0f} of the last 90 days",
         "days with a customer-initiated transaction in the last 90"),
    Fact("purchases_365", 50.0, lambda v: f"transacted on {v:.0f} days in the last year",
         "days with a customer-initiated transaction in the last 365"),
    Fact("purchase_trend", 0.0, lambda v: f"transactions {v:+.0%} vs their yearly pace",
         "pace of the last 90 days against the last year's (or since joining)"),
    Fact("gap_stretch", 1.0,
         lambda v: f"last gap between activities {v:.1f}x their usual",
         "the last gap between two activities against the customer's average gap"),
    Fact("transactions_lifetime", 100.0, lambda v: f"active on {v:.0f} days on record",
         "days with customer-initiated activity on record"),
    Fact("tenure_days", 3 * 365.25, _years, "days since registration or first activity"),
    Fact("average_spend", 50.0, lambda v: f"average spend per day with purchases {v:,.0f}",
         "the last year's customer spend per day with a customer transaction"),
    Fact("product_count", 2.0, lambda v: f"holds {v:.0f} open product(s)", "open accounts"),
    Fact("accounts_closed", 0.0, lambda v: f"{v:.0f} account(s) closed", "accounts closed"),
    Fact("total_balance", 5_000.0, lambda v: f"total balance {v:,.0f}",
         "sum of open accounts' balances"),
    Fact("balance_change", 0.0, lambda v: f"balances {v:+.0%} vs a month ago",
         "balance change against one to two months ago"),
    Fact("sessions_30", 16.0, lambda v: f"{v:.0f} app events in the last 30 days",
         "app events and feedback in the last 30 days"),
    Fact("login_trend", 0.0, lambda v: f"app use {v:+.0%} vs the previous month",
         "app events of the last 30 days against the 30 before"),
    Fact("active_days_30", 10.0, lambda v: f"active on {v:.0f} of the last 30 days",
         "days with customer-initiated activity in the last 30"),
    Fact("days_since_salary", 20.0, lambda v: f"no salary credit for {v:.0f} days",
         "days since the last salary credit (salaried customers only)"),
    Fact("salary_credits_90", 3.0, lambda v: f"{v:.0f} salary credits in the last 90 days",
         "salary credits in the last 90 days"),
    Fact("open_complaints", 0.0, lambda v: f"{v:.0f} open complaint(s)", "open complaints"),
    Fact("last_nps", 9.0, lambda v: f"last NPS score {v:.0f}", "last NPS score (0-10)"),
    Fact("digital_share", 0.5, lambda v: f"{v:.0%} of activity through digital channels",
         "share of mobile and web in the channel mix"),
)
FACT_BY_NAME = {f.name: f for f in FACTS}
REFERENCE: Facts = {f.name: f.reference for f in FACTS}
REASON_TEXT: dict[str, Callable[[float], str]] = {f.name: f.text for f in FACTS}
OPTIONAL_FACTS = frozenset({"days_since_salary", "last_nps", "gap_stretch"})


# ------------------------------------------------------------------ model inputs


def _rate(facts: Mapping[str, float], horizon_days: float) -> tuple[float, float, float, float]:
    """(rate per day, recency, tenure, lifetime events): the customer's own pace of activity,
    smoothed towards one event per horizon so a single purchase does not make a habit."""
    recency = max(facts.get("recency_days", 0.0), 0.0)
    tenure = max(facts.get("tenure_days", 0.0), recency)
    in_year = max(facts.get("purchases_365", 0.0), 0.0)
    window = min(tenure, 365.0)
    # Purchases in the window after the first one (the first one only says they joined).
    repeats = max(in_year - (1.0 if tenure <= 365.0 else 0.0), 0.0)
    rate = (repeats + PRIOR_EVENTS) / (window + horizon_days)
    lifetime = max(facts.get("transactions_lifetime", 0.0), in_year, 1.0)
    return rate, recency, tenure, lifetime


INPUTS: dict[str, str] = {
    "recency_log": "log(1 + recency days)",
    "recency_horizons": "recency in horizons, capped at 3",
    "silence": "expected activities missed in the silence: recency x own pace (capped at 20)",
    "silence_log": "log(1 + recency x own pace)",
    "pace_log": "log of the activities expected in one horizon at the customer's own pace",
    "quiet_chance": "chance of a silent horizon at the customer's own pace, exp(-pace x H)",
    "silence_vs_lifetime": "(lifetime events) x log((H + tenure) / (H + tenure - recency))",
    "purchases_30_log": "log(1 + transactions in 30 days)",
    "purchases_90_log": "log(1 + transactions in 90 days)",
    "purchases_365_log": "log(1 + transactions in 365 days)",
    "lifetime_log": "log(1 + transactions on record)",
    "tenure_log": "log(1 + tenure days)",
    "is_new": "1 if tenure is shorter than the horizon",
    "purchase_trend": "90-day pace vs yearly pace - 1",
    "gap_stretch_log": "log of the last gap between activities over the usual gap",
    "average_spend_log": "log(1 + average transaction)",
    "balance_log": "signed log(1 + |total balance|)",
    "balance_change": "balance change vs a month ago",
    "product_count": "open products",
    "accounts_closed": "accounts closed",
    "sessions_30_log": "log(1 + app sessions in 30 days)",
    "login_trend": "sessions vs the previous 30 days - 1",
    "active_days_share": "active days in the last 30, as a share",
    "has_salary": "1 if a salary was ever credited",
    "salary_gap": "months since the last salary credit (0 without salary), capped at 4",
    "salary_credits_90": "salary credits in 90 days",
    "open_complaints": "open complaints, capped at 3",
    "nps_detractor": "1 if the last NPS was 0-6",
    "nps_promoter": "1 if the last NPS was 9-10",
    "digital_share": "share of mobile and web",
}


def model_inputs(facts: Mapping[str, float], horizon_days: float = 90.0) -> dict[str, float]:
    """What the models learn from: the facts transformed so a linear model can use them.

    >>> x = model_inputs(REFERENCE)
    >>> sorted(x) == sorted(INPUTS)
    True
    """
    x = pace_inputs(facts, horizon_days)
    nps = facts.get("last_nps", MISSING)
    salary_days = facts.get("days_since_salary", MISSING)
    balance = facts.get("total_balance", 0.0)
    x.update({
        "purchases_30_log": math.log1p(max(facts.get("purchases_30", 0.0), 0.0)),
        "purchases_90_log": math.log1p(max(facts.get("purchases_90", 0.0), 0.0)),
        "purchase_trend": facts.get("purchase_trend", 0.0),
        "gap_stretch_log": (math.log(stretch) if (stretch := facts.get("gap_stretch", MISSING)) > 0
                            else 0.0),
        "average_spend_log": math.log1p(max(facts.get("average_spend", 0.0), 0.0)),
        "balance_log": math.copysign(math.log1p(abs(balance)), balance),
        "balance_change": facts.get("balance_change", 0.0),
        "product_count": facts.get("product_count", 0.0),
        "accounts_closed": facts.get("accounts_closed", 0.0),
        "sessions_30_log": math.log1p(max(facts.get("sessions_30", 0.0), 0.0)),
        "login_trend": facts.get("login_trend", 0.0),
        "active_days_share": min(max(facts.get("active_days_30", 0.0), 0.0) / 30.0, 1.0),
        "has_salary": 0.0 if salary_days < 0 else 1.0,
        "salary_gap": 0.0 if salary_days < 0 else min(salary_days / 30.0, 4.0),
        "salary_credits_90": facts.get("salary_credits_90", 0.0),
        "open_complaints": min(facts.get("open_complaints", 0.0), 3.0),
        "nps_detractor": 1.0 if 0 <= nps <= 6 else 0.0,
        "nps_promoter": 1.0 if nps >= 9 else 0.0,
        "digital_share": facts.get("digital_share", 0.0),
    })
    return x


# The facts that set the customer's pace (`_rate`); `pace_inputs` are the inputs they move.
PACE_FACTS = ("recency_days", "tenure_days", "purchases_365", "transactions_lifetime")


def pace_inputs(facts: Mapping[str, float], horizon_days: float = 90.0) -> dict[str, float]:
    """The model inputs that depend on the customer's pace (`PACE_FACTS`), as
    `model_inputs` gives them: what a counterfactual on a pace fact has to recompute."""
    h = float(horizon_days)
    rate, recency, tenure, lifetime = _rate(facts, h)
    silence = rate * recency
    span = h + tenure
    seen_for = max(span - recency, h)
    return {
        "recency_log": math.log1p(recency),
        "recency_horizons": min(recency / h, 3.0),
        "silence": min(silence, 20.0),
        "silence_log": math.log1p(silence),
        "pace_log": math.log(rate * h),
        "quiet_chance": math.exp(-rate * h),
        "silence_vs_lifetime": min(lifetime * math.log(span / seen_for), 50.0),
        "purchases_365_log": math.log1p(max(facts.get("purchases_365", 0.0), 0.0)),
        "lifetime_log": math.log1p(lifetime),
        "tenure_log": math.log1p(tenure),
        "is_new": 1.0 if tenure < h else 0.0,
    }


# ------------------------------------------------------------------ the prior


# Before any label is learnt, a customer is taken to stay with 90% odds right after acting.
PRIOR_STAY_ODDS = 9.0


def recency_prior(facts: Mapping[str, float], horizon_days: int = 90) -> float:
    """The cold-start prior: silence measured against the customer's own pace.

    A customer acting at rate `pace` a day (their transactions over the last year, smoothed
    towards one per horizon) who has been silent for `recency` days is still with the bank
    with odds `9 x exp(-pace x recency)` (each expected but missing activity is evidence they
    left; closed accounts halve the odds each); if still with the bank they churn only by
    a silent horizon, `exp(-pace x H)`. So a weekly customer silent for a month scores high and
    an occasional one silent for a month does not.

    >>> quiet = dict(REFERENCE, recency_days=60.0)
    >>> recency_prior(REFERENCE) < 0.25 < recency_prior(quiet)
    True
    """
    rate, recency, _, _ = _rate(facts, float(horizon_days))
    log_odds_stay = math.log(PRIOR_STAY_ODDS) - min(rate * recency, 50.0)
    log_odds_stay -= math.log(2.0) * max(facts.get("accounts_closed", 0.0), 0.0)
    if facts.get("product_count", 1.0) == 0.0 and facts.get("accounts_closed", 0.0) > 0:
        log_odds_stay -= 4.0  # every account closed
    stays = 1.0 / (1.0 + math.exp(-log_odds_stay))
    return 1.0 - stays * (1.0 - math.exp(-rate * horizon_days))


# ------------------------------------------------------------------ bands and reasons


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


# Facts whose model inputs depend on that fact alone (`model_inputs`): setting one back to
# the reference moves only these inputs. The others (recency, tenure, purchases in the year,
# activities on record: the customer's pace) move many inputs and are recomputed in full, as
# is any fact not listed here. tests/unit/test_scoring_reasons.py checks this table against
# `inputs_of` on many customers, so a change to the inputs that breaks it fails there.
LOCAL_INPUTS: dict[str, tuple[str, ...]] = {
    "purchases_30": ("purchases_30_log",),
    "purchases_90": ("purchases_90_log",),
    "purchase_trend": ("purchase_trend",),
    "gap_stretch": ("gap_stretch_log",),
    "average_spend": ("average_spend_log",),
    "total_balance": ("balance_log",),
    "balance_change": ("balance_change",),
    "product_count": ("product_count",),
    "accounts_closed": ("accounts_closed",),
    "sessions_30": ("sessions_30_log",),
    "login_trend": ("login_trend",),
    "active_days_30": ("active_days_share",),
    "days_since_salary": ("has_salary", "salary_gap"),
    "salary_credits_90": ("salary_credits_90",),
    "open_complaints": ("open_complaints",),
    "last_nps": ("nps_detractor", "nps_promoter"),
    "digital_share": ("digital_share",),
}


def counterfactual_facts(facts: Facts) -> list[str]:
    """The facts a reason can be about: known, not at the reference value already, and not
    an optional fact the customer has no value for (never salaried, no NPS given)."""
    out = []
    for name, value in facts.items():
        spec = FACT_BY_NAME.get(name)
        if spec is None or value == spec.reference:
            continue
        if name in OPTIONAL_FACTS and value < 0:
            continue
        out.append(name)
    return out


# (facts, the names of `counterfactual_facts`) -> (probability of the facts, probability with
# each named fact set back to its reference value, in the same order).
Counterfactuals = Callable[[Facts, list[str]], tuple[float, list[float]]]


def counterfactuals_with(predict: Callable[[Facts], float]) -> Counterfactuals:
    """The generic way: one prediction per counterfactual, on a copy of the facts."""

    def run(facts: Facts, names: list[str]) -> tuple[float, list[float]]:
        base = predict(facts)
        out = []
        for name in names:
            counterfactual = dict(facts)
            counterfactual[name] = FACT_BY_NAME[name].reference
            out.append(predict(counterfactual))
        return base, out

    return run


def reasons_for(
    predict: Callable[[Facts], float], facts: Facts, top: int = 3,
    counterfactuals: Counterfactuals | None = None,
) -> list[Reason]:
    """Model-agnostic reasons: how much the probability falls when one fact is set back to
    the reference customer's value (everything derived from it moves with it). Positive
    contributions raise risk; the largest first. Facts the customer has no value for
    (never salaried, no NPS given) are not reasons.

    `counterfactuals`, when given, must return exactly what `predict` returns for the facts
    and for each counterfactual (a model's faster way to the same numbers, see
    `ChurnModel.counterfactuals`); the reasons are then the same.
    """
    names = counterfactual_facts(facts)
    base, probabilities = (counterfactuals or counterfactuals_with(predict))(facts, names)
    return reasons_from(facts, names, base, probabilities, top)


def reasons_from(
    facts: Facts, names: list[str], base: float, probabilities: list[float], top: int
) -> list[Reason]:
    """The reasons, given the probability of the facts and of each counterfactual (only
    the top ones are put in words)."""
    found: list[tuple[float, str]] = []
    for name, probability in zip(names, probabilities, strict=True):
        delta = base - probability
        if delta > 1e-6:
            found.append((-round(delta, 4), name))
    found.sort()
    return [Reason(name, FACT_BY_NAME[name].text(facts[name]), -negative)
            for negative, name in found[:top]]


# ------------------------------------------------------------------ time-driven re-scoring


def rescore_after(recency_days: float, min_days: float, max_days: float) -> timedelta:
    """How long until a silent customer is scored again: weekly while recent, then less
    often as silence grows (a quarter of the silence), never rarer than `max_days`.

    >>> rescore_after(3, 7, 28).days, rescore_after(60, 7, 28).days, rescore_after(400, 7, 28).days
    (7, 15, 28)
    """
    return timedelta(days=min(max(recency_days / 4.0, min_days), max_days))
