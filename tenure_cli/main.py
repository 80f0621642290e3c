"""`tenure`: the platform's command line (topics, migrations, tokens, contracts, bench...)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from shared.settings import PlatformSettings


def _cmd_topics(args: argparse.Namespace) -> int:
    from shared.topics import ensure_topics

    created = asyncio.run(ensure_topics(PlatformSettings()))
    print(f"topics ready ({len(created)} created)")
    return 0


def _cmd_migrate(args: argparse.Namespace) -> int:
    from shared.db import migrate
    from tenure_cli.services import SERVICE_NAMES, migrations_dir, settings_class

    async def run() -> None:
        for name in args.services or (*SERVICE_NAMES, "ingress"):
            await migrate(settings_class(name)(), migrations_dir(name))
            print(f"migrated {name}")

    asyncio.run(run())
    return 0


def _cmd_token(args: argparse.Namespace) -> int:
    from shared.auth import mint_token

    settings = PlatformSettings()
    scopes = [s for s in args.scopes.replace(",", " ").split() if s]
    print(
        mint_token(
            settings.jwt_secret,
            subject=args.subject,
            scopes=scopes,
            kind=args.kind,
            ttl_seconds=args.ttl,
            audience=settings.jwt_audience,
            rm_id=args.rm_id,
        )
    )
    return 0


def _cmd_contracts(args: argparse.Namespace) -> int:
    from shared.contracts import write_contracts

    for path in write_contracts(args.out):
        print(path)
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from tenure_cli.bench import main as bench_main

    return bench_main(args)


def _cmd_simulate(args: argparse.Namespace) -> int:
    from tenure_cli.simulate_cmd import main as simulate_main

    return simulate_main(args)


def _cmd_churn_report(args: argparse.Namespace) -> int:
    from tenure_cli.report import main as report_main

    return report_main(args)


def _cmd_eval(args: argparse.Namespace) -> int:
    from tenure_cli.eval_cmd import main as eval_main

    return eval_main(args)


def _cmd_import(args: argparse.Namespace) -> int:
    from tenure_cli.importer import main as import_main

    return import_main(args)


def _cmd_partners(args: argparse.Namespace) -> int:
    from tenure_cli.partners import main as partners_main

    return partners_main(args)


def _cmd_keys(args: argparse.Namespace) -> int:
    from tenure_cli.keys import main as keys_main

    return keys_main(args)


def _cmd_retention(args: argparse.Namespace) -> int:
    from tenure_cli.retention import main as retention_main

    return retention_main(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tenure",
        description="Tenure customer-lifecycle platform: operate topics, schemas, tokens, "
        "contracts and benchmarks. Addresses come from TENURE_KAFKA_BOOTSTRAP and "
        "TENURE_DATABASE_URL.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    topics = sub.add_parser("topics", help="create the platform's topics")
    topics.add_argument("action", choices=["ensure"])
    topics.set_defaults(func=_cmd_topics)

    migrate = sub.add_parser("migrate", help="run every service's migrations to head")
    migrate.add_argument("services", nargs="*", help="only these services")
    migrate.set_defaults(func=_cmd_migrate)

    token = sub.add_parser("token", help="mint a development bearer token")
    token.add_argument("--scopes", required=True, help="comma- or space-separated scopes")
    token.add_argument("--subject", default="dev-user")
    token.add_argument("--kind", choices=["person", "service"], default="person")
    token.add_argument("--rm-id", default=None)
    token.add_argument("--ttl", type=int, default=8 * 3600, help="lifetime in seconds")
    token.set_defaults(func=_cmd_token)

    simulate = sub.add_parser(
        "simulate",
        help="publish a seeded synthetic bank's events (and its ground truth)",
        description="A reproducible retail bank: customers, products, salaries, spending, "
        "app sessions, feedback, and churners who decline before they leave. Events go to "
        "Kafka through the public contract, like any publisher's.",
    )
    from tenure_cli.simulate_cmd import add_arguments as simulate_arguments

    simulate_arguments(simulate)
    simulate.set_defaults(func=_cmd_simulate)

    report = sub.add_parser(
        "churn-report",
        help="every customer's churn risk as of a date, once the platform has caught up",
        description="Waits until every consumer group has caught up and every outbox is "
        "empty, then writes customer_id, probability, horizon_days, band, reasons, stage. "
        "Exit codes: 0 written, 2 bad arguments, 3 not caught up in time, 4 service error.",
    )
    from tenure_cli.report import add_arguments as report_arguments

    report_arguments(report)
    report.set_defaults(func=_cmd_churn_report)

    evaluate = sub.add_parser(
        "eval",
        help="run the simulator through the platform and score churn against ground truth",
    )
    from tenure_cli.eval_cmd import add_arguments as eval_arguments

    eval_arguments(evaluate)
    evaluate.set_defaults(func=_cmd_eval)

    importer = sub.add_parser(
        "import",
        help="load existing history (CSV or JSONL) as contract events, in event-time order",
        description="Validates every row against the event contract, rejects bad rows to a "
        "rejects file with their reasons, sorts by event time (external merge sort) and "
        "publishes with deterministic event ids. See docs/import.md. Exit codes: 0 imported "
        "(even with rejects), 2 bad arguments or unreadable file, 3 more rejects than "
        "--max-reject-ratio (nothing published), 4 Kafka failure.",
    )
    from tenure_cli.importer import add_arguments as import_arguments

    import_arguments(importer)
    importer.set_defaults(func=_cmd_import)

    partners = sub.add_parser(
        "partners",
        help="partner banks: principals, ACLs and topics at the broker, shared customers",
        description="Each partner is its own SCRAM principal that may only write to its own "
        "topics (tenure.partner.<id>.*); the ingress service checks and translates what it "
        "publishes. See docs/partners.md. Exit codes: 0 done, 2 operator error.",
    )
    from tenure_cli.partners import add_arguments as partners_arguments

    partners_arguments(partners)
    partners.set_defaults(func=_cmd_partners)

    contracts = sub.add_parser("contracts", help="write JSON Schema and AsyncAPI documents")
    contracts.add_argument("--out", default="docs/contracts")
    contracts.set_defaults(func=_cmd_contracts)

    keys = sub.add_parser(
        "keys",
        help="rotate master and field keys online; what each key id still protects",
        description="Crypto-shredding keys (docs/data-protection.md): `rotate` re-wraps "
        "customer data keys and re-encrypts profile's fields under the active keys in small "
        "transactions while the services run; `status` counts what each key id protects.",
    )
    from tenure_cli.keys import add_arguments as keys_arguments

    keys_arguments(keys)
    keys.set_defaults(func=_cmd_keys)

    retention = sub.add_parser(
        "retention",
        help="purge tables past their retention period; set topic retention; legal holds",
        description="The retention policy of every table and topic (docs/data-protection.md). "
        "`run` purges (legal holds respected) and erases ended relationships; `hold` and "
        "`release` manage legal holds; `policy` prints the periods.",
    )
    from tenure_cli.retention import add_arguments as retention_arguments

    retention_arguments(retention)
    retention.set_defaults(func=_cmd_retention)

    bench = sub.add_parser("bench", help="run the benchmark; writes bench/results.json")
    bench.add_argument("--events", type=int, default=20_000, help="events to publish")
    bench.add_argument("--customers", type=int, default=2_000)
    bench.add_argument("--out", default="bench/results.json")
    bench.add_argument("--doc", default="docs/benchmarks.md", help="markdown report to update")
    bench.add_argument("--seed", type=int, default=20_260_101, help="seed of the event mix")
    bench.add_argument("--partitions", type=int, default=None, help="default: TENURE_PARTITIONS")
    bench.add_argument("--baseline-runs", type=int, default=3,
                       help="baseline repetitions; the median run is reported")
    bench.add_argument("--timeout", type=float, default=600.0, help="seconds per phase")
    bench.add_argument("--loop", choices=["auto", "uvloop", "asyncio"], default="auto",
                       help="event loop (auto: uvloop if installed, as under uvicorn)")
    bench.add_argument("--keep", action="store_true", help="keep the bench topics and schema")
    bench.add_argument("--latency-seconds", type=float, default=20.0,
                       help="end-to-end latency: seconds of paced publishing per rate")
    bench.add_argument("--rates", default="1000,5000",
                       help="end-to-end latency: comma-separated publish rates, events/s")
    bench.add_argument("--latency-customers", type=int, default=2_000,
                       help="end-to-end latency: existing customers (registered in a warm-up)")
    bench.add_argument("--new-customer-share", type=float, default=0.04,
                       help="end-to-end latency: share of events from new customers "
                       "(half registrations, half first transactions)")
    bench.add_argument("--drain-timeout", type=float, default=120.0,
                       help="end-to-end latency: seconds to wait for the backlog to clear")
    bench.add_argument("--population", default="10000,1000000",
                       help="profile ingest with this many existing customers (comma-separated)")
    bench.add_argument("--get-requests", type=int, default=3_000,
                       help="GET /v1/customers/{id} requests on the largest population (0: skip)")
    bench.add_argument("--skip-latency", action="store_true",
                       help="skip the end-to-end latency section")
    bench.add_argument("--skip-population", action="store_true",
                       help="skip the population-size section")
    bench.set_defaults(func=_cmd_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
