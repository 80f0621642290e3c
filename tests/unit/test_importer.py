"""`tenure import`'s pure parts: parsing, mapping, refunds, grouping, rejects, ids, ordering."""

from __future__ import annotations

import csv
import io
import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from shared.events import TransactionPosted, derived_event_id, encode_event, parse_event
from tenure_cli.importer import (
    ExternalSorter,
    ImportOptions,
    ImportPlan,
    LineItem,
    RowRejected,
    Transaction,
    UsageError,
    amount_of,
    build_event,
    csv_records,
    event_from_row,
    event_from_transaction,
    event_record,
    event_sort_key,
    external_sort,
    group_items,
    item_record,
    item_sort_key,
    parse_amount,
    parse_defaults,
    parse_mapping,
    parse_occurred_at,
    options_from,
    parse_row,
    plan_import,
    record_item,
    run_import,
)
from tenure_cli.main import build_parser

HEADER = ["cust", "date", "amt", "ccy", "inv"]
DIGEST = "ab" * 32


def plan(
    mapping: str = "customer_id=cust,occurred_at=date,amount=amt", header: list[str] = HEADER,
    **kw: Any,
) -> ImportPlan:
    return plan_import(header, mapping=parse_mapping([mapping]), digest=DIGEST, **kw)


def event_of(p: ImportPlan, values: list[str], line: int = 2) -> TransactionPosted:
    event = event_from_row(p, parse_row(p, values, line))
    assert isinstance(event, TransactionPosted)
    return event


def rejected(p: ImportPlan, values: list[str], line: int = 2) -> RowRejected:
    with pytest.raises(RowRejected) as info:
        item = parse_row(p, values, line)
        event_from_row(p, item)
    return info.value


# ------------------------------------------------------------------ dates


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-03-01T09:30:00+02:00", "2024-03-01T07:30:00+00:00"),
        ("2024-03-01T09:30:00Z", "2024-03-01T09:30:00+00:00"),
        ("2024-03-01 09:30:00", "2024-03-01T09:30:00+00:00"),
        ("2024-03-01", "2024-03-01T00:00:00+00:00"),
        ("20240301", "2024-03-01T00:00:00+00:00"),
        (" 2024-03-01T09:30:00.250+00:00 ", "2024-03-01T09:30:00.250000+00:00"),
    ],
)
def test_default_date_formats_are_iso_8601_plain_date_and_yyyymmdd(
    text: str, expected: str
) -> None:
    assert parse_occurred_at(text).isoformat() == expected


def test_tz_applies_to_times_without_offset_only_and_follows_daylight_saving() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    winter = parse_occurred_at("2024-01-15 12:00", tz=berlin)
    summer = parse_occurred_at("2024-07-15 12:00", tz=berlin)
    assert winter.isoformat() == "2024-01-15T11:00:00+00:00"
    assert summer.isoformat() == "2024-07-15T10:00:00+00:00"
    assert parse_occurred_at("20240715", tz=ZoneInfo("Asia/Shanghai")).isoformat() == (
        "2024-07-14T16:00:00+00:00"
    )
    # An explicit offset wins over --tz.
    assert parse_occurred_at("2024-07-15T12:00:00+00:00", tz=berlin).hour == 12


def test_date_format_is_strptime_and_epoch_is_understood() -> None:
    london = ZoneInfo("Europe/London")
    moment = parse_occurred_at("12/1/2010 8:26", date_format="%m/%d/%Y %H:%M", tz=london)
    assert moment == datetime(2010, 12, 1, 8, 26, tzinfo=UTC)
    assert parse_occurred_at("6/1/2011 8:26", date_format="%m/%d/%Y %H:%M", tz=london).hour == 7
    assert parse_occurred_at("01.02.2024 10:00 +0100", date_format="%d.%m.%Y %H:%M %z") == (
        datetime(2024, 2, 1, 9, 0, tzinfo=UTC)
    )
    assert parse_occurred_at("1700000000", date_format="epoch") == datetime.fromtimestamp(
        1_700_000_000, UTC
    )
    assert parse_occurred_at("1700000000123", date_format="epoch_ms").microsecond == 123_000


