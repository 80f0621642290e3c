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
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from shared.events import EnvelopeBase
from shared.settings import PlatformSettings
from tenure_cli import evaluation as ev
from tenure_cli.oracle import purchase_bayes, purchase_oracle
from tenure_cli.private_platform import count, judge_report, margin_text, private_platform
from tenure_cli.publish import EventPublisher
from tenure_cli.report import churn_report, parse_as_of
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
    async with private_platform(workdir / run["name"]) as platform:
        settings, urls = platform.settings, platform.urls
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
        await churn_report(as_of, report_path, timeout=3600, settings=settings, urls=urls,
                           quiet=True)
        model_card = await fetch_model_summary(settings, urls["scoring"])
        stage_histories = await fetch_stage_histories(settings, urls["lifecycle"])
        processing_s = time.monotonic() - started

    with report_path.open() as f:
        report = {row["customer_id"]: row for row in csv.DictReader(f)}
    truth = {t["customer_id"]: t for t in ground_truth(config)}
    judged = judge_report(report, history.activity, history.closed_all_at, history.first_seen,
                          history.purchases, as_of, horizon)
    customers, y, model, labelled = judged.customers, judged.labels, judged.model, judged.labelled

    # A ceiling, not a baseline (tenure_cli.oracle): the true churn probability given the
    # history and each customer's own simulated parameters, which no model sees.
    # And the history-only ceiling: P(churn | history) under the simulator's population
    # prior of those parameters, the best any model that sees only the history can do.
    oracle = bayes = None
    if config.profile == "purchases":
        oracle_scores = np.array([purchase_oracle(config, c, history.activity[c], as_of, horizon)
                                  for c in customers])
        oracle = {**ev.summarize(y, oracle_scores, probabilities=oracle_scores),
                  "minus_btyd": ev.auc_difference(y, oracle_scores, judged.btyd_scores),
                  "model_minus_oracle": ev.auc_difference(y, model, oracle_scores)}
        bayes_scores = purchase_bayes(config, customers, history.activity, as_of, horizon)
        bayes = {**ev.summarize(y, bayes_scores, probabilities=bayes_scores),
                 "minus_btyd": ev.auc_difference(y, bayes_scores, judged.btyd_scores),
                 "model_minus_bayes": ev.auc_difference(y, model, bayes_scores)}

    stages = [stage_histories[c]["stage"] if c in stage_histories else report[c]["stage"]
              for c in customers]
    stage_figures = stage_accuracy(customers, labelled.labels, labelled.outcome, stages,
                                   stage_histories, history.activity, history.closed_all_at,
                                   as_of)

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
        **judged.figures,
        "oracle_ceiling": oracle,
        "bayes_ceiling": bayes,
        "stages": {"distribution": dict(count(stages)), **stage_figures},
        "score_bands": dict(bands),
        "scoring_model": model_card,
        "fairness": {
            "segment": ev.by_group(segments, y, model),
            "age_band": ev.by_group(ages, y, model),
        },
    })


async def fetch_model_summary(settings: PlatformSettings, scoring_url: str) -> dict[str, Any]:
    """What the scores of the report came from: scoring's model card, in brief."""
    import httpx

    from shared.auth import mint_token

    token = mint_token(settings.jwt_secret, subject="eval", kind="service",
                       scopes=["scoring:read"], audience=settings.jwt_audience)
    async with httpx.AsyncClient(base_url=scoring_url, timeout=120,
                                 headers={"Authorization": f"Bearer {token}"}) as client:
        card = (await client.get("/v1/model")).raise_for_status().json()
    champion = card.get("champion") or {}
    metrics = card.get("metrics") or {}
    return {
        "version": card.get("version"),
        "active": card.get("active"),
        "labels_learnt": (card.get("cold_start") or {}).get("labels_learnt"),
        "labels": {k: v for k, v in (card.get("labels") or {}).items()
                   if isinstance(v, int | float)},
        "champion_parameters": champion.get("parameters"),
        "prequential_auc": {k: (metrics.get(k) or {}).get("auc")
                            for k in ("champion", "challenger", "prior")},
        "drift_detections": ((card.get("drift") or {}).get("detector") or {}).get("detections"),
        "switches": [{k: e.get(k) for k in ("kind", "from", "to", "reason")}
                     for e in (card.get("promotion") or {}).get("history", [])],
    }


