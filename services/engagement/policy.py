"""The contact policy: what a bank checks before any message or call, in order, in event
time and the customer's local time. Pure: the facts come in, a verdict per playbook goes out.

Order of checks for each candidate playbook (the first that fails decides):
1. arbitration — among playbooks fired by the same trigger, the highest priority goes on;
   the rest are suppressed (`lower_priority`);
2. global control group — a fixed share of customers never receives marketing (`holdout`);
3. playbook holdout — a share of the treated population, per playbook (`holdout`);
4. consent for the channel and purpose (`no_consent`);
5. protection — vulnerable or in-collections customers get no marketing; nor does anyone
   while a complaint is open (`flag_vulnerable`, `flag_collections`, `complaint_open`);
6. cooldown per playbook (`cooldown`);
7. frequency caps on marketing per local ISO week and calendar month (`cap_week`, `cap_month`);
8. budget per playbook and month (`budget_exhausted`);
9. freshness — a trigger older than the freshness window in wall-clock time is recorded as
   `historical` and never delivered (imports and replays contact nobody);
10. quiet hours in the customer's time zone — `deferred` to the next allowed local time.
Holdout assignment is a deterministic hash, stable across replays and instances.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from shared.events import Decision


@dataclass(frozen=True)
class Policy:
    global_holdout_share: float = 0.05
    marketing_per_week: int = 2
    marketing_per_month: int = 6
    quiet_start: time = time(21, 0)
    quiet_end: time = time(8, 0)
    freshness: timedelta = timedelta(hours=48)


@dataclass(frozen=True)
class Candidate:
    playbook: str
    channel: str
    purpose: str  # marketing or service
    priority: int
    cooldown_days: float
    holdout_share: float
    budget_per_month: int | None


@dataclass(frozen=True)
class Contact:
    customer_id: str
    time_zone: str
    consent: dict[tuple[str, str], bool]
    flags: dict[str, bool]
    open_complaints: int = 0


@dataclass(frozen=True)
class Past:
    """A decision already taken for this customer (or, for budgets, for the playbook)."""

    playbook: str
    purpose: str
    decision: str
    decided_at: datetime


@dataclass(frozen=True)
class Verdict:
    playbook: str
    decision: Decision
    reason: str
    deliver_at: datetime | None = None
    figures: dict[str, Any] = field(default_factory=dict)

    @property
    def treated(self) -> bool:
        return self.decision in (Decision.sent, Decision.deferred)


def bucket(*parts: str) -> float:
    """A stable number in [0, 1) for a customer and a salt (holdout assignment).

    >>> bucket("global", "C1") == bucket("global", "C1"), 0 <= bucket("x", "C1") < 1
    (True, True)
    """
    digest = hashlib.sha256("|".join(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def in_global_control(customer_id: str, policy: Policy) -> bool:
    return bucket("global-control", customer_id) < policy.global_holdout_share


def _local(at: datetime, zone: str) -> datetime:
    try:
        return at.astimezone(ZoneInfo(zone))
    except (KeyError, ValueError):
        return at


def local_date(at: datetime, zone: str) -> date:
    """The customer's calendar day at `at` (festivals and birthdays are local days)."""
    return _local(at, zone).date()


def next_allowed(at: datetime, zone: str, policy: Policy) -> datetime | None:
    """None if `at` is outside quiet hours in the customer's zone, else the next allowed time.

    >>> from datetime import UTC, datetime
    >>> p = Policy()
    >>> next_allowed(datetime(2026, 3, 2, 12, 0, tzinfo=UTC), "Europe/London", p) is None
    True
    >>> next_allowed(datetime(2026, 3, 2, 22, 30, tzinfo=UTC), "Asia/Shanghai", p).isoformat()
    '2026-03-03T00:00:00+00:00'
    """
    local = _local(at, zone)
    clock = local.time()
    start, end = policy.quiet_start, policy.quiet_end
    quiet = (clock >= start or clock < end) if start > end else (start <= clock < end)
    if not quiet:
        return None
    day = local.date() if clock < end else local.date() + timedelta(days=1)
    resume = datetime.combine(day, end, tzinfo=local.tzinfo)
    return resume.astimezone(at.tzinfo)


