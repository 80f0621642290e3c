"""`tenure bench`: how fast profile ingests events, against the kit's loop without a database.

One run, in one process, on a namespace of its own (topics `bench<hex>.*`, schema
`bench<hex>_profile`), so the demo's data is never touched:

1. publish a fixed, seeded mix of N events over C customers (the v1 contract models,
   keyed by customer_id) with an idempotent producer, and time it;
2. baseline: the consumer kit's own loop (`getmany`, parse and validate every envelope,
   commit offsets) with no database: the ceiling any service built on the kit can reach;
3. profile ingest: the real profile runtime (consumer + outbox relay) in its own consumer
   group, until every event is committed in PostgreSQL, then until the relay has published
   every `profile.updated`;
4. write `bench/results.json` and the table of `docs/benchmarks.md`, drop the namespace.

Throughput windows run from the first fetched batch to the commit of the batch holding the
N-th event, so the consumer-group join (the same for both) is not counted; it is reported
separately. CPU seconds are this process's (`time.process_time`: user + system, every
thread), which holds the producer, both consumers, the relay and the drivers; the broker's
and PostgreSQL's CPU over the same windows are read from /proc when they run on this host.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import gc
import logging
import math
import os
import platform
import random
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from shared import events as ev
from shared.events import EnvelopeBase, derived_event_id, encode_event
from shared.kit import EventConsumer, RawRecord
from shared.logs import configure_logging
from shared.metrics import KitMetrics
from shared.settings import (
    ALL_TOPICS,
    INPUT_TOPICS,
    OUTPUT_TOPICS,
    PlatformSettings,
    ServiceSettings,
)

log = logging.getLogger("tenure.bench")

DEFAULT_SEED = 20_260_101
TARGET_RATIO = 0.5
DOC_START = "<!-- bench:start -->"
DOC_END = "<!-- bench:end -->"

# The documented mix: (event type, share of N, input topic). Registrations come first, one per
# customer at most; if the share asks for more than C, the surplus goes to transactions.
MIX: tuple[tuple[str, float, str], ...] = (
    ("customer.registered", 0.05, INPUT_TOPICS["customers"]),
    ("consent.changed", 0.03, INPUT_TOPICS["customers"]),
    ("account.opened", 0.02, INPUT_TOPICS["customers"]),
    ("transaction.posted", 0.70, INPUT_TOPICS["transactions"]),
    ("app.click", 0.15, INPUT_TOPICS["app_events"]),
    ("feedback.submitted", 0.05, INPUT_TOPICS["feedback"]),
)
TOPIC_OF = {event_type: topic for event_type, _, topic in MIX}
MIX_NOTES = (
    "Every event is keyed by its customer_id; customers are drawn uniformly at random. "
    "`customer.registered` events are published first, one per customer (the first "
    "min(C, 5% of N) customers; the others are known only from activity). Transactions "
    "carry `balance_after` (a running balance per account); 75% post to the customer's "
    "current account, the rest to accounts opened earlier by `account.opened`. Event times "
    "start at 2026-01-01T00:00:00Z and advance 3 s per event."
)


# ------------------------------------------------------------------ the event mix


def mix_counts(n: int, customers: int) -> dict[str, int]:
    """Exact counts per event type that sum to `n` (largest remainder).

    >>> mix_counts(20_000, 2_000)["transaction.posted"], sum(mix_counts(20_000, 2_000).values())
    (14000, 20000)
    >>> mix_counts(1_000, 10)["customer.registered"], mix_counts(1_000, 10)["transaction.posted"]
    (10, 740)
    """
    raw = {t: share * n for t, share, _ in MIX}
    counts = {t: int(v) for t, v in raw.items()}
    by_remainder = sorted(raw, key=lambda t: raw[t] - counts[t], reverse=True)
    for t in by_remainder[: n - sum(counts.values())]:
        counts[t] += 1
    surplus = counts["customer.registered"] - min(customers, counts["customer.registered"])
    counts["customer.registered"] -= surplus
    counts["transaction.posted"] += surplus
    return counts


@dataclass
class _Customer:
    cid: str
    accounts: list[tuple[str, str]] = field(default_factory=list)  # (account_id, product)
    balances: dict[str, Decimal] = field(default_factory=dict)
    clicks: int = 0


class MixBuilder:
    """Builds the seeded event stream from the contract models."""

    SEGMENTS = ["retail"] * 7 + ["premier"] * 2 + ["sme"]
    ZONES = ["Europe/London", "Europe/Berlin", "Asia/Singapore", "America/New_York", "UTC"]
    PRODUCTS = ["savings", "card", "loan", "investment", "mortgage", "insurance"]
    CATEGORIES = ["card_purchase"] * 5 + ["transfer", "bill", "salary", "atm_withdrawal", "fee"]
    CHANNELS = ["mobile", "mobile", "web", "pos", "atm", "branch", "batch"]
    ACTIONS = ["login", "view_balance", "transfer", "open_offer", "view_card", "logout"]

    def __init__(self, seed: int, customers: int):
        self.rng = random.Random(seed)
        self.customers = [_Customer(f"BC{i:07d}") for i in range(customers)]
        for c in self.customers:
            c.accounts.append((f"{c.cid}-CUR", "current"))
            c.balances[f"{c.cid}-CUR"] = Decimal("1000.00")
        self.t0 = datetime(2026, 1, 1, tzinfo=UTC)
        self.seq = 0

    def _next(self) -> tuple[uuid.UUID, datetime]:
        at = self.t0 + timedelta(seconds=3 * self.seq)
        self.seq += 1
        return uuid.UUID(int=self.rng.getrandbits(128), version=4), at

    def build(self, n: int) -> list[EnvelopeBase]:
        counts = mix_counts(n, len(self.customers))
        out: list[EnvelopeBase] = [
            self.registered(self.customers[i]) for i in range(counts["customer.registered"])
        ]
        rest = [t for t, k in counts.items() if t != "customer.registered" for _ in range(k)]
        self.rng.shuffle(rest)
        makers: dict[str, Callable[[_Customer], EnvelopeBase]] = {
            "consent.changed": self.consent,
            "account.opened": self.account_opened,
            "transaction.posted": self.transaction,
            "app.click": self.click,
            "feedback.submitted": self.feedback,
        }
        for event_type in rest:
            out.append(makers[event_type](self.rng.choice(self.customers)))
        return out

    def registered(self, c: _Customer) -> EnvelopeBase:
        r = self.rng
        event_id, at = self._next()
        segment = r.choice(self.SEGMENTS)
        return ev.CustomerRegistered(
            event_id=event_id,
            customer_id=c.cid,
            occurred_at=at,
            source="core-banking",
            payload=ev.CustomerDetails(
                name=f"Bench Customer {c.cid}",
                phone=f"+44 7700 9{r.randrange(100_000):05d}",
                email=f"{c.cid.lower()}@example.com",
                birth_date=date(1950 + r.randrange(55), 1 + r.randrange(12), 1 + r.randrange(28)),
                time_zone=r.choice(self.ZONES),
                language=r.choice(["en", "en", "de", "fr", "zh"]),
                segment=segment,
                rm_id=f"RM{r.randrange(50):03d}" if segment != "retail" else None,
            ),
        )

    def consent(self, c: _Customer) -> EnvelopeBase:
        r = self.rng
        event_id, at = self._next()
        return ev.ConsentChanged(
            event_id=event_id,
            customer_id=c.cid,
            occurred_at=at,
            source="crm",
            payload=ev.ConsentChange(
                channel=r.choice(["sms", "email", "push", "phone", "mail"]),
                purpose=r.choice(["marketing", "service"]),
                granted=r.random() < 0.7,
            ),
        )

    def account_opened(self, c: _Customer) -> EnvelopeBase:
        r = self.rng
        event_id, at = self._next()
        product = r.choice(self.PRODUCTS)
        account_id = f"{c.cid}-{product[:3].upper()}{len(c.accounts)}"
        c.accounts.append((account_id, product))
        c.balances[account_id] = Decimal(0)
        margin = None
        if product in ("loan", "mortgage"):
            margin = Decimal(r.randrange(100, 900)).scaleb(-4)
        return ev.AccountOpened(
            event_id=event_id,
            customer_id=c.cid,
            occurred_at=at,
            source="core-banking",
            payload=ev.AccountChange(
                account_id=account_id, product_type=product, currency="EUR", margin_rate=margin
            ),
        )

    def transaction(self, c: _Customer) -> EnvelopeBase:
        r = self.rng
        event_id, at = self._next()
        if len(c.accounts) > 1 and r.random() >= 0.75:
            account_id, product = r.choice(c.accounts[1:])
        else:
            account_id, product = c.accounts[0]
        amount = Decimal(r.randrange(100, 50_000)).scaleb(-2)
        category = r.choice(self.CATEGORIES)
        direction = "credit" if category == "salary" or r.random() < 0.15 else "debit"
        balance = c.balances[account_id] + (amount if direction == "credit" else -amount)
        c.balances[account_id] = balance
        return ev.TransactionPosted(
            event_id=event_id,
            customer_id=c.cid,
            occurred_at=at,
            source="core-banking",
            payload=ev.TransactionDetails(
                account_id=account_id,
                product_type=product,
                amount=amount,
                currency="EUR",
                direction=direction,
                category=category,
                channel=r.choice(self.CHANNELS),
                initiated_by="bank" if category in ("fee", "salary") else "customer",
                balance_after=balance,
            ),
        )

    def click(self, c: _Customer) -> EnvelopeBase:
        r = self.rng
        event_id, at = self._next()
        c.clicks += 1
        return ev.AppClicked(
            event_id=event_id,
            customer_id=c.cid,
            occurred_at=at,
            source="mobile-app",
            payload=ev.AppClick(
                session_id=f"{c.cid}-s{c.clicks // 5}",
                action=r.choice(self.ACTIONS),
                screen=r.choice(["home", "accounts", "cards", "offers", None]),
                channel=r.choice(["mobile", "mobile", "web"]),
            ),
        )

    def feedback(self, c: _Customer) -> EnvelopeBase:
        r = self.rng
        event_id, at = self._next()
        kind = r.choice(["nps", "nps", "nps", "survey", "compliment", "complaint_opened"])
        payload = ev.FeedbackDetails(
            kind=kind,
            score=r.randrange(11) if kind in ("nps", "survey") else None,
            complaint_id=f"CMP-{event_id.hex[:8]}" if kind == "complaint_opened" else None,
            category="fees" if kind == "complaint_opened" else None,
            severity="medium" if kind == "complaint_opened" else None,
        )
        return ev.FeedbackSubmitted(
            event_id=event_id,
            customer_id=c.cid,
            occurred_at=at,
            source="complaint-desk",
            payload=payload,
        )


# ------------------------------------------------------------------ measurement


@dataclass(frozen=True)
class Mark:
    wall: float
    cpu: float
    server: dict[str, float] | None = None

    @staticmethod
    def now() -> Mark:
        return Mark(time.perf_counter(), time.process_time())


class ServerCpu:
    """CPU seconds of the broker and PostgreSQL, read from /proc (when they run on this host).

    PostgreSQL: the postmaster's own and reaped children's time plus its live children's, so
    backends that exit in between still count. Kafka: the process listening on the port.
    """

    def __init__(self) -> None:
        self.pids: dict[str, int] = {}
        self.tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    async def discover(self, engine: AsyncEngine, kafka_bootstrap: str) -> None:
        with contextlib.suppress(Exception):
            async with engine.connect() as conn:
                backend = await conn.scalar(sa.text("SELECT pg_backend_pid()"))
            stat = _proc_stat(int(backend))
            if stat is not None:
                self.pids["postgres"] = stat[0]
        with contextlib.suppress(Exception):
            port = int(kafka_bootstrap.split(",")[0].rsplit(":", 1)[1])
            pid = _listener_pid(port)
            if pid is not None:
                self.pids["kafka"] = pid

    def snapshot(self) -> dict[str, float]:
        out: dict[str, float] = {}
        if "kafka" in self.pids:
            stat = _proc_stat(self.pids["kafka"])
            if stat is not None:
                out["kafka"] = sum(stat[1:5]) / self.tick
        if "postgres" in self.pids:
            root = self.pids["postgres"]
            stat = _proc_stat(root)
            if stat is not None:
                total = sum(stat[1:5])
                for entry in os.listdir("/proc"):
                    if entry.isdigit():
                        child = _proc_stat(int(entry))
                        if child is not None and child[0] == root:
                            total += child[1] + child[2]
                out["postgres"] = total / self.tick
        return out


def _proc_stat(pid: int) -> tuple[int, int, int, int, int] | None:
    """(ppid, utime, stime, cutime, cstime) in clock ticks."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rfind(")") + 2 :].split()
    return int(fields[1]), int(fields[11]), int(fields[12]), int(fields[13]), int(fields[14])


