"""`tenure import` against the real broker: what lands on the topics, rejects, re-runs."""

from __future__ import annotations

import asyncio
import csv
import json
import os
import random
import sys
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from shared.events import derived_event_id, parse_event
from tenure_cli.importer import ImportOptions, parse_mapping, run_import
from tenure_cli.main import main as tenure_main
from tests.support.platform import Namespace

ROOT = Path(__file__).resolve().parents[2]
TRANSACTIONS = "tenure.transactions.v1"
ZURICH = ZoneInfo("Europe/Zurich")


def _by_partition(messages: list[dict[str, Any]]) -> dict[int, list[dict[str, Any]]]:
    out: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for m in sorted(messages, key=lambda m: (m["partition"], m["offset"])):
        out[m["partition"]].append(m)
    return out


def _assert_event_time_order(messages: list[dict[str, Any]]) -> None:
    for partition, ms in _by_partition(messages).items():
        times = [parse_event(m["raw"]).occurred_at for m in ms]
        assert times == sorted(times), f"partition {partition} is not in event-time order"


def _bank_file(path: Path) -> tuple[dict[int, dict[str, str]], dict[int, str]]:
    """A card issuer's export, deliberately out of order, with a few bad rows."""
    rng = random.Random(3)
    base = datetime(2023, 1, 1, 9, 0)
    good: dict[int, dict[str, str]] = {}
    bad = {
        5: "c0,2023-13-01 10:00,10.00,EUR",
        9: ",2023-02-01 10:00,10.00,EUR",
        14: "c1,2023-02-01 10:00,0,EUR",
        20: "c2,2023-02-01 10:00,12.5,euro",
    }
    lines = ["cust,booked,amt,ccy"]
    for line in range(2, 42):
        if line in bad:
            lines.append(bad[line])
            continue
        moment = base + timedelta(days=rng.randrange(0, 700), minutes=rng.randrange(600))
        amount = f"{rng.choice([-1, 1, 1, 1]) * rng.randrange(100, 50_000) / 100:.2f}"
        row = {"cust": f"c{rng.randrange(6)}", "booked": moment.strftime("%Y-%m-%d %H:%M"),
               "amt": amount, "ccy": rng.choice(["EUR", "", "CHF"])}
        good[line] = row
        lines.append(",".join(row.values()))
    path.write_text("\n".join(lines) + "\n")
    return good, bad


def _options(path: Path, **kw: Any) -> ImportOptions:
    options: dict[str, Any] = {"tz": "Europe/Zurich", "progress": False, "chunk_rows": 8, **kw}
    return ImportOptions(
        path=path,
        mapping=parse_mapping(["customer_id=cust,occurred_at=booked,amount=amt,currency=ccy"]),
        **options,
    )


async def test_valid_rows_land_in_event_time_order_with_their_payloads(
    ns: Namespace, tmp_path: Path
) -> None:
    source = tmp_path / "cards.csv"
    good, bad = _bank_file(source)
    result = await run_import(_options(source), ns.platform())
    assert (result.rows_read, result.published, result.rejected) == (40, len(good), len(bad))
    assert result.exit_code == 0

    messages = await ns.read_topic(TRANSACTIONS)
    assert len(messages) == len(good)
    _assert_event_time_order(messages)
    digest = result.digest
    seen = {}
    for m in messages:
        event = parse_event(m["raw"])
        assert m["key"] == event.customer_id.encode()
        seen[str(event.event_id)] = event
    for line, row in good.items():
        event_id = str(derived_event_id("import", "importer", digest, "transaction.posted",
                                        "line", line))
        event = seen[event_id]
        local = datetime.strptime(row["booked"], "%Y-%m-%d %H:%M")
        assert event.occurred_at == local.replace(tzinfo=ZURICH).astimezone(UTC), (line, row)
        amount = Decimal(row["amt"])
        assert event.customer_id == row["cust"] and event.source == "importer"
        payload: Any = event.payload
        assert payload.amount == abs(amount)
        assert payload.direction.value == ("credit" if amount < 0 else "debit")
        assert payload.currency == (row["ccy"] or "EUR")
        assert payload.account_id == f"{row['cust']}-import"
        assert (payload.product_type, payload.category, payload.channel,
                payload.initiated_by) == ("card", "card_purchase", "pos", "customer")

    with Path(result.rejects_path).open() as f:
        rejects = {int(r["line"]): r for r in csv.DictReader(f)}
    assert set(rejects) == set(bad)
    for line, original in bad.items():
        assert rejects[line]["original"] == original
    assert rejects[5]["reason"].startswith("occurred_at: unparsable date")
    assert rejects[9]["reason"] == "customer_id: missing value"
    assert rejects[14]["reason"].startswith("amount: zero")
    assert rejects[20]["reason"].startswith("payload.currency:")


