"""Scoring's own Prometheus figures: scores, samples, labels, learning and the model's
prequential quality (tenure_scoring_...), on the service's registry."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

ROLES = ("champion", "challenger", "prior")


class ScoringMetrics:
    def __init__(self, registry: CollectorRegistry, service: str = "scoring"):
        p = f"tenure_{service}"
        r = registry
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
