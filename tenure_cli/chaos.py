"""`tenure chaos`: faults under load, then a count by event id of what was lost or doubled.

On a private broker and a private PostgreSQL (tenure_cli/chaos_infra.py) with the four
services as real processes, the simulator publishes at a steady rate while, in turn, each
service is killed with SIGKILL and restarted, the broker is restarted, and PostgreSQL is
crashed (`pg_ctl stop -m immediate`) and restarted. When the platform has caught up, it counts:

- inputs lost: every acknowledged input event id, and every output id a service reads, that
  is neither in the reading service's inbox nor dead-lettered by it;
- effects duplicated: transactions counted twice in the profile against the published
  events, and engagement actions decided twice for the same playbook and trigger;
- messages sent twice: deliveries the bank's gateway (a local webhook sink) received more
  than once for one action, and actions delivered twice for one trigger.

It writes the figures as JSON and into docs/reliability.md. Target: all zero.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import itertools
import json
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import sqlalchemy as sa
from aiokafka import AIOKafkaConsumer, TopicPartition
from sqlalchemy.ext.asyncio import create_async_engine

from shared.db import migrate
from shared.events import EnvelopeBase
from shared.settings import DLQ_TOPIC, OUTPUT_TOPICS, PlatformSettings, topic_of
from shared.topics import ensure_topics
from tenure_cli.chaos_infra import PrivateKafka, PrivatePostgres
from tenure_cli.procs import ROOT, ServiceProcess, free_port, wait_port
from tenure_cli.services import SERVICE_NAMES, migrations_dir, settings_class


@dataclass
class ChaosConfig:
    customers: int = 40  # per round of the simulator (rounds repeat while the faults last)
    days: int = 2
    seed: int = 11
    rate: float = 20.0  # events per second while the faults happen
    pause: float = 3.0  # seconds between one fault's recovery and the next fault
    down: float = 2.0  # seconds a killed component stays down
    catch_up_timeout: float = 300.0
    start_timeout: float = 300.0  # a (re)started service must serve within this
    workdir: Path | None = None
    keep: bool = False


@dataclass
class Timeline:
    started: float = field(default_factory=time.monotonic)
    steps: list[dict[str, Any]] = field(default_factory=list)

    def log(self, what: str, **extra: Any) -> None:
        entry = {"at_s": round(time.monotonic() - self.started, 1), "what": what, **extra}
        self.steps.append(entry)
        print(f"[chaos] {entry['at_s']:7.1f}s {what}", file=sys.stderr)


# ------------------------------------------------------------------ the gateway sink


class WebhookSink:
    """The bank's messaging gateway, as far as delivery is concerned: it records every POST."""

    def __init__(self) -> None:
        self.port = free_port()
        self.received: list[dict[str, Any]] = []
        self._server: Any = None
        self._task: asyncio.Task[Any] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/messages"

    async def start(self) -> None:
        import uvicorn
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import Response
        from starlette.routing import Route

        async def receive(request: Request) -> Response:
            body = await request.json()
            self.received.append({"key": request.headers.get("Idempotency-Key"),
                                  "action_id": body.get("action_id"),
                                  "customer_id": body.get("customer_id")})
            return Response(status_code=204)

        app = Starlette(routes=[Route("/messages", receive, methods=["POST"])])
        self._server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port,
                                                     log_level="warning", lifespan="off"))
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task


# ------------------------------------------------------------------ load


@dataclass
class Load:
    """Simulator events at a steady rate until told to stop; only what the broker acknowledged
    counts as published. A batch the broker or the key store failed is sent again (same ids)."""

    settings: PlatformSettings
    supply: Iterator[EnvelopeBase]
    rate: float
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    acknowledged: dict[str, EnvelopeBase] = field(default_factory=dict)
    retries: int = 0
    batch: int = 10

    async def run(self) -> None:
        from tenure_cli.publish import EventPublisher

        started = time.monotonic()
        publisher: EventPublisher | None = None
        chunk: list[EnvelopeBase] = []
        try:
            while not self.stop.is_set():
                if not chunk:
                    chunk = list(itertools.islice(self.supply, self.batch))
                    if not chunk:
                        return
                due = started + (len(self.acknowledged) + len(chunk)) / self.rate
                if due > time.monotonic():
                    await asyncio.sleep(due - time.monotonic())
                try:
                    if publisher is None:
                        publisher = EventPublisher(self.settings, request_timeout_ms=5_000)
                        await publisher.__aenter__()
                    for event in chunk:
                        await publisher.send(event)
                    await publisher.flush()
                except Exception:  # noqa: BLE001 - the broker or the key store is down: resend
                    self.retries += 1
                    if publisher is not None:
                        with contextlib.suppress(Exception):
                            await publisher.__aexit__(None, None, None)
                    publisher = None
                    await asyncio.sleep(0.5)
                    continue
                for event in chunk:
                    self.acknowledged[str(event.event_id)] = event
                chunk = []
        finally:
            if publisher is not None:
                with contextlib.suppress(Exception):
                    await publisher.__aexit__(None, None, None)


