"""Pure domain logic of the four services (no I/O)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from services.lifecycle.domain import transitions
from services.profile.domain import snapshot_from_view
from services.profile.view import compute_view
from services.scoring.domain import REFERENCE, band_of, features_at, reasons_for, recency_prior
from services.scoring.model import ChurnModel
from shared.events import ProfileSnapshot, Stage

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def test_profile_snapshot_counts_open_products_and_balances_only() -> None:
    customer = {
        "registered": True,
        "registered_at": T0 - timedelta(days=400),
        "last_activity_at": T0 - timedelta(days=10),
        "transaction_count": 12,
        "consent": {"email:marketing": True},
        "accounts": [
            {"product_type": "current", "balance": Decimal("100.50"), "closed_at": None},
            {"product_type": "savings", "balance": Decimal("900"), "closed_at": None},
            {"product_type": "card", "balance": Decimal("-50"), "closed_at": T0},
        ],
    }
    s = snapshot_from_view(customer, compute_view(customer, T0, None, [], {}), [])
    assert s.products == {"current": 1, "savings": 1}
    assert s.total_balance == Decimal("1000.50")
    assert s.features["recency_days"] == 10.0
    assert s.features["tenure_days"] == 400.0
    assert s.features["accounts_closed"] == 1.0
    assert s.consent == {"email:marketing": True}


def test_recency_grows_with_silence_at_scoring_time() -> None:
    snap = ProfileSnapshot(as_of=T0, last_activity_at=T0 - timedelta(days=5), transaction_count=3)
    early = features_at(snap, T0)
    later = features_at(snap, T0 + timedelta(days=60))
    assert (early["recency_days"], later["recency_days"]) == (5.0, 65.0)
    assert recency_prior(later) > recency_prior(early)


def test_bands_follow_the_cut_points() -> None:
    cuts = (0.2, 0.5, 0.8)
    assert [band_of(p, cuts).value for p in (0.0, 0.2, 0.49, 0.5, 0.8, 1.0)] == [
        "low", "medium", "medium", "high", "critical", "critical"
    ]


def test_reasons_are_positive_contributions_largest_first() -> None:
    features = dict(REFERENCE, recency_days=80.0, accounts_closed=2.0)
    reasons = reasons_for(lambda x: recency_prior(x), features, top=3)
    assert [r.feature for r in reasons] == ["recency_days", "accounts_closed"]
    assert reasons[0].contribution > reasons[1].contribution > 0
    assert reasons[0].text == "no customer-initiated activity for 80 days"


def test_reasons_contract_holds_for_every_model() -> None:
    """Any predictor (prior, untrained and trained river pipeline) yields ordered reasons."""
    trained = ChurnModel(horizon_days=90, min_labels=0)
    for i in range(200):
        silent = i % 2 == 0
        trained.learn(dict(REFERENCE, recency_days=80.0 if silent else 3.0), silent)
    models = [ChurnModel(horizon_days=90, min_labels=10), trained]
    features = dict(REFERENCE, recency_days=85.0)
    for model in models:
        reasons = reasons_for(model.predict, features, top=3)
        assert reasons, model.active_name
        contributions = [r.contribution for r in reasons]
        assert contributions == sorted(contributions, reverse=True)
        assert all(c > 0 for c in contributions)
    assert trained.predict(features) > trained.predict(REFERENCE)


def test_lifecycle_new_customer_with_activity_goes_prospect_then_onboarding() -> None:
    snap = ProfileSnapshot(as_of=T0, registered=True, transaction_count=1,
                           first_activity_at=T0 + timedelta(hours=1))
    steps = transitions(None, snap, T0)
    assert [(t.from_stage, t.to_stage) for t in steps] == [
        (None, Stage.prospect), (Stage.prospect, Stage.onboarding)
    ]
    assert steps[1].transition_at == T0 + timedelta(hours=1)
    assert transitions(Stage.onboarding, snap, T0) == []
