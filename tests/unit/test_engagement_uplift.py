"""Uplift measurement: the estimator recovers a known effect; the eval's truth is computed
from the simulator's potential outcomes with the outcome the endpoint counts (pure: no I/O)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from services.engagement.domain import Uplift, uplift
from tenure_cli.simulator import SimConfig, Treatments, ground_truth
from tenure_cli.uplift_eval import Row, churn_within, true_effects
from tests.support import factories as f


def _trial(rng: random.Random, n: int, p_holdout: float, p_treated: float) -> Uplift:
    holdout_churned = sum(rng.random() < p_holdout for _ in range(n))
    treated_churned = sum(rng.random() < p_treated for _ in range(n))
    return uplift(n, treated_churned, n, holdout_churned)


def test_the_estimator_recovers_a_known_effect_within_its_interval() -> None:
    # Treatment cuts a 30% churn rate by a third: the true uplift is 0.10.
    rng = random.Random(2024)
    u = _trial(rng, 2000, 0.30, 0.20)
    assert u.ci_low <= 0.10 <= u.ci_high and u.ci_low > 0  # type: ignore[operator]
    assert abs(u.uplift - 0.10) < 0.04  # type: ignore[operator]
    # Over many seeded experiments the 95% interval holds the truth about 95% of the time,
    # and is centred on it (no bias).
    trials = [_trial(rng, 400, 0.30, 0.20) for _ in range(400)]
    held = [t.ci_low <= 0.10 <= t.ci_high for t in trials]  # type: ignore[operator]
    coverage = sum(held) / len(held)
    assert 0.91 <= coverage <= 0.98
    assert abs(sum(t.uplift for t in trials) / len(trials) - 0.10) < 0.01  # type: ignore[misc]
    # No effect: the interval holds zero.
    null = _trial(rng, 2000, 0.25, 0.25)
    assert null.ci_low <= 0 <= null.ci_high  # type: ignore[operator]


T = datetime(2025, 1, 1, tzinfo=UTC)
WINDOW = timedelta(days=90)


def test_churn_within_reads_closure_and_dormancy_like_the_platform() -> None:
    opened = f.registered("C1", T)  # not activity
    quiet = [opened, f.transaction("C1", T)]
    # Silent since T: dormant at T + 90 days, inside (T + 10, T + 100].
    assert churn_within(quiet, T + timedelta(days=10), WINDOW)
    # ... but not inside a window that ends before it.
    assert not churn_within(quiet, T - timedelta(days=20), WINDOW)
    # Activity on day 60 pushes dormancy to day 150: outside.
    assert not churn_within(quiet + [f.transaction("C1", T + timedelta(days=60))],
                            T + timedelta(days=10), WINDOW)
    # Bank-initiated postings are not activity.
    fee = f.transaction("C1", T + timedelta(days=60), initiated_by="bank", category="fee")
    assert churn_within(quiet + [fee], T + timedelta(days=10), WINDOW)


def test_true_effect_comes_from_both_worlds_of_each_decision() -> None:
    config = SimConfig(customers=200, seed=11, days=400,
                       offer_effects=(("retention_offer", 1.0),))
    leavers = [t for t in ground_truth(config) if t["churn_at"] and not t["closes_accounts"]
               and config.start + timedelta(days=60) < datetime.fromisoformat(t["churn_at"])
               < config.end - timedelta(days=150)][:6]
    assert len(leavers) >= 4
    delivered = Treatments()
    rows = []
    for k, t in enumerate(leavers):
        churn_at = datetime.fromisoformat(t["churn_at"])
        decided = churn_at - timedelta(days=30)
        known = datetime.combine(decided.date(), datetime.min.time(), tzinfo=UTC) + \
            timedelta(days=1)
        treated = k % 2 == 0
        if treated:
            delivered.receive(t["customer_id"], "retention_offer", known,
                              playbook="retention_offer", decided_at=decided)
        rows.append(Row(f"a{k}", t["customer_id"], "retention_offer", "retention_offer",
                        decided, treated, known))
    # Every one of them would have gone silent for good within the window without the offer,
    # and none does with it (the effect is certain): the true effect is 1 for each decision.
    truth = true_effects(config, rows, delivered, timedelta(days=150))["retention_offer"]
    assert truth["decisions"] == len(rows)
    assert truth["true_churn_without"] == 1.0
    assert truth["true_effect"] == 1.0 and truth["true_effect_on_treated"] == 1.0
    assert truth["oracle_estimate"] == 1.0
    # With no effect configured, nothing changes in either world.
    none = SimConfig(customers=200, seed=11, days=400)
    assert true_effects(none, rows, delivered, timedelta(days=150))[
        "retention_offer"]["true_effect"] == 0.0
