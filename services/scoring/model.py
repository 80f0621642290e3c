"""The churn model: a river pipeline that learns online, with the prior until it has labels."""

from __future__ import annotations

from dataclasses import dataclass, field

from river import compose, linear_model, optim, preprocessing

from services.scoring.domain import Features, recency_prior


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
