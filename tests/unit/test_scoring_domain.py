"""Scoring's pure logic: facts at a moment, the activity log, the prior, bands, reasons."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from services.scoring.domain import (
    FACTS,
    INPUTS,
    REFERENCE,
    Memory,
    facts_at,
    model_inputs,
    recency_prior,
    reasons_for,
    rescore_after,
)
from shared.events import ProfileSnapshot

T0 = datetime(2025, 1, 6, 12, tzinfo=UTC)
DAY = timedelta(days=1)


def snapshot(at: datetime = T0, **features: float) -> ProfileSnapshot:
    return ProfileSnapshot(as_of=at, last_activity_at=at, transaction_count=3,
                           products={"current": 1}, total_balance=Decimal("1000"),
                           features={"tenure_days": 400.0, **features})


def log(*days: float, transaction: bool = True) -> Memory:
    memory = Memory()
    for d in days:
        memory.observe_activity(T0 + d * DAY, transaction=transaction, amount=10.0)
    return memory


def test_facts_at_a_past_moment_ignore_activity_counted_since() -> None:
    """Activity is counted as it arrives, often before the time-driven point it follows:
    facts at that point see only what had happened by then."""
    memory = log(0, 10, 20, 60)
    before = facts_at(snapshot(T0 + 20 * DAY), T0 + 50 * DAY, memory)
    assert before["recency_days"] == pytest.approx(30.0)
    assert before["transactions_lifetime"] == 3
    assert before["purchases_30"] == 0 and before["purchases_90"] == 3
    after = facts_at(snapshot(T0 + 20 * DAY), T0 + 61 * DAY, memory)
    assert after["recency_days"] == pytest.approx(1.0)
    assert after["transactions_lifetime"] == 4


def test_silence_grows_and_windows_empty_as_time_passes() -> None:
    memory = log(0, 5, 9)
    facts = [facts_at(snapshot(T0 + 9 * DAY), T0 + d * DAY, memory) for d in (10, 40, 100, 400)]
    assert [round(f["recency_days"]) for f in facts] == [1, 31, 91, 391]
    assert [f["purchases_30"] for f in facts] == [3, 0, 0, 0]
    assert [f["purchases_365"] for f in facts] == [3, 3, 3, 0]
    assert facts[-1]["transactions_lifetime"] == 3, "the lifetime count never decays"
    assert facts[0]["tenure_days"] < facts[-1]["tenure_days"]


def test_gap_stretch_compares_the_last_gap_with_the_usual_one() -> None:
    steady = facts_at(snapshot(), T0 + 31 * DAY, log(0, 10, 20, 30))
    fading = facts_at(snapshot(), T0 + 71 * DAY, log(0, 10, 20, 70))
    assert steady["gap_stretch"] == pytest.approx(1.0)
    assert fading["gap_stretch"] > 2.0
    assert facts_at(snapshot(), T0 + DAY, log(0))["gap_stretch"] == -1.0, "one event: no gap"


def test_the_log_folds_old_days_into_totals() -> None:
    memory = log(*range(0, 900, 3))
    assert len(memory.days) <= Memory.KEEP_DAYS // 3 + 1
    view = memory.view(T0 + 900 * DAY)
    assert view.activities == 300
    assert view.transactions[2] == len([d for d in range(0, 900, 3) if 900 - d < 365])
    restored = Memory.from_json(memory.to_json())
    assert restored.view(T0 + 900 * DAY) == view


def test_activity_counts_days_so_invoice_lines_do_not_change_the_score() -> None:
    """A retailer's export may give one row per invoice line, a bank three card payments in an
    afternoon: the customer's pace, gaps and spend per day are the same, and so is the score."""
    days = (0, 12, 30, 75, 140)
    single = log(*days)
    lines = Memory()
    for d in days:
        for line in range(7):  # seven lines a few minutes apart, the day's spend split
            lines.observe_activity(T0 + d * DAY + timedelta(minutes=3 * line),
                                   transaction=True, amount=10.0 / 7)
    at = T0 + 200 * DAY
    a, b = facts_at(snapshot(), at, single), facts_at(snapshot(), at, lines)
    for name in ("transactions_lifetime", "purchases_30", "purchases_90", "purchases_365",
                 "purchase_trend", "gap_stretch", "average_spend"):
        assert b[name] == pytest.approx(a[name], abs=1e-3), name
    assert a["transactions_lifetime"] == 5 and a["purchases_365"] == 5
    # The last gap runs from day 75 to day 140, not from the day's first line to its last.
    assert b["gap_stretch"] == pytest.approx((65 + 1) / (35 + 1), rel=0.01)  # +1 day each
    assert model_inputs(b, 90) == pytest.approx(model_inputs(a, 90), abs=1e-3)
    # Folded days keep counting days (the log keeps KEEP_DAYS days).
    long = Memory()
    for d in range(0, 800, 10):
        for line in range(3):
            long.observe_activity(T0 + d * DAY + timedelta(minutes=line), transaction=True)
    assert long.view(T0 + 800 * DAY).activities == 80


