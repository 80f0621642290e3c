"""Lifecycle's pure domain: each default rule in isolation, in event time, with its evidence."""

from __future__ import annotations

import itertools
import json
import random
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from services.lifecycle.domain import (
    Position,
    Step,
    advance,
    default_rules,
    next_due,
    transitions,
    variables,
)
from services.lifecycle.facts import CustomerFacts, Fact
from services.lifecycle.rules import parse_rules
from shared.events import ProfileSnapshot, Stage

RULES = default_rules()
T0 = datetime(2025, 1, 1, tzinfo=UTC)
_ids = itertools.count(1)


def day(n: float) -> datetime:
    return T0 + timedelta(days=n)


def fact(kind: str, at: datetime, /, **data: Any) -> Fact:
    return Fact(at, kind, f"00000000-0000-4000-8000-{next(_ids):012d}", data)


def opened(at: datetime, account: str = "A", product: str = "current") -> Fact:
    return fact("account_opened", at, account_id=account, product_type=product)


def closed(at: datetime, account: str = "A", product: str = "current") -> Fact:
    return fact("account_closed", at, account_id=account, product_type=product)


def feedback(at: datetime, kind: str, complaint: str | None = None) -> Fact:
    return fact("feedback", at, kind=kind, complaint_id=complaint)


def score(at: datetime, probability: float) -> Fact:
    return fact("churn_score", at, probability=probability, band="high")


REGULAR = {"frequency_90": 12, "frequency_30": 4, "active_days_30": 8, "sessions_30": 6,
           "sessions_prev_30": 6, "engagement_trend": 0.0}


def snap(at: datetime, *, last_activity: datetime | None = None,
         products: dict[str, int] | None = None, balance: float = 1000.0,
         first_activity: datetime = T0, **features: Any) -> Fact:
    """A profile snapshot; by default a regular customer active at `at`."""
    return fact("snapshot", at, **{
        "as_of": at.isoformat(), "registered": True, "segment": "retail", "value_tier": "mid",
        "tags": [], "first_activity_at": first_activity.isoformat(),
        "last_activity_at": (last_activity or at).isoformat(), "transaction_count": 10,
        "products": {"current": 1} if products is None else products,
        "total_balance": balance, "features": {**REGULAR, **features},
    })


def in_stage(stage: str, since: datetime, *facts: Fact) -> Position:
    """A customer already in `stage` since `since`, knowing `facts` (rules not run on them)."""
    folded = CustomerFacts()
    for f in sorted(facts, key=Fact.sort_key):
        folded.apply(f)
    at = max([since, *(f.at for f in facts)])
    return Position(folded, stage, since, "given", at, count=1)


def walk(start: Position, facts: list[Fact], until: datetime) -> Step:
    return advance(start, facts, fact_limit=until, timer_limit=until, rules=RULES)


def moves(step: Step) -> list[tuple[str | None, str, str, datetime]]:
    return [(t.from_stage, t.to_stage, t.rule, t.transition_at) for t in step.transitions]


# ------------------------------------------------------------------ entering the lifecycle


def test_first_seen_makes_any_new_customer_a_prospect_at_the_first_fact() -> None:
    step = walk(Position(), [fact("registered", day(0))], day(30))
    assert moves(step) == [(None, "prospect", "first_seen", day(0))]
    assert step.position.stage == "prospect" and next_due(step.position, RULES) is None


def test_first_product_starts_onboarding_stamped_at_the_product() -> None:
    start = in_stage("prospect", day(0), fact("registered", day(0)))
    step = walk(start, [opened(day(3))], day(10))
    assert moves(step) == [("prospect", "onboarding", "first_product", day(3))]
    assert step.transitions[0].evidence == {"days_since_first_product": 0.0}
    # A purchase log without account events: the first use of a card is the first product.
    step = walk(in_stage("prospect", day(0)), [snap(day(2), products={"card": 1})], day(3))
    assert moves(step) == [("prospect", "onboarding", "first_product", day(2))]


def test_compat_transitions_for_one_snapshot() -> None:
    snapshot = ProfileSnapshot(as_of=T0, registered=True, transaction_count=1,
                               first_activity_at=T0 + timedelta(hours=1))
    steps = transitions(None, snapshot, T0)
    assert [(t.from_stage, t.to_stage) for t in steps] == [
        (None, Stage.prospect), (Stage.prospect, Stage.onboarding)
    ]
    assert steps[1].transition_at == T0 + timedelta(hours=1)


