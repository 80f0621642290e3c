"""Writes Tenure's Grafana dashboards (deploy/grafana/dashboards/*.json) from one description.

Run `.venv/bin/python deploy/grafana/build_dashboards.py` after changing a panel; a test fails
when the JSON files are stale, and another runs every query against a real Prometheus.

Why generated: four dashboards share one datasource, one layout and one query style
(`max` over state gauges that every replica reports alike, `sum(rate(...))` over counters),
which is easier to keep right in forty lines of Python than in two thousand of JSON.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

DATASOURCE = {"type": "prometheus", "uid": "tenure-prometheus"}
OUT = Path(__file__).parent / "dashboards"
RATE = "$__rate_interval"


def kit(metric: str) -> str:
    """Every service's copy of a consumer-kit metric (tenure_<service>_<metric>)."""
    return '{__name__=~"tenure_.+_' + metric + '"}'


def panel(title: str, *targets: tuple[str, str], kind: str = "timeseries", unit: str = "short",
          description: str = "", width: int = 12, stack: bool = False) -> dict[str, Any]:
    custom: dict[str, Any] = {}
    if kind == "timeseries":
        custom = {"drawStyle": "line", "fillOpacity": 10, "showPoints": "never",
                  "stacking": {"mode": "normal" if stack else "none", "group": "A"}}
    options: dict[str, Any] = {"legend": {"displayMode": "list", "placement": "bottom"},
                               "tooltip": {"mode": "multi"}}
    if kind in ("stat", "bargauge"):
        options = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                   "orientation": "horizontal"}
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "fieldConfig": {"defaults": {"unit": unit, "custom": custom}, "overrides": []},
        "options": options,
        "targets": [
            {"refId": chr(ord("A") + i), "datasource": DATASOURCE, "expr": expr,
             "legendFormat": legend, "range": True}
            for i, (expr, legend) in enumerate(targets)
        ],
        "_width": width,
    }


def dashboard(uid: str, title: str, description: str, panels: list[dict[str, Any]]) -> dict:
    x = y = 0
    laid = []
    for i, p in enumerate(panels, start=1):
        width = p.pop("_width")
        height = 5 if p["type"] == "stat" else 8
        if x + width > 24:
            x, y = 0, y + 8
        laid.append({"id": i, "gridPos": {"h": height, "w": width, "x": x, "y": y}, **p})
        x += width
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["tenure"],
        "timezone": "utc",
        "editable": False,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": []},
        "annotations": {"list": []},
        "links": [{"type": "dashboards", "tags": ["tenure"], "asDropdown": True,
                   "title": "Tenure dashboards"}],
        "panels": laid,
    }


def platform() -> dict:
    return dashboard("tenure-platform", "Tenure / Platform health",
                     "Is every service up, keeping up, and publishing what it owes?", [
        panel("Services answering /metrics", ("sum by (service) (up{job=\"tenure\"})",
              "{{service}}"), kind="stat", width=8,
              description="Instances per service that answered the last scrape."),
        panel("Assigned partitions per instance",
              (f"sum by (service, instance) ({kit('assigned_partitions')})",
               "{{service}} {{instance}}"), kind="bargauge", width=16,
              description="Every partition belongs to exactly one instance of a service."),
        panel("Events processed per second",
              (f"sum by (service) (rate({kit('events_processed_total')}[{RATE}]))",
               "{{service}}"), unit="ops"),
        panel("Consumer lag (messages)",
              (f"sum by (service) ({kit('consumer_lag')})", "{{service}}"),
              description="High watermark minus position, summed over partitions."),
        panel("Batch latency p95",
              ("histogram_quantile(0.95, sum by (service, le) "
               f"(rate({kit('batch_seconds_bucket')}[{RATE}])))", "{{service}}"), unit="s",
              description="Time to apply one consumed batch in one transaction."),
        panel("Dead-lettered per minute",
              (f"60 * sum by (service, reason) (rate({kit('events_dead_lettered_total')}"
               f"[{RATE}]))", "{{service}} {{reason}}"),
              description="Messages sent to tenure.dlq.v1; `tenure dlq list` shows them."),
        panel("Outbox backlog",
              (f"max by (service) ({kit('outbox_backlog')})", "{{service}}"),
              description="Outputs committed but not yet published to Kafka."),
        panel("Outputs published per second",
              (f"sum by (service, topic) (rate({kit('outbox_published_total')}[{RATE}]))",
               "{{service}} -> {{topic}}"), unit="ops"),
        panel("Watermark delay (slowest partition)",
              (f"max by (service) ({kit('watermark_delay_seconds')})", "{{service}}"), unit="s",
              description="Wall clock minus event-time watermark; grows in a replay, "
              "stalls when a partition is stuck."),
        panel("Duplicates dropped per second",
              (f"sum by (service) (rate({kit('events_duplicate_total')}[{RATE}]))",
               "{{service}}"), unit="ops",
              description="Events whose id was already in the inbox (redelivery, replay)."),
    ])