@pytest.mark.parametrize(
    ("text", "fmt", "kind"),
    [
        ("", None, "occurred_at: missing value"),
        ("01/12/2010", None, "occurred_at: unparsable date"),
        ("2024-02-30", None, "occurred_at: unparsable date"),
        ("2024-03-01", "%m/%d/%Y", "occurred_at: unparsable date"),
        ("soon", "epoch", "occurred_at: unparsable date"),
    ],
)
def test_bad_dates_are_rejected_naming_the_field(text: str, fmt: str | None, kind: str) -> None:
    with pytest.raises(RowRejected) as info:
        parse_occurred_at(text, date_format=fmt)
    assert info.value.kind == kind
    assert info.value.reason.startswith("occurred_at: ")


def test_dates_far_in_the_future_are_rejected() -> None:
    now = datetime(2025, 1, 1, tzinfo=UTC)
    assert parse_occurred_at("2025-01-01T12:00:00Z", not_after=now + timedelta(days=1))
    with pytest.raises(RowRejected) as info:
        parse_occurred_at("2035-01-01", not_after=now + timedelta(days=1))
    assert info.value.kind == "occurred_at: in the future"


# ------------------------------------------------------------------ amounts


def test_amount_is_one_column_or_the_product_of_two() -> None:
    assert amount_of(["12.50"]) == Decimal("12.50")
    assert amount_of(["6", "2.55"]) == Decimal("15.30")
    assert amount_of(["3", "0.3333333"]) == Decimal("1.000000"), "rounded to 6 decimals"
    assert parse_amount("1.234,56", decimal_comma=True) == Decimal("1234.56")
    assert parse_amount("+7") == Decimal(7)


def test_amount_product_mapping_reaches_the_payload() -> None:
    header = ["Quantity", "UnitPrice", "CustomerID", "InvoiceDate"]
    p = plan("customer_id=CustomerID,occurred_at=InvoiceDate,amount=Quantity*UnitPrice", header)
    event = event_of(p, ["6", "2.55", "17850", "2010-12-01T08:26:00Z"])
    assert event.payload.amount == Decimal("15.30")
    assert encode_event(event).count(b'"amount":"15.30"') == 1


def test_negative_amount_is_a_refund_credit_with_the_absolute_value() -> None:
    p = plan()
    refund = event_of(p, ["c1", "2024-01-02", "-19.99", "", ""])
    assert refund.payload.direction.value == "credit"
    assert refund.payload.amount == Decimal("19.99")
    purchase = event_of(p, ["c1", "2024-01-02", "19.99", "", ""])
    assert purchase.payload.direction.value == "debit"
    # With a signed bank statement (default credit), negatives become debits.
    statement = plan(defaults={"direction": "credit"})
    outgoing = event_of(statement, ["c1", "2024-01-02", "-5", "", ""])
    assert outgoing.payload.direction.value == "debit"
    # The same rule when the amount is computed elsewhere (grouped sums).
    direct = build_event(p, event_id="00000000-0000-4000-8000-000000000001", customer_id="c1",
                         occurred_at=datetime(2024, 1, 2, tzinfo=UTC), fields={},
                         amount=Decimal("-0.5"))
    payload: Any = direct.payload
    assert (payload.direction.value, payload.amount) == ("credit", Decimal("0.5"))


