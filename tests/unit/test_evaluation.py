"""Churn evaluation metrics and the churn target, checked by hand on small examples."""

from __future__ import annotations

import itertools
import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from tenure_cli.evaluation import (
    align,
    auc,
    auc_difference,
    brier,
    by_group,
    calibration_table,
    churn_labels,
    last_activity_before,
    log_loss,
    recency_baseline,
    summarize,
    top_decile_lift,
)

AS_OF = datetime(2024, 6, 1, tzinfo=UTC)
H = 90
END = AS_OF + timedelta(days=H)
BEFORE = AS_OF - timedelta(days=10)


def _pairwise_auc(y: list[int], s: list[float]) -> float:
    pos = [b for a, b in zip(y, s, strict=True) if a == 1]
    neg = [b for a, b in zip(y, s, strict=True) if a == 0]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


# ------------------------------------------------------------------------------------ AUC


def test_auc_perfect_inverse_and_constant() -> None:
    assert auc([0, 0, 1, 1], [1, 2, 3, 4]) == 1.0
    assert auc([0, 0, 1, 1], [4, 3, 2, 1]) == 0.0
    assert auc([1, 0, 1, 0], [7, 7, 7, 7]) == 0.5


def test_auc_hand_checked_with_ties() -> None:
    # positives score 1 and 3, negatives 1 and 2: pairs (1v1 tie .5, 1v2 0, 3v1 1, 3v2 1)
    assert auc([0, 1, 0, 1], [1, 1, 2, 3]) == pytest.approx(2.5 / 4)
    # three positives / three negatives, 8 of 9 pairs ordered correctly
    assert auc([0, 0, 1, 1, 0, 1], [0.1, 0.4, 0.35, 0.8, 0.2, 0.9]) == pytest.approx(8 / 9)


def test_auc_matches_pairwise_definition_on_tied_data() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 300).tolist()
    s = rng.integers(0, 8, 300).astype(float).tolist()  # heavy ties
    assert auc(y, s) == pytest.approx(_pairwise_auc(y, s), abs=1e-12)


def test_auc_handles_infinite_scores_and_is_rank_invariant() -> None:
    y = [0, 1, 1, 0, 1]
    s = [1.0, math.inf, 3.0, 2.0, math.inf]
    assert auc(y, s) == pytest.approx(_pairwise_auc(y, s))
    s2 = np.array([1.0, 5.0, 3.0, 2.0, 5.0])
    assert auc(y, np.exp(s2)) == auc(y, s2)


