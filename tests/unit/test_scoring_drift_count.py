"""The model card counts ADWIN's drift detections (`drift_detector.detections`, and the
`tenure_scoring_model_drift_detections` gauge made from it) as the drift events it records.

River's ADWIN (0.26) resets its own detection count on the first update after a detection, so
the card counts detections in the learner state (this test failed while it read ADWIN's)."""

from __future__ import annotations

import random

from services.scoring.domain import REFERENCE
from services.scoring.learning import Label, LearnerState, Policy, card, learn


def test_the_card_counts_every_drift_detection() -> None:
    # A concept that flips twice: silence is churn, then activity is, then silence again.
    rng = random.Random(7)
    labels = []
    for i in range(3000):
        recency = rng.uniform(0, 120)
        silent = recency > 45
        labels.append(Label(i, dict(REFERENCE, recency_days=recency),
                            silent if (i // 1000) % 2 == 0 else not silent))
    state = LearnerState.fresh(horizon_days=90, min_labels=10, champion="btyd-logit",
                               challenger="hoeffding-tree", window=2000, cuts=(0.25, 0.5, 0.75))
    out = learn(state, labels, Policy(promotion="approve"))
    detected = [e for e in out.events if e["kind"] == "drift"]
    assert len(detected) >= 2
    assert card(state, Policy())["drift_detector"]["detections"] == len(detected)