# ------------------------------------------------------------------ onboarding ends


def test_onboarding_complete_when_regular_at_day_90_exactly() -> None:
    start = in_stage("onboarding", day(0), opened(day(0)))
    step = walk(start, [snap(day(85))], day(120))
    assert moves(step) == [("onboarding", "active", "onboarding_complete", day(90))]
    evidence = step.transitions[0].evidence
    assert evidence["days_since_first_product"] == 90.0 and evidence["onboarding_days"] == 90
    assert evidence["regular"] is True and evidence["frequency_90"] == 12


def test_onboarding_not_activated_when_not_transacting_regularly_at_day_90() -> None:
    start = in_stage("onboarding", day(0), opened(day(0)))
    step = walk(start, [snap(day(80), frequency_90=1)], day(95))
    assert moves(step) == [("onboarding", "at_risk", "onboarding_not_activated", day(90))]


# ------------------------------------------------------------------ loyalty


def test_became_loyal_after_a_year_with_two_product_types_and_steady_activity() -> None:
    start = in_stage("active", day(90), opened(day(0)), opened(day(0), "S", "savings"))
    snaps = [snap(day(d), products={"current": 1, "savings": 1}) for d in range(100, 371, 10)]
    step = walk(start, snaps, day(371))
    assert moves(step) == [("active", "loyal", "became_loyal", day(365))]
    assert step.transitions[0].evidence["product_types"] == 2


def test_one_product_type_is_not_loyal() -> None:
    start = in_stage("active", day(90), opened(day(0)))
    snaps = [snap(day(d)) for d in range(100, 371, 10)]
    assert moves(walk(start, snaps, day(371))) == []


def test_loyalty_lapses_when_down_to_one_product_type() -> None:
    start = in_stage("loyal", day(365), opened(day(0)), opened(day(0), "S", "savings"),
                     snap(day(399), products={"current": 1, "savings": 1}))
    step = walk(start, [closed(day(400), "S", "savings")], day(401))
    assert moves(step) == [("loyal", "active", "loyalty_lapsed", day(400))]


# ------------------------------------------------------------------ at risk


def test_at_risk_on_a_high_churn_score_and_not_just_below_it() -> None:
    start = in_stage("active", day(90), opened(day(0)), snap(day(95)))
    # At 0.5 leaving has become as likely as staying.
    step = walk(start, [score(day(100), 0.5)], day(101))
    assert moves(step) == [("active", "at_risk", "at_risk_churn_score", day(100))]
    assert step.transitions[0].evidence == {
        "high_churn_score": True, "churn_probability": 0.5, "at_risk_churn_probability": 0.5,
    }
    assert moves(walk(start, [score(day(100), 0.49)], day(101))) == []


def test_at_risk_when_salary_stops_stamped_45_days_after_the_last_salary() -> None:
    start = in_stage("active", day(90), opened(day(0)))
    # Salary last credited on day 100; snapshots keep coming (the customer still spends).
    snaps = [snap(day(d), salary_credits_90=2, days_since_salary=d - 100)
             for d in range(100, 160, 5)]
    step = walk(start, snaps, day(160))
    assert moves(step) == [("active", "at_risk", "at_risk_decline", day(145))]
    evidence = step.transitions[0].evidence
    assert evidence["salary_stopped"] is True and evidence["days_since_salary"] == 45.0
    # A one-off salary credit (one in the quarter) is not a salary that stopped.
    once = [snap(day(d), salary_credits_90=1, days_since_salary=d - 100)
            for d in range(100, 160, 5)]
    assert moves(walk(start, once, day(160))) == []


def test_at_risk_when_balances_are_drawn_down() -> None:
    start = in_stage("active", day(0), opened(day(0)))
    snaps = [snap(day(d), balance=2000.0 if d < 60 else 0.0) for d in range(0, 90)]
    step = walk(start, snaps, day(90))
    # The last 30 days' average halves against the 60 days before on day 74.
    assert moves(step) == [("active", "at_risk", "at_risk_decline", day(74))]
    evidence = step.transitions[0].evidence
    assert evidence["balance_drawn_down"] is True and evidence["balance_trend"] <= -0.5
    steady = [snap(day(d), balance=2000.0 if d % 30 < 15 else 100.0) for d in range(0, 90)]
    assert moves(walk(start, steady, day(90))) == []  # a pay cycle is not a decline


