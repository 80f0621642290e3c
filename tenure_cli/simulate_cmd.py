"""`tenure simulate`: publish the synthetic bank's events, write its ground truth."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from shared.settings import PlatformSettings
from shared.topics import ensure_topics
from tenure_cli.progress import Progress
from tenure_cli.publish import EventPublisher
from tenure_cli.simulator import SimConfig, ground_truth, simulate


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--customers", type=int, default=1000, help="how many customers")
    parser.add_argument("--seed", type=int, default=1, help="same seed, same events")
    parser.add_argument("--profile", choices=["full", "purchases"], default="full",
                        help="full bank, or only card purchases (a retailer's raw log)")
    parser.add_argument("--start", default=None,
                        help="first day of history (YYYY-MM-DD); default: --days before today")
    parser.add_argument("--days", type=int, default=540, help="days of history to generate")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--fast-forward", action="store_true",
                      help="publish all history as fast as the broker takes it (the default)")
    mode.add_argument("--rate", type=float, default=None,
                      help="live mode: history older than a day is published at once, then N "
                           "events per second; event times never run ahead of the wall clock "
                           "(later events are stamped with the time they are sent)")
    parser.add_argument("--truth", default=None,
                        help="write ground truth (JSON lines: who churns, when, why) here")
    parser.add_argument("--id-prefix", default="C", help="customer id prefix")
    parser.add_argument("--limit", type=int, default=None, help="stop after N events")


def config_from(args: argparse.Namespace) -> SimConfig:
    if args.start:
        start = datetime.fromisoformat(args.start).replace(tzinfo=UTC)
    else:
        today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        start = today - timedelta(days=args.days)
    return SimConfig(customers=args.customers, seed=args.seed, start=start, days=args.days,
                     profile=args.profile, id_prefix=args.id_prefix)


def write_truth(config: SimConfig, path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with path.open("w") as out:
        for row in ground_truth(config):
            out.write(json.dumps(row, sort_keys=True) + "\n")
            n += 1
    return n


async def run(args: argparse.Namespace) -> int:
    config = config_from(args)
    if args.truth:
        n = write_truth(config, Path(args.truth))
        print(f"ground truth for {n} customers in {args.truth}", file=sys.stderr)
    settings = PlatformSettings()
    await ensure_topics(settings)
    progress = Progress("simulate", total=args.limit)
    live_from = datetime.now(UTC) - timedelta(days=1)
    live_started: float | None = None
    live_count = 0
    async with EventPublisher(settings) as publisher:
        for i, event in enumerate(simulate(config)):
            if args.limit is not None and i >= args.limit:
                break
            if args.rate and event.occurred_at >= live_from:
                if live_started is None:
                    await publisher.flush()
                    live_started = time.monotonic()
                delay = live_started + live_count / args.rate - time.monotonic()
                live_count += 1
                if delay > 0:
                    await asyncio.sleep(delay)
                wall = datetime.now(UTC)
                if event.occurred_at > wall:
                    event = event.model_copy(update={"occurred_at": wall})
                await publisher.send(event)
                await publisher.flush()
            else:
                await publisher.send(event)
            progress.update(publisher.sent)
    progress.done(publisher.sent)
    print(f"published {publisher.sent} events", file=sys.stderr)
    return 0


def main(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(run(args))
    except KeyboardInterrupt:
        return 130