def test_auc_undefined_and_invalid_inputs() -> None:
    assert auc([1, 1, 1], [0.1, 0.2, 0.3]) is None
    assert auc([0, 0], [0.1, 0.2]) is None
    assert auc([], []) is None
    with pytest.raises(ValueError):
        auc([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError):
        auc([0, 1], [0.1])
    with pytest.raises(ValueError):
        auc([0, 1], [0.1, math.nan])


# ------------------------------------------------------------------- Brier, log loss, lift


def test_brier_hand_checked() -> None:
    # (0.1^2 + 0.1^2 + 0.4^2 + 0.5^2) / 4
    assert brier([1, 0, 1, 0], [0.9, 0.1, 0.6, 0.5]) == pytest.approx(0.1075)
    assert brier([1, 0], [1.0, 0.0]) == 0.0
    with pytest.raises(ValueError):
        brier([1], [1.2])


def test_log_loss_hand_checked_and_clipped() -> None:
    assert log_loss([1, 0], [0.8, 0.3]) == pytest.approx(-(math.log(0.8) + math.log(0.7)) / 2)
    assert math.isfinite(log_loss([1, 0], [0.0, 1.0]))
    assert log_loss([1, 0], [0.0, 1.0]) == pytest.approx(-math.log(1e-15), abs=1e-3)


def test_top_decile_lift_hand_checked() -> None:
    # 20 customers, 4 churners (base 0.2); top 10% = 2 customers, both churners: lift 5
    y = [1, 1] + [0] * 8 + [1, 1] + [0] * 8
    s = list(range(20, 0, -1))
    assert top_decile_lift(y, s) == pytest.approx(5.0)
    # inverse ranking: nobody in the top churns
    assert top_decile_lift(y, [-v for v in s]) == 0.0
    # k = ceil(0.1 * 30) = 3 exactly, despite 0.1 * 30 == 3.0000000000000004 in floats
    y30 = [1, 1, 1] + [0] * 24 + [1, 1, 1]
    assert top_decile_lift(y30, list(range(30, 0, -1))) == pytest.approx(1.0 / 0.2)


def test_top_decile_lift_ties_at_the_cut_are_shared_and_order_free() -> None:
    # n=10, k=1; the top score is shared by a churner and a non-churner: half a churner in
    # the single slot, rate 0.5 against a base rate of 0.2
    y = [1, 0, 1, 0, 0, 0, 0, 0, 0, 0]
    s = [9, 9, 1, 1, 1, 1, 1, 1, 1, 1]
    assert top_decile_lift(y, s) == pytest.approx(0.5 / 0.2)
    rng = np.random.default_rng(0)
    for _ in range(5):
        perm = rng.permutation(10)
        assert top_decile_lift(np.array(y)[perm], np.array(s)[perm]) == pytest.approx(2.5)
    assert top_decile_lift([0, 0, 0], [1, 2, 3]) is None


# ---------------------------------------------------------------------------- calibration


def test_calibration_table_uniform_bins() -> None:
    y = [0, 0, 1, 1, 1]
    p = [0.05, 0.15, 0.95, 1.0, 0.55]
    rows = calibration_table(y, p, bins=10)
    assert len(rows) == 10
    assert sum(r.n for r in rows) == 5
    assert rows[0].n == 1 and rows[0].mean_predicted == pytest.approx(0.05)
    assert rows[0].observed_rate == 0.0
    assert rows[9].n == 2  # 1.0 lands in the last bin
    assert rows[9].mean_predicted == pytest.approx(0.975) and rows[9].observed_rate == 1.0
    assert rows[3].n == 0 and rows[3].mean_predicted is None


def test_calibration_table_quantile_bins_are_balanced() -> None:
    rng = np.random.default_rng(1)
    p = rng.uniform(0, 1, 1000)
    y = (rng.uniform(0, 1, 1000) < p).astype(int)
    rows = calibration_table(y, p, bins=4, strategy="quantile")
    assert [r.n for r in rows] == [250, 250, 250, 250]
    for r in rows:
        assert r.mean_predicted is not None and r.observed_rate is not None
        assert abs(r.mean_predicted - r.observed_rate) < 0.1


# ------------------------------------------------------------------- summaries and groups


def test_summarize_and_align() -> None:
    ids, y, s = align({"a": 0, "b": 1, "c": 1, "d": 0}, {"a": 0.2, "b": 0.9, "c": 0.6, "d": 0.1})
    assert ids == ["a", "b", "c", "d"]
    out = summarize(y, s, probabilities=s)
    assert out["n"] == 4 and out["positives"] == 2 and out["base_rate"] == 0.5
    assert out["auc"] == 1.0 and out["top_decile_lift"] == 2.0
    assert out["brier"] == pytest.approx((0.04 + 0.01 + 0.16 + 0.01) / 4)
    assert "brier" not in summarize(y, s)
    with pytest.raises(KeyError):
        align({"a": 0, "b": 1}, {"a": 0.3})


def test_by_group_flags_small_groups() -> None:
    rng = np.random.default_rng(2)
    groups = ["retail"] * 200 + ["private"] * 12
    y = rng.integers(0, 2, 212)
    s = y + rng.normal(0, 1, 212)
    out = by_group(groups, y, s)
    assert list(out) == ["retail", "private"]
    retail, private = out["retail"], out["private"]
    assert retail["n"] == 200 and not retail["too_small"]
    assert retail["auc"] == pytest.approx(auc(y[:200], s[:200]))
    assert retail["score_q25"] <= retail["score_median"] <= retail["score_q75"]
    assert private["n"] == 12 and private["too_small"] and private["auc"] is None
    assert private["score_median"] == pytest.approx(float(np.median(s[200:])))


# ---------------------------------------------------------------------------- churn labels


def test_activity_exactly_at_as_of_is_outside_the_window() -> None:
    res = churn_labels({"c": [BEFORE, AS_OF]}, {}, AS_OF, H)
    assert res.labels == {"c": 1} and res.outcome["c"] == "inactive"


def test_activity_exactly_at_the_horizon_is_inside_the_window() -> None:
    res = churn_labels({"c": [BEFORE, END]}, {}, AS_OF, H)
    assert res.labels == {"c": 0} and res.outcome["c"] == "active"
    res = churn_labels({"c": [BEFORE, END + timedelta(microseconds=1)]}, {}, AS_OF, H)
    assert res.labels == {"c": 1}


def test_closure_in_the_window_is_churn_even_with_activity() -> None:
    act = {"a": [BEFORE, AS_OF + timedelta(days=5)], "b": [BEFORE, AS_OF + timedelta(days=5)]}
    closed = {"a": AS_OF + timedelta(days=30), "b": END}
    res = churn_labels(act, closed, AS_OF, H)
    assert res.labels == {"a": 1, "b": 1}
    assert res.outcome == {"a": "closed", "b": "closed"}


def test_closure_after_the_window_does_not_count() -> None:
    act = {"a": [BEFORE, AS_OF + timedelta(days=5)]}
    res = churn_labels(act, {"a": END + timedelta(days=1)}, AS_OF, H)
    assert res.labels == {"a": 0}


def test_customers_closed_by_as_of_or_first_seen_later_are_excluded() -> None:
    act = {
        "closed_before": [BEFORE],
        "closed_at_as_of": [BEFORE],
        "new": [AS_OF + timedelta(days=1), AS_OF + timedelta(days=20)],
        "ok": [BEFORE, AS_OF + timedelta(days=3)],
    }
    closed = {"closed_before": BEFORE + timedelta(days=1), "closed_at_as_of": AS_OF}
    res = churn_labels(act, closed, AS_OF, H)
    assert res.eligible == ("ok",)
    assert res.labels == {"ok": 0}
    assert res.excluded == {
        "closed_before": "already_closed",
        "closed_at_as_of": "already_closed",
        "new": "not_seen",
    }


def test_first_seen_makes_customers_without_activity_eligible() -> None:
    # opened an account before as_of but never did anything themselves: churned (inactive)
    res = churn_labels({}, {}, AS_OF, H, first_seen_by_customer={"x": BEFORE, "y": END})
    assert res.labels == {"x": 1}
    assert res.excluded == {"y": "not_seen"}


def test_watermark_resolves_online() -> None:
    act = {
        "active": [BEFORE, AS_OF + timedelta(days=2)],
        "quiet": [BEFORE],
        "closed": [BEFORE],
    }
    closed = {"closed": AS_OF + timedelta(days=3)}
    res = churn_labels(act, closed, AS_OF, H, watermark=AS_OF + timedelta(days=10))
    assert res.labels == {"active": 0, "closed": 1}
    assert res.unresolved == ("quiet",)
    assert res.eligible == ("active", "quiet", "closed")
    done = churn_labels(act, closed, AS_OF, H, watermark=END)
    assert done.labels == {"active": 0, "quiet": 1, "closed": 1} and done.unresolved == ()


def test_horizon_is_configurable() -> None:
    act = {"c": [BEFORE, AS_OF + timedelta(days=40)]}
    assert churn_labels(act, {}, AS_OF, 30).labels == {"c": 1}
    assert churn_labels(act, {}, AS_OF, 40).labels == {"c": 0}
    with pytest.raises(ValueError):
        churn_labels(act, {}, AS_OF, 0)


# ------------------------------------------------------------------------ recency baseline


def test_recency_baseline() -> None:
    act = {
        "a": [AS_OF - timedelta(days=30), AS_OF + timedelta(days=1)],
        "b": [AS_OF - timedelta(hours=12)],
        "c": [AS_OF + timedelta(days=2)],
    }
    last = last_activity_before(act, AS_OF)
    assert last == {"a": AS_OF - timedelta(days=30), "b": AS_OF - timedelta(hours=12), "c": None}
    scores = recency_baseline(last, AS_OF)
    assert scores == {"a": 30.0, "b": 0.5, "c": math.inf}
    assert recency_baseline(last, AS_OF, missing=999.0)["c"] == 999.0
    with pytest.raises(ValueError):
        recency_baseline({"a": AS_OF + timedelta(seconds=1)}, AS_OF)


def test_recency_baseline_ranks_quiet_customers_as_riskier() -> None:
    # customers buying every g days; the quieter (larger g) are likelier to be silent for 90d
    rng = np.random.default_rng(5)
    act: dict[str, list[datetime]] = {}
    for i in range(300):
        gap = float(rng.choice([3.0, 20.0, 200.0]))
        t = AS_OF - timedelta(days=400) + timedelta(days=float(rng.uniform(0, gap)))
        times = []
        while t <= END:
            times.append(t)
            t += timedelta(days=float(rng.exponential(gap)))
        act[f"c{i}"] = times
    res = churn_labels(act, {}, AS_OF, H)
    scores = recency_baseline(last_activity_before(act, AS_OF), AS_OF)
    _, y, s = align(res.labels, scores)
    assert auc(y, s) is not None and auc(y, s) > 0.75  # type: ignore[operator]


def test_auc_difference_is_a_tie_for_equal_scorers_and_a_win_for_a_better_one() -> None:
    rng = np.random.default_rng(5)
    y = (rng.random(600) < 0.3).astype(float)
    signal = y + rng.normal(0, 1.0, 600)
    # Two scorers of the same quality (independent noise): the interval holds 0.
    twin = y + rng.normal(0, 1.0, 600)
    tie = auc_difference(y, signal, twin, resamples=400)
    assert tie is not None and tie["low"] < 0 < tie["high"]
    # A clearly better one: the whole interval is above 0, and the point is the AUC gap.
    worse = y + rng.normal(0, 3.0, 600)
    win = auc_difference(y, signal, worse, resamples=400)
    assert win is not None and win["low"] > 0
    assert win["difference"] == pytest.approx(auc(y, signal) - auc(y, worse))
    assert auc_difference([1, 1], [0.1, 0.2], [0.2, 0.1]) is None