def test_at_risk_when_logins_fall_sharply() -> None:
    start = in_stage("active", day(90), opened(day(0)))
    fallen = snap(day(100), sessions_prev_30=20, sessions_30=4, engagement_trend=-0.8)
    assert moves(walk(start, [fallen], day(101))) == [
        ("active", "at_risk", "at_risk_decline", day(100))
    ]
    few = snap(day(100), sessions_prev_30=3, sessions_30=0, engagement_trend=-1.0)
    assert moves(walk(start, [few], day(101))) == []  # too few logins to call it a habit
    # 10 then 2: after a busy month an ordinary one is often quiet; chance, not a decline.
    quiet = snap(day(100), sessions_prev_30=10, sessions_30=2, engagement_trend=-0.8)
    assert moves(walk(start, [quiet], day(101))) == []


def test_at_risk_when_a_complaint_stays_open_for_14_days() -> None:
    start = in_stage("active", day(90), opened(day(0)), snap(day(95)))
    step = walk(start, [feedback(day(100), "complaint_opened", "K1")], day(120))
    assert moves(step) == [("active", "at_risk", "at_risk_decline", day(114))]
    assert step.transitions[0].evidence["oldest_open_complaint_days"] == 14.0
    resolved = [feedback(day(100), "complaint_opened", "K1"),
                feedback(day(110), "complaint_resolved", "K1")]
    assert moves(walk(start, resolved, day(120))) == []


def test_at_risk_when_a_silence_is_improbable_at_the_customers_own_pace() -> None:
    # 73 own transactions in a year: one every 5 days. Silent since day 200: the floor of 30
    # days comes first (about 3 x 5 = 15 days would be too quick to call).
    start = in_stage("active", day(90), opened(day(0)))
    busy = snap(day(200), frequency_365=73, first_activity=day(-200))
    step = walk(start, [busy], day(260))
    assert moves(step)[0] == ("active", "at_risk", "at_risk_decline", day(230))
    evidence = step.transitions[0].evidence
    assert evidence["silent_beyond_pace"] is True and evidence["usual_gap_days"] == 5.0
    # 24 a year (a gap of about 15 days): 3 gaps and a little for a pace seen 24 times
    # (3 + 9/48 + 27/3456 gaps: a 5 % silence), stamped at that time.
    [first, *_] = moves(walk(start, [snap(day(200), frequency_365=24,
                                          first_activity=day(-200))], day(300)))
    assert first[:3] == ("active", "at_risk", "at_risk_decline")
    gaps = 3 + 9 / 48 + 27 / (6 * 24 * 24)
    assert abs(first[3] - day(200 + gaps * 365 / 24)) < timedelta(seconds=1)
    # A monthly payer (12 a year): 3.4 gaps is 103 days, dormancy comes first.
    monthly = snap(day(200), frequency_365=12, first_activity=day(-200))
    assert moves(walk(start, [monthly], day(300)))[0][1:3] == (
        "dormant", "dormant_after_inactivity")


def test_a_pace_seen_over_few_transactions_needs_a_longer_silence() -> None:
    # A new retail buyer: 4 purchases in the 40 days since the first, one every 10 days. At a
    # pace known exactly, 30 days of silence (3 gaps) would have a 5 % chance; seen only 4
    # times the pace is uncertain, and the 5 % silence is 10 x (3 + 9/8 + 27/96) = 44 days.
    start = in_stage("active", day(90), opened(day(0)))
    buyer = snap(day(200), frequency_365=4, first_activity=day(160))
    step = walk(start, [buyer], day(260))
    [(from_stage, to_stage, rule, at)] = moves(step)[:1]
    assert (from_stage, to_stage, rule) == ("active", "at_risk", "at_risk_decline")
    assert abs(at - day(200 + 10 * (3 + 9 / 8 + 27 / 96))) < timedelta(seconds=1)
    assert moves(walk(start, [buyer], day(243))) == []  # 43 days: not yet
    # Two purchases are no pace to judge a silence against.
    twice = snap(day(200), frequency_365=2, first_activity=day(190))
    assert moves(walk(start, [twice], day(289))) == []


