"""`tenure`: the platform's command line (topics, migrations, tokens, contracts, bench...).

Exit codes every command keeps, so scripts can trust them: 0 done; 1 an unexpected error
(a bug: the traceback says where); 2 bad arguments (argparse, or a command's own checks);
3 the command ran but could not finish what was asked (each command's --help says when);
4 Kafka, PostgreSQL or a service could not be reached; 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys
from collections.abc import Callable, Sequence
from typing import Any

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
        if not args.services:
            from shared.keys import KeySettings
            from shared.keys import ensure as ensure_privacy

            await ensure_privacy(KeySettings())  # the key store, legal holds, retention runs
            print("migrated privacy")

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


def _delegate(module: str) -> Callable[[argparse.Namespace], int]:
    """A command run by `module.main(args)`, imported only when that command is chosen (so
    `tenure dlq ...` does not pay for the simulator's or the evaluation's imports)."""

    def run(args: argparse.Namespace) -> int:
        command = importlib.import_module(f"tenure_cli.{module}")
        return command.main(args)  # type: ignore[no-any-return]

    return run


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole command line; with `command`, only that command's options are built (what
    `main` does: importing every command's module would cost each start-up a second)."""

    def wanted(name: str) -> bool:
        return command is None or command == name

    def lazy(name: str, module: str, **parser: Any) -> argparse.ArgumentParser:
        """A command whose options and code live in `tenure_cli.<module>` (its
        `add_arguments` and `main`), imported only when that command is chosen."""
        command_parser = sub.add_parser(name, **parser)
        if wanted(name):
            importlib.import_module(f"tenure_cli.{module}").add_arguments(command_parser)
        command_parser.set_defaults(func=_delegate(module))
        return command_parser

    parser = argparse.ArgumentParser(
        prog="tenure",
        description="Tenure customer-lifecycle platform: set up topics and schemas, mint "
        "tokens, publish simulated or imported history, report churn risk, inspect and replay "
        "dead letters, evaluate and benchmark. Addresses come from TENURE_KAFKA_BOOTSTRAP and "
        "TENURE_DATABASE_URL (and TENURE_TOPIC_PREFIX when tests isolate themselves). "
        "`tenure COMMAND --help` explains each command.",
        epilog="Exit codes: 0 done; 1 unexpected error (a bug); 2 bad arguments; 3 could not "
        "finish what was asked (see the command's help); 4 Kafka, PostgreSQL or a service "
        "unreachable; 130 interrupted.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    topics = sub.add_parser(
        "topics", help="create the platform's topics",
        description="`tenure topics ensure` creates every missing topic with the platform's "
        "partition count (TENURE_PARTITIONS) and configs, and fails if an existing topic has "
        "another partition count (one customer's events must share a partition index). "
        "Idempotent. Exit codes: 0 ready, 4 Kafka unreachable.",
    )
    topics.add_argument("action", choices=["ensure"], help="ensure: create what is missing")
    topics.set_defaults(func=_cmd_topics)

    migrate = sub.add_parser(
        "migrate", help="run every service's migrations to head",
        description="Creates each service's schema and runs its Alembic migrations to head; "
        "run it before the services start (compose and Kubernetes run it as a one-shot "
        "step). Idempotent. Exit codes: 0 migrated, 4 PostgreSQL unreachable.",
    )
    migrate.add_argument("services", nargs="*", help="only these services")
    migrate.set_defaults(func=_cmd_migrate)

    token = sub.add_parser(
        "token", help="mint a development bearer token",
        description="Prints a signed bearer token (HS256, TENURE_JWT_SECRET) with the given "
        "scopes, e.g. --scopes 'profile:read scoring:read'. For development and tests; "
        "production uses the bank's identity provider.",
    )
    token.add_argument("--scopes", required=True, help="comma- or space-separated scopes")
    token.add_argument("--subject", default="dev-user", help="who the token names (sub)")
    token.add_argument("--kind", choices=["person", "service"], default="person",
                       help="a person's reads are audited; a service is another system")
    token.add_argument("--rm-id", default=None,
                       help="a relationship manager's id: limits reads to their book")
    token.add_argument("--ttl", type=int, default=8 * 3600, help="lifetime in seconds")
    token.set_defaults(func=_cmd_token)

    lazy(
        "simulate", "simulate_cmd",
        help="publish a seeded synthetic bank's events (and its ground truth)",
        description="A reproducible retail bank: customers, products, salaries, spending, "
        "app sessions, feedback, and churners who decline before they leave. Events go to "
        "Kafka through the public contract, like any publisher's.",
    )

    lazy(
        "churn-report", "report",
        help="every customer's churn risk as of a date, once the platform has caught up",
        description="Waits until every consumer group has caught up and every outbox is "
        "empty, then writes customer_id, probability, horizon_days, band, reasons, stage. "
        "Exit codes: 0 written, 2 bad arguments, 3 not caught up in time, 4 service error.",
    )

    lazy(
        "eval", "eval_cmd",
        help="run the simulator through the platform and score churn against ground truth",
        description="For each run of --config (eval/config.yaml): simulates a bank with known "
        "churners on a private namespace, streams it through the four services, and scores "
        "the platform's as-of churn probabilities against the ground truth next to a recency "
        "and a BG/NBD baseline (AUC, lift, calibration, fairness by segment); writes --out "
        "and --doc. Long: progress goes to stderr. Exit codes: 0 written, 4 Kafka or "
        "PostgreSQL unreachable.",
    )

    lazy(
        "import", "importer",
        help="load existing history (CSV or JSONL) as contract events, in event-time order",
        description="Validates every row against the event contract, rejects bad rows to a "
        "rejects file with their reasons, sorts by event time (external merge sort) and "
        "publishes with deterministic event ids. See docs/import.md. Exit codes: 0 imported "
        "(even with rejects), 2 bad arguments or unreadable file, 3 more rejects than "
        "--max-reject-ratio (nothing published), 4 Kafka failure.",
    )

    lazy(
        "backtest", "backtest",
        help="replay a history file through a private platform and judge its churn scores",
        description="Reads the file as `tenure import` does, replays the events up to "
        "--as-of through the four services on a private namespace, and judges the churn "
        "report as of that date against what the file says happened in the next --horizon "
        "days, next to the recency and BG/NBD baselines (AUC with paired bootstrap margins, "
        "lift, calibration). Long: progress goes to stderr. Exit codes: 0 written, 2 bad "
        "arguments or a file that does not cover the horizon, 4 Kafka or PostgreSQL failed.",
    )

    lazy(
        "dlq", "dlq",
        help="list dead letters with their reasons; replay them to their topic",
        description="Dead letters are messages a service refused (malformed, invalid, "
        "unregistered source, too large, a handler error), kept on tenure.dlq.v1 with the "
        "original bytes, where they came from and why. `list` shows them; `replay` "
        "re-publishes selected ones to their original topic once the cause is fixed. "
        "Exit codes: 0 done, 2 bad arguments, 3 nothing matched (replay), 4 Kafka "
        "unreachable.",
    )

    lazy(
        "chaos", "chaos",
        help="faults under load (SIGKILL each service, restart the broker, crash PostgreSQL); "
        "counts lost inputs, duplicated effects, messages sent twice",
        description="Runs on a private broker and PostgreSQL it starts itself; writes the "
        "figures to --out and docs/reliability.md. Exit codes: 0 all zero, 1 something was "
        "lost or doubled.",
    )

    lazy(
        "partners", "partners",
        help="partner banks: principals, ACLs and topics at the broker, shared customers",
        description="Each partner is its own SCRAM principal that may only write to its own "
        "topics (tenure.partner.<id>.*); the ingress service checks and translates what it "
        "publishes. See docs/partners.md. Exit codes: 0 done, 2 operator error.",
    )

    contracts = sub.add_parser(
        "contracts", help="write JSON Schema and AsyncAPI documents",
        description="Generates the event contract for publishers outside the bank from the "
        "models in shared/events.py: one JSON Schema per event type and an AsyncAPI 3 "
        "document. A test fails when the committed files are stale.",
    )
    contracts.add_argument("--out", default="docs/contracts", help="folder to write into")
    contracts.set_defaults(func=_cmd_contracts)

    lazy(
        "keys", "keys",
        help="rotate master and field keys online; what each key id still protects",
        description="Crypto-shredding keys (docs/data-protection.md): `rotate` re-wraps "
        "customer data keys and re-encrypts profile's fields under the active keys in small "
        "transactions while the services run; `status` counts what each key id protects.",
    )

    lazy(
        "retention", "retention",
        help="purge tables past their retention period; set topic retention; legal holds",
        description="The retention policy of every table and topic (docs/data-protection.md). "
        "`run` purges (legal holds respected) and erases ended relationships; `hold` and "
        "`release` manage legal holds; `policy` prints the periods.",
    )

    bench = sub.add_parser(
        "bench", help="run the benchmark; writes bench/results.json",
        description="Publishes a fixed event mix and measures the consumer kit alone "
        "against profile's ingest into PostgreSQL, end-to-end latency at paced rates and "
        "ingest with large populations; writes bench/results.json and docs/benchmarks.md. "
        "Progress goes to stderr. Exit codes: 0 measured, 1 a section failed (its error is "
        "recorded in the results), 2 bad arguments, 4 Kafka or PostgreSQL unreachable.",
    )
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
    bench.add_argument("--skip-scoring", action="store_true",
                       help="skip the scoring throughput section")
    bench.add_argument("--only", choices=["ingest", "latency", "population", "scoring"],
                       default=None,
                       help="run this section alone (the others' last figures stay, dated)")
    bench.add_argument("--scoring-events", type=int, default=20_000,
                       help="scoring throughput: events to publish (activity and snapshots)")
    bench.add_argument("--scoring-customers", type=int, default=2_000,
                       help="scoring throughput: customers")
    bench.set_defaults(func=_delegate("bench"))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # "" (no command yet, e.g. `tenure --help`): every summary, no command's options.
    command = next((a for a in argv if not a.startswith("-")), "")
    args = build_parser(command).parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if not _unreachable(exc):
            raise
        print(f"tenure {args.command}: cannot reach the infrastructure: "
              f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 4


def _unreachable(exc: BaseException) -> bool:
    """Kafka, PostgreSQL or a service down (exit 4), as opposed to a bug (a traceback)."""
    import errno

    from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError, NoBrokersAvailable
    from sqlalchemy.exc import InterfaceError, OperationalError

    kinds = (KafkaConnectionError, KafkaTimeoutError, NoBrokersAvailable, OperationalError,
             InterfaceError, ConnectionError)
    refused = {errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ETIMEDOUT}
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, kinds) or (isinstance(seen, OSError) and (
                seen.errno in refused or "Connect call failed" in str(seen))):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


if __name__ == "__main__":
    sys.exit(main())
