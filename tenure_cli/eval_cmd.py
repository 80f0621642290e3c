"""`tenure eval`: run the simulator through the platform and score it against ground truth.

Protocol (docs/evaluation.md): for each run, fresh topics and schemas; the four services run
as processes; only events on or before `as_of` are published; `churn-report` scores every
customer as of that date once the platform has caught up. Labels follow DESIGN.md §3 and are
computed from the simulated future in (as_of, as_of + H]. Baselines see exactly the same
history: recency (days since the last customer-initiated activity) and a BG/NBD model
fitted on the calibration window (customer-initiated transactions up to as_of).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa
import yaml
from aiokafka.admin import AIOKafkaAdminClient
from sqlalchemy.ext.asyncio import create_async_engine

from shared.db import migrate
from shared.events import EnvelopeBase
from shared.settings import ALL_TOPICS, PlatformSettings
from shared.topics import ensure_topics
from tenure_cli import evaluation as ev
from tenure_cli.btyd import BGNBD, rfm_arrays, rfm_summary
from tenure_cli.procs import ServiceProcess
from tenure_cli.publish import EventPublisher
from tenure_cli.report import churn_report, parse_as_of
from tenure_cli.services import SERVICE_NAMES, migrations_dir, settings_class
from tenure_cli.simulator import SimConfig, ground_truth, simulate

FLAGGED_STAGES = {"at_risk", "dormant", "churned"}


def customer_initiated(e: EnvelopeBase) -> bool:
    if e.event_type == "transaction.posted":
        return e.payload.initiated_by.value == "customer"  # type: ignore[attr-defined]
    return e.event_type in ("app.click", "feedback.submitted")


class History:
    """What the labels and the baselines need from the simulated events."""

    def __init__(self) -> None:
        self.activity: dict[str, list[datetime]] = defaultdict(list)
        self.purchases: list[tuple[str, datetime]] = []
        self.first_seen: dict[str, datetime] = {}
        self.open_accounts: dict[str, set[str]] = defaultdict(set)
        self.closed_all_at: dict[str, datetime | None] = {}

    def add(self, e: EnvelopeBase) -> None:
        cid = e.customer_id
        self.first_seen.setdefault(cid, e.occurred_at)
        if customer_initiated(e):
            self.activity[cid].append(e.occurred_at)
            if e.event_type == "transaction.posted":
                self.purchases.append((cid, e.occurred_at))
        if e.event_type == "account.opened":
            self.open_accounts[cid].add(e.payload.account_id)  # type: ignore[attr-defined]
        elif e.event_type == "account.closed":
            accounts = self.open_accounts[cid]
            accounts.discard(e.payload.account_id)  # type: ignore[attr-defined]
            if not accounts and self.closed_all_at.get(cid) is None:
                self.closed_all_at[cid] = e.occurred_at


def _age_band(birth_date: str, as_of: datetime) -> str:
    age = (as_of.date() - datetime.fromisoformat(birth_date).date()).days / 365.25
    return "<30" if age < 30 else "30-44" if age < 45 else "45-59" if age < 60 else "60+"


def _round(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, dict):
        return {k: _round(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_round(v) for v in value]
    return value


async def run_one(run: dict[str, Any], horizon: int, workdir: Path) -> dict[str, Any]:
    config = SimConfig(
        customers=int(run["customers"]), seed=int(run["seed"]), profile=run["profile"],
        start=datetime.fromisoformat(run["start"]).replace(tzinfo=UTC), days=int(run["days"]),
    )
    as_of = parse_as_of(str(run["as_of"]))
    if as_of + timedelta(days=horizon) > config.end:
        raise SystemExit(f"run {run['name']}: as_of + horizon is beyond the simulated period")
    prefix = f"eval{uuid.uuid4().hex[:8]}"
    base = PlatformSettings()
    env = {
        "TENURE_KAFKA_BOOTSTRAP": base.kafka_bootstrap,
        "TENURE_DATABASE_URL": base.database_url,
        "TENURE_TOPIC_PREFIX": f"{prefix}.",
        "TENURE_SCHEMA_PREFIX": f"{prefix}_",
        "TENURE_LOG_LEVEL": "WARNING",
    }
    settings = PlatformSettings(topic_prefix=f"{prefix}.", schema_prefix=f"{prefix}_")
    await ensure_topics(settings)
    for name in SERVICE_NAMES:
        await migrate(settings_class(name)(**{"topic_prefix": settings.topic_prefix,
                                              "schema_prefix": settings.schema_prefix}),
                      migrations_dir(name))
    services = [ServiceProcess(n, env, workdir / run["name"] / f"{n}.log") for n in SERVICE_NAMES]
    for s in services:
        s.start(wait=False)
    try:
        for s in services:
            s.wait()
        history = History()
        started = time.monotonic()
        published = 0
        async with EventPublisher(settings) as publisher:
            for event in simulate(config):
                history.add(event)
                if event.occurred_at <= as_of:
                    await publisher.send(event)
                    published += 1
        print(f"[eval] {run['name']}: published {published} events up to {as_of.date()}",
              file=sys.stderr)
        report_path = workdir / run["name"] / "churn-report.csv"
        await churn_report(as_of, report_path, timeout=3600, settings=settings,
                           urls={s.service: s.url for s in services}, quiet=True)
        processing_s = time.monotonic() - started
    finally:
        for s in services:
            s.stop()
        await _drop(settings, prefix)

    with report_path.open() as f:
        report = {row["customer_id"]: row for row in csv.DictReader(f)}
    truth = {t["customer_id"]: t for t in ground_truth(config)}
    labelled = ev.churn_labels(history.activity, history.closed_all_at, as_of, horizon,
                               first_seen_by_customer=history.first_seen)
    customers = [c for c in labelled.eligible if c in labelled.labels and c in report]
    y = np.array([labelled.labels[c] for c in customers], dtype=float)
    model = np.array([float(report[c]["probability"]) for c in customers])

    recency = ev.recency_baseline(ev.last_activity_before(history.activity, as_of), as_of,
                                  missing=10_000.0)
    recency_scores = np.array([recency.get(c, 10_000.0) for c in customers])

    summary = rfm_summary(history.purchases, as_of)
    ids, x, t_x, T = rfm_arrays(summary)
    btyd = BGNBD().fit(x, t_x, T)
    p_none = dict(zip(ids, btyd.churn_probability(float(horizon), x, t_x, T), strict=True))
    # No purchase at all in the calibration window: nothing to extrapolate, treat as gone.
    btyd_scores = np.array([float(p_none.get(c, 1.0)) for c in customers])

    stages = [report[c]["stage"] for c in customers]
    churners = [i for i, label in enumerate(y) if label == 1]
    stayers = [i for i, label in enumerate(y) if label == 0]
    flagged = [stages[i] in FLAGGED_STAGES for i in range(len(customers))]

    segments = [truth[c]["segment"] for c in customers]
    ages = [_age_band(truth[c]["birth_date"], as_of) for c in customers]
    bands = defaultdict(int)
    for c in customers:
        bands[report[c]["band"]] += 1
    return _round({
        "name": run["name"],
        "profile": run["profile"],
        "customers": config.customers,
        "seed": config.seed,
        "as_of": as_of.isoformat(),
        "horizon_days": horizon,
        "events_published": published,
        "processing_seconds": processing_s,
        "labelled": len(customers),
        "excluded": dict(_count(labelled.excluded.values())),
        "model": ev.summarize(y, model, probabilities=model),
        "model_names": dict(_count(report[c]["model"] for c in customers)),
        "recency_baseline": ev.summarize(y, recency_scores),
        "btyd_baseline": {**ev.summarize(y, btyd_scores, probabilities=btyd_scores),
                          "params": btyd.params},
        "stages": {
            "distribution": dict(_count(stages)),
            "churners_flagged_share": (
                sum(flagged[i] for i in churners) / len(churners) if churners else None
            ),
            "false_alarm_share": (
                sum(flagged[i] for i in stayers) / len(stayers) if stayers else None
            ),
            "median_lead_days": None,
        },
        "score_bands": dict(bands),
        "calibration": [b.__dict__ for b in ev.calibration_table(y, model, bins=5)],
        "fairness": {
            "segment": ev.by_group(segments, y, model),
            "age_band": ev.by_group(ages, y, model),
        },
    })


def _count(values: Any) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for v in values:
        out[str(v)] += 1
    return dict(sorted(out.items()))


async def _drop(settings: PlatformSettings, prefix: str) -> None:
    engine = create_async_engine(settings.database_url)
    try:
        async with engine.begin() as conn:
            for name in SERVICE_NAMES:
                await conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{prefix}_{name}" CASCADE'))
    finally:
        await engine.dispose()
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        await admin.delete_topics([settings.topic(t) for t in ALL_TOPICS])
    except Exception:  # noqa: BLE001 - leftover topics are harmless, only untidy
        pass
    finally:
        await admin.close()


def render_markdown(results: dict[str, Any]) -> str:
    lines = [
        "# Evaluation",
        "",
        "Produced by `./dev eval` from `eval/config.yaml`; figures in `eval/results.json`.",
        "",
        "## Protocol",
        "",
        "- Each run simulates a bank (`full`) or a purchase log (`purchases`) with a fixed seed,",
        "  on fresh topics and schemas, with the four services running as processes.",
        "- **Only events on or before `as_of` are published** (the platform never sees the",
        "  future). `tenure churn-report --as-of` then waits until every consumer group has",
        "  caught up and every outbox is empty, and scores every customer as of that date.",
        "- **Label** (DESIGN.md §3): churn within H days = all accounts closed, or no",
        "  customer-initiated activity, in (as_of, as_of + H]; computed from the simulated",
        "  future. Customers first seen after as_of, or closed before it, are not labelled.",
        "- **Baselines**, fitted on exactly the same history up to as_of: *recency* (days since",
        "  the last customer-initiated activity) and *BG/NBD* (Fader, Hardie & Lee 2005,",
        "  `tenure_cli/btyd.py`) on customer-initiated transactions, scoring P(no purchase in",
        "  the next H days). Customers without a purchase in the window score 1.",
        "- Metrics: AUC, Brier score (probabilities only), top-decile lift (churn rate in the",
        "  riskiest 10% ÷ overall rate). Fairness: AUC and score quartiles by segment and age",
        "  band (groups under 30 customers are flagged, not scored).",
        "- Real data: `tenure import` replays a bank's or retailer's history the same way;",
        "  import only events up to the as-of date, then run `tenure churn-report`.",
        "",
        f"Run at {results['generated_at']} (commit {results.get('commit') or 'n/a'}).",
        "",
    ]
    for run in results["runs"]:
        lines += [
            f"## {run['name']} ({run['profile']}): {run['customers']} customers, seed "
            f"{run['seed']}, as of {run['as_of'][:10]}, H = {run['horizon_days']} days",
            "",
            f"{run['events_published']:,} events published; {run['labelled']:,} customers "
            f"labelled; processing and report took {run['processing_seconds']:.0f} s. "
            f"Scored by: {run['model_names']}.",
            "",
            "| scorer | AUC | Brier | top-decile lift | base rate |",
            "|---|---:|---:|---:|---:|",
        ]
        for label, key in (("Tenure model", "model"), ("recency baseline", "recency_baseline"),
                           ("BG/NBD baseline", "btyd_baseline")):
            m = run[key]
            lines.append(
                f"| {label} | {_fmt(m['auc'])} | {_fmt(m.get('brier'))} | "
                f"{_fmt(m['top_decile_lift'])} | {_fmt(m['base_rate'])} |"
            )
        s = run["stages"]
        lines += [
            "",
            f"Stages of labelled customers at as_of: {s['distribution']}. Churners flagged "
            f"(at_risk, dormant or churned) at as_of: {_fmt(s['churners_flagged_share'])}; "
            f"false alarms among stayers: {_fmt(s['false_alarm_share'])}; median lead time: "
            f"{_fmt(s['median_lead_days'])}.",
            "",
            f"Score bands: {run['score_bands']}.",
            "",
            "Fairness (model AUC by group):",
            "",
            "| group | n | base rate | AUC | median score |",
            "|---|---:|---:|---:|---:|",
        ]
        for dim in ("segment", "age_band"):
            for g, m in run["fairness"][dim].items():
                auc = "too small" if m["too_small"] else _fmt(m["auc"])
                lines.append(f"| {dim}={g} | {m['n']} | {_fmt(m['base_rate'])} | {auc} | "
                             f"{_fmt(m['score_median'])} |")
        lines.append("")
    lines += [
        "Playbook uplift against holdout: not measured yet (the engagement service does not",
        "run playbooks with holdouts yet).",
        "",
    ]
    return "\n".join(lines)


def _fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


def main(args: argparse.Namespace) -> int:
    config = yaml.safe_load(Path(args.config).read_text())
    horizon = int(config.get("horizon_days", 90))
    runs = [r for r in config["runs"] if not args.only or r["name"] in args.only]
    with tempfile.TemporaryDirectory(prefix="tenure-eval-") as tmp:
        results = {
            "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "commit": _commit(),
            "runs": [asyncio.run(run_one(r, horizon, Path(tmp))) for r in runs],
        }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    Path(args.doc).write_text(render_markdown(results))
    print(f"[eval] wrote {out} and {args.doc}", file=sys.stderr)
    return 0


def _commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="eval/config.yaml")
    parser.add_argument("--out", default="eval/results.json")
    parser.add_argument("--doc", default="docs/evaluation.md")
    parser.add_argument("--only", nargs="*", help="run only these named runs")
