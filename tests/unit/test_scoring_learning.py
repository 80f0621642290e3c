"""Learning from labels (pure): prequential figures, test-then-train, treated customers,
drift on the error stream and the challenger's proposal."""

from __future__ import annotations

import math
import random

import pytest

from services.scoring.domain import REFERENCE
from services.scoring.learning import (
    Label,
    LearnerState,
    Policy,
    Prequential,
    challenger_better,
    learn,
)
from services.scoring.model import ChurnModel


def test_prequential_figures_on_a_hand_checked_sequence() -> None:
    m = Prequential(window=5, cuts=(0.25, 0.5, 0.75))
    sequence = [(1, 0.8), (0, 0.1), (1, 0.3), (0, 0.3), (0, 0.6), (1, 0.9)]
    for y, p in sequence:
        m.update(y, p)
    # The window keeps the last five: (0,.1) (1,.3) (0,.3) (0,.6) (1,.9).
    assert m.seen == 6 and len(m.recent) == 5
    # Pairs (positive, negative): .3>.1 yes, .3=.3 half, .3<.6 no; .9 beats all three.
    assert m.auc() == pytest.approx((1 + 0.5 + 0 + 3) / 6)
    expected_loss = -(math.log(0.9) + math.log(0.3) + math.log(0.7) + math.log(0.4)
                      + math.log(0.9)) / 5
    assert m.log_loss() == pytest.approx(expected_loss)
    assert m.brier() == pytest.approx((0.01 + 0.49 + 0.09 + 0.36 + 0.01) / 5)
    bands = {b["band"]: b for b in m.calibration()}
    assert bands["low"] == {"band": "low", "n": 1, "mean_predicted": 0.1, "observed_rate": 0.0}
    assert bands["medium"]["n"] == 2 and bands["medium"]["observed_rate"] == 0.5
    assert bands["high"] == {"band": "high", "n": 1, "mean_predicted": 0.6,
                             "observed_rate": 0.0}
    assert bands["critical"]["mean_predicted"] == 0.9
    assert m.auc(2) == 1.0  # the last two: (0,.6) (1,.9)


def test_single_class_window_has_no_auc() -> None:
    m = Prequential()
    for p in (0.2, 0.4):
        m.update(0, p)
    assert m.auc() is None and m.log_loss() is not None


def state(**kw: object) -> LearnerState:
    return LearnerState.fresh(horizon_days=90, min_labels=10, champion="btyd-logit",
                              challenger="hoeffding-tree", window=2000,
                              cuts=(0.25, 0.5, 0.75), **kw)  # type: ignore[arg-type]


def test_each_label_is_predicted_before_it_is_learnt() -> None:
    s = state()
    shadow = ChurnModel(horizon_days=90, min_labels=10)
    labels = [Label(i, dict(REFERENCE, recency_days=float(10 * i)), i % 2 == 0)
              for i in range(20)]
    out = learn(s, labels, Policy())
    for label in labels:
        assert out.champion_p[label.id] == shadow.model_probability(dict(label.facts))
        shadow.learn(dict(label.facts), label.churned)
    assert out.learnt == [label.id for label in labels]
    assert s.champion_metrics.seen == s.challenger_metrics.seen == s.prior_metrics.seen == 20


def test_treated_customers_labels_are_kept_out_of_learning_unless_weighted() -> None:
    labels = [Label(1, REFERENCE, False, treated=True), Label(2, REFERENCE, True)]
    s = state()
    out = learn(s, labels, Policy())
    assert out.skipped == [1] and out.learnt == [2] and s.treated_skipped == 1
    weighted = learn(state(), labels, Policy(treated_weight=0.5))
    assert weighted.learnt == [1, 2]


def concept(n: int, phase: int, rng: random.Random, start: int) -> list[Label]:
    """Phase 1: silence is churn. Phase 2: churn is a middle band of digital use, which no
    monotone model can fit and a tree can."""
    out = []
    for i in range(n):
        facts = dict(REFERENCE, recency_days=rng.uniform(0, 120),
                     digital_share=rng.uniform(0, 1))
        churned = (facts["recency_days"] > 45 if phase == 1
                   else 0.3 < facts["digital_share"] < 0.7)
        out.append(Label(start + i, facts, churned != (rng.random() < 0.03)))
    return out


@pytest.mark.parametrize("promotion", ["automatic", "approve"])
def test_a_concept_change_is_detected_and_the_challenger_proposed(promotion: str) -> None:
    rng = random.Random(1)
    policy = Policy(promotion=promotion, compare_window=500, min_compare=200)
    s = state()
    before = learn(s, concept(1500, 1, rng, 0), policy)
    assert not [e for e in before.events if e["kind"] == "proposal"]
    assert s.champion.kind == "btyd-logit"
    after = learn(s, concept(2500, 2, rng, 1500), policy)
    kinds = [e["kind"] for e in after.events]
    assert "drift" in kinds
    proposal = next(e for e in after.events if e["kind"] == "proposal")
    figures = proposal["figures"]
    assert figures["challenger"]["log_loss"] < figures["champion"]["log_loss"]
    assert (proposal["from"], proposal["to"]) == ("btyd-logit", "hoeffding-tree")
    if promotion == "automatic":
        assert "promotion" in kinds and s.champion.kind == "hoeffding-tree"
        assert s.proposal is None
    else:
        assert "promotion" not in kinds and s.champion.kind == "btyd-logit"
        assert s.proposal is not None and s.proposal["to"] == "hoeffding-tree"


