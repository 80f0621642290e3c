"""`tenure import`: load history a bank (or retailer, or card issuer) already has.

The file's rows become contract events (DESIGN.md §2) that are published to Kafka in global
event-time order, exactly like any other publisher's. The work is split so the pure parts can
be tested without I/O:

    plan_import()      arguments + CSV header -> a validated ImportPlan (or UsageError)
    parse_row()        one CSV row -> a LineItem (customer, time, signed amount, fields)
    parse_occurred_at(), parse_amount(), amount_of()      the value parsers
    build_event()      customer, time, fields, amount -> a validated envelope (refund rule)
    group_items()      line items sorted by (customer, transaction) -> one item per transaction
    ExternalSorter     chunked sort with spill files and a heapq merge (bigger than memory)

Every bad row is rejected with a reason that names the field; nothing bad stops the import.
Event ids are UUIDv5 of (source, file SHA-256, event type, line or transaction id), so a re-run
publishes byte-identical events and consumers drop the repeats by id.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import functools
import gzip
import hashlib
import heapq
import os
import re
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from enum import Enum
from pathlib import Path
from typing import Any, BinaryIO
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson
from pydantic import BaseModel, ValidationError

from shared.events import (
    EVENT_TYPES,
    EnvelopeBase,
    InvalidEvent,
    derived_event_id,
    encode_event,
    parse_event,
)
from shared.settings import INPUT_TOPICS, PlatformSettings, topic_of

# ---------------------------------------------------------------------------- constants

#: Event types a publisher may send (outputs are the platform's own).
INPUT_EVENT_TYPES: tuple[str, ...] = tuple(
    t for t in EVENT_TYPES if topic_of(t) in INPUT_TOPICS.values()
)
DEFAULT_EVENT_TYPE = "transaction.posted"
#: Payload defaults for fields a file lacks (overridable with --default field=value).
#: account_id defaults to "<customer_id>-import"; currency to --currency.
BUILTIN_DEFAULTS: dict[str, str] = {
    "product_type": "card",
    "direction": "debit",
    "category": "card_purchase",
    "channel": "pos",
    "initiated_by": "customer",
}
ACCOUNT_SUFFIX = "-import"
ENVELOPE_TARGETS = ("customer_id", "occurred_at")
GROUP_TARGET = "transaction_id"
#: What the services accept per message (ServiceSettings.max_message_bytes).
MAX_EVENT_BYTES = 256 * 1024
MONEY_PLACES = Decimal("0.000001")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)
DATE_FORMAT_HELP = "ISO 8601, YYYY-MM-DD or YYYYMMDD; set --date-format"

EXIT_OK, EXIT_USAGE, EXIT_TOO_MANY_REJECTS, EXIT_BROKER = 0, 2, 3, 4


class UsageError(ValueError):
    """Arguments or a file the import cannot run with (exit code 2)."""


class RowRejected(ValueError):
    """A row that breaks the contract. `reason` names the field; `kind` groups the summary."""

    def __init__(self, reason: str, kind: str | None = None):
        super().__init__(reason)
        self.reason = reason
        self.kind = kind or reason


# ---------------------------------------------------------------------------- value parsers


def parse_occurred_at(
    text: str, *, date_format: str | None = None, tz: Any = UTC, not_after: datetime | None = None
) -> datetime:
    """Event time in UTC. Without a format: ISO 8601, YYYY-MM-DD or YYYYMMDD. A time without an
    offset is local time in `tz`. `epoch` / `epoch_ms` read Unix timestamps.

    >>> parse_occurred_at("2024-03-01T09:30:00+02:00").isoformat()
    '2024-03-01T07:30:00+00:00'
    >>> parse_occurred_at("20240301", tz=ZoneInfo("Asia/Shanghai")).isoformat()
    '2024-02-29T16:00:00+00:00'
    """
    value = text.strip()
    if not value:
        raise RowRejected("occurred_at: missing value")
    moment = _parse_time(value, date_format, tz)
    if not_after is not None and moment > not_after:
        raise RowRejected(
            f"occurred_at: {moment.isoformat()} is in the future (after {not_after.isoformat()})",
            "occurred_at: in the future",
        )
    return moment


@functools.lru_cache(maxsize=1 << 16)
def _parse_time(value: str, date_format: str | None, tz: Any) -> datetime:
    """Cached: the rows of a log share timestamps (strptime costs ~20 µs a call)."""
    try:
        if date_format is None:
            moment = datetime.fromisoformat(value)
        elif date_format in ("epoch", "epoch_ms"):
            seconds = Decimal(value) / (1000 if date_format == "epoch_ms" else 1)
            if not seconds.is_finite():
                raise ValueError(value)
            moment = EPOCH + timedelta(microseconds=int(seconds * 1_000_000))
        else:
            moment = datetime.strptime(value, date_format)
    except (ValueError, OverflowError, InvalidOperation):
        expected = DATE_FORMAT_HELP if date_format is None else f"expected {date_format!r}"
        raise RowRejected(
            f"occurred_at: unparsable date {_show(value)} ({expected})",
            "occurred_at: unparsable date",
        ) from None
    if moment.tzinfo is None or moment.utcoffset() is None:
        moment = moment.replace(tzinfo=tz)
    try:
        moment = moment.astimezone(UTC)
    except OverflowError:
        raise RowRejected(
            f"occurred_at: out of range {_show(value)}", "occurred_at: out of range"
        ) from None
    return moment


_AMOUNT_TEXT = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)")


def parse_amount(text: str, *, decimal_comma: bool = False, field_name: str = "amount") -> Decimal:
    """A signed decimal from a cell; `decimal_comma` reads "1.234,50" (thousands dots).

    >>> parse_amount(" -12.50 "), parse_amount("1.234,5", decimal_comma=True)
    (Decimal('-12.50'), Decimal('1234.5'))
    """
    value = text.strip()
    if not value:
        raise RowRejected(f"{field_name}: missing value", f"{field_name}: missing value")
    plain = value.replace(" ", "").replace("\u00a0", "")
    if decimal_comma:
        plain = plain.replace(".", "").replace(",", ".")
    if not _AMOUNT_TEXT.fullmatch(plain):
        raise RowRejected(
            f"{field_name}: unparsable amount {_show(value)}", f"{field_name}: unparsable amount"
        )
    return Decimal(plain)


def money(value: Decimal) -> Decimal:
    """Round a computed amount to the contract's 6 decimals (half-even); others unchanged."""
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -6:
        return value.quantize(MONEY_PLACES, rounding=ROUND_HALF_EVEN)
    return value