def chaos_events(config: ChaosConfig) -> Iterator[EnvelopeBase]:
    """Rounds of a small bank's last days, ending now, each with new customers and a new seed,
    for as long as the faults last. Recent history means engagement's freshness rule lets
    messages go out, so deliveries are exercised too."""
    from tenure_cli.simulator import SimConfig, simulate

    for round_ in itertools.count():
        now = datetime.now(UTC)
        sim = SimConfig(customers=config.customers, seed=config.seed + round_,
                        start=now - timedelta(days=config.days), days=config.days,
                        id_prefix=f"R{round_}C")
        for event in simulate(sim):
            if event.occurred_at > now:
                break
            yield event


# ------------------------------------------------------------------ the run


async def run_chaos(config: ChaosConfig) -> dict[str, Any]:
    from tenure_cli.report import wait_until_caught_up

    scratch = Path(config.workdir or tempfile.mkdtemp(prefix="tenure-chaos-"))
    scratch.mkdir(parents=True, exist_ok=True)
    timeline = Timeline()
    kafka = PrivateKafka(scratch / "kafka")
    pg = PrivatePostgres(Path(tempfile.mkdtemp(prefix="tenure-chaos-pg-")))
    services: dict[str, ServiceProcess] = {}
    sink = WebhookSink()
    try:
        await asyncio.gather(asyncio.to_thread(kafka.start), asyncio.to_thread(pg.start))
        await asyncio.to_thread(pg.create_database)
        timeline.log("private broker and PostgreSQL up")
        settings = PlatformSettings(kafka_bootstrap=kafka.bootstrap, database_url=pg.url)
        await ensure_topics(settings)
        for name in SERVICE_NAMES:
            await migrate(settings_class(name)(kafka_bootstrap=kafka.bootstrap,
                                               database_url=pg.url), migrations_dir(name))
        await sink.start()
        ports = {name: free_port() for name in SERVICE_NAMES}
        env = {
            "TENURE_KAFKA_BOOTSTRAP": kafka.bootstrap,
            "TENURE_DATABASE_URL": pg.url,
            "TENURE_LOG_LEVEL": "WARNING",
            "TENURE_ENGAGEMENT_WEBHOOK_URL": sink.url,
            "TENURE_ENGAGEMENT_PROFILE_URL": f"http://127.0.0.1:{ports['profile']}",
            "TENURE_ENGAGEMENT_DELIVERY_POLL_SECONDS": "0.5",
        }
        for name in SERVICE_NAMES:
            services[name] = ServiceProcess(name, env, scratch / "logs" / f"{name}.log",
                                            port=ports[name])
            services[name].start(wait=False)
        for process in services.values():
            await _listening(process, config.start_timeout)
        timeline.log("services up")

        load = Load(settings, chaos_events(config), config.rate)
        publishing = asyncio.create_task(load.run())

        def step(what: str) -> None:
            timeline.log(what, published=len(load.acknowledged))

        step("load starts")
        await asyncio.sleep(config.pause)
        for name, process in services.items():
            process.kill()
            step(f"SIGKILL {name}")
            await asyncio.sleep(config.down)
            process.start(wait=False)
            await _listening(process, config.start_timeout)
            step(f"{name} restarted")
            await asyncio.sleep(config.pause)
        await asyncio.to_thread(kafka.stop)
        step("broker stopped")
        await asyncio.sleep(config.down)
        await asyncio.to_thread(kafka.start)
        step("broker restarted")
        await asyncio.sleep(config.pause)
        await asyncio.to_thread(pg.stop, "immediate")
        step("PostgreSQL crashed (immediate stop)")
        await asyncio.sleep(config.down)
        await asyncio.to_thread(pg.start)
        step("PostgreSQL restarted")
        # Keep the load on until the publisher is through after the last fault too.
        after_faults = len(load.acknowledged)
        deadline = time.monotonic() + config.catch_up_timeout
        while len(load.acknowledged) < after_faults + 3 * load.batch and not publishing.done():
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        load.stop.set()
        await publishing
        timeline.log("load done", published=len(load.acknowledged), resends=load.retries)

        urls = {name: p.url for name, p in services.items()}
        async with httpx.AsyncClient(timeout=10) as client:
            await wait_until_caught_up(settings, client, config.catch_up_timeout, urls,
                                       quiet=True)
        await _deliveries_settled(pg.url, config.catch_up_timeout)
        timeline.log("caught up")
        figures = await count(settings, pg.url, load, sink)
        figures["timeline"] = timeline.steps
        figures["config"] = {"customers": config.customers, "days": config.days,
                             "seed": config.seed, "rate": config.rate, "pause_s": config.pause,
                             "down_s": config.down}
        return figures
    finally:
        for process in services.values():
            with contextlib.suppress(Exception):
                process.stop()
        await sink.stop()
        kafka.stop()
        with contextlib.suppress(Exception):
            pg.stop("fast")
        if not config.keep:
            pg.remove()
            import shutil

            shutil.rmtree(scratch, ignore_errors=True)


