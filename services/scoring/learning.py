"""Learning from resolved labels (pure): test-then-train, prequential figures, drift on the
error stream, the challenger's proposal and promotion. No I/O: the learner role runs this off
the event loop and commits the result with the label progress it includes."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from river import drift

from services.scoring.domain import band_of, recency_prior
from services.scoring.model import KINDS, ChurnModel, inputs_of

_CLIP = 1e-7


@dataclass
class Prequential:
    """Test-then-train figures over the last `window` labels (each prediction was made
    before the model learnt that label).

    >>> m = Prequential(window=10)
    >>> for y, p in [(1, 0.9), (0, 0.2), (1, 0.4), (0, 0.6)]:
    ...     m.update(y, p)
    >>> m.auc(), round(m.log_loss(), 4), round(m.brier(), 4)
    (0.75, 0.5403, 0.1925)
    """

    window: int = 2000
    cuts: tuple[float, float, float] = (0.25, 0.5, 0.75)
    # (label, probability, stratum): the stratum is the week the sample was taken in (None
    # when unknown; checkpoints written before strata hold (label, probability) pairs)
    recent: deque[tuple[Any, ...]] = field(default_factory=deque)
    seen: int = 0

    def update(self, label: int | bool, probability: float, stratum: int | None = None) -> None:
        self.recent.append((1 if label else 0, float(probability), stratum))
        if len(self.recent) > self.window:
            self.recent.popleft()
        self.seen += 1

    def last(self, n: int | None = None) -> list[tuple[int, float]]:
        items = [(t[0], t[1]) for t in self.recent]
        return items if n is None or n >= len(items) else items[-n:]

    def auc(self, n: int | None = None) -> float | None:
        """Mann-Whitney AUC, ties counting one half; None with a single class."""
        pairs, wins = _mann_whitney(self.last(n))
        return wins / pairs if pairs else None

    def stratified_auc(self, n: int | None = None) -> float | None:
        """AUC over the pairs taken in the same week only: how well the model ranks customers
        scored at the same moment, which is what a score is for. A pooled AUC over labels
        from different weeks also rewards following the base rate from week to week.

        >>> m = Prequential()
        >>> for y, p, week in [(1, 0.9, 1), (0, 0.8, 1), (1, 0.2, 2), (0, 0.1, 2)]:
        ...     m.update(y, p, week)
        >>> m.stratified_auc(), m.auc()
        (1.0, 0.75)
        """
        items = list(self.recent)
        if n is not None and n < len(items):
            items = items[-n:]
        strata: dict[Any, list[tuple[int, float]]] = {}
        for t in items:
            strata.setdefault(t[2] if len(t) > 2 else None, []).append((t[0], t[1]))
        pairs = wins = 0.0
        for group in strata.values():
            p, w = _mann_whitney(group)
            pairs += p
            wins += w
        return wins / pairs if pairs else None

    def log_loss(self, n: int | None = None) -> float | None:
        items = self.last(n)
        if not items:
            return None
        total = 0.0
        for y, p in items:
            p = min(max(p, _CLIP), 1.0 - _CLIP)
            total -= math.log(p) if y else math.log(1.0 - p)
        return total / len(items)

    def brier(self, n: int | None = None) -> float | None:
        items = self.last(n)
        if not items:
            return None
        return sum((p - y) ** 2 for y, p in items) / len(items)

    def calibration(self, n: int | None = None) -> list[dict[str, Any]]:
        """Per band: how many, the mean predicted probability and the observed churn rate."""
        bands: dict[str, list[tuple[int, float]]] = {}
        for y, p in self.last(n):
            bands.setdefault(band_of(p, self.cuts).value, []).append((y, p))
        out = []
        for band in ("low", "medium", "high", "critical"):
            items = bands.get(band, [])
            out.append({
                "band": band,
                "n": len(items),
                "mean_predicted": _r(sum(p for _, p in items) / len(items)) if items else None,
                "observed_rate": _r(sum(y for y, _ in items) / len(items)) if items else None,
            })
        return out

    def summary(self, n: int | None = None) -> dict[str, Any]:
        items = self.last(n)
        return {
            "labels_seen": self.seen,
            "window": len(items),
            "base_rate": _r(sum(y for y, _ in items) / len(items)) if items else None,
            "auc": _r(self.auc(n)),
            "log_loss": _r(self.log_loss(n)),
            "brier": _r(self.brier(n)),
            "calibration": self.calibration(n),
        }


def _mann_whitney(items: list[tuple[int, float]]) -> tuple[float, float]:
    """(positive-negative pairs, pairs the positive scored higher in, ties counting one half)."""
    ordered = sorted(items, key=lambda t: t[1])
    positives = sum(y for y, _ in ordered)
    negatives = len(ordered) - positives
    if positives == 0 or negatives == 0:
        return 0.0, 0.0
    rank_sum = 0.0
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1][1] == ordered[i][1]:
            j += 1
        rank = (i + j + 2) / 2.0  # 1-based average rank of the tied run
        rank_sum += rank * sum(y for y, _ in ordered[i:j + 1])
        i = j + 1
    return float(positives * negatives), rank_sum - positives * (positives + 1) / 2.0


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


@dataclass(frozen=True)
class Policy:
    """How the learner acts; from settings."""

    promotion: str = "automatic"  # or "approve": proposals wait for POST /v1/model:promote
    compare_window: int = 1000  # "the recent window" champion and challenger are judged on
    # labels both models must have learnt (and the window must hold) before any comparison:
    # early in learning, error falls fast, ADWIN sees that as drift and a small window says
    # little about which model ranks better
    min_compare: int = 1000
    margin: float = 0.01  # the challenger's log loss must be at least this share lower ...
    auc_margin: float = 0.01  # ... and its week-stratified AUC at least this much higher
    treated_weight: float = 0.0  # 0 = treated customers' labels are kept but not learnt
    adwin_delta: float = 0.002


@dataclass
class LearnerState:
    """Everything a checkpoint restores: both models, their figures, the drift detector."""

    champion: ChurnModel
    challenger: ChurnModel
    champion_metrics: Prequential
    challenger_metrics: Prequential
    prior_metrics: Prequential
    detector: drift.ADWIN
    labels_learnt: int = 0
    treated_skipped: int = 0
    drift_events: list[dict[str, Any]] = field(default_factory=list)
    # Every detection since the start (river's ADWIN resets its own count after each one, and
    # `drift_events` keeps the last 50)
    drift_detections: int = 0
    proposal: dict[str, Any] | None = None
    # After a drift, champion and challenger are compared every few labels until this count
    # of labels learnt: the challenger may need some labels of the new concept to show.
    watch_until: int = 0
    # Labels learnt when the challenger was first found better, if it has stayed better at
    # every comparison since (a proposal needs it to stay so for a whole window).
    better_since: int | None = None

    @classmethod
    def fresh(
        cls, *, horizon_days: int, min_labels: int, champion: str, challenger: str,
        window: int, cuts: tuple[float, float, float], adwin_delta: float = 0.002,
    ) -> LearnerState:
        return cls(
            champion=ChurnModel(horizon_days, min_labels, champion),
            challenger=ChurnModel(horizon_days, min_labels, challenger),
            champion_metrics=Prequential(window, cuts),
            challenger_metrics=Prequential(window, cuts),
            prior_metrics=Prequential(window, cuts),
            detector=drift.ADWIN(delta=adwin_delta),
        )


@dataclass(frozen=True)
class Label:
    """A resolved label, as the learner reads it."""

    id: int
    facts: Mapping[str, float]
    churned: bool
    weight: float = 1.0
    treated: bool = False
    resolved_at: datetime | None = None
    sampled_at: datetime | None = None

    @property
    def week(self) -> int | None:
        """The stratum prequential AUCs are compared within: the week the sample was taken."""
        if self.sampled_at is None:
            return None
        return int(self.sampled_at.timestamp() // (7 * 86400))


@dataclass
class Outcome:
    learnt: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)  # treated, not learnt
    champion_p: dict[int, float] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)  # drift, proposal, promotion


def figures(state: LearnerState, n: int) -> dict[str, Any]:
    """Champion and challenger on the same recent labels."""
    return {
        "window": min(n, len(state.champion_metrics.recent)),
        "champion": _model_figures(state.champion, state.champion_metrics, n),
        "challenger": _model_figures(state.challenger, state.challenger_metrics, n),
    }


def _model_figures(model: ChurnModel, metrics: Prequential, n: int) -> dict[str, Any]:
    return {"model": model.kind,
            "auc": _r(metrics.auc(n)),
            "auc_within_week": _r(metrics.stratified_auc(n)),
            "log_loss": _r(metrics.log_loss(n)),
            "brier": _r(metrics.brier(n))}


def challenger_better(state: LearnerState, policy: Policy) -> bool:
    """On the recent window: lower log loss by the margin AND better ranking of customers
    scored in the same week by the AUC margin. Both models must have learnt `min_compare`
    labels and the window must hold as many (a young model's figures say little)."""
    n = policy.compare_window
    if (min(state.champion.labels_learnt, state.challenger.labels_learnt) < policy.min_compare
            or min(len(state.challenger_metrics.recent), n) < min(policy.min_compare, n)):
        return False
    champion_loss = state.champion_metrics.log_loss(n)
    challenger_loss = state.challenger_metrics.log_loss(n)
    if champion_loss is None or challenger_loss is None:
        return False
    if challenger_loss > champion_loss * (1.0 - policy.margin):
        return False
    champion_auc = state.champion_metrics.stratified_auc(n)
    challenger_auc = state.challenger_metrics.stratified_auc(n)
    if champion_auc is None or challenger_auc is None:
        return False
    return challenger_auc >= champion_auc + policy.auc_margin


def promote(state: LearnerState, reason: str, policy: Policy) -> dict[str, Any]:
    """The challenger becomes the champion; the old champion keeps learning as challenger."""
    record = {"kind": "promotion", "reason": reason,
              "from": state.champion.kind, "to": state.challenger.kind,
              "figures": figures(state, policy.compare_window)}
    state.champion, state.challenger = state.challenger, state.champion
    state.champion_metrics, state.challenger_metrics = (
        state.challenger_metrics, state.champion_metrics)
    state.detector = drift.ADWIN(delta=policy.adwin_delta)
    state.proposal = None
    state.watch_until = 0
    state.better_since = None
    return record


def learn(state: LearnerState, labels: Sequence[Label], policy: Policy) -> Outcome:
    """Test then train, label by label, in the given order (the resolution order)."""
    out = Outcome()
    horizon = state.champion.horizon_days
    for label in labels:
        facts = dict(label.facts)
        if label.treated and policy.treated_weight <= 0.0:
            state.treated_skipped += 1
            out.skipped.append(label.id)
            continue
        weight = label.weight * (policy.treated_weight if label.treated else 1.0)
        x = inputs_of(facts, horizon)
        p_champion = state.champion.probability_of(x)
        p_challenger = state.challenger.probability_of(x)
        y = 1 if label.churned else 0
        week = label.week
        state.champion_metrics.update(y, p_champion, week)
        state.challenger_metrics.update(y, p_challenger, week)
        state.prior_metrics.update(y, recency_prior(facts, horizon), week)
        out.champion_p[label.id] = p_champion
        state.detector.update(abs(y - p_champion))
        state.champion.learn_inputs(x, label.churned, weight)
        state.challenger.learn_inputs(x, label.churned, weight)
        state.labels_learnt += 1
        out.learnt.append(label.id)
        if state.detector.drift_detected:
            _on_drift(state, label, policy, out)
        elif (state.labels_learnt <= state.watch_until and state.proposal is None
              and state.labels_learnt % WATCH_EVERY == 0):
            _consider(state, label, policy, out)
    return out


WATCH_EVERY = 50


def _on_drift(state: LearnerState, label: Label, policy: Policy, out: Outcome) -> None:
    event = {
        "kind": "drift",
        "detector": "ADWIN on the champion's absolute error",
        "label_index": state.labels_learnt,
        "event_time": label.resolved_at.isoformat() if label.resolved_at else None,
        "error_estimate": _r(state.detector.estimation),
        "window_width": int(state.detector.width),
        "figures": figures(state, policy.compare_window),
    }
    state.drift_events = [*state.drift_events[-49:], event]
    state.drift_detections = _detections(state) + 1
    out.events.append(event)
    state.watch_until = state.labels_learnt + policy.compare_window
    if state.proposal is None:
        _consider(state, label, policy, out)


def _consider(state: LearnerState, label: Label, policy: Policy, out: Outcome) -> None:
    """Propose the challenger once it has stayed better on the recent window at every
    comparison for `compare_window` labels, a window of labels it had not been judged on
    (and promote it then under the automatic policy). One comparison on a noisy window
    would swap models back and forth: a purchase log replayed twice promoted the tree and
    then the champion again, ending on either."""
    if not challenger_better(state, policy):
        state.better_since = None
        return
    since = getattr(state, "better_since", None)
    if since is None:
        state.better_since = state.labels_learnt
        state.watch_until = max(state.watch_until,
                                state.labels_learnt + policy.compare_window + WATCH_EVERY)
        return
    if state.labels_learnt - since < policy.compare_window:
        return
    state.better_since = None
    proposal = {"kind": "proposal", "label_index": state.labels_learnt,
                "event_time": label.resolved_at.isoformat() if label.resolved_at else None,
                "from": state.champion.kind, "to": state.challenger.kind,
                "figures": figures(state, policy.compare_window),
                "policy": policy.promotion}
    out.events.append(proposal)
    state.proposal = proposal
    if policy.promotion == "automatic":
        out.events.append(promote(state, "automatic: challenger better after drift", policy))


def _detections(state: LearnerState) -> int:
    # A state checkpointed before the count was kept: its recorded events are the best answer.
    return int(getattr(state, "drift_detections", len(state.drift_events)))


def card(state: LearnerState, policy: Policy) -> dict[str, Any]:
    """The model card's learnt part (stored with each checkpoint as JSON)."""
    def describe(model: ChurnModel, metrics: Prequential) -> dict[str, Any]:
        params = getattr(model.estimator, "parameters", None)
        return {
            "model": model.kind,
            "description": KINDS[model.kind].description,
            "labels_learnt": model.labels_learnt,
            "cold_start": model.cold_start,
            "parameters": {k: _r(v) for k, v in params.items()} if params else None,
            "prequential": metrics.summary(),
        }

    return {
        "champion": describe(state.champion, state.champion_metrics),
        "challenger": describe(state.challenger, state.challenger_metrics),
        "prior": {"model": "prior:recency", "prequential": state.prior_metrics.summary()},
        "recent_window": figures(state, policy.compare_window),
        "labels_learnt": state.labels_learnt,
        "treated_skipped": state.treated_skipped,
        "drift_detector": {"kind": "ADWIN", "delta": policy.adwin_delta,
                           "width": int(state.detector.width),
                           "detections": _detections(state)},
        "drift_events": state.drift_events[-10:],
        "proposal": state.proposal,
    }


def as_labels(rows: Iterable[Mapping[str, Any]]) -> list[Label]:
    return [
        Label(int(r["id"]), r["facts"], bool(r["label"]), float(r["weight"]),
              bool(r["treated"]), r.get("resolved_at"), r.get("sampled_at"))
        for r in rows
    ]