def test_defaults_fill_the_payload_and_can_be_overridden() -> None:
    event = event_of(plan(), ["c9", "2024-01-02", "10", "", ""])
    assert event.payload.account_id == "c9-import"
    assert (event.payload.product_type, event.payload.category, event.payload.channel,
            event.payload.initiated_by, event.payload.currency) == (
        "card", "card_purchase", "pos", "customer", "EUR")
    assert event.source == "importer"
    custom = plan(defaults=parse_defaults(["channel=web,category=bill", "account_id=ACC-1"]),
                  currency="GBP", source="core-banking")
    event = event_of(custom, ["c9", "2024-01-02", "10", "", ""])
    assert (event.payload.channel, event.payload.category, event.payload.account_id) == (
        "web", "bill", "ACC-1")
    assert event.payload.currency == "GBP" and event.source == "core-banking"
    mapped = plan("customer_id=cust,occurred_at=date,amount=amt,currency=ccy")
    assert event_of(mapped, ["c9", "2024-01-02", "10", "USD", ""]).payload.currency == "USD"
    assert event_of(mapped, ["c9", "2024-01-02", "10", "", ""]).payload.currency == "EUR", (
        "an empty cell falls back to --currency"
    )


# ------------------------------------------------------------------ every reject reason


@pytest.mark.parametrize(
    ("mapping", "values", "kind", "names"),
    [
        ("", ["", "2024-01-02", "10", "EUR", ""], "customer_id: missing value", "customer_id"),
        ("", ["c" * 65, "2024-01-02", "10", "EUR", ""],
         "customer_id: String should have at most 64 characters", "customer_id"),
        ("", ["c1", "", "10", "EUR", ""], "occurred_at: missing value", "occurred_at"),
        ("", ["c1", "next week", "10", "EUR", ""], "occurred_at: unparsable date", "occurred_at"),
        ("", ["c1", "2024-01-02", "", "EUR", ""], "amount: missing value", "amount"),
        ("", ["c1", "2024-01-02", "ten", "EUR", ""], "amount: unparsable amount", "amount"),
        ("", ["c1", "2024-01-02", "1,5", "EUR", ""], "amount: unparsable amount", "amount"),
        ("", ["c1", "2024-01-02", "0.00", "EUR", ""], "amount: zero", "amount"),
        ("", ["c1", "2024-01-02", "1e3", "EUR", ""], "amount: unparsable amount", "amount"),
        ("", ["c1", "2024-01-02", "1234567890123456", "EUR", ""],
         "payload.amount: Value error, must be a plain decimal string: "
         "up to 15 digits and 6 decimals",
         "payload.amount"),
        (",currency=ccy", ["c1", "2024-01-02", "10", "euro", ""],
         "payload.currency: String should match pattern '^[A-Z]{3}$'", "payload.currency"),
        (",direction=ccy", ["c1", "2024-01-02", "10", "sideways", ""],
         "payload.direction: Input should be 'debit' or 'credit'", "payload.direction"),
        (",transaction_id=inv", ["c1", "2024-01-02", "10", "EUR", ""],
         "transaction_id: missing value", "transaction_id"),
        ("", ["c1", "2024-01-02", "10"], "csv: wrong number of fields", "csv"),
    ],
)
def test_every_reject_reason_names_the_field(
    mapping: str, values: list[str], kind: str, names: str
) -> None:
    p = plan("customer_id=cust,occurred_at=date,amount=amt" + mapping)
    error = rejected(p, values)
    assert error.kind == kind
    assert error.reason.startswith(names + ":"), error.reason


def test_pydantic_reason_shows_the_offending_value() -> None:
    p = plan("customer_id=cust,occurred_at=date,amount=amt,currency=ccy")
    assert "(got 'euro')" in rejected(p, ["c1", "2024-01-02", "10", "euro", ""]).reason


def test_unreadable_records_come_with_their_line_and_reason() -> None:
    data = (
        "cust,date,amt\n"
        "c1,2024-01-02,10\n"
        "\n"
        'c2,2024-01-03,"1\n0"\n'
        "c\xe9,2024-01-04,3\n"
    ).encode("latin-1")
    records = list(csv_records(io.BytesIO(data)))
    assert [r[0] for r in records] == [1, 2, 4, 6], "blank line 3 skipped; line 4 spans 2 lines"
    assert records[2][1] == ["c2", "2024-01-03", "1\n0"]
    assert records[2][2] == 'c2,2024-01-03,"1\n0"'
    line, values, raw, error = records[3]
    assert values is None and error is not None and error.startswith("encoding:")
    assert [r[1] for r in csv_records(io.BytesIO(data), encoding="latin-1")][3] == [
        "c\xe9", "2024-01-04", "3"]