def _listener_pid(port: int) -> int | None:
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                parts = line.split()
                if parts[3] == "0A" and int(parts[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(f"socket:[{parts[9]}]")
    if not inodes:
        return None
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{entry}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{entry}/fd/{fd}") in inodes:
                        return int(entry)
    return None


@dataclass
class Window:
    """What one consumer did between two marks."""

    events: int
    wall_s: float
    cpu_s: float
    startup_wall_s: float
    batches: int
    server_cpu_s: dict[str, float] = field(default_factory=dict)

    @property
    def events_per_s(self) -> float:
        return self.events / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def cpu_s_per_10k(self) -> float:
        return self.cpu_s / self.events * 10_000 if self.events else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "events": self.events,
            "wall_s": round(self.wall_s, 3),
            "cpu_s": round(self.cpu_s, 3),
            "events_per_s": round(self.events_per_s, 1),
            "cpu_s_per_10k_events": round(self.cpu_s_per_10k, 3),
            "cpu_utilisation": round(self.cpu_s / self.wall_s, 3) if self.wall_s else None,
            "startup_wall_s": round(self.startup_wall_s, 3),
            "events_per_s_incl_startup": round(
                self.events / (self.wall_s + self.startup_wall_s), 1
            ),
            "batches": self.batches,
            "server_cpu_s": {k: round(v, 3) for k, v in self.server_cpu_s.items()},
        }


class Meter:
    """Wraps a consumer's per-batch step: notes the first batch and the batch holding event N."""

    def __init__(self, target: int, server: ServerCpu):
        self.target = target
        self.server = server
        self.count = 0
        self.batches = 0
        self.started: Mark | None = None
        self.first: Mark | None = None
        self.last: Mark | None = None
        self.done = asyncio.Event()

    def start(self) -> None:
        server = self.server.snapshot()
        mark = Mark.now()
        self.started = Mark(mark.wall, mark.cpu, server)

    def attach(self, consumer: EventConsumer) -> None:
        inner = consumer._process

        async def process(batch: dict[TopicPartition, list[Any]]) -> None:
            if self.first is None:
                server = self.server.snapshot()
                mark = Mark.now()
                self.first = Mark(mark.wall, mark.cpu, server)
            await inner(batch)
            self.batches += 1
            self.count += sum(len(m) for m in batch.values())
            if self.count >= self.target and self.last is None:
                mark = Mark.now()
                self.last = Mark(mark.wall, mark.cpu, self.server.snapshot())
                self.done.set()

        consumer._process = process  # type: ignore[method-assign]

    def window(self) -> Window:
        assert self.started and self.first and self.last
        return _window(self.count, self.started, self.first, self.last, self.batches)


def _window(events: int, started: Mark, first: Mark, last: Mark, batches: int) -> Window:
    server = {
        k: last.server[k] - first.server[k]
        for k in (last.server or {})
        if first.server and k in first.server
    }
    return Window(
        events=events,
        wall_s=last.wall - first.wall,
        cpu_s=last.cpu - first.cpu,
        startup_wall_s=first.wall - started.wall,
        batches=batches,
        server_cpu_s=server,
    )


# ------------------------------------------------------------------ the baseline consumer


class ParseOnlyConsumer(EventConsumer):
    """The kit's loop without a database: getmany, parse and validate, commit offsets.

    `run`, `_parse`, `_commit_offsets` and `_report_lag` are the kit's own; only the
    transaction (`_apply`) and the watermark load on assignment are left out.
    """

    def __init__(self, *, settings: ServiceSettings, group_id: str,
                 topics: Any = None):
        super().__init__(
            settings=settings,
            engine=None,  # type: ignore[arg-type]  # never used: no database here
            topics=INPUT_TOPICS.values() if topics is None else topics,
            handlers={},
            store_factory=lambda conn: None,
            metrics=KitMetrics("bench_baseline"),
            group_id=group_id,
        )
        self.parsed = 0
        self.rejected = 0

    async def _process(self, batch: dict[TopicPartition, list[Any]]) -> None:
        started = time.perf_counter()
        records: list[RawRecord] = []
        for tp, messages in batch.items():
            self.metrics.consumed.labels(tp.topic).inc(len(messages))
            for m in messages:
                records.append(
                    RawRecord(tp.topic, tp.partition, m.offset, m.key, m.value or b"", m.timestamp)
                )
        parsed, rejected = self._parse(records)
        self.parsed += len(parsed)
        self.rejected += len(rejected)
        await self._handle(parsed)
        await self._commit_offsets(batch)
        self.batches_done += 1
        self.metrics.batch_seconds.observe(time.perf_counter() - started)
        self.on_committed()

    async def _handle(self, parsed: list[Any]) -> None:
        return None

    async def load_watermarks(self, partitions: Any) -> None:
        return None


class ScoreOnlyConsumer(ParseOnlyConsumer):
    """The scoring ceiling: the kit's loop (getmany, parse and validate, commit) plus, for
    every `profile.updated`, what the issue asks of each score and nothing else:
    `assess_facts` (probability, band, reasons) and its `churn.scored` published, awaited
    before the offsets are committed. No database: no state, no activity log, no inbox, no
    outbox, no history, no facts computed (the facts are the service's own, replayed in
    order). Any implementation of the scoring service on this kit does at least this much
    per score, so its throughput bounds the service's from above."""

    def __init__(self, *, settings: ServiceSettings, group_id: str, topics: Any,
                 model: Any, facts: list[dict[str, float]], producer: AIOKafkaProducer):
        super().__init__(settings=settings, group_id=group_id, topics=topics)
        self.model = model
        self.facts = facts
        self.producer = producer
        self.scored = 0
        self.output = settings.topic(OUTPUT_TOPICS["churn_scores"])

    async def _handle(self, parsed: list[Any]) -> None:
        from services.scoring.handlers import churn_scored
        from services.scoring.model import assess_facts

        s = self.settings
        cuts, top = s.band_cuts, s.top_reasons  # type: ignore[attr-defined]
        futures = []
        for item in parsed:
            event = item.event
            if event.event_type != "profile.updated":
                continue
            facts = self.facts[self.scored % len(self.facts)]
            self.scored += 1
            a = assess_facts(self.model, facts, cuts, top)
            out = churn_scored(s, event.customer_id, a, event.occurred_at,
                               event_id=derived_event_id("churn.scored", event.event_id),
                               occurred_at=event.occurred_at, causation_id=event.event_id)
            futures.append(await self.producer.send(
                self.output, value=encode_event(out), key=event.customer_id.encode()))
        await asyncio.gather(*futures)


# ------------------------------------------------------------------ the run


@dataclass
class Namespace:
    prefix: str
    bootstrap: str
    database_url: str
    partitions: int

    def settings(self, service: str, **overrides: Any) -> ServiceSettings:
        from tenure_cli.services import settings_class

        values: dict[str, Any] = {
            "kafka_bootstrap": self.bootstrap,
            "database_url": self.database_url,
            "topic_prefix": f"{self.prefix}.",
            "schema_prefix": f"{self.prefix}_",
            "partitions": self.partitions,
            **overrides,
        }
        return settings_class(service)(**values)  # type: ignore[no-any-return]


async def _publish(ns: Namespace, messages: list[tuple[str, bytes, bytes]]) -> dict[str, Any]:
    producer = AIOKafkaProducer(
        bootstrap_servers=ns.bootstrap,
        client_id="tenure-bench",
        enable_idempotence=True,
        acks="all",
        linger_ms=10,
        max_batch_size=512 * 1024,
        max_request_size=5 * 1024 * 1024,
    )
    await producer.start()
    try:
        # Warm the metadata of every topic so the timed loop only sends.
        for topic in {t for t, _, _ in messages}:
            await producer.partitions_for(topic)
        begin = Mark.now()
        futures = []
        for topic, key, value in messages:
            futures.append(await producer.send(topic, value, key=key))
        await asyncio.gather(*futures)
        end = Mark.now()
    finally:
        await producer.stop()
    seconds = end.wall - begin.wall
    size = sum(len(v) for _, _, v in messages)
    return {
        "events": len(messages),
        "wall_s": round(seconds, 3),
        "cpu_s": round(end.cpu - begin.cpu, 3),
        "events_per_s": round(len(messages) / seconds, 1),
        "bytes": size,
        "mb_per_s": round(size / seconds / 1e6, 2),
        "mean_event_bytes": round(size / len(messages), 1),
    }


async def _await_leaders(ns: Namespace, topics: list[str], timeout: float) -> None:
    """New topics take a moment to elect leaders; wait so no phase times the election."""
    consumer = AIOKafkaConsumer(bootstrap_servers=ns.bootstrap, group_id=None)
    await consumer.start()
    try:
        parts = [TopicPartition(t, p) for t in topics for p in range(ns.partitions)]
        deadline = time.monotonic() + timeout
        while True:
            try:
                await consumer.end_offsets(parts)
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                await consumer._client.force_metadata_update()
                await asyncio.sleep(0.2)
    finally:
        await consumer.stop()


async def _baseline(
    ns: Namespace, n: int, server: ServerCpu, timeout: float, runs: int
) -> dict[str, Any]:
    """The kit's loop without a database, `runs` times (a fresh group each); the median run."""
    settings = ns.settings("profile")
    results: list[dict[str, Any]] = []
    for i in range(runs):
        consumer = ParseOnlyConsumer(settings=settings, group_id=_baseline_group(ns, i))
        result = (await _metered(consumer, n, server, timeout, "baseline")).as_dict()
        result.update(parsed=consumer.parsed, rejected=consumer.rejected)
        results.append(result)
    ranked = sorted(results, key=lambda r: r["events_per_s"])
    median = dict(ranked[len(ranked) // 2])
    median["runs"] = runs
    median["runs_events_per_s"] = [r["events_per_s"] for r in results]
    return median


async def _metered(
    consumer: EventConsumer, n: int, server: ServerCpu, timeout: float, what: str
) -> Window:
    """Run `consumer` until it has committed `n` events; its measured window."""
    meter = Meter(n, server)
    meter.attach(consumer)
    meter.start()
    task = asyncio.create_task(consumer.run(), name=f"bench-{what.replace(' ', '-')}")
    try:
        await _wait(meter, task, timeout, what)
    finally:
        consumer.stop()
        await _finish(task)
    return meter.window()


def _baseline_group(ns: Namespace, i: int) -> str:
    return f"{ns.prefix}.bench-baseline-{i}"


async def _ingest(
    ns: Namespace, n: int, server: ServerCpu, check: AsyncEngine, timeout: float
) -> dict[str, Any]:
    from services.profile.bootstrap import bootstrap

    settings = ns.settings("profile")
    runtime = bootstrap(settings)
    assert len(runtime.consumers) == 1 and runtime.relay is not None
    meter = Meter(n, server)
    meter.attach(runtime.consumers[0])
    meter.start()
    await runtime.start()
    relay_done: Mark | None = None
    try:
        consumer_task = runtime._tasks[0]
        await _wait(meter, consumer_task, timeout, "profile ingest")
        try:
            relay_done = await _outbox_drained(check, server, timeout, "profile ingest")
        except TimeoutError as exc:
            log.warning("%s", exc)
    finally:
        await runtime.stop()

    metrics = runtime.metrics
    window = meter.window()
    result = window.as_dict()
    result["processed"] = {
        s.labels["event_type"]: int(s.value) for s in _samples(metrics.processed)
    }
    result["duplicates"] = int(sum(s.value for s in _samples(metrics.duplicates)))
    result["dead_lettered"] = int(sum(s.value for s in _samples(metrics.dead_lettered)))
    result["batch_max_records"] = settings.batch_max_records
    batch_hist = {s.name: s.value for s in metrics.batch_seconds.collect()[0].samples}
    if batch_hist.get("tenure_profile_batch_seconds_count"):
        result["mean_batch_ms"] = round(
            1000
            * batch_hist["tenure_profile_batch_seconds_sum"]
            / batch_hist["tenure_profile_batch_seconds_count"],
            2,
        )
    if relay_done is not None and meter.first is not None:
        relay = _window(n, meter.started or meter.first, meter.first, relay_done, 0)
        result["until_relay_drained"] = {
            "wall_s": round(relay.wall_s, 3),
            "cpu_s": round(relay.cpu_s, 3),
            "events_per_s": round(relay.events_per_s, 1),
            "cpu_s_per_10k_events": round(relay.cpu_s_per_10k, 3),
            "relay_lag_after_ingest_s": round(relay_done.wall - (meter.last or relay_done).wall, 3),
            "profile_updated_published": runtime.relay.published,
            "server_cpu_s": {k: round(v, 3) for k, v in relay.server_cpu_s.items()},
        }
    return result


def _samples(counter: Any) -> list[Any]:
    return [s for metric in counter.collect() for s in metric.samples if s.name.endswith("_total")]


async def _wait(meter: Meter, task: asyncio.Task[Any], timeout: float, what: str) -> None:
    """Until the meter has seen all events; a progress line every 10 s."""
    deadline = time.monotonic() + timeout
    done_wait = asyncio.create_task(meter.done.wait())
    finished: set[asyncio.Task[Any]] = set()
    try:
        while not finished and time.monotonic() < deadline:
            finished, _ = await asyncio.wait(
                {done_wait, task},
                timeout=min(10.0, max(deadline - time.monotonic(), 0.0)),
                return_when=asyncio.FIRST_COMPLETED,
            )
            if not finished:
                say(f"  ... {meter.count:,} of {meter.target:,} events")
    finally:
        done_wait.cancel()
    if not meter.done.is_set():
        if task in finished and task.exception() is not None:
            raise RuntimeError(f"{what}: consumer failed") from task.exception()
        raise TimeoutError(f"{what}: {meter.count} of {meter.target} events after {timeout:.0f}s")


async def _outbox_drained(
    check: AsyncEngine, server: ServerCpu, timeout: float, what: str
) -> Mark:
    """The moment the service's outbox is empty (every output published), with the servers'
    CPU then; TimeoutError if it still holds rows after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        async with check.connect() as conn:
            backlog = await conn.scalar(sa.text("SELECT count(*) FROM outbox"))
        if backlog == 0:
            mark = Mark.now()
            return Mark(mark.wall, mark.cpu, server.snapshot())
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: outbox still holds {backlog} rows after {timeout}s")
        await asyncio.sleep(0.02)


async def _finish(task: asyncio.Task[Any]) -> None:
    try:
        await asyncio.wait_for(task, 15)
    except TimeoutError:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
    except Exception:  # noqa: BLE001 - the figures are taken; a failing stop is not ours
        pass


async def _verify(check: AsyncEngine) -> dict[str, int]:
    async with check.connect() as conn:
        return {
            "inbox_rows": int(await conn.scalar(sa.text("SELECT count(*) FROM inbox"))),
            "customers": int(await conn.scalar(sa.text("SELECT count(*) FROM customers"))),
            "registered_customers": int(
                await conn.scalar(sa.text("SELECT count(*) FROM customers WHERE registered"))
            ),
            "accounts": int(await conn.scalar(sa.text("SELECT count(*) FROM accounts"))),
            "transactions_counted": int(
                await conn.scalar(
                    sa.text("SELECT coalesce(sum(transaction_count), 0) FROM customers")
                )
            ),
            "outbox_rows_left": int(await conn.scalar(sa.text("SELECT count(*) FROM outbox"))),
        }


async def _drop(ns: Namespace, settings: ServiceSettings, runs: int) -> None:
    engine = create_async_engine(ns.database_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{settings.db_schema}" CASCADE'))
    finally:
        await engine.dispose()
    admin = AIOKafkaAdminClient(bootstrap_servers=ns.bootstrap, request_timeout_ms=30_000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        ours = [t for t in existing if t.startswith(f"{ns.prefix}.")]
        if ours:
            await admin.delete_topics(ours, timeout_ms=30_000)
        for group in [_baseline_group(ns, i) for i in range(runs)] + [settings.consumer_group]:
            with contextlib.suppress(Exception):  # empty groups also expire on their own
                await _delete_group(admin, group)
    finally:
        await admin.close()


async def _delete_group(admin: AIOKafkaAdminClient, group: str) -> None:
    """DeleteGroups (this aiokafka's admin client has no call for it)."""
    from aiokafka.protocol.admin import DeleteGroupsRequest

    node = await admin.find_coordinator(group)
    await admin._send_request_to_node(node, DeleteGroupsRequest([group]))


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from shared.db import migrate
    from shared.topics import ensure_topics
    from tenure_cli.services import migrations_dir

    platform_settings = PlatformSettings()
    ns = Namespace(
        prefix=f"bench{uuid.uuid4().hex[:10]}",
        bootstrap=platform_settings.kafka_bootstrap,
        database_url=platform_settings.database_url,
        partitions=args.partitions or platform_settings.partitions,
    )
    settings = ns.settings("profile")
    say(f"namespace {ns.prefix} ({ns.partitions} partitions) on {ns.bootstrap}")

    started = time.perf_counter()
    events = MixBuilder(args.seed, args.customers).build(args.events)
    messages = [
        (settings.topic(TOPIC_OF[e.event_type]), e.customer_id.encode(), encode_event(e))
        for e in events
    ]
    counts = mix_counts(args.events, args.customers)
    del events
    say(f"built {len(messages)} events in {time.perf_counter() - started:.1f}s")

    check = create_async_engine(
        ns.database_url,
        pool_size=1,
        connect_args={"server_settings": {"search_path": settings.db_schema}},
    )
    result: dict[str, Any] = {}
    try:
        await ensure_topics(ns_platform(ns), ALL_TOPICS)
        await _await_leaders(ns, [settings.topic(t) for t in ALL_TOPICS], args.timeout)
        await migrate(settings, migrations_dir("profile"))
        server = ServerCpu()
        await server.discover(check, ns.bootstrap)

        say("publishing")
        publish = await _publish(ns, messages)
        del messages
        say(f"  {publish['events_per_s']:,.0f} events/s")

        say("baseline: kit loop, parse + validate + commit, no database")
        baseline = await _baseline(ns, args.events, server, args.timeout, args.baseline_runs)
        runs = ", ".join(f"{v:,.0f}" for v in baseline["runs_events_per_s"])
        say(f"  {baseline['events_per_s']:,.0f} events/s (median of {runs})")

        say("profile ingest: the real runtime into PostgreSQL, then the outbox relay")
        ingest = await _ingest(ns, args.events, server, check, args.timeout)
        ingest["verify"] = await _verify(check)
        say(f"  {ingest['events_per_s']:,.0f} events/s")

        ratio = ingest["events_per_s"] / baseline["events_per_s"]
        result = {
            "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
            "git": _git(),
            "host": {
                "cpu_count": os.cpu_count(),
                "platform": platform.platform(),
                "python": platform.python_version(),
                "event_loop": _loop_name(),
            },
            "config": {
                "events": args.events,
                "customers": args.customers,
                "seed": args.seed,
                "partitions": ns.partitions,
                "batch_max_records": settings.batch_max_records,
                "batch_timeout_ms": settings.batch_timeout_ms,
                "baseline_runs": args.baseline_runs,
                "namespace": ns.prefix,
            },
            "mix": [
                {"event_type": t, "share": share, "count": counts[t], "topic": topic}
                for t, share, topic in MIX
            ],
            "mix_notes": MIX_NOTES,
            "server_pids_found": sorted(server.pids),
            "publish": publish,
            "baseline": baseline,
            "profile_ingest": ingest,
            "ratio_ingest_to_baseline": round(ratio, 3),
            "target_ratio": TARGET_RATIO,
            "meets_target": ratio >= TARGET_RATIO,
        }
    finally:
        await check.dispose()
        if args.keep:
            say(f"kept namespace {ns.prefix} (topics {ns.prefix}.*, schema {settings.db_schema})")
        else:
            try:
                await _drop(ns, settings, args.baseline_runs)
            except Exception as exc:  # noqa: BLE001
                say(f"could not drop namespace {ns.prefix}: {type(exc).__name__}: {exc}")
    return result


def ns_platform(ns: Namespace) -> PlatformSettings:
    return PlatformSettings(
        kafka_bootstrap=ns.bootstrap,
        database_url=ns.database_url,
        topic_prefix=f"{ns.prefix}.",
        schema_prefix=f"{ns.prefix}_",
        partitions=ns.partitions,
    )


# ------------------------------------------------------------------ shared by the new sections


def _pid_cpu(pid: int) -> float | None:
    """User + system CPU seconds of one process (not its children)."""
    stat = _proc_stat(pid)
    if stat is None:
        return None
    return (stat[1] + stat[2]) / (os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100)


def _host_cpu() -> tuple[float, float]:
    """(busy, total) clock ticks of the whole host, from the first line of /proc/stat."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        fields = [float(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)
        total = sum(fields[:8])
        return total - idle, total
    return 0.0, 0.0


def _percentiles(values: list[float]) -> dict[str, Any]:
    """count, p50, p95, p99, max and mean of latencies in seconds, reported in milliseconds
    (nearest rank).

    >>> _percentiles([0.001 * i for i in range(1, 101)])["p99_ms"]
    99.0
    >>> _percentiles([])["count"]
    0
    """
    if not values:
        return {"count": 0, "p50_ms": None, "p95_ms": None, "p99_ms": None, "max_ms": None,
                "mean_ms": None}
    ordered = sorted(values)
    n = len(ordered)

    def rank(q: float) -> float:
        return ordered[min(n - 1, max(0, int(-(-q * n // 1)) - 1))]

    return {
        "count": n,
        "p50_ms": round(rank(0.50) * 1000, 1),
        "p95_ms": round(rank(0.95) * 1000, 1),
        "p99_ms": round(rank(0.99) * 1000, 1),
        "max_ms": round(ordered[-1] * 1000, 1),
        "mean_ms": round(sum(ordered) / n * 1000, 1),
    }


def _service_env(ns: Namespace) -> dict[str, str]:
    """What a service process needs to live in the namespace (and to stay quiet)."""
    from tenure_cli.services import SERVICE_NAMES

    env = {
        "TENURE_KAFKA_BOOTSTRAP": ns.bootstrap,
        "TENURE_DATABASE_URL": ns.database_url,
        "TENURE_TOPIC_PREFIX": f"{ns.prefix}.",
        "TENURE_SCHEMA_PREFIX": f"{ns.prefix}_",
        "TENURE_PARTITIONS": str(ns.partitions),
    }
    for name in SERVICE_NAMES:
        env[f"TENURE_{name.upper()}_LOG_LEVEL"] = "WARNING"
        # One client with one token measures the service, not the per-token rate limit.
        env[f"TENURE_{name.upper()}_RATE_LIMIT_PER_SECOND"] = "0"
    return env


def _log_dir(ns: Namespace) -> Path:
    import tempfile

    return Path(tempfile.gettempdir()) / "tenure-bench" / ns.prefix


async def _drop_namespace(ns: Namespace, services: list[str], groups: list[str]) -> None:
    """Drop the namespace's schemas, topics and consumer groups (each step on its own)."""
    problems: list[str] = []
    engine = create_async_engine(ns.database_url)
    try:
        async with engine.begin() as conn:
            for service in services:
                schema = ns.settings(service).db_schema
                await conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    except Exception as exc:  # noqa: BLE001 - try the topics anyway, then say so
        problems.append(f"schemas: {type(exc).__name__}: {exc}")
    finally:
        await engine.dispose()
    admin = AIOKafkaAdminClient(bootstrap_servers=ns.bootstrap, request_timeout_ms=30_000)
    try:
        await admin.start()
        existing = set(await admin.list_topics())
        ours = [t for t in existing if t.startswith(f"{ns.prefix}.")]
        if ours:
            await admin.delete_topics(ours, timeout_ms=30_000)
        for group in groups:
            with contextlib.suppress(Exception):  # empty groups also expire on their own
                await _delete_group(admin, group)
    except Exception as exc:  # noqa: BLE001
        problems.append(f"topics: {type(exc).__name__}: {exc}")
    finally:
        with contextlib.suppress(Exception):
            await admin.close()
    if problems:
        raise RuntimeError("; ".join(problems))


async def _prepare_namespace(ns: Namespace, services: list[str], timeout: float) -> None:
    from shared.db import migrate
    from shared.topics import ensure_topics
    from tenure_cli.services import migrations_dir

    await ensure_topics(ns_platform(ns), ALL_TOPICS)
    await _await_leaders(ns, [ns_platform(ns).topic(t) for t in ALL_TOPICS], timeout)
    for service in services:
        await migrate(ns.settings(service), migrations_dir(service))


def _new_namespace(kind: str, partitions: int | None) -> Namespace:
    platform_settings = PlatformSettings()
    return Namespace(
        prefix=f"bench{kind}{uuid.uuid4().hex[:8]}",
        bootstrap=platform_settings.kafka_bootstrap,
        database_url=platform_settings.database_url,
        partitions=partitions or platform_settings.partitions,
    )


def _stamp() -> dict[str, Any]:
    return {"timestamp": datetime.now(UTC).isoformat(timespec="seconds"), "git": _git()}


# ------------------------------------------------------------------ end-to-end latency

FIRST_TXN_DELAY_S = 1.0  # a new customer's first transaction follows its registration by this
KEPT_UP_DRAIN_S = 5.0  # kept up: the run's last output arrived within this after publishing
LAG_SAMPLE_S = 1.0
IDLE_WINDOW_S = 5.0
LATENCY_OUTPUTS = {
    "profile": OUTPUT_TOPICS["profile_updates"],
    "churn": OUTPUT_TOPICS["churn_scores"],
    "stage": OUTPUT_TOPICS["lifecycle_stages"],
}


class ClockedBuilder(MixBuilder):
    """The same event makers, with event times set by the caller (`at`): wall-clock plans."""

    def __init__(self, seed: int, customers: int):
        super().__init__(seed, customers)
        self.at = datetime.now(UTC)

    def _next(self) -> tuple[uuid.UUID, datetime]:
        self.seq += 1
        return uuid.UUID(int=self.rng.getrandbits(128), version=4), self.at


def _new_customer(cid: str) -> _Customer:
    c = _Customer(cid)
    c.accounts.append((f"{cid}-CUR", "current"))
    c.balances[f"{cid}-CUR"] = Decimal("0.00")
    return c


@dataclass
class Plan:
    """One phase's events, in publish order, with when each is due (seconds after start)."""

    at: list[float] = field(default_factory=list)
    messages: list[tuple[str, bytes, bytes]] = field(default_factory=list)
    event_ids: list[str] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)
    first_txn: dict[str, str] = field(default_factory=dict)  # new customer -> its event id

    def add(self, at: float, kind: str, event: EnvelopeBase, settings: PlatformSettings) -> None:
        from shared.settings import topic_of

        self.at.append(at)
        self.messages.append(
            (settings.topic(topic_of(event.event_type)), event.customer_id.encode(),
             encode_event(event))
        )
        self.event_ids.append(str(event.event_id))
        self.kinds.append(kind)


def build_plan(
    builder: ClockedBuilder, settings: PlatformSettings, rate: int, seconds: float,
    new_share: float, tag: str,
) -> Plan:
    """`rate` events/s for `seconds`: transactions of existing customers, plus new customers
    (a share `new_share` of the events: half registrations, half their first transaction
    FIRST_TXN_DELAY_S later), evenly spread.

    >>> b = ClockedBuilder(1, 50)
    >>> p = build_plan(b, PlatformSettings(), 100, 2.0, 0.1, "t")
    >>> len(p.at), p.kinds.count("registration"), p.kinds.count("first_txn"), len(p.first_txn)
    (200, 10, 10, 10)
    >>> p.at == sorted(p.at) and p.at[-1] < 2.0
    True
    """
    n = max(1, round(rate * seconds))
    n_new = int(n * new_share / 2)
    n_main = n - 2 * n_new
    delay = min(FIRST_TXN_DELAY_S, seconds / 4)
    span = seconds - delay
    slots: list[tuple[float, int, str, int]] = []
    slots += [(k * seconds / n_main, 1, "txn", k) for k in range(n_main)]
    for j in range(n_new):
        t = (j + 0.5) * span / n_new
        slots.append((t, 0, "registration", j))
        slots.append((t + delay, 1, "first_txn", j))
    slots.sort()
    new = [_new_customer(f"BN{tag}{j:06d}") for j in range(n_new)]
    start = datetime.now(UTC)
    plan = Plan()
    for at, _, kind, j in slots:
        builder.at = start + timedelta(seconds=at)
        if kind == "txn":
            event = builder.transaction(builder.rng.choice(builder.customers))
        elif kind == "registration":
            event = builder.registered(new[j])
        else:
            event = builder.transaction(new[j])
            plan.first_txn[new[j].cid] = str(event.event_id)
        plan.add(at, kind, event, settings)
    return plan


class OutputCollector:
    """Reads profile.updated, churn.scored and stage.changed as they arrive, with the time.

    Only what linking needs is decoded (orjson, no model validation), so the collector costs
    little next to the publisher in the same process.
    """

    def __init__(self, ns: Namespace):
        self.ns = ns
        platform_settings = ns_platform(ns)
        self.kind_of = {platform_settings.topic(t): k for k, t in LATENCY_OUTPUTS.items()}
        self.partitions = [
            TopicPartition(t, p) for t in self.kind_of for p in range(ns.partitions)
        ]
        self.profile: dict[str, tuple[str, float]] = {}  # profile.updated id -> (cause, t)
        self.churn: list[tuple[str, float]] = []  # (profile.updated id, t)
        self.stage: list[tuple[str, str, str, float]] = []  # (customer, to_stage, cause, t)
        self.position: dict[TopicPartition, int] = {}
        self.consumer: AIOKafkaConsumer | None = None
        self.task: asyncio.Task[Any] | None = None
        self.failed: BaseException | None = None

    async def start(self) -> None:
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=self.ns.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            fetch_max_wait_ms=50,
            max_partition_fetch_bytes=4 * 1024 * 1024,
            client_id="tenure-bench-collector",
        )
        await self.consumer.start()
        self.consumer.assign(self.partitions)
        await self.consumer.seek_to_beginning(*self.partitions)
        self.task = asyncio.create_task(self._run(), name="bench-collector")

    async def _run(self) -> None:
        import orjson

        assert self.consumer is not None
        try:
            while True:
                batch = await self.consumer.getmany(timeout_ms=100, max_records=10_000)
                now = time.perf_counter()
                for tp, messages in batch.items():
                    kind = self.kind_of[tp.topic]
                    for m in messages:
                        doc = orjson.loads(m.value)
                        if kind == "profile":
                            self.profile[doc["event_id"]] = (doc.get("causation_id"), now)
                        elif kind == "churn":
                            self.churn.append((doc.get("causation_id"), now))
                        else:
                            self.stage.append(
                                (doc["customer_id"], doc["payload"]["to"],
                                 doc.get("causation_id"), now)
                            )
                    if messages:
                        self.position[tp] = messages[-1].offset + 1
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # noqa: BLE001 - reported by the phase that waits
            self.failed = exc
            raise

    def caught_up(self, ends: dict[TopicPartition, int]) -> bool:
        return all(self.position.get(tp, 0) >= end for tp, end in ends.items())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task
        if self.consumer is not None:
            with contextlib.suppress(Exception):
                await self.consumer.stop()


class LagProbe:
    """Consumer-group lag per service and outbox rows per service, on long-lived clients."""

    def __init__(self, ns: Namespace, services: list[str]):
        import importlib

        self.ns = ns
        self.services = services
        platform_settings = ns_platform(ns)
        self.parts = {
            s: [
                TopicPartition(platform_settings.topic(t), p)
                for t in importlib.import_module(f"services.{s}.consumer").TOPICS
                for p in range(ns.partitions)
            ]
            for s in services
        }
        self.groups = {s: ns.settings(s).consumer_group for s in services}
        self.schemas = {s: ns.settings(s).db_schema for s in services}
        self.admin = AIOKafkaAdminClient(bootstrap_servers=ns.bootstrap, request_timeout_ms=30_000)
        self.probe = AIOKafkaConsumer(bootstrap_servers=ns.bootstrap, group_id=None)
        self.engine = create_async_engine(ns.database_url, pool_size=1)

    async def start(self) -> None:
        await self.admin.start()
        await self.probe.start()

    async def stop(self) -> None:
        with contextlib.suppress(Exception):
            await self.probe.stop()
        with contextlib.suppress(Exception):
            await self.admin.close()
        await self.engine.dispose()

    async def end_offsets(self, parts: list[TopicPartition]) -> dict[TopicPartition, int]:
        return dict(await self.probe.end_offsets(parts))

    async def lags(self) -> dict[str, int]:
        everything = sorted({tp for parts in self.parts.values() for tp in parts})
        ends = await self.end_offsets(everything)
        out: dict[str, int] = {}
        for s in self.services:
            committed = await self.admin.list_consumer_group_offsets(self.groups[s])
            out[s] = sum(
                max(ends[tp] - (committed[tp].offset if tp in committed else 0), 0)
                for tp in self.parts[s]
            )
        return out

    async def outboxes(self) -> dict[str, int]:
        counts = ", ".join(
            f'(SELECT count(*) FROM "{self.schemas[s]}".outbox) AS "{s}"' for s in self.services
        )
        async with self.engine.connect() as conn:
            row = (await conn.execute(sa.text(f"SELECT {counts}"))).one()
        return {s: int(row._mapping[s]) for s in self.services}


class CpuMeter:
    """CPU seconds of the service processes, the broker, PostgreSQL, this process, the host."""

    def __init__(self, pids: dict[str, int], server: ServerCpu):
        self.pids = pids
        self.server = server

    def snapshot(self) -> dict[str, Any]:
        procs = {name: _pid_cpu(pid) for name, pid in self.pids.items()}
        busy, total = _host_cpu()
        return {
            "wall": time.perf_counter(),
            "procs": {k: v for k, v in procs.items() if v is not None},
            "server": self.server.snapshot(),
            "bench": time.process_time(),
            "host": (busy, total),
        }

    @staticmethod
    def delta(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
        wall = b["wall"] - a["wall"]
        cpu = {k: b["procs"][k] - a["procs"][k] for k in b["procs"] if k in a["procs"]}
        cpu.update({k: b["server"][k] - a["server"][k] for k in b["server"] if k in a["server"]})
        cpu["bench"] = b["bench"] - a["bench"]
        busy = b["host"][0] - a["host"][0]
        total = b["host"][1] - a["host"][1]
        host_busy = busy / total if total > 0 else None
        others = None
        if host_busy is not None and wall > 0:
            # Host CPU not spent by the processes above: other tenants of the machine.
            others = max(host_busy * (os.cpu_count() or 1) - sum(cpu.values()) / wall, 0.0)
        return {
            "wall_s": round(wall, 2),
            "cpu_s": {k: round(v, 2) for k, v in cpu.items()},
            # Share of one core each process kept busy over the window.
            "cores": {k: round(v / wall, 2) for k, v in cpu.items()} if wall > 0 else {},
            "other_processes_cores": None if others is None else round(others, 2),
            "host_busy": None if host_busy is None else round(host_busy, 3),
        }


async def _paced_publish(producer: AIOKafkaProducer, plan: Plan) -> dict[str, Any]:
    """Send each event when it is due; returns send times (perf_counter) and pacing figures.

    An event's publish time is when it was handed to the producer (before its linger and
    the broker's acknowledgement), so latencies include the publisher's own batching.
    """
    n = len(plan.at)
    sent_at = [0.0] * n
    futures = []
    late_max = 0.0
    i = 0
    start = time.perf_counter()
    while i < n:
        now = time.perf_counter() - start
        while i < n and plan.at[i] <= now:
            topic, key, value = plan.messages[i]
            t = time.perf_counter()
            futures.append(await producer.send(topic, value, key=key))
            sent_at[i] = t
            late_max = max(late_max, t - start - plan.at[i])
            i += 1
        if i < n:
            wait = plan.at[i] - (time.perf_counter() - start)
            await asyncio.sleep(wait if wait > 0.001 else 0)
    end = time.perf_counter()
    await asyncio.gather(*futures)
    acked = time.perf_counter()
    seconds = end - start
    return {
        "sent_at": sent_at,
        "start": start,
        "end": end,
        "events": n,
        "wall_s": round(seconds, 3),
        "events_per_s": round(n / seconds, 1) if seconds > 0 else None,
        "max_behind_schedule_ms": round(late_max * 1000, 1),
        "last_ack_after_s": round(acked - end, 3),
    }


async def _bulk_publish(producer: AIOKafkaProducer, messages: list[tuple[str, bytes, bytes]]) -> None:
    futures = [await producer.send(t, v, key=k) for t, k, v in messages]
    await asyncio.gather(*futures)


def _latency_producer(ns: Namespace) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=ns.bootstrap,
        client_id="tenure-bench-paced",
        enable_idempotence=True,
        acks="all",
        linger_ms=5,
        max_batch_size=256 * 1024,
        max_request_size=5 * 1024 * 1024,
    )


async def _wait_drained(
    probe: LagProbe, collector: OutputCollector, timeout: float, since: float
) -> dict[str, Any]:
    """Until every group is at the end of its topics, every outbox is empty and the collector
    has read every output, twice in a row; reports when that was first seen."""
    outputs = collector.partitions
    deadline = time.perf_counter() + timeout
    calm_since: float | None = None
    lags: dict[str, int] = {}
    outbox: dict[str, int] = {}
    last_note = time.perf_counter()
    while True:
        if collector.failed is not None:
            failure = collector.failed
            raise RuntimeError(
                f"the output collector failed: {type(failure).__name__}: {failure}"
            ) from failure
        checked = time.perf_counter()
        lags = await probe.lags()
        outbox = await probe.outboxes()
        calm = not any(lags.values()) and not any(outbox.values())
        if calm:
            calm = collector.caught_up(await probe.end_offsets(outputs))
        if calm:
            if calm_since is not None:
                return {"drained": True, "caught_up_s": round(calm_since - since, 2)}
            calm_since = checked
        else:
            calm_since = None
        if time.perf_counter() > deadline:
            return {"drained": False, "caught_up_s": None, "lag_left": lags,
                    "outbox_left": outbox, "gave_up_after_s": round(time.perf_counter() - since, 2)}
        if time.perf_counter() - last_note > 10:
            last_note = time.perf_counter()
            say(f"  ... draining: lag {lags}, outbox {outbox}")
        await asyncio.sleep(0.25)


async def _sample_lags(probe: LagProbe, start: float, out: list[dict[str, Any]]) -> None:
    """Consumer lag per service every LAG_SAMPLE_S while a phase publishes."""
    while True:
        with contextlib.suppress(Exception):
            lags = await probe.lags()
            out.append({"t_s": round(time.perf_counter() - start, 2), **lags})
        await asyncio.sleep(LAG_SAMPLE_S)


def _link(plan: Plan, publish: dict[str, Any], collector: OutputCollector) -> dict[str, Any]:
    """Outputs to the inputs that caused them; latencies from each input's publish time."""
    sent = dict(zip(plan.event_ids, publish["sent_at"], strict=True))
    start, end = publish["start"], publish["end"]
    profile_lat: list[float] = []
    churn_lat: list[tuple[float, float]] = []  # (input's publish offset, latency)
    churn_hop: list[float] = []
    last_output = 0.0
    for cause, t in collector.profile.values():
        if cause in sent:
            profile_lat.append(t - sent[cause])
            last_output = max(last_output, t)
    churn_inputs: set[str] = set()
    for profile_id, t in collector.churn:
        hit = collector.profile.get(profile_id)
        if hit is None or hit[0] not in sent:
            continue
        churn_inputs.add(hit[0])
        churn_lat.append((sent[hit[0]] - start, t - sent[hit[0]]))
        churn_hop.append(t - hit[1])
        last_output = max(last_output, t)
    # The first onboarding stage.changed of each new customer (a re-published copy or a
    # later re-entry into onboarding is not a second measurement).
    onboarded: dict[str, tuple[float, str]] = {}
    for customer, to_stage, cause, t in collector.stage:
        if to_stage != "onboarding" or customer not in plan.first_txn:
            continue
        if customer not in onboarded or t < onboarded[customer][0]:
            onboarded[customer] = (t, cause)
        last_output = max(last_output, t)
    stage_lat: list[float] = []
    linked_to_first_txn = 0
    for customer, (t, cause) in onboarded.items():
        first = plan.first_txn[customer]
        stage_lat.append(t - sent[first])
        hit = collector.profile.get(cause)
        linked_to_first_txn += hit is not None and hit[0] == first
    seconds = max(end - start, 1e-9)
    by_quarter: list[list[float]] = [[], [], [], []]
    for at, v in churn_lat:
        by_quarter[min(3, max(0, int(at / seconds * 4)))].append(v)
    quarters = [_percentiles(q)["p50_ms"] for q in by_quarter]
    kinds = {k: plan.kinds.count(k) for k in ("txn", "registration", "first_txn")}
    return {
        "published": kinds,
        "profile_updated": {**_percentiles(profile_lat), "inputs_measured": len(profile_lat)},
        "churn_scored": {
            **_percentiles([v for _, v in churn_lat]),
            "inputs_measured": len(churn_inputs),
            "inputs_published": len(plan.at),
            "p50_ms_by_quarter": quarters,
            "hop_from_profile_updated": _percentiles(churn_hop),
        },
        "stage_changed_onboarding": {
            **_percentiles(stage_lat),
            "new_customers": len(plan.first_txn),
            "caused_by_first_txn": linked_to_first_txn,
        },
        "drain_s": round(max(last_output - end, 0.0), 2) if last_output else None,
    }


async def _latency_phase(
    rate: int, plan: Plan, probe: LagProbe, collector: OutputCollector, cpu: CpuMeter,
    producer: AIOKafkaProducer, drain_timeout: float,
) -> dict[str, Any]:
    say(f"  {rate:,} events/s for {plan.at[-1]:.0f}s: {len(plan.at):,} events")
    before = cpu.snapshot()
    samples: list[dict[str, Any]] = []
    sampler = asyncio.create_task(_sample_lags(probe, time.perf_counter(), samples))
    try:
        publish = await _paced_publish(producer, plan)
        mid = cpu.snapshot()
    finally:
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
    at_end = {"lag": await probe.lags(), "outbox": await probe.outboxes()}
    say(f"    published at {publish['events_per_s']:,.0f}/s; at the end: lag {at_end['lag']}, "
        f"outbox {at_end['outbox']}")
    drained = await _wait_drained(probe, collector, drain_timeout, publish["end"])
    after = cpu.snapshot()
    linked = _link(plan, publish, collector)
    drain_s = linked.pop("drain_s")
    # Kept up: every service (engagement too, whose outputs are not timed) had caught up
    # within KEPT_UP_DRAIN_S of the last publish.
    caught_up = drained.get("caught_up_s")
    kept_up = bool(drained["drained"] and caught_up is not None and caught_up <= KEPT_UP_DRAIN_S)
    result = {
        "target_events_per_s": rate,
        "publish": {k: v for k, v in publish.items() if k not in ("sent_at", "start", "end")},
        **linked,
        "at_publish_end": at_end,
        "max_lag_while_publishing": {
            s: max((x.get(s, 0) for x in samples), default=0) for s in probe.services
        },
        "lag_samples": samples,
        "drain": {**drained, "last_output_after_s": drain_s},
        "kept_up": kept_up,
        "resources": {
            "publishing": CpuMeter.delta(before, mid),
            "draining": CpuMeter.delta(mid, after),
            "phase": CpuMeter.delta(before, after),
        },
    }
    if not drained["drained"]:
        # How fast the backlog was shrinking while we waited: an estimate, labelled as such.
        estimate = {}
        for svc, left in drained["lag_left"].items():
            done = at_end["lag"].get(svc, 0) - left
            waited = drained["gave_up_after_s"]
            if left > 0:
                estimate[svc] = round(left / (done / waited), 0) if done > 0 else None
        result["drain"]["estimated_more_s_at_drain_rate"] = estimate
    c, s = result["churn_scored"], result["stage_changed_onboarding"]
    say(f"    churn.scored p50 {c['p50_ms']} / p99 {c['p99_ms']} ms ({c['count']:,} measured), "
        f"stage.changed p50 {s['p50_ms']} / p99 {s['p99_ms']} ms ({s['count']:,}); "
        f"last output {drain_s}s and all caught up "
        f"{str(caught_up) + 's' if caught_up is not None else 'not yet'} "
        "after publishing; "
        f"kept up: {kept_up}")
    return result


async def _readiness(services: list[Any], timeout: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=5) as client:
        for s in services:
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(f"{s.url}/readyz")).status_code == 200:
                        break
                if s.proc is not None and s.proc.poll() is not None:
                    raise RuntimeError(f"{s.service} exited: see {s.log_path}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{s.service} not ready after {timeout:.0f}s: {s.log_path}")
                await asyncio.sleep(0.2)


async def run_latency(args: argparse.Namespace) -> dict[str, Any]:
    from tenure_cli.procs import ServiceProcess
    from tenure_cli.services import SERVICE_NAMES

    services_names = list(SERVICE_NAMES)
    ns = _new_namespace("lat", args.partitions)
    settings = ns_platform(ns)
    say(f"end-to-end latency: namespace {ns.prefix}, four services as processes")
    logs = _log_dir(ns)
    env = _service_env(ns)
    procs = [ServiceProcess(n, env, logs / f"{n}.log") for n in services_names]
    probe = LagProbe(ns, services_names)
    collector = OutputCollector(ns)
    producer = _latency_producer(ns)
    started_clients = False
    failed = True
    try:
        await _prepare_namespace(ns, services_names, args.timeout)
        for p in procs:
            p.start(wait=False)
        for p in procs:
            p.wait()
        await _readiness(procs, args.timeout)
        await probe.start()
        await collector.start()
        await producer.start()
        started_clients = True
        for topic in ALL_TOPICS:
            await producer.partitions_for(settings.topic(topic))
        server = ServerCpu()
        await server.discover(probe.engine, ns.bootstrap)
        cpu = CpuMeter({p.service: p.proc.pid for p in procs if p.proc is not None}, server)

        # Warm-up: every existing customer registers, then makes a first transaction, so the
        # timed phases find customers known to every service (and in the onboarding stage).
        builder = ClockedBuilder(args.seed + 1, args.latency_customers)
        builder.at = datetime.now(UTC) - timedelta(hours=1)
        warm = [builder.registered(c) for c in builder.customers]
        builder.at = datetime.now(UTC) - timedelta(minutes=30)
        warm += [builder.transaction(c) for c in builder.customers]
        messages = [
            (settings.topic(TOPIC_OF[e.event_type]), e.customer_id.encode(), encode_event(e))
            for e in warm
        ]
        del warm
        say(f"  warm-up: {args.latency_customers:,} registrations and first transactions")
        began = time.perf_counter()
        await _bulk_publish(producer, messages)
        # Preparation, not a measurement: it may take as long as any phase (--timeout).
        warmed = await _wait_drained(probe, collector, args.timeout, time.perf_counter())
        if not warmed["drained"]:
            raise TimeoutError(f"warm-up did not drain in {args.timeout:.0f}s: {warmed}")
        warm_s = time.perf_counter() - began
        say(f"    drained in {warm_s:.1f}s")
        # What the four services cost with nothing to do (polling loops, relays, lag reports).
        before = cpu.snapshot()
        await asyncio.sleep(IDLE_WINDOW_S)
        idle = CpuMeter.delta(before, cpu.snapshot())

        phases: list[dict[str, Any]] = []
        skipped: list[int] = []
        for i, rate in enumerate(args.rates):
            if phases and not phases[-1]["drain"]["drained"]:
                # Its backlog would be measured as this rate's latency.
                skipped.append(rate)
                continue
            plan = build_plan(builder, settings, rate, args.latency_seconds,
                              args.new_customer_share, f"{i}")
            phases.append(
                await _latency_phase(rate, plan, probe, collector, cpu, producer,
                                     args.drain_timeout)
            )
            del plan
        failed = False
        worker = ns.settings("profile")
        return {
            **_stamp(),
            "config": {
                "namespace": ns.prefix,
                "partitions": ns.partitions,
                "customers": args.latency_customers,
                "seconds_per_rate": args.latency_seconds,
                "rates": args.rates,
                "new_customer_share": args.new_customer_share,
                "first_txn_delay_s": FIRST_TXN_DELAY_S,
                "kept_up_drain_s": KEPT_UP_DRAIN_S,
                "drain_timeout_s": args.drain_timeout,
                "batch_max_records": worker.batch_max_records,
                "batch_timeout_ms": worker.batch_timeout_ms,
                "outbox_poll_seconds": worker.outbox_poll_seconds,
                "outbox_batch": worker.outbox_batch,
                "seed": args.seed + 1,
            },
            "warmup": {"events": len(messages), "drained_s": round(warm_s, 2)},
            "idle": idle,
            "phases": phases,
            "skipped_rates_after_undrained_phase": skipped,
        }
    except BaseException:
        failed = True
        raise
    finally:
        if started_clients:
            with contextlib.suppress(Exception):
                await producer.stop()
        await collector.stop()
        await probe.stop()
        for p in procs:
            with contextlib.suppress(Exception):
                p.stop()
        if args.keep:
            say(f"kept namespace {ns.prefix}; service logs in {logs}")
        else:
            groups = [ns.settings(s).consumer_group for s in services_names]
            try:
                await _drop_namespace(ns, services_names, groups)
            except Exception as exc:  # noqa: BLE001
                say(f"could not drop namespace {ns.prefix}: {exc}")
            if failed:
                say(f"service logs in {logs}")
            else:
                import shutil

                shutil.rmtree(logs, ignore_errors=True)


# ------------------------------------------------------------------ population size

SEED_CHUNK = 50_000


class _LazyPopulation:
    """A sequence of C customers made on first use, so a million cost only those drawn."""

    def __init__(self, size: int):
        self.size = size
        self.made: dict[int, _Customer] = {}

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i: int) -> _Customer:
        c = self.made.get(i)
        if c is None:
            c = self.made[i] = _new_customer(f"BC{i:07d}")
            c.balances[f"BC{i:07d}-CUR"] = Decimal("1000.00")
        return c


