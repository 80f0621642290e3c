"""`tenure partners`: partner banks as principals at the broker, and whom they may speak for.

    tenure partners add <id>        topics, SCRAM credential, WRITE ACL on the partner's prefix
    tenure partners list            registry, credentials and ACLs as the broker has them
    tenure partners rotate <id>     a new password (the old one stops working for new sessions)
    tenure partners remove <id>     ACLs and credential deleted: the broker refuses it at once
    tenure partners map <id> <partner-customer-id> <customer-id>   (also --file CSV)
    tenure partners unmap <id> <partner-customer-id>
    tenure partners customers <id>  the shared-customer mapping

The broker is reached on the platform's own listener (TENURE_KAFKA_BOOTSTRAP), whose principal
is a super user; the partner gets the address of the partner listener
(TENURE_PARTNER_BOOTSTRAP) and the CA that signed it. See docs/partners.md.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import sys
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from services.ingress import store
from services.ingress.domain import (
    InvalidPartnerId,
    check_partner_id,
    partner_topics,
    principal,
    source_of,
    topic_prefix,
    username,
)
from services.ingress.settings import IngressSettings
from shared.db import make_engine, migrate
from shared.topics import ensure_topics
from tenure_cli.partner_access import BrokerAccess, new_password


class PartnerError(RuntimeError):
    """An operator's mistake (unknown partner, already added...): exit code 2."""


@dataclass(frozen=True)
class Credentials:
    """What the partner's engineers receive (the password once, over a secure channel)."""

    partner_id: str
    username: str
    password: str
    mechanism: str
    security_protocol: str
    bootstrap_servers: str
    source: str
    topics: dict[str, str]


async def _prepare(settings: IngressSettings) -> None:
    from tenure_cli.services import migrations_dir

    await migrate(settings, migrations_dir("ingress"))


async def _db(settings: IngressSettings, work: Any) -> Any:
    engine = make_engine(settings, pool_size=1)
    try:
        async with engine.begin() as conn:
            return await work(conn)
    finally:
        await engine.dispose()


def _credentials(settings: IngressSettings, partner_id: str, password: str) -> Credentials:
    return Credentials(
        partner_id=partner_id,
        username=username(partner_id),
        password=password,
        mechanism="SCRAM-SHA-512",
        security_protocol="SASL_SSL",
        bootstrap_servers=settings.partner_bootstrap,
        source=source_of(partner_id),
        topics={k: settings.topic(v) for k, v in partner_topics(partner_id).items()},
    )


async def add_partner(settings: IngressSettings, partner_id: str) -> Credentials:
    """Create the partner's lane: its topics, a SCRAM credential and a WRITE ACL on exactly its
    topic prefix. Nothing else is granted: it cannot read, join a group or touch any topic
    outside its prefix."""
    check_partner_id(partner_id)
    await _prepare(settings)
    now = datetime.now(UTC)

    async def active(conn: Any) -> bool:
        found = await store.partner(conn, partner_id)
        return found is not None and found["status"] == "active"

    if await _db(settings, active):
        raise PartnerError(f"partner {partner_id!r} exists: use `tenure partners rotate` for a "
                           "new password")
    await ensure_topics(settings, list(partner_topics(partner_id).values()))
    password = new_password()
    async with BrokerAccess(settings.kafka_bootstrap) as broker:
        await broker.set_scram_password(username(partner_id), password)
        await broker.allow_prefixed_write(principal(partner_id),
                                          settings.topic(topic_prefix(partner_id)))
    await _db(settings, lambda conn: store.register(conn, partner_id, now))
    return _credentials(settings, partner_id, password)