def test_byte_order_mark_is_not_part_of_the_first_column() -> None:
    records = list(csv_records(io.BytesIO("\ufeffcust,date\nc1,2024-01-01\n".encode())))
    assert records[0][1] == ["cust", "date"]


# ------------------------------------------------------------------ mapping and plan errors


def test_mapping_syntax() -> None:
    assert parse_mapping(["customer_id=Customer ID, amount = Quantity * Price", "category="]) == {
        "customer_id": ("Customer ID",), "amount": ("Quantity", "Price"), "category": ()}
    for bad in ["customer_id", "currency=a*b", "amount=a*b*c", "=x", "amount=a*"]:
        with pytest.raises(UsageError):
            parse_mapping([bad])
    with pytest.raises(UsageError, match="twice"):
        parse_mapping(["amount=a", "amount=b"])


def test_columns_named_like_contract_fields_need_no_mapping() -> None:
    header = ["customer_id", "occurred_at", "amount", "Currency", "category"]
    p = plan_import(header, mapping={})
    assert set(p.columns) == {"customer_id", "occurred_at", "amount", "category"}
    ignored = plan_import(header, mapping=parse_mapping(["category=,currency=CURRENCY"]))
    assert "category" not in ignored.columns, "field= ignores a column"
    assert ignored.column_names["currency"] == ("Currency",), "case-insensitive header match"


