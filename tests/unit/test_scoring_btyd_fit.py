"""The champion with BG/NBD's parameters fitted on the histories: exactly BG/NBD for repeat
customers until behaviour says otherwise, and labels no longer move the purchase process."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from services.scoring.btyd import BTYDLogisticClassifier
from shared.btyd import BGNBD

PARAMS = {"r": 0.45, "alpha": 7.2, "a": 1.1, "b": 9.0}


def _inputs(x: int, t_x: float, T: float, trend: float = 0.0) -> dict[str, float]:
    return {"recency_days": T - t_x, "tenure_days": T, "lifetime_events": x + 1.0,
            "purchase_trend": trend}


def test_with_the_fitted_process_and_no_behaviour_it_is_bg_nbd() -> None:
    model = BTYDLogisticClassifier(covariates=["purchase_trend"], horizon_days=90.0)
    model.fit_history(**PARAMS, customers=3000)
    reference = BGNBD.from_params(**PARAMS)
    rng = random.Random(1)
    for _ in range(200):
        x = rng.randint(1, 30)
        T = rng.uniform(1, 700)
        t_x = rng.uniform(0, T)
        ours = model.predict_proba_one(_inputs(x, t_x, T))[True]
        theirs = float(reference.churn_probability(90.0, np.array([x]), np.array([t_x]),
                                                   np.array([T]))[0])
        assert ours == pytest.approx(theirs, abs=2e-7), (x, t_x, T)  # (ours is clipped at 1e-7)
    assert model.parameters["r"] == pytest.approx(PARAMS["r"])
    assert model.history_fit == {**PARAMS, "customers": 3000}


def test_labels_move_behaviour_and_one_timers_but_not_the_fitted_process() -> None:
    model = BTYDLogisticClassifier(covariates=["purchase_trend"], horizon_days=90.0)
    model.fit_history(**PARAMS)
    before = list(model.theta[:4])
    rng = random.Random(2)
    for _ in range(500):
        trend = rng.uniform(-1, 1)
        x = rng.choice([0, 0, 2, 5])
        model.learn_one(_inputs(x, 10.0 if x else 0.0, 100.0, trend), trend < -0.3)
    assert model.theta[:4] == before and model.mean_theta[:4] == before
    assert model.beta["purchase_trend"] < 0  # falling pace: churn
    assert model.theta[4] != -3.0  # the one-time customers' intercept is learnt


@pytest.mark.parametrize("bad", [0.0, -1.0, math.inf, math.nan])
def test_unusable_parameters_are_refused(bad: float) -> None:
    model = BTYDLogisticClassifier()
    with pytest.raises(ValueError, match="positive and finite"):
        model.fit_history(**{**PARAMS, "a": bad})
    assert model.history_fit is None