def test_recovered_only_well_below_the_cut_and_transacting_regularly() -> None:
    start = in_stage("at_risk", day(100), opened(day(0)), snap(day(100)), score(day(100), 0.7))
    step = walk(start, [snap(day(110)), score(day(110), 0.3)], day(111))
    assert moves(step) == [("at_risk", "active", "recovered", day(110))]
    hovering = walk(start, [snap(day(110)), score(day(110), 0.5)], day(111))
    assert moves(hovering) == []  # hysteresis: 0.5 is not low enough to recover


def test_recovered_at_the_customers_own_pace_after_a_purchase_since_the_warning() -> None:
    # A retail buyer (a purchase a month or so) is never "regular" (3 in 90 days, the last
    # within 30); buying again after the warning, with the score back down, is recovery.
    sparse = {"frequency_90": 1, "frequency_30": 1, "frequency_365": 8}
    start = in_stage("at_risk", day(100), opened(day(0)),
                     snap(day(60), last_activity=day(60), **sparse), score(day(100), 0.6))
    bought = walk(start, [snap(day(130), **sparse), score(day(130), 0.3)], day(131))
    assert moves(bought) == [("at_risk", "active", "recovered", day(130))]
    # The score falling back alone (no purchase since the warning) is not recovery ...
    quiet = walk(start, [snap(day(130), last_activity=day(60), **sparse),
                         score(day(130), 0.3)], day(131))
    assert moves(quiet) == []
    # ... nor is a purchase while the score stays near the cut (hysteresis).
    hovering = walk(start, [snap(day(130), **sparse), score(day(130), 0.45)], day(131))
    assert moves(hovering) == []


def test_usual_churn_probability_is_the_level_the_scores_stood_at_before_the_latest() -> None:
    facts = CustomerFacts()
    facts.apply(score(day(0), 0.7))
    facts.apply(score(day(30), 0.7))
    assert facts.usual_churn_probability() is None  # 30 days of scores: no usual level yet
    for d in range(60, 200, 10):
        facts.apply(score(day(d), 0.7))
    facts.apply(score(day(200), 0.9))
    assert facts.usual_churn_probability() == pytest.approx(0.7)
    values = variables(Position(facts, "active", day(0), "given", day(200)), day(200), RULES)
    assert values["churn_probability"] == 0.9
    assert values["churn_probability_usual"] == pytest.approx(0.7)
    assert values["churn_odds_ratio"] == pytest.approx((0.9 / 0.1) / (0.7 / 0.3))
    # Once the 0.9 has stood for 100 days it is part of the usual level (the recent past
    # counts more, forgetting over 180 days), but it does not replace it.
    facts.apply(score(day(300), 0.5))
    usual = facts.usual_churn_probability()
    assert usual is not None and 0.7 < usual < 0.9
    restored = CustomerFacts.from_json(json.loads(json.dumps(facts.to_json())))
    assert restored.usual_churn_probability() == pytest.approx(usual)
    # Scores arriving out of order do not rewrite the usual level.
    facts.apply(score(day(250), 0.01))
    assert facts.usual_churn_probability() == pytest.approx(usual)


# ------------------------------------------------------------------ dormancy and churn


def test_dormant_90_days_after_the_last_customer_initiated_activity() -> None:
    start = in_stage("active", day(0), opened(day(0)))
    # Bank postings keep snapshots coming; the customer's last own act was day 10.
    snaps = [snap(day(d), last_activity=day(10)) for d in range(10, 130, 7)]
    step = walk(start, snaps, day(130))
    assert moves(step) == [("active", "dormant", "dormant_after_inactivity", day(100))]
    assert step.transitions[0].evidence == {"inactive_days": 90.0, "dormant_days": 90}


def test_activity_postpones_dormancy_and_the_next_due_time_follows_it() -> None:
    start = in_stage("active", day(0), opened(day(0)))
    step = walk(start, [snap(day(60)), snap(day(99))], day(99))
    assert moves(step) == []
    # The next crossing: 30 days of silence (the floor of silence beyond the customer's pace).
    assert next_due(step.position, RULES) == day(99 + 30)
    later = walk(step.position, [], day(200))
    assert moves(later) == [("active", "dormant", "dormant_after_inactivity", day(189))]