async def _listening(process: ServiceProcess, timeout: float) -> None:
    """Wait for a (re)started service to serve; a loaded machine can take a while."""
    try:
        await asyncio.to_thread(wait_port, process.port, timeout)
    except TimeoutError as exc:
        tail = process.log_path.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"{process.service} did not start: {exc}\n{tail}") from exc


async def _deliveries_settled(database_url: str, timeout: float) -> None:
    """No action is due for delivery any more (deferred ones wait for their time)."""
    engine = create_async_engine(database_url)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            async with engine.connect() as conn:
                due = await conn.scalar(sa.text(
                    "SELECT count(*) FROM engagement.actions WHERE status = 'pending' "
                    "AND next_attempt_at <= now()"))
            if not due:
                return
            await asyncio.sleep(1)
    finally:
        await engine.dispose()


# ------------------------------------------------------------------ counting


async def _read_all(settings: PlatformSettings, topics: list[str]) -> dict[str, list[Any]]:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=None,
                                enable_auto_commit=False, auto_offset_reset="earliest",
                                max_partition_fetch_bytes=5_000_000)
    await consumer.start()
    try:
        parts = [TopicPartition(settings.topic(t), p) for t in topics
                 for p in range(settings.partitions)]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)
        out: dict[str, list[Any]] = {t: [] for t in topics}
        by_name = {settings.topic(t): t for t in topics}

        async def behind() -> bool:
            for tp in parts:
                if await consumer.position(tp) < ends[tp]:
                    return True
            return False

        while await behind():
            for tp, messages in (await consumer.getmany(timeout_ms=500)).items():
                out[by_name[tp.topic]].extend(messages)
        return out
    finally:
        await consumer.stop()


def _event_id(raw: bytes | None) -> str | None:
    try:
        document = orjson.loads(raw or b"")
    except orjson.JSONDecodeError:
        return None
    return str(document.get("event_id")) if isinstance(document, dict) else None


def unaccounted(expected: set[str], inbox: set[str], dead_lettered: set[str]) -> int:
    """Event ids a service should have read that it neither recorded nor dead-lettered.

    >>> unaccounted({"a", "b", "c"}, inbox={"a"}, dead_lettered={"b"})
    1
    """
    return len(expected - inbox - dead_lettered)


def counted_against(
    expected: Counter[str], counted: dict[str, int], skip: set[str]
) -> tuple[int, int]:
    """(counted too often, counted too rarely) per customer, summed; erased ones skipped.

    >>> counted_against(Counter({"c1": 3, "c2": 2, "c3": 1}), {"c1": 4, "c2": 1}, skip={"c3"})
    (1, 1)
    """
    over = sum(max(counted.get(c, 0) - n, 0) for c, n in expected.items() if c not in skip)
    under = sum(max(n - counted.get(c, 0), 0) for c, n in expected.items() if c not in skip)
    return over, under


def repeats(keys: Iterable[Any]) -> int:
    """How many times a key came again after its first time.

    >>> repeats(["a", "b", "a", "a"])
    2
    """
    return sum(n - 1 for n in Counter(keys).values() if n > 1)


