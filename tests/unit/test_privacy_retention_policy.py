"""The retention policy as data: every topic has a finite period, every age rule names its
column, and production schedules the purge job."""

from __future__ import annotations

from pathlib import Path

import yaml

from shared.settings import ALL_TOPICS, INPUT_TOPICS
from tenure_cli import retention

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"


def test_every_topic_has_a_finite_retention() -> None:
    assert set(retention.TOPIC_RETENTION_DAYS) == set(ALL_TOPICS)
    assert all(1 <= days <= 400 for days in retention.TOPIC_RETENTION_DAYS.values())


def test_every_rule_is_complete_and_says_why() -> None:
    seen = set()
    for rule in retention.POLICY:
        assert (rule.service, rule.table) not in seen, rule
        seen.add((rule.service, rule.table))
        assert rule.why
        if rule.kind == "age":
            assert rule.days and rule.days > 0 and rule.column, rule
        else:
            assert rule.days is None and rule.column is None, rule


def test_the_inbox_outlives_the_input_topics_so_replays_stay_idempotent() -> None:
    [inbox] = [r for r in retention.POLICY if r.table == "inbox"]
    inputs = [retention.TOPIC_RETENTION_DAYS[t] for t in INPUT_TOPICS.values()]
    assert inbox.days is not None and inbox.days >= max(inputs)


def test_production_runs_the_purge_job_nightly() -> None:
    job = yaml.safe_load((K8S / "retention-cronjob.yaml").read_text())
    assert job["kind"] == "CronJob" and job["spec"]["concurrencyPolicy"] == "Forbid"
    pod = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["containers"][0]["command"] == ["tenure", "retention", "run"]
