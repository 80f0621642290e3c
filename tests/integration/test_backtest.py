"""`tenure backtest` as an operator runs it: a purchase log replayed through the four services
on the real broker and PostgreSQL, the churn report judged against the file's own future."""

from __future__ import annotations

import asyncio
import csv
import json
import os
import random
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tenure_cli.evaluation import auc
from tests.support.platform import Namespace

ROOT = Path(__file__).resolve().parents[2]
START = datetime(2023, 1, 1, tzinfo=UTC)
AS_OF = START + timedelta(days=540)  # --as-of 2024-06-24 is the end of 2024-06-24 in UTC
HORIZON = 90


def _purchase_log(path: Path, customers: int = 160, seed: int = 11) -> list[tuple[str, datetime]]:
    """A shop's purchase log: customers join over a year, buy at their own pace (some weekly,
    most a few times a year) and some leave for good after a while."""
    rng = random.Random(seed)
    rows: list[tuple[str, datetime]] = []
    for i in range(customers):
        t = rng.uniform(0, 360)
        rate = rng.gammavariate(1.2, 1 / 25)  # purchases a day, mean ~0.05
        leaves = t + rng.expovariate(1 / 420)
        while t < 720 and t < leaves:
            rows.append((f"S{i:04d}", START + timedelta(days=t)))
            t += rng.expovariate(max(rate, 1e-3))
    rng.shuffle(rows)  # as exports come: not in time order
    path.write_text("shopper,bought,paid\n" + "".join(
        f"{c},{at:%Y-%m-%d %H:%M},{rng.uniform(5, 80):.2f}\n" for c, at in rows))
    return rows


async def _backtest(ns: Namespace, *args: str, timeout: float = 600) -> tuple[int, str, str]:
    env = {**os.environ, "TENURE_KAFKA_BOOTSTRAP": ns.bootstrap,
           "TENURE_DATABASE_URL": ns.database_url}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tenure_cli.main", "backtest", *args, cwd=str(ROOT), env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


MAPPING = ("--map", "customer_id=shopper,occurred_at=bought,amount=paid",
           "--date-format", "%Y-%m-%d %H:%M", "--currency", "EUR", "--quiet")


async def test_a_purchase_log_is_replayed_to_as_of_and_judged_on_its_future(
    ns: Namespace, tmp_path: Path
) -> None:
    source = tmp_path / "shop.csv"
    rows = _purchase_log(source)
    out = tmp_path / "figures.json"
    namespaces = "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'eval%'"
    before = set(await ns.sql("profile", namespaces))
    kept = tmp_path / "report.csv"
    code, text, err = await _backtest(ns, str(source), *MAPPING, "--as-of", "2024-06-24",
                                      "--horizon", str(HORIZON), "--out", str(out),
                                      "--report", str(kept))
    assert code == 0, err[-3000:]
    r = json.loads(out.read_text())
    assert set(await ns.sql("profile", namespaces)) == before, "the private namespace is dropped"
    with kept.open() as f:
        assert len(list(csv.DictReader(f))) >= r["labelled"]

    # What the file says, worked out here on its own.
    as_of = datetime(2024, 6, 25, tzinfo=UTC)  # the end of the --as-of day
    end = as_of + timedelta(days=HORIZON)
    before: dict[str, datetime] = {}
    after: set[str] = set()
    for c, at in rows:
        if at <= as_of:
            before[c] = max(before.get(c, at), at)
        elif at <= end:
            after.add(c)
    churned = {c for c in before if c not in after}
    assert r["events_replayed"] == sum(1 for _, at in rows if at <= as_of)
    assert r["events_after_as_of"] == sum(1 for _, at in rows if at > as_of)
    assert r["labelled"] == len(before) and r["not_in_report"] == 0
    assert r["model"]["positives"] == len(churned) and 0 < len(churned) < len(before)

    # The recency baseline is the days since each customer's last purchase before as_of.
    customers = sorted(before)
    labels = [1 if c in churned else 0 for c in customers]
    silence = [(as_of - before[c]).total_seconds() for c in customers]
    assert abs(r["recency_baseline"]["auc"] - auc(labels, silence)) < 1e-9
    # The platform's scores rank leavers above stayers (a silence-driven log: recency does
    # well, and so must the model).
    assert r["model"]["auc"] > 0.7, r["model"]
    assert r["btyd_baseline"]["auc"] is not None
    assert set(r["model_vs_baselines"]) == {"recency", "btyd"}
    assert "| Tenure's churn probability |" in text and "# Backtest of shop.csv" in text


async def test_a_file_that_ends_before_the_horizon_is_refused_before_anything_starts(
    ns: Namespace, tmp_path: Path
) -> None:
    source = tmp_path / "shop.csv"
    _purchase_log(source, customers=20)
    code, _, err = await _backtest(ns, str(source), *MAPPING, "--as-of", "2024-12-01",
                                   timeout=60)
    assert code == 2
    assert "before as_of + horizon" in err and "choose an earlier --as-of" in err
    code, _, err = await _backtest(ns, str(source), *MAPPING, "--as-of", "2024-06-24",
                                   "--until", "2024-01-01", timeout=60)
    assert code == 2 and "--until is set by --as-of" in err
