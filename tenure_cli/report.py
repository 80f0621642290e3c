"""`tenure churn-report`: every customer's churn risk as of a date, once the platform caught up."""

from __future__ import annotations

import argparse
import asyncio
import csv
import importlib
import os
import sys
import time
from collections.abc import AsyncGenerator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from shared.auth import ServiceTokens
from shared.settings import PlatformSettings
from tenure_cli.services import SERVICE_NAMES

DEFAULT_PORTS = {"profile": 8101, "scoring": 8102, "lifecycle": 8103, "engagement": 8104}
COLUMNS = ["customer_id", "probability", "horizon_days", "band", "reasons", "stage", "model",
           "cold_start"]


class NotCaughtUp(RuntimeError):
    pass


def service_urls() -> dict[str, str]:
    """Where the services answer: TENURE_<NAME>_URL, else the default local ports."""
    return {
        name: os.environ.get(f"TENURE_{name.upper()}_URL", f"http://127.0.0.1:{port}")
        for name, port in DEFAULT_PORTS.items()
    }


def parse_as_of(text: str) -> datetime:
    """A bare date means the end of that day in UTC (events on that day count).

    >>> parse_as_of("2025-06-30").isoformat()
    '2025-07-01T00:00:00+00:00'
    >>> parse_as_of("2025-06-30T12:00:00+02:00").isoformat()
    '2025-06-30T10:00:00+00:00'
    """
    if len(text) == 10:
        day = datetime.fromisoformat(text).replace(tzinfo=UTC)
        return day + timedelta(days=1)
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError("--as-of needs a date (YYYY-MM-DD) or a time with a UTC offset")
    return moment.astimezone(UTC)