async def rotate_partner(settings: IngressSettings, partner_id: str) -> Credentials:
    """A new password; new sessions with the old one are refused at once, open sessions must
    re-authenticate within the broker's connections.max.reauth.ms."""
    check_partner_id(partner_id)
    await _prepare(settings)
    found = await _db(settings, lambda conn: store.partner(conn, partner_id))
    if found is None or found["status"] != "active":
        raise PartnerError(f"no active partner {partner_id!r}")
    password = new_password()
    async with BrokerAccess(settings.kafka_bootstrap) as broker:
        await broker.set_scram_password(username(partner_id), password)
    await _db(settings, lambda conn: store.mark_rotated(conn, partner_id, datetime.now(UTC)))
    return _credentials(settings, partner_id, password)


async def remove_partner(settings: IngressSettings, partner_id: str) -> dict[str, Any]:
    """Stop the partner at the broker: its ACLs go first (every request is authorized anew, so
    even an open session is refused from now on), then its credential (no new session). Its
    topics and mappings stay, so what it published before removal is still ingested."""
    check_partner_id(partner_id)
    await _prepare(settings)
    async with BrokerAccess(settings.kafka_bootstrap) as broker:
        acls = await broker.delete_acls_of(principal(partner_id))
        credential = await broker.delete_scram(username(partner_id))
    was_active = await _db(
        settings, lambda conn: store.mark_removed(conn, partner_id, datetime.now(UTC))
    )
    if not (acls or credential or was_active):
        raise PartnerError(f"no partner {partner_id!r}")
    return {"partner_id": partner_id, "acls_deleted": acls, "credential_deleted": credential}


async def list_partners(settings: IngressSettings) -> list[dict[str, Any]]:
    """The registry joined with what the broker holds, so drift shows (e.g. a credential left
    behind by hand)."""
    await _prepare(settings)
    rows = await _db(settings, store.all_partners)
    async with BrokerAccess(settings.kafka_bootstrap) as broker:
        users = await broker.scram_users()
        for row in rows:
            row["credential"] = username(row["partner_id"]) in users
            row["acls"] = [str(a) for a in await broker.acls_of(principal(row["partner_id"]))]
    return rows


async def map_customers(
    settings: IngressSettings, partner_id: str, pairs: list[tuple[str, str]]
) -> int:
    """Let the partner speak for these bank customers, each under the partner's own id."""
    check_partner_id(partner_id)
    for partner_customer_id, customer_id in pairs:
        if not (0 < len(partner_customer_id) <= 64 and 0 < len(customer_id) <= 64):
            raise PartnerError("customer ids must be 1-64 characters")
    await _prepare(settings)
    now = datetime.now(UTC)

    async def work(conn: Any) -> int:
        for partner_customer_id, customer_id in pairs:
            await store.map_customer(conn, partner_id, partner_customer_id, customer_id, now)
        return len(pairs)

    try:
        return int(await _db(settings, work))
    except store.UnknownPartner as exc:
        raise PartnerError(str(exc)) from None


async def unmap_customer(settings: IngressSettings, partner_id: str, partner_customer_id: str) -> bool:
    await _prepare(settings)
    return bool(await _db(
        settings, lambda conn: store.unmap_customer(conn, partner_id, partner_customer_id)
    ))


# ------------------------------------------------------------------ command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    sub = parser.add_subparsers(dest="partners_action", required=True)
    add = sub.add_parser("add", help="create a partner's principal, topics and ACLs; prints "
                         "its password once")
    add.add_argument("partner_id")
    sub.add_parser("list", help="partners with their credential and ACLs at the broker")
    rotate = sub.add_parser("rotate", help="issue a new password; prints it once")
    rotate.add_argument("partner_id")
    remove = sub.add_parser("remove", help="delete the partner's ACLs and credential at once")
    remove.add_argument("partner_id")
    mapping = sub.add_parser(
        "map", help="let the partner speak for a bank customer under its own id",
        description="Either PARTNER_CUSTOMER_ID CUSTOMER_ID, or --file with a CSV of "
        "partner_customer_id,customer_id rows (a header row is allowed).",
    )
    mapping.add_argument("partner_id")
    mapping.add_argument("partner_customer_id", nargs="?")
    mapping.add_argument("customer_id", nargs="?")
    mapping.add_argument("--file", type=Path, default=None)
    unmap = sub.add_parser("unmap", help="stop the partner speaking for a customer")
    unmap.add_argument("partner_id")
    unmap.add_argument("partner_customer_id")
    customers = sub.add_parser("customers", help="the partner's shared-customer mapping")
    customers.add_argument("partner_id")
    customers.add_argument("--limit", type=int, default=1000)


