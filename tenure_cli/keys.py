"""`tenure keys`: rotate master and field keys online, report what each key still protects.

Rotation without downtime, in three steps (docs/data-protection.md):

1. deploy the new key first in the settings, the old one after it
   (``TENURE_MASTER_KEYS="m2:...,m1:..."``, ``TENURE_PROFILE_PII_KEYS="k2:...,k1:..."``):
   new data keys are wrapped, new fields encrypted, with the new key; both stay readable;
2. `tenure keys rotate`: re-wraps every customer data key still under an old master key, and
   re-encrypts every profile field token still under an old field key, in small batches,
   each its own short transaction (`FOR UPDATE SKIP LOCKED`), while the services run;
3. when `tenure keys status` shows nothing under the old ids, remove them from the settings.

Sealed messages on topics never change: they name the customer's data key, which rotation
re-wraps but keeps.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from services.profile.pii import FieldCipher, Keyring
from services.profile.settings import ProfileSettings
from shared.keys import KeySettings, KeyStore, ensure_schema

BatchHook = Callable[[str, int], Awaitable[None]]


@dataclass
class RotationReport:
    master_active: str
    field_active: str
    rewrapped: int = 0
    reencrypted: int = 0
    batches: int = 0
    left: dict[str, dict[str, int]] = field(default_factory=dict)


def _settings() -> tuple[KeySettings, ProfileSettings]:
    return KeySettings(), ProfileSettings()


async def _field_batch(
    engine: AsyncEngine, profile: ProfileSettings, cipher: FieldCipher, limit: int
) -> int:
    schema = profile.db_schema
    active = cipher.keyring.active_key_id
    async with engine.begin() as conn:
        rows = (
            await conn.execute(
                sa.text(
                    f'SELECT customer_id, field, token FROM "{schema}".customer_pii '
                    "WHERE key_id <> :active ORDER BY customer_id, field LIMIT :n "
                    "FOR UPDATE SKIP LOCKED"
                ),
                {"active": active, "n": limit},
            )
        ).all()
        for row in rows:
            token = cipher.reencrypt(bytes(row.token), field=row.field,
                                     customer_id=row.customer_id)
            await conn.execute(
                sa.text(f'UPDATE "{schema}".customer_pii SET token = :t, key_id = :k '
                        "WHERE customer_id = :c AND field = :f"),
                {"t": token, "k": active, "c": row.customer_id, "f": row.field},
            )
    return len(rows)


async def status(keys: KeySettings, profile: ProfileSettings) -> dict[str, dict[str, int]]:
    """How many data keys each master key wraps, how many field tokens each field key holds."""
    store = KeyStore.from_settings(keys)
    engine = create_async_engine(keys.database_url, pool_size=1)
    try:
        async with engine.begin() as conn:
            await ensure_schema(conn, store.schema)
            masters = await store.keys_by_master(conn)
            schema = profile.db_schema
            exists = await conn.scalar(
                sa.text("SELECT to_regclass(:t) IS NOT NULL"), {"t": f'"{schema}".customer_pii'}
            )
            fields: dict[str, int] = {}
            if exists:
                rows = await conn.execute(sa.text(
                    f'SELECT key_id, count(*) FROM "{schema}".customer_pii GROUP BY key_id'
                ))
                fields = {r[0]: int(r[1]) for r in rows}
    finally:
        await engine.dispose()
    return {"data_keys_by_master_key": masters, "field_tokens_by_key": fields}


async def rotate(
    keys: KeySettings, profile: ProfileSettings, *, batch: int = 500, pause: float = 0.0,
    on_batch: BatchHook | None = None,
) -> RotationReport:
    """Re-wrap data keys and re-encrypt field tokens under the active keys, batch by batch.

    Readers keep working throughout: every old key id stays configured until this returns
    and `status` shows it unused. Safe to interrupt and run again, and to run twice at once.
    """
    store = KeyStore.from_settings(keys)
    cipher = FieldCipher(Keyring.from_setting(profile.pii_keys))
    report = RotationReport(store.master.active_id, cipher.keyring.active_key_id)
    engine = create_async_engine(keys.database_url, pool_size=1)
    try:
        async with engine.begin() as conn:
            await ensure_schema(conn, store.schema)
        while True:
            async with engine.begin() as conn:
                done = await store.rewrap_batch(conn, batch)
            if not done:
                break
            report.rewrapped += done
            report.batches += 1
            if on_batch is not None:
                await on_batch("data_keys", done)
            await asyncio.sleep(pause)
        async with engine.connect() as conn:
            has_pii = await conn.scalar(
                sa.text("SELECT to_regclass(:t) IS NOT NULL"),
                {"t": f'"{profile.db_schema}".customer_pii'},
            )
        while has_pii:
            done = await _field_batch(engine, profile, cipher, batch)
            if not done:
                break
            report.reencrypted += done
            report.batches += 1
            if on_batch is not None:
                await on_batch("field_tokens", done)
            await asyncio.sleep(pause)
    finally:
        await engine.dispose()
    report.left = await status(keys, profile)
    return report


def generate(key_id: str) -> str:
    """A new random 32-byte key as a settings entry (dev; production keys come from a KMS).

    >>> entry = generate("m2"); entry.startswith("m2:") and len(entry) == 46
    True
    """
    return Keyring.generate(key_id).to_setting()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="keys_command", required=True)
    rot = sub.add_parser("rotate", help="re-wrap data keys and re-encrypt fields under the "
                         "active keys, online, in batches")
    rot.add_argument("--batch", type=int, default=500, help="rows per transaction")
    rot.add_argument("--pause", type=float, default=0.0,
                     help="seconds between batches (to spare a busy database)")
    sub.add_parser("status", help="what each master and field key id still protects")
    gen = sub.add_parser("generate", help="print a fresh 'id:base64url' key entry to put first "
                         "in TENURE_MASTER_KEYS or TENURE_PROFILE_PII_KEYS")
    gen.add_argument("key_id", help="e.g. m2 or k2 (1-32 of A-Z a-z 0-9 . _ -)")


def main(args: argparse.Namespace) -> int:
    if args.keys_command == "generate":
        print(generate(args.key_id))
        return 0
    keys, profile = _settings()
    if args.keys_command == "status":
        print(json.dumps(asyncio.run(status(keys, profile)), indent=2))
        return 0
    report = asyncio.run(rotate(keys, profile, batch=args.batch, pause=args.pause))
    print(json.dumps(asdict(report), indent=2))
    return 0