class PopulationBuilder(MixBuilder):
    """The documented mix, with customers drawn uniformly from an existing population."""

    def __init__(self, seed: int, population: int):
        self.rng = random.Random(seed)
        self.customers = _LazyPopulation(population)  # type: ignore[assignment]
        self.t0 = datetime(2026, 1, 1, tzinfo=UTC)
        self.seq = 0


_SEED_CONSENTS = (
    "{}",
    '{"email:marketing": true}',
    '{"email:marketing": true, "sms:service": true}',
    '{"email:marketing": false, "push:marketing": true}',
    '{"phone:service": true, "email:service": true, "email:marketing": true}',
)
_SEED_FLAGS = '{"vulnerable": false, "collections": false}'
_SEED_FLAGS_RARE = ('{"vulnerable": true, "collections": false}',
                    '{"vulnerable": false, "collections": true}')
CUSTOMER_COLUMNS = (
    "customer_id", "registered", "segment", "time_zone", "language", "rm_id", "flags",
    "consent", "registered_at", "first_activity_at", "last_activity_at", "last_event_at",
    "transaction_count", "updated_at",
)
ACCOUNT_COLUMNS = (
    "customer_id", "account_id", "product_type", "currency", "balance", "balance_at",
    "margin_rate", "opened_at", "closed_at", "close_reason",
)


