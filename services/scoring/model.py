"""The churn models: river estimators behind one interface, the cold-start prior, signed
checkpoints, and the assessment of one customer (probability, band, reasons)."""

from __future__ import annotations

import hashlib
import hmac
import pickle
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import river
from river import base, compose, linear_model, optim, preprocessing, tree

from services.scoring.btyd import BTYDLogisticClassifier
from services.scoring.domain import (
    INPUTS,
    LOCAL_INPUTS,
    PACE_FACTS,
    REFERENCE,
    Facts,
    Memory,
    Reason,
    band_of,
    counterfactual_facts,
    counterfactuals_with,
    facts_at,
    model_inputs,
    pace_inputs,
    reasons_from,
    recency_prior,
)
from shared.events import ChurnBand, ProfileSnapshot

RIVER_VERSION = river.__version__
PRIOR_NAME = "prior:recency"

# The structural model's raw inputs (not scaled: the BG/NBD terms need days and counts).
RAW_INPUTS = {
    "recency_days": "days since the last customer-initiated activity",
    "tenure_days": "days since registration or first activity",
    "lifetime_events": "customer-initiated activities on record (at least one)",
}
# What moves the odds of having gone besides the purchase history itself.
BEHAVIOUR = (
    "purchase_trend", "gap_stretch_log", "average_spend_log", "balance_log", "balance_change",
    "product_count", "accounts_closed", "sessions_30_log", "login_trend", "active_days_share",
    "has_salary", "salary_gap", "salary_credits_90", "open_complaints", "nps_detractor",
    "nps_promoter", "digital_share",
)


def inputs_of(facts: Facts, horizon_days: float) -> dict[str, float]:
    """Every model input: the transformed features plus the raw days and counts."""
    x = model_inputs(facts, horizon_days)
    x.update(_history(facts))
    return x


def pace_inputs_of(facts: Facts, horizon_days: float) -> dict[str, float]:
    """The inputs of `inputs_of` that the customer's pace (`PACE_FACTS`) moves; no other
    fact moves them and they move no other input."""
    x = pace_inputs(facts, horizon_days)
    x.update(_history(facts))
    return x


def _history(facts: Facts) -> dict[str, float]:
    recency = max(facts.get("recency_days", 0.0), 0.0)
    return {
        "recency_days": recency,
        "tenure_days": max(facts.get("tenure_days", 0.0), recency),
        "lifetime_events": max(facts.get("transactions_lifetime", 0.0),
                               facts.get("purchases_365", 0.0), 1.0),
    }


def _btyd(horizon_days: float, seed: int) -> base.Classifier:
    return BTYDLogisticClassifier(covariates=BEHAVIOUR, horizon_days=horizon_days)


def _logreg(horizon_days: float, seed: int) -> base.Classifier:
    return compose.Select(*INPUTS) | preprocessing.StandardScaler() | \
        linear_model.LogisticRegression(optimizer=optim.SGD(0.01), l2=1e-4)


def _tree(horizon_days: float, seed: int) -> base.Classifier:
    return compose.Select(*INPUTS) | tree.HoeffdingAdaptiveTreeClassifier(
        grace_period=200, delta=1e-5, leaf_prediction="mc", seed=seed
    )


@dataclass(frozen=True)
class Kind:
    name: str
    build: Callable[[float, int], base.Classifier]
    weighted: bool  # learn_one accepts a sample weight
    description: str


KINDS: dict[str, Kind] = {
    k.name: k
    for k in (
        Kind("btyd-logit", _btyd, True,
             "BG/NBD structure (recency, tenure, events on record) with dropout log-odds "
             "linear in standardised behaviour; learnt online from churn labels"),
        Kind("logreg", _logreg, True,
             "standard scaling + logistic regression on the transformed features"),
        Kind("hoeffding-tree", _tree, True,
             "Hoeffding adaptive tree (class frequencies in the leaves) on the transformed "
             "features"),
    )
}