def _same_week(a: datetime, b: datetime) -> bool:
    return a.isocalendar()[:2] == b.isocalendar()[:2]


def _same_month(a: datetime, b: datetime) -> bool:
    return (a.year, a.month) == (b.year, b.month)


def decide(
    candidates: Sequence[Candidate],
    contact: Contact,
    history: Sequence[Past],
    budget_used: dict[str, int],
    *,
    trigger_at: datetime,
    wall_clock: datetime,
    policy: Policy,
) -> list[Verdict]:
    """One verdict per candidate, in priority order; see the module docstring for the order."""
    ordered = sorted(candidates, key=lambda c: (-c.priority, c.playbook))
    local_now = _local(trigger_at, contact.time_zone)
    sent = [p for p in history if p.decision in ("sent", "deferred")]
    verdicts: list[Verdict] = []
    chosen = False
    for c in ordered:
        figures: dict[str, Any] = {"priority": c.priority, "channel": c.channel,
                                   "purpose": c.purpose}

        def verdict(decision: Decision, reason: str, deliver_at: datetime | None = None,
                    c: Candidate = c, figures: dict[str, Any] = figures) -> Verdict:
            return Verdict(c.playbook, decision, reason, deliver_at, figures)

        if chosen:
            verdicts.append(verdict(Decision.suppressed, "lower_priority"))
            continue
        marketing = c.purpose == "marketing"
        if marketing and in_global_control(contact.customer_id, policy):
            verdicts.append(verdict(Decision.holdout, "global_control_group"))
            chosen = True
            continue
        if c.holdout_share > 0 and bucket(c.playbook, contact.customer_id) < c.holdout_share:
            figures["holdout_share"] = c.holdout_share
            verdicts.append(verdict(Decision.holdout, "playbook_holdout"))
            chosen = True
            continue
        if not contact.consent.get((c.channel, c.purpose), False) and c.channel != "rm_task":
            verdicts.append(verdict(Decision.suppressed, "no_consent"))
            continue
        if marketing:
            flag = next((f for f in ("vulnerable", "collections") if contact.flags.get(f)), None)
            if flag:
                verdicts.append(verdict(Decision.suppressed, f"flag_{flag}"))
                continue
            if contact.open_complaints > 0:
                verdicts.append(verdict(Decision.suppressed, "complaint_open"))
                continue
        last_same = max((p.decided_at for p in sent if p.playbook == c.playbook), default=None)
        if last_same is not None and trigger_at - last_same < timedelta(days=c.cooldown_days):
            figures["last_sent_at"] = last_same.isoformat()
            verdicts.append(verdict(Decision.suppressed, "cooldown"))
            continue
        if marketing:
            mine = [_local(p.decided_at, contact.time_zone) for p in sent if p.purpose == "marketing"]
            week = sum(1 for t in mine if _same_week(t, local_now))
            month = sum(1 for t in mine if _same_month(t, local_now))
            figures.update({"marketing_this_week": week, "marketing_this_month": month})
            if week >= policy.marketing_per_week:
                verdicts.append(verdict(Decision.suppressed, "cap_week"))
                continue
            if month >= policy.marketing_per_month:
                verdicts.append(verdict(Decision.suppressed, "cap_month"))
                continue
        if c.budget_per_month is not None:
            used = budget_used.get(c.playbook, 0)
            figures["budget_used"], figures["budget"] = used, c.budget_per_month
            if used >= c.budget_per_month:
                verdicts.append(verdict(Decision.suppressed, "budget_exhausted"))
                continue
        age = wall_clock - trigger_at
        figures["trigger_age_hours"] = round(age.total_seconds() / 3600, 3)
        chosen = True
        if age > policy.freshness:
            verdicts.append(verdict(Decision.historical, "trigger_not_fresh"))
            continue
        resume = next_allowed(trigger_at, contact.time_zone, policy)
        if resume is not None:
            verdicts.append(verdict(Decision.deferred, "quiet_hours", resume))
            continue
        verdicts.append(verdict(Decision.sent, "policy_passed", trigger_at))
    return verdicts