async def count(settings: PlatformSettings, database_url: str, load: Load,
                sink: WebhookSink) -> dict[str, Any]:
    wire = await _read_all(settings, [*OUTPUT_TOPICS.values(), DLQ_TOPIC])
    dead: dict[str, set[str]] = {name: set() for name in SERVICE_NAMES}
    for m in wire[DLQ_TOPIC]:
        headers = {k: v.decode() for k, v in (m.headers or [])}
        event_id = _event_id(m.value)
        if event_id and headers.get("dlq.service") in dead:
            dead[headers["dlq.service"]].add(event_id)
    outputs = {t: {_event_id(m.value) for m in wire[t]} - {None} for t in OUTPUT_TOPICS.values()}
    republished = {t: len(wire[t]) - len(outputs[t]) for t in OUTPUT_TOPICS.values()}

    engine = create_async_engine(database_url)
    lost: dict[str, dict[str, int]] = {}
    dead_lettered: dict[str, int] = {}
    try:
        async with engine.connect() as conn:
            for name in SERVICE_NAMES:
                topics = importlib.import_module(f"services.{name}.consumer").TOPICS
                inbox = {str(r[0]) for r in await conn.execute(
                    sa.text(f'SELECT event_id FROM "{name}".inbox'))}
                expected_inputs = {i for i, e in load.acknowledged.items()
                                   if topic_of(e.event_type) in topics}
                expected_outputs = set().union(*(outputs[t] for t in topics if t in outputs))
                lost[name] = {
                    "inputs": unaccounted(expected_inputs, inbox, dead[name]),
                    "outputs_of_other_services": unaccounted(expected_outputs, inbox, dead[name]),
                }
                dead_lettered[name] = len(dead[name])
            duplicated_actions = int(await conn.scalar(sa.text(
                "SELECT coalesce(sum(n - 1), 0) FROM (SELECT count(*) AS n FROM engagement.actions "
                "GROUP BY customer_id, playbook, trigger_event_id) t WHERE n > 1")) or 0)
            delivered_twice = int(await conn.scalar(sa.text(
                "SELECT coalesce(sum(n - 1), 0) FROM (SELECT count(*) AS n FROM engagement.actions "
                "WHERE status = 'delivered' GROUP BY customer_id, playbook, trigger_event_id) t "
                "WHERE n > 1")) or 0)
            delivered = int(await conn.scalar(sa.text(
                "SELECT count(*) FROM engagement.actions WHERE status = 'delivered'")) or 0)
            counted = {r[0]: int(r[1]) for r in await conn.execute(sa.text(
                "SELECT customer_id, transaction_count FROM profile.customers"))}
    finally:
        await engine.dispose()

    expected_txn: Counter[str] = Counter(
        e.customer_id for e in load.acknowledged.values() if e.event_type == "transaction.posted")
    erased = {e.customer_id for e in load.acknowledged.values()
              if e.event_type == "customer.erased"}
    over, under = counted_against(expected_txn, counted, erased)
    posts_repeated = repeats(r["key"] for r in sink.received)
    figures = {
        "inputs_published": len(load.acknowledged),
        "inputs_lost": sum(v["inputs"] for v in lost.values()),
        "outputs_lost": sum(v["outputs_of_other_services"] for v in lost.values()),
        "effects_duplicated": over + duplicated_actions,
        # What reaches a customer twice: two actions delivered for one trigger. A POST repeated
        # with the same Idempotency-Key (a crash between the gateway's answer and the commit
        # that records it) is dropped by the gateway, as the webhook contract requires; it is
        # counted below, not hidden.
        "messages_sent_twice": delivered_twice,
        "detail": {
            "lost_by_service": lost,
            "dead_lettered_by_service": dead_lettered,
            "profile_transactions_counted_twice": over,
            "profile_transactions_missing": under,
            "engagement_actions_decided_twice": duplicated_actions,
            "engagement_actions_delivered": delivered,
            "gateway_posts": len(sink.received),
            "gateway_posts_repeated_for_one_action": posts_repeated,
            "actions_delivered_twice_for_one_trigger": delivered_twice,
            "outputs_republished_on_the_wire": republished,
            "publisher_resends": load.retries,
        },
    }
    return figures


# ------------------------------------------------------------------ report