def lifecycle() -> dict:
    return dashboard("tenure-lifecycle", "Tenure / Lifecycle funnel",
                     "Where customers are in their lifecycle and how they move.", [
        panel("Customers per stage", ("max by (stage) (tenure_lifecycle_customers)",
              "{{stage}}"), kind="bargauge", width=12),
        panel("Customers per stage over time",
              ("max by (stage) (tenure_lifecycle_customers)", "{{stage}}"), stack=True),
        panel("Stage transitions per hour",
              (f"3600 * sum by (from_stage, to_stage) "
               f"(rate(tenure_lifecycle_transitions_total[{RATE}]))",
               "{{from_stage}} -> {{to_stage}}")),
        panel("Transitions per hour by rule",
              (f"3600 * sum by (rule) (rate(tenure_lifecycle_transitions_total[{RATE}]))",
               "{{rule}}")),
        panel("Customers per value tier",
              ("max by (value_tier) (tenure_profile_customers_by_tier)", "{{value_tier}}"),
              kind="bargauge", width=8),
        panel("Customers per RFM segment",
              ("max by (rfm_segment) (tenure_profile_customers_by_rfm_segment)",
               "{{rfm_segment}}"), kind="bargauge", width=8),
        panel("Capability x willingness quadrant",
              ("max by (quadrant) (tenure_profile_customers_by_quadrant)", "{{quadrant}}"),
              kind="bargauge", width=8),
        panel("Corrections and swept customers per hour",
              (f"3600 * sum(rate(tenure_lifecycle_corrections_total[{RATE}]))", "corrections"),
              (f"3600 * sum(rate(tenure_lifecycle_swept_customers_total[{RATE}]))",
               "advanced by the sweeper"),
              description="Corrections: late facts changed an announced stage. Swept: "
              "customers whose stage moved with time alone (inactivity)."),
    ])


def churn() -> dict:
    return dashboard("tenure-churn", "Tenure / Churn model",
                     "Prequential (test-then-train) quality of the online churn model.", [
        panel("Prequential AUC", ("max by (model) (tenure_scoring_model_auc)", "{{model}}"),
              unit="percentunit",
              description="Rolling AUC of champion, challenger and the recency prior on "
              "labels as they resolve. An alert fires when the champion drops."),
        panel("Prequential log loss and Brier",
              ("max by (model) (tenure_scoring_model_log_loss)", "log loss {{model}}"),
              ("max by (model) (tenure_scoring_model_brier)", "Brier {{model}}")),
        panel("Calibration: predicted vs observed by band",
              ("max by (band) (tenure_scoring_model_calibration_predicted)",
               "predicted {{band}}"),
              ("max by (band) (tenure_scoring_model_calibration_observed)", "observed {{band}}"),
              kind="bargauge", unit="percentunit"),
        panel("Churn score distribution (customers per tenth)",
              ("max by (bin) (tenure_scoring_customers_by_probability)", "{{bin}}"),
              kind="bargauge"),
        panel("Customers per risk band",
              ("max by (band) (tenure_scoring_customers_by_band)", "{{band}}"),
              kind="bargauge", width=8),
        panel("Model version, cold start, drift detections",
              ("max(tenure_scoring_model_version)", "version"),
              ("max(tenure_scoring_model_cold_start)", "cold start (prior scores)"),
              ("max(tenure_scoring_model_drift_detections)", "drift detections"),
              kind="stat", width=16),
        panel("Scores emitted per second",
              (f"sum by (trigger) (rate(tenure_scoring_scores_emitted_total[{RATE}]))",
               "{{trigger}}"), unit="ops"),
        panel("Labels resolved per hour",
              (f"3600 * sum by (outcome) (rate(tenure_scoring_labels_resolved_total[{RATE}]))",
               "{{outcome}}")),
        panel("Samples waiting for a label",
              ("max by (state) (tenure_scoring_pending_samples)", "{{state}}")),
        panel("Labels learnt per hour",
              (f"3600 * sum(rate(tenure_scoring_labels_learnt_total[{RATE}]))", "learnt"),
              (f"3600 * sum(rate(tenure_scoring_labels_treated_not_learnt_total[{RATE}]))",
               "treated, recorded only")),
    ])


def engagement() -> dict:
    return dashboard("tenure-engagement", "Tenure / Engagement",
                     "What the playbooks decide, why, and what budget is left.", [
        panel("Decisions per minute by outcome",
              (f"60 * sum by (decision) (rate(tenure_engagement_decisions_total[{RATE}]))",
               "{{decision}}"), stack=True),
        panel("Decisions per minute by reason",
              (f"60 * sum by (reason) (rate(tenure_engagement_decisions_total[{RATE}]))",
               "{{reason}}")),
        panel("Decisions per minute by playbook",
              (f"60 * sum by (playbook) (rate(tenure_engagement_decisions_total[{RATE}]))",
               "{{playbook}}")),
        panel("Playbook budget left this month",
              ("max by (playbook) (tenure_engagement_playbook_budget_remaining)",
               "{{playbook}}"), kind="bargauge"),
        panel("Deliveries waiting and RM tasks open",
              ("max(tenure_engagement_deliveries_pending)", "deliveries pending"),
              ("max(tenure_engagement_rm_tasks_open)", "RM tasks open"), kind="stat"),
        panel("Outputs published per second",
              ("sum by (topic) (rate(tenure_engagement_outbox_published_total"
               f"[{RATE}]))", "{{topic}}"), unit="ops"),
    ])


DASHBOARDS = {"platform-health": platform, "lifecycle-funnel": lifecycle,
              "churn-model": churn, "engagement": engagement}


def render() -> dict[str, str]:
    return {f"{name}.json": json.dumps(build(), indent=2) + "\n"
            for name, build in DASHBOARDS.items()}


def main() -> int:
    OUT.mkdir(exist_ok=True)
    for name, text in render().items():
        (OUT / name).write_text(text)
        print(OUT / name, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
