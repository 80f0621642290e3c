"""An online "buy till you die" classifier: BG/NBD's structure, dropout odds from behaviour.

BG/NBD (Fader, Hardie & Lee 2005) explains a purchase log with two hidden quantities: a
customer buys at their own rate while alive, and may leave for good after any purchase. Its
churn probability for the next H days is `1 - P(alive) x (1 - P(no purchase in H | alive))`,
both terms known in closed form from the customer's history (x repeat events, last event at
t_x, age T):

    log-odds(gone) = log a - log(b + x - 1) + (r + x) log((alpha + T) / (alpha + t_x))
    P(no purchase in H | alive) = ((alpha + T) / (alpha + T + H)) ** (r + x)

This estimator keeps that structure, which is what makes sparse, irregular histories (one to
three purchases, long gaps) rank well, and adds what a bank knows besides purchases: the log-
odds of having gone also move linearly with behavioural covariates (falling pace, logins,
salary, complaints, NPS, balances), standardised online. One-time customers, whom BG/NBD
always takes as alive, get their own learnt intercept. The parameters are learnt from the
resolved churn labels themselves (log loss, Adam with a decaying step and a floor), not by
fitting the purchase process, so the model is judged on the target it serves; predictions
use a running average of recent parameters, which steadies online estimates.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from river import base, preprocessing

_BETA1, _BETA2, _EPS = 0.9, 0.999, 1e-8
_LIMIT = 10.0  # log-parameters stay in [-10, 10]
_LOGIT_LIMIT = 30.0


def _value(variant: dict[str, float], x: dict[str, float], key: str, default: float) -> float:
    """`{**x, **variant}.get(key, default)` without building the merged dict."""
    return float(variant[key] if key in variant else x.get(key, default))


def _sigmoid(v: float) -> float:
    if v >= 0:
        return 1.0 / (1.0 + math.exp(-v))
    e = math.exp(v)
    return e / (1.0 + e)


class BTYDLogisticClassifier(base.Classifier):
    """P(churn within `horizon_days`) with BG/NBD's structure and logistic dropout covariates.

    Inputs (a dict): `recency` days since the last activity, `tenure` days since the first,
    `events` on record (at least one) and any `covariates`.

    >>> model = BTYDLogisticClassifier(covariates=["falling"])
    >>> for i in range(400):
    ...     gone = i % 2 == 0
    ...     model.learn_one({"recency_days": 80.0 if gone else 5.0, "tenure_days": 400.0,
    ...                      "lifetime_events": 12.0, "falling": 1.0 if gone else 0.0}, gone)
    >>> quiet = model.predict_proba_one({"recency_days": 80.0, "tenure_days": 400.0,
    ...                                  "lifetime_events": 12.0, "falling": 1.0})[True]
    >>> busy = model.predict_proba_one({"recency_days": 5.0, "tenure_days": 400.0,
    ...                                 "lifetime_events": 12.0, "falling": 0.0})[True]
    >>> quiet > 0.7 > 0.3 > busy
    True
    """

    def __init__(
        self,
        covariates: Iterable[str] = (),
        horizon_days: float = 90.0,
        learning_rate: float = 0.02,
        decay: float = 1e-3,
        min_learning_rate: float = 1e-3,
        l2: float = 1e-4,
        average_over: int = 5000,
        recency: str = "recency_days",
        tenure: str = "tenure_days",
        events: str = "lifetime_events",
    ):
        self.covariates = tuple(covariates)
        self.horizon_days = horizon_days
        self.learning_rate = learning_rate
        self.decay = decay
        self.min_learning_rate = min_learning_rate
        self.l2 = l2
        self.average_over = average_over
        self.recency = recency
        self.tenure = tenure
        self.events = events
        self.scaler = preprocessing.StandardScaler()
        # log r, log alpha, log a, log b (BG/NBD), and the one-time customers' dropout intercept
        self.theta = [0.0, math.log(30.0), 0.0, math.log(3.0), -3.0]
        self.beta = dict.fromkeys(self.covariates, 0.0)
        self.mean_theta = list(self.theta)
        self.mean_beta = dict(self.beta)
        self.steps = 0
        self._m: dict[Any, float] = {}
        self._v: dict[Any, float] = {}

    @property
    def _multiclass(self) -> bool:
        return False

    @property
    def parameters(self) -> dict[str, float]:
        """The averaged parameters predictions use (BG/NBD's r, alpha, a, b and the rest)."""
        r, alpha, a, b, single = self.mean_theta
        return {"r": math.exp(r), "alpha": math.exp(alpha), "a": math.exp(a),
                "b": math.exp(b), "one_time_log_odds": single,
                **{f"beta_{k}": v for k, v in self.mean_beta.items()}}

    # ------------------------------------------------------------------ the model

    def _split(self, x: dict[str, float]) -> tuple[float, float, float, dict[str, float]]:
        recency = max(float(x.get(self.recency, 0.0)), 0.0)
        tenure = max(float(x.get(self.tenure, 0.0)), recency)
        events = max(float(x.get(self.events, 1.0)), 1.0)
        covariates = {c: float(x.get(c, 0.0)) for c in self.covariates}
        return recency, tenure, events, covariates

    def _forward(
        self, recency: float, tenure: float, events: float, z: dict[str, float],
        theta: list[float], beta: dict[str, float],
    ) -> tuple[float, tuple[float, ...]]:
        log_r, log_alpha, log_a, log_b, single = theta
        r, alpha, b = math.exp(log_r), math.exp(log_alpha), math.exp(log_b)
        repeats = events - 1.0
        seen = math.log(alpha + tenure) - math.log(alpha + tenure - recency)
        behaviour = sum(beta[c] * z[c] for c in self.covariates)
        if repeats > 0:
            log_odds = log_a - math.log(b + repeats - 1.0) + (r + repeats) * seen + behaviour
        else:
            log_odds = single + r * seen + behaviour
        clipped = min(max(log_odds, -_LOGIT_LIMIT), _LOGIT_LIMIT)
        alive = _sigmoid(-clipped)
        ahead = math.log(alpha + tenure) - math.log(alpha + tenure + self.horizon_days)
        quiet = math.exp((r + repeats) * ahead)
        p = 1.0 - alive * (1.0 - quiet)
        return p, (r, alpha, b, repeats, tenure - recency, seen, log_odds != clipped,
                   alive, ahead, quiet)

    def predict_proba_one(self, x: dict[str, float]) -> dict[bool, float]:
        recency, tenure, events, raw = self._split(x)
        z = self.scaler.transform_one(raw) if raw else {}
        p, _ = self._forward(recency, tenure, events, z, self.mean_theta, self.mean_beta)
        p = min(max(p, 1e-7), 1.0 - 1e-7)
        return {False: 1.0 - p, True: p}

    def learn_one(self, x: dict[str, float], y: Any, w: float = 1.0) -> None:
        recency, tenure, events, raw = self._split(x)
        if raw:
            self.scaler.learn_one(raw)
        z = self.scaler.transform_one(raw) if raw else {}
        p, parts = self._forward(recency, tenure, events, z, self.theta, self.beta)
        r, alpha, b, repeats, last, seen, saturated, alive, ahead, quiet = parts
        p = min(max(p, 1e-7), 1.0 - 1e-7)
        d_p = w * (p - (1.0 if y else 0.0)) / (p * (1.0 - p))  # d log loss / d p
        d_odds = 0.0 if saturated else d_p * (1.0 - quiet) * alive * (1.0 - alive)
        d_quiet = d_p * alive
        h = self.horizon_days
        d_seen_alpha = alpha * (1.0 / (alpha + tenure) - 1.0 / (alpha + last))
        d_ahead_alpha = alpha * (1.0 / (alpha + tenure) - 1.0 / (alpha + tenure + h))
        shape = r + repeats if repeats > 0 else r
        grads = [
            d_odds * r * seen + d_quiet * quiet * r * ahead,
            d_odds * shape * d_seen_alpha + d_quiet * quiet * (r + repeats) * d_ahead_alpha,
            d_odds if repeats > 0 else 0.0,
            d_odds * -b / (b + repeats - 1.0) if repeats > 0 else 0.0,
            d_odds if repeats <= 0 else 0.0,
        ]
        self.steps += 1
        rate = max(self.learning_rate / math.sqrt(1.0 + self.decay * self.steps),
                   self.min_learning_rate)
        for i, g in enumerate(grads):
            step = self._adam(i, g, rate)
            self.theta[i] = min(max(self.theta[i] - step, -_LIMIT), _LIMIT)
        for c in self.covariates:
            self.beta[c] -= self._adam(c, d_odds * z[c] + self.l2 * self.beta[c], rate)
        share = 1.0 / min(self.steps, self.average_over)
        self.mean_theta = [m + share * (t - m) for m, t in zip(self.mean_theta, self.theta,
                                                              strict=True)]
        self.mean_beta = {c: self.mean_beta[c] + share * (self.beta[c] - self.mean_beta[c])
                          for c in self.covariates}

    def _adam(self, key: Any, gradient: float, rate: float) -> float:
        m = self._m.get(key, 0.0) * _BETA1 + (1.0 - _BETA1) * gradient
        v = self._v.get(key, 0.0) * _BETA2 + (1.0 - _BETA2) * gradient * gradient
        self._m[key] = m
        self._v[key] = v
        m_hat = m / (1.0 - _BETA1**self.steps)
        v_hat = v / (1.0 - _BETA2**self.steps)
        return rate * m_hat / (math.sqrt(v_hat) + _EPS)

    # ------------------------------------------------------------------ many variants at once

    def predict_proba_variants(
        self, x: dict[str, float], variants: list[dict[str, float]]
    ) -> list[float]:
        """P(churn) for `x` with each variant's inputs in place of its own: for every variant
        exactly `predict_proba_one({**x, **variant})[True]` (the same operations on the same
        values in the same order, as `_split`, the scaler and `_forward` do them), with what
        the variants share computed once: the parameters, the standardised covariates and
        their terms, the purchase history's terms. A variant re-standardises only the
        covariates it sets and recomputes the history only if it sets recency, tenure or
        events; one that sets no input this model reads has the probability of `x`.
        Counterfactual reasons ask for about twenty variants per score, most of them moving
        one or two covariates. tests/unit/test_scoring_reasons.py holds it to
        `predict_proba_one`."""
        recency, tenure, events, raw = self._split(x)
        z = self.scaler.transform_one(raw) if raw else {}
        theta, beta = self.mean_theta, self.mean_beta
        base, _ = self._forward(recency, tenure, events, z, theta, beta)
        base = min(max(base, 1e-7), 1.0 - 1e-7)
        log_r, log_alpha, log_a, log_b, single = theta
        r, alpha, b = math.exp(log_r), math.exp(log_alpha), math.exp(log_b)
        horizon = self.horizon_days

        def history(recency: float, tenure: float, events: float) -> tuple[float, float]:
            """`_forward`'s log-odds before the behaviour term, and its quiet chance."""
            repeats = events - 1.0
            seen = math.log(alpha + tenure) - math.log(alpha + tenure - recency)
            if repeats > 0:
                head = log_a - math.log(b + repeats - 1.0) + (r + repeats) * seen
            else:
                head = single + r * seen
            ahead = math.log(alpha + tenure) - math.log(alpha + tenure + horizon)
            return head, math.exp((r + repeats) * ahead)

        base_head, base_quiet = history(recency, tenure, events)
        # The behaviour terms in `_forward`'s order: a variant replaces the ones it moves
        # and sums the list as `_forward` sums them (same values, same order).
        index = {c: i for i, c in enumerate(self.covariates)}
        terms = [beta[c] * z[c] for c in self.covariates]
        behaviour = sum(terms)
        means, variances = self.scaler.means, self.scaler.vars
        keys = {self.recency, self.tenure, self.events}
        out = []
        for variant in variants:
            moved = [k for k in variant if k in index]
            structural = not keys.isdisjoint(variant)
            if not moved and not structural:
                out.append(base)
                continue
            b_sum = behaviour
            if moved:
                moved_terms = list(terms)
                for c in moved:
                    xi, v = float(variant[c]), variances[c]
                    moved_terms[index[c]] = beta[c] * ((xi - means[c]) / v**0.5 if v else 0.0)
                b_sum = sum(moved_terms)
            head, quiet = base_head, base_quiet
            if structural:
                rv = max(_value(variant, x, self.recency, 0.0), 0.0)
                tv = max(_value(variant, x, self.tenure, 0.0), rv)
                ev = max(_value(variant, x, self.events, 1.0), 1.0)
                head, quiet = history(rv, tv, ev)
            log_odds = head + b_sum
            clipped = min(max(log_odds, -_LOGIT_LIMIT), _LOGIT_LIMIT)
            p = 1.0 - _sigmoid(-clipped) * (1.0 - quiet)
            out.append(min(max(p, 1e-7), 1.0 - 1e-7))
        return out