def test_a_late_event_counts_on_its_own_day() -> None:
    memory = log(0, 30)
    memory.observe_activity(T0 + 10 * DAY, transaction=True, amount=5.0)
    assert memory.first_activity_after(T0 + DAY) == (T0 + 10 * DAY).timestamp()
    assert memory.view(T0 + 31 * DAY).activities == 3


def test_balance_change_spans_about_a_month() -> None:
    memory = Memory()
    memory.observe_balance(1000.0, T0)
    memory.observe_balance(300.0, T0 + 35 * DAY)
    s = snapshot(T0 + 35 * DAY)
    s = s.model_copy(update={"total_balance": Decimal("300")})
    assert facts_at(s, T0 + 35 * DAY, memory)["balance_change"] == pytest.approx(-700 / 1100,
                                                                                 abs=1e-4)


def test_every_model_input_is_defined_for_sparse_and_rich_customers() -> None:
    one_purchase = facts_at(ProfileSnapshot(as_of=T0, last_activity_at=T0, transaction_count=1),
                            T0 + 300 * DAY, log(0))
    for facts in (one_purchase, REFERENCE):
        x = model_inputs(facts)
        assert set(x) == set(INPUTS)
        assert all(v == v and abs(v) < 1e6 for v in x.values()), x


def test_prior_reads_silence_against_the_customers_own_pace() -> None:
    weekly = dict(REFERENCE, purchases_365=52.0, recency_days=30.0)
    occasional = dict(REFERENCE, purchases_365=4.0, recency_days=30.0)
    assert recency_prior(weekly) > 0.75 > recency_prior(occasional)
    closed = dict(occasional, accounts_closed=1.0)
    assert recency_prior(closed) > recency_prior(occasional)
    silences = [recency_prior(dict(REFERENCE, recency_days=d)) for d in (0, 7, 30, 90, 200)]
    assert silences == sorted(silences)


def test_rescores_weekly_then_less_often_as_silence_grows() -> None:
    cadence = [rescore_after(d, 7, 28).days for d in (0, 20, 40, 80, 120, 1000)]
    assert cadence == [7, 7, 10, 20, 28, 28]


def test_reasons_are_readable_positive_and_largest_first() -> None:
    facts = dict(REFERENCE, recency_days=45.0, login_trend=-0.7, days_since_salary=45.0,
                 open_complaints=1.0)

    def risk(f: dict[str, float]) -> float:
        return min(1.0, 0.05 + f["recency_days"] / 100 + 0.2 * f["open_complaints"]
                   + 0.1 * max(-f["login_trend"], 0) + 0.002 * max(f["days_since_salary"], 0))

    reasons = reasons_for(risk, facts, top=4)
    assert [r.feature for r in reasons] == ["recency_days", "open_complaints", "login_trend",
                                            "days_since_salary"]
    assert [r.text for r in reasons] == [
        "no customer-initiated activity for 45 days",
        "1 open complaint(s)",
        "app use -70% vs the previous month",
        "no salary credit for 45 days",
    ]
    contributions = [r.contribution for r in reasons]
    assert contributions == sorted(contributions, reverse=True) and contributions[-1] > 0
    # A customer without a salary history is never told about their salary.
    no_salary = dict(facts, days_since_salary=-1.0)
    assert "days_since_salary" not in [r.feature for r in reasons_for(risk, no_salary, top=9)]


def test_every_fact_has_a_reference_and_a_sentence() -> None:
    for fact in FACTS:
        assert fact.name in REFERENCE
        assert fact.text(fact.reference + 1.0).strip()
        assert fact.description