async def consumer_lag(settings: PlatformSettings) -> dict[str, int]:
    """Messages each service's consumer group has not yet committed, per service."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    probe = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=None)
    await admin.start()
    await probe.start()
    try:
        lags: dict[str, int] = {}
        for name in SERVICE_NAMES:
            topics = importlib.import_module(f"services.{name}.consumer").TOPICS
            parts = [
                TopicPartition(settings.topic(t), p)
                for t in topics
                for p in range(settings.partitions)
            ]
            ends = await probe.end_offsets(parts)
            committed = await admin.list_consumer_group_offsets(
                f"{settings.topic_prefix}tenure-{name}"
            )
            lags[name] = sum(
                max(ends[tp] - (committed[tp].offset if tp in committed else 0), 0) for tp in parts
            )
        return lags
    finally:
        await probe.stop()
        await admin.close()


async def outbox_backlogs(client: httpx.AsyncClient, urls: dict[str, str]) -> dict[str, int]:
    """Per service, the work it has accepted and not finished: its outbox plus any other
    `*_backlog` its /readyz reports (scoring: closed windows not yet learnt); -1 if it did
    not answer."""
    backlogs: dict[str, int] = {}
    for name in SERVICE_NAMES:
        try:
            r = await client.get(f"{urls[name]}/readyz")
            checks = r.json()["checks"]
            backlogs[name] = int(checks["outbox_backlog"]) + sum(
                int(v) for k, v in checks.items()
                if k.endswith("_backlog") and k != "outbox_backlog")
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            backlogs[name] = -1
    return backlogs


async def wait_until_caught_up(
    settings: PlatformSettings, client: httpx.AsyncClient, timeout: float,
    urls: dict[str, str] | None = None, quiet: bool = False,
) -> None:
    """Every consumer group at the end of its topics and every outbox empty, twice in a row."""
    deadline = time.monotonic() + timeout
    calm = 0
    lags: dict[str, int] = {}
    backlogs: dict[str, int] = {}
    while True:
        lags = await consumer_lag(settings)
        backlogs = await outbox_backlogs(client, urls or service_urls())
        if all(v == 0 for v in lags.values()) and all(v == 0 for v in backlogs.values()):
            calm += 1
            if calm >= 2:
                return
        else:
            calm = 0
            if not quiet:
                print(f"waiting: lag {lags}, backlog {backlogs}", file=sys.stderr)
        if time.monotonic() > deadline:
            raise NotCaughtUp(
                f"the platform did not catch up within {timeout:.0f}s: consumer lag {lags}, "
                f"backlog {backlogs} (outbox, and scoring's windows to learn; -1: service "
                "unreachable)"
            )
        await asyncio.sleep(1.0)


async def _pages(client: httpx.AsyncClient, url: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    after = None
    while True:
        query = dict(params, limit=5000)
        if after:
            query["after"] = after
        r = await client.get(url, params=query)
        r.raise_for_status()
        body = r.json()
        items.extend(body["items"])
        after = body.get("next")
        if not after:
            return items


REPORT_SCOPES = ["scoring:read", "lifecycle:read"]


def report_tokens(settings: PlatformSettings) -> ServiceTokens:
    """The report's bearer tokens: minted with the dev key in dev mode; in oidc mode asked of
    the bank's identity provider by client credentials (TENURE_OIDC_CLIENT_ID / _SECRET), like
    any service calling another."""
    return ServiceTokens(settings, subject="churn-report", scopes=REPORT_SCOPES)


async def report_token(settings: PlatformSettings) -> str:
    return await report_tokens(settings).get()


class BearerAuth(httpx.Auth):
    """A current token on every request: waiting for the platform to catch up can outlast
    one token (dev tokens live five minutes; the provider's are renewed before expiry)."""

    def __init__(self, tokens: ServiceTokens):
        self.tokens = tokens

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        request.headers["Authorization"] = f"Bearer {await self.tokens.get()}"
        yield request


async def churn_report(
    as_of: datetime, out: Path, *, timeout: float = 600.0,
    settings: PlatformSettings | None = None, urls: dict[str, str] | None = None,
    quiet: bool = False,
) -> int:
    settings = settings or PlatformSettings()
    urls = urls or service_urls()
    auth = BearerAuth(report_tokens(settings))
    async with httpx.AsyncClient(auth=auth, timeout=120) as client:
        await wait_until_caught_up(settings, client, timeout, urls, quiet)
        scores = await _pages(client, f"{urls['scoring']}/v1/churn/report",
                              {"as_of": as_of.isoformat()})
        stages = {
            s["customer_id"]: s["stage"]
            for s in await _pages(client, f"{urls['lifecycle']}/v1/stages/customers", {})
        }
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        for s in scores:
            writer.writerow(
                {
                    "customer_id": s["customer_id"],
                    "probability": f"{s['probability']:.6f}",
                    "horizon_days": s["horizon_days"],
                    "band": s["band"],
                    "reasons": "; ".join(s["reasons"]),
                    "stage": stages.get(s["customer_id"], ""),
                    "model": s["model"],
                    "cold_start": str(s["cold_start"]).lower(),
                }
            )
    return len(scores)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--as-of", required=True,
                        help="date (YYYY-MM-DD: through the end of that day, UTC) or an RFC 3339 time")
    parser.add_argument("--out", required=True, help="CSV file to write")
    parser.add_argument("--timeout", type=float, default=600,
                        help="seconds to wait for consumers and outboxes to catch up")


def main(args: argparse.Namespace) -> int:
    try:
        as_of = parse_as_of(args.as_of)
    except ValueError as exc:
        print(f"churn-report: {exc}", file=sys.stderr)
        return 2
    try:
        n = asyncio.run(churn_report(as_of, Path(args.out), timeout=args.timeout))
    except NotCaughtUp as exc:
        print(f"churn-report: {exc}", file=sys.stderr)
        return 3
    except httpx.HTTPError as exc:
        print(f"churn-report: a service did not answer: {exc}", file=sys.stderr)
        return 4
    print(f"wrote {n} customers as of {as_of.isoformat()} to {args.out}", file=sys.stderr)
    return 0
