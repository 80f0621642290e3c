"""A ceiling for the `purchases` evaluation: each customer's true churn probability, given their
purchase history up to as_of AND their own simulated parameters (tenure_cli.simulator).

It is not a baseline: no model sees those parameters. Ranking by the true posterior
P(churn | what it knows) maximises expected AUC among rankings that know as much, and the
history is part of what it knows, so no ranking from the history alone beats it in
expectation (on one sample, only by noise). What a history-only ranking can reach is lower
(the same posterior averaged over the population's parameters).

The process it inverts (`_purchase_persona` / `_purchase_events`): a customer joins with a
purchase; each gap to the next purchase is exponential, with the rate in force at the purchase
that opens it (the purchase rate times the weekly/December season); they drop out at
D = join + Exp(hazard), drawn by a separate walk (a geometric number, with the dropout chance p,
of Exp(rate) steps: exponential with hazard = rate * p) and independent of the purchases; no
purchase happens after D; a share of those who drop out come back after a delay uniform on
RETURN_DELAY_DAYS, buying at the return and from then on without dropping out again. The
"fading" before dropout (slower purchases in the last 0-90 days) is left out: marginalising
over it, or knowing each customer's fading, moved the AUC by under 0.0001 on the eval's run.

A second, lower ceiling (`purchase_bayes`): the best ranking from the history alone. It
knows the population the parameters are drawn from (the simulator's prior, on a grid), not
each customer's, and ranks by the posterior P(churn | history) under that prior, which
maximises expected AUC among rankings that see only the history. Any model that sees only
the purchase history can reach at most this, in expectation; the gap from it to the oracle
is what the unseen parameters are worth.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime

import numpy as np
from scipy.special import betainc, gammainc, logsumexp

from tenure_cli.simulator import SimConfig, _rng, _season, persona

__all__ = [
    "DROPOUT_PRIOR", "RATE_PRIOR", "RETURN_DELAY_DAYS", "RETURN_SHARE", "churn_probability",
    "history_churn_probability", "population_grid", "purchase_bayes", "purchase_latents",
    "purchase_oracle",
]

# The simulator's return mechanism (`_purchase_persona`): 8 % of those who drop out come
# back 200 to 500 days later.
RETURN_SHARE = 0.08
RETURN_DELAY_DAYS = (200.0, 500.0)
# The population prior of `_purchase_persona`: purchase rate per day ~ Gamma(shape, scale),
# per-purchase dropout chance ~ Beta(a, b).
RATE_PRIOR = (0.7, 1 / 9.0)
DROPOUT_PRIOR = (1.0, 6.0)
_MIN_RATE = 1e-4  # the simulator's floor on every exponential rate


def _exp_integral(k: float | np.ndarray, width: float | np.ndarray) -> np.ndarray:
    """The integral of exp(-k v) for v in [0, width], elementwise, stable as k -> 0."""
    k, width = np.asarray(k, dtype=np.float64), np.asarray(width, dtype=np.float64)
    return np.where(k * width < 1e-12, width, -np.expm1(-k * width) / np.maximum(k, 1e-300))


def _ramp_weight(k: np.ndarray, width: float) -> np.ndarray:
    """The integral of (width - v) exp(-k v) for v in [0, width], elementwise in k >= 0:
    (k w + expm1(-k w)) / k^2, by its series where that cancels."""
    x = k * width
    small = x < 1e-3
    safe_k = np.where(small, 1.0, k)
    exact = (x + np.expm1(-x)) / safe_k**2
    series = width**2 * (0.5 - x / 6 + x * x / 24)
    return np.where(small, series, exact)


def _delayed_share(k: np.ndarray, r: float, lo: float, hi: float) -> np.ndarray:
    """The integral of exp(-k (r - u)) F(u) for u in [0, r], elementwise in k >= 0, where
    F(u) = clip((u - lo) / (hi - lo), 0, 1) is the CDF of a delay uniform on [lo, hi] (lo may
    be negative: a shifted CDF). Exact: F is linear on [lo, hi] and 1 above."""
    total = np.zeros_like(k)
    a, b = max(0.0, lo), min(r, hi)
    if b > a:  # the ramp: (u - lo) = (a - lo) + (width - v) with v = b - u
        total = total + np.exp(-k * (r - b)) * (
            (a - lo) * _exp_integral(k, b - a) + _ramp_weight(k, b - a)) / (hi - lo)
    a = max(0.0, hi)
    if r > a:  # F = 1
        total = total + _exp_integral(k, r - a)
    return total


def _log_weights(
    t: np.ndarray, as_of: float, horizon: float, g: np.ndarray, hazard: np.ndarray,
    return_share: float, return_delay: tuple[float, float],
) -> tuple[np.ndarray, np.ndarray]:
    """(log total weight, log churning weight) of the hypotheses of `churn_probability`'s
    derivation, relative to the factor they share (see `_log_prefix`); vectorised over any
    number of parameter points: g has shape (..., n) (the rate of the gap opened by each of
    the n purchases t), hazard shape (...)."""
    lo, hi = return_delay
    s, h = return_share, horizon
    gx = g[..., -1]
    k = gx + hazard
    r = float(as_of - t[-1])
    # Dropped out u days before as_of: hazard * integral of exp(-k (r - u)) over [0, r] ...
    dead = hazard * _exp_integral(k, r)
    dead_stays = dead  # ... of which no return so far, and (dead_churns) none in the window
    dead_churns = dead
    if s > 0:
        dead_stays = dead - s * hazard * _delayed_share(k, r, lo, hi)
        dead_churns = dead - s * hazard * _delayed_share(k, r, lo - h, hi - h)
    buy = gx / k * -np.expm1(-k * h)  # a purchase in the window, alive at as_of
    log_alive = -k * r
    with np.errstate(divide="ignore", invalid="ignore"):
        log_total = np.logaddexp(log_alive, np.log(np.maximum(dead_stays, 0.0)))
        log_churn = np.logaddexp(log_alive + np.log1p(-buy),
                                 np.log(np.maximum(dead_churns, 0.0)))
        # Came back at purchase q (a gap at least the shortest delay).
        if s > 0:
            gaps = np.diff(t)
            for q in np.flatnonzero(gaps >= lo) + 1:
                gap, g_prev = float(gaps[q - 1]), g[..., q - 1]
                v0, v1 = max(0.0, gap - hi), gap - lo
                kq = hazard + g_prev
                log_w = (hazard * float(t[-1] - t[q - 1]) + np.log(s * hazard / (hi - lo))
                         - kq * v0 + np.log(_exp_integral(kq, v1 - v0))
                         - np.log(g_prev) + g_prev * gap - gx * r)
                log_total = np.logaddexp(log_total, log_w)
                log_churn = np.logaddexp(log_churn, log_w - gx * h)
    return log_total, log_churn


def _log_prefix(t: np.ndarray, g: np.ndarray, hazard: np.ndarray) -> np.ndarray:
    """The log-likelihood every hypothesis shares: each completed gap at its rate, the
    customer still there at the last purchase (log of prod g_i exp(-g_i gap_i) times
    exp(-hazard (t_last - t_first))). Constant for known parameters, so `churn_probability`
    leaves it out; it is what weighs the parameter points against each other."""
    gaps = np.diff(t)
    done = g[..., :-1]
    return -hazard * float(t[-1] - t[0]) + np.sum(np.log(done) - done * gaps, axis=-1)


def _check_history(purchases: Sequence[float], as_of: float, horizon: float) -> np.ndarray:
    t = np.asarray(purchases, dtype=np.float64)
    if t.ndim != 1 or t.size == 0 or np.any(np.diff(t) < 0) or t[-1] > as_of:
        raise ValueError("purchases: a non-empty ascending sequence up to as_of")
    if not horizon > 0:
        raise ValueError("horizon must be > 0")
    return t


def churn_probability(
    purchases: Sequence[float],
    as_of: float,
    horizon: float,
    rates: float | Sequence[float],
    hazard: float,
    *,
    return_share: float = 0.0,
    return_delay: tuple[float, float] = RETURN_DELAY_DAYS,
) -> float:
    """P(no purchase in (as_of, as_of + horizon] | the purchases up to as_of), for a customer
    with known parameters, under the process of the module docstring. Times in days on any
    common origin; purchases[0] is the customer's first (joining) purchase.

    rates: the purchase rate of the gap opened by each purchase (one float: constant rate).
    hazard: the dropout hazard per day. return_share, return_delay: the return mechanism
    (assumed to need longer than the horizon: nobody drops out and comes back inside it).

    Derivation. Let r = as_of - (last purchase), g the last gap's rate, k = g + hazard. What
    precedes the last purchase is common to every hypothesis below except a return, so:
    - never dropped out by as_of: weight exp(-k r); then a purchase comes in the window
      before dropout with probability g/k (1 - exp(-k H));
    - dropped out u days before as_of (0 <= u <= r): weight hazard exp(-k (r - u)), times
      (1 - s F(u)) for not having come back yet (F: the delay's CDF, s: return_share); no
      purchase in the window unless the return falls in it: 1 - s F(u + H) of them churn;
    - came back at the purchase q after a gap G >= the shortest delay: dropped out v days
      into that gap, weight exp(hazard (t_last - t_{q-1})) * s hazard / (hi - lo) *
      integral of exp(-(hazard + g_{q-1}) v) over v in [max(0, G - hi), G - lo], divided by
      the gap's own likelihood g_{q-1} exp(-g_{q-1} G), times exp(-g r); they never drop out
      again, so they churn with probability exp(-g H).
    The answer is (churning weight) / (total weight); every integral is in closed form (F is
    piecewise linear).

    >>> round(churn_probability([0.0], 0.0, 90.0, 0.05, 0.0), 6)  # exp(-4.5)
    0.011109
    """
    t = _check_history(purchases, as_of, horizon)
    g = np.broadcast_to(np.asarray(rates, dtype=np.float64), t.shape)
    if np.any(g <= 0) or hazard < 0:
        raise ValueError("rates must be positive, hazard >= 0")
    log_total, log_churn = _log_weights(t, as_of, horizon, g, np.float64(hazard),
                                        return_share, return_delay)
    return float(min(1.0, math.exp(float(log_churn - log_total))))


def history_churn_probability(
    purchases: Sequence[float],
    as_of: float,
    horizon: float,
    rates: Sequence[float],
    dropouts: Sequence[float],
    prior: Sequence[float],
    *,
    seasons: Sequence[float] | None = None,
    return_share: float = 0.0,
    return_delay: tuple[float, float] = RETURN_DELAY_DAYS,
) -> float:
    """P(no purchase in (as_of, as_of + horizon] | the purchases up to as_of) for a customer
    whose parameters are unknown but drawn from a discrete prior: point i has purchase rate
    rates[i] per day, per-purchase dropout chance dropouts[i] (hazard = rate * dropout) and
    prior weight prior[i] (>= 0, any total). seasons: a multiplier of the rate for the gap
    each purchase opens (default 1). Rates are floored at the simulator's 1e-4 a day.

    The posterior average of `churn_probability` over the points, each weighted by its prior
    and the likelihood of the whole history (`_log_prefix` plus the hypotheses' weights):
    what the best ranking from the history alone computes when the prior is the population's.
    """
    t = _check_history(purchases, as_of, horizon)
    lam = np.asarray(rates, dtype=np.float64)
    p = np.asarray(dropouts, dtype=np.float64)
    w = np.asarray(prior, dtype=np.float64)
    season = np.ones_like(t) if seasons is None else np.asarray(seasons, dtype=np.float64)
    if (lam.ndim != 1 or lam.shape != p.shape or lam.shape != w.shape
            or season.shape != t.shape):
        raise ValueError("rates, dropouts and prior: one value per point; seasons: per purchase")
    if (np.any(lam <= 0) or np.any((p < 0) | (p > 1)) or np.any(w < 0) or not w.sum() > 0
            or np.any(season <= 0)):
        raise ValueError("rates and seasons > 0, dropouts in [0, 1], prior >= 0 and not all 0")
    g = np.maximum(lam[:, None] * season[None, :], _MIN_RATE)
    hazard = np.maximum(lam, _MIN_RATE) * p
    log_total, log_churn = _log_weights(t, as_of, horizon, g, hazard, return_share,
                                        return_delay)
    with np.errstate(divide="ignore"):
        base = np.log(w) + _log_prefix(t, g, hazard)
    return float(min(1.0, math.exp(logsumexp(base + log_churn) - logsumexp(base + log_total))))


def population_grid(
    rate_cells: int = 90, dropout_cells: int = 40, max_rate: float = 3.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The simulator's population prior (`_purchase_persona`: rate ~ Gamma(0.7, scale 1/9),
    dropout ~ Beta(1, 6)) on a product grid: (rates, dropouts, prior), one entry per point,
    prior the exact probability of each cell, each point at its cell's geometric middle.
    Rates: rate_cells log-spaced cells from the simulator's floor (1e-4 a day; the first also
    takes the mass below it, since every smaller rate behaves as 1e-4) to max_rate (the
    mass above 3 a day is ~1e-12). Dropouts: [0, 1e-4] (at 5e-5), then log-spaced cells up
    to 1; log spacing matters: a long-lived heavy buyer's likelihood, exp(-rate * dropout *
    lifetime), lives at dropout chances far below an equal cell's width.

    On the eval's purchases run (3000 customers) the default 90 x 40 is within 0.0004 of a
    240 x 120 grid for every customer (AUC equal to 1e-5); 40 equal dropout cells were off
    by up to 0.06."""
    if rate_cells < 1 or dropout_cells < 2 or not max_rate > _MIN_RATE:
        raise ValueError("rate_cells >= 1, dropout_cells >= 2, max_rate above 1e-4")
    shape, scale = RATE_PRIOR
    edges = np.geomspace(_MIN_RATE, max_rate, rate_cells + 1)
    rate_mass = np.diff(gammainc(shape, edges / scale))
    rate_mass[0] += gammainc(shape, _MIN_RATE / scale)
    a, b = DROPOUT_PRIOR
    p_edges = np.concatenate(([0.0], np.geomspace(1e-4, 1.0, dropout_cells)))
    p_mass = np.diff(betainc(a, b, p_edges))
    p_mid = np.concatenate(([p_edges[1] / 2], np.sqrt(p_edges[2:] * p_edges[1:-1])))
    rates, dropouts = np.meshgrid(np.sqrt(edges[1:] * edges[:-1]), p_mid, indexing="ij")
    return rates.ravel(), dropouts.ravel(), np.outer(rate_mass, p_mass).ravel()


def purchase_latents(config: SimConfig, index: int) -> tuple[float, float]:
    """(purchase rate per day, per-purchase dropout chance) of customer `index` of a
    `purchases` simulation: the first two draws of their persona stream, replayed as
    `_purchase_persona` makes them (checked against the persona's stored rate)."""
    if config.profile != "purchases":
        raise ValueError("the oracle knows the `purchases` profile only")
    rng = _rng(config, index, "persona")
    rate = rng.gammavariate(*RATE_PRIOR)
    dropout = rng.betavariate(*DROPOUT_PRIOR)
    if rate != persona(config, index).purchase_rate:
        raise RuntimeError("the simulator's purchase persona changed: update tenure_cli.oracle")
    return rate, dropout


def purchase_oracle(
    config: SimConfig, customer_id: str, purchases: Sequence[datetime], as_of: datetime,
    horizon: float,
) -> float:
    """The ceiling's churn probability for one customer of a `purchases` simulation, from
    their customer-initiated purchases (any order; those after as_of are ignored) and their
    true parameters."""
    rate, dropout = purchase_latents(config, int(customer_id[len(config.id_prefix):]))
    days, seasons = _days_and_seasons(purchases, as_of)
    rates = [max(rate * s, _MIN_RATE) for s in seasons]
    return churn_probability(days, 0.0, horizon, rates, max(rate, _MIN_RATE) * dropout,
                             return_share=RETURN_SHARE)


def _days_and_seasons(
    purchases: Sequence[datetime], as_of: datetime,
) -> tuple[list[float], list[float]]:
    seen = sorted(p for p in purchases if p <= as_of)
    return ([(p - as_of).total_seconds() / 86_400.0 for p in seen], [_season(p) for p in seen])


def purchase_bayes(
    config: SimConfig, customers: Sequence[str], activity: Mapping[str, Sequence[datetime]],
    as_of: datetime, horizon: float,
    grid: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """The history-only ceiling for a `purchases` simulation: for each of `customers` (in
    order), P(churn | their customer-initiated purchases up to as_of) under the simulator's
    population prior (`population_grid()` unless `grid` is given), season and returns
    included, fading left out (as in `purchase_oracle`). activity: each customer's purchases
    (any order; those after as_of are ignored; at least one up to as_of)."""
    if config.profile != "purchases":
        raise ValueError("the history-only ceiling knows the `purchases` profile only")
    rates, dropouts, prior = population_grid() if grid is None else grid
    out = np.empty(len(customers))
    for i, c in enumerate(customers):
        days, seasons = _days_and_seasons(activity.get(c, ()), as_of)
        if not days:
            raise ValueError(f"customer {c}: no purchase up to as_of")
        out[i] = history_churn_probability(days, 0.0, horizon, rates, dropouts, prior,
                                           seasons=seasons, return_share=RETURN_SHARE)
    return out
