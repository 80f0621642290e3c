"""The key store: per-customer data keys in PostgreSQL (schema `privacy`), wrapped by master keys.

Publishers seal personal fields with a customer's data key (`PiiSealer`); profile opens them
(`PiiOpener`); erasure shreds the key (`shred`), so every sealed copy anywhere becomes
unreadable. The same schema keeps the shredded ids (a publisher never mints a new key for an
erased customer), legal holds and the retention runs (docs/data-protection.md).

In production this schema belongs to a dedicated database role: publishers may insert keys,
only profile's role may read them. The dev setup shares one role.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
import sqlalchemy as sa
from pydantic import AliasChoices, Field
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from shared.crypto import (
    DEV_MASTER_KEYS_SETTING,
    MasterKeys,
    SealError,
    needs_sealing,
    new_data_key,
    new_kid,
    open_fields,
    seal_event,
    withhold_personal_fields,
)
from shared.db import advisory_key
from shared.events import EnvelopeBase, SealedPII, encode_event, parse_event
from shared.settings import PlatformSettings

_SCHEMA_NAME = re.compile(r"[a-z0-9_]{1,63}")


class KeySettings(PlatformSettings):
    """Where the key store lives and the master keys that wrap its data keys."""

    master_keys: str = Field(
        DEV_MASTER_KEYS_SETTING, validation_alias=AliasChoices("TENURE_MASTER_KEYS")
    )

    @property
    def privacy_schema(self) -> str:
        return privacy_schema(self.schema_prefix)


def privacy_schema(schema_prefix: str) -> str:
    name = f"{schema_prefix}privacy"
    if not _SCHEMA_NAME.fullmatch(name):
        raise ValueError("schema prefix must be lower-case letters, digits and '_'")
    return name


def _ddl(schema: str) -> list[str]:
    return [
        f'CREATE SCHEMA IF NOT EXISTS "{schema}"',
        f"""CREATE TABLE IF NOT EXISTS "{schema}".customer_keys (
            kid text PRIMARY KEY,
            customer_id text NOT NULL UNIQUE,
            master_kid text NOT NULL,
            wrapped bytea NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now(),
            rewrapped_at timestamptz
        )""",
        f'CREATE INDEX IF NOT EXISTS customer_keys_master ON "{schema}".customer_keys '
        "(master_kid)",
        f"""CREATE TABLE IF NOT EXISTS "{schema}".shredded_customers (
            customer_id text PRIMARY KEY,
            shredded_at timestamptz NOT NULL DEFAULT now()
        )""",
        f"""CREATE TABLE IF NOT EXISTS "{schema}".legal_holds (
            hold_id bigserial PRIMARY KEY,
            customer_id text NOT NULL,
            reason text NOT NULL,
            placed_by text NOT NULL,
            placed_at timestamptz NOT NULL DEFAULT now(),
            released_at timestamptz
        )""",
        f'CREATE INDEX IF NOT EXISTS legal_holds_active ON "{schema}".legal_holds '
        "(customer_id) WHERE released_at IS NULL",
        f"""CREATE TABLE IF NOT EXISTS "{schema}".retention_runs (
            id bigserial PRIMARY KEY,
            ran_at timestamptz NOT NULL DEFAULT now(),
            target text NOT NULL,
            removed bigint NOT NULL,
            held bigint NOT NULL DEFAULT 0
        )""",
    ]


async def ensure_schema(conn: AsyncConnection, schema: str) -> None:
    """Create the key store's schema and tables (idempotent, one creator at a time)."""
    await conn.execute(
        sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": advisory_key("privacy", schema)}
    )
    for statement in _ddl(schema):
        await conn.execute(sa.text(statement))


async def ensure(settings: KeySettings) -> None:
    engine = create_async_engine(settings.database_url, pool_size=1)
    try:
        async with engine.begin() as conn:
            await ensure_schema(conn, settings.privacy_schema)
    finally:
        await engine.dispose()


async def shred(conn: AsyncConnection, schema: str, customer_id: str) -> bool:
    """Delete a customer's data key and remember the id; True if a key existed. Needs no
    master key: forgetting is always allowed."""
    if not _SCHEMA_NAME.fullmatch(schema):
        raise ValueError("invalid privacy schema name")
    result = await conn.execute(
        sa.text(f'DELETE FROM "{schema}".customer_keys WHERE customer_id = :c'), {"c": customer_id}
    )
    await conn.execute(
        sa.text(f'INSERT INTO "{schema}".shredded_customers (customer_id) VALUES (:c) '
                "ON CONFLICT DO NOTHING"),
        {"c": customer_id},
    )
    return bool(result.rowcount)


