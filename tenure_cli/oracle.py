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
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime

import numpy as np

from tenure_cli.simulator import SimConfig, _rng, _season, persona

__all__ = ["RETURN_DELAY_DAYS", "RETURN_SHARE", "churn_probability", "purchase_oracle"]

# The simulator's return mechanism (`_purchase_persona`): 8 % of those who drop out come
# back 200 to 500 days later.
RETURN_SHARE = 0.08
RETURN_DELAY_DAYS = (200.0, 500.0)
_MIN_RATE = 1e-4  # the simulator's floor on every exponential rate


def _exp_integral(k: float | np.ndarray, width: float | np.ndarray) -> float | np.ndarray:
    """The integral of exp(-k v) for v in [0, width], stable as k -> 0."""
    return np.where(k * width < 1e-12, width, -np.expm1(-k * width) / np.maximum(k, 1e-300))


def churn_probability(
    purchases: Sequence[float],
    as_of: float,
    horizon: float,
    rates: float | Sequence[float],
    hazard: float,
    *,
    return_share: float = 0.0,
    return_delay: tuple[float, float] = RETURN_DELAY_DAYS,
    step: float = 1.0,
) -> float:
    """P(no purchase in (as_of, as_of + horizon] | the purchases up to as_of), for a customer
    with known parameters, under the process of the module docstring. Times in days on any
    common origin; purchases[0] is the customer's first (joining) purchase.

    rates: the purchase rate of the gap opened by each purchase (one float: constant rate).
    hazard: the dropout hazard per day. return_share, return_delay: the return mechanism.

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
    The answer is (churning weight) / (total weight); the u-integral with F in it is summed
    over `step`-day cells (exact in the exponential, F at the cell's middle).

    >>> round(churn_probability([0.0], 0.0, 90.0, 0.05, 0.0), 6)  # exp(-4.5)
    0.011109
    """
    t = np.asarray(purchases, dtype=np.float64)
    if t.ndim != 1 or t.size == 0 or np.any(np.diff(t) < 0) or t[-1] > as_of:
        raise ValueError("purchases: a non-empty ascending sequence up to as_of")
    g = np.broadcast_to(np.asarray(rates, dtype=np.float64), t.shape)
    if np.any(g <= 0) or hazard < 0 or horizon <= 0:
        raise ValueError("rates must be positive, hazard >= 0, horizon > 0")
    lo, hi = return_delay
    s, mu, gx, h = return_share, float(hazard), float(g[-1]), float(horizon)
    r = float(as_of - t[-1])
    k = gx + mu

    def delay_cdf(u: np.ndarray) -> np.ndarray:
        return np.clip((u - lo) / (hi - lo), 0.0, 1.0)

    # Dropped out u days before as_of: hazard * integral of exp(-k (r - u)) over [0, r] ...
    dead = mu * float(_exp_integral(k, r))
    dead_stays = dead  # ... of which no return so far, and (dead_churns) none in the window
    dead_churns = dead
    start = max(0.0, lo - h)
    if s > 0 and mu > 0 and r > start:
        edges = np.append(np.arange(start, r, step), r)
        a, b = edges[:-1], edges[1:]
        cells = mu * np.exp(-k * (r - b)) * _exp_integral(k, b - a)
        mid = (a + b) / 2
        dead_stays -= s * float(np.sum(cells * delay_cdf(mid)))
        dead_churns -= s * float(np.sum(cells * delay_cdf(mid + h)))
    buy = gx / k * -math.expm1(-k * h)  # a purchase in the window, alive at as_of
    log_alive = -k * r
    log_total = np.logaddexp(log_alive, math.log(dead_stays) if dead_stays > 0 else -np.inf)
    log_churn = np.logaddexp(log_alive + math.log1p(-buy) if buy < 1 else -np.inf,
                             math.log(dead_churns) if dead_churns > 0 else -np.inf)
    # Came back at purchase q.
    if s > 0 and mu > 0:
        gaps = np.diff(t)
        for q in np.flatnonzero(gaps >= lo) + 1:
            gap, g_prev = float(gaps[q - 1]), float(g[q - 1])
            v0, v1 = max(0.0, gap - hi), gap - lo
            kq = mu + g_prev
            log_w = (mu * float(t[-1] - t[q - 1]) + math.log(s * mu / (hi - lo))
                     - kq * v0 + math.log(float(_exp_integral(kq, v1 - v0)))
                     - math.log(g_prev) + g_prev * gap - gx * r)
            log_total = np.logaddexp(log_total, log_w)
            log_churn = np.logaddexp(log_churn, log_w - gx * h)
    return float(min(1.0, math.exp(log_churn - log_total)))


def purchase_latents(config: SimConfig, index: int) -> tuple[float, float]:
    """(purchase rate per day, per-purchase dropout chance) of customer `index` of a
    `purchases` simulation: the first two draws of their persona stream, replayed as
    `_purchase_persona` makes them (checked against the persona's stored rate)."""
    if config.profile != "purchases":
        raise ValueError("the oracle knows the `purchases` profile only")
    rng = _rng(config, index, "persona")
    rate = rng.gammavariate(0.7, 1 / 9.0)
    dropout = rng.betavariate(1.0, 6.0)
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
    seen = sorted(p for p in purchases if p <= as_of)
    days = [(p - as_of).total_seconds() / 86_400.0 for p in seen]
    rates = [max(rate * _season(p), _MIN_RATE) for p in seen]
    return churn_probability(days, 0.0, horizon, rates, max(rate, _MIN_RATE) * dropout,
                             return_share=RETURN_SHARE)