def write_report(figures: dict[str, Any], path: Path) -> None:
    d = figures["detail"]
    c = figures["config"]
    rows = "\n".join(f"| {s['at_s']:.1f} s | {s['what']} | {s.get('published', '')} |"
                     for s in figures["timeline"])
    lost_rows = "\n".join(
        f"| {name} | {v['inputs']} | {v['outputs_of_other_services']} | "
        f"{d['dead_lettered_by_service'][name]} |"
        for name, v in d["lost_by_service"].items()
    )
    wire = ", ".join(f"`{t}` {n}" for t, n in d["outputs_republished_on_the_wire"].items())
    path.write_text(f"""# Reliability under fault

Measured by `./dev chaos` (`tenure chaos`) on {figures['measured_at']}: the simulator's
events (rounds of {c['customers']} new customers, each round {c['days']} days of history
ending now) published at {c['rate']:.0f} events/s from before the first fault until after the
last, while each service is killed with SIGKILL and restarted, then the broker is restarted, then
PostgreSQL is crashed (`pg_ctl stop -m immediate`, fsync on) and restarted, each down for
{c['down_s']:.0f} s with {c['pause_s']:.0f} s between faults. The run uses a private broker and
a private PostgreSQL (never the dev or test ones), the four services as real processes, and a
local webhook sink as the bank's messaging gateway. Counting is by event id once every
consumer group has caught up and every outbox is empty.

## Figures (target: all zero)

| what | count |
|---|---|
| inputs published (acknowledged by the broker) | {figures['inputs_published']} |
| **inputs lost** (acknowledged, in no reading service's inbox, not dead-lettered) | **{figures['inputs_lost']}** |
| **outputs lost** (on a topic, in no reading service's inbox, not dead-lettered) | **{figures['outputs_lost']}** |
| **effects duplicated** (transactions counted twice by profile + engagement actions decided twice for one trigger) | **{figures['effects_duplicated']}** |
| **messages sent twice** (two actions delivered to the gateway for one trigger) | **{figures['messages_sent_twice']}** |
| gateway POSTs repeated with the same `Idempotency-Key` (dropped by the gateway, see below) | {d['gateway_posts_repeated_for_one_action']} |

| service | inputs lost | outputs of other services lost | dead-lettered |
|---|---|---|---|
{lost_rows}

Also measured: transactions missing from profile's counts {d['profile_transactions_missing']};
engagement actions delivered {d['engagement_actions_delivered']} ({d['gateway_posts']} gateway
POSTs); outputs re-published on the wire after a crash (same event id, dropped by every
inbox): {wire}; batches the publisher re-sent after a failed acknowledgement:
{d['publisher_resends']}.

## What happened when

| time | step | inputs acknowledged so far |
|---|---|---|
{rows}

## How the platform keeps these at zero

- A consumed event's id (inbox), its state changes and the events it causes (outbox) commit
  in one PostgreSQL transaction; offsets are committed after it. A SIGKILL before the commit
  loses nothing (the batch is read again); after it, the re-read batch is found in the inbox.
- The outbox relay publishes, then deletes. A crash between the two re-publishes rows whose
  event ids are deterministic, so those copies (counted above as "re-published on the wire")
  change nothing downstream.
- Delivery is at least once per action with the action id as `Idempotency-Key`. A crash (of
  engagement or of PostgreSQL) between the gateway's answer and the commit that records it
  makes engagement POST the same action again: no system can know whether a message left
  when the answer was lost. The gateway drops the repeat by its key, so the customer gets
  one message; the repeats are counted in the table above rather than hidden. A gateway that
  ignores `Idempotency-Key` would send each of them twice.
- A broker or database outage pauses the consumers and the relay; they resume without a
  restart.

Re-run with `./dev chaos` (options: `.venv/bin/tenure chaos --help`); the tests run a short
version (`tests/integration/test_chaos.py`).
""")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--customers", type=int, default=100,
                        help="customers per round of the simulator")
    parser.add_argument("--days", type=int, default=2,
                        help="days of history per round, ending now")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--rate", type=float, default=20.0,
                        help="events per second, for as long as the faults last")
    parser.add_argument("--pause", type=float, default=5.0, help="seconds between faults")
    parser.add_argument("--down", type=float, default=3.0, help="seconds a component is down")
    parser.add_argument("--out", default="bench/chaos.json", help="figures as JSON")
    parser.add_argument("--doc", default="docs/reliability.md", help="report to (re)write")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directories")


def main(args: argparse.Namespace) -> int:
    import logging

    # The publisher's client complains at length while the broker is down on purpose.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    config = ChaosConfig(customers=args.customers, days=args.days, seed=args.seed,
                         rate=args.rate, pause=args.pause, down=args.down, keep=args.keep)
    figures = asyncio.run(run_chaos(config))
    figures["measured_at"] = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    out = ROOT / args.out if not Path(args.out).is_absolute() else Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(figures, indent=2, default=str) + "\n")
    doc = ROOT / args.doc if not Path(args.doc).is_absolute() else Path(args.doc)
    write_report(figures, doc)
    headline = {k: figures[k] for k in ("inputs_published", "inputs_lost", "outputs_lost",
                                         "effects_duplicated", "messages_sent_twice")}
    print(json.dumps(headline))
    zero = all(figures[k] == 0 for k in ("inputs_lost", "outputs_lost", "effects_duplicated",
                                         "messages_sent_twice"))
    return 0 if zero else 1