async def is_held(conn: AsyncConnection, schema: str, customer_id: str) -> bool:
    """True while the customer has an active legal hold: purges and erasure wait."""
    if not _SCHEMA_NAME.fullmatch(schema):
        raise ValueError("invalid privacy schema name")
    return bool(await conn.scalar(
        sa.text(f'SELECT EXISTS (SELECT 1 FROM "{schema}".legal_holds '
                "WHERE customer_id = :c AND released_at IS NULL)"),
        {"c": customer_id},
    ))


@dataclass(frozen=True)
class DataKey:
    kid: str
    key: bytes


class KeyStore:
    """Queries on one privacy schema; every method runs on the caller's connection, so a
    shred commits with the erasure that asked for it."""

    def __init__(self, schema: str, master: MasterKeys):
        if not _SCHEMA_NAME.fullmatch(schema):
            raise ValueError("invalid privacy schema name")
        self.schema = schema
        self.master = master
        s = f'"{schema}"'
        self._insert = sa.text(
            f"INSERT INTO {s}.customer_keys (kid, customer_id, master_kid, wrapped) "
            "SELECT k, c, m, w FROM unnest(CAST(:kids AS text[]), CAST(:cids AS text[]), "
            "CAST(:mids AS text[]), CAST(:ws AS bytea[])) AS t(k, c, m, w) "
            f"WHERE NOT EXISTS (SELECT 1 FROM {s}.shredded_customers x WHERE x.customer_id = t.c) "
            "ON CONFLICT (customer_id) DO NOTHING"
        )
        self._select_by_customer = sa.text(
            f"SELECT kid, customer_id, master_kid, wrapped FROM {s}.customer_keys "
            "WHERE customer_id = ANY(CAST(:cids AS text[]))"
        )
        self._select_by_kid = sa.text(
            f"SELECT kid, customer_id, master_kid, wrapped FROM {s}.customer_keys "
            "WHERE kid = :kid"
        )

    @classmethod
    def from_settings(cls, settings: KeySettings) -> KeyStore:
        return cls(settings.privacy_schema, MasterKeys.from_setting(settings.master_keys))

    def _unwrap(self, row: Any) -> DataKey:
        key = self.master.unwrap(row.master_kid, bytes(row.wrapped), kid=row.kid,
                                 customer_id=row.customer_id)
        return DataKey(row.kid, key)

    async def keys_for(
        self, conn: AsyncConnection, customer_ids: Iterable[str]
    ) -> dict[str, DataKey | None]:
        """Each customer's data key, minted on first use; None for a shredded customer."""
        wanted = sorted(set(customer_ids))
        if not wanted:
            return {}
        out: dict[str, DataKey | None] = {c: None for c in wanted}
        rows = (await conn.execute(self._select_by_customer, {"cids": wanted})).all()
        for row in rows:
            out[row.customer_id] = self._unwrap(row)
        missing = [c for c in wanted if out[c] is None]
        if missing:
            kids, mids, wrapped = [], [], []
            for cid in missing:
                kid = new_kid()
                master_kid, blob = self.master.wrap(new_data_key(), kid=kid, customer_id=cid)
                kids.append(kid)
                mids.append(master_kid)
                wrapped.append(blob)
            await conn.execute(
                self._insert, {"kids": kids, "cids": missing, "mids": mids, "ws": wrapped}
            )
            # Re-read: a concurrent publisher may have won the race for some customers.
            rows = (await conn.execute(self._select_by_customer, {"cids": missing})).all()
            for row in rows:
                out[row.customer_id] = self._unwrap(row)
        return out

    async def key_by_kid(self, conn: AsyncConnection, kid: str, customer_id: str) -> bytes:
        """The data key a sealed field names; `SealError` once shredded or if not this
        customer's."""
        row = (await conn.execute(self._select_by_kid, {"kid": kid})).first()
        if row is None:
            raise SealError(f"data key {kid!r} does not exist (never issued, or shredded)")
        if row.customer_id != customer_id:
            raise SealError(f"data key {kid!r} belongs to another customer")
        return self._unwrap(row).key

    async def shred(self, conn: AsyncConnection, customer_id: str) -> bool:
        return await shred(conn, self.schema, customer_id)

    async def rewrap_batch(self, conn: AsyncConnection, limit: int) -> int:
        """Re-wrap up to `limit` data keys not under the active master key. Rows locked by
        another rotator are skipped, so several can run; readers never wait."""
        s = f'"{self.schema}"'
        rows = (
            await conn.execute(
                sa.text(
                    f"SELECT kid, customer_id, master_kid, wrapped FROM {s}.customer_keys "
                    "WHERE master_kid <> :active ORDER BY kid LIMIT :n FOR UPDATE SKIP LOCKED"
                ),
                {"active": self.master.active_id, "n": limit},
            )
        ).all()
        for row in rows:
            key = self._unwrap(row).key
            master_kid, blob = self.master.wrap(key, kid=row.kid, customer_id=row.customer_id)
            await conn.execute(
                sa.text(
                    f"UPDATE {s}.customer_keys SET master_kid = :m, wrapped = :w, "
                    "rewrapped_at = now() WHERE kid = :kid"
                ),
                {"m": master_kid, "w": blob, "kid": row.kid},
            )
        return len(rows)

    async def keys_by_master(self, conn: AsyncConnection) -> dict[str, int]:
        rows = await conn.execute(
            sa.text(
                f'SELECT master_kid, count(*) FROM "{self.schema}".customer_keys '
                "GROUP BY master_kid ORDER BY master_kid"
            )
        )
        return {r[0]: int(r[1]) for r in rows}