@pytest.mark.parametrize(
    ("mapping", "kw", "message"),
    [
        ("customer_id=cust,occurred_at=date", {}, "no column for amount"),
        ("customer_id=cust,occurred_at=when,amount=amt", {}, "no column 'when'"),
        ("customer_id=cust,occurred_at=date,amount=amt,colour=ccy", {}, "colour is not a field"),
        ("customer_id=cust,occurred_at=date,amount=amt", {"defaults": {"direction": "up"}},
         "debit, credit"),
        ("customer_id=cust,occurred_at=date,amount=amt", {"defaults": {"speed": "1"}},
         "not a payload field"),
        ("customer_id=cust,occurred_at=date,amount=amt", {"currency": "euro"}, "ISO 4217"),
        ("customer_id=cust,occurred_at=date,amount=amt", {"event_type": "churn.scored"},
         "platform output"),
    ],
)
def test_unusable_arguments_are_usage_errors(mapping: str, kw: dict, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        plan(mapping, **kw)


def test_other_event_types_map_payload_fields_from_columns() -> None:
    header = ["cust", "when", "chan", "granted"]
    p = plan_import(header, event_type="consent.changed", mapping=parse_mapping(
        ["customer_id=cust,occurred_at=when,channel=chan,granted=granted"]),
        defaults={"purpose": "marketing"})
    event = event_from_row(p, parse_row(p, ["c1", "2024-01-01", "email", "false"], 2))
    assert event.event_type == "consent.changed"
    payload: Any = event.payload
    assert (payload.channel, payload.purpose, payload.granted) == (
        "email", "marketing", False)


# ------------------------------------------------------------------ deterministic ids


def test_event_ids_are_uuid5_of_source_digest_type_and_line() -> None:
    p = plan()
    first = event_of(p, ["c1", "2024-01-02", "10", "", ""], line=7)
    again = event_of(plan(), ["c1", "2024-01-02", "10", "", ""], line=7)
    assert first.event_id == again.event_id and first.event_id.version == 5
    assert encode_event(first) == encode_event(again), "a re-run publishes identical bytes"
    assert first.event_id == derived_event_id(
        "import", "importer", DIGEST, "transaction.posted", "line", 7)
    assert event_of(p, ["c1", "2024-01-02", "10", "", ""], line=8).event_id != first.event_id
    other_file = plan_import(HEADER, mapping=parse_mapping(
        ["customer_id=cust,occurred_at=date,amount=amt"]), digest="cd" * 32)
    assert event_of(other_file, ["c1", "2024-01-02", "10", "", ""], line=7).event_id != (
        first.event_id)
    other_source = plan(source="core-banking")
    assert event_of(other_source, ["c1", "2024-01-02", "10", "", ""], line=7).event_id != (
        first.event_id)


# ------------------------------------------------------------------ grouping


def grouped_plan() -> ImportPlan:
    return plan("customer_id=cust,occurred_at=date,amount=amt,currency=ccy,transaction_id=inv")


def transactions(p: ImportPlan, rows: list[list[str]]) -> list[Transaction]:
    items = [parse_row(p, values, line) for line, values in enumerate(rows, 2)]
    return list(group_items(sorted(items, key=lambda i: (i.customer_id, i.transaction_id, i.line))))


def test_line_items_of_one_invoice_become_one_transaction() -> None:
    p = grouped_plan()
    rows = [
        ["c1", "2024-01-02T10:00:00Z", "15.30", "GBP", "536365"],
        ["c2", "2024-01-02T10:05:00Z", "5.00", "GBP", "536366"],
        ["c1", "2024-01-02T10:00:00Z", "20.34", "GBP", "536365"],
        ["c3", "2024-01-02T10:07:00Z", "1.00", "GBP", "536365"],  # same invoice no, other customer
        ["c1", "2024-01-02T09:59:00Z", "-3.00", "GBP", "536365"],
    ]
    txns = transactions(p, rows)
    assert [(t.customer_id, t.transaction_id, len(t.items)) for t in txns] == [
        ("c1", "536365", 3), ("c2", "536366", 1), ("c3", "536365", 1)]
    event = event_from_transaction(p, txns[0])
    assert isinstance(event, TransactionPosted)
    assert event.payload.amount == Decimal("32.64") and event.payload.direction.value == "debit"
    assert event.occurred_at == datetime(2024, 1, 2, 9, 59, tzinfo=UTC), "earliest line's time"
    assert event.payload.currency == "GBP"
    assert event.event_id == derived_event_id(
        "import", "importer", DIGEST, "transaction.posted", "txn", "c1", "536365")
    assert txns[0].line == 2
    assert event_from_transaction(p, txns[2]).event_id != event.event_id


def test_a_cancelled_invoice_is_one_refund() -> None:
    p = grouped_plan()
    txn = transactions(p, [["c1", "2024-01-05", "-2.5", "GBP", "C536379"],
                           ["c1", "2024-01-05", "-7.5", "GBP", "C536379"]])[0]
    event = event_from_transaction(p, txn)
    assert event.payload.direction.value == "credit"
    assert event.payload.amount == Decimal("10.0")


def test_invoices_that_sum_to_zero_or_mix_currencies_are_rejected() -> None:
    p = grouped_plan()
    zero = transactions(p, [["c1", "2024-01-05", "2.5", "GBP", "9"],
                            ["c1", "2024-01-05", "-2.5", "GBP", "9"]])[0]
    with pytest.raises(RowRejected) as info:
        event_from_transaction(p, zero)
    assert info.value.kind == "amount: zero"
    mixed = transactions(p, [["c1", "2024-01-05", "2.5", "GBP", "9"],
                             ["c1", "2024-01-05", "2.5", "EUR", "9"]])[0]
    with pytest.raises(RowRejected) as info:
        event_from_transaction(p, mixed)
    assert info.value.reason.startswith("currency:")


def test_line_items_survive_a_spill_file_round_trip() -> None:
    item = LineItem(3, "c1", datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=UTC), Decimal("-1.50"),
                    {"currency": "GBP"}, "inv", "raw,line")
    import orjson

    back = record_item(orjson.loads(orjson.dumps(item_record(item))))
    assert back == item


# ------------------------------------------------------------------ sorting and merging


