"""churn-report: waits for the platform, then lists every customer's risk as of a date."""

from __future__ import annotations

import csv
from datetime import timedelta
from pathlib import Path

from shared.settings import PlatformSettings
from tenure_cli.procs import ServiceProcess
from tenure_cli.publish import EventPublisher
from tenure_cli.report import COLUMNS, churn_report
from tenure_cli.services import SERVICE_NAMES
from tenure_cli.simulator import SimConfig, simulate
from tests.support.platform import Namespace


def _read(path: Path) -> dict[str, dict[str, str]]:
    with path.open() as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == COLUMNS
        return {row["customer_id"]: row for row in reader}


async def test_report_lists_customers_seen_by_the_date_with_risk_measured_then(
    ns: Namespace, tmp_path: Path
) -> None:
    config = SimConfig(customers=40, seed=21, days=240)
    as_of = config.start + timedelta(days=150)
    events = [e for e in simulate(config) if e.occurred_at <= as_of]
    seen = {e.customer_id for e in events}
    settings = PlatformSettings(**{k.removeprefix("TENURE_").lower(): v for k, v in ns.env.items()})
    async with EventPublisher(settings) as publisher:
        for event in events:
            await publisher.send(event)

    services = [ServiceProcess(n, ns.env, tmp_path / f"{n}.log") for n in SERVICE_NAMES]
    for s in services:
        s.start(wait=False)
    try:
        for s in services:
            s.wait()
        urls = {s.service: s.url for s in services}
        first = tmp_path / "report.csv"
        n = await churn_report(as_of, first, timeout=180, settings=settings, urls=urls, quiet=True)
        rows = _read(first)
        assert n == len(rows) == len(seen) and set(rows) == seen

        early = await churn_report(as_of - timedelta(days=100), tmp_path / "early.csv",
                                   timeout=60, settings=settings, urls=urls, quiet=True)
        assert early < n, "customers first seen after the date are left out"

        later = tmp_path / "later.csv"
        await churn_report(as_of + timedelta(days=60), later, timeout=60, settings=settings,
                           urls=urls, quiet=True)
        later_rows = _read(later)
    finally:
        for s in services:
            s.stop()

    for cid, row in rows.items():
        assert 0.0 <= float(row["probability"]) <= 1.0
        assert row["band"] in {"low", "medium", "high", "critical"}
        assert row["horizon_days"] == "90"
        assert row["stage"] in {"prospect", "onboarding", "active", "loyal", "at_risk",
                                "dormant", "churned", "won_back"}
        # Nobody acts after the date, so silence grows and so does the risk.
        assert float(later_rows[cid]["probability"]) >= float(row["probability"])
    rising = sum(float(later_rows[c]["probability"]) > float(r["probability"]) for c, r in rows.items())
    assert rising >= len(rows) * 0.8
    assert any(r["reasons"].startswith("no customer-initiated activity") for r in later_rows.values())
