"""The scoring section of `tenure bench`: which sections run, the seeded stream it feeds the
service, and the figures it reports (no timing here: figures come from `./dev bench`)."""

from __future__ import annotations

import argparse

from services.scoring.domain import REFERENCE, facts_at
from services.scoring.settings import ScoringSettings
from shared.events import encode_event, parse_event
from tenure_cli.bench import ScoringMixBuilder, render_scoring, selected


def test_only_runs_one_section_and_skips_leave_the_others() -> None:
    only = argparse.Namespace(only="scoring", skip_scoring=False, skip_latency=False)
    assert [s for s in ("ingest", "latency", "population", "scoring") if selected(only, s)] \
        == ["scoring"]
    skip = argparse.Namespace(only=None, skip_scoring=True, skip_latency=True,
                              skip_population=False)
    assert [s for s in ("ingest", "latency", "population", "scoring") if selected(skip, s)] \
        == ["ingest", "population"]


def test_the_stream_is_valid_seeded_and_scores_every_snapshot() -> None:
    settings = ScoringSettings()
    events = ScoringMixBuilder(7, 50).build(600)
    assert len(events) == 600
    assert [e.event_id for e in events] == [e.event_id for e in ScoringMixBuilder(7, 50).build(600)]
    times = [e.occurred_at for e in events]
    assert times == sorted(times)
    for e in events:
        assert settings.source_allowed(e.source)
        assert parse_event(encode_event(e)) == e
    kinds = {e.event_type for e in events}
    assert {"profile.updated", "transaction.posted", "app.click"} <= kinds
    snapshots = [e for e in events if e.event_type == "profile.updated"]
    assert 0.4 < len(snapshots) / len(events) < 0.7
    # Every snapshot follows its event; the facts the service scores on vary.
    facts = [facts_at(e.payload, e.payload.as_of) for e in snapshots]  # type: ignore[attr-defined]
    for name in ("recency_days", "purchases_365", "tenure_days", "total_balance", "sessions_30",
                 "days_since_salary", "last_nps", "open_complaints", "digital_share"):
        values = {f[name] for f in facts}
        assert len(values) > 1 and values != {REFERENCE[name]}, name


def test_the_warm_up_knows_every_customer_once() -> None:
    builder = ScoringMixBuilder(7, 40)
    warm = builder.warm_up()
    assert sorted(e.customer_id for e in warm) == sorted(c.cid for c in builder.customers)
    assert all(e.occurred_at < builder.t0 for e in warm)


def test_the_report_states_the_ratio_against_its_target() -> None:
    result = {
        "timestamp": "2026-11-23T19:00:00+00:00", "git": {"commit": "abc1234", "dirty": False},
        "host_cpus": 2, "event_loop": "uvloop", "mix": {"profile.updated": 10},
        "mix_notes": "notes",
        "config": {"events": 20, "customers": 5, "partitions": 6, "batch_max_records": 2000,
                   "champion": "btyd-logit", "champion_labels": 4000, "top_reasons": 3,
                   "seed": 1},
        "service": {"scores": 10, "events": 20, "scores_per_s": 250.0, "wall_s": 0.04,
                    "cpu_s": 0.01, "server_cpu_s": {}, "startup_wall_s": 0.5,
                    "relay_lag_after_ingest_s": 0.1, "churn_scored_published": 10,
                    "dead_lettered": 0,
                    "consumer": {"scores": 10, "scores_per_s": 300.0, "wall_s": 0.033,
                                 "cpu_s": 0.009, "server_cpu_s": {}},
                    "per_score_us": {"wall": 4000.0, "process_cpu": 1000.0,
                                     "assess_facts_cpu_in_service": 200.0}},
        "bare_river": {"scores": 10, "runs": 3, "per_s": 10_000.0, "per_cpu_s": 20_000.0,
                       "wall_s": 0.001, "cpu_s": 0.0005},
        "breakdown_cpu_us": {"inputs_of": 6.0, "predict_proba_one": 8.0, "learn_one": 35.0,
                             "predict": 15.0, "reasons": 100.0,
                             "reasons_one_prediction_each": 270.0, "assess_facts": 120.0},
        "ratio_service_to_bare": 0.025, "target_ratio": 0.6, "meets_target": False,
    }
    text = render_scoring(result)
    assert "**Scoring service / bare river loop: 0.025x** (is below the 0.6x target)" in text
    assert "commit abc1234" in text
    assert "| &nbsp;&nbsp;of which outside `assess_facts`" in text and "| 800.0 |" in text
    assert "(c) Ceiling" not in text  # runs before the ceiling existed render as they were
    result["ceiling"] = {"scores": 10, "scores_per_s": 5_000.0, "wall_s": 0.002,
                         "cpu_s": 0.002, "cpu_us_per_score": 200.0, "server_cpu_s": {}}
    result["ratio_ceiling_to_bare"] = 0.5
    text = render_scoring(result)
    assert "| (c) Ceiling: the kit's loop + `assess_facts` + `churn.scored` published" in text
    assert "**Ceiling / bare river loop: 0.500x.**" in text
    assert "The service reaches 0.05 of it." in text
    assert render_scoring({"timestamp": "t", "error": "TimeoutError: x"}).endswith(
        "**failed**: TimeoutError: x")
