"""The purchases ceilings' probabilities (tenure_cli.oracle): hand-checkable cases and limits."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from tenure_cli.evaluation import auc
from tenure_cli.oracle import (
    RETURN_SHARE,
    churn_probability,
    history_churn_probability,
    population_grid,
    purchase_bayes,
    purchase_latents,
    purchase_oracle,
)
from tenure_cli.simulator import SimConfig, persona, simulate

H = 90.0


def closed_form(rate: float, hazard: float, silence: float) -> float:
    """Without returns: P(alive | silence) = 1 / (1 + mu/k (e^{k r} - 1)), k = rate + mu,
    and an alive customer buys in the window with probability rate/k (1 - e^{-k H})."""
    k = rate + hazard
    alive = 1.0 / (1.0 + hazard / k * math.expm1(k * silence))
    return 1.0 - alive * rate / k * -math.expm1(-k * H)


def test_purchase_at_as_of_is_alive_for_sure() -> None:
    # Just bought: alive; churns only if dropout or the next gap beats the window.
    p = churn_probability([0.0, 40.0, 100.0], 100.0, H, 0.05, 0.01)
    assert p == pytest.approx(1 - 0.05 / 0.06 * (1 - math.exp(-0.06 * H)), rel=1e-12)


def test_no_dropout_is_a_poisson_gap() -> None:
    # hazard 0: never leaves; P(no purchase in H) = exp(-rate H), whatever the silence.
    for silence in (0.0, 30.0, 400.0):
        assert churn_probability([0.0], silence, H, 0.02, 0.0) == pytest.approx(
            math.exp(-0.02 * H), rel=1e-9)


def test_long_silence_is_gone_and_recent_purchase_is_safer() -> None:
    recent = churn_probability([0.0, 95.0], 100.0, H, 0.1, 0.01)
    silent = churn_probability([0.0, 5.0], 100.0, H, 0.1, 0.01)
    assert recent < 0.5 < silent
    assert silent == pytest.approx(closed_form(0.1, 0.01, 95.0), rel=1e-12)
    assert churn_probability([0.0], 600.0, H, 0.1, 0.01) == pytest.approx(1.0, abs=1e-12)


def test_history_before_the_last_purchase_does_not_matter_without_returns() -> None:
    # Memoryless: only the silence since the last purchase counts.
    a = churn_probability([0.0, 1.0, 2.0, 50.0], 80.0, H, 0.05, 0.005)
    b = churn_probability([40.0, 50.0], 80.0, H, 0.05, 0.005)
    assert a == pytest.approx(b, rel=1e-12) == pytest.approx(closed_form(0.05, 0.005, 30.0))


def test_rates_to_zero_mean_certain_churn() -> None:
    # Nobody buys at a vanishing rate: no purchase in the window, dead or alive.
    assert churn_probability([0.0], 10.0, H, 1e-12, 1e-13) == pytest.approx(1.0, abs=1e-9)
    # A vanishing hazard with a steady rate: the Poisson gap again.
    assert churn_probability([0.0], 10.0, H, 0.03, 1e-15) == pytest.approx(math.exp(-2.7))


def test_returns_only_touch_long_silences() -> None:
    # A return needs >= 200 days after the dropout: a 60-day silence cannot come back in H.
    short = dict(purchases=[0.0], as_of=60.0, horizon=H, rates=0.2, hazard=0.05)
    assert churn_probability(**short, return_share=0.08) == pytest.approx(
        churn_probability(**short), rel=1e-12)
    # After 400 days of silence a fast buyer is surely gone; they come back in the window
    # with probability 0.08 * P(delay in (400 - u, 490 - u]) ~ 0.08 * 90 / 300 (dropout at
    # the last purchase, u = 400).
    p = churn_probability([0.0], 400.0, H, 0.5, 0.5, return_share=0.08)
    assert p == pytest.approx(1 - 0.08 * 90 / 300, abs=2e-3)


def test_a_customer_who_came_back_no_longer_drops_out() -> None:
    # A 300-day gap at a rate of 0.2 a day is all but impossible for a customer who stayed:
    # they left and came back, so only the Poisson gap stands between them and a purchase.
    # A 30-day silence then means nothing: exp(-0.2 H).
    history = [0.0, 10.0, 310.0, 315.0]
    p = churn_probability(history, 345.0, H, 0.2, 0.01, return_share=0.08)
    assert p == pytest.approx(math.exp(-0.2 * H), rel=1e-3)
    # Without returns the same 30 days of silence at that rate say "probably left".
    assert churn_probability(history, 345.0, H, 0.2, 0.01) == pytest.approx(
        closed_form(0.2, 0.01, 30.0), rel=1e-12)
    assert closed_form(0.2, 0.01, 30.0) > 0.9


def test_bad_input() -> None:
    with pytest.raises(ValueError):
        churn_probability([], 0.0, H, 0.1, 0.01)
    with pytest.raises(ValueError):
        churn_probability([5.0], 1.0, H, 0.1, 0.01)  # a purchase after as_of
    with pytest.raises(ValueError):
        churn_probability([0.0], 1.0, H, 0.0, 0.01)


def _small_simulation() -> tuple[SimConfig, datetime, dict[str, list[datetime]], list[str],
                                 np.ndarray, np.ndarray]:
    """A purchase log of 300 simulated customers: its config, as_of, purchases, the customers
    seen by as_of, their churn labels and their days of silence at as_of."""
    config = SimConfig(customers=300, seed=3, profile="purchases", days=700)
    as_of = datetime(2025, 3, 1, tzinfo=UTC)
    bought: dict[str, list[datetime]] = {}
    for e in simulate(config):
        bought.setdefault(e.customer_id, []).append(e.occurred_at)
    ids = [c for c, ts in bought.items() if ts[0] <= as_of]
    window = [any(as_of < t <= as_of + timedelta(days=H) for t in bought[c]) for c in ids]
    y = np.array([0.0 if w else 1.0 for w in window])
    recency = np.array([(as_of - max(t for t in bought[c] if t <= as_of)).days for c in ids])
    return config, as_of, bought, ids, y, recency


def test_oracle_on_a_small_simulation_beats_recency() -> None:
    config, as_of, bought, ids, y, recency = _small_simulation()
    oracle = np.array([purchase_oracle(config, c, bought[c], as_of, H) for c in ids])
    assert auc(y, oracle) > auc(y, recency)
    assert abs(oracle.mean() - y.mean()) < 0.06  # calibrated, roughly
    rate, dropout = purchase_latents(config, 0)
    assert rate == persona(config, 0).purchase_rate and 0 <= dropout <= 1


# The history-only ceiling: the posterior over a discrete prior of (rate, dropout chance).
COARSE = population_grid(30, 15)  # the population prior, coarse enough to be fast


def test_a_prior_on_one_point_is_the_oracle() -> None:
    # Known parameters: the posterior is the oracle's probability, returns and season included.
    history, seasons = [0.0, 10.0, 310.0, 315.0, 330.0], [1.0, 1.15, 0.92, 1.5, 1.15]
    for as_of in (330.0, 360.0, 700.0):
        bayes = history_churn_probability(history, as_of, H, [0.2], [0.05], [1.0],
                                          seasons=seasons, return_share=0.08)
        oracle = churn_probability(history, as_of, H, [0.2 * s for s in seasons], 0.2 * 0.05,
                                   return_share=0.08)
        assert bayes == pytest.approx(oracle, rel=1e-12)
    # A point of zero prior weight is ignored.
    two = history_churn_probability(history, 400.0, H, [0.2, 0.01], [0.05, 0.5], [3.0, 0.0],
                                    seasons=seasons, return_share=0.08)
    assert two == pytest.approx(churn_probability(
        history, 400.0, H, [0.2 * s for s in seasons], 0.01, return_share=0.08), rel=1e-12)


def test_two_rates_without_dropout_weigh_by_the_poisson_likelihood() -> None:
    # Nobody drops out: rate l gives the history [0, 10, 20] (as of 50) the likelihood
    # l^2 exp(-50 l) and no purchase in H the chance exp(-l H).
    rates, prior = [0.05, 0.2], [0.7, 0.3]
    like = [w * lam**2 * math.exp(-50 * lam) for lam, w in zip(rates, prior, strict=True)]
    want = sum(v * math.exp(-lam * H) for v, lam in zip(like, rates, strict=True)) / sum(like)
    got = history_churn_probability([0.0, 10.0, 20.0], 50.0, H, rates, [0.0, 0.0], prior)
    assert got == pytest.approx(want, rel=1e-12)


def test_a_purchase_at_as_of_means_alive() -> None:
    # Bought at as_of: alive for sure, so with one point the churn is dropout or a long gap.
    p = history_churn_probability([0.0, 40.0, 100.0], 100.0, H, [0.05], [0.2], [1.0])
    k = 0.05 * 1.2
    assert p == pytest.approx(1 - 0.05 / k * -math.expm1(-k * H), rel=1e-12)
    # Under the population prior, silence after it only adds risk.
    rates, dropouts, prior = COARSE
    now = history_churn_probability([0.0, 40.0, 100.0], 100.0, H, rates, dropouts, prior)
    later = history_churn_probability([0.0, 40.0, 100.0], 130.0, H, rates, dropouts, prior)
    assert 0 < now < later < 1


def test_more_silence_more_churn_under_the_population_prior() -> None:
    rates, dropouts, prior = COARSE
    history = [0.0, 7.0, 20.0, 26.0]
    # Without returns, monotone in the silence, towards certain churn.
    silences = [0.0, 5.0, 20.0, 60.0, 150.0, 400.0, 1000.0]
    p = [history_churn_probability(history, 26.0 + s, H, rates, dropouts, prior)
         for s in silences]
    assert all(a < b for a, b in zip(p, p[1:], strict=False))
    assert p[-1] > 0.999
    # With returns, too, while a return cannot fall in the window (silence + H < 200 days).
    p = [history_churn_probability(history, 26.0 + s, H, rates, dropouts, prior,
                                   return_share=RETURN_SHARE) for s in silences[:5]]
    assert all(a < b for a, b in zip(p, p[1:], strict=False))


def test_the_population_grid_is_the_prior() -> None:
    rates, dropouts, prior = population_grid()
    assert prior.sum() == pytest.approx(1.0, abs=1e-9)
    assert np.sum(prior * rates) == pytest.approx(0.7 / 9, rel=0.02)  # Gamma mean
    assert np.sum(prior * dropouts) == pytest.approx(1 / 7, rel=0.02)  # Beta mean
    assert rates.min() > 1e-4 and rates.max() < 3 and 0 < dropouts.min() < dropouts.max() < 1


def test_history_only_bad_input() -> None:
    rates, dropouts, prior = COARSE
    with pytest.raises(ValueError):
        history_churn_probability([], 0.0, H, rates, dropouts, prior)
    with pytest.raises(ValueError):
        history_churn_probability([5.0], 1.0, H, rates, dropouts, prior)  # after as_of
    with pytest.raises(ValueError):
        history_churn_probability([0.0], 1.0, H, [0.1, 0.2], [0.1], [1.0, 1.0])  # shapes
    with pytest.raises(ValueError):
        history_churn_probability([0.0], 1.0, H, [0.1], [0.1], [0.0])  # no prior mass
    with pytest.raises(ValueError):
        history_churn_probability([0.0], 1.0, H, [0.1], [1.5], [1.0])  # not a chance
    with pytest.raises(ValueError):
        history_churn_probability([0.0, 1.0], 1.0, H, [0.1], [0.1], [1.0], seasons=[1.0])
    with pytest.raises(ValueError):
        population_grid(0, 10)
    bank = SimConfig(customers=5, seed=1, profile="full")
    with pytest.raises(ValueError):
        purchase_bayes(bank, ["C000000"], {"C000000": []}, datetime(2025, 1, 1, tzinfo=UTC), H)
    shop = SimConfig(customers=5, seed=1, profile="purchases")
    late = {"C000000": [datetime(2025, 2, 1, tzinfo=UTC)]}  # nothing up to as_of
    with pytest.raises(ValueError):
        purchase_bayes(shop, ["C000000"], late, datetime(2025, 1, 1, tzinfo=UTC), H)


def test_history_only_ceiling_on_a_small_simulation_sits_between() -> None:
    config, as_of, bought, ids, y, recency = _small_simulation()
    bayes = purchase_bayes(config, ids, bought, as_of, H, grid=COARSE)
    assert auc(y, bayes) > auc(y, recency)
    assert abs(bayes.mean() - y.mean()) < 0.06  # calibrated, roughly
    assert np.all((bayes > 0) & (bayes <= 1))