def test_churned_after_180_days_dormant() -> None:
    start = in_stage("dormant", day(100), opened(day(0)), snap(day(10)))
    step = walk(start, [], day(400))
    assert moves(step) == [("dormant", "churned", "churned_after_dormancy", day(280))]


def test_reactivated_on_activity_while_dormant() -> None:
    start = in_stage("dormant", day(100), opened(day(0)), snap(day(10), last_activity=day(10)))
    step = walk(start, [snap(day(150))], day(151))
    assert moves(step) == [("dormant", "active", "reactivated", day(150))]


def test_all_accounts_closed_churns_at_the_last_closure() -> None:
    start = in_stage("active", day(0), opened(day(0)), opened(day(0), "C", "card"))
    step = walk(start, [closed(day(10))], day(11))
    assert moves(step) == []
    step = walk(step.position, [closed(day(12), "C", "card")], day(13))
    assert moves(step) == [("active", "churned", "all_accounts_closed", day(12))]
    assert step.transitions[0].evidence == {"all_accounts_closed": True}


def test_won_back_on_renewed_activity_with_a_product_then_settled() -> None:
    start = in_stage("churned", day(50), opened(day(0)), closed(day(50)))
    assert moves(walk(start, [feedback(day(60), "nps")], day(61))) == []  # no product
    step = walk(start, [opened(day(200), "B")], day(201))
    assert moves(step) == [("churned", "won_back", "won_back", day(200))]
    settled = walk(step.position, [snap(day(d)) for d in range(205, 240, 5)], day(240))
    assert moves(settled) == [("won_back", "active", "won_back_settled", day(230))]


def test_won_back_when_a_purchase_log_customer_buys_again() -> None:
    # A purchase log tells of purchases, never of accounts: buying again after churning is
    # the renewed relationship (with accounts, a product must be held: see above).
    start = in_stage("churned", day(300), snap(day(10), products={}))
    step = walk(start, [snap(day(400), products={})], day(401))
    assert moves(step) == [("churned", "won_back", "won_back", day(400))]
    assert moves(walk(start, [snap(day(299), products={})], day(350))) == []  # not since


# ------------------------------------------------------------------ the walk itself


def test_replay_from_a_stored_position_equals_one_walk() -> None:
    facts = [opened(day(0)), *[snap(day(d)) for d in range(0, 200, 9)],
             score(day(150), 0.8), *[snap(day(d), last_activity=day(198)) for d in (230, 260)]]
    whole = walk(Position(), facts, day(500))
    first = walk(Position(), [f for f in facts if f.at <= day(120)], day(120))
    stored = Position.from_json(json.loads(json.dumps(first.position.to_json())))
    rest = walk(stored, [f for f in facts if f.at > day(120)], day(500))
    assert moves(whole) == moves(first) + moves(rest)
    assert whole.position.to_json() == rest.position.to_json()


def test_facts_beyond_the_fact_limit_wait() -> None:
    step = advance(Position(), [opened(day(0)), snap(day(5))], fact_limit=day(1),
                   timer_limit=day(1), rules=RULES)
    assert [t.to_stage for t in step.transitions] == ["prospect", "onboarding"]
    assert [f.at for f in step.pending] == [day(5)]


def test_a_loop_in_the_rules_stops_at_one_instant() -> None:
    looping = parse_rules(
        """
        rules:
          - {name: seen, from: [none], to: prospect, when: "True"}
          - {name: there, from: [prospect], to: active, when: "True"}
          - {name: back, from: [active], to: prospect, when: "True"}
        """,
        "loop.yaml",
    )
    step = advance(Position(), [opened(day(0))], fact_limit=day(0), timer_limit=day(0),
                   rules=looping)
    assert [t.rule for t in step.transitions] == ["seen", "there"]


def test_a_rule_that_meets_data_it_cannot_compare_does_not_fire() -> None:
    odd = parse_rules(
        """
        rules:
          - {name: seen, from: [none], to: prospect, when: "True"}
          - {name: odd, from: [prospect], to: active, when: "segment > 3"}
        """,
        "odd.yaml",
    )
    step = advance(Position(), [snap(day(0))], fact_limit=day(0), timer_limit=day(0), rules=odd)
    assert [t.rule for t in step.transitions] == ["seen"]