def amount_of(cells: Iterable[str], *, decimal_comma: bool = False) -> Decimal:
    """The amount of a row: one column, or the product of two (Quantity*UnitPrice).

    >>> amount_of(["6", "2.55"])
    Decimal('15.30')
    >>> amount_of(["-2", "4.25"])
    Decimal('-8.50')
    """
    total = Decimal(1)
    for cell in cells:
        total *= parse_amount(cell, decimal_comma=decimal_comma)
    return money(total)


def _show(value: str, limit: int = 60) -> str:
    return repr(value if len(value) <= limit else value[:limit] + "…")


# ---------------------------------------------------------------------------- the plan


def parse_mapping(specs: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """`--map` specs -> contract field: column(s). `amount=Quantity*UnitPrice` is a product;
    `field=` (empty) ignores a column that is named like a contract field.

    >>> parse_mapping(["customer_id=Customer ID, amount=Quantity*UnitPrice", "category="])
    {'customer_id': ('Customer ID',), 'amount': ('Quantity', 'UnitPrice'), 'category': ()}
    """
    mapping: dict[str, tuple[str, ...]] = {}
    for spec in specs:
        for part in spec.split(","):
            if not part.strip():
                continue
            target, sep, source = part.partition("=")
            target = target.strip()
            if not sep or not target:
                raise UsageError(f"--map {part.strip()!r}: expected contract_field=COLUMN")
            columns = tuple(c.strip() for c in source.split("*")) if source.strip() else ()
            if any(not c for c in columns):
                raise UsageError(f"--map {part.strip()!r}: empty column name")
            if len(columns) > 2 or (len(columns) == 2 and target != "amount"):
                raise UsageError(
                    f"--map {part.strip()!r}: only amount may be a product of two columns"
                )
            if target in mapping:
                raise UsageError(f"--map: {target} is mapped twice")
            mapping[target] = columns
    return mapping


def parse_defaults(specs: Iterable[str]) -> dict[str, str]:
    """`--default field=value` (repeatable, or comma-separated)."""
    out: dict[str, str] = {}
    for spec in specs:
        for part in spec.split(","):
            if not part.strip():
                continue
            name, sep, value = part.partition("=")
            if not sep or not name.strip():
                raise UsageError(f"--default {part.strip()!r}: expected field=value")
            out[name.strip()] = value.strip()
    return out


@dataclass(frozen=True)
class ImportPlan:
    """Everything needed to turn one CSV row into an event; built once, used for every row."""

    event_type: str
    source: str
    digest: str
    columns: dict[str, tuple[int, ...]]  # contract field -> column indexes (amount: 1 or 2)
    column_names: dict[str, tuple[str, ...]]
    defaults: dict[str, str]
    header_width: int
    date_format: str | None = None
    tz: Any = UTC
    decimal_comma: bool = False
    not_after: datetime | None = None

    @property
    def model(self) -> type[EnvelopeBase]:
        return EVENT_TYPES[self.event_type]

    @property
    def payload_fields(self) -> tuple[str, ...]:
        return payload_fields(self.event_type)

    @property
    def grouped(self) -> bool:
        return GROUP_TARGET in self.columns

    @property
    def has_amount(self) -> bool:
        return "amount" in self.payload_fields

    @functools.cached_property
    def _row_plan(self) -> tuple[int, int, tuple[int, ...] | None, int | None,
                                 tuple[tuple[str, int], ...]]:
        """Column indexes resolved once: customer, time, amount, transaction, other fields."""
        amount = self.columns["amount"] if self.has_amount else None
        txn = self.columns[GROUP_TARGET][0] if self.grouped else None
        others = tuple((f, self.columns[f][0]) for f in self.payload_fields
                       if f != "amount" and f in self.columns)
        return (self.columns["customer_id"][0], self.columns["occurred_at"][0], amount, txn,
                others)

    @property
    def topic(self) -> str:
        return topic_of(self.event_type)


@functools.cache
def payload_fields(event_type: str) -> tuple[str, ...]:
    payload = EVENT_TYPES[event_type].model_fields["payload"].annotation
    assert isinstance(payload, type) and issubclass(payload, BaseModel)
    return tuple(payload.model_fields)


def _payload_model(event_type: str) -> type[BaseModel]:
    payload = EVENT_TYPES[event_type].model_fields["payload"].annotation
    assert isinstance(payload, type) and issubclass(payload, BaseModel)
    return payload


def check_event_type(event_type: str) -> str:
    if event_type not in EVENT_TYPES:
        raise UsageError(
            f"--event-type {event_type!r}: unknown; one of {', '.join(INPUT_EVENT_TYPES)}"
        )
    if event_type not in INPUT_EVENT_TYPES:
        raise UsageError(
            f"--event-type {event_type!r} is a platform output, not an input a publisher sends"
        )
    return event_type


def check_source(source: str, settings: PlatformSettings | None = None) -> str:
    if not re.fullmatch(r"[a-z0-9][a-z0-9:._-]*", source) or len(source) > 64:
        raise UsageError(f"--source {source!r}: lowercase letters, digits and :._- (max 64)")
    if settings is not None and not settings.source_allowed(source):
        raise UsageError(
            f"--source {source!r} is not a registered publisher (TENURE_REGISTERED_SOURCES, or "
            "partner:<id>): the services would dead-letter every event"
        )
    return source


def check_zone(name: str) -> Any:
    if name.upper() == "UTC":
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise UsageError(f"--tz {name!r}: unknown IANA time zone") from None


def plan_import(
    header: list[str],
    *,
    mapping: dict[str, tuple[str, ...]],
    event_type: str = DEFAULT_EVENT_TYPE,
    defaults: dict[str, str] | None = None,
    currency: str = "EUR",
    source: str = "importer",
    digest: str = "",
    date_format: str | None = None,
    tz: Any = UTC,
    decimal_comma: bool = False,
    not_after: datetime | None = None,
) -> ImportPlan:
    """Resolve the mapping against the header; every mistake here is a UsageError (exit 2).

    Columns named exactly like a contract field are used without a mapping (`field=` ignores
    one). Header names match exactly, else case-insensitively.
    """
    check_event_type(event_type)
    fields = payload_fields(event_type)
    targets = set(ENVELOPE_TARGETS) | set(fields)
    if event_type == "transaction.posted":
        targets.add(GROUP_TARGET)
    unknown = sorted(set(mapping) - targets)
    if unknown:
        raise UsageError(
            f"--map: {', '.join(unknown)} is not a field of {event_type}; fields: "
            f"{', '.join(sorted(targets))}"
        )
    defaults = dict(defaults or {})
    bad_defaults = sorted(set(defaults) - set(fields))
    if bad_defaults:
        raise UsageError(
            f"--default: {', '.join(bad_defaults)} is not a payload field of {event_type}; "
            f"fields: {', '.join(fields)}"
        )
    if not re.fullmatch(r"[A-Z]{3}", currency):
        raise UsageError(f"--currency {currency!r}: an ISO 4217 code such as EUR")
    payload_model = _payload_model(event_type)
    for name, value in defaults.items():
        annotation = payload_model.model_fields[name].annotation
        if isinstance(annotation, type) and issubclass(annotation, Enum):
            allowed = [m.value for m in annotation]
            if value not in allowed:
                raise UsageError(f"--default {name}={value!r}: one of {', '.join(allowed)}")
    merged = {k: v for k, v in BUILTIN_DEFAULTS.items() if k in fields}
    if "currency" in fields:
        merged["currency"] = currency
    merged.update(defaults)

    header = [h.strip() for h in header]
    exact = {name: i for i, name in reversed(list(enumerate(header)))}
    folded: dict[str, list[int]] = {}
    for i, name in enumerate(header):
        folded.setdefault(name.casefold(), []).append(i)

    def index_of(column: str, target: str) -> int:
        if column in exact:
            return exact[column]
        hits = folded.get(column.casefold(), [])
        if len(hits) == 1:
            return hits[0]
        raise UsageError(
            f"--map {target}={column}: no column {column!r} in the header "
            f"({', '.join(header) or 'empty'})"
        )

    columns: dict[str, tuple[int, ...]] = {}
    names: dict[str, tuple[str, ...]] = {}
    for target in sorted(targets):
        if target in mapping:
            wanted = mapping[target]
        elif target in exact:
            wanted = (target,)
        else:
            continue
        if not wanted:
            continue
        columns[target] = tuple(index_of(c, target) for c in wanted)
        names[target] = tuple(header[i] for i in columns[target])
    required = ["customer_id", "occurred_at"] + (["amount"] if "amount" in fields else [])
    for target in required:
        if target not in columns:
            raise UsageError(
                f"no column for {target}: map one with --map {target}=COLUMN "
                f"(header: {', '.join(header) or 'empty'})"
            )
    return ImportPlan(
        event_type=event_type,
        source=source,
        digest=digest,
        columns=columns,
        column_names=names,
        defaults=merged,
        header_width=len(header),
        date_format=date_format,
        tz=tz,
        decimal_comma=decimal_comma,
        not_after=not_after,
    )


# ---------------------------------------------------------------------------- rows -> events


@dataclass
class LineItem:
    """One parsed row, before it becomes an event (or part of a grouped one)."""

    line: int
    customer_id: str
    occurred_at: datetime
    amount: Decimal | None
    fields: dict[str, str]
    transaction_id: str | None = None
    raw: str = ""

    @property
    def time_key(self) -> int:
        return time_key(self.occurred_at)


def time_key(moment: datetime) -> int:
    """Microseconds since the Unix epoch: an exact, JSON-friendly sort key."""
    return (moment - EPOCH) // MICROSECOND


def parse_row(plan: ImportPlan, values: list[str], line: int, raw: str = "") -> LineItem:
    """One CSV row -> LineItem, or RowRejected naming the field."""
    if len(values) != plan.header_width:
        raise RowRejected(
            f"csv: row has {len(values)} fields, the header has {plan.header_width}",
            "csv: wrong number of fields",
        )

    customer_col, time_col, amount_cols, txn_col, others = plan._row_plan
    customer_id = values[customer_col].strip()
    if not customer_id:
        raise RowRejected("customer_id: missing value")
    occurred_at = parse_occurred_at(
        values[time_col], date_format=plan.date_format, tz=plan.tz, not_after=plan.not_after
    )
    amount = None
    if amount_cols is not None:
        amount = amount_of((values[i] for i in amount_cols), decimal_comma=plan.decimal_comma)
        if amount == 0:
            raise RowRejected("amount: zero amount (a transaction moves money)", "amount: zero")
    transaction_id = None
    if txn_col is not None:
        transaction_id = values[txn_col].strip()
        if not transaction_id:
            raise RowRejected("transaction_id: missing value")
    fields: dict[str, str] = {}
    for target, index in others:
        value = values[index].strip()
        if value:
            fields[target] = value
    return LineItem(line, customer_id, occurred_at, amount, fields, transaction_id, raw)


def row_event_id(plan_source: str, digest: str, event_type: str, line: int) -> str:
    return str(derived_event_id("import", plan_source, digest, event_type, "line", line))


def group_event_id(
    plan_source: str, digest: str, event_type: str, customer_id: str, transaction_id: str
) -> str:
    return str(
        derived_event_id("import", plan_source, digest, event_type, "txn", customer_id,
                         transaction_id)
    )


def build_event(
    plan: ImportPlan,
    *,
    event_id: str,
    customer_id: str,
    occurred_at: datetime,
    fields: dict[str, str],
    amount: Decimal | None = None,
) -> EnvelopeBase:
    """A validated envelope. A negative amount is a refund / return: the direction reverses
    (the default debit becomes credit) and the amount is its absolute value."""
    payload: dict[str, Any] = {}
    if "account_id" in plan.payload_fields:
        payload["account_id"] = f"{customer_id}{ACCOUNT_SUFFIX}"
    payload.update(plan.defaults)
    payload.update(fields)
    if amount is not None:
        amount = money(amount)
        if amount == 0:
            raise RowRejected("amount: zero amount (a transaction moves money)", "amount: zero")
        if amount < 0:
            payload["direction"] = {"debit": "credit", "credit": "debit"}.get(
                payload.get("direction", "debit"), payload.get("direction")
            )
            amount = -amount
        payload["amount"] = format(amount, "f")
    document = {
        "event_id": event_id,
        "event_type": plan.event_type,
        "customer_id": customer_id,
        "occurred_at": occurred_at,
        "source": plan.source,
        "payload": payload,
    }
    try:
        return plan.model.model_validate(document)
    except ValidationError as exc:
        raise validation_rejection(exc) from None


def validation_rejection(exc: ValidationError) -> RowRejected:
    """The pydantic reason, naming the field (and the offending value in the long form)."""
    errors = exc.errors()
    parts, kinds = [], []
    for err in errors[:3]:
        loc = ".".join(str(p) for p in err["loc"]) or "envelope"
        msg = err["msg"]
        kinds.append(f"{loc}: {msg}")
        shown = err.get("input")
        if isinstance(shown, str | int | float) and err["type"] != "missing":
            parts.append(f"{loc}: {msg} (got {_show(str(shown), 40)})")
        else:
            parts.append(f"{loc}: {msg}")
    return RowRejected("; ".join(parts), kinds[0] if kinds else "invalid")


def event_from_row(plan: ImportPlan, item: LineItem) -> EnvelopeBase:
    return build_event(
        plan,
        event_id=row_event_id(plan.source, plan.digest, plan.event_type, item.line),
        customer_id=item.customer_id,
        occurred_at=item.occurred_at,
        fields=item.fields,
        amount=item.amount,
    )


@dataclass
class Transaction:
    """Line items of one (customer_id, transaction_id), summed into one event."""

    customer_id: str
    transaction_id: str
    items: list[LineItem]

    @property
    def line(self) -> int:
        return min(i.line for i in self.items)

    @property
    def occurred_at(self) -> datetime:
        return min(i.occurred_at for i in self.items)

    @property
    def amount(self) -> Decimal:
        return money(sum((i.amount or Decimal(0) for i in self.items), Decimal(0)))


def group_items(items: Iterable[LineItem]) -> Iterator[Transaction]:
    """Fold line items sorted by (customer_id, transaction_id, line) into transactions."""
    current: Transaction | None = None
    for item in items:
        key = (item.customer_id, item.transaction_id or "")
        if current is not None and (current.customer_id, current.transaction_id) == key:
            current.items.append(item)
            continue
        if current is not None:
            yield current
        current = Transaction(item.customer_id, item.transaction_id or "", [item])
    if current is not None:
        yield current


def event_from_transaction(plan: ImportPlan, txn: Transaction) -> EnvelopeBase:
    """One event per invoice: the earliest line's time, the summed amount, the first line's
    other fields. Line items in different currencies cannot be summed and are rejected."""
    ordered = sorted(txn.items, key=lambda i: i.line)
    fallback = plan.defaults.get("currency", "")
    currencies = sorted({i.fields.get("currency", fallback) for i in ordered})
    if len(currencies) > 1:
        raise RowRejected(
            f"currency: line items of transaction {_show(txn.transaction_id)} are in "
            f"{', '.join(currencies)}",
            "currency: line items of one transaction disagree",
        )
    total = txn.amount
    if total == 0:
        raise RowRejected(
            f"amount: line items of transaction {_show(txn.transaction_id)} sum to zero",
            "amount: zero",
        )
    return build_event(
        plan,
        event_id=group_event_id(plan.source, plan.digest, plan.event_type, txn.customer_id,
                                txn.transaction_id),
        customer_id=txn.customer_id,
        occurred_at=txn.occurred_at,
        fields=ordered[0].fields,
        amount=total,
    )


def item_record(item: LineItem) -> list[Any]:
    """A LineItem as a JSON-able record sorted by (customer, transaction, line)."""
    return [item.customer_id, item.transaction_id or "", item.line, item.time_key,
            None if item.amount is None else str(item.amount), item.fields, item.raw]


def record_item(record: list[Any]) -> LineItem:
    customer_id, txn, line, ts, amount, fields, raw = record
    return LineItem(line, customer_id, EPOCH + ts * MICROSECOND,
                    None if amount is None else Decimal(amount), fields, txn, raw)


def item_sort_key(record: list[Any]) -> tuple[str, str, int]:
    return (record[0], record[1], record[2])


def event_record(event: EnvelopeBase, line: int) -> list[Any]:
    """An event as a record sorted by (event time, line): global event-time order, stable."""
    return [time_key(event.occurred_at), line, event.customer_id, topic_of(event.event_type),
            encode_event(event).decode()]


def event_sort_key(record: list[Any]) -> tuple[int, int]:
    return (record[0], record[1])


# ---------------------------------------------------------------------------- external sort


def merge_runs(runs: Iterable[Iterable[Any]], key: Callable[[Any], Any]) -> Iterator[Any]:
    """Merge sorted runs into one sorted stream; equal keys keep the order of the runs."""
    return heapq.merge(*runs, key=key)


class ExternalSorter:
    """Sort more records than fit in memory: sorted chunks spill to temp files (one JSON record
    a line), then a k-way heapq merge streams them back. Records are JSON-able lists."""

    def __init__(
        self, key: Callable[[Any], Any], *, chunk_rows: int = 200_000,
        tmp_dir: str | os.PathLike[str] | None = None, max_fan_in: int = 256,
    ):
        if chunk_rows < 1:
            raise ValueError("chunk_rows must be at least 1")
        self.key = key
        self.chunk_rows = chunk_rows
        self.max_fan_in = max(2, max_fan_in)
        self._tmp_root = tmp_dir
        self._dir: str | None = None
        self._buffer: list[Any] = []
        self.runs: list[str] = []
        self.count = 0

    def __enter__(self) -> ExternalSorter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add(self, record: Any) -> None:
        self._buffer.append(record)
        self.count += 1
        if len(self._buffer) >= self.chunk_rows:
            self._spill()

    def _new_run(self) -> tuple[str, BinaryIO]:
        if self._dir is None:
            self._dir = tempfile.mkdtemp(prefix="tenure-import-", dir=self._tmp_root)
        fd, path = tempfile.mkstemp(suffix=".run", dir=self._dir)
        return path, os.fdopen(fd, "wb", buffering=1 << 20)

    def _spill(self) -> None:
        if not self._buffer:
            return
        self._buffer.sort(key=self.key)
        path, out = self._new_run()
        with out:
            for record in self._buffer:
                out.write(orjson.dumps(record))
                out.write(b"\n")
        self.runs.append(path)
        self._buffer = []
        if len(self.runs) >= self.max_fan_in * 2:
            self._compact()

    def _compact(self) -> None:
        """Merge the oldest runs into one so the final merge never opens too many files."""
        oldest, rest = self.runs[: self.max_fan_in], self.runs[self.max_fan_in:]
        path, out = self._new_run()
        with out:
            for record in merge_runs((_read_run(p) for p in oldest), self.key):
                out.write(orjson.dumps(record))
                out.write(b"\n")
        for p in oldest:
            os.unlink(p)
        self.runs = [path, *rest]

    def sorted(self) -> Iterator[Any]:
        """The records in key order (stable: equal keys keep insertion order)."""
        if not self.runs:
            self._buffer.sort(key=self.key)
            yield from self._buffer
            return
        self._spill()
        while len(self.runs) > self.max_fan_in:
            self._compact()
        yield from merge_runs([_read_run(p) for p in self.runs], self.key)

    def close(self) -> None:
        self._buffer = []
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
        self.runs = []


def _read_run(path: str) -> Iterator[Any]:
    with open(path, "rb", buffering=1 << 20) as f:
        for line in f:
            yield orjson.loads(line)


def external_sort(
    records: Iterable[Any], key: Callable[[Any], Any], *, chunk_rows: int,
    tmp_dir: str | None = None,
) -> Iterator[Any]:
    """Convenience: sort an iterable of records through an ExternalSorter."""
    with ExternalSorter(key, chunk_rows=chunk_rows, tmp_dir=tmp_dir) as sorter:
        for record in records:
            sorter.add(record)
        yield from sorter.sorted()


# ---------------------------------------------------------------------------- file reading


def detect_format(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes if s.lower() != ".gz"]
    last = suffixes[-1] if suffixes else ""
    if last in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    return "csv"


def open_input(path: Path) -> tuple[BinaryIO, BinaryIO]:
    """(stream to read, raw file whose tell() measures progress); .gz is decompressed."""
    raw = open(path, "rb", buffering=1 << 20)  # noqa: SIM115 - closed by the caller
    if path.suffix.lower() == ".gz":
        return gzip.GzipFile(fileobj=raw), raw  # type: ignore[return-value]
    return raw, raw


def file_digest(path: Path, progress: Callable[[int], None] | None = None) -> str:
    """SHA-256 of the file as stored: part of every event id."""
    h = hashlib.sha256()
    done = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            done += len(chunk)
            if progress is not None:
                progress(done)
    return h.hexdigest()


class _Lines:
    """Decoded physical lines for csv.reader; remembers the lines of the current record."""

    def __init__(self, stream: Iterable[bytes], encoding: str):
        self._stream = iter(stream)
        self.encoding = encoding
        self.consumed = 0
        self._buffer: list[str] = []
        self.undecodable = False

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        data = next(self._stream)
        self.consumed += 1
        try:
            text = data.decode(self.encoding)
        except UnicodeDecodeError:
            text = data.decode(self.encoding, errors="replace")
            self.undecodable = True
        if self.consumed == 1:
            text = text.lstrip("\ufeff")
        self._buffer.append(text)
        return text

    def take(self) -> tuple[int, str, bool]:
        """(first line number, original text, undecodable) of the record just read."""
        first = self.consumed - len(self._buffer) + 1
        raw = "".join(self._buffer).rstrip("\r\n")
        bad, self.undecodable, self._buffer = self.undecodable, False, []
        return first, raw, bad


WHITESPACE = "whitespace"  # --delimiter whitespace: fields split on runs of spaces and tabs


def _whitespace_reader(lines: Iterable[str]) -> Iterator[list[str]]:
    """Fields of a whitespace-separated file (CDNow's master file, fixed-width exports):
    runs of spaces and tabs separate fields, leading and trailing blanks are ignored; no
    quoting."""
    for text in lines:
        yield text.split()


def csv_records(
    stream: Iterable[bytes], *, encoding: str = "utf-8", delimiter: str = ","
) -> Iterator[tuple[int, list[str] | None, str, str | None]]:
    """(line, values, original text, error) per record; the header comes first as line 1.
    Blank lines are skipped; a record the csv module cannot read comes with its error."""
    lines = _Lines(stream, encoding)
    reader: Iterator[list[str]] = (
        _whitespace_reader(lines) if delimiter == WHITESPACE
        else csv.reader(lines, delimiter=delimiter))
    while True:
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            line, raw, _ = lines.take()
            yield line, None, raw, f"csv: {exc}"
            continue
        line, raw, bad = lines.take()
        if not values or (len(values) == 1 and not values[0].strip()):
            continue
        if bad:
            yield line, None, raw, f"encoding: bytes that are not {encoding} (set --encoding)"
            continue
        yield line, values, raw, None


# ---------------------------------------------------------------------------- progress


class Progress:
    """One updating line on stderr: rows, rate per second and ETA."""

    def __init__(self, enabled: bool = True, every: float = 0.25):
        self.enabled = enabled
        self.every = every
        self.tty = sys.stderr.isatty()
        self._last = 0.0
        self._phase_started = time.monotonic()
        self._width = 0

    def phase(self) -> None:
        self._phase_started = time.monotonic()
        self._last = 0.0

    def show(self, label: str, count: int, fraction: float | None, unit: str = "rows",
             force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last < (self.every if self.tty else 10.0):
            return
        self._last = now
        elapsed = max(now - self._phase_started, 1e-9)
        rate = count / elapsed
        text = f"import: {label} {count:,} {unit}, {rate:,.0f}/s"
        if fraction is not None and fraction > 0:
            remaining = elapsed * (1 - fraction) / fraction
            text += f", {min(fraction, 1.0):.0%}, ETA {_duration(remaining)}"
        if self.tty:
            pad = max(self._width - len(text), 0)
            self._width = len(text)
            sys.stderr.write("\r" + text + " " * pad)
        else:
            sys.stderr.write(text + "\n")
        sys.stderr.flush()

    def end(self) -> None:
        if self.enabled and self.tty and self._width:
            sys.stderr.write("\n")
            sys.stderr.flush()
            self._width = 0


def _duration(seconds: float) -> str:
    seconds = int(seconds + 0.5)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


# ---------------------------------------------------------------------------- the import


@dataclass
class ImportOptions:
    path: Path
    format: str | None = None
    mapping: dict[str, tuple[str, ...]] = field(default_factory=dict)
    event_type: str | None = None
    date_format: str | None = None
    tz: str = "UTC"
    currency: str = "EUR"
    source: str = "importer"
    defaults: dict[str, str] = field(default_factory=dict)
    rejects: Path | None = None
    max_reject_ratio: float = 1.0
    chunk_rows: int = 200_000
    dry_run: bool = False
    delimiter: str = ","
    # Names of the columns of a file without a header row (then line 1 is data)
    columns: tuple[str, ...] = ()
    encoding: str = "utf-8"
    decimal_comma: bool = False
    window: int = 5000
    tmp_dir: str | None = None
    progress: bool = True
    allow_future: bool = False
    # Publish only events at or before this time (a backtest's cut-off); later valid events
    # are counted as held back.
    until: datetime | None = None
    # Called with every valid event, published or held back (a backtest's labels).
    observer: Callable[[EnvelopeBase], None] | None = None

    @property
    def rejects_path(self) -> Path:
        return self.rejects or self.path.with_name(self.path.name + ".rejects.csv")


@dataclass
class ImportResult:
    path: str
    format: str
    event_type: str | None
    digest: str = ""
    rows_read: int = 0
    events: int = 0
    published: int = 0
    held_back: int = 0
    until: datetime | None = None
    rejected: int = 0
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    customers: int = 0
    first_at: datetime | None = None
    last_at: datetime | None = None
    topics: dict[str, int] = field(default_factory=dict)
    mapping: dict[str, list[str]] = field(default_factory=dict)
    rejects_path: str = ""
    dry_run: bool = False
    seconds: float = 0.0
    publish_seconds: float = 0.0
    exit_code: int = EXIT_OK
    message: str = ""

    @property
    def reject_ratio(self) -> float:
        return self.rejected / self.rows_read if self.rows_read else 0.0

    def as_json(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items()}
        for k in ("first_at", "last_at", "until"):
            out[k] = out[k].isoformat().replace("+00:00", "Z") if out[k] else None
        out["reject_ratio"] = round(self.reject_ratio, 6)
        return out

    def summary(self) -> str:
        rate = self.published / self.publish_seconds if self.publish_seconds > 0 else 0.0
        overall = self.rows_read / self.seconds if self.seconds > 0 else 0.0
        lines = [
            f"import of {self.path} ({self.format}, sha256 {self.digest[:12]}…)"
            + (" — dry run, nothing published" if self.dry_run else ""),
            f"  rows read        {self.rows_read:,}",
            f"  {'events valid' if self.dry_run else 'events published':<16} "
            f"{(self.events if self.dry_run else self.published):,}"
            + "".join(f"  [{t}: {n:,}]" for t, n in sorted(self.topics.items())),
            f"  rejected         {self.rejected:,} ({self.reject_ratio:.1%})"
            + (f" -> {self.rejects_path}" if self.rejected else ""),
        ]
        for reason, n in sorted(self.rejected_by_reason.items(), key=lambda kv: (-kv[1], kv[0])):
            lines.append(f"    {n:>10,}  {reason}")
        if self.until is not None:
            lines.append(f"  held back        {self.held_back:,} events after --until "
                         f"{self.until.isoformat().replace('+00:00', 'Z')}")
        lines.append(f"  customers        {self.customers:,}")
        if self.first_at and self.last_at:
            days = (self.last_at - self.first_at).total_seconds() / 86400
            lines.append(
                f"  time span        {self.first_at.isoformat().replace('+00:00', 'Z')} .. "
                f"{self.last_at.isoformat().replace('+00:00', 'Z')} ({days:,.0f} days)"
            )
        lines.append(
            f"  rate             {overall:,.0f} rows/s overall"
            + (f", {rate:,.0f} events/s published" if self.published else "")
            + f" ({self.seconds:,.1f}s)"
        )
        if self.message:
            lines.append(f"  {self.message}")
        return "\n".join(lines)


class _Rejects:
    """The rejects file: line, reason, original text (one CSV row per rejected input row)."""

    def __init__(self, path: Path, result: ImportResult):
        self.path = path
        self.result = result
        # Written beside the target and renamed at the end: an import that cannot run leaves
        # the previous rejects file as it was.
        self._partial = path.with_name(path.name + ".partial")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self._partial.open("w", newline="", encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"cannot write the rejects file {path}: {exc.strerror}") from None
        self._writer = csv.writer(self._file)
        self._writer.writerow(["line", "reason", "original"])

    def add(self, line: int, reason: str, kind: str, raw: str) -> None:
        self._writer.writerow([line, reason, raw])
        self.result.rejected += 1
        self.result.rejected_by_reason[kind] = self.result.rejected_by_reason.get(kind, 0) + 1

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()
            os.replace(self._partial, self.path)

    def discard(self) -> None:
        """The import could not run: leave no misleading (empty) rejects file behind."""
        if not self._file.closed:
            self._file.close()
            self._partial.unlink(missing_ok=True)


def _jsonl_kind(reason: str) -> str:
    if reason.startswith("malformed JSON"):
        return "malformed JSON"
    first = reason.split("; ", 1)[0]
    for prefix in ("schema_version: unsupported version", "event_type: unknown event type",
                   "source: ", "event_type: "):
        if first.startswith(prefix):
            return prefix.rstrip(": ") if prefix.endswith(": ") else prefix
    return first


class _Collector:
    """Events (valid and sorted later) and the figures of the summary."""

    def __init__(self, sorter: ExternalSorter, result: ImportResult,
                 until: datetime | None = None,
                 observer: Callable[[EnvelopeBase], None] | None = None):
        self.sorter = sorter
        self.result = result
        self.until = until
        self.observer = observer
        self.customers: set[str] = set()
        self.topics: Counter[str] = Counter()

    def add(self, event: EnvelopeBase, line: int) -> None:
        self.result.events += 1
        if self.observer is not None:
            self.observer(event)
        moment = event.occurred_at
        if self.until is not None and moment > self.until:
            self.result.held_back += 1
        else:
            self.sorter.add(event_record(event, line))
            self.customers.add(event.customer_id)
            self.topics[topic_of(event.event_type)] += 1
        if self.result.first_at is None or moment < self.result.first_at:
            self.result.first_at = moment
        if self.result.last_at is None or moment > self.result.last_at:
            self.result.last_at = moment


def _read_jsonl(
    options: ImportOptions, stream: Iterable[bytes], settings: PlatformSettings,
    collector: _Collector, rejects: _Rejects, tick: Callable[[], None],
) -> None:
    result = collector.result
    wanted = options.event_type
    for line, data in enumerate(stream, 1):
        if not data.strip():
            continue
        result.rows_read += 1
        tick()
        raw = data.decode("utf-8", errors="replace").rstrip("\r\n")
        try:
            event = parse_event(data)
            if event.event_type not in INPUT_EVENT_TYPES:
                raise RowRejected(
                    f"event_type: {event.event_type!r} is a platform output, not an input",
                    "event_type: not an input event type",
                )
            if wanted and event.event_type != wanted:
                raise RowRejected(
                    f"event_type: {event.event_type!r} is not --event-type {wanted}",
                    "event_type: not the requested --event-type",
                )
            if not settings.source_allowed(event.source):
                raise RowRejected(
                    f"source: {event.source!r} is not a registered publisher",
                    "source: not a registered publisher",
                )
            if len(encode_event(event)) > MAX_EVENT_BYTES:
                raise RowRejected(f"envelope: larger than {MAX_EVENT_BYTES} bytes",
                                  "envelope: too large")
        except InvalidEvent as exc:
            rejects.add(line, str(exc), _jsonl_kind(str(exc)), raw)
            continue
        except RowRejected as exc:
            rejects.add(line, exc.reason, exc.kind, raw)
            continue
        collector.add(event, line)


def _read_csv(
    options: ImportOptions, stream: Iterable[bytes], digest: str, collector: _Collector,
    rejects: _Rejects, tick: Callable[[], None], not_after: datetime | None,
    progress: Progress,
) -> ImportPlan:
    result = collector.result
    records = csv_records(stream, encoding=options.encoding, delimiter=options.delimiter)
    if options.columns:
        header: list[str] | None = list(options.columns)  # no header row: line 1 is data
    else:
        first = next(records, None)
        if first is not None and (first[3] is not None or first[1] is None):
            raise UsageError(f"{options.path}: unreadable header ({first[3]})")
        header = first[1] if first is not None else None
    if header is None:
        raise UsageError(f"{options.path}: empty file, a CSV import needs a header row "
                         "(or --columns to name the columns of a file without one)")
    plan = plan_import(
        header,
        mapping=options.mapping,
        event_type=options.event_type or DEFAULT_EVENT_TYPE,
        defaults=options.defaults,
        currency=options.currency,
        source=options.source,
        digest=digest,
        date_format=options.date_format,
        tz=check_zone(options.tz),
        decimal_comma=options.decimal_comma,
        not_after=not_after,
    )
    result.mapping = {k: list(v) for k, v in sorted(plan.column_names.items())}
    grouper = (
        ExternalSorter(item_sort_key, chunk_rows=options.chunk_rows, tmp_dir=options.tmp_dir)
        if plan.grouped else None
    )
    try:
        for line, values, raw, error in records:
            result.rows_read += 1
            tick()
            if error is not None or values is None:
                error = error or "csv: unreadable row"
                kind = ("encoding: undecodable bytes" if error.startswith("encoding")
                        else "csv: unreadable row")
                rejects.add(line, error, kind, raw)
                continue
            try:
                item = parse_row(plan, values, line, raw)
                if grouper is not None:
                    grouper.add(item_record(item))
                    continue
                event = event_from_row(plan, item)
            except RowRejected as exc:
                rejects.add(line, exc.reason, exc.kind, raw)
                continue
            collector.add(event, line)
        if grouper is not None:
            progress.show("reading", result.rows_read, 1.0, force=True)
            progress.end()
            progress.phase()

            def items() -> Iterator[LineItem]:
                for done, record in enumerate(grouper.sorted(), 1):
                    if done % 1000 == 0:
                        progress.show("grouping", done, done / grouper.count, unit="line items")
                    yield record_item(record)

            for txn in group_items(items()):
                try:
                    event = event_from_transaction(plan, txn)
                except RowRejected as exc:
                    for item in sorted(txn.items, key=lambda i: i.line):
                        rejects.add(item.line, exc.reason, exc.kind, item.raw)
                    continue
                collector.add(event, txn.line)
            progress.show("grouping", grouper.count, 1.0, unit="line items", force=True)
    finally:
        if grouper is not None:
            grouper.close()
    return plan


async def run_import(
    options: ImportOptions, settings: PlatformSettings | None = None
) -> ImportResult:
    """Read, validate and sort the file, then publish (unless a dry run). Never raises for a
    bad row; raises UsageError for arguments or a file the import cannot use."""
    settings = settings or PlatformSettings()
    started = time.monotonic()
    path = options.path
    fmt = options.format or detect_format(path)
    if fmt not in ("csv", "jsonl"):
        raise UsageError(f"--format {fmt!r}: csv or jsonl")
    if options.event_type is not None:
        check_event_type(options.event_type)
    if fmt == "csv":
        check_source(options.source, settings)
    if options.chunk_rows < 1:
        raise UsageError("--chunk-rows must be at least 1")
    if not 0.0 <= options.max_reject_ratio <= 1.0:
        raise UsageError("--max-reject-ratio must be between 0 and 1")
    if not path.exists():
        raise UsageError(f"{path}: no such file")
    if not path.is_file():
        raise UsageError(f"{path}: not a regular file")
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise UsageError(f"{path}: {exc.strerror}") from None

    progress = Progress(options.progress)
    result = ImportResult(str(path), fmt, options.event_type or
                          (DEFAULT_EVENT_TYPE if fmt == "csv" else None))
    result.dry_run = options.dry_run
    result.rejects_path = str(options.rejects_path)
    try:
        result.digest = file_digest(
            path,
            (lambda done: progress.show("hashing", done >> 20, done / size, unit="MiB"))
            if size >= 64 << 20 else None,
        )
    except OSError as exc:
        raise UsageError(f"{path}: unreadable ({exc.strerror})") from None
    not_after = None if options.allow_future else datetime.now(UTC) + timedelta(days=1)

    sorter = ExternalSorter(event_sort_key, chunk_rows=options.chunk_rows, tmp_dir=options.tmp_dir)
    collector = _Collector(sorter, result, options.until, options.observer)
    result.until = options.until
    rejects = _Rejects(options.rejects_path, result)
    try:
        stream, raw = open_input(path)
        try:
            progress.phase()

            def tick() -> None:
                if result.rows_read % 1000 == 0:
                    progress.show("reading", result.rows_read, raw.tell() / size if size else None)

            grouped = False
            try:
                if fmt == "jsonl":
                    _read_jsonl(options, stream, settings, collector, rejects, tick)
                else:
                    plan = _read_csv(options, stream, result.digest, collector, rejects, tick,
                                     not_after, progress)
                    grouped = plan.grouped
            except (OSError, EOFError, gzip.BadGzipFile) as exc:
                rejects.discard()
                raise UsageError(f"reading {path} failed: {exc}") from None
            except UsageError:
                rejects.discard()
                raise
            if not grouped:  # (grouping showed its own end of reading)
                progress.show("reading", result.rows_read, 1.0, force=True)
            progress.end()
        finally:
            stream.close()
            raw.close()
        rejects.close()
        result.customers = len(collector.customers)
        result.topics = dict(collector.topics)

        if result.rows_read and result.reject_ratio > options.max_reject_ratio:
            result.exit_code = EXIT_TOO_MANY_REJECTS
            result.message = (
                f"{result.reject_ratio:.1%} of rows rejected, more than --max-reject-ratio "
                f"{options.max_reject_ratio:g}: nothing published"
            )
        elif not options.dry_run and result.events > result.held_back:
            await _publish(options, settings, sorter, result, progress)
    finally:
        rejects.discard()  # no-op once closed; an interrupted read leaves no partial file
        sorter.close()
        progress.end()
    result.seconds = time.monotonic() - started
    return result


async def _publish(
    options: ImportOptions, settings: PlatformSettings, sorter: ExternalSorter,
    result: ImportResult, progress: Progress,
) -> None:
    from shared.topics import ensure_topics
    from tenure_cli.publish import EventPublisher

    await ensure_topics(settings, sorted(result.topics))
    started = time.monotonic()
    progress.phase()
    total = result.events
    async with EventPublisher(settings, window=options.window) as publisher:
        for _ts, _line, customer_id, topic, value in sorter.sorted():
            await publisher.send_raw(topic, value.encode(), customer_id)
            if publisher.sent % 1000 == 0:
                progress.show("publishing", publisher.sent, publisher.sent / total, unit="events")
        await publisher.flush()
        result.published = publisher.sent
    progress.show("publishing", result.published, 1.0, unit="events", force=True)
    progress.end()
    result.publish_seconds = time.monotonic() - started


# ---------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", type=Path, help="CSV or JSONL file (.gz is read too)")
    parser.add_argument("--format", choices=["csv", "jsonl"], default=None,
                        help="default from the extension (.jsonl/.ndjson: jsonl, else csv)")
    parser.add_argument("--map", action="append", default=[], metavar="FIELD=COLUMN,...",
                        help="contract field=CSV column, e.g. customer_id=cust,occurred_at=date,"
                             "amount=Quantity*UnitPrice,transaction_id=InvoiceNo (repeatable)")
    parser.add_argument("--event-type", default=None,
                        help=f"CSV: the event each row becomes (default {DEFAULT_EVENT_TYPE}); "
                             "JSONL: only accept this type")
    parser.add_argument("--date-format", default=None,
                        help="strptime format of occurred_at, or epoch / epoch_ms (default: "
                             "ISO 8601, YYYY-MM-DD or YYYYMMDD)")
    parser.add_argument("--tz", default="UTC",
                        help="IANA zone of times without an offset (default UTC)")
    parser.add_argument("--currency", default="EUR", help="when no currency column is mapped")
    parser.add_argument("--source", default="importer", help="registered publisher id (CSV)")
    parser.add_argument("--default", action="append", default=[], metavar="FIELD=VALUE",
                        dest="defaults",
                        help="payload default for a field the file lacks (repeatable); built in: "
                             "account_id=<customer_id>-import, product_type=card, direction=debit,"
                             " category=card_purchase, channel=pos, initiated_by=customer")
    parser.add_argument("--rejects", type=Path, default=None,
                        help="rejected rows (line, reason, original); default <file>.rejects.csv")
    parser.add_argument("--max-reject-ratio", type=float, default=1.0,
                        help="exit 3 without publishing when more rows are rejected (0..1; "
                             "default 1.0: never)")
    parser.add_argument("--chunk-rows", type=int, default=200_000,
                        help="rows sorted in memory before spilling to a temp file")
    parser.add_argument("--tmp-dir", default=None, help="where sorted chunks spill")
    parser.add_argument("--delimiter", default=",",
                        help="CSV delimiter (\\t for tab; 'whitespace' for fields separated "
                             "by runs of spaces or tabs, as in CDNow's master file)")
    parser.add_argument("--columns", default=None, metavar="NAME,NAME,...",
                        help="the file has no header row: these name its columns, in order "
                             "(then --map refers to them)")
    parser.add_argument("--encoding", default="utf-8", help="file encoding, e.g. latin-1")
    parser.add_argument("--decimal-comma", action="store_true",
                        help="amounts written 1.234,50")
    parser.add_argument("--allow-future", action="store_true",
                        help="accept event times more than a day ahead of now")
    parser.add_argument("--until", metavar="TIME", default=None,
                        help="publish only events at or before TIME (ISO 8601 or a date, "
                             "UTC unless it has an offset); later rows are still validated "
                             "and counted as held back")
    parser.add_argument("--window", type=int, default=5000,
                        help="sends in flight before awaiting their acknowledgements")
    parser.add_argument("--dry-run", action="store_true",
                        help="validate and report, publish nothing")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress line on stderr")


def options_from(args: argparse.Namespace) -> ImportOptions:
    delimiter = {"\\t": "\t", "tab": "\t"}.get(args.delimiter, args.delimiter)
    if len(delimiter) != 1 and delimiter != WHITESPACE:
        raise UsageError(f"--delimiter must be one character or {WHITESPACE!r}")
    columns: tuple[str, ...] = ()
    if args.columns is not None:
        columns = tuple(c.strip() for c in args.columns.split(","))
        if not all(columns):
            raise UsageError(f"--columns {args.columns!r}: every column needs a name")
        if len(set(columns)) != len(columns):
            raise UsageError(f"--columns {args.columns!r}: names must differ")
        if args.format == "jsonl" or (args.format is None and args.file.name.lower()
                                      .removesuffix(".gz").endswith((".jsonl", ".ndjson",
                                                                     ".json"))):
            raise UsageError("--columns is for a CSV without a header row, not JSONL")
    fmt = args.format
    if fmt is None and args.file.name.lower().removesuffix(".gz").endswith(".tsv"):
        delimiter = "\t" if args.delimiter == "," else delimiter
    try:
        "".encode(args.encoding)
    except LookupError:
        raise UsageError(f"--encoding {args.encoding!r}: unknown") from None
    return ImportOptions(
        path=args.file,
        format=fmt,
        mapping=parse_mapping(args.map),
        event_type=args.event_type,
        date_format=args.date_format,
        tz=args.tz,
        currency=args.currency,
        source=args.source,
        defaults=parse_defaults(args.defaults),
        rejects=args.rejects,
        max_reject_ratio=args.max_reject_ratio,
        chunk_rows=args.chunk_rows,
        dry_run=args.dry_run,
        delimiter=delimiter,
        columns=columns,
        encoding=args.encoding,
        decimal_comma=args.decimal_comma,
        window=max(1, args.window),
        tmp_dir=args.tmp_dir,
        progress=not args.quiet,
        allow_future=args.allow_future,
        until=_until(args.until),
    )


def _until(text: str | None) -> datetime | None:
    if text is None:
        return None
    from tenure_cli.report import parse_as_of

    try:
        return parse_as_of(text)
    except ValueError:
        raise UsageError(f"--until {text!r}: a date (YYYY-MM-DD, the end of that day in "
                         "UTC) or a time with a UTC offset") from None


def main(args: argparse.Namespace) -> int:
    """Exit codes: 0 imported (even with rejects), 2 unusable arguments or file,
    3 more rows rejected than --max-reject-ratio (nothing published), 4 Kafka failed."""
    from aiokafka.errors import KafkaError

    try:
        options = options_from(args)
        check_zone(options.tz)
        result = asyncio.run(run_import(options))
    except UsageError as exc:
        print(f"tenure import: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (KafkaError, OSError, RuntimeError) as exc:
        print(f"tenure import: publishing failed: {type(exc).__name__}: {exc} "
              "(re-run: event ids are deterministic, consumers drop duplicates)", file=sys.stderr)
        return EXIT_BROKER
    if args.json:
        sys.stdout.write(orjson.dumps(result.as_json()).decode() + "\n")
    else:
        print(result.summary())
    if result.exit_code:
        print(f"tenure import: {result.message}", file=sys.stderr)
    return result.exit_code


__all__ = [
    "ExternalSorter", "ImportOptions", "ImportPlan", "ImportResult", "LineItem", "RowRejected",
    "Transaction", "UsageError", "amount_of", "build_event", "event_from_row",
    "event_from_transaction", "external_sort", "group_items", "main", "merge_runs",
    "parse_amount", "parse_mapping", "parse_occurred_at", "parse_row", "plan_import",
    "run_import",
]