async def test_a_rerun_publishes_the_same_events_with_the_same_ids(
    ns: Namespace, tmp_path: Path
) -> None:
    source = tmp_path / "cards.csv"
    good, _ = _bank_file(source)
    first = await run_import(_options(source), ns.platform())
    once = await ns.read_topic(TRANSACTIONS)
    second = await run_import(_options(source, chunk_rows=1000), ns.platform())
    twice = await ns.read_topic(TRANSACTIONS)
    assert first.published == second.published == len(good) == len(once)
    assert len(twice) == 2 * len(once)
    ids_once = Counter(m["value"]["event_id"] for m in once)
    ids_twice = Counter(m["value"]["event_id"] for m in twice)
    assert set(ids_once) == set(ids_twice) and set(ids_twice.values()) == {2}
    raw: dict[str, set[bytes]] = defaultdict(set)
    for m in twice:
        raw[m["value"]["event_id"]].add(m["raw"])
    assert all(len(values) == 1 for values in raw.values()), "byte-identical re-publication"


async def test_until_publishes_the_past_and_shows_the_rest_to_the_observer(
    ns: Namespace, tmp_path: Path
) -> None:
    """A backtest's import: events after the cut-off are validated and seen, not published."""
    source = tmp_path / "cards.csv"
    good, _ = _bank_file(source)
    cut = datetime(2024, 1, 1, tzinfo=UTC)
    seen: list[Any] = []
    result = await run_import(_options(source, until=cut, observer=seen.append), ns.platform())
    published = await ns.read_topic(TRANSACTIONS)
    times = [parse_event(m["raw"]).occurred_at for m in published]
    later = [e for e in seen if e.occurred_at > cut]
    assert len(seen) == result.events == len(good)
    assert published and later, "the seeded file has rows on both sides of the cut"
    assert max(times) <= cut and len(published) == result.published == len(good) - len(later)
    assert result.held_back == len(later)
    assert {m["value"]["event_id"] for m in published} == {
        str(e.event_id) for e in seen if e.occurred_at <= cut}
    assert "held back" in result.summary()


