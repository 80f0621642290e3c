"""`tenure backtest`: replay a history file through the platform and judge its churn scores.

A bank (or anyone holding a purchase log) asks how the platform would have done on its own
customers. The file is read as `tenure import` reads it (same mapping, validation and
rejects). The platform runs on a private namespace (`tenure_cli.private_platform`), and only
the events up to `--as-of` are imported. The churn report as of that date is then judged
against what the file says happened in the following `--horizon` days. The labels are
DESIGN.md §3's: churn = all accounts closed, or no customer-initiated activity, in
(as_of, as_of + H]. The report is judged next to the recency baseline and a BG/NBD fitted on
the same past, with paired bootstrap intervals of the model's AUC margins. The figures go to
`--out` (JSON) and a short table to stdout (and `--doc`, markdown).

The file must reach at least as_of + horizon; a customer counts only if they have an event
on or before as_of and had not closed every account by then.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tenure_cli import importer
from tenure_cli.private_platform import margin_text
from tenure_cli.report import parse_as_of

EXIT_OK, EXIT_USAGE, EXIT_UNREACHABLE = 0, 2, 4


def add_arguments(parser: argparse.ArgumentParser) -> None:
    importer.add_arguments(parser)
    parser.add_argument("--as-of", required=True, metavar="DATE",
                        help="the cut-off: events up to it are replayed, scores are asked as of "
                             "it (a bare date is the end of that day in UTC)")
    parser.add_argument("--horizon", type=int, default=90,
                        help="days after --as-of the labels look at (default 90, the platform's)")
    parser.add_argument("--out", type=Path, default=None,
                        help="figures as JSON (default <file>.backtest.json)")
    parser.add_argument("--doc", type=Path, default=None, help="also write a markdown report")
    parser.add_argument("--report", type=Path, default=None,
                        help="also keep the churn report as of --as-of (CSV, as "
                             "`tenure churn-report` writes it)")
    parser.add_argument("--timeout", type=float, default=3600.0,
                        help="seconds to wait for the platform to catch up")


def _usage(message: str) -> int:
    print(f"tenure backtest: {message}", file=sys.stderr)
    return EXIT_USAGE


def main(args: argparse.Namespace) -> int:
    """Exit codes: 0 written, 2 unusable arguments or file, 4 Kafka or PostgreSQL failed."""
    from aiokafka.errors import KafkaError

    if args.until is not None:
        return _usage("--until is set by --as-of here")
    if args.dry_run:
        return _usage("--dry-run: a backtest publishes to a private namespace only")
    if args.horizon <= 0:
        return _usage("--horizon must be positive")
    try:
        as_of = parse_as_of(args.as_of)
        options = importer.options_from(args)
        importer.check_zone(options.tz)
    except ValueError as exc:  # UsageError is one
        return _usage(f"{exc}" if isinstance(exc, importer.UsageError)
                      else f"--as-of {args.as_of!r}: {exc}")
    out = args.out or args.file.with_name(args.file.name + ".backtest.json")
    try:
        result = asyncio.run(run_backtest(options, as_of, args.horizon, timeout=args.timeout,
                                          keep_report=args.report))
    except importer.UsageError as exc:
        return _usage(str(exc))
    except (KafkaError, OSError, TimeoutError) as exc:
        print(f"tenure backtest: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, sort_keys=True, default=str) + "\n")
    text = render_markdown(result)
    if args.doc:
        args.doc.parent.mkdir(parents=True, exist_ok=True)
        args.doc.write_text(text)
    print(text)
    print(f"tenure backtest: figures in {out}", file=sys.stderr)
    return EXIT_OK


async def run_backtest(
    options: importer.ImportOptions, as_of: datetime, horizon: int, *, timeout: float,
    keep_report: Path | None = None,
) -> dict[str, Any]:
    """Read the file once to learn the labels (nothing published), check it covers the
    horizon, then replay its past on a private platform and judge the report."""
    from dataclasses import replace

    from tenure_cli.eval_cmd import History, fetch_model_summary
    from tenure_cli.private_platform import judge_report, private_platform
    from tenure_cli.report import churn_report

    history = History()
    look = await importer.run_import(replace(options, dry_run=True, observer=history.add))
    end = as_of + timedelta(days=horizon)
    if look.last_at is None:
        raise importer.UsageError(f"{options.path}: no valid event to replay")
    if look.last_at < end:
        raise importer.UsageError(
            f"the file ends at {_iso(look.last_at)}, before as_of + horizon ({_iso(end)}): "
            "the labels would be unknown; choose an earlier --as-of or a shorter --horizon")
    if look.first_at is not None and look.first_at > as_of:
        raise importer.UsageError(f"the file starts at {_iso(look.first_at)}, after --as-of")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="tenure-backtest-") as work:
        async with private_platform(Path(work)) as platform:
            imported = await importer.run_import(replace(options, until=as_of),
                                                 platform.settings)
            report_path = Path(work) / "churn-report.csv"
            await churn_report(as_of, report_path, timeout=timeout, settings=platform.settings,
                               urls=platform.urls, quiet=True)
            card = await fetch_model_summary(platform.settings, platform.urls["scoring"])
        with report_path.open() as f:
            report = {row["customer_id"]: row for row in csv.DictReader(f)}
        if keep_report is not None:
            keep_report.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(report_path, keep_report)
    judged = judge_report(report, history.activity, history.closed_all_at, history.first_seen,
                          history.purchases, as_of, horizon)
    return {
        "file": str(options.path),
        "sha256": look.digest,
        "as_of": _iso(as_of),
        "horizon_days": horizon,
        "rows_read": look.rows_read,
        "rejected": look.rejected,
        "rejects_file": look.rejects_path if look.rejected else None,
        "customers_in_file": look.customers,
        "events_replayed": imported.published,
        "events_after_as_of": imported.held_back,
        "first_event_at": _iso(look.first_at),
        "last_event_at": _iso(look.last_at),
        "processing_seconds": round(time.monotonic() - started, 1),
        "scoring_model": card,
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        **judged.figures,
    }


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat().replace("+00:00", "Z") if moment else None


def _auc(summary: dict[str, Any]) -> str:
    return "n/a" if summary.get("auc") is None else f"{summary['auc']:.3f}"


def render_markdown(r: dict[str, Any]) -> str:
    m, rec, bt = r["model"], r["recency_baseline"], r["btyd_baseline"]
    vs = r["model_vs_baselines"]
    lines = [
        f"# Backtest of {Path(r['file']).name}",
        "",
        f"As of {r['as_of']}, horizon {r['horizon_days']} days. {r['rows_read']:,} rows read, "
        f"{r['rejected']:,} rejected; {r['events_replayed']:,} events replayed up to as_of, "
        f"{r['events_after_as_of']:,} after it (used for the labels only). "
        f"{r['labelled']:,} customers judged, {m.get('positives', 0):,} of them churned "
        f"(base rate {m.get('base_rate', 0):.1%}).",
        "",
        "| | AUC | top-decile lift | Brier | AUC margin of the model [95 % paired bootstrap] |",
        "|---|---:|---:|---:|---|",
        f"| Tenure's churn probability | {_auc(m)} | {m.get('top_decile_lift', 0):.2f} "
        f"| {m.get('brier', float('nan')):.4f} | |",
        f"| Recency (days since the last own activity) | {_auc(rec)} "
        f"| {rec.get('top_decile_lift', 0):.2f} | | {margin_text(vs['recency'])} |",
        f"| BG/NBD fitted on the same past | {_auc(bt)} | {bt.get('top_decile_lift', 0):.2f} "
        f"| {bt.get('brier', float('nan')):.4f} | {margin_text(vs['btyd'])} |",
        "",
        "Calibration (the model's probability against the churn rate, in five equal-width "
        "probability bins):",
        "",
        "| probability | customers | mean probability | churned |",
        "|---|---:|---:|---:|",
    ]
    for b in r["calibration"]:
        if b["n"]:
            lines.append(f"| {b['lower']:.1f}-{b['upper']:.1f} | {b['n']:,} "
                         f"| {b['mean_predicted']:.3f} | {b['observed_rate']:.3f} |")
    card = r.get("scoring_model") or {}
    lines += [
        "",
        f"Scoring model at the report: {card.get('active')} version {card.get('version')}, "
        f"{card.get('labels_learnt')} labels learnt; models behind the scores: "
        f"{r['model_names']}. Processing took {r['processing_seconds']:,.0f} s.",
        "",
    ]
    return "\n".join(lines)