def seed_customers(seed: int, population: int, chunk: int = SEED_CHUNK) -> Any:
    """Chunks of `customers` rows for BC0000000..: the state years of history would leave.

    >>> rows = next(seed_customers(1, 3))
    >>> [r[0] for r in rows], len(rows[0]) == len(CUSTOMER_COLUMNS)
    (['BC0000000', 'BC0000001', 'BC0000002'], True)
    """
    r = random.Random(seed)
    end = datetime(2025, 12, 31, tzinfo=UTC)
    now = datetime.now(UTC)
    day = timedelta(days=1)
    rows: list[tuple[Any, ...]] = []
    for i in range(population):
        segment = MixBuilder.SEGMENTS[int(r.random() * 10)]
        registered = r.random() < 0.9
        since = end - day * r.randrange(30, 3650)
        last = end - timedelta(seconds=r.randrange(0, 180 * 86_400))
        rare = r.random()
        rows.append((
            f"BC{i:07d}",
            registered,
            segment if registered else None,
            MixBuilder.ZONES[int(r.random() * 5)],
            ("en", "en", "de", "fr", "zh")[int(r.random() * 5)],
            f"RM{int(r.random() * 50):03d}" if segment != "retail" and registered else None,
            _SEED_FLAGS_RARE[int(rare * 200)] if rare < 0.01 else _SEED_FLAGS,
            _SEED_CONSENTS[int(r.random() * 5)],
            since if registered else None,
            since + day * r.randrange(0, 20),
            last,
            last,
            r.randrange(0, 3000),
            now,
        ))
        if len(rows) >= chunk:
            yield rows
            rows = []
    if rows:
        yield rows


def seed_accounts(seed: int, population: int, chunk: int = SEED_CHUNK) -> Any:
    """Chunks of `accounts` rows: a current account each; 40% a second product, 10% a loan
    or mortgage with a margin; 3% of second products closed.

    >>> rows = next(seed_accounts(1, 3))
    >>> rows[0][:4]
    ('BC0000000', 'BC0000000-CUR', 'current', 'EUR')
    """
    r = random.Random(seed + 7)
    end = datetime(2025, 12, 31, tzinfo=UTC)
    day = timedelta(days=1)
    rows: list[tuple[Any, ...]] = []
    for i in range(population):
        cid = f"BC{i:07d}"
        opened = end - day * r.randrange(30, 3650)
        seen = end - timedelta(seconds=r.randrange(0, 90 * 86_400))
        rows.append((cid, f"{cid}-CUR", "current", "EUR",
                     Decimal(r.randrange(-50_000, 2_000_000)).scaleb(-2), seen, None, opened,
                     None, None))
        if r.random() < 0.4:
            product = ("savings", "card", "investment", "insurance")[int(r.random() * 4)]
            closed = end - day * r.randrange(1, 30) if r.random() < 0.03 else None
            rows.append((cid, f"{cid}-{product[:3].upper()}S", product, "EUR",
                         Decimal(r.randrange(0, 5_000_000)).scaleb(-2), seen, None,
                         opened + day * r.randrange(0, 30), closed,
                         "customer_request" if closed else None))
        if r.random() < 0.1:
            product = "loan" if r.random() < 0.7 else "mortgage"
            rows.append((cid, f"{cid}-{product[:3].upper()}S", product, "EUR",
                         -Decimal(r.randrange(100_000, 30_000_000)).scaleb(-2), seen,
                         Decimal(r.randrange(100, 900)).scaleb(-4),
                         opened + day * r.randrange(0, 300), None, None))
        if len(rows) >= chunk:
            yield rows
            rows = []
    if rows:
        yield rows


def _raw_dsn(database_url: str) -> str:
    """The SQLAlchemy URL as a plain libpq DSN for asyncpg.

    >>> _raw_dsn("postgresql+asyncpg://u:p@h:5/d")
    'postgresql://u:p@h:5/d'
    """
    return sa.engine.make_url(database_url).set(drivername="postgresql").render_as_string(
        hide_password=False
    )


async def seed_population(ns: Namespace, population: int, seed: int) -> dict[str, Any]:
    """COPY the population into profile's customers and accounts, then VACUUM (ANALYZE)."""
    import asyncpg

    schema = ns.settings("profile").db_schema
    conn = await asyncpg.connect(_raw_dsn(ns.database_url))
    try:
        began = time.perf_counter()
        counted = {"accounts": 0}

        async def stream(chunks: Any, table: str) -> Any:
            # One COPY per table, fed as the rows are made: PostgreSQL stores a chunk while
            # this process makes the next.
            for rows in chunks:
                counted[table] = counted.get(table, 0) + len(rows)
                for row in rows:
                    yield row

        await conn.copy_records_to_table(
            "customers", records=stream(seed_customers(seed, population), "customers"),
            columns=CUSTOMER_COLUMNS, schema_name=schema,
        )
        await conn.copy_records_to_table(
            "accounts", records=stream(seed_accounts(seed, population), "accounts"),
            columns=ACCOUNT_COLUMNS, schema_name=schema,
        )
        accounts = counted["accounts"]
        copied = time.perf_counter()
        # ANALYZE for the planner; VACUUM too, as autovacuum would have by now: it sets hint
        # bits and the visibility map, and keeps an insert-triggered autovacuum out of the
        # measurement.
        for table in ("customers", "accounts"):
            await conn.execute(f'VACUUM (ANALYZE) "{schema}".{table}')
        analysed = time.perf_counter()
        sizes = await conn.fetchrow(
            f"SELECT pg_total_relation_size('\"{schema}\".customers') AS c, "
            f"pg_total_relation_size('\"{schema}\".accounts') AS a"
        )
    finally:
        await conn.close()
    return {
        "customers": population,
        "accounts": accounts,
        "copy_s": round(copied - began, 2),
        "vacuum_analyze_s": round(analysed - copied, 2),
        "customers_mb": round(sizes["c"] / 2**20, 1),
        "accounts_mb": round(sizes["a"] / 2**20, 1),
    }


