"""Scoring's own Prometheus figures: scores, samples, labels, learning and the model's
prequential quality (tenure_scoring_...), on the service's registry."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from shared.metrics import StateGauges, set_all

ROLES = ("champion", "challenger", "prior")
# Current scores of customers who still hold an account, by band and by tenth of probability
# (one scan: GROUPING SETS).
_SCORE_DISTRIBUTION = sa.text(
    "SELECT band, least(floor(probability * 10)::int, 9) AS tenth, count(*) AS n FROM scores "
    "WHERE probability IS NOT NULL AND closed IS NOT TRUE "
    "GROUP BY GROUPING SETS ((band), (least(floor(probability * 10)::int, 9)))"
)


class ScoringMetrics:
    def __init__(self, registry: CollectorRegistry, service: str = "scoring"):
        p = f"tenure_{service}"
        r = registry
        self.registry, self.service = registry, service
        self.customers_by_band = Gauge(
            f"{p}_customers_by_band", "Customers whose current churn score is in each band",
            ["band"], registry=r)
        self.customers_by_probability = Gauge(
            f"{p}_customers_by_probability",
            "Customers by current churn probability, in tenths (bin 0.3 = [0.3, 0.4))",
            ["bin"], registry=r)
        self.scores = Counter(f"{p}_scores_emitted", "churn.scored emitted",
                              ["trigger"], registry=r)
        self.samples = Counter(f"{p}_samples_taken", "Predictions kept until their label "
                               "resolves (at most one per customer per period)", registry=r)
        self.resolved = Counter(f"{p}_labels_resolved", "Labels resolved, by how",
                                ["outcome"], registry=r)
        self.learnt = Counter(f"{p}_labels_learnt", "Labels learnt (test then train)",
                              registry=r)
        self.treated_skipped = Counter(f"{p}_labels_treated_not_learnt",
                                       "Labels of treated customers, recorded, not learnt",
                                       registry=r)
        self.learn_seconds = Histogram(f"{p}_learn_seconds", "One learning round, off the loop",
                                       buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
                                       registry=r)
        self.learner = Gauge(f"{p}_learner_role", "1 while this instance is the learner",
                             registry=r)
        self.checkpoints_rejected = Counter(f"{p}_checkpoints_rejected",
                                            "Checkpoints refused at load", ["reason"],
                                            registry=r)
        self.pending = Gauge(f"{p}_pending_samples", "Samples waiting for a label or learning",
                             ["state"], registry=r)
        self.version = Gauge(f"{p}_model_version", "Checkpoint version predicting",
                             registry=r)
        self.cold_start = Gauge(f"{p}_model_cold_start", "1 while the prior scores",
                                registry=r)
        self.labels_seen = Gauge(f"{p}_model_labels_learnt", "Labels the champion learnt",
                                 registry=r)
        self.auc = Gauge(f"{p}_model_auc", "Prequential rolling AUC", ["model"], registry=r)
        self.log_loss = Gauge(f"{p}_model_log_loss", "Prequential rolling log loss",
                              ["model"], registry=r)
        self.brier = Gauge(f"{p}_model_brier", "Prequential rolling Brier score",
                           ["model"], registry=r)
        self.calibration_predicted = Gauge(
            f"{p}_model_calibration_predicted", "Champion: mean predicted probability by band",
            ["band"], registry=r)
        self.calibration_observed = Gauge(
            f"{p}_model_calibration_observed", "Champion: observed churn rate by band",
            ["band"], registry=r)
        self.calibration_labels = Gauge(
            f"{p}_model_calibration_labels", "Champion: labels in the window by band",
            ["band"], registry=r)
        self.drift = Gauge(f"{p}_model_drift_detections", "ADWIN detections on the error",
                           registry=r)

    def publish_card(self, version: int, card: dict[str, Any], cold_start: bool,
                     labels_learnt: int) -> None:
        self.version.set(version)
        self.cold_start.set(1 if cold_start else 0)
        self.labels_seen.set(labels_learnt)
        for role in ROLES:
            figures = (card.get(role) or {}).get("prequential") or {}
            for gauge, key in ((self.auc, "auc"), (self.log_loss, "log_loss"),
                               (self.brier, "brier")):
                if figures.get(key) is not None:
                    gauge.labels(role).set(figures[key])
        champion = (card.get("champion") or {}).get("prequential") or {}
        for row in champion.get("calibration", []):
            self.calibration_labels.labels(row["band"]).set(row["n"])
            if row["mean_predicted"] is not None:
                self.calibration_predicted.labels(row["band"]).set(row["mean_predicted"])
                self.calibration_observed.labels(row["band"]).set(row["observed_rate"])
        detector = card.get("drift_detector") or {}
        self.drift.set(detector.get("detections", 0))

    async def refresh(self, conn: Any) -> None:
        rows = (await conn.execute(_SCORE_DISTRIBUTION)).all()
        set_all(self.customers_by_band, {r.band: r.n for r in rows if r.band is not None})
        bins = {f"{t / 10:.1f}": 0 for t in range(10)}  # an empty bin is a real zero
        for r in rows:
            if r.band is None and r.tenth is not None:
                bins[f"{r.tenth / 10:.1f}"] = r.n
        set_all(self.customers_by_probability, bins)

    def state_gauges(self, engine: Any) -> StateGauges:
        """The loop that keeps the score distribution current (a background task)."""
        return StateGauges(engine, self.refresh, service=self.service, registry=self.registry)