def _pairs(args: argparse.Namespace) -> list[tuple[str, str]]:
    if args.file is not None:
        if args.partner_customer_id or args.customer_id:
            raise PartnerError("give either ids or --file, not both")
        with args.file.open(newline="") as handle:
            rows = [r for r in csv.reader(handle) if r]
        if rows and rows[0][:2] == ["partner_customer_id", "customer_id"]:
            rows = rows[1:]
        bad = [i + 1 for i, r in enumerate(rows) if len(r) != 2]
        if bad:
            raise PartnerError(f"{args.file}: rows {bad[:5]} do not have exactly two columns")
        return [(r[0].strip(), r[1].strip()) for r in rows]
    if not (args.partner_customer_id and args.customer_id):
        raise PartnerError("map needs PARTNER_CUSTOMER_ID CUSTOMER_ID, or --file")
    return [(args.partner_customer_id, args.customer_id)]


def _print_credentials(creds: Credentials, as_json: bool) -> None:
    if as_json:
        print(json.dumps(asdict(creds), indent=2))
        return
    print(f"partner {creds.partner_id}: give these to the partner over a secure channel; "
          "the password is not stored and is shown only now")
    print(f"  bootstrap.servers  {creds.bootstrap_servers}")
    print(f"  security.protocol  {creds.security_protocol}")
    print(f"  sasl.mechanism     {creds.mechanism}")
    print(f"  username           {creds.username}")
    print(f"  password           {creds.password}")
    print(f"  envelope source    {creds.source}")
    for stream, topic in creds.topics.items():
        print(f"  topic ({stream:12}) {topic}")
    print("  trust: the CA that signed the broker's partner listener (dev: .run/dev/tls/ca.crt)")


async def _run(args: argparse.Namespace) -> int:
    settings = IngressSettings()
    action = args.partners_action
    if action == "add":
        _print_credentials(await add_partner(settings, args.partner_id), args.json)
    elif action == "rotate":
        _print_credentials(await rotate_partner(settings, args.partner_id), args.json)
    elif action == "remove":
        result = await remove_partner(settings, args.partner_id)
        print(json.dumps(result) if args.json else
              f"partner {args.partner_id} removed: {result['acls_deleted']} ACL(s) and "
              f"{'its' if result['credential_deleted'] else 'no'} credential deleted")
    elif action == "list":
        rows = await list_partners(settings)
        if args.json:
            print(json.dumps(rows, default=str, indent=2))
        for row in [] if args.json else rows:
            print(f"{row['partner_id']:20} {row['status']:8} customers={row['mapped_customers']:<6} "
                  f"credential={'yes' if row['credential'] else 'no'} acls={len(row['acls'])}")
            for acl in row["acls"]:
                print(f"    {acl}")
    elif action == "map":
        n = await map_customers(settings, args.partner_id, _pairs(args))
        print(f"{n} mapping(s) written for partner {args.partner_id}")
    elif action == "unmap":
        if not await unmap_customer(settings, args.partner_id, args.partner_customer_id):
            raise PartnerError("no such mapping")
        print("mapping removed")
    elif action == "customers":
        await _prepare(settings)
        rows = await _db(settings, lambda conn: store.mappings(conn, args.partner_id,
                                                             limit=args.limit))
        if args.json:
            print(json.dumps(rows, default=str, indent=2))
        for row in [] if args.json else rows:
            print(f"{row['partner_customer_id']}\t{row['customer_id']}")
    return 0


def main(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_run(args))
    except (PartnerError, InvalidPartnerId) as exc:
        print(f"tenure partners: {exc}", file=sys.stderr)
        return 2