async def _get_latency(
    ns: Namespace, population: int, requests: int, seed: int
) -> dict[str, Any]:
    """GET /v1/customers/{id} one request at a time against profile as a process."""
    import httpx

    from shared.auth import mint_token
    from tenure_cli.procs import ServiceProcess

    platform_settings = PlatformSettings()
    token = mint_token(platform_settings.jwt_secret, subject="bench", scopes=["profile:read"],
                       audience=platform_settings.jwt_audience)
    proc = ServiceProcess("profile", _service_env(ns), _log_dir(ns) / "profile.log")
    proc.start()
    try:
        await _readiness([proc], 60)
        r = random.Random(seed)
        ids = [f"BC{r.randrange(population):07d}" for _ in range(requests + 200)]
        times: list[float] = []
        statuses: dict[str, int] = {}
        async with httpx.AsyncClient(base_url=proc.url, timeout=30,
                                     headers={"Authorization": f"Bearer {token}"}) as client:
            for i, cid in enumerate(ids):
                began = time.perf_counter()
                response = await client.get(f"/v1/customers/{cid}")
                elapsed = time.perf_counter() - began
                if i >= 200:
                    times.append(elapsed)
                    code = str(response.status_code)
                    statuses[code] = statuses.get(code, 0) + 1
        wall = sum(times)
    finally:
        proc.stop()
    import shutil

    shutil.rmtree(_log_dir(ns), ignore_errors=True)
    return {
        **_percentiles(times),
        "warmup_requests": 200,
        "statuses": statuses,
        "requests_per_s": round(len(times) / wall, 1) if wall else None,
        "target_p99_ms": 10.0,
        "meets_target": bool(times) and _percentiles(times)["p99_ms"] <= 10.0,
    }


async def _population_one(
    args: argparse.Namespace, population: int, get_latency: bool
) -> dict[str, Any]:
    ns = _new_namespace("pop", args.partitions)
    settings = ns.settings("profile")
    say(f"population {population:,}: namespace {ns.prefix}")
    check = create_async_engine(
        ns.database_url, pool_size=1,
        connect_args={"server_settings": {"search_path": settings.db_schema}},
    )
    try:
        await _prepare_namespace(ns, ["profile"], args.timeout)
        seeded = await seed_population(ns, population, args.seed)
        say(f"  seeded {population:,} customers and {seeded['accounts']:,} accounts in "
            f"{seeded['copy_s']:.1f}s (+{seeded['vacuum_analyze_s']:.1f}s VACUUM ANALYZE)")
        events = PopulationBuilder(args.seed, population).build(args.events)
        messages = [
            (settings.topic(TOPIC_OF[e.event_type]), e.customer_id.encode(), encode_event(e))
            for e in events
        ]
        distinct = len({e.customer_id for e in events})
        del events
        publish = await _publish(ns, messages)
        del messages
        server = ServerCpu()
        await server.discover(check, ns.bootstrap)
        meter = CpuMeter({}, server)
        before = meter.snapshot()
        ingest = await _ingest(ns, args.events, server, check, args.timeout)
        # Over the whole ingest call (start-up and relay drain included): who used the host.
        ingest["host"] = CpuMeter.delta(before, meter.snapshot())
        verify = await _verify(check)
        say(f"  ingest {ingest['events_per_s']:,.0f} events/s (other processes "
            f"{ingest['host']['other_processes_cores']} cores)")
        result: dict[str, Any] = {
            "population": population,
            "namespace": ns.prefix,
            "seed": seeded,
            "events": args.events,
            "distinct_customers_in_events": distinct,
            "publish_events_per_s": publish["events_per_s"],
            "profile_ingest": ingest,
            "verify": {**verify, "customers_created": verify["customers"] - population},
        }
        if get_latency:
            say(f"  GET /v1/customers/{{id}}: {args.get_requests:,} requests")
            result["get_customer"] = await _get_latency(ns, population, args.get_requests,
                                                        args.seed)
            g = result["get_customer"]
            say(f"    p50 {g['p50_ms']} ms, p99 {g['p99_ms']} ms")
        return result
    finally:
        await check.dispose()
        if args.keep:
            say(f"kept namespace {ns.prefix}")
        else:
            try:
                await _drop_namespace(ns, ["profile"], [settings.consumer_group])
            except Exception as exc:  # noqa: BLE001
                say(f"could not drop namespace {ns.prefix}: {exc}")


async def run_population(args: argparse.Namespace) -> dict[str, Any]:
    sizes = sorted(args.population)
    runs = [
        await _population_one(args, size, get_latency=(size == sizes[-1] and args.get_requests > 0))
        for size in sizes
    ]
    first, last = runs[0]["profile_ingest"], runs[-1]["profile_ingest"]
    return {
        **_stamp(),
        "config": {"events": args.events, "seed": args.seed, "populations": sizes,
                   "get_requests": args.get_requests},
        "runs": runs,
        "ratio_largest_to_smallest": round(last["events_per_s"] / first["events_per_s"], 3),
        "ratio_with_relay_largest_to_smallest": (
            round(last["until_relay_drained"]["events_per_s"]
                  / first["until_relay_drained"]["events_per_s"], 3)
            if "until_relay_drained" in last and "until_relay_drained" in first else None
        ),
    }


# ------------------------------------------------------------------ scoring throughput

SCORING_TARGET_RATIO = 0.6
SCORING_STEP_S = 20  # event time between two steps of the scoring mix
SCORING_STEPS: tuple[tuple[str, float], ...] = (
    ("purchase", 0.56),  # a customer's card payment or transfer, then its snapshot
    ("bank", 0.14),  # a bank-initiated transaction (salary, fee): read, not activity
    ("click", 0.15),  # an app event, then its snapshot
    ("feedback", 0.05),  # an NPS answer, then its snapshot
    ("other", 0.10),  # a profile change without activity (consent, account): a snapshot
)
SCORING_MIX_NOTES = (
    "Each step picks a customer (weighted by their recent pace, so busy customers come back "
    "more often) and publishes what scoring reads for one input event: the event itself on "
    "its topic (customer transactions, app events, NPS answers; bank-initiated transactions, "
    "which scoring reads and skips) followed one second later by the `profile.updated` "
    "snapshot profile would emit for it; 10% of steps are a snapshot alone (a consent or "
    "account change). Snapshots carry a seeded past (tenure, 30/90/365-day counts and "
    "spend, app sessions, salary, NPS, complaints, closed accounts, balances, channel mix), "
    "so every fact varies. Event times start at 2026-03-01T00:00:00Z and advance 20 s per "
    "step, a few days in all: the scores are the snapshots' (time-driven re-scores start a "
    "week after a customer's score, and any that happen are counted too)."
)


@dataclass
class _Scored:
    cid: str
    tenure_days: float
    last_activity: datetime | None
    f30: float
    f90: float
    f365: float
    spend: float  # mean transaction amount
    sessions_30: float
    sessions_prev_30: float
    salary_days: float | None  # days since the last salary credit at t0 (None: no salary)
    nps: int | None
    complaints: int
    closed: int
    products: dict[str, int]
    balance: Decimal
    mobile: float
    web: float
    transactions: int
    clicks: int = 0