@pytest.mark.parametrize("order", [0, 1, 2])
def test_the_history_depends_on_the_facts_not_on_their_arrival_order(order: int) -> None:
    facts = [opened(day(0)), opened(day(0), "S", "savings"), snap(day(40)),
             feedback(day(50), "complaint_opened", "K"), snap(day(70)), score(day(80), 0.2),
             feedback(day(90), "complaint_resolved", "K"), snap(day(120), last_activity=day(120))]
    reordered = [list(reversed(facts)), facts[1::2] + facts[::2], facts][order]
    assert moves(walk(Position(), reordered, day(300))) == moves(walk(Position(), facts, day(300)))


def test_a_snapshot_computed_before_a_salary_was_ingested_does_not_stop_the_salary() -> None:
    # Under a backlog, profile can emit day 70's snapshot before it ingests day 55's salary:
    # that snapshot still says "last salary on day 25". The later-ingested knowledge wins.
    start = in_stage("active", day(0), opened(day(0)))
    facts = [snap(day(25), days_since_salary=0), snap(day(55), days_since_salary=0),
             snap(day(71), days_since_salary=46), snap(day(75), days_since_salary=20)]
    step = walk(start, facts, day(80))
    assert moves(step) == []
    assert step.position.facts.last_salary_at == day(55).replace(hour=0)


def test_at_risk_when_spending_falls_sharply() -> None:
    start = in_stage("active", day(90), opened(day(0)))
    # 45 in the quarter (15 a month), 4 this month: chance gives that once in 1,000 months.
    fallen = snap(day(100), frequency_90=45, frequency_30=4)
    assert moves(walk(start, [fallen], day(101))) == [
        ("active", "at_risk", "at_risk_decline", day(100))
    ]
    assert walk(start, [fallen], day(101)).transitions[0].evidence["usage_fallen"] is True
    steady = snap(day(100), frequency_90=45, frequency_30=7)
    assert moves(walk(start, [steady], day(101))) == []
    # 8 a month, 2 this month: a month like that comes by chance (1.4 %), not a decline.
    ordinary = snap(day(100), frequency_90=24, frequency_30=2)
    assert moves(walk(start, [ordinary], day(101))) == []


def test_time_is_not_judged_past_a_fact_that_waits() -> None:
    # Day 150's activity is known but may not be applied yet (a slower topic): dormancy on
    # day 100 may fire, nothing after day 150 may.
    start = in_stage("active", day(0), opened(day(0)))
    step = advance(start, [snap(day(150))], fact_limit=day(120), timer_limit=day(400),
                   rules=RULES)
    assert moves(step) == [("active", "dormant", "dormant_after_inactivity", day(90))]
    assert step.position.at == day(150) - timedelta(microseconds=1)
    rest = advance(step.position, step.pending, fact_limit=day(400), timer_limit=day(400),
                   rules=RULES)
    assert moves(rest)[0] == ("dormant", "active", "reactivated", day(150))


def _balance_figures_day_by_day(balances: dict[str, float], today: date) -> tuple[Any, Any]:
    """The definition, day by day: the last known balance carried over each of 90 days."""
    recent: list[float] = []
    prior: list[float] = []
    for n in range(90):
        d = (today - timedelta(days=89 - n)).isoformat()
        known = [k for k in balances if k <= d]
        if known:
            (recent if n >= 60 else prior).append(balances[max(known)])
    return (sum(recent) / len(recent) if recent else None,
            sum(prior) / len(prior) if len(prior) >= 30 else None)


@pytest.mark.parametrize("seed", range(12))
def test_balance_figures_equal_the_day_by_day_definition(seed: int) -> None:
    rng = random.Random(seed)
    facts = CustomerFacts()
    seen: dict[str, float] = {}
    at = T0
    for _ in range(60):
        at += timedelta(days=rng.choice([0, 1, 1, 2, 5, 17, 40]), hours=rng.randint(0, 23))
        balance = float(rng.randint(0, 5000))
        facts.apply(snap(at, balance=balance))
        seen[at.date().isoformat()] = balance
        expected = _balance_figures_day_by_day(seen, at.date())
        assert (facts.balance_avg_30, facts.balance_prior_avg_60) == pytest.approx(expected)
        assert len(facts.balances) <= 91  # days before the window are forgotten but one