@dataclass
class ChurnModel:
    """One estimator with what the service needs to know about it: name, version, how many
    labels it has learnt, and whether it is still cold (then the documented prior scores)."""

    horizon_days: int
    min_labels: int
    kind: str = "btyd-logit"
    seed: int = 42
    estimator: base.Classifier | None = None
    labels_learnt: int = 0
    version: int = 0
    created_at: datetime | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind: unknown model kind {self.kind!r} (known: {sorted(KINDS)})")
        if self.estimator is None:
            self.estimator = KINDS[self.kind].build(float(self.horizon_days), self.seed)

    @property
    def name(self) -> str:
        return self.kind

    @property
    def cold_start(self) -> bool:
        return self.labels_learnt < self.min_labels

    @property
    def active_name(self) -> str:
        return PRIOR_NAME if self.cold_start else self.kind

    def model_probability(self, facts: Facts) -> float:
        """The estimator's own probability, cold or not (prequential figures use it)."""
        return self.probability_of(inputs_of(facts, self.horizon_days))

    def probability_of(self, x: dict[str, float]) -> float:
        assert self.estimator is not None
        return float(self.estimator.predict_proba_one(x).get(True, 0.0))

    def predict(self, facts: Facts) -> float:
        if self.cold_start:
            return recency_prior(facts, self.horizon_days)
        return self.model_probability(facts)

    def counterfactuals(self, facts: Facts, names: list[str]) -> tuple[float, list[float]]:
        """What the reasons ask (`reasons_for`): `predict(facts)`, and `predict` of the facts
        with each named fact set back to its reference value; the same numbers, cheaper.

        The model inputs are computed once for the facts and once with every fact of
        `LOCAL_INPUTS` among `names` at the reference, which gives each such fact's
        counterfactual inputs (they depend on that fact alone); the other facts (the
        customer's pace) get their inputs recomputed. A counterfactual that moves no input
        has the customer's own probability. An estimator that can score many variants of one
        input at once (`predict_proba_variants`, the champion) does; any other predicts each.
        The prior works on facts and keeps the plain way."""
        if self.cold_start:
            return counterfactuals_with(self.predict)(facts, names)
        h = self.horizon_days
        x = inputs_of(facts, h)
        local = [n for n in names if n in LOCAL_INPUTS]
        at_reference = x
        if local:
            moved = dict(facts)
            for n in local:
                moved[n] = REFERENCE[n]
            at_reference = inputs_of(moved, h)
        variants: list[dict[str, float] | None] = []
        for n in names:
            if n in LOCAL_INPUTS:
                v = {k: at_reference[k] for k in LOCAL_INPUTS[n] if at_reference[k] != x[k]}
                variants.append(v or None)
            else:
                counterfactual = dict(facts)
                counterfactual[n] = REFERENCE[n]
                moved_inputs = (pace_inputs_of if n in PACE_FACTS else inputs_of)(
                    counterfactual, h)
                v = {k: value for k, value in moved_inputs.items() if value != x[k]}
                variants.append(v or None)
        todo = [v for v in variants if v is not None]
        many = getattr(self.estimator, "predict_proba_variants", None)
        if many is not None:
            scored = many(x, [{}, *todo])
            base, scored = scored[0], scored[1:]
        else:
            base = self.probability_of(x)
            scored = [self.probability_of({**x, **v}) for v in todo]
        found = iter(scored)
        return base, [base if v is None else next(found) for v in variants]

    def learn(self, facts: Facts, churned: bool, weight: float = 1.0) -> None:
        self.learn_inputs(inputs_of(facts, self.horizon_days), churned, weight)

    def learn_inputs(self, x: dict[str, float], churned: bool, weight: float = 1.0) -> None:
        assert self.estimator is not None
        if weight != 1.0 and KINDS[self.kind].weighted:
            self.estimator.learn_one(x, churned, w=weight)
        else:
            self.estimator.learn_one(x, churned)
        self.labels_learnt += 1

    def fresh(self) -> ChurnModel:
        """A new, untrained model of the same kind."""
        return ChurnModel(self.horizon_days, self.min_labels, self.kind, self.seed)


# ------------------------------------------------------------------ signed checkpoints


class CheckpointRejected(ValueError):
    """A checkpoint that must not be loaded: bad signature or another river version."""


def sign(blob: bytes, key: str) -> bytes:
    return hmac.new(key.encode(), blob, hashlib.sha256).digest()


def dump(obj: Any, key: str) -> tuple[bytes, bytes]:
    """Pickle and sign (HMAC-SHA256): only a holder of the key can make a loadable one."""
    blob = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return blob, sign(blob, key)


def load(blob: bytes, signature: bytes, key: str, river_version: str) -> Any:
    """Verify, then unpickle. Unpickling runs code, so nothing unsigned is ever loaded."""
    if not hmac.compare_digest(sign(blob, key), bytes(signature)):
        raise CheckpointRejected("signature: does not match the checkpoint key")
    if river_version != RIVER_VERSION:
        raise CheckpointRejected(
            f"river_version: checkpoint made with river {river_version}, this is {RIVER_VERSION}"
        )
    return pickle.loads(blob)  # noqa: S301 - verified above


# ------------------------------------------------------------------ one assessment


@dataclass(frozen=True)
class Assessment:
    probability: float
    band: ChurnBand
    reasons: list[Reason]
    features: Facts
    model: str
    version: int
    cold_start: bool
    extra: dict[str, Any] = field(default_factory=dict)


def assess(
    model: ChurnModel, snapshot: ProfileSnapshot, as_of: datetime,
    cuts: tuple[float, float, float], top: int, memory: Memory | None = None,
) -> Assessment:
    """Score one customer as of an event time, with the reasons behind the score."""
    facts = facts_at(snapshot, as_of, memory)
    return assess_facts(model, facts, cuts, top)


def assess_facts(
    model: ChurnModel, facts: Facts, cuts: tuple[float, float, float], top: int
) -> Assessment:
    names = counterfactual_facts(facts)
    probability, counterfactuals = model.counterfactuals(facts, names)
    return Assessment(
        probability=round(probability, 6),
        band=band_of(probability, cuts),
        reasons=reasons_from(facts, names, probability, counterfactuals, top),
        features=facts,
        model=model.active_name,
        version=model.version,
        cold_start=model.cold_start,
    )