# ------------------------------------------------------------------ publishers


@dataclass
class PiiSealer:
    """What a publisher uses: seal an event's personal fields with its customer's key.

    Keys are minted on first use and cached for the publisher's run. A customer whose keys
    were shredded (erased) gets no new key: their personal fields are withheld, not sent in
    clear (`withheld` counts them).
    """

    store: KeyStore
    engine: AsyncEngine
    cache: dict[str, DataKey | None] = field(default_factory=dict)
    withheld: int = 0
    sealed: int = 0

    @classmethod
    def connect(cls, settings: PlatformSettings) -> PiiSealer:
        key_settings = KeySettings(**settings.model_dump())
        engine = create_async_engine(key_settings.database_url, pool_size=1, max_overflow=1)
        return cls(KeyStore.from_settings(key_settings), engine)

    async def start(self) -> None:
        async with self.engine.begin() as conn:
            await ensure_schema(conn, self.store.schema)

    async def close(self) -> None:
        await self.engine.dispose()

    async def prefetch(self, customer_ids: Iterable[str]) -> None:
        missing = [c for c in set(customer_ids) if c not in self.cache]
        if missing:
            async with self.engine.begin() as conn:
                self.cache.update(await self.store.keys_for(conn, missing))

    async def seal(self, event: EnvelopeBase) -> EnvelopeBase:
        if not needs_sealing(event):
            return event
        await self.prefetch([event.customer_id])
        key = self.cache[event.customer_id]
        if key is None:
            self.withheld += 1
            return withhold_personal_fields(event)
        self.sealed += 1
        return seal_event(event, kid=key.kid, data_key=key.key)

    async def seal_raw(self, value: bytes) -> bytes:
        """The same for an already-encoded contract event (the importer's path); a value
        that does not parse is passed through for the consumers to dead-letter."""
        try:
            document = orjson.loads(value)
        except orjson.JSONDecodeError:
            return value
        if not isinstance(document, dict) or document.get("event_type") not in (
            "customer.registered", "customer.updated", "feedback.submitted"
        ):
            return value
        try:
            event = parse_event(value)
        except ValueError:
            return value
        sealed = await self.seal(event)
        return value if sealed is event else encode_event(sealed)


async def seal_in_transaction(
    conn: AsyncConnection, store: KeyStore, event: EnvelopeBase
) -> EnvelopeBase:
    """Seal an event's personal fields inside a consumer's transaction (e.g. the partner
    ingress before it re-publishes onto an internal topic): the key is minted in the same
    transaction, and a shredded customer's fields are withheld."""
    if not needs_sealing(event):
        return event
    key = (await store.keys_for(conn, [event.customer_id]))[event.customer_id]
    if key is None:
        return withhold_personal_fields(event)
    return seal_event(event, kid=key.kid, data_key=key.key)


# ------------------------------------------------------------------ profile


class PiiOpener:
    """What profile uses to open a sealed field inside its consuming transaction."""

    def __init__(self, store: KeyStore):
        self.store = store

    async def open(
        self, conn: AsyncConnection, box: SealedPII, *, customer_id: str, purpose: str
    ) -> dict[str, Any]:
        key = await self.store.key_by_kid(conn, box.kid, customer_id)
        return open_fields(box, data_key=key, customer_id=customer_id, purpose=purpose)
