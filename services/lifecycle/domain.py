"""Lifecycle's pure logic: a customer's stage history as a function of their facts and the rules.

The walk goes through event time: at each fact's time it folds the facts of that instant and
tries the rules; between facts it stops only where a clock crossing can make a rule true
(e.g. last activity + 90 days), so a time-driven transition is stamped with the event time at
which it became true. Given the same facts, rules and end time, the walk gives the same
transitions, however the facts were batched or ordered on arrival.

>>> from datetime import UTC, datetime, timedelta
>>> from services.lifecycle.facts import Fact
>>> rules = default_rules()
>>> t0 = datetime(2026, 1, 1, tzinfo=UTC)
>>> opened = Fact(t0, "account_opened", "e1", {"account_id": "A", "product_type": "current"})
>>> step = advance(Position(), [opened], fact_limit=t0, timer_limit=t0 + timedelta(days=300),
...                rules=rules)
>>> for t in step.transitions:
...     print(t.transition_at.date(), t.from_stage, "->", t.to_stage, t.rule)
2026-01-01 None -> prospect first_seen
2026-01-01 prospect -> onboarding first_product
2026-04-01 onboarding -> dormant dormant_after_inactivity
2026-09-28 dormant -> churned churned_after_dormancy
>>> step.transitions[2].evidence
{'inactive_days': 90.0, 'dormant_days': 90}
>>> step.position.stage, next_due(step.position, rules) is None
('churned', True)
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

from services.lifecycle.facts import CustomerFacts, Fact
from services.lifecycle.rules import CLOCKS, Rule, RuleSet, load_rules
from shared.events import ProfileSnapshot, Stage
from shared.expr import ExpressionError, explain

log = logging.getLogger("tenure.lifecycle")

DAY = timedelta(days=1)
JUST_AFTER = timedelta(microseconds=1)
MAX_CHAIN = 8  # transitions at one instant; a longer chain is a loop in the rules
DEFAULT_RULES = Path(__file__).parent / "rules" / "lifecycle.yaml"


@dataclass(frozen=True)
class Transition:
    from_stage: str | None
    to_stage: str
    rule: str
    transition_at: datetime
    evidence: dict[str, Any] = field(default_factory=dict, compare=False)
    # The fact that made an event-driven rule fire; None when a clock crossing did.
    cause: str | None = field(default=None, compare=False)

    @property
    def key(self) -> tuple[str | None, str, str, datetime]:
        return (self.from_stage, self.to_stage, self.rule, self.transition_at)


@dataclass
class Position:
    """Where a customer's walk stands: facts folded and rules tried through `at`."""

    facts: CustomerFacts = field(default_factory=CustomerFacts)
    stage: str | None = None
    stage_entered_at: datetime | None = None
    rule: str | None = None
    at: datetime | None = None
    count: int = 0  # transitions so far: the length of the customer's history

    def anchor(self, clock: str) -> datetime | None:
        name = CLOCKS[clock]
        if name == "stage_entered_at":
            return self.stage_entered_at
        if name == "oldest_open_complaint_at":
            return self.facts.oldest_open_complaint_at
        value: datetime | None = getattr(self.facts, name)
        return value

    def copy(self) -> Position:
        return copy.deepcopy(self)

    def to_json(self) -> dict[str, Any]:
        return {
            "facts": self.facts.to_json(),
            "stage": self.stage,
            "stage_entered_at": _iso(self.stage_entered_at),
            "rule": self.rule,
            "at": _iso(self.at),
            "count": self.count,
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Position:
        return cls(
            facts=CustomerFacts.from_json(doc.get("facts") or {}),
            stage=doc.get("stage"),
            stage_entered_at=_parse(doc.get("stage_entered_at")),
            rule=doc.get("rule"),
            at=_parse(doc.get("at")),
            count=int(doc.get("count") or 0),
        )


@dataclass
class Step:
    """One advance of a customer's walk."""

    position: Position
    transitions: list[Transition]
    pending: list[Fact]  # facts beyond the fact limit, not yet applied
    captured: Position | None = None  # the position at `capture_at`, when asked for


def variables(
    p: Position, at: datetime, rules: RuleSet, *, definitions: bool = True
) -> dict[str, Any]:
    """Everything a rule can read about the customer at event time `at` (without the
    definitions when not asked for: a threshold's days read only figures and parameters)."""
    facts = p.facts
    features = facts.features()
    snapshot = facts.snapshot or {}
    products = facts.open_products()
    product_count = sum(products.values())
    products_ever = facts.products_ever()
    churn = facts.churn or {}
    prior, recent = facts.balance_prior_avg_60, facts.balance_avg_30
    probability, usual = churn.get("probability"), facts.usual_churn_probability()

    def days(anchor: datetime | None) -> float | None:
        return None if anchor is None else (at - anchor) / DAY

    values: dict[str, Any] = {
        "stage": p.stage,
        "registered": facts.registered_at is not None,
        "segment": snapshot.get("segment"),
        "value_tier": snapshot.get("value_tier"),
        "tags": list(snapshot.get("tags") or ()),
        "products": sorted(products),
        "product_count": product_count,
        "product_types": len(products),
        "products_ever": products_ever,
        "all_accounts_closed": products_ever > 0 and product_count == 0,
        "activity_since_stage": (
            facts.last_activity_at is not None and p.stage_entered_at is not None
            and facts.last_activity_at > p.stage_entered_at
        ),
        "transaction_count": int(snapshot.get("transaction_count") or 0),
        "total_balance": float(snapshot.get("total_balance") or 0.0),
        "balance_avg_30": recent,
        "balance_prior_avg_60": prior,
        "balance_trend": recent / prior - 1 if recent is not None and prior else None,
        "open_complaints": len(facts.complaints),
        "churn_probability": probability,
        "churn_band": churn.get("band"),
        "churn_probability_usual": usual,
        "churn_odds_ratio": _odds_ratio(probability, usual),
        "usual_gap_days": facts.usual_gap_days(),
    }
    for name in ("frequency_30", "frequency_90", "frequency_365", "monetary_30", "monetary_90",
                 "monetary_365", "sessions_30", "sessions_prev_30", "engagement_trend",
                 "active_days_30", "salary_credits_90", "last_nps"):
        values[name] = features.get(name)
    for clock in CLOCKS:
        values[clock] = days(p.anchor(clock))
    values.update(rules.parameters)
    if not definitions:
        return values
    for definition in rules.definitions:
        try:
            values[definition.name] = definition.when.evaluate(values)
        except ExpressionError as exc:
            log.warning("lifecycle definition failed",
                        extra={"reason": f"{definition.name}: {exc.reason}"[:200]})
            values[definition.name] = None
    return values


def evidence(rule: Rule, values: Mapping[str, Any], rules: RuleSet) -> dict[str, Any]:
    """The figures that made `rule` fire: what it reads, and what its definitions read."""
    out = {k: _plain(v) for k, v in explain(rule.when, values).items()}
    by_name = {d.name: d for d in rules.definitions}
    for name in rule.uses:
        for path, value in explain(by_name[name].when, values).items():
            out.setdefault(path, _plain(value))
    return out


def next_due(
    p: Position, rules: RuleSet, *, waiting_from: datetime | None = None
) -> datetime | None:
    """The earliest event time after `p.at` at which a clock crossing can make a rule out of
    the customer's stage come true; None if no clock can, or if a fact known to wait (at
    `waiting_from`) comes first: time is not judged past it until it is applied, so the
    customer is found again through its waiting fact, not through the clock."""
    best: datetime | None = None
    values: dict[str, Any] | None = None
    for threshold in rules.thresholds(p.stage):
        anchor = p.anchor(threshold.clock)
        if anchor is None:
            continue
        days: float | None = threshold.days
        if threshold.scaled is not None:
            # Reads figures, fixed until the next fact: the same at any time before it.
            if values is None:
                key = (p.facts.version, p.stage, p.stage_entered_at, id(rules))
                cached = p.facts.cached
                if cached is None or cached[0] != key:
                    cached = (key, variables(p, p.at or anchor, rules, definitions=False))
                    p.facts.cached = cached
                values = cached[1]
            days = threshold.days_for(values)
            if days is None or days != days:  # unknown, or NaN
                continue
        try:
            due = anchor + timedelta(days=days)
        except OverflowError:
            continue
        if threshold.after:
            due += JUST_AFTER
        if (p.at is None or due > p.at) and (best is None or due < best):
            best = due
    if best is not None and waiting_from is not None and best >= waiting_from:
        return None
    return best


def advance(
    position: Position,
    facts: Iterable[Fact],
    *,
    fact_limit: datetime | None,
    timer_limit: datetime | None,
    rules: RuleSet,
    capture_at: datetime | None = None,
    waiting_from: datetime | None = None,
) -> Step:
    """Walk a customer forward: apply the facts up to `fact_limit` in event-time order (a
    fact older than the position counts as of the position), firing clock crossings between
    them, then clock crossings up to `timer_limit`. `position` is not modified.

    Clock crossings never fire at or past a fact that is known but not applied yet: one
    beyond `fact_limit`, or one waiting elsewhere from `waiting_from` (in the facts log,
    not passed in). Such a fact changes the customer at its time, so a crossing after it
    would have to be withdrawn once it is applied.

    `capture_at` asks for a copy of the position as it stood once everything through that
    time was applied (a checkpoint to replay late facts from)."""
    p = position.copy()
    ordered = sorted(facts, key=Fact.sort_key)
    ready = [f for f in ordered if fact_limit is None or f.at <= fact_limit]
    pending = [f for f in ordered if fact_limit is not None and f.at > fact_limit]
    out: list[Transition] = []
    captured: Position | None = None
    # Facts at or before the position happened "before now" as far as the walk can tell:
    # they are applied together at the position's time (one instant, one evaluation).
    groups: list[tuple[datetime, list[Fact]]] = []
    for fact in ready:
        when = fact.at if p.at is None or fact.at > p.at else p.at
        if groups and groups[-1][0] == when:
            groups[-1][1].append(fact)
        else:
            groups.append((when, [fact]))
    for when, group in groups:
        if capture_at is not None and captured is None and when > capture_at:
            out += _timers(p, capture_at, rules, inclusive=True)
            p.at = _latest(p.at, capture_at)
            captured = p.copy()
        out += _timers(p, when, rules, inclusive=False)
        for fact in group:
            p.facts.apply(fact)
        p.at = when
        out += _chain(p, when, rules, cause=group[-1].event_id)
    waits = [t for t in (pending[0].at if pending else None, waiting_from) if t is not None]
    if waits and timer_limit is not None:
        # A fact known but not yet applicable changes the customer at its time: time is not
        # judged past it until it is applied.
        timer_limit = min(timer_limit, min(waits) - JUST_AFTER)
    if capture_at is not None and captured is None and (
        timer_limit is not None and timer_limit >= capture_at
    ):
        out += _timers(p, capture_at, rules, inclusive=True)
        p.at = _latest(p.at, capture_at)
        captured = p.copy()
    if timer_limit is not None and p.at is not None and timer_limit > p.at:
        out += _timers(p, timer_limit, rules, inclusive=True)
        p.at = timer_limit
    return Step(p, out, pending, captured)


def reconcile(
    announced: Sequence[Transition], recomputed: Sequence[Transition]
) -> tuple[list[Transition], list[Transition]]:
    """Compare the history already announced with the one recomputed from the corrected facts:
    returns (announced transitions that no longer hold, new transitions to announce).

    >>> from datetime import UTC, datetime
    >>> t = [datetime(2026, 1, d, tzinfo=UTC) for d in (1, 2, 3)]
    >>> seen = Transition(None, "prospect", "a", t[0])
    >>> old = [seen, Transition("prospect", "dormant", "b", t[2])]
    >>> new = [seen, Transition("prospect", "active", "c", t[1])]
    >>> [[x.to_stage for x in side] for side in reconcile(old, new)]
    [['dormant'], ['active']]
    """
    k = 0
    while k < min(len(announced), len(recomputed)) and announced[k].key == recomputed[k].key:
        k += 1
    return list(announced[k:]), list(recomputed[k:])


# ------------------------------------------------------------------ the walk's steps


def _timers(p: Position, limit: datetime, rules: RuleSet, *, inclusive: bool) -> list[Transition]:
    out: list[Transition] = []
    while True:
        due = next_due(p, rules)
        if due is None or due > limit or (not inclusive and due >= limit):
            return out
        p.at = due
        out += _chain(p, due, rules, cause=None)


def _chain(p: Position, at: datetime, rules: RuleSet, *, cause: str | None) -> list[Transition]:
    """Fire rules at one instant until none holds (a rule's target's rules are tried next)."""
    out: list[Transition] = []
    visited = {p.stage}
    for _ in range(MAX_CHAIN):
        values = variables(p, at, rules)
        fired = None
        for rule in rules.leaving(p.stage):
            try:
                holds = rule.when.matches(values)
            except ExpressionError as exc:
                log.warning("lifecycle rule failed",
                            extra={"reason": f"{rule.name}: {exc.reason}"[:200]})
                holds = False
            if holds:
                fired = rule
                break
        if fired is None:
            break
        if fired.to.value in visited:
            log.warning("lifecycle rules loop at one instant; stopped",
                        extra={"reason": f"{fired.name} -> {fired.to.value}"})
            break
        out.append(Transition(p.stage, fired.to.value, fired.name, at,
                              evidence(fired, values, rules), cause))
        p.stage, p.stage_entered_at, p.rule = fired.to.value, at, fired.name
        p.count += 1
        visited.add(p.stage)
    return out


def _odds_ratio(probability: float | None, usual: float | None) -> float | None:
    """The odds of `probability` over the odds of the customer's usual level (None when either
    is unknown): 1 at their usual level, 3 when leaving has become three times as likely
    relative to staying as it usually is.

    >>> _odds_ratio(0.75, 0.5), _odds_ratio(0.5, 0.5), _odds_ratio(None, 0.5)
    (3.0, 1.0, None)
    """
    if probability is None or usual is None:
        return None
    odds = min(max(probability, 1e-4), 1 - 1e-4) / (1 - min(max(probability, 1e-4), 1 - 1e-4))
    usual_odds = min(max(usual, 1e-4), 1 - 1e-4) / (1 - min(max(usual, 1e-4), 1 - 1e-4))
    return odds / usual_odds


def _plain(value: Any) -> Any:
    """JSON-safe evidence values."""
    if isinstance(value, float):
        return round(value, 6)
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def _latest(a: datetime | None, b: datetime) -> datetime:
    return b if a is None or b > a else a


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _parse(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value is not None else None


@cache
def default_rules() -> RuleSet:
    """The banking defaults shipped in rules/lifecycle.yaml."""
    return load_rules(DEFAULT_RULES)


def transitions(current: Stage | None, snap: ProfileSnapshot, at: datetime) -> list[Transition]:
    """The transitions one profile snapshot causes from `current` under the default rules,
    walking to the latest time the snapshot mentions (a convenience for callers and tests
    that hold a single snapshot)."""
    from services.lifecycle.facts import fact_from_event
    from shared.events import ProfileUpdated

    fact = fact_from_event(ProfileUpdated(
        event_id="00000000-0000-4000-8000-000000000000", customer_id="-", occurred_at=at,
        source="tenure-lifecycle", payload=snap,
    ))
    assert fact is not None
    start = Position(stage=current.value if current else None,
                     stage_entered_at=at if current else None)
    until = max(t for t in (at, snap.as_of, snap.first_activity_at) if t is not None)
    step = advance(start, [fact], fact_limit=None, timer_limit=until, rules=default_rules())
    return step.transitions