def test_stratified_auc_counts_only_pairs_taken_in_the_same_week() -> None:
    m = Prequential()
    # Week 1 (base rate high): ranked right. Week 2 (base rate low): ranked wrong once.
    for y, p, week in [(1, 0.9, 1), (1, 0.8, 1), (0, 0.7, 1),
                       (1, 0.2, 2), (0, 0.3, 2), (0, 0.1, 2)]:
        m.update(y, p, week)
    # Pairs within a week: week 1 has 2 (both right), week 2 has 2 (one right): 3/4.
    assert m.stratified_auc() == pytest.approx(3 / 4)
    # Pooled, 9 pairs: week 1's positives beat all three negatives (6), week 2's positive
    # beats 0.1 only (1), so 7/9: cross-week pairs count for the pooled figure.
    assert m.auc() == pytest.approx(7 / 9)
    # Pairs from checkpoints written before strata (label, probability) form one stratum.
    old = Prequential()
    old.recent.extend([(1, 0.9), (0, 0.1)])
    assert old.stratified_auc() == old.auc() == 1.0


def filled(s: LearnerState, rows: list[tuple[int, float, float, int]], learnt: int) -> None:
    """Prequential windows as if `rows` (label, champion p, challenger p, week) were learnt."""
    for y, champion, challenger, week in rows:
        s.champion_metrics.update(y, champion, week)
        s.challenger_metrics.update(y, challenger, week)
    s.champion.labels_learnt = s.challenger.labels_learnt = learnt


def test_following_the_base_rate_from_week_to_week_does_not_win_a_promotion() -> None:
    """The challenger knows each week's churn rate but cannot tell customers apart within a
    week; the champion ranks within every week but is badly calibrated. Pooled over weeks the
    challenger looks better on both log loss and AUC; within weeks it ranks no one."""
    rng = random.Random(3)
    rows = []
    for week in range(10):
        rate = 0.05 + 0.09 * week
        for _ in range(100):
            risk = rng.random()
            y = 1 if rng.random() < min(rate * 2 * risk, 1.0) else 0
            rows.append((y, 0.3 + 0.6 * risk, rate, week))
    s = state()
    filled(s, rows, learnt=5000)
    policy = Policy(compare_window=1000, min_compare=500)
    assert s.challenger_metrics.log_loss(1000) < s.champion_metrics.log_loss(1000) * 0.99
    assert s.challenger_metrics.stratified_auc(1000) == pytest.approx(0.5)
    assert s.champion_metrics.stratified_auc(1000) > 0.75
    assert not challenger_better(s, policy)
    # Pooled over the weeks, the challenger also ranks better: the rule is what tells them
    # apart, not the data.
    assert s.challenger_metrics.auc(1000) > s.champion_metrics.auc(1000)


def test_no_comparison_before_both_models_have_learnt_the_minimum() -> None:
    rows = [(i % 2, 0.6 if i % 2 == 0 else 0.4, 0.9 if i % 2 else 0.1, 0) for i in range(1000)]
    policy = Policy(compare_window=1000, min_compare=800)
    young = state()
    filled(young, rows, learnt=799)
    assert not challenger_better(young, policy)
    grown = state()
    filled(grown, rows, learnt=800)
    assert challenger_better(grown, policy)


def test_a_challenger_must_stay_better_for_a_whole_window_before_it_is_proposed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Better at one comparison, worse at the next: no proposal. Better at every comparison
    for `compare_window` labels: proposed (and, automatic, promoted)."""
    from services.scoring import learning

    policy = Policy(compare_window=200, min_compare=10)
    s = state()
    verdicts: list[bool] = []
    monkeypatch.setattr(learning, "challenger_better", lambda state, policy: verdicts.pop(0))
    label = Label(1, REFERENCE, True)

    def check(at: int, better: bool) -> list[str]:
        s.labels_learnt = at
        verdicts.append(better)
        out = learning.Outcome()
        learning._consider(s, label, policy, out)
        return [e["kind"] for e in out.events]

    assert check(1000, True) == []  # better once: watched, not proposed
    assert s.better_since == 1000 and s.watch_until >= 1200
    assert check(1050, False) == [] and s.better_since is None  # not better: starts over
    assert check(1100, True) == [] and s.better_since == 1100
    assert check(1250, True) == []  # 150 labels of the 200 it must stay better for
    assert check(1300, True) == ["proposal", "promotion"]
    assert s.champion.kind == "hoeffding-tree" and s.better_since is None
