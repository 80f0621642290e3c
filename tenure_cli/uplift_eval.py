"""`./dev eval`'s playbook uplift: a closed loop between the platform and the simulated bank.

The simulator advances in steps of whole days. After each step the platform catches up, its
delivery worker sends what engagement decided to a messaging gateway run here (the real
HMAC-signed webhook), and every message delivered reaches the simulated customer from the
end of the step on; the customer responds with the known, seeded effect of the simulator
(`SimConfig.offer_effects`). Engagement runs with a freshness window covering the simulated
period: in this fast-forward the past is "live", so its decisions are sent, not historical.

The estimate is the platform's own: `GET /v1/playbooks/{id}/uplift` (holdout churn rate
minus treated churn rate, 95% Wald interval) over decisions whose whole window was observed.
The truth comes from the simulator's potential outcomes: for every decision counted, the
customer's world is generated twice, with and without the playbook's messages (holdouts
receive theirs hypothetically at the moment theirs were decided and read), and the same
outcome the endpoint counts (every account closed, or the 90-day silence that makes a
customer dormant, within the window) is read off each. The true effect is the mean
difference; the estimate should hold it within its interval.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import sys
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition

from shared.auth import mint_token
from shared.db import migrate
from shared.events import EnvelopeBase
from shared.settings import OUTPUT_TOPICS, PlatformSettings
from shared.topics import ensure_topics
from tenure_cli.procs import ServiceProcess, free_port
from tenure_cli.publish import EventPublisher
from tenure_cli.report import wait_until_caught_up
from tenure_cli.services import SERVICE_NAMES, migrations_dir, settings_class
from tenure_cli.simulator import Received, SimConfig, Simulation, Treatments, customer_events

GATEWAY_SECRET = "tenure-eval-gateway"


# ------------------------------------------------------------------ the outcome, independently


def _customer_initiated(e: EnvelopeBase) -> bool:
    if e.event_type == "transaction.posted":
        return e.payload.initiated_by.value == "customer"  # type: ignore[attr-defined]
    return e.event_type in ("app.click", "feedback.submitted")


def churn_within(events: Iterable[EnvelopeBase], start: datetime, window: timedelta,
                 dormant_after: timedelta = timedelta(days=90)) -> bool:
    """The outcome the uplift endpoint counts, read off a customer's events: every account
    closed, or a silence that makes the customer dormant (no customer-initiated activity for
    `dormant_after` after some activity), completing in (start, start + window]."""
    end = start + window
    activity: list[datetime] = []
    open_accounts: set[str] = set()
    for e in events:
        if _customer_initiated(e):
            activity.append(e.occurred_at)
        if e.event_type == "account.opened":
            open_accounts.add(e.payload.account_id)  # type: ignore[attr-defined]
        elif e.event_type == "account.closed":
            open_accounts.discard(e.payload.account_id)  # type: ignore[attr-defined]
            if not open_accounts and start < e.occurred_at <= end:
                return True
    activity.sort()
    for i, t in enumerate(activity):
        onset = t + dormant_after
        silent = i + 1 == len(activity) or activity[i + 1] > onset
        if silent and start < onset <= end:
            return True
    return False


@dataclass(frozen=True)
class Row:
    """One decision the endpoint counts: treated (sent or deferred) or holdout."""

    action_id: str
    customer_id: str
    playbook: str
    template: str
    decided_at: datetime
    treated: bool
    known_at: datetime  # end of the step after which the loop read it


def true_effects(config: SimConfig, rows: list[Row], delivered: Treatments,
                 window: timedelta) -> dict[str, dict[str, Any]]:
    """Per playbook, from the simulator's potential outcomes: the mean of
    churn(without the playbook's messages) - churn(with them) over its counted decisions.

    A customer's world "with" is what they really received, plus, for holdouts, the
    playbook's messages as if delivered when decided; "without" drops that playbook's."""
    out: dict[str, dict[str, Any]] = {}
    prefix = config.id_prefix
    for playbook in sorted({r.playbook for r in rows}):
        mine = [r for r in rows if r.playbook == playbook]
        worlds: dict[str, tuple[list[EnvelopeBase], list[EnvelopeBase]]] = {}
        for cid in sorted({r.customer_id for r in mine}):
            real = delivered.of(cid)
            others = [(cid, r.fresh()) for r in real if r.playbook != playbook]
            own = [(cid, r.fresh()) for r in real if r.playbook == playbook]
            own += [(cid, Received(r.template, r.known_at, playbook, r.decided_at))
                    for r in mine if r.customer_id == cid and not r.treated]
            index = int(cid[len(prefix):])
            without = [e for e in customer_events(config, index, Treatments(others))
                       if e.occurred_at < config.end]
            with_ = [e for e in customer_events(config, index, Treatments(others + own))
                     if e.occurred_at < config.end]
            worlds[cid] = (without, with_)
        y0 = [churn_within(worlds[r.customer_id][0], r.decided_at, window) for r in mine]
        y1 = [churn_within(worlds[r.customer_id][1], r.decided_at, window) for r in mine]
        treated = [i for i, r in enumerate(mine) if r.treated]
        holdout = [i for i, r in enumerate(mine) if not r.treated]
        n = len(mine)
        base = sum(y0) / n if n else None
        effect = (sum(y0) - sum(y1)) / n if n else None
        out[playbook] = {
            "decisions": n,
            "true_effect": effect,
            "true_churn_without": base,
            "true_relative_cut": effect / base if base else None,
            "true_effect_on_treated": (
                sum(y0[i] - y1[i] for i in treated) / len(treated) if treated else None),
            # The same difference of means as the endpoint, on the simulator's own outcome:
            # separates sampling noise from how the platform observes churn.
            "oracle_estimate": (
                sum(y0[i] for i in holdout) / len(holdout) - sum(y1[i] for i in treated)
                / len(treated) if treated and holdout else None),
        }
    return out


# ------------------------------------------------------------------ the loop's peers


@dataclass
class MessagingGateway:
    """The bank's messaging gateway as the simulated customers' letterbox: it checks each
    webhook's signature and keeps what arrived since the last step."""

    secret: str
    port: int = field(default_factory=free_port)
    arrived: list[dict[str, Any]] = field(default_factory=list)
    unsigned: int = 0
    server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/messages"

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    def take(self) -> list[dict[str, Any]]:
        taken, self.arrived = self.arrived, []
        return taken

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            headers = {}
            for line in head.decode().split("\r\n")[1:]:
                if ":" in line:
                    k, v = line.split(":", 1)
                    headers[k.strip().lower()] = v.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            expected = "sha256=" + hmac.new(self.secret.encode(), body,
                                            hashlib.sha256).hexdigest()
            if hmac.compare_digest(headers.get("x-tenure-signature", ""), expected):
                self.arrived.append(json.loads(body))
                status = b"200 OK"
            else:
                self.unsigned += 1
                status = b"401 Unauthorized"
            writer.write(b"HTTP/1.1 " + status +
                         b"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            await writer.drain()
        finally:
            writer.close()


class ActionsReader:
    """Reads engagement's decisions and delivery outcomes off its output topic."""

    def __init__(self, settings: PlatformSettings):
        self.topic = settings.topic(OUTPUT_TOPICS["engagement_actions"])
        self.parts = [TopicPartition(self.topic, p) for p in range(settings.partitions)]
        self.consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap,
                                         group_id=None, enable_auto_commit=False)
        self.decided: dict[str, dict[str, Any]] = {}
        self.finished: set[str] = set()
        self.new: list[dict[str, Any]] = []

    async def start(self) -> None:
        await self.consumer.start()
        self.consumer.assign(self.parts)
        await self.consumer.seek_to_beginning(*self.parts)

    async def stop(self) -> None:
        await self.consumer.stop()

    async def read_to_end(self) -> None:
        ends = await self.consumer.end_offsets(self.parts)
        while True:
            behind = [tp for tp in self.parts if await self.consumer.position(tp) < ends[tp]]
            if not behind:
                return
            batches = await self.consumer.getmany(timeout_ms=500, max_records=5000)
            for records in batches.values():
                for record in records:
                    event = json.loads(record.value)
                    payload = event["payload"]
                    if event["event_type"] == "engagement.decided":
                        item = {**payload, "customer_id": event["customer_id"],
                                "decided_at": datetime.fromisoformat(event["occurred_at"])}
                        if payload["action_id"] not in self.decided:
                            self.decided[payload["action_id"]] = item
                            self.new.append(item)
                    elif event["event_type"] == "engagement.delivered":
                        self.finished.add(payload["action_id"])

    def undelivered(self) -> int:
        return sum(1 for a, d in self.decided.items() if d["treated"] and a not in self.finished)


# ------------------------------------------------------------------ the run


async def run_uplift(spec: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """One closed-loop run (eval/config.yaml `uplift`); the figures for results.json."""
    effects = {str(k): float(v) for k, v in spec["offer_effects"].items()}
    config = SimConfig(
        customers=int(spec["customers"]), seed=int(spec["seed"]),
        start=datetime.fromisoformat(str(spec["start"])).replace(tzinfo=UTC),
        days=int(spec["days"]), offer_effects=tuple(sorted(effects.items())),
    )
    window = timedelta(days=int(spec.get("window_days", 90)))
    step = timedelta(days=int(spec.get("step_days", 14)))
    holdouts = {str(k): float(v) for k, v in spec["playbooks"].items()}
    # Decisions whose window (and lifecycle's allowed lateness after it) was observed.
    cutoff = config.end - window - timedelta(days=int(spec.get("margin_days", 14)))
    prefix = f"eval{uuid.uuid4().hex[:8]}"
    base = PlatformSettings()
    settings = PlatformSettings(topic_prefix=f"{prefix}.", schema_prefix=f"{prefix}_")
    gateway = MessagingGateway(GATEWAY_SECRET)
    run_dir = workdir / str(spec.get("name", "uplift"))
    env = {
        "TENURE_KAFKA_BOOTSTRAP": base.kafka_bootstrap,
        "TENURE_DATABASE_URL": base.database_url,
        "TENURE_TOPIC_PREFIX": settings.topic_prefix,
        "TENURE_SCHEMA_PREFIX": settings.schema_prefix,
        "TENURE_LOG_LEVEL": "WARNING",
    }
    profile = ServiceProcess("profile", env, run_dir / "profile.log")
    engagement_env = {
        **env,
        # Fast-forward: the simulated past is the loop's present, so nothing is "historical".
        "TENURE_ENGAGEMENT_FRESHNESS_HOURS": str((config.days + 3650) * 24),
        "TENURE_ENGAGEMENT_WEBHOOK_URL": gateway.url,
        "TENURE_ENGAGEMENT_WEBHOOK_SECRET": GATEWAY_SECRET,
        "TENURE_ENGAGEMENT_PROFILE_URL": profile.url,
        "TENURE_ENGAGEMENT_DELIVERY_POLL_SECONDS": "0.2",
    }
    services = [profile] + [
        ServiceProcess(n, engagement_env if n == "engagement" else env, run_dir / f"{n}.log")
        for n in SERVICE_NAMES if n != "profile"
    ]
    urls = {s.service: s.url for s in services}
    await ensure_topics(settings)
    for name in SERVICE_NAMES:
        await migrate(settings_class(name)(topic_prefix=settings.topic_prefix,
                                           schema_prefix=settings.schema_prefix),
                      migrations_dir(name))
    await gateway.start()
    reader = ActionsReader(settings)
    for s in services:
        s.start(wait=False)
    token = mint_token(settings.jwt_secret, subject="eval", kind="service",
                       scopes=["engagement:read", "engagement:admin", "lifecycle:read"],
                       audience=settings.jwt_audience)
    treatments = Treatments()
    rows: list[Row] = []
    started = time.monotonic()
    published = 0
    try:
        for s in services:
            s.wait()
        await reader.start()
        async with httpx.AsyncClient(timeout=120,
                                     headers={"Authorization": f"Bearer {token}"}) as client:
            await _measure_with_holdouts(client, urls["engagement"], holdouts)
            simulation = Simulation(config, treatments)
            async with EventPublisher(settings) as publisher:
                at = config.start
                while at < config.end:
                    until = min(at + step, config.end)
                    for event in simulation.advance(until):
                        await publisher.send(event)
                        published += 1
                    await publisher.flush()
                    await _settle(settings, client, urls, reader,
                                  final=until >= config.end)
                    _deliver(until, gateway, reader, treatments, holdouts, rows)
                    print(f"[eval] uplift: through {until.date()}, {published} events, "
                          f"{len(rows)} measured decisions, "
                          f"{time.monotonic() - started:.0f} s", file=sys.stderr)
                    at = until
            print(f"[eval] uplift: published {published} events in steps of {step.days} days",
                  file=sys.stderr)
            measured = {}
            for playbook in holdouts:
                r = await client.get(
                    f"{urls['engagement']}/v1/playbooks/{playbook}/uplift",
                    params={"window_days": window.days, "decided_before": cutoff.isoformat()})
                r.raise_for_status()
                measured[playbook] = r.json()
        processing_s = time.monotonic() - started
    finally:
        await reader.stop()
        for s in services:
            s.stop()
        await gateway.stop()
        from tenure_cli.private_platform import drop_namespace

        await drop_namespace(settings, prefix)

    counted = [r for r in rows if r.decided_at < cutoff]
    truth = true_effects(config, counted, treatments, window)
    received = [r for cid in treatments.customers() for r in treatments.of(cid)]
    playbooks = {}
    for playbook, m in measured.items():
        t = truth.get(playbook, {})
        true = t.get("true_effect")
        inside = (None if true is None or m["ci_low"] is None
                  else m["ci_low"] <= true <= m["ci_high"])
        playbooks[playbook] = {
            "holdout_share": holdouts[playbook],
            "estimate": m["uplift"], "ci_low": m["ci_low"], "ci_high": m["ci_high"],
            "treated": m["treated"], "holdout": m["holdout"],
            "churn_rate_treated": m["churn_rate_treated"],
            "churn_rate_holdout": m["churn_rate_holdout"],
            **t, "true_effect_in_interval": inside,
        }
    return {
        "name": str(spec.get("name", "uplift")),
        "customers": config.customers, "seed": config.seed, "start": config.start.isoformat(),
        "days": config.days, "step_days": step.days, "window_days": window.days,
        "decided_before": cutoff.isoformat(), "offer_effects": effects,
        "events_published": published, "processing_seconds": processing_s,
        "messages_delivered": len(received),
        "customers_kept": sum(1 for r in received if r.saved),
        "unsigned_webhooks": gateway.unsigned,
        "playbooks": playbooks,
    }


async def _measure_with_holdouts(client: httpx.AsyncClient, url: str,
                                 holdouts: dict[str, float]) -> None:
    """The measured playbooks get the holdout share of the experiment (via the REST API)."""
    for playbook, share in holdouts.items():
        r = await client.get(f"{url}/v1/playbooks/{playbook}")
        r.raise_for_status()
        r = await client.put(f"{url}/v1/playbooks/{playbook}",
                             json={**r.json(), "holdout_share": share})
        r.raise_for_status()


async def _settle(settings: PlatformSettings, client: httpx.AsyncClient, urls: dict[str, str],
                  reader: ActionsReader, *, final: bool) -> None:
    """The platform has taken in the step; what engagement decided has been delivered."""
    await wait_until_caught_up(settings, client, timeout=3600, urls=urls, quiet=True)
    if final:
        # Lifecycle's time-driven stages up to the end, then engagement's reading of them.
        deadline = time.monotonic() + 900
        while not (await client.get(f"{urls['lifecycle']}/v1/sweeper")).json()["settled"]:
            if time.monotonic() > deadline:
                raise TimeoutError("lifecycle did not settle")
            await asyncio.sleep(1.0)
        await wait_until_caught_up(settings, client, timeout=3600, urls=urls, quiet=True)
    deadline = time.monotonic() + 900
    await reader.read_to_end()
    while reader.undelivered():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{reader.undelivered()} decided messages never finished")
        await asyncio.sleep(0.5)
        await reader.read_to_end()


def _deliver(until: datetime, gateway: MessagingGateway, reader: ActionsReader,
             treatments: Treatments, measured: dict[str, float], rows: list[Row]) -> None:
    """Messages that arrived reach their customers from `until`; decisions of the measured
    playbooks become rows, read at `until`."""
    for message in gateway.take():
        decided = reader.decided.get(message["action_id"], {})
        treatments.receive(message["customer_id"], message["template"], until,
                           playbook=decided.get("playbook"),
                           decided_at=decided.get("decided_at"))
    for d in reader.new:
        counted = d["treated"] or d["decision"] == "holdout"
        if d["playbook"] in measured and counted:
            rows.append(Row(d["action_id"], d["customer_id"], d["playbook"], d["action"],
                            d["decided_at"], bool(d["treated"]), until))
    reader.new = []


def render(result: dict[str, Any] | None) -> list[str]:
    """The "Playbook uplift" section of docs/evaluation.md."""
    lines = ["## Playbook uplift", ""]
    if not result:
        return lines + ["Not run (no `uplift` section in the configuration, or excluded).", ""]
    effects = ", ".join(f"{k} {v:.0%}" for k, v in result["offer_effects"].items())
    lines += [
        f"A closed loop ({result['customers']} customers, seed {result['seed']}, "
        f"{result['days']} days from {result['start'][:10]}, steps of {result['step_days']} "
        f"days): after each step the platform caught up and delivered what engagement "
        f"decided, through its signed webhook, to the simulated customers, who respond to "
        f"it from the next step with a known, seeded effect: a message keeps a customer who "
        f"was about to leave with probability {effects}. Engagement ran with a freshness "
        f"window covering the simulated period (the fast-forward's past is its present). "
        f"{result['messages_delivered']:,} messages reached customers; "
        f"{result['customers_kept']} leavers stayed because of one.",
        "",
        f"Estimate: `GET /v1/playbooks/{{id}}/uplift` over decisions before "
        f"{result['decided_before'][:10]} (their {result['window_days']}-day window observed): "
        f"holdout churn rate minus treated churn rate (churn = dormant or churned within the "
        f"window), 95% Wald interval. Truth: the simulator's potential outcomes for the same "
        f"decisions (each customer's world generated with and without the playbook's "
        f"messages; holdouts as if theirs had been delivered), the same outcome read off "
        f"the events; *oracle* is the estimator on the simulator's outcome (sampling noise "
        f"without the platform's observation of churn).",
        "",
        "| playbook | holdout share | treated | holdout | churn treated | churn holdout | "
        "estimate | 95% interval | true effect | truth in interval | oracle | "
        "true relative cut |",
        "|---|---:|---:|---:|---:|---:|---:|---|---:|---|---:|---:|",
    ]
    for name, p in result["playbooks"].items():
        interval = ("n/a" if p["ci_low"] is None
                    else f"[{p['ci_low']:.3f}, {p['ci_high']:.3f}]")
        inside = {True: "yes", False: "**no**", None: "n/a"}[p.get("true_effect_in_interval")]
        lines.append(
            f"| {name} | {p['holdout_share']} | {p['treated']} | {p['holdout']} | "
            f"{_f(p['churn_rate_treated'])} | {_f(p['churn_rate_holdout'])} | "
            f"{_f(p['estimate'])} | {interval} | {_f(p.get('true_effect'))} | {inside} | "
            f"{_f(p.get('oracle_estimate'))} | {_f(p.get('true_relative_cut'))} |")
    zero = [name for name, p in result["playbooks"].items()
            if p["ci_low"] is not None and p["ci_low"] <= 0 <= p["ci_high"]]
    lines += [
        "",
        f"{result['events_published']:,} events; the loop took "
        f"{result['processing_seconds']:.0f} s (each step waits for the platform to catch up "
        f"and deliver). *True relative cut*: the true effect over the churn rate without the "
        f"messages; it differs from the configured response by the luck of the seeded draws "
        f"and because a message only helps a customer who has not left yet when it arrives, "
        f"and only with a leaving the window would have seen."
        + (f" The intervals of {', '.join(zero)} also hold 0: at this size the estimate "
           f"recovers the truth but could not yet tell a bank the playbook works."
           if zero else ""),
    ]
    return lines + [""]


def _f(v: Any) -> str:
    return "n/a" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)
