"""Engagement's pure measurement: the uplift of a playbook against its holdout."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Uplift:
    treated: int
    treated_churned: int
    holdout: int
    holdout_churned: int
    churn_rate_treated: float | None
    churn_rate_holdout: float | None
    uplift: float | None  # holdout churn rate minus treated churn rate: churn prevented
    ci_low: float | None
    ci_high: float | None


def uplift(treated: int, treated_churned: int, holdout: int, holdout_churned: int,
           z: float = 1.96) -> Uplift:
    """Retention uplift = churn rate of the holdout − churn rate of the treated, with a
    Wald interval for the difference of two proportions (z = 1.96: 95 %).

    >>> u = uplift(1000, 100, 1000, 150)
    >>> round(u.uplift, 3), round(u.ci_low, 3), round(u.ci_high, 3)
    (0.05, 0.021, 0.079)
    >>> uplift(0, 0, 10, 1).uplift is None
    True
    """
    if treated == 0 or holdout == 0:
        return Uplift(treated, treated_churned, holdout, holdout_churned,
                      treated_churned / treated if treated else None,
                      holdout_churned / holdout if holdout else None, None, None, None)
    pt, ph = treated_churned / treated, holdout_churned / holdout
    diff = ph - pt
    se = math.sqrt(pt * (1 - pt) / treated + ph * (1 - ph) / holdout)
    return Uplift(treated, treated_churned, holdout, holdout_churned, pt, ph, diff,
                  diff - z * se, diff + z * se)
