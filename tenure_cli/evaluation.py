"""Metrics and labels for evaluating churn scores (pure: no I/O, numpy only).

The churn target (DESIGN.md §3): a customer scored at event time t churns within the horizon H
(default 90 days) if they close all accounts, or show no customer-initiated activity, in
(t, t+H]. `churn_labels` builds that target for one `as_of` time; `recency_baseline` is the
simplest score to beat (days since the last customer-initiated activity); the BG/NBD baseline
lives in `tenure_cli.btyd`.

Metric inputs are aligned sequences: `labels` of 0/1 (or bools), `scores` of any real numbers
where higher means riskier, `probabilities` in [0, 1]. `align` turns per-customer mappings into
such sequences.

>>> y = [0, 0, 1, 1, 0, 1]
>>> s = [0.1, 0.4, 0.35, 0.8, 0.2, 0.9]
>>> auc(y, s)
0.8888888888888888
>>> summary = summarize(y, s)
>>> summary["n"], summary["positives"], summary["base_rate"], summary["top_decile_lift"]
(6, 3, 0.5, 2.0)
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Generic, Literal, TypeVar

import numpy as np
import numpy.typing as npt

__all__ = [
    "CalibrationBin",
    "ChurnLabels",
    "align",
    "auc",
    "brier",
    "by_group",
    "calibration_table",
    "churn_labels",
    "last_activity_before",
    "log_loss",
    "recency_baseline",
    "summarize",
    "top_decile_lift",
]

K = TypeVar("K", bound=Hashable)
G = TypeVar("G", bound=Hashable)
FloatArray = npt.NDArray[np.float64]

MIN_GROUP_SIZE = 30
SECONDS_PER_DAY = 86_400.0


# ---------------------------------------------------------------------------- input checks


def _labels(labels: npt.ArrayLike) -> FloatArray:
    y = np.asarray(labels, dtype=np.float64).ravel()
    if not np.all((y == 0) | (y == 1)):
        raise ValueError("labels must be 0/1")
    return y


def _scores(scores: npt.ArrayLike, n: int, name: str = "scores") -> FloatArray:
    s = np.asarray(scores, dtype=np.float64).ravel()
    if s.size != n:
        raise ValueError(f"{name} has {s.size} values for {n} labels")
    if np.any(np.isnan(s)):
        raise ValueError(f"{name} contain NaN")
    return s


def _probabilities(probabilities: npt.ArrayLike, n: int) -> FloatArray:
    p = _scores(probabilities, n, "probabilities")
    if np.any((p < 0) | (p > 1)):
        raise ValueError("probabilities must lie in [0, 1]")
    return p


def align(
    labels_by_customer: Mapping[K, int], scores_by_customer: Mapping[K, float]
) -> tuple[list[K], FloatArray, FloatArray]:
    """(customers, labels, scores) for every labelled customer, in the labels' order.

    Raises KeyError if a labelled customer has no score: silently dropping them would bias
    the comparison between models.

    >>> align({"a": 1, "b": 0}, {"b": 0.2, "a": 0.9, "z": 0.5})
    (['a', 'b'], array([1., 0.]), array([0.9, 0.2]))
    """
    ids = list(labels_by_customer)
    missing = [c for c in ids if c not in scores_by_customer]
    if missing:
        raise KeyError(f"{len(missing)} labelled customers have no score, e.g. {missing[0]!r}")
    y = _labels([labels_by_customer[c] for c in ids])
    s = np.array([scores_by_customer[c] for c in ids], dtype=np.float64)
    return ids, y, s


# ------------------------------------------------------------------------------- metrics


def _average_ranks(values: FloatArray) -> FloatArray:
    """1-based ranks, tied values sharing the average of their positions (infinities ok)."""
    n = values.size
    order = np.argsort(values, kind="mergesort")
    v = values[order]
    starts = np.flatnonzero(np.concatenate(([True], v[1:] != v[:-1])))
    ends = np.append(starts[1:], n)
    ranks = np.empty(n, dtype=np.float64)
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    return ranks


def auc(labels: npt.ArrayLike, scores: npt.ArrayLike) -> float | None:
    """ROC AUC as the Mann-Whitney statistic, ties counting one half; None with one class.

    AUC = P(score of a random positive > score of a random negative) + 0.5 P(tie).

    >>> auc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4])
    1.0
    >>> auc([0, 0, 1, 1], [0.4, 0.3, 0.2, 0.1])
    0.0
    >>> auc([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5])
    0.5
    >>> auc([1, 1], [0.1, 0.2]) is None
    True
    """
    y = _labels(labels)
    s = _scores(scores, y.size)
    n1 = int(y.sum())
    n0 = y.size - n1
    if n1 == 0 or n0 == 0:
        return None
    rank_sum = float(_average_ranks(s)[y == 1].sum())
    return (rank_sum - n1 * (n1 + 1) / 2.0) / (n1 * n0)


def auc_difference(
    labels: npt.ArrayLike, scores: npt.ArrayLike, other: npt.ArrayLike, *,
    resamples: int = 2000, level: float = 0.95, seed: int = 0,
) -> dict[str, float | int] | None:
    """AUC of `scores` minus AUC of `other` on the same customers, with a paired bootstrap
    interval: customers are resampled (positives and negatives apart, so both classes stay)
    and both scorers judged on each resample. An interval holding 0 is a tie at this sample
    size. None with a single class.

    >>> y = [0] * 50 + [1] * 50
    >>> good = list(range(100))
    >>> noisy = [(i * 37) % 100 for i in range(100)]
    >>> d = auc_difference(y, good, noisy, resamples=500)
    >>> d["difference"] > 0 and d["low"] > 0
    True
    >>> auc_difference(y, good, good, resamples=200)["high"]
    0.0
    """
    y = _labels(labels)
    a = _scores(scores, y.size)
    b = _scores(other, y.size, "other")
    full_a, full_b = auc(y, a), auc(y, b)
    if full_a is None or full_b is None:
        return None
    rng = np.random.default_rng(seed)
    positives, negatives = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    diffs = np.empty(resamples)
    for i in range(resamples):
        idx = np.concatenate((rng.choice(positives, positives.size),
                              rng.choice(negatives, negatives.size)))
        diffs[i] = float(auc(y[idx], a[idx]) or 0.0) - float(auc(y[idx], b[idx]) or 0.0)
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(diffs, [tail, 1.0 - tail])
    return {"difference": full_a - full_b, "low": float(low), "high": float(high),
            "resamples": resamples, "level": level}


def brier(labels: npt.ArrayLike, probabilities: npt.ArrayLike) -> float:
    """Mean squared error of the predicted churn probabilities.

    >>> round(brier([1, 0, 1, 0], [0.9, 0.1, 0.6, 0.5]), 10)
    0.1075
    """
    y = _labels(labels)
    if y.size == 0:
        raise ValueError("no labels")
    p = _probabilities(probabilities, y.size)
    return float(np.mean((p - y) ** 2))


def log_loss(labels: npt.ArrayLike, probabilities: npt.ArrayLike, eps: float = 1e-15) -> float:
    """Mean negative log-likelihood (natural log), probabilities clipped to [eps, 1 - eps].

    >>> round(log_loss([1, 0], [0.8, 0.3]), 6)
    0.289909
    >>> round(log_loss([1], [0.0]), 3)  # clipped, not infinite
    34.539
    """
    y = _labels(labels)
    if y.size == 0:
        raise ValueError("no labels")
    p = np.clip(_probabilities(probabilities, y.size), eps, 1.0 - eps)
    return float(-np.mean(y * np.log(p) + (1.0 - y) * np.log1p(-p)))


def top_decile_lift(
    labels: npt.ArrayLike, scores: npt.ArrayLike, fraction: float = 0.1
) -> float | None:
    """Churn rate among the top `fraction` by score divided by the overall churn rate.

    The top group has k = ceil(fraction * n) customers (at least one). Tie rule: customers
    scoring strictly above the cut score are in; those tied *at* the cut share the remaining
    slots pro rata, i.e. they contribute their mean churn rate per slot. This equals the
    expected lift under a uniformly random tie-break, does not depend on input order, and
    matters for coarse scores such as whole days since last activity. None when nobody
    churned (or there are no labels).

    >>> top_decile_lift([1, 0, 0, 0, 0, 0, 0, 0, 0, 0], list(range(10, 0, -1)))
    10.0
    >>> top_decile_lift([1, 0, 0, 0, 0, 0, 0, 0, 0, 0], [1] * 10)  # all tied: no lift
    1.0
    """
    if not 0 < fraction <= 1:
        raise ValueError("fraction must be in (0, 1]")
    y = _labels(labels)
    s = _scores(scores, y.size)
    n = y.size
    if n == 0 or y.sum() == 0:
        return None
    k = max(1, math.ceil(n * fraction - 1e-9))
    cut = np.sort(s)[::-1][k - 1]
    above = s > cut
    tied = s == cut
    slots = k - int(above.sum())
    positives_top = float(y[above].sum()) + slots * float(y[tied].mean())
    return (positives_top / k) / float(y.mean())


@dataclass(frozen=True)
class CalibrationBin:
    lower: float
    upper: float
    n: int
    mean_predicted: float | None  # None for an empty bin
    observed_rate: float | None


def calibration_table(
    labels: npt.ArrayLike,
    probabilities: npt.ArrayLike,
    bins: int = 10,
    strategy: Literal["uniform", "quantile"] = "uniform",
) -> list[CalibrationBin]:
    """Mean predicted probability vs observed churn rate per probability bin.

    "uniform": `bins` equal-width bins over [0, 1], each [lower, upper) except the last,
    which includes 1; empty bins are kept with n = 0. "quantile": edges at quantiles of the
    probabilities (duplicate edges merged), so bins hold about equal counts.

    >>> rows = calibration_table([0, 0, 1, 1], [0.1, 0.2, 0.7, 0.9], bins=2)
    >>> [(r.lower, r.upper, r.n, round(r.mean_predicted, 2), r.observed_rate) for r in rows]
    [(0.0, 0.5, 2, 0.15, 0.0), (0.5, 1.0, 2, 0.8, 1.0)]
    """
    if bins < 1:
        raise ValueError("bins must be >= 1")
    y = _labels(labels)
    p = _probabilities(probabilities, y.size)
    if strategy == "uniform":
        edges = np.linspace(0.0, 1.0, bins + 1)
    elif strategy == "quantile":
        if p.size == 0:
            return []
        edges = np.unique(np.quantile(p, np.linspace(0.0, 1.0, bins + 1)))
        if edges.size == 1:
            edges = np.array([edges[0], edges[0]])
    else:
        raise ValueError(f"unknown strategy {strategy!r}")
    idx = np.searchsorted(edges[1:-1], p, side="right")
    rows = []
    for i in range(edges.size - 1):
        sel = idx == i
        count = int(sel.sum())
        rows.append(
            CalibrationBin(
                lower=float(edges[i]),
                upper=float(edges[i + 1]),
                n=count,
                mean_predicted=float(p[sel].mean()) if count else None,
                observed_rate=float(y[sel].mean()) if count else None,
            )
        )
    return rows


def summarize(
    labels: npt.ArrayLike,
    scores: npt.ArrayLike,
    probabilities: npt.ArrayLike | None = None,
) -> dict[str, Any]:
    """Headline metrics: n, positives, base_rate, auc, top_decile_lift, and with
    probabilities also brier and log_loss. Undefined values are None.

    >>> out = summarize([0, 1, 1, 0], [0.2, 0.9, 0.6, 0.1], probabilities=[0.2, 0.9, 0.6, 0.1])
    >>> {k: round(v, 4) for k, v in out.items()}  # doctest: +NORMALIZE_WHITESPACE
    {'n': 4, 'positives': 2, 'base_rate': 0.5, 'auc': 1.0, 'top_decile_lift': 2.0,
     'brier': 0.055, 'log_loss': 0.2362}
    """
    y = _labels(labels)
    s = _scores(scores, y.size)
    n = int(y.size)
    positives = int(y.sum())
    out: dict[str, Any] = {
        "n": n,
        "positives": positives,
        "base_rate": positives / n if n else None,
        "auc": auc(y, s),
        "top_decile_lift": top_decile_lift(y, s),
    }
    if probabilities is not None:
        out["brier"] = brier(y, probabilities) if n else None
        out["log_loss"] = log_loss(y, probabilities) if n else None
    return out


def by_group(
    groups: Sequence[G],
    labels: npt.ArrayLike,
    scores: npt.ArrayLike,
    min_size: int = MIN_GROUP_SIZE,
) -> dict[G, dict[str, Any]]:
    """Per-group n, positives, base_rate, AUC and score quartiles, for fairness sections.

    Groups appear in order of first appearance. Groups with fewer than `min_size` customers
    are flagged `too_small` and their AUC is withheld (None): an AUC on a handful of customers
    is noise and invites over-reading. Quartiles are reported for every group.

    >>> out = by_group(["x"] * 40 + ["y"] * 5, [0, 1] * 20 + [1] * 5, list(range(45)))
    >>> out["x"]["n"], out["x"]["auc"], out["x"]["too_small"], out["x"]["score_median"]
    (40, 0.525, False, 19.5)
    >>> out["y"]["n"], out["y"]["auc"], out["y"]["too_small"]
    (5, None, True)
    """
    y = _labels(labels)
    s = _scores(scores, y.size)
    if len(groups) != y.size:
        raise ValueError(f"groups has {len(groups)} values for {y.size} labels")
    members: dict[G, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    out: dict[G, dict[str, Any]] = {}
    for g, rows in members.items():
        gi = np.asarray(rows)
        gy, gs = y[gi], s[gi]
        q25, q50, q75 = (float(v) for v in np.quantile(gs, [0.25, 0.5, 0.75]))
        too_small = gi.size < min_size
        out[g] = {
            "n": int(gi.size),
            "positives": int(gy.sum()),
            "base_rate": float(gy.mean()),
            "auc": None if too_small else auc(gy, gs),
            "score_q25": q25,
            "score_median": q50,
            "score_q75": q75,
            "too_small": too_small,
        }
    return out


# ------------------------------------------------------------------------ labels, baseline


@dataclass(frozen=True)
class ChurnLabels(Generic[K]):
    """The churn target at one `as_of` time.

    labels: eligible customers whose label is known, 1 = churned within the horizon.
    outcome: why, per labelled customer: "closed" (all accounts closed in the window),
        "inactive" (no customer-initiated activity in it) or "active".
    eligible: customers alive at as_of (seen on or before it, not closed on or before it), in
        input order; the labelled ones plus `unresolved`.
    unresolved: eligible customers whose label the watermark cannot decide yet.
    excluded: everyone else, with the reason: "not_seen" (first event after as_of) or
        "already_closed" (closed all accounts on or before as_of).
    """

    as_of: datetime
    horizon_days: float
    labels: dict[K, int]
    outcome: dict[K, str]
    eligible: tuple[K, ...]
    unresolved: tuple[K, ...] = ()
    excluded: dict[K, str] = field(default_factory=dict)


def churn_labels(
    activity_times_by_customer: Mapping[K, Iterable[datetime]],
    closed_all_at_by_customer: Mapping[K, datetime | None],
    as_of: datetime,
    horizon_days: float = 90.0,
    first_seen_by_customer: Mapping[K, datetime] | None = None,
    watermark: datetime | None = None,
) -> ChurnLabels[K]:
    """Label every customer alive at `as_of`: 1 if they churn within (as_of, as_of + H].

    Churn = all accounts closed in the window, or no customer-initiated activity in it. The
    window is open at as_of and closed at as_of + H: activity exactly at as_of does not count,
    activity exactly at as_of + H does.

    Eligibility: the customer had some event on or before as_of (their earliest activity,
    closure or `first_seen_by_customer` entry, which should be their first event of any kind,
    e.g. an account opening) and had not closed all accounts on or before as_of.

    `watermark` (how far the event log is complete) enables online resolution as in DESIGN
    §3: with watermark < as_of + H a customer is 1 if they closed by the watermark, 0 once any
    activity appeared after as_of, and otherwise unresolved. Without a watermark the data is
    taken as complete through as_of + H. (Online, activity followed by a later closure inside
    the window resolves to 0 at the activity; complete data labels it 1.)

    >>> from datetime import datetime as dt
    >>> t0 = dt(2024, 1, 1)
    >>> act = {"a": [dt(2023, 12, 1), dt(2024, 2, 1)], "b": [dt(2023, 12, 1), t0],
    ...        "c": [dt(2023, 12, 1), dt(2024, 1, 5)], "d": [dt(2024, 1, 2)]}
    >>> res = churn_labels(act, {"c": dt(2024, 3, 1)}, as_of=t0, horizon_days=90)
    >>> res.labels, res.outcome["c"], res.excluded
    ({'a': 0, 'b': 1, 'c': 1}, 'closed', {'d': 'not_seen'})
    """
    if horizon_days <= 0:
        raise ValueError("horizon_days must be positive")
    end = as_of + timedelta(days=horizon_days)
    known_until = end if watermark is None else min(end, watermark)
    first_seen = first_seen_by_customer or {}

    customers: dict[K, None] = {}
    for mapping in (activity_times_by_customer, closed_all_at_by_customer, first_seen):
        customers.update(dict.fromkeys(mapping))

    labels: dict[K, int] = {}
    outcome: dict[K, str] = {}
    eligible: list[K] = []
    unresolved: list[K] = []
    excluded: dict[K, str] = {}
    for c in customers:
        closed_at = closed_all_at_by_customer.get(c)
        seen = closed_at is not None and closed_at <= as_of
        seen = seen or (c in first_seen and first_seen[c] <= as_of)
        active_in_window = False
        for ts in activity_times_by_customer.get(c, ()):
            if ts <= as_of:
                seen = True
            elif ts <= known_until:
                active_in_window = True
        if not seen:
            excluded[c] = "not_seen"
            continue
        if closed_at is not None and closed_at <= as_of:
            excluded[c] = "already_closed"
            continue
        eligible.append(c)
        if closed_at is not None and closed_at <= known_until:
            labels[c], outcome[c] = 1, "closed"
        elif active_in_window:
            labels[c], outcome[c] = 0, "active"
        elif known_until >= end:
            labels[c], outcome[c] = 1, "inactive"
        else:
            unresolved.append(c)
    return ChurnLabels(
        as_of=as_of,
        horizon_days=float(horizon_days),
        labels=labels,
        outcome=outcome,
        eligible=tuple(eligible),
        unresolved=tuple(unresolved),
        excluded=excluded,
    )


def last_activity_before(
    activity_times_by_customer: Mapping[K, Iterable[datetime]], as_of: datetime
) -> dict[K, datetime | None]:
    """Latest activity on or before `as_of` per customer (None if none): recency's input.

    >>> from datetime import datetime as dt
    >>> last_activity_before({"a": [dt(2024, 1, 1), dt(2024, 3, 1)], "b": []}, dt(2024, 2, 1))
    {'a': datetime.datetime(2024, 1, 1, 0, 0), 'b': None}
    """
    out: dict[K, datetime | None] = {}
    for c, times in activity_times_by_customer.items():
        past = [ts for ts in times if ts <= as_of]
        out[c] = max(past) if past else None
    return out


def recency_baseline(
    last_activity_by_customer: Mapping[K, datetime | None],
    as_of: datetime,
    missing: float = math.inf,
) -> dict[K, float]:
    """Score = days (fractional) since the last customer-initiated activity; higher = riskier.

    Customers with no activity get `missing` (default +inf: riskiest). A last activity after
    `as_of` would leak the future and raises ValueError.

    >>> from datetime import datetime as dt
    >>> recency_baseline({"a": dt(2024, 1, 1), "b": dt(2024, 1, 9, 12), "c": None},
    ...                  as_of=dt(2024, 1, 10))
    {'a': 9.0, 'b': 0.5, 'c': inf}
    """
    out: dict[K, float] = {}
    for c, last in last_activity_by_customer.items():
        if last is None:
            out[c] = missing
            continue
        if last > as_of:
            raise ValueError(f"last activity of {c!r} is after as_of: future leak")
        out[c] = (as_of - last).total_seconds() / SECONDS_PER_DAY
    return out