class ScoringMixBuilder:
    """The scoring section's seeded stream: customers with a past, then activity events each
    followed by the snapshot profile would emit for it."""

    def __init__(self, seed: int, customers: int):
        self.rng = random.Random(seed)
        self.t0 = datetime(2026, 3, 1, tzinfo=UTC)
        self.customers = [self._customer(i) for i in range(customers)]
        self.weights = [c.f30 + 1.0 for c in self.customers]
        self.seq = 0

    def _customer(self, i: int) -> _Scored:
        r = self.rng
        tenure = r.uniform(20, 3000)
        silent = r.uniform(60, 400) if r.random() < 0.2 else r.expovariate(1 / 12)
        silent = min(silent, tenure)
        f365 = float(int(r.expovariate(1 / 40)) + 1) if silent < 365 else 0.0
        f90 = float(int(f365 * r.uniform(0.1, 0.4))) if silent < 90 else 0.0
        f30 = float(int(f90 * r.uniform(0.2, 0.5))) if silent < 30 else 0.0
        products = {"current": 1}
        for product in ("savings", "card", "loan"):
            if r.random() < 0.3:
                products[product] = 1
        closed = 1 if r.random() < 0.08 else 0
        if closed and r.random() < 0.3:
            products = {}
        mobile = r.uniform(0, 0.8)
        return _Scored(
            cid=f"SC{i:07d}", tenure_days=tenure,
            last_activity=self.t0 - timedelta(days=silent) if f365 or r.random() < 0.5 else None,
            f30=f30, f90=f90, f365=f365, spend=r.uniform(8, 250),
            sessions_30=float(int(r.expovariate(1 / 8))),
            sessions_prev_30=float(int(r.expovariate(1 / 8))),
            salary_days=r.uniform(0, 45) if r.random() < 0.6 else None,
            nps=r.randrange(11) if r.random() < 0.4 else None,
            complaints=1 if r.random() < 0.07 else 0, closed=closed, products=products,
            balance=Decimal(round(r.uniform(-800, 25_000), 2)).quantize(Decimal("0.01")),
            mobile=mobile, web=r.uniform(0, 1 - mobile),
            transactions=int(f365 + (r.randrange(400) if tenure > 365 else 0)),
        )

    def _id(self) -> uuid.UUID:
        return uuid.UUID(int=self.rng.getrandbits(128), version=4)

    def snapshot(self, c: _Scored, at: datetime) -> ev.ProfileSnapshot:
        days = (at - self.t0).total_seconds() / 86_400
        features: dict[str, float] = {
            "tenure_days": round(c.tenure_days + days, 2),
            "frequency_30": c.f30, "frequency_90": c.f90, "frequency_365": c.f365,
            "monetary_30": round(c.f30 * c.spend, 2), "monetary_90": round(c.f90 * c.spend, 2),
            "monetary_365": round(c.f365 * c.spend, 2),
            "sessions_30": c.sessions_30, "sessions_prev_30": c.sessions_prev_30,
            "active_days_30": min(30.0, c.f30 + c.sessions_30 // 3),
            "open_complaints": float(c.complaints), "accounts_closed": float(c.closed),
            "channel_share_mobile": round(c.mobile, 3), "channel_share_web": round(c.web, 3),
        }
        if c.salary_days is not None:
            features["days_since_salary"] = round(c.salary_days + days, 2)
            features["salary_credits_90"] = 3.0 if c.salary_days + days < 35 else 2.0
        if c.nps is not None:
            features["last_nps"] = float(c.nps)
        return ev.ProfileSnapshot(
            as_of=at, registered=True, first_activity_at=self.t0 - timedelta(days=c.tenure_days),
            last_activity_at=c.last_activity, transaction_count=c.transactions,
            products=c.products, total_balance=c.balance, features=features,
        )

    def build(self, n: int) -> list[EnvelopeBase]:
        r = self.rng
        kinds = [k for k, _ in SCORING_STEPS]
        shares = [s for _, s in SCORING_STEPS]
        out: list[EnvelopeBase] = []
        while len(out) < n:
            c = r.choices(self.customers, weights=self.weights)[0]
            at = self.t0 + timedelta(seconds=SCORING_STEP_S * self.seq)
            self.seq += 1
            kind = r.choices(kinds, weights=shares)[0]
            if kind in ("purchase", "bank"):
                amount = Decimal(round(r.uniform(5, 2 * c.spend), 2)).quantize(Decimal("0.01"))
                customer = kind == "purchase"
                c.balance += -amount if customer else amount
                out.append(ev.TransactionPosted(
                    event_id=self._id(), customer_id=c.cid, occurred_at=at, source="core-banking",
                    payload=ev.TransactionDetails(
                        account_id=f"{c.cid}-CUR", product_type="current", amount=amount,
                        currency="EUR", direction="debit" if customer else "credit",
                        category="card_purchase" if customer else "salary",
                        channel=r.choice(["mobile", "web", "pos"]) if customer else "batch",
                        initiated_by="customer" if customer else "bank", balance_after=c.balance,
                    ),
                ))
                if customer:
                    c.f30, c.f90, c.f365 = c.f30 + 1, c.f90 + 1, c.f365 + 1
                    c.transactions += 1
                    c.last_activity = at
                elif c.salary_days is not None:
                    c.salary_days = -(at - self.t0).total_seconds() / 86_400
            elif kind == "click":
                c.clicks += 1
                out.append(ev.AppClicked(
                    event_id=self._id(), customer_id=c.cid, occurred_at=at, source="mobile-app",
                    payload=ev.AppClick(session_id=f"{c.cid}-s{c.clicks // 5}", action="login",
                                        channel="mobile"),
                ))
                c.sessions_30 += 1
                c.last_activity = at
            elif kind == "feedback":
                c.nps = r.randrange(11)
                out.append(ev.FeedbackSubmitted(
                    event_id=self._id(), customer_id=c.cid, occurred_at=at,
                    source="complaint-desk", payload=ev.FeedbackDetails(kind="nps", score=c.nps),
                ))
                c.last_activity = at
            snapshot_at = at + timedelta(seconds=1)
            out.append(ev.ProfileUpdated(
                event_id=self._id(), customer_id=c.cid, occurred_at=snapshot_at,
                source="tenure-profile", payload=self.snapshot(c, snapshot_at),
            ))
        return out[:n]

    def warm_up(self) -> list[EnvelopeBase]:
        """One snapshot per customer an hour before the stream: every customer is known to
        scoring (state, activity log, a score) before the timed run, as in steady state."""
        at = self.t0 - timedelta(hours=1)
        return [ev.ProfileUpdated(event_id=self._id(), customer_id=c.cid, occurred_at=at,
                                  source="tenure-profile", payload=self.snapshot(c, at))
                for c in self.customers]

    def training(self, samples: int) -> list[tuple[dict[str, float], bool]]:
        """Labelled facts for the bench's champion, from the customers' pasts seen up to four
        months later (silence against their own pace makes churn likelier)."""
        from services.scoring.domain import facts_at

        r = random.Random(self.rng.random())
        out = []
        for _ in range(samples):
            c = r.choice(self.customers)
            facts = facts_at(self.snapshot(c, self.t0), self.t0 + timedelta(days=r.uniform(0, 120)))
            pace = (facts["purchases_365"] + 1.0) / 365.0
            churned = r.random() < 1.0 - math.exp(-0.2 - facts["recency_days"] * pace / 3)
            out.append((facts, churned))
        return out


class ScoreRecorder:
    """Notes the facts of every score the service makes (the handlers' own `assess_facts`,
    called through) and the CPU time spent in it: the bare loop then runs on exactly those
    facts. Two list appends and two clock reads per score."""

    def __init__(self) -> None:
        self.facts: list[dict[str, float]] = []
        self.at: list[float] = []
        self.cpu_s = 0.0  # CPU time spent inside assess_facts, in the service
        self._original: Any = None

    def __enter__(self) -> ScoreRecorder:
        from services.scoring import handlers

        self._original = original = handlers.assess_facts
        facts, at = self.facts, self.at
        clock = time.thread_time

        def recording(model: Any, f: dict[str, float], cuts: Any, top: int) -> Any:
            facts.append(f)
            began = clock()
            try:
                return original(model, f, cuts, top)
            finally:
                self.cpu_s += clock() - began
                at.append(time.perf_counter())

        handlers.assess_facts = recording  # type: ignore[assignment]
        return self

    def __exit__(self, *exc: object) -> None:
        from services.scoring import handlers

        handlers.assess_facts = self._original

    def until(self, wall: float) -> int:
        return sum(1 for t in self.at if t <= wall)


def _bench_champion(builder: ScoringMixBuilder, settings: Any, samples: int = 4_000) -> Any:
    from services.scoring.model import ChurnModel

    model = ChurnModel(settings.horizon_days, settings.min_labels_for_model, settings.champion)
    for facts, churned in builder.training(samples):
        model.learn(facts, churned)
    return model


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def _timed(work: Callable[[], None], runs: int) -> tuple[float, float]:
    """(wall, cpu) seconds of `work`, the median of `runs`."""
    walls, cpus = [], []
    for _ in range(runs):
        wall, cpu = time.perf_counter(), time.process_time()
        work()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return _median(walls), _median(cpus)


def bare_river(champion: Any, facts: list[dict[str, float]], runs: int) -> dict[str, Any]:
    """The issue's yardstick: for the service's own feature dicts (as model inputs, computed
    before timing), `predict_proba_one` then `learn_one` of a copy of the same champion, in a
    plain loop; the median of `runs`, each on a fresh copy."""
    from services.scoring.model import inputs_of

    h = champion.horizon_days
    xs = [inputs_of(f, h) for f in facts]
    labels = [f["recency_days"] > h / 2 for f in facts]
    walls, cpus = [], []
    for _ in range(runs):
        estimator = copy.deepcopy(champion.estimator)
        predict, learn = estimator.predict_proba_one, estimator.learn_one
        wall, cpu = time.perf_counter(), time.process_time()
        for x, y in zip(xs, labels, strict=True):
            predict(x)
            learn(x, y)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    wall_s, cpu_s = _median(walls), _median(cpus)
    return {
        "scores": len(xs), "runs": runs, "wall_s": round(wall_s, 4), "cpu_s": round(cpu_s, 4),
        "per_s": round(len(xs) / wall_s, 1), "per_cpu_s": round(len(xs) / cpu_s, 1),
        "runs_per_s": [round(len(xs) / w, 1) for w in walls],
    }


def score_breakdown(champion: Any, facts: list[dict[str, float]], runs: int,
                    cuts: tuple[float, float, float], top: int) -> dict[str, float]:
    """CPU microseconds per score of each step of the per-score path, on the same facts
    with a copy of the same champion (median of `runs`)."""
    from services.scoring.domain import counterfactual_facts, reasons_for, reasons_from
    from services.scoring.model import assess_facts, inputs_of

    model = copy.deepcopy(champion)
    h = model.horizon_days
    xs = [inputs_of(f, h) for f in facts]
    estimator = copy.deepcopy(model.estimator)
    n = len(facts)

    def each(fn: Callable[[Any], Any], items: list[Any]) -> Callable[[], None]:
        def work() -> None:
            for item in items:
                fn(item)
        return work

    def reasons(f: dict[str, float]) -> None:
        names = counterfactual_facts(f)
        base, moved = model.counterfactuals(f, names)
        reasons_from(f, names, base, moved, top)

    steps: dict[str, Callable[[], None]] = {
        "inputs_of": each(lambda f: inputs_of(f, h), facts),
        "predict_proba_one": each(estimator.predict_proba_one, xs),
        "learn_one": each(lambda x: estimator.learn_one(x, True), xs),
        "predict": each(model.predict, facts),
        "reasons": each(reasons, facts),
        "reasons_one_prediction_each": each(lambda f: reasons_for(model.predict, f, top), facts),
        "assess_facts": each(lambda f: assess_facts(model, f, cuts, top), facts),
    }
    out: dict[str, float] = {}
    for name, work in steps.items():
        _, cpu = _timed(work, runs)
        out[name] = round(cpu / n * 1e6, 1)
    return out


@dataclass
class _ScoringPhase:
    meter: Meter
    drained: Mark
    runtime: Any
    recorder: ScoreRecorder


async def _scoring_phase(
    settings: Any, champion: Any, n: int, server: ServerCpu, check: AsyncEngine,
    timeout: float, what: str,
) -> _ScoringPhase:
    """A scoring runtime (as `bootstrap()` builds it, serving a copy of `champion`) until
    its group has committed `n` more events and its outbox is empty; then stopped."""
    from services.scoring.bootstrap import bootstrap as scoring_bootstrap

    runtime = scoring_bootstrap(settings)
    runtime.scoring.holder.install(copy.deepcopy(champion), 1, {"bench": "seeded champion"})
    meter = Meter(n, server)
    meter.attach(runtime.consumers[0])
    with ScoreRecorder() as recorder:
        meter.start()
        await runtime.start()
        try:
            await _wait(meter, runtime._tasks[0], timeout, what)
            drained = await _outbox_drained(check, server, timeout, what)
        finally:
            await runtime.stop()
    return _ScoringPhase(meter, drained, runtime, recorder)


async def run_scoring(args: argparse.Namespace) -> dict[str, Any]:
    """Scoring's real runtime (consumer, sweep, outbox relay; the learner role off) on a
    namespace of its own: a warm-up gives every customer a score and a state, then a timed
    stream of activity and snapshots on real Kafka into PostgreSQL until the relay has
    published every `churn.scored`; then the bare river loop and the per-score breakdown on
    the facts of those very scores."""
    ns = _new_namespace("scoring", args.partitions)
    settings = ns.settings("scoring", run_learner=False)
    ceiling_group = f"{ns.prefix}.bench-scoring-ceiling"
    say(f"scoring throughput: namespace {ns.prefix} ({ns.partitions} partitions)")
    builder = ScoringMixBuilder(args.seed, args.scoring_customers)
    champion = _bench_champion(builder, settings)
    warm = builder.warm_up()
    events = builder.build(args.scoring_events)
    del builder  # nothing of the benchmark's own stays on the heap the service collects
    kinds: dict[str, int] = {}
    for e in events:
        kinds[e.event_type] = kinds.get(e.event_type, 0) + 1

    def encoded(batch: list[EnvelopeBase]) -> list[tuple[str, bytes, bytes]]:
        return [(settings.topic(_scoring_topic(e)), e.customer_id.encode(), encode_event(e))
                for e in batch]

    check = create_async_engine(
        ns.database_url, pool_size=1,
        connect_args={"server_settings": {"search_path": settings.db_schema}},
    )
    try:
        await _prepare_namespace(ns, ["scoring"], args.timeout)
        server = ServerCpu()
        await server.discover(check, ns.bootstrap)
        await _publish(ns, encoded(warm))
        warm_up = len(warm)
        del warm
        say(f"  warm-up: a snapshot for each of {warm_up:,} customers")
        await _scoring_phase(settings, champion, warm_up, server, check, args.timeout,
                             "scoring warm-up")
        messages = encoded(events)
        del events
        from services.scoring.consumer import TOPICS as scoring_topics

        await _group_at_end(ns, ceiling_group, [settings.topic(t) for t in scoring_topics])
        gc.collect()
        publish = await _publish(ns, messages)
        n = len(messages)
        del messages
        say(f"  published {n:,} events ({publish['events_per_s']:,.0f}/s)")
        phase = await _scoring_phase(settings, champion, n, server, check, args.timeout,
                                     "scoring")
        meter, drained, runtime, recorder = (phase.meter, phase.drained, phase.runtime,
                                             phase.recorder)
        served = runtime.scoring.holder.current
        assert meter.first is not None and meter.last is not None
        scores_total = len(recorder.facts)
        window = meter.window()
        to_relay = _window(n, meter.started or meter.first, meter.first, drained, 0)
        scores_consumed = recorder.until(meter.last.wall)
        metrics = runtime.metrics
        dead = int(sum(s.value for s in _samples(metrics.dead_lettered)))
        published = runtime.relay.published if runtime.relay is not None else None
        facts = list(recorder.facts)
        if not scores_total or dead:
            raise RuntimeError(f"scoring: {scores_total} scores, {dead} events dead-lettered")
        say(f"  {scores_total:,} scores; {scores_total / to_relay.wall_s:,.0f} scores/s "
            "to churn.scored published")
        say("  bare river loop (predict_proba_one + learn_one) on the same facts")
        bare = bare_river(served, facts, runs=3)
        breakdown = score_breakdown(served, facts, 3, settings.band_cuts, settings.top_reasons)
        say("  ceiling: the kit's loop + assess_facts + churn.scored published, no database")
        ceiling = await _scoring_ceiling(ns, settings, ceiling_group, served, facts, n, server,
                                         args.timeout)
        say(f"  ceiling {ceiling['scores_per_s']:,.0f} scores/s")
        service = {
            "events": n, "scores": scores_total,
            "scores_per_s": round(scores_total / to_relay.wall_s, 1),
            "wall_s": round(to_relay.wall_s, 3), "cpu_s": round(to_relay.cpu_s, 3),
            "server_cpu_s": {k: round(v, 3) for k, v in to_relay.server_cpu_s.items()},
            "events_per_s": round(n / to_relay.wall_s, 1),
            "startup_wall_s": round(window.startup_wall_s, 3),
            "consumer": {**window.as_dict(), "scores": scores_consumed,
                         "scores_per_s": round(scores_consumed / window.wall_s, 1)},
            "relay_lag_after_ingest_s": round(drained.wall - meter.last.wall, 3),
            "churn_scored_published": published,
            "dead_lettered": dead,
            "per_score_us": {
                "wall": round(to_relay.wall_s / scores_total * 1e6, 1),
                "process_cpu": round(to_relay.cpu_s / scores_total * 1e6, 1),
                "assess_facts_cpu_in_service": round(recorder.cpu_s / scores_total * 1e6, 1),
                **{f"{k}_cpu": round(v / scores_total * 1e6, 1)
                   for k, v in to_relay.server_cpu_s.items()},
            },
        }
        service["warm_up_customers"] = warm_up
        ratio = service["scores_per_s"] / bare["per_s"]
        say(f"  bare loop {bare['per_s']:,.0f}/s; ratio {ratio:.3f} "
            f"(target {SCORING_TARGET_RATIO})")
        return {
            **_stamp(),
            "config": {"events": n, "customers": args.scoring_customers, "seed": args.seed,
                       "partitions": ns.partitions, "namespace": ns.prefix,
                       "batch_max_records": settings.batch_max_records,
                       "champion": served.kind, "champion_labels": served.labels_learnt,
                       "top_reasons": settings.top_reasons, "learner": False},
            "mix": kinds,
            "mix_notes": SCORING_MIX_NOTES,
            "event_loop": _loop_name(),
            "service": service,
            "bare_river": bare,
            "ceiling": ceiling,
            "ratio_ceiling_to_bare": round(ceiling["scores_per_s"] / bare["per_s"], 3),
            "breakdown_cpu_us": breakdown,
            "ratio_service_to_bare": round(ratio, 3),
            "target_ratio": SCORING_TARGET_RATIO,
            "meets_target": ratio >= SCORING_TARGET_RATIO,
        }
    finally:
        await check.dispose()
        if args.keep:
            say(f"kept namespace {ns.prefix}")
        else:
            try:
                await _drop_namespace(ns, ["scoring"], [settings.consumer_group, ceiling_group])
            except Exception as exc:  # noqa: BLE001
                say(f"could not drop namespace {ns.prefix}: {type(exc).__name__}: {exc}")


async def _group_at_end(ns: Namespace, group: str, topics: list[str]) -> None:
    """Commit `group`'s offsets at the current end of `topics`: a consumer of that group
    then reads only what is published afterwards."""
    consumer = AIOKafkaConsumer(bootstrap_servers=ns.bootstrap, group_id=group,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        parts = [TopicPartition(t, p) for t in topics
                 for p in (consumer.partitions_for_topic(t) or set())]
        if not parts:
            await consumer._client.force_metadata_update()
            parts = [TopicPartition(t, p) for t in topics
                     for p in (consumer.partitions_for_topic(t) or set())]
        consumer.assign(parts)
        ends = await consumer.end_offsets(parts)
        await consumer.commit(dict(ends))
    finally:
        await consumer.stop()


async def _scoring_ceiling(
    ns: Namespace, settings: Any, group: str, model: Any, facts: list[dict[str, float]],
    n: int, server: ServerCpu, timeout: float,
) -> dict[str, Any]:
    """`ScoreOnlyConsumer` over the timed events (its group was set at their start)."""
    from services.scoring.consumer import TOPICS
    from shared.outbox import make_producer

    producer = make_producer(settings)
    await producer.start()
    consumer = ScoreOnlyConsumer(settings=settings, group_id=group, topics=TOPICS,
                                 model=copy.deepcopy(model), facts=facts, producer=producer)
    try:
        window = await _metered(consumer, n, server, timeout, "scoring ceiling")
    finally:
        await producer.stop()
    if consumer.rejected or not consumer.scored:
        raise RuntimeError(f"scoring ceiling: {consumer.scored} scores, "
                           f"{consumer.rejected} events rejected")
    return {**window.as_dict(), "scores": consumer.scored,
            "scores_per_s": round(consumer.scored / window.wall_s, 1),
            "cpu_us_per_score": round(window.cpu_s / consumer.scored * 1e6, 1)}


def _scoring_topic(e: EnvelopeBase) -> str:
    if e.event_type == "profile.updated":
        return OUTPUT_TOPICS["profile_updates"]
    if e.event_type == "app.click":
        return INPUT_TOPICS["app_events"]
    if e.event_type == "feedback.submitted":
        return INPUT_TOPICS["feedback"]
    return INPUT_TOPICS["transactions"]


# ------------------------------------------------------------------ reports


def _git() -> dict[str, Any]:
    root = Path(__file__).resolve().parents[1]
    out: dict[str, Any] = {"commit": None, "dirty": None}
    with contextlib.suppress(Exception):
        out["commit"] = (
            subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"],
                cwd=root,
                capture_output=True,
                text=True,
                check=True,
                timeout=10,
            ).stdout.strip()
            or None
        )
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout
        out["dirty"] = bool(status.strip())
        # Which tracked files differed from the commit: the figures are of those versions.
        out["uncommitted"] = sorted(line[3:] for line in status.splitlines() if line.strip())
    return out


def _loop_name() -> str:
    """uvloop when the running loop is uvloop's (as under uvicorn), else asyncio."""
    return "uvloop" if "uvloop" in type(asyncio.get_running_loop()).__module__ else "asyncio"


DOC_INTRO = f"""# Benchmarks

`./dev bench` (or `tenure bench` with `TENURE_KAFKA_BOOTSTRAP` and `TENURE_DATABASE_URL` set)
runs four measurements in one run, on the real Kafka broker and PostgreSQL of the `dev`
profile:

- [**Profile ingest**](#profile-ingest): how fast the profile service ingests events
  compared with the bare consumer kit;
- [**End-to-end latency**](#end-to-end-latency): the four services as separate processes,
  fed at fixed rates, from an input event's publish to `churn.scored` and `stage.changed`;
- [**Population size**](#profile-ingest-with-a-large-existing-population): profile ingest
  with 10,000 versus 1,000,000 existing customers, and the customer view's GET latency;
- [**Scoring throughput**](#scoring-throughput): the scoring service's scores per second
  against a bare river predict + learn loop over the same features.

It never touches the demo's data: each section creates its own namespace (topics
`bench<hex>.*`, schemas `bench<hex>_<service>`) and drops it at the end, also when it
fails. The default run takes about 5 to 10 minutes on a 2-CPU machine. Every figure of the
last run is in `bench/results.json`; ratios are always between figures of the same run.

The profile ingest, in one process:

1. **Publish** a fixed, seeded mix of N events (default 20,000) over C customers (default
   2,000), built from the v1 contract models and keyed by `customer_id`, with an idempotent
   producer (`acks=all`).
2. **Baseline**: the consumer kit's own loop (`getmany`, JSON decode and envelope validation
   with `parse_event`, offset commit) with no database, in its own consumer group. It is the
   ceiling for any service built on the kit. It runs three times (`--baseline-runs`), each
   in a fresh group, and the median run is reported.
3. **Profile ingest**: the real profile runtime (consumer + outbox relay, as `bootstrap()`
   builds it) in its own consumer group, until every event is committed in PostgreSQL (inbox,
   customers, accounts, watermarks, outbox); then until the relay has published every
   `profile.updated`.

Throughput is measured from the first fetched batch to the commit of the batch that holds
the N-th event (the consumer-group join is reported separately as start-up). CPU seconds are
the benchmark process's own (user + system, all threads; everything Python runs in it);
the broker's and PostgreSQL's CPU over the same window come from /proc when they run on
this host. The event loop is uvloop when installed, as under uvicorn (`--loop asyncio` to
compare). The target is profile ingest at **>= {TARGET_RATIO}x** the baseline's events/s;
it is reported, not asserted. The event mix is listed under the table.

Options (`./dev bench` passes them on):

| option | default | what |
|---|---|---|
| `--events N`, `--customers C`, `--seed S` | 20,000, 2,000, 20260101 | the event mix (N is also the population section's) |
| `--partitions P` | `TENURE_PARTITIONS` | partitions of every bench topic |
| `--baseline-runs R` | 3 | baseline repetitions (median reported) |
| `--rates` | `1000,5000` | end-to-end latency: publish rates, events/s |
| `--latency-seconds` | 20 | end-to-end latency: seconds of publishing per rate |
| `--latency-customers` | 2,000 | end-to-end latency: existing customers |
| `--new-customer-share` | 0.04 | end-to-end latency: share of events from new customers |
| `--drain-timeout` | 120 | end-to-end latency: seconds to wait for a backlog to clear |
| `--population` | `10000,1000000` | population section: existing customers per run |
| `--get-requests` | 3,000 | GET requests on the largest population (0 skips them) |
| `--scoring-events`, `--scoring-customers` | 20,000, 2,000 | scoring throughput: events published, customers |
| `--skip-latency`, `--skip-population`, `--skip-scoring` | | leave a section out (its last figures stay, dated) |
| `--only ingest\\|latency\\|population\\|scoring` | | run one section alone (the others' last figures stay, dated) |
| `--keep` | | keep the namespaces (and service logs) for inspection |
"""


def render_table(r: dict[str, Any]) -> str:
    b, i, p = r["baseline"], r["profile_ingest"], r["publish"]
    relay = i.get("until_relay_drained", {})
    git = r["git"]
    commit = git.get("commit") or "unknown"
    if git.get("dirty"):
        commit += " (uncommitted changes)"

    def server(w: dict[str, Any]) -> str:
        s = w.get("server_cpu_s") or {}
        return ", ".join(f"{k} {v:.2f}" for k, v in sorted(s.items())) or "n/a"

    lines = [
        f"Last run: {r['timestamp']}, commit {commit}, {r['host']['cpu_count']} CPUs, "
        f"Python {r['host']['python']} ({r['host']['event_loop']} loop), "
        f"N = {r['config']['events']:,} events, C = {r['config']['customers']:,} customers, "
        f"{r['config']['partitions']} partitions, batches of up to "
        f"{r['config']['batch_max_records']} records, seed {r['config']['seed']}.",
        "",
        "| | events/s | wall s | CPU s (process) | CPU s per 10k events | start-up s "
        "| server CPU s |",
        "|---|---:|---:|---:|---:|---:|---|",
        f"| Publish (idempotent producer) | {p['events_per_s']:,.0f} | {p['wall_s']:.2f} "
        f"| {p['cpu_s']:.2f} | {p['cpu_s'] / p['events'] * 10_000:.2f} | | |",
        f"| Baseline: kit loop, parse + commit, no DB (median of {b['runs']}) "
        f"| {b['events_per_s']:,.0f} "
        f"| {b['wall_s']:.2f} | {b['cpu_s']:.2f} | {b['cpu_s_per_10k_events']:.2f} "
        f"| {b['startup_wall_s']:.2f} | {server(b)} |",
        f"| Profile ingest into PostgreSQL | {i['events_per_s']:,.0f} | {i['wall_s']:.2f} "
        f"| {i['cpu_s']:.2f} | {i['cpu_s_per_10k_events']:.2f} | {i['startup_wall_s']:.2f} "
        f"| {server(i)} |",
    ]
    if relay:
        lines.append(
            f"| Profile ingest + outbox relay drained | {relay['events_per_s']:,.0f} "
            f"| {relay['wall_s']:.2f} | {relay['cpu_s']:.2f} "
            f"| {relay['cpu_s_per_10k_events']:.2f} | | {server(relay)} |"
        )
    if r.get("seen_running"):
        lines += ["", "**Not a quiet machine**: "
                  + " and ".join(f"`{x}`" for x in r["seen_running"])
                  + " ran during this measurement."]
    verdict = "meets" if r["meets_target"] else "is below"
    lines += [
        "",
        f"**Profile ingest / baseline: {r['ratio_ingest_to_baseline']:.2f}x** "
        f"({verdict} the {r['target_ratio']}x target). "
        f"Publish: {p['mb_per_s']:.1f} MB/s, {p['mean_event_bytes']:.0f} bytes per event on "
        f"average.",
    ]
    if relay:
        lines.append(
            f"The relay published {relay['profile_updated_published']:,} `profile.updated` "
            f"(one per customer per batch) and finished {relay['relay_lag_after_ingest_s']:.2f}s "
            "after the last input batch was committed."
        )
    v = i.get("verify", {})
    if v:
        lines.append(
            f"Check: {v['inbox_rows']:,} inbox rows, {v['customers']:,} customers "
            f"({v['registered_customers']:,} registered), {v['accounts']:,} accounts, "
            f"{v['transactions_counted']:,} transactions counted, "
            f"{i['dead_lettered']} dead-lettered, {i['duplicates']} duplicates."
        )
    lines += [
        "",
        "Event mix:",
        "",
        "| event type | topic | share | events |",
        "|---|---|---:|---:|",
    ]
    for m in r["mix"]:
        lines.append(
            f"| `{m['event_type']}` | `{m['topic']}` | {m['share']:.0%} | {m['count']:,} |"
        )
    lines += ["", r["mix_notes"]]
    return "\n".join(lines)


def write_doc(path: Path, table: str) -> None:
    """Replace what lies between the markers; create the file with its intro if missing."""
    block = f"{DOC_START}\n{table}\n{DOC_END}"
    if path.exists():
        text = path.read_text()
        if DOC_START in text and DOC_END in text:
            head, rest = text.split(DOC_START, 1)
            _, tail = rest.split(DOC_END, 1)
            path.write_text(f"{head}{block}{tail}")
            return
        path.write_text(text.rstrip() + f"\n\n## Profile ingest\n\n{block}\n")
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{DOC_INTRO}\n## Profile ingest\n\n{block}\n")


LATENCY_DOC_START = "<!-- bench-latency:start -->"
LATENCY_DOC_END = "<!-- bench-latency:end -->"
POPULATION_DOC_START = "<!-- bench-population:start -->"
POPULATION_DOC_END = "<!-- bench-population:end -->"

LATENCY_INTRO = """## End-to-end latency

The four services run as separate processes (uvicorn, as `ServiceProcess` starts them, with
their production settings), in a namespace of their own (`benchlat<hex>.*` topics,
`benchlat<hex>_<service>` schemas, all four migrated). The benchmark process publishes and,
with a consumer of its own, reads `tenure.profile-updates.v1`, `tenure.churn-scores.v1` and
`tenure.lifecycle-stages.v1` as they arrive.

1. **Warm-up** (not timed): C existing customers (`--latency-customers`, default 2,000)
   each register and make a first transaction; the run waits until every consumer group
   is at the end of its topics, every outbox is empty and the reader has read everything.
   Then 5 s with no events measure what the idle services cost.
2. **One phase per rate** (`--rates`, default 1,000 and 5,000 events/s) for
   `--latency-seconds` (default 20): a paced publisher sends each event when it is due
   (one idempotent producer, `acks=all`, `linger_ms=5`). 96% are `transaction.posted` of
   existing customers drawn uniformly at random; 4% (`--new-customer-share`) are new
   customers: a registration, then their first transaction 1 s later. After publishing
   stops, the phase waits until everything is drained (as in the warm-up) before the next
   rate starts, so a backlog is never carried into the next phase.
3. **Linking**: `churn.scored.causation_id` is the `profile.updated` event id and
   `profile.updated.causation_id` is the last input event of that customer in profile's
   batch, so each `churn.scored` leads to one input event and its publish time. Profile
   emits one snapshot per customer per batch, so only the inputs that were the last of
   their customer in a batch are measurable; how many were is reported (the bigger the
   batches, the fewer). `stage.changed` is measured for the new customers only: their
   first transaction moves them from prospect to onboarding; latency runs from the first
   transaction's publish to the `stage.changed` (`to = onboarding`) being read.

Latency is from the moment an event is handed to the producer (so it includes the
publisher's linger and the broker's acknowledgement) to the moment the benchmark's consumer
receives the output. "Last timed output" is when the last `profile.updated`, `churn.scored`
or `stage.changed` caused by the phase's events arrived, after the last publish; "all
services caught up" is when every group (engagement's too, whose outputs are not timed) had
committed everything and every outbox was empty (polled every 0.25 s). **Kept up** means all
services caught up within 5 s of the last publish; otherwise the platform built a backlog,
latency grew with it (see the p50 per quarter of the phase), and the catch-up time says how
long the backlog took to clear. Lag is messages not yet committed by each service's
consumer group, at the end of publishing and sampled every second while publishing. CPU is
per process, in cores (CPU seconds ÷ seconds: 1.00 is one core busy the whole time), while
publishing and while draining; the benchmark process itself (publisher and reader) is
`bench`. Kafka and PostgreSQL share the host with everything else.
"""

POPULATION_INTRO = """## Profile ingest with a large existing population

Does ingest slow down when the customers already exist in large numbers? For each
population size P (`--population`, default 10,000 and 1,000,000), in a fresh namespace:

1. profile's schema is migrated and seeded directly with `COPY` (asyncpg
   `copy_records_to_table`): P `customers` rows (90% registered, segments, time zones,
   consents, flags, years of activity dates and transaction counts) and their `accounts`
   (a current account each; 40% a second product, some closed; 10% a loan or mortgage with
   a margin rate), then `VACUUM (ANALYZE)` (statistics for the planner; vacuuming also sets
   the hint bits and visibility map autovacuum would have, and keeps an insert-triggered
   autovacuum out of the measurement);
2. the same event mix as above (N = `--events` events, same shares and seed), but with
   customers drawn uniformly from the existing population, so nearly every upsert hits an
   existing row (and, at 1M, mostly a different row each time);
3. the profile ingest is measured exactly as above (real runtime in the benchmark process,
   first batch to the commit of the batch holding event N, then until the relay drained).

The more customers, the more distinct customers the N events touch, so profile emits a
few more `profile.updated` (one per customer per batch) at 1M than at 10k; both counts are
in the table. "Other processes" is host CPU that neither the benchmark process, Kafka nor
PostgreSQL used during the ingest (other tenants of the machine).

The ratio compares the largest population with the smallest in the same run. On the
largest population, `GET /v1/customers/{id}` is timed against profile running as a
process (uvicorn), one request at a time over a kept-alive httpx connection, for random
existing customers, with a `profile:read` token; the first 200 requests warm up and are
not counted. The 10 ms p99 target is reported, not asserted. The schemas and topics are
dropped afterwards, also when the run fails.
"""


def _ms(v: Any) -> str:
    return "n/a" if v is None else f"{v:,.1f}"


def _run_line(r: dict[str, Any]) -> str:
    git = r.get("git") or {}
    commit = git.get("commit") or "unknown"
    if git.get("dirty"):
        commit += " (uncommitted changes)"
    return f"Last run: {r['timestamp']}, commit {commit}"


def render_latency(r: dict[str, Any]) -> str:
    if "error" in r:
        return f"{_run_line(r)}: **failed**: {r['error']}"
    c = r["config"]
    lines = [
        f"{_run_line(r)}; {c['customers']:,} existing customers, {c['seconds_per_rate']:g} s "
        f"per rate, {c['partitions']} partitions, batches of up to {c['batch_max_records']} "
        f"records ({c['batch_timeout_ms']} ms fetch timeout), outbox poll "
        f"{c['outbox_poll_seconds']} s. Warm-up: {r['warmup']['events']:,} events, drained "
        f"in {r['warmup']['drained_s']:.1f} s.",
        "",
        "| target events/s | achieved events/s | events | lag at the end of publishing "
        "(profile / scoring / lifecycle / engagement) | max lag while publishing "
        "| last timed output after s | all services caught up after s | kept up |",
        "|---:|---:|---:|---|---|---:|---:|---|",
    ]
    services = ("profile", "scoring", "lifecycle", "engagement")
    for p in r["phases"]:
        lag, end = p["max_lag_while_publishing"], p["at_publish_end"]["lag"]
        drain = p["drain"]
        if drain["drained"]:
            caught = _ms(drain.get("caught_up_s"))
        else:
            left = drain.get("lag_left", {})
            more = [v for v in (drain.get("estimated_more_s_at_drain_rate") or {}).values()
                    if v is not None]
            caught = (
                f"**not within {c['drain_timeout_s']:.0f} s**: lag left "
                + " / ".join(f"{left.get(x, 0):,}" for x in services)
                + (f", ~{max(more):,.0f} s more at the rate it was draining (estimate)"
                   if more else "")
            )
        lines.append(
            f"| {p['target_events_per_s']:,} | {p['publish']['events_per_s']:,.0f} "
            f"| {p['publish']['events']:,} "
            f"| {' / '.join(f'{end.get(s, 0):,}' for s in services)} "
            f"| {' / '.join(f'{lag.get(s, 0):,}' for s in services)} "
            f"| {_ms(drain.get('last_output_after_s'))} | {caught} "
            f"| {'yes' if p['kept_up'] else '**no**'} |"
        )
    undrained = [f"{p['target_events_per_s']:,}" for p in r["phases"] if not p["drain"]["drained"]]
    if undrained:
        lines += ["", f"At {', '.join(undrained)} events/s the backlog had not cleared when the "
                  "benchmark stopped waiting: the latencies below cover only the outputs that "
                  "had arrived by then, so they understate the real ones (the rest came later)."]
    lines += [
        "",
        "| target events/s | output | measured | p50 ms | p95 ms | p99 ms | max ms "
        "| p50 ms by quarter of the phase |",
        "|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    for p in r["phases"]:
        rate = f"{p['target_events_per_s']:,}"
        pu, cs, sc = p["profile_updated"], p["churn_scored"], p["stage_changed_onboarding"]
        hop = cs["hop_from_profile_updated"]
        quarters = " → ".join(_ms(q) for q in cs["p50_ms_by_quarter"])
        rows = [
            ("input → `profile.updated` (first hop)", f"{pu['count']:,}", pu, ""),
            ("input → `churn.scored`", f"{cs['inputs_measured']:,} of {cs['inputs_published']:,} "
             "inputs", cs, quarters),
            ("`profile.updated` → `churn.scored` (scoring hop)", f"{hop['count']:,}", hop, ""),
            ("first transaction → `stage.changed` (onboarding)",
             f"{sc['count']:,} of {sc['new_customers']:,} new customers", sc, ""),
        ]
        for name, measured, s, extra in rows:
            lines.append(
                f"| {rate} | {name} | {measured} | {_ms(s['p50_ms'])} | {_ms(s['p95_ms'])} "
                f"| {_ms(s['p99_ms'])} | {_ms(s['max_ms'])} | {extra} |"
            )
    lines += [
        "",
        "| window | s | profile | scoring | lifecycle | engagement | kafka "
        "| postgres | bench | other processes | host busy |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    windows = []
    for p in r["phases"]:
        res = p["resources"]
        windows.append((f"{p['target_events_per_s']:,}/s: publishing", res["publishing"]))
        windows.append((f"{p['target_events_per_s']:,}/s: draining", res["draining"]))
    if r.get("idle"):
        windows.append(("idle (warmed up, no events)", r["idle"]))
    for name, res in windows:
        cells = " | ".join(
            _cores(res["cores"].get(k)) for k in ("profile", "scoring", "lifecycle",
                                                  "engagement", "kafka", "postgres", "bench")
        )
        busy = "n/a" if res["host_busy"] is None else f"{res['host_busy']:.0%}"
        lines.append(
            f"| {name} | {res['wall_s']:.1f} | {cells} "
            f"| {_cores(res.get('other_processes_cores'))} | {busy} |"
        )
    lines += ["", f"CPU in cores (CPU seconds ÷ phase seconds) on a {r.get('host_cpus', '?')}-CPU "
              f"host{_background(r)}. Other processes: host CPU not spent by the processes "
              "named (other tenants of the machine)."]
    if r.get("skipped_rates_after_undrained_phase"):
        lines += ["", "Not run, because the phase before did not drain: "
                  + ", ".join(f"{x:,}" for x in r["skipped_rates_after_undrained_phase"])
                  + " events/s."]
    notes = r.get("notes") or []
    if notes:
        lines += [""] + [f"- {n}" for n in notes]
    return "\n".join(lines)


def _background(r: dict[str, Any]) -> str:
    b = r.get("host_busy_before_run")
    text = "" if b is None else f" that was {b:.0%} busy in the 2 s before the run"
    seen = r.get("seen_running") or []
    if seen:
        text += (" (**not a quiet machine**: " + " and ".join(f"`{x}`" for x in seen)
                 + " ran during this section)")
    return text


def _cores(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2f}"


def render_population(r: dict[str, Any]) -> str:
    if "error" in r:
        return f"{_run_line(r)}: **failed**: {r['error']}"
    c = r["config"]
    lines = [
        f"{_run_line(r)}; N = {c['events']:,} events per population, seed {c['seed']}, "
        f"on a {r.get('host_cpus', '?')}-CPU host{_background(r)}.",
        "",
        "| existing customers | accounts | tables MB (customers + accounts) | COPY s "
        "| distinct customers in the N events | ingest events/s | wall s "
        "| CPU s per 10k events | with relay drained events/s | `profile.updated` "
        "| new customers created | other processes, cores |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for run in r["runs"]:
        s, i = run["seed"], run["profile_ingest"]
        relay = i.get("until_relay_drained", {})
        lines.append(
            f"| {run['population']:,} | {s['accounts']:,} "
            f"| {s['customers_mb'] + s['accounts_mb']:,.0f} ({s['customers_mb']:,.0f} + "
            f"{s['accounts_mb']:,.0f}) | {s['copy_s']:.1f} "
            f"| {run['distinct_customers_in_events']:,} | {i['events_per_s']:,.0f} "
            f"| {i['wall_s']:.2f} | {i['cpu_s_per_10k_events']:.2f} "
            f"| {relay.get('events_per_s', 0):,.0f} "
            f"| {relay.get('profile_updated_published', 0):,} "
            f"| {run['verify']['customers_created']:,} "
            f"| {_cores(i.get('host', {}).get('other_processes_cores'))} |"
        )
    sizes = [run["population"] for run in r["runs"]]
    lines += [
        "",
        f"**Ingest at {sizes[-1]:,} ÷ ingest at {sizes[0]:,} existing customers: "
        f"{r['ratio_largest_to_smallest']:.2f}x**"
        + (f" ({r['ratio_with_relay_largest_to_smallest']:.2f}x until the relay drained)."
           if r.get("ratio_with_relay_largest_to_smallest") is not None else "."),
    ]
    g = r["runs"][-1].get("get_customer")
    if g:
        verdict = "meets" if g["meets_target"] else "misses"
        lines += [
            "",
            f"`GET /v1/customers/{{id}}` on {sizes[-1]:,} customers, {g['count']:,} requests "
            f"one at a time: p50 {_ms(g['p50_ms'])} ms, p95 {_ms(g['p95_ms'])} ms, "
            f"**p99 {_ms(g['p99_ms'])} ms** ({verdict} the {g['target_p99_ms']:g} ms target), "
            f"max {_ms(g['max_ms'])} ms, {g['requests_per_s']:,.0f} requests/s; statuses "
            + ", ".join(f"{k}: {v:,}" for k, v in sorted(g["statuses"].items())) + ".",
        ]
    return "\n".join(lines)


SCORING_DOC_START = "<!-- bench-scoring:start -->"
SCORING_DOC_END = "<!-- bench-scoring:end -->"

SCORING_INTRO = f"""## Scoring throughput

Issue 7's acceptance for the scoring service: its throughput against a bare river loop over
the same features in the same run (target **>= {SCORING_TARGET_RATIO}x**, reported, not
asserted). `./dev bench --only scoring` runs this section alone.

- **Scoring service** (a): the real scoring runtime as `bootstrap()` builds it (consumer
  with its sweep, outbox relay, model holder), in the benchmark process, on a namespace of
  its own, with the learner role off (it learns labels in the background, not per score).
  A warm-up first gives every customer a snapshot, a state and a score (steady state: the
  customers are known). Then a seeded stream of customer activity (transactions, app
  events, NPS answers, bank transactions it reads and skips), each followed by the
  `profile.updated` snapshot profile would emit, is published to real Kafka, and a fresh
  runtime consumes it from the group's offsets: it keeps each customer's state and activity
  log in PostgreSQL, scores every snapshot (facts, probability, band, three counterfactual
  reasons), writes score, history and `churn.scored` to the outbox in the batch's
  transaction, and the relay publishes them. Scores/s runs from the first fetched batch
  until the outbox is empty (every `churn.scored` published); the consumer's own window
  (until the last input batch is committed) is shown too. The champion is a `btyd-logit`
  trained on seeded labelled facts before the run and installed as the served model (not
  cold: it scores, not the prior). The facts of every score, and the CPU time spent in
  `assess_facts`, are noted as the handlers call it (two list appends and two clock reads
  per score).
- **Bare river loop** (b): for exactly those facts, turned into model inputs before timing,
  `predict_proba_one` then `learn_one` of a copy of the same champion, in a plain Python loop
  (median of three runs, each on a fresh copy). It has no Kafka, no database, no facts, no
  reasons.
- **Ceiling** (c): the same events again, in a fresh consumer group, through the consumer
  kit's own loop (fetch, parse and validate every event, commit offsets) which, for every
  `profile.updated`, calls `assess_facts` with the same champion on the facts (a) scored
  (probability, band, reasons) and publishes the `churn.scored` event with the relay's
  producer, awaited before the offsets are committed. It has no database: no inbox, no
  state, no activity log, no facts computed, no history, no outbox. Every scoring service
  built on this kit that publishes each score with its reasons does at least this much per
  score, so (c) / (b) is the highest ratio any of them could reach on this host.
- **Ratio** = (a) / (b), both in wall-clock scores per second on the same host in the same
  run. The per-score breakdown times each step of the scoring path in CPU microseconds on
  the same facts and champion (median of three), so the gap can be read: what the service
  spends outside `assess_facts` is Kafka fetch and parse, the handler and its state, the
  activity log, PostgreSQL statements, the outbox and the relay.
"""


def render_scoring(r: dict[str, Any]) -> str:
    if "error" in r:
        return f"Last run: {r['timestamp']}: **failed**: {r['error']}"
    c, sv, b, d = r["config"], r["service"], r["bare_river"], r["breakdown_cpu_us"]
    cons = sv["consumer"]
    commit = r["git"].get("commit") or "unknown"
    if r["git"].get("dirty"):
        commit += " (uncommitted changes)"

    def server(v: dict[str, Any]) -> str:
        return ", ".join(f"{k} {x:.2f}" for k, x in sorted(v.items())) or "n/a"

    per = sv["per_score_us"]
    lines = [
        f"Last run: {r['timestamp']}, commit {commit}, {r.get('host_cpus', '?')} CPUs, "
        f"{r['event_loop']} loop, {c['events']:,} events over {c['customers']:,} customers, "
        f"{c['partitions']} partitions, batches of up to {c['batch_max_records']} records, "
        f"champion `{c['champion']}` ({c['champion_labels']:,} seeded labels), "
        f"{c['top_reasons']} reasons per score, seed {c['seed']}, on a host"
        f"{_background(r)}.",
        "",
        "| | scores/s | wall s | CPU s (process) | CPU µs per score | server CPU s |",
        "|---|---:|---:|---:|---:|---|",
        f"| (a) Scoring service: Kafka in, PostgreSQL, `churn.scored` published "
        f"| {sv['scores_per_s']:,.0f} | {sv['wall_s']:.2f} | {sv['cpu_s']:.2f} "
        f"| {per['process_cpu']:,.0f} | {server(sv['server_cpu_s'])} |",
        f"| &nbsp;&nbsp;consumer only, until the last input batch committed "
        f"| {cons['scores_per_s']:,.0f} | {cons['wall_s']:.2f} | {cons['cpu_s']:.2f} "
        f"| {cons['cpu_s'] / max(cons['scores'], 1) * 1e6:,.0f} "
        f"| {server(cons['server_cpu_s'])} |",
        f"| (b) Bare river loop: `predict_proba_one` + `learn_one` (median of {b['runs']}) "
        f"| {b['per_s']:,.0f} | {b['wall_s']:.2f} | {b['cpu_s']:.2f} "
        f"| {b['cpu_s'] / b['scores'] * 1e6:,.1f} | |",
    ]
    ceiling = r.get("ceiling")
    if ceiling:
        lines.append(
            f"| (c) Ceiling: the kit's loop + `assess_facts` + `churn.scored` published, "
            f"no database | {ceiling['scores_per_s']:,.0f} | {ceiling['wall_s']:.2f} "
            f"| {ceiling['cpu_s']:.2f} | {ceiling['cpu_us_per_score']:,.0f} "
            f"| {server(ceiling['server_cpu_s'])} |")
    verdict = "meets" if r["meets_target"] else "is below"
    cpu_ratio = (1e6 / per["process_cpu"]) / b["per_cpu_s"] if per["process_cpu"] else 0.0
    inside = per.get("assess_facts_cpu_in_service", d["assess_facts"])
    outside = per["process_cpu"] - inside
    lines += [
        "",
        f"**Scoring service / bare river loop: {r['ratio_service_to_bare']:.3f}x** "
        f"({verdict} the {r['target_ratio']}x target). In CPU of this process alone "
        f"(PostgreSQL's and Kafka's not counted): {cpu_ratio:.3f}x. "
        f"{sv['scores']:,} scores from {sv['events']:,} events, "
        f"{sv['churn_scored_published']:,} `churn.scored` published, "
        f"{sv['dead_lettered']} dead-lettered; the relay finished "
        f"{sv['relay_lag_after_ingest_s']:.2f}s after the last input batch was committed; "
        f"start-up (group join) {sv['startup_wall_s']:.2f}s, not counted.",
    ]
    if ceiling:
        lines += [
            "",
            f"**Ceiling / bare river loop: {r['ratio_ceiling_to_bare']:.3f}x.** (c) does a strict "
            "subset of what any scoring service on this kit must do per score (consume and "
            "validate the input events, probability, band and reasons, publish `churn.scored` "
            "before committing the offsets), with no database, no state and no facts to "
            "compute, on the same events with the same champion after (a). "
            f"The service reaches {sv['scores_per_s'] / ceiling['scores_per_s']:.2f} of it.",
        ]
    lines += [
        "",
        "Per score, CPU µs (same facts, same champion, median of three):",
        "",
        "| step | µs |",
        "|---|---:|",
        f"| facts → model inputs (`inputs_of`) | {d['inputs_of']:.1f} |",
        f"| `predict_proba_one` | {d['predict_proba_one']:.1f} |",
        f"| `learn_one` | {d['learn_one']:.1f} |",
        f"| probability (`ChurnModel.predict`: inputs, then `predict_proba_one`) "
        f"| {d['predict']:.1f} |",
        f"| reasons: counterfactuals the cheap way (`ChurnModel.counterfactuals`) "
        f"| {d['reasons']:.1f} |",
        f"| reasons one full prediction per counterfactual (the way before) "
        f"| {d['reasons_one_prediction_each']:.1f} |",
        f"| `assess_facts`: probability, band and reasons, as the handlers call it "
        f"| {d['assess_facts']:.1f} |",
        f"| the service, per score (process CPU over the window) | {per['process_cpu']:,.1f} |",
        f"| &nbsp;&nbsp;of which in `assess_facts` (timed in the service) | {inside:,.1f} |",
        f"| &nbsp;&nbsp;of which outside `assess_facts` (Kafka, parse, handler, state, "
        f"PostgreSQL, outbox, relay) | {outside:,.1f} |",
    ]
    for k in ("postgres", "kafka"):
        if f"{k}_cpu" in per:
            lines.append(f"| {k} server CPU per score (not in the process's) "
                         f"| {per[f'{k}_cpu']:,.1f} |")
    lines += ["", "Events: " + ", ".join(f"`{k}` {v:,}" for k, v in sorted(r["mix"].items()))
              + ". " + r["mix_notes"]]
    return "\n".join(lines)


def write_block(path: Path, start: str, end: str, intro: str, table: str) -> None:
    """Replace what lies between the markers; append `intro` and the block if missing."""
    block = f"{start}\n{table}\n{end}"
    text = path.read_text() if path.exists() else DOC_INTRO
    if start in text and end in text:
        head, rest = text.split(start, 1)
        _, tail = rest.split(end, 1)
        path.write_text(f"{head}{block}{tail}")
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text.rstrip() + f"\n\n{intro}\n{block}\n")


def say(message: str) -> None:
    sys.stderr.write(f"[bench] {message}\n")
    sys.stderr.flush()


# ------------------------------------------------------------------ entry point


def _int_list(value: Any) -> list[int]:
    """`1000,5000` or `1e6` style lists of positive integers.

    >>> _int_list("1000, 5000"), _int_list([10_000]), _int_list("1e6")
    ([1000, 5000], [10000], [1000000])
    """
    if isinstance(value, str):
        value = [v for v in value.replace(" ", "").split(",") if v]
    return [int(float(v)) for v in value]


class InterferenceWatch:
    """Notes, per section, other workloads seen running on the host (every 2 s)."""

    PATTERNS = ("tenure eval", "pytest")

    def __init__(self) -> None:
        self.section = "ingest"
        self.seen: dict[str, set[str]] = {}
        self.me = os.getpid()

    def scan(self) -> None:
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == self.me:
                continue
            try:
                cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(
                    errors="replace"
                )
            except OSError:
                continue
            for pattern in self.PATTERNS:
                if pattern in cmd:
                    self.seen.setdefault(self.section, set()).add(pattern)

    async def run(self) -> None:
        while True:
            with contextlib.suppress(Exception):
                self.scan()
            await asyncio.sleep(2.0)

    def of(self, section: str) -> list[str]:
        return sorted(self.seen.get(section, set()))


async def run_all(args: argparse.Namespace) -> dict[str, Any]:
    """The ingest benchmark, then end-to-end latency, then population size (each section
    on its own namespace; a failing section is recorded and the others still run)."""
    busy, total = _host_cpu()
    await asyncio.sleep(2.0)
    busy2, total2 = _host_cpu()
    background = round((busy2 - busy) / (total2 - total), 3) if total2 > total else None
    say(f"host busy before the run: {background:.0%} of {os.cpu_count()} CPUs"
        if background is not None else "host load unknown")
    watch = InterferenceWatch()
    watcher = asyncio.create_task(watch.run(), name="bench-interference")
    try:
        return await _run_sections(args, watch, background)
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher


SECTIONS = ("latency", "population", "scoring")  # each under its own key of the results


def selected(args: argparse.Namespace, name: str) -> bool:
    """Whether a section runs: `--only NAME` runs that one alone, else every section but
    the `--skip-NAME` ones (the profile ingest always, unless `--only` names another)."""
    only = getattr(args, "only", None)
    if only:
        return bool(name == only)
    return not getattr(args, f"skip_{name}", False)


async def _run_sections(
    args: argparse.Namespace, watch: InterferenceWatch, background: float | None
) -> dict[str, Any]:
    result: dict[str, Any] = {}
    if selected(args, "ingest"):
        result = await run(args)
        result["host_busy_before_run"] = background
        result["seen_running"] = watch.of("ingest")
    runners: dict[str, Callable[[argparse.Namespace], Any]] = {
        "latency": run_latency, "population": run_population, "scoring": run_scoring,
    }
    sections = [(name, runners[name]) for name in SECTIONS if selected(args, name)]
    for name, section in sections:
        watch.section = name
        try:
            result[name] = await section(args)
            result[name]["host_cpus"] = os.cpu_count()
            result[name]["host_busy_before_run"] = background
        except Exception as exc:  # noqa: BLE001 - recorded, reported, exit status 1
            log.exception("%s section failed", name)
            say(f"{name} section failed: {type(exc).__name__}: {exc}")
            result[name] = {**_stamp(), "error": f"{type(exc).__name__}: {exc}"}
        result[name]["seen_running"] = watch.of(name)
    return result


async def _interruptible(work: Any) -> Any:
    """SIGTERM and SIGINT cancel the run, so every section's cleanup (service processes,
    schemas, topics) still happens; they are honoured even where the shell started the
    benchmark with SIGINT ignored (a background job)."""
    import signal

    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    assert task is not None
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, task.cancel)
    return await work


def main(args: argparse.Namespace) -> int:
    import json

    configure_logging("WARNING")
    for name, default in (
        ("seed", DEFAULT_SEED),
        ("partitions", None),
        ("doc", "docs/benchmarks.md"),
        ("keep", False),
        ("timeout", 600.0),
        ("loop", "auto"),
        ("baseline_runs", 3),
        ("latency_seconds", 20.0),
        ("rates", "1000,5000"),
        ("population", "10000,1000000"),
        ("skip_latency", False),
        ("skip_population", False),
        ("skip_scoring", False),
        ("only", None),
        ("scoring_events", 20_000),
        ("scoring_customers", 2_000),
        ("latency_customers", 2_000),
        ("new_customer_share", 0.04),
        ("drain_timeout", 120.0),
        ("get_requests", 3_000),
    ):
        if not hasattr(args, name):
            setattr(args, name, default)
    if (args.events < 1 or args.customers < 1 or args.baseline_runs < 1
            or args.scoring_events < 1 or args.scoring_customers < 1):
        say("--events, --customers, --baseline-runs, --scoring-events and --scoring-customers "
            "must be positive")
        return 2
    if args.only not in (None, "ingest", *SECTIONS):
        say(f"--only takes one of: ingest, {', '.join(SECTIONS)}")
        return 2
    try:
        args.rates = _int_list(args.rates)
        args.population = _int_list(args.population)
    except ValueError:
        say("--rates and --population take comma-separated integers, e.g. 1000,5000")
        return 2
    if (
        not args.rates or min(args.rates) < 1 or not args.population
        or min(args.population) < 1 or args.latency_seconds <= 0
        or args.latency_customers < 1 or not 0 <= args.new_customer_share < 1
        or args.get_requests < 0 or args.drain_timeout <= 0
    ):
        say("--rates, --population, --latency-seconds, --latency-customers, --drain-timeout "
            "must be positive; --new-customer-share in [0, 1); --get-requests >= 0")
        return 2

    loop_factory = None
    if args.loop in ("auto", "uvloop"):
        try:
            import uvloop

            loop_factory = uvloop.new_event_loop
        except ImportError:
            if args.loop == "uvloop":
                say("uvloop is not installed")
                return 2
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        try:
            result = runner.run(_interruptible(run_all(args)))
        except asyncio.CancelledError:
            say("interrupted; the namespaces made so far were dropped (see above)")
            return 130

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # A skipped section keeps its figures from the run that made them (each is dated).
    previous: dict[str, Any] = {}
    if out.exists():
        with contextlib.suppress(Exception):
            previous = json.loads(out.read_text())
    ingest_ran = "profile_ingest" in result
    if not ingest_ran:
        # The ingest figures (the top level) stay from the run that made them, dated.
        kept = {k: v for k, v in previous.items() if k not in SECTIONS}
        result = {**kept, **({"ingest_carried_over": True} if kept else {}), **result}
    for name in SECTIONS:
        if name not in result and name in previous:
            result[name] = {**previous[name], "carried_over": True}
    result = {**{k: v for k, v in result.items() if k not in SECTIONS},
              **{name: result[name] for name in SECTIONS if name in result}}
    out.write_text(json.dumps(result, indent=2) + "\n")
    doc = Path(args.doc)
    if ingest_ran:
        table = render_table(result)
        write_doc(doc, table)
        sys.stdout.write(table + "\n")
    if "latency" in result and not result["latency"].get("carried_over"):
        text = render_latency(result["latency"])
        write_block(doc, LATENCY_DOC_START, LATENCY_DOC_END, LATENCY_INTRO, text)
        sys.stdout.write("\n" + text + "\n")
    if "population" in result and not result["population"].get("carried_over"):
        text = render_population(result["population"])
        write_block(doc, POPULATION_DOC_START, POPULATION_DOC_END, POPULATION_INTRO, text)
        sys.stdout.write("\n" + text + "\n")
    if "scoring" in result and not result["scoring"].get("carried_over"):
        text = render_scoring(result["scoring"])
        write_block(doc, SCORING_DOC_START, SCORING_DOC_END, SCORING_INTRO, text)
        sys.stdout.write("\n" + text + "\n")
    say(f"wrote {out} and {args.doc}")
    failed = [n for n in SECTIONS if "error" in result.get(n, {})]
    return 1 if failed else 0
