"""BG/NBD baseline: fitted on data simulated from its own generative process (seeded numpy)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pytest
from scipy.optimize import check_grad

from tenure_cli import btyd
from tenure_cli.btyd import BGNBD, RFM, rfm_arrays, rfm_summary
from tenure_cli.evaluation import auc, calibration_table

TRUE = {"r": 0.25, "alpha": 4.0, "a": 0.8, "b": 2.5}  # alpha per week
HOLDOUT_WEEKS = 13.0  # about 90 days


@dataclass(frozen=True)
class Sim:
    x: np.ndarray  # repeat purchases in (0, T]
    t_x: np.ndarray
    T: np.ndarray
    holdout: np.ndarray  # purchases in (T, T + horizon]
    alive_at_T: np.ndarray  # latent: not yet dropped out at T


def simulate_bgnbd(
    n: int, r: float, alpha: float, a: float, b: float, horizon: float, seed: int,
    t_min: float = 26.0, t_max: float = 52.0,
) -> Sim:
    """BG/NBD generative process: Poisson(lambda) purchases, dropout w.p. p after each repeat.

    Customers are acquired at time 0 of their own clock (the first purchase, not counted) and
    observed for T ~ U(t_min, t_max) weeks, then for a holdout period of `horizon` weeks.
    """
    rng = np.random.default_rng(seed)
    lam = rng.gamma(r, 1.0 / alpha, n)
    p = rng.beta(a, b, n)
    T = rng.uniform(t_min, t_max, n)
    end = T + horizon
    x, t_x, holdout = np.zeros(n), np.zeros(n), np.zeros(n)
    alive = np.ones(n, dtype=bool)
    now = np.zeros(n)
    active = np.ones(n, dtype=bool)  # still purchasing and not past the end of the holdout
    while active.any():
        idx = np.flatnonzero(active)
        now[idx] += rng.exponential(1.0 / lam[idx])
        over = now[idx] > end[idx]
        active[idx[over]] = False
        idx = idx[~over]
        cal = now[idx] <= T[idx]
        x[idx[cal]] += 1
        t_x[idx[cal]] = now[idx[cal]]
        holdout[idx[~cal]] += 1
        drop = rng.random(idx.size) < p[idx]
        active[idx[drop]] = False
        alive[idx[drop & cal]] = False
    return Sim(x, t_x, T, holdout, alive)


@pytest.fixture(scope="module")
def sim() -> Sim:
    return simulate_bgnbd(5_000, **TRUE, horizon=HOLDOUT_WEEKS, seed=20240601)


@pytest.fixture(scope="module")
def fitted(sim: Sim) -> BGNBD:
    return BGNBD().fit(sim.x, sim.t_x, sim.T)


@pytest.fixture(scope="module")
def truth() -> BGNBD:
    return BGNBD.from_params(**TRUE)


# ------------------------------------------------------------------------------ fitting


def test_fit_recovers_the_generating_parameters(sim: Sim, fitted: BGNBD, truth: BGNBD) -> None:
    assert fitted.converged
    assert fitted.r == pytest.approx(TRUE["r"], rel=0.2)
    assert fitted.alpha == pytest.approx(TRUE["alpha"], rel=0.25)
    # a and b are weakly identified on their own; the mean dropout probability is not
    mean_p = fitted.a / (fitted.a + fitted.b)
    assert mean_p == pytest.approx(TRUE["a"] / (TRUE["a"] + TRUE["b"]), rel=0.2)
    assert fitted.a == pytest.approx(TRUE["a"], rel=0.5)
    assert fitted.b == pytest.approx(TRUE["b"], rel=0.5)
    # the MLE is at least as likely as the truth
    xk, inv = np.unique(sim.x, return_inverse=True)
    ones = np.ones(sim.x.size)
    at_truth, _ = btyd._neg_ll_and_grad(
        np.log(list(TRUE.values())), xk, inv, sim.x, sim.t_x, sim.T, ones, 0.0
    )
    assert fitted.log_likelihood >= -at_truth * sim.x.size - 1e-6


def test_fitted_predictions_match_the_true_model(sim: Sim, fitted: BGNBD, truth: BGNBD) -> None:
    args = (sim.x, sim.t_x, sim.T)
    pa_fit, pa_true = fitted.p_alive(*args), truth.p_alive(*args)
    assert np.mean(np.abs(pa_fit - pa_true)) < 0.02
    assert np.max(np.abs(pa_fit - pa_true)) < 0.1
    ep_fit = fitted.expected_purchases(HOLDOUT_WEEKS, *args)
    ep_true = truth.expected_purchases(HOLDOUT_WEEKS, *args)
    assert ep_fit.sum() == pytest.approx(ep_true.sum(), rel=0.1)
    pn_fit = fitted.p_no_purchase(HOLDOUT_WEEKS, *args)
    pn_true = truth.p_no_purchase(HOLDOUT_WEEKS, *args)
    assert np.mean(np.abs(pn_fit - pn_true)) < 0.02


def test_predictions_are_calibrated_on_the_holdout(sim: Sim, fitted: BGNBD, truth: BGNBD) -> None:
    args = (sim.x, sim.t_x, sim.T)
    no_purchase = (sim.holdout == 0).astype(int)
    # with the true parameters the formulas are conditional expectations: unbiased by bin
    for row in calibration_table(no_purchase, truth.p_no_purchase(HOLDOUT_WEEKS, *args),
                                 bins=5, strategy="quantile"):
        assert row.mean_predicted is not None and row.observed_rate is not None
        assert abs(row.mean_predicted - row.observed_rate) < 0.05
    pn = fitted.p_no_purchase(HOLDOUT_WEEKS, *args)
    assert pn.mean() == pytest.approx(no_purchase.mean(), abs=0.02)
    ep = fitted.expected_purchases(HOLDOUT_WEEKS, *args)
    assert ep.sum() == pytest.approx(sim.holdout.sum(), rel=0.12)


def test_p_no_purchase_ranks_churners_above_stayers(sim: Sim, fitted: BGNBD) -> None:
    pn = fitted.p_no_purchase(HOLDOUT_WEEKS, sim.x, sim.t_x, sim.T)
    # observed churn on the held-out future period: no purchase in (T, T + 13 weeks]
    holdout_auc = auc((sim.holdout == 0).astype(int), pn)
    assert holdout_auc is not None and holdout_auc > 0.7
    # latent death among repeat buyers (with x = 0 nobody can have dropped out yet)
    rep = sim.x > 0
    dead_auc = auc((~sim.alive_at_T[rep]).astype(int), pn[rep])
    assert dead_auc is not None and dead_auc > 0.7


def test_gradient_is_exact() -> None:
    rng = np.random.default_rng(1)
    x = rng.integers(0, 6, 300).astype(float)
    T = rng.uniform(0.5, 10, 300)
    t_x = np.where(x > 0, rng.uniform(0, 1, 300) * T, 0.0)
    xk, inv = np.unique(x, return_inverse=True)
    w = rng.integers(1, 4, 300).astype(float)

    def f(lp: np.ndarray) -> float:
        return btyd._neg_ll_and_grad(lp, xk, inv, x, t_x, T, w, 0.05)[0]

    def g(lp: np.ndarray) -> np.ndarray:
        return btyd._neg_ll_and_grad(lp, xk, inv, x, t_x, T, w, 0.05)[1]

    for lp in ([0.1, -0.3, 0.2, 0.5], [-1.4, 1.0, -0.5, 2.0], [0.0, 0.0, 0.0, -1.0]):
        assert check_grad(f, g, np.array(lp)) < 1e-5


def test_fit_is_robust_to_thin_history() -> None:
    only_zeros = BGNBD().fit([0, 0, 0], [0, 0, 0], [5, 10, 20])
    pn = only_zeros.p_no_purchase(10, [0, 0], [0, 0], [0, 20])
    assert np.all(np.isfinite(pn)) and np.all((pn >= 0) & (pn <= 1))
    one = BGNBD().fit([0], [0], [0])  # a single customer seen once, today
    assert np.isfinite(one.p_no_purchase(90, 0, 0, 0))
    small = BGNBD().fit([0, 1, 5, 2], [0, 3, 9, 4], [10, 10, 10, 10], penalizer=0.1)
    assert all(np.isfinite(v) and v > 0 for v in small.params.values())


def test_penalizer_shrinks_parameters(sim: Sim) -> None:
    penalised = BGNBD().fit(sim.x[:1000], sim.t_x[:1000], sim.T[:1000], penalizer=1.0)
    plain = BGNBD().fit(sim.x[:1000], sim.t_x[:1000], sim.T[:1000])
    assert sum(v**2 for v in penalised.params.values()) < sum(v**2 for v in plain.params.values())


def test_fit_is_invariant_to_the_time_unit(sim: Sim) -> None:
    x, t_x, T = sim.x[:1000], sim.t_x[:1000], sim.T[:1000]
    in_weeks = BGNBD().fit(x, t_x, T)
    in_days = BGNBD().fit(x, t_x * 7, T * 7)
    assert in_days.alpha == pytest.approx(in_weeks.alpha * 7, rel=1e-3)
    assert in_days.r == pytest.approx(in_weeks.r, rel=1e-3)
    assert in_days.a == pytest.approx(in_weeks.a, rel=1e-2)
    assert in_days.log_likelihood == pytest.approx(
        in_weeks.log_likelihood - x.sum() * np.log(7), rel=1e-6
    )


def test_invalid_inputs_are_rejected(truth: BGNBD) -> None:
    with pytest.raises(ValueError):
        truth.p_alive([1], [5.0], [4.0])  # t_x > T
    with pytest.raises(ValueError):
        truth.p_alive([0], [1.0], [4.0])  # x = 0 needs t_x = 0
    with pytest.raises(ValueError):
        truth.p_alive([1.5], [1.0], [4.0])
    with pytest.raises(ValueError):
        truth.p_no_purchase(-1.0, 1, 1.0, 2.0)
    with pytest.raises(RuntimeError):
        BGNBD().p_alive(0, 0, 1)
    with pytest.raises(ValueError):
        BGNBD().fit([], [], [])


# -------------------------------------------------------------------------- predictions


def test_p_alive_bounds_and_single_purchase_customers(sim: Sim, truth: BGNBD) -> None:
    pa = truth.p_alive(sim.x, sim.t_x, sim.T)
    assert np.all((pa >= 0) & (pa <= 1))
    assert np.all(pa[sim.x == 0] == 1.0)
    # a long silence since the last purchase lowers P(alive); more purchases raise the stakes
    assert truth.p_alive(5, 1.0, 50.0) < truth.p_alive(5, 49.0, 50.0)
    assert truth.p_alive(20, 10.0, 50.0) < truth.p_alive(2, 10.0, 50.0)


def test_p_no_purchase_is_monotone_in_the_horizon(sim: Sim, truth: BGNBD) -> None:
    horizons = np.array([0.0, 1.0, 4.0, 13.0, 26.0, 52.0, 520.0])
    x, t_x, T = sim.x[:500, None], sim.t_x[:500, None], sim.T[:500, None]
    pn = truth.p_no_purchase(horizons[None, :], x, t_x, T)
    assert pn.shape == (500, horizons.size)
    assert np.all(pn[:, 0] == 1.0)
    assert np.all(np.diff(pn, axis=1) <= 1e-12)
    assert np.all((pn >= 0) & (pn <= 1))
    limit = 1 - truth.p_alive(x[:, 0], t_x[:, 0], T[:, 0])
    far = truth.p_no_purchase(1e40, x[:, 0], t_x[:, 0], T[:, 0])
    assert np.all(far >= limit - 1e-12)
    assert np.allclose(far, limit, atol=1e-6)
    # new customers with a single purchase today still get a well-defined value
    assert 0 < truth.p_no_purchase(13, 0, 0.0, 0.0) < 1


def test_p_no_purchase_matches_its_closed_form(truth: BGNBD) -> None:
    r, alpha, a, b = TRUE.values()
    x, t_x, T, h = 3, 20.0, 40.0, 13.0
    p_alive = 1 / (1 + a / (b + x - 1) * ((alpha + T) / (alpha + t_x)) ** (r + x))
    expected = (1 - p_alive) + p_alive * ((alpha + T) / (alpha + T + h)) ** (r + x)
    assert truth.p_no_purchase(h, x, t_x, T) == pytest.approx(expected, rel=1e-12)


def test_expected_purchases_closed_form_agrees_with_monte_carlo_and_quadrature(
    truth: BGNBD,
) -> None:
    # alive posterior: lambda ~ Gamma(r+x, alpha+T), p ~ Beta(a, b+x); E = (1-e^{-lambda p t})/p
    r, alpha, a, b = TRUE.values()
    x, t_x, T, t = 2, 30.0, 40.0, 10.0
    rng = np.random.default_rng(7)
    lam = rng.gamma(r + x, 1.0 / (alpha + T), 400_000)
    p = rng.beta(a, b + x, 400_000)
    mc = truth.p_alive(x, t_x, T) * np.mean(-np.expm1(-lam * p * t) / p)
    assert truth.expected_purchases(t, x, t_x, T) == pytest.approx(mc, rel=0.01)
    xs = np.array([0.0, 1.0, 5.0, 40.0])
    txs = np.array([0.0, 3.0, 20.0, 39.0])
    Ts = np.full(4, 40.0)
    ts = np.array([1.0, 10.0, 90.0, 500.0])
    closed = truth.expected_purchases(ts, xs, txs, Ts)
    quad = truth.p_alive(xs, txs, Ts) * truth._alive_mean_quadrature(
        ts, r + xs, alpha + Ts, b + xs
    )
    assert closed == pytest.approx(quad, rel=1e-6)
    assert truth.expected_purchases(0.0, 2, 30.0, 40.0) == 0.0


def test_expected_purchases_in_degenerate_regions() -> None:
    # a = 1 makes the closed form 0/0 and a + b - 1 <= 0 puts 2F1 at a pole: quadrature
    for a, b in ((1.0, 2.0), (0.3, 0.5)):
        m = BGNBD.from_params(r=0.5, alpha=2.0, a=a, b=b)
        near = BGNBD.from_params(r=0.5, alpha=2.0, a=a * (1 + 1e-3), b=b * (1 + 1e-3))
        ep = m.expected_purchases(10.0, [0, 3], [0.0, 4.0], [5.0, 5.0])
        assert np.all(np.isfinite(ep)) and np.all(ep > 0)
        ep_near = near.expected_purchases(10.0, [0, 3], [0.0, 4.0], [5.0, 5.0])
        assert ep == pytest.approx(ep_near, rel=5e-3)


def test_predictions_are_fast_for_tens_of_thousands(truth: BGNBD) -> None:
    big = simulate_bgnbd(50_000, **TRUE, horizon=0.0, seed=9)
    start = time.perf_counter()
    truth.p_alive(big.x, big.t_x, big.T)
    truth.p_no_purchase(HOLDOUT_WEEKS, big.x, big.t_x, big.T)
    truth.expected_purchases(HOLDOUT_WEEKS, big.x, big.t_x, big.T)
    assert time.perf_counter() - start < 1.0


# ---------------------------------------------------------------------------- rfm_summary


def test_rfm_summary_conventions() -> None:
    d = datetime(2024, 1, 1, 9, tzinfo=UTC)
    end = datetime(2024, 3, 1, 12, tzinfo=UTC)
    log = [
        ("a", d),
        ("a", d + timedelta(hours=5)),  # same day: one purchase
        ("a", d + timedelta(days=14)),
        ("a", end),  # exactly at calibration end: counts
        ("a", end + timedelta(seconds=1)),  # after: ignored
        ("b", d + timedelta(days=30)),
        ("late", end + timedelta(days=1)),  # first purchase after calibration end: excluded
    ]
    days = rfm_summary(log, end)
    assert set(days) == {"a", "b"}
    assert days["a"] == RFM(frequency=2, recency=60.0, T=60.0)
    assert days["b"] == RFM(frequency=0, recency=0.0, T=30.0)
    weeks = rfm_summary(log, end, unit_days=7.0)
    assert weeks["a"].recency == pytest.approx(60 / 7) and weeks["a"].frequency == 2
    ids, x, t_x, T = rfm_arrays(days)
    assert ids == ["a", "b"] and x.tolist() == [2, 0] and T.tolist() == [60.0, 30.0]
    assert t_x.tolist() == [60.0, 0.0]


def test_rfm_summary_buckets_aware_times_by_utc_day() -> None:
    plus8 = timezone(timedelta(hours=8))
    # 2024-01-02 07:00 +08:00 is 2024-01-01 23:00 UTC: same UTC day as the first purchase
    log = [("a", datetime(2024, 1, 1, 1, tzinfo=UTC)), ("a", datetime(2024, 1, 2, 7, tzinfo=plus8))]
    s = rfm_summary(log, datetime(2024, 1, 10, tzinfo=UTC))
    assert s["a"].frequency == 0 and s["a"].T == 9.0


def test_rfm_summary_feeds_the_model_end_to_end() -> None:
    # a raw purchase log from the BG/NBD process in days, summarised, fitted, then scored
    # against "no purchase in the next 90 days" read from the same log
    rng = np.random.default_rng(11)
    start = datetime(2024, 1, 1, tzinfo=UTC)
    cal_end = start + timedelta(days=270)
    log: list[tuple[int, datetime]] = []
    for i in range(1_500):
        lam, p = rng.gamma(0.5, 1.0 / 20.0), rng.beta(0.8, 2.5)  # per day
        t = float(rng.uniform(0, 180))
        log.append((i, start + timedelta(days=t)))
        while True:
            t += rng.exponential(1.0 / lam)
            if t > 360:
                break
            log.append((i, start + timedelta(days=t)))
            if rng.random() < p:
                break
    s = rfm_summary(log, cal_end)
    ids, x, t_x, T = rfm_arrays(s)
    m = BGNBD().fit(x, t_x, T)
    pn = m.p_no_purchase(90.0, x, t_x, T)
    bought = {c for c, ts in log if cal_end < ts <= cal_end + timedelta(days=90)}
    churned = np.array([c not in bought for c in ids], dtype=int)
    assert len(s) == 1_500 and np.all((pn >= 0) & (pn <= 1))
    assert pn.mean() == pytest.approx(churned.mean(), abs=0.05)
    holdout_auc = auc(churned, pn)
    assert holdout_auc is not None and holdout_auc > 0.7
