"""The churn model: a river pipeline that learns online, with the prior until it has labels."""

from __future__ import annotations

from dataclasses import dataclass, field

from river import compose, linear_model, optim, preprocessing

from datetime import datetime

from services.scoring.domain import (
    Features,
    Reason,
    band_of,
    features_at,
    reasons_for,
    recency_prior,
)
from shared.events import ChurnBand, ProfileSnapshot


def champion_pipeline() -> compose.Pipeline:
    return compose.Pipeline(
        preprocessing.StandardScaler(),
        linear_model.LogisticRegression(optimizer=optim.SGD(0.05), l2=1e-4),
    )


@dataclass
class ChurnModel:
    horizon_days: int
    min_labels: int
    pipeline: compose.Pipeline = field(default_factory=champion_pipeline)
    labels_learnt: int = 0
    version: int = 1
    name: str = "logreg"

    @property
    def cold_start(self) -> bool:
        return self.labels_learnt < self.min_labels

    @property
    def active_name(self) -> str:
        return "prior:recency" if self.cold_start else self.name

    def predict(self, features: Features) -> float:
        if self.cold_start:
            return recency_prior(features, self.horizon_days)
        proba = self.pipeline.predict_proba_one(features)
        return float(proba.get(True, 0.0))

    def learn(self, features: Features, churned: bool) -> None:
        self.pipeline.learn_one(features, churned)
        self.labels_learnt += 1


@dataclass(frozen=True)
class Assessment:
    probability: float
    band: ChurnBand
    reasons: list[Reason]
    features: Features
    model: str
    version: int
    cold_start: bool


def assess(
    model: ChurnModel, snapshot: ProfileSnapshot, as_of: datetime,
    cuts: tuple[float, float, float], top: int,
) -> Assessment:
    """Score one customer as of an event time, with the reasons behind the score."""
    features = features_at(snapshot, as_of)
    probability = model.predict(features)
    return Assessment(
        probability=round(probability, 6),
        band=band_of(probability, cuts),
        reasons=reasons_for(model.predict, features, top),
        features=features,
        model=model.active_name,
        version=model.version,
        cold_start=model.cold_start,
    )