def test_external_sort_spills_and_merges_in_order(tmp_path: Path) -> None:
    rng = random.Random(5)
    records = [[rng.randrange(20), line, f"v{line}"] for line in range(1, 301)]
    with ExternalSorter(event_sort_key, chunk_rows=7, tmp_dir=tmp_path) as sorter:
        for r in records:
            sorter.add(r)
        assert len(sorter.runs) == 300 // 7, "full chunks spilled to temp files"
        out = list(sorter.sorted())
        assert len(list(tmp_path.glob("*/*.run"))) == len(sorter.runs)
    assert out == sorted(records, key=event_sort_key)
    assert not list(tmp_path.iterdir()), "spill files are removed"


def test_external_sort_is_stable_for_equal_keys_and_bounds_open_files(tmp_path: Path) -> None:
    records = [[i % 3, i] for i in range(100)]
    with ExternalSorter(lambda r: r[0], chunk_rows=3, tmp_dir=tmp_path, max_fan_in=4) as sorter:
        for r in records:
            sorter.add(r)
        assert len(sorter.runs) < 8, "runs are compacted so a merge opens few files"
        out = list(sorter.sorted())
    assert out == sorted(records, key=lambda r: r[0])  # Python's sort is stable


def test_events_are_ordered_by_event_time_then_line_through_tiny_chunks(tmp_path: Path) -> None:
    p = plan()
    base = datetime(2023, 1, 1, tzinfo=UTC)
    rng = random.Random(9)
    rows = []
    for line in range(2, 60):
        # Sparse: big gaps, and several rows sharing a time.
        moment = base + timedelta(days=rng.choice([0, 0, 3, 200, 420]), hours=rng.randrange(3))
        rows.append((line, [f"c{rng.randrange(5)}", moment.isoformat(), "1.00", "", ""]))
    events = [(event_of(p, values, line), line) for line, values in rows]
    merged = list(external_sort((event_record(e, line) for e, line in events), event_sort_key,
                                chunk_rows=4, tmp_dir=str(tmp_path)))
    times = [parse_event(r[4]).occurred_at for r in merged]
    assert times == sorted(times)
    ties = [(r[0], r[1]) for r in merged]
    assert ties == sorted(ties), "equal times keep file order"
    assert [r[1] for r in merged] == [line for e, line in sorted(events, key=lambda x: (
        x[0].occurred_at, x[1]))]


def test_grouping_sort_key_brings_an_invoice_together_across_chunks(tmp_path: Path) -> None:
    p = grouped_plan()
    rows = [["c1", "2024-01-02", "1", "GBP", "A"], ["c2", "2024-01-02", "1", "GBP", "A"],
            ["c1", "2024-01-03", "1", "GBP", "B"], ["c1", "2024-01-02", "2", "GBP", "A"]]
    items = [parse_row(p, v, line) for line, v in enumerate(rows, 2)]
    merged = external_sort((item_record(i) for i in items), item_sort_key, chunk_rows=1,
                           tmp_dir=str(tmp_path))
    txns = list(group_items(record_item(r) for r in merged))
    assert [(t.customer_id, t.transaction_id, t.amount) for t in txns] == [
        ("c1", "A", Decimal(3)), ("c1", "B", Decimal(1)), ("c2", "A", Decimal(1))]


# ------------------------------------------------------------------ a dry run end to end