def _model_line(m: dict[str, Any] | None) -> str:
    if not m:
        return "Scoring model: not recorded."
    switches = ", ".join(f"{e['kind']} {e['from']} -> {e['to']}" for e in m["switches"]) or "none"
    return (f"Scoring model at the report: {m['active']} version {m['version']}, "
            f"{m['labels_learnt']} labels learnt; prequential AUC {m['prequential_auc']}; "
            f"drift detections {m['drift_detections']}; switches: {switches}.")


# ------------------------------------------------------------------ stage accuracy

WARNING_STAGES = {"at_risk", "dormant"}


async def fetch_stage_histories(
    settings: PlatformSettings, lifecycle_url: str, *, timeout: float = 600.0
) -> dict[str, dict[str, Any]]:
    """Every customer's stage history from lifecycle, once its sweeper has settled (every
    partition idle, nobody due): customer_id -> {stage, history: [{from, to, rule,
    transition_at}]}."""
    import httpx

    from shared.auth import mint_token

    token = mint_token(settings.jwt_secret, subject="eval", kind="service",
                       scopes=["lifecycle:read"], audience=settings.jwt_audience)
    out: dict[str, dict[str, Any]] = {}
    async with httpx.AsyncClient(base_url=lifecycle_url, timeout=120,
                                 headers={"Authorization": f"Bearer {token}"}) as client:
        deadline = time.monotonic() + timeout
        while not (await client.get("/v1/sweeper")).json()["settled"]:
            if time.monotonic() > deadline:
                raise TimeoutError("lifecycle did not settle")
            await asyncio.sleep(1.0)
        after: str | None = None
        while True:
            params: dict[str, Any] = {"limit": 5000, **({"after": after} if after else {})}
            body = (await client.get("/v1/stages/history", params=params)).json()
            for item in body["items"]:
                out[item["customer_id"]] = {
                    "stage": item["stage"],
                    "history": [
                        {**h, "transition_at": datetime.fromisoformat(h["transition_at"])}
                        for h in item["history"]
                    ],
                }
            after = body.get("next")
            if not after:
                return out


LAPSE_DAYS = 90.0  # DESIGN.md §2: dormant after 90 days without customer-initiated activity


def left_at(
    outcome: str, activity: list[datetime], closed_all_at: datetime | None, as_of: datetime
) -> datetime | None:
    """When a labelled churner left: when their last account closed (outcome "closed"), or,
    for a churner who went silent, their last customer-initiated activity on or before
    as_of (the start of the silence the label observes)."""
    if outcome == "closed":
        return closed_all_at
    before = [t for t in activity if t <= as_of]
    return max(before) if before else None


def lapsed_at(
    outcome: str, activity: list[datetime], closed_all_at: datetime | None, as_of: datetime,
    lapse_days: float = LAPSE_DAYS,
) -> datetime | None:
    """When a labelled churner was lost to the bank: their last account's closure, or their
    silence reaching `lapse_days` (dormancy), whichever came first."""
    before = [t for t in activity if t <= as_of]
    silent = max(before) + timedelta(days=lapse_days) if before else None
    closed = closed_all_at if outcome == "closed" else None
    moments = [t for t in (silent, closed) if t is not None]
    return min(moments) if moments else None