async def _run_cli(ns: Namespace, *args: str) -> tuple[int, str, str]:
    """`tenure import ...` as an operator runs it, against this test's topics."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tenure_cli.main", "import", *args, cwd=str(ROOT),
        env={**os.environ, **ns.env},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_a_retailers_purchase_log_with_sparse_customers(
    ns: Namespace, tmp_path: Path
) -> None:
    """The shape of UCI Online Retail: invoice lines, quantity x unit price, cancellations
    (C-invoices with negative quantities), rows without a customer, zero-price lines,
    customers who bought once, and gaps of many months."""
    header = "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country"
    rows = [
        "536365,85123A,WHITE HANGING HEART T-LIGHT,6,12/1/2010 8:26,2.55,17850,United Kingdom",
        "536365,71053,WHITE METAL LANTERN,6,12/1/2010 8:26,3.39,17850,United Kingdom",
        '536366,22633,"HAND WARMER, UNION JACK",6,12/1/2010 8:28,1.85,,United Kingdom',
        "536367,84879,CRÈME BRÛLÉE SET,32,12/1/2010 8:34,1.69,13047,United Kingdom",
        "C536379,D,Discount,-1,12/1/2010 9:41,27.50,14527,United Kingdom",
        "536380,22961,JAM MAKING SET PRINTED,24,12/1/2010 9:41,0,17809,United Kingdom",
        # 17850 comes back fourteen months later; 13047 never returns.
        "581587,22613,PACK OF 20 SPACEBOY NAPKINS,12,2/9/2012 12:50,0.85,17850,France",
        "581587,22899,CHILDREN'S APRON DOLLY GIRL ,6,2/9/2012 12:50,2.10,17850,France",
        "C581588,22899,CHILDREN'S APRON DOLLY GIRL ,-2,2/10/2012 9:00,2.10,17850,France",
        # A customer whose only purchase is in summer (BST applies).
        "560000,23084,RABBIT NIGHT LIGHT,1,7/15/2011 18:00,2.08,12347,Iceland",
        "560001,23084,RABBIT NIGHT LIGHT,1,not a date,2.08,12348,Finland",
    ]
    source = tmp_path / "online_retail.csv"
    source.write_text(header + "\n" + "\n".join(rows) + "\n", encoding="latin-1")
    code, out, err = await _run_cli(
        ns, str(source), "--quiet", "--json",
        "--map", "customer_id=CustomerID,occurred_at=InvoiceDate,amount=Quantity*UnitPrice",
        "--map", "transaction_id=InvoiceNo",
        "--date-format", "%m/%d/%Y %H:%M", "--tz", "Europe/London", "--currency", "GBP",
        "--encoding", "latin-1", "--chunk-rows", "3",
    )
    assert code == 0, err
    summary = json.loads(out)
    assert summary["rows_read"] == 11 and summary["published"] == 6, summary
    assert summary["rejected_by_reason"] == {
        "customer_id: missing value": 1, "amount: zero": 1, "occurred_at: unparsable date": 1}
    assert summary["customers"] == 4
    assert summary["first_at"] == "2010-12-01T08:26:00Z"
    assert summary["last_at"] == "2012-02-10T09:00:00Z"

    messages = await ns.read_topic(TRANSACTIONS)
    _assert_event_time_order(messages)
    events = sorted((parse_event(m["raw"]) for m in messages), key=lambda e: e.occurred_at)
    got = [(e.customer_id, e.occurred_at.isoformat(), str(e.payload.amount),
            e.payload.direction.value) for e in events]
    assert got == [
        ("17850", "2010-12-01T08:26:00+00:00", "35.64", "debit"),  # 6x2.55 + 6x3.39
        ("13047", "2010-12-01T08:34:00+00:00", "54.08", "debit"),
        ("14527", "2010-12-01T09:41:00+00:00", "27.50", "credit"),  # a cancellation
        ("12347", "2011-07-15T17:00:00+00:00", "2.08", "debit"),
        ("17850", "2012-02-09T12:50:00+00:00", "22.80", "debit"),
        ("17850", "2012-02-10T09:00:00+00:00", "4.20", "credit"),
    ], got
    assert all(e.payload.currency == "GBP" for e in events)
    gap = events[-2].occurred_at - events[0].occurred_at
    assert gap > timedelta(days=400), "a 14-month gap is kept as it is"
    ids = {str(e.event_id) for e in events}
    assert str(derived_event_id("import", "importer", summary["digest"], "transaction.posted",
                                "txn", "17850", "536365")) in ids


async def test_jsonl_keeps_envelope_ids_and_routes_by_event_type(
    ns: Namespace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def envelope(n: int, event_type: str, payload: dict[str, Any], when: str) -> str:
        return json.dumps({
            "event_id": f"00000000-0000-4000-8000-{n:012d}", "event_type": event_type,
            "schema_version": 1, "customer_id": f"k{n % 2}", "occurred_at": when,
            "source": "core-banking", "payload": payload})

    lines = [
        envelope(1, "transaction.posted", {
            "account_id": "a1", "product_type": "current", "amount": "2500.00", "currency": "EUR",
            "direction": "credit", "category": "salary", "channel": "batch",
            "initiated_by": "bank"}, "2024-03-01T08:00:00+01:00"),
        envelope(2, "customer.registered", {"segment": "premier"}, "2023-01-01T00:00:00Z"),
        envelope(3, "feedback.submitted", {"kind": "nps", "score": 3}, "2024-02-01T12:00:00Z"),
        envelope(4, "churn.scored", {
            "probability": 0.5, "band": "high", "horizon_days": 90, "model": "m",
            "model_version": 1, "as_of": "2024-02-01T12:00:00Z"}, "2024-02-01T12:00:00Z"),
        "{not json",
        envelope(5, "account.opened", {"account_id": "a1", "product_type": "current",
                                       "currency": "EUR"}, "2023-01-02T00:00:00Z"),
    ]
    source = tmp_path / "history.jsonl"
    source.write_text("\n".join(lines) + "\n")
    rejects = tmp_path / "bad.csv"
    code, out, err = await _run_cli(ns, str(source), "--quiet", "--rejects", str(rejects))
    assert code == 0, err
    assert "rows read        6" in out and "rejected         2" in out

    customers = await ns.read_topic("tenure.customers.v1")
    transactions = await ns.read_topic(TRANSACTIONS)
    feedback = await ns.read_topic("tenure.feedback.v1")
    assert sorted(m["value"]["event_id"][-1] for m in customers) == ["2", "5"]
    assert [m["value"]["event_id"] for m in transactions] == [
        "00000000-0000-4000-8000-000000000001"]
    assert [m["value"]["payload"]["score"] for m in feedback] == [3]
    with rejects.open() as f:
        reasons = {int(r["line"]): r["reason"] for r in csv.DictReader(f)}
    assert set(reasons) == {4, 5}
    assert "platform output" in reasons[4] and reasons[5].startswith("malformed JSON")

    # The exit codes, through the same CLI entry point (in a thread: it runs its own loop).
    for name, value in ns.env.items():
        monkeypatch.setenv(name, value)

    def cli(*args: str) -> int:
        return tenure_main(["import", "--quiet", *args])

    too_many = await asyncio.to_thread(cli, str(source), "--rejects", str(rejects),
                                       "--max-reject-ratio", "0.1")
    assert too_many == 3, "more rejects than allowed: exit 3"
    assert len(await ns.read_topic("tenure.customers.v1")) == 2, "and nothing is published"
    assert await asyncio.to_thread(cli, str(tmp_path / "missing.csv")) == 2
    assert await asyncio.to_thread(cli, str(source), "--event-type", "nope") == 2
    assert await asyncio.to_thread(cli, str(source), "--source", "Bad Source!", "--format",
                                   "csv") == 2