async def test_dry_run_validates_writes_rejects_and_publishes_nothing(tmp_path: Path) -> None:
    source = tmp_path / "log.csv"
    source.write_text(
        "InvoiceNo,Quantity,InvoiceDate,UnitPrice,CustomerID\n"
        "1,2,2024-01-02,5.00,c1\n"
        "1,1,2024-01-02,1.50,c1\n"
        "2,1,2024-02-30,1.50,c2\n"
        "3,1,2023-05-01,0,c3\n"
        "4,1,2023-05-01,4,\n"
        "5,-1,2023-06-01,4,c3\n"
    )
    options = ImportOptions(
        path=source, mapping=parse_mapping([
            "customer_id=CustomerID,occurred_at=InvoiceDate,amount=Quantity*UnitPrice,"
            "transaction_id=InvoiceNo"]),
        dry_run=True, chunk_rows=2, progress=False, tmp_dir=str(tmp_path))
    result = await run_import(options)
    assert (result.rows_read, result.events, result.published, result.rejected) == (6, 2, 0, 3)
    assert result.rejected_by_reason == {
        "occurred_at: unparsable date": 1, "amount: zero": 1, "customer_id: missing value": 1}
    assert result.customers == 2 and result.exit_code == 0
    assert result.first_at == datetime(2023, 6, 1, tzinfo=UTC)
    with (tmp_path / "log.csv.rejects.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["line"] for r in rows] == ["4", "5", "6"]
    assert rows[0]["original"] == "2,1,2024-02-30,1.50,c2"
    assert rows[0]["reason"].startswith("occurred_at: unparsable date '2024-02-30'")

    strict = await run_import(ImportOptions(
        path=source, mapping=options.mapping, dry_run=True, progress=False,
        max_reject_ratio=0.25, rejects=tmp_path / "r.csv"))
    assert strict.exit_code == 3 and "nothing published" in strict.message


async def test_a_whitespace_file_without_header_imports_with_named_columns(
    tmp_path: Path,
) -> None:
    """CDNow's master file: `id date quantity amount`, separated by runs of blanks, no header
    row. --columns names the columns and line 1 is data."""
    source = tmp_path / "CDNOW_master.txt"
    source.write_text(
        "00001 19970101  1  11.77\n"
        "00002 19970112  1  12.00\n"
        "  00002\t19970112  5  77.00\n"
        "00003 19970102  2  20.76\n"
        "00003 19970330  0   0.00\n"
        "00004 19971345  1  10.00\n"
        "\n"
        "00005 19970101  1\n"
    )
    args_list = [
        "import", str(source), "--delimiter", "whitespace",
        "--columns", "id,date,quantity,amount", "--map", "customer_id=id,occurred_at=date",
        "--dry-run", "--quiet", "--tmp-dir", str(tmp_path)]
    args = build_parser().parse_args(args_list)
    options = options_from(args)
    assert options.columns == ("id", "date", "quantity", "amount") and options.until is None
    cut = options_from(build_parser().parse_args([*args_list, "--until", "1997-06-30"]))
    assert cut.until == datetime(1997, 7, 1, tzinfo=UTC)  # the end of that day
    result = await run_import(options)
    assert (result.rows_read, result.events, result.rejected) == (7, 4, 3)
    assert result.customers == 3 and result.first_at == datetime(1997, 1, 1, tzinfo=UTC)
    with (tmp_path / "CDNOW_master.txt.rejects.csv").open() as f:
        rejects = {r["line"]: r["reason"] for r in csv.DictReader(f)}
    assert rejects["5"].startswith("amount: zero")
    assert rejects["6"].startswith("occurred_at: unparsable date")
    assert rejects["8"] == "csv: row has 3 fields, the header has 4"


@pytest.mark.parametrize(("argv", "message"), [
    (["--columns", "id,,amount"], "every column needs a name"),
    (["--columns", "id,id"], "names must differ"),
    (["--delimiter", "ab"], "one character or 'whitespace'"),
    (["--until", "1997-13-30"], "--until '1997-13-30': a date"),
    (["--until", "1997-06-30T12:00:00"], "a time with a UTC offset"),
])
def test_columns_and_delimiter_mistakes_are_usage_errors(
    tmp_path: Path, argv: list[str], message: str,
) -> None:
    args = build_parser().parse_args(["import", str(tmp_path / "x.csv"), *argv])
    with pytest.raises(UsageError, match=message):
        options_from(args)
    jsonl = build_parser().parse_args(["import", str(tmp_path / "x.jsonl"), "--columns", "a"])
    with pytest.raises(UsageError, match="not JSONL"):
        options_from(jsonl)