def warning_lead_days(
    history: list[dict[str, Any]], left: datetime, warning: frozenset[str] | set[str] = (
        frozenset(WARNING_STAGES))
) -> float | None:
    """Days between the start of the warning (by default at_risk, or dormant reached from it)
    that stood when the customer left, and their leaving; None if no warning stood then.
    The history is what the platform announced through as_of: for a moment after as_of the
    stage at as_of stands."""
    stage: str | None = None
    since: datetime | None = None
    for h in history:
        if h["transition_at"] >= left:
            break
        if h["to"] in warning and stage not in warning:
            since = h["transition_at"]
        stage = h["to"]
    if stage not in warning or since is None:
        return None
    return (left - since).total_seconds() / 86_400


def stage_accuracy(
    customers: list[str], labels: dict[str, int], outcome: dict[str, str], stages: list[str],
    histories: dict[str, dict[str, Any]], activity: dict[str, list[datetime]],
    closed_all_at: dict[str, datetime | None], as_of: datetime,
    lapse_days: float = LAPSE_DAYS,
) -> dict[str, Any]:
    """The lifecycle's early warning against the labels (docs/evaluation.md).

    Churners still within reach at as_of (*leavers*: not yet lapsed, i.e. their last
    account closes in the window, or their silence began less than `lapse_days` before
    as_of) are judged twice:

    - warned_before_leaving_share (and lead quartiles): at_risk standing when they left, i.e.
      at the closure, or at their last own activity: warned while still active;
    - warned_before_lapse_share (and lead quartiles): at_risk standing when they were lost,
      i.e. at the closure or when the silence reached dormancy: warned while the bank could
      still act. Judged on the stages announced through as_of.

    Churners already lapsed at as_of are counted apart (`churners_already_lapsed`). Also:
    churners_flagged_share and median_lead_days over every churner (the strict definition
    with dormant-from-at_risk counting as a warning, kept for comparison with earlier runs);
    churners_flagged_at_as_of (churners in at_risk, dormant or churned at as_of);
    false_alarm_share: stayers in at_risk at as_of; stayers_dormant_or_churned_share: stayers
    in those stages at as_of (they come back in the window); loyal_base_at_risk_share:
    stayers who have been loyal and are in at_risk at as_of.

    >>> t = [datetime(2025, 1, d, tzinfo=UTC) for d in (1, 10, 20, 30)]
    >>> hist = {"a": {"history": [{"to": "active", "transition_at": t[0]},
    ...                           {"to": "at_risk", "transition_at": t[1]}]},
    ...         "b": {"history": [{"to": "active", "transition_at": t[0]}]}}
    >>> figures = stage_accuracy(["a", "b", "c"], {"a": 1, "b": 1, "c": 0},
    ...     {"a": "closed", "b": "inactive", "c": "active"}, ["at_risk", "active", "at_risk"],
    ...     hist, {"a": [t[0]], "b": [t[1]]}, {"a": t[3]}, as_of=t[2])
    >>> figures["leavers"], figures["warned_before_leaving_share"]
    (2, 0.5)
    >>> figures["lead_before_leaving_days"], figures["lead_before_lapse_days"]
    ([20.0, 20.0, 20.0], [20.0, 20.0, 20.0])
    >>> figures["false_alarm_share"], figures["churners_flagged_at_as_of"]
    (1.0, 0.5)
    """
    churners = [i for i, c in enumerate(customers) if labels.get(c) == 1]
    stayers = [i for i, c in enumerate(customers) if labels.get(c) == 0]

    def quartiles(values: list[float]) -> list[float] | None:
        return [float(q) for q in np.percentile(values, [25, 50, 75])] if values else None

    def share(part: int, whole: int) -> float | None:
        return part / whole if whole else None

    strict: list[float] = []
    judged = 0
    leavers = 0
    before_leaving: list[float] = []
    before_lapse: list[float] = []
    for i in churners:
        c = customers[i]
        history = (histories.get(c) or {}).get("history", [])
        acts, closed = activity.get(c, []), closed_all_at.get(c)
        left = left_at(outcome.get(c, ""), acts, closed, as_of)
        if left is None:
            continue
        judged += 1
        lead = warning_lead_days(history, left)
        if lead is not None:
            strict.append(lead)
        lapsed = lapsed_at(outcome.get(c, ""), acts, closed, as_of, lapse_days)
        if lapsed is None or lapsed <= as_of:
            continue  # already lost at as_of: an early warning cannot be judged on them now
        leavers += 1
        for moment, leads in ((left, before_leaving), (lapsed, before_lapse)):
            lead = warning_lead_days(history, moment, {"at_risk"})
            if lead is not None:
                leads.append(lead)
    flagged_now = [stages[i] in FLAGGED_STAGES for i in range(len(customers))]
    loyal_stayers = [i for i in stayers if any(
        h["to"] == "loyal" for h in (histories.get(customers[i]) or {}).get("history", []))]
    strict_q = quartiles(strict)
    alarms_by_rule: dict[str, int] = defaultdict(int)  # what put stayers in at_risk
    for i in stayers:
        entered = [h for h in (histories.get(customers[i]) or {}).get("history", [])
                   if h["to"] == "at_risk"]
        if stages[i] == "at_risk" and entered:
            alarms_by_rule[str(entered[-1].get("rule"))] += 1
    return {
        "churners": len(churners),
        "leavers": leavers,
        "churners_already_lapsed": judged - leavers,
        "warned_before_leaving_share": share(len(before_leaving), leavers),
        "lead_before_leaving_days": quartiles(before_leaving),
        "warned_before_lapse_share": share(len(before_lapse), leavers),
        "lead_before_lapse_days": quartiles(before_lapse),
        "churners_flagged_share": share(len(strict), judged),
        "median_lead_days": strict_q[1] if strict_q else None,
        "lead_days_quartiles": strict_q,
        "churners_flagged_at_as_of": share(sum(flagged_now[i] for i in churners), len(churners)),
        "false_alarm_share": share(sum(stages[i] == "at_risk" for i in stayers), len(stayers)),
        "stayers_dormant_or_churned_share": share(
            sum(stages[i] in ("dormant", "churned") for i in stayers), len(stayers)),
        "loyal_base_at_risk_share": share(
            sum(stages[i] == "at_risk" for i in loyal_stayers), len(loyal_stayers)),
        "false_alarms_by_rule": dict(sorted(alarms_by_rule.items())),
    }


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
        "  caught up, every outbox is empty and scoring has learnt every closed window, and",
        "  scores every customer as of that date.",
        "- **Label** (DESIGN.md §3): churn within H days = all accounts closed, or no",
        "  customer-initiated activity, in (as_of, as_of + H]; computed from the simulated",
        "  future. Customers first seen after as_of, or closed before it, are not labelled.",
        "- **Baselines**, fitted on exactly the same history up to as_of: *recency* (days since",
        "  the last customer-initiated activity) and *BG/NBD* (Fader, Hardie & Lee 2005,",
        "  `tenure_cli/btyd.py`) on customer-initiated transactions, scoring P(no purchase in",
        "  the next H days). Customers without a purchase in the window score 1.",
        "- **Stages**: lifecycle's stage histories, read once its sweeper has settled (they",
        "  run through as_of). *Leavers*: churners not yet lost at as_of (their last account",
        "  closes in the window, or their silence began under 90 days before as_of); churners",
        "  already silent longer are counted apart. A leaver is *warned before leaving* when",
        "  at_risk stood at the closure or at their last own activity (warned while still",
        "  active), and *warned before the lapse* when at_risk stood at the closure or when the",
        "  silence reached 90 days (dormancy, DESIGN.md §2; for moments after as_of, the stage",
        "  at as_of). *Lead*: from the start of that at_risk to the moment. *False alarms*:",
        "  stayers in at_risk at as_of; stayers in dormant or churned at as_of (they return in",
        "  the window) are shown apart. The earlier strict figure (every churner, at_risk or",
        "  dormant reached from it standing at the closure or the last activity) is kept.",
        "- Metrics: AUC, Brier score (probabilities only), top-decile lift (churn rate in the",
        "  riskiest 10% ÷ overall rate). Fairness: AUC and score quartiles by segment and age",
        "  band (groups under 30 customers are flagged, not scored).",
        "- Real data: `tenure import` replays a bank's or retailer's history the same way;",
        "  import only events up to the as-of date, then run `tenure churn-report`.",
        "",
        "Runs recorded here: " + "; ".join(
            [f"`{run['name']}` at {_when({**results, **run})}" for run in results["runs"]]
            + ([f"playbook uplift at {_when({**results, **results['uplift']})}"]
               if results.get("uplift") else [])) + ".",
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
        oracle = run.get("oracle_ceiling")
        if oracle:
            lines.append(
                f"| *ceiling, not a baseline*: oracle (each customer's true simulated "
                f"parameters) | {_fmt(oracle['auc'])} | {_fmt(oracle.get('brier'))} | "
                f"{_fmt(oracle['top_decile_lift'])} | {_fmt(oracle['base_rate'])} |")
        bayes = run.get("bayes_ceiling")
        if bayes:
            lines.append(
                f"| *ceiling, not a baseline*: best history-only ranking (the simulator's true "
                f"population prior, Bayes) | {_fmt(bayes['auc'])} | {_fmt(bayes.get('brier'))} | "
                f"{_fmt(bayes['top_decile_lift'])} | {_fmt(bayes['base_rate'])} |")
        margins = run.get("model_vs_baselines") or {}
        shown = [f"{name} {margin_text(margins.get(key))}"
                 for name, key in (("recency", "recency"), ("BG/NBD", "btyd"))]
        lines += ["", "Model AUC minus baseline AUC, with a 95 % paired bootstrap interval over "
                      f"customers (an interval holding 0 is a tie): {'; '.join(shown)}."]
        if oracle:
            lines += ["", "The oracle ranks by the true probability of churn given the history "
                          "up to as_of *and* the customer's own simulated purchase rate and "
                          "dropout chance (`tenure_cli/oracle.py`): an upper bound, in "
                          "expectation, for any ranking from the history, which does not reveal "
                          "those parameters (what a history-only ranking can reach is lower: "
                          "the history-only ceiling). "
                          "Oracle minus BG/NBD "
                          f"{margin_text(oracle.get('minus_btyd'))}; model minus oracle "
                          f"{margin_text(oracle.get('model_minus_oracle'))}."]
        if bayes:
            lines += ["", "The history-only ceiling ranks by the probability of churn given the "
                          "history up to as_of alone, averaged over the simulator's true "
                          "population prior of those parameters (Bayes, `tenure_cli/oracle.py`): "
                          "what any model that sees only the purchase history could reach, in "
                          "expectation (on one sample it can be beaten only by noise). "
                          "History-only ceiling minus BG/NBD "
                          f"{margin_text(bayes.get('minus_btyd'))}; model minus history-only "
                          f"ceiling {margin_text(bayes.get('model_minus_bayes'))}."]
        s = run["stages"]
        lines += [
            "",
            f"Stages of labelled customers at as_of: {s['distribution']}.",
            "",
            "| lifecycle early warning | value |",
            "|---|---:|",
            f"| churners (leavers not yet lost at as_of / already lapsed) | {s['churners']} "
            f"({s.get('leavers', 'n/a')} / {s.get('churners_already_lapsed', 'n/a')}) |",
            f"| leavers warned before leaving (closure or last own activity) | "
            f"{_fmt(s.get('warned_before_leaving_share'))} |",
            f"| lead before leaving, days (quartiles) | "
            f"{_fmt_list(s.get('lead_before_leaving_days'))} |",
            f"| leavers warned before the lapse (closure or 90 days silent) | "
            f"{_fmt(s.get('warned_before_lapse_share'))} |",
            f"| lead before the lapse, days (quartiles) | "
            f"{_fmt_list(s.get('lead_before_lapse_days'))} |",
            f"| every churner, strict (at_risk or dormant from it at closure or last "
            f"activity); median lead | {_fmt(s['churners_flagged_share'])}; "
            f"{_fmt(s['median_lead_days'])} |",
            f"| churners in at_risk, dormant or churned at as_of | "
            f"{_fmt(s.get('churners_flagged_at_as_of'))} |",
            f"| **false alarms**: stayers in at_risk at as_of | "
            f"{_fmt(s['false_alarm_share'])} |",
            f"| stayers in dormant or churned at as_of (return in the window) | "
            f"{_fmt(s.get('stayers_dormant_or_churned_share'))} |",
            f"| stayers who have been loyal, in at_risk at as_of | "
            f"{_fmt(s.get('loyal_base_at_risk_share'))} |",
            "",
            f"False alarms by the rule that raised them: {s.get('false_alarms_by_rule', {})}.",
            "",
            f"Score bands: {run['score_bands']}.",
            "",
            _model_line(run.get("scoring_model")),
            "",
            "Fairness (model AUC and score distribution by group):",
            "",
            "| group | n | base rate | AUC | score q25 | median score | score q75 |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for dim in ("segment", "age_band"):
            for g, m in run["fairness"][dim].items():
                auc = "too small" if m["too_small"] else _fmt(m["auc"])
                lines.append(f"| {dim}={g} | {m['n']} | {_fmt(m['base_rate'])} | {auc} | "
                             f"{_fmt(m.get('score_q25'))} | {_fmt(m['score_median'])} | "
                             f"{_fmt(m.get('score_q75'))} |")
        lines.append("")
    from tenure_cli.uplift_eval import render as render_uplift

    lines += render_uplift(results.get("uplift"))
    return "\n".join(lines)


def _fmt_list(values: Any) -> str:
    return "n/a" if not values else ", ".join(f"{v:.0f}" for v in values)


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
    stamp = {"generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
             "commit": _commit()}
    with tempfile.TemporaryDirectory(prefix="tenure-eval-") as tmp:
        results: dict[str, Any] = {
            **stamp, "runs": [{**asyncio.run(run_one(r, horizon, Path(tmp))), **stamp}
                              for r in runs],
        }
        uplift = config.get("uplift")
        if uplift and (not args.only or uplift.get("name", "uplift") in args.only):
            from tenure_cli.uplift_eval import run_uplift

            results["uplift"] = {**_round(asyncio.run(run_uplift(uplift, Path(tmp)))),
                                 **stamp}
    out = Path(args.out)
    if args.only:
        keep_earlier(results, out, [r["name"] for r in config["runs"]])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    Path(args.doc).write_text(render_markdown(results))
    print(f"[eval] wrote {out} and {args.doc}", file=sys.stderr)
    return 0


def keep_earlier(results: dict[str, Any], out: Path, names: list[str]) -> None:
    """With --only, the sections not run keep their last figures from `out` (each with the
    time and commit of its own run), in the configuration's order."""
    try:
        earlier = json.loads(out.read_text())
    except (OSError, ValueError):
        return
    stamp = {k: earlier.get(k) for k in ("generated_at", "commit")}
    ran = {r["name"]: r for r in results["runs"]}
    before = {r["name"]: {**stamp, **r} for r in earlier.get("runs", [])}
    results["runs"] = [ran.get(n) or before[n] for n in names if n in ran or n in before]
    if "uplift" not in results and earlier.get("uplift"):
        results["uplift"] = {**stamp, **earlier["uplift"]}


def _when(section: dict[str, Any]) -> str:
    return f"{section.get('generated_at') or 'n/a'} (commit {section.get('commit') or 'n/a'})"


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
