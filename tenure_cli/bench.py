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
import logging
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
from shared.events import EnvelopeBase, encode_event
from shared.kit import EventConsumer, RawRecord
from shared.logs import configure_logging
from shared.metrics import KitMetrics
from shared.settings import ALL_TOPICS, INPUT_TOPICS, PlatformSettings, ServiceSettings

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

    def __init__(self, *, settings: ServiceSettings, group_id: str):
        super().__init__(
            settings=settings,
            engine=None,  # type: ignore[arg-type]  # never used: no database here
            topics=INPUT_TOPICS.values(),
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
        await self._commit_offsets(batch)
        self.batches_done += 1
        self.metrics.batch_seconds.observe(time.perf_counter() - started)
        self.on_committed()

    async def load_watermarks(self, partitions: Any) -> None:
        return None


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
        meter = Meter(n, server)
        meter.attach(consumer)
        meter.start()
        task = asyncio.create_task(consumer.run(), name="bench-baseline")
        try:
            await _wait(meter, task, timeout, "baseline")
        finally:
            consumer.stop()
            await _finish(task)
        result = meter.window().as_dict()
        result.update(parsed=consumer.parsed, rejected=consumer.rejected)
        results.append(result)
    ranked = sorted(results, key=lambda r: r["events_per_s"])
    median = dict(ranked[len(ranked) // 2])
    median["runs"] = runs
    median["runs_events_per_s"] = [r["events_per_s"] for r in results]
    return median


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
        deadline = time.monotonic() + timeout
        while True:
            async with check.connect() as conn:
                backlog = await conn.scalar(sa.text("SELECT count(*) FROM outbox"))
            if backlog == 0:
                relay_done = Mark.now()
                relay_done = Mark(relay_done.wall, relay_done.cpu, server.snapshot())
                break
            if time.monotonic() > deadline:
                log.warning("outbox still holds %s rows after %ss", backlog, timeout)
                break
            await asyncio.sleep(0.02)
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
    return out


def _loop_name() -> str:
    """uvloop when the running loop is uvloop's (as under uvicorn), else asyncio."""
    return "uvloop" if "uvloop" in type(asyncio.get_running_loop()).__module__ else "asyncio"


DOC_INTRO = f"""# Benchmarks

`./dev bench` (or `tenure bench` with `TENURE_KAFKA_BOOTSTRAP` and `TENURE_DATABASE_URL` set)
measures how fast the profile service ingests events compared with the bare consumer kit,
on the real Kafka broker and PostgreSQL of the `dev` profile. It never touches the demo's
data: each run creates its own topics (`bench<hex>.*`) and schema (`bench<hex>_profile`)
and drops them at the end.

In one process, one run:

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
it is reported, not asserted. `bench/results.json` holds every figure of the last run; the
event mix is listed under the table.

Options: `tenure bench --events N --customers C --seed S --partitions P --baseline-runs R
--keep` (`--keep` leaves the namespace in place for inspection); `./dev bench` passes them on.
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


def say(message: str) -> None:
    sys.stderr.write(f"[bench] {message}\n")
    sys.stderr.flush()


# ------------------------------------------------------------------ entry point


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
    ):
        if not hasattr(args, name):
            setattr(args, name, default)
    if args.events < 1 or args.customers < 1 or args.baseline_runs < 1:
        say("--events, --customers and --baseline-runs must be positive")
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
        result = runner.run(run(args))

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    table = render_table(result)
    write_doc(Path(args.doc), table)
    sys.stdout.write(table + "\n")
    say(f"wrote {out} and {args.doc}")
    return 0
