"""Engine creation, the kit's own tables (inbox, outbox, watermarks, erased ids), migrations."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from shared.settings import ServiceSettings

TRANSIENT_SQLSTATES = {"08000", "08003", "08006", "08001", "08004", "57P01", "57P02", "57P03"}


def make_engine(settings: ServiceSettings, *, pool_size: int = 5) -> AsyncEngine:
    """An engine whose connections live in the service's own schema (search_path)."""
    return create_async_engine(
        settings.database_url,
        pool_size=pool_size,
        max_overflow=5,
        pool_pre_ping=True,
        pool_recycle=1800,
        connect_args={
            "server_settings": {
                "search_path": settings.db_schema,
                "application_name": f"tenure-{settings.service_name}",
            },
            "command_timeout": 60,
        },
    )


def advisory_key(*parts: str) -> int:
    """A stable signed 64-bit key for pg_advisory_lock."""
    digest = hashlib.sha256("|".join(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def is_transient(exc: BaseException) -> bool:
    """True when the failure is the infrastructure's (connection lost, shutdown), not the event's."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError | ConnectionError | asyncio.TimeoutError | TimeoutError):
            return True
        if isinstance(current, sa.exc.DBAPIError) and current.connection_invalidated:
            return True
        if isinstance(current, sa.exc.InterfaceError | sa.exc.DisconnectionError):
            return True
        sqlstate = getattr(current, "sqlstate", None) or getattr(
            getattr(current, "orig", None), "sqlstate", None
        )
        if sqlstate in TRANSIENT_SQLSTATES:
            return True
        name = type(current).__name__
        if name in {
            "ConnectionDoesNotExistError",
            "CannotConnectNowError",
            "InterfaceError",
            "ConnectionFailureError",
            "InternalClientError",
        }:
            return True
        current = current.__cause__ or current.__context__
    return False


async def database_alive(engine: AsyncEngine) -> bool:
    try:
        async with engine.connect() as conn:
            await conn.execute(sa.text("SELECT 1"))
        return True
    except Exception:
        return False


# ------------------------------------------------------------------ the kit's tables

KIT_DDL = """
CREATE TABLE IF NOT EXISTS inbox (
    event_id uuid PRIMARY KEY,
    processed_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS outbox (
    id bigserial PRIMARY KEY,
    topic text NOT NULL,
    key bytea,
    value bytea NOT NULL,
    headers jsonb NOT NULL DEFAULT '[]'::jsonb,
    event_id uuid,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS watermarks (
    topic text NOT NULL,
    partition integer NOT NULL,
    max_event_time timestamptz NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, partition)
);
CREATE TABLE IF NOT EXISTS erased_customers (
    customer_id text PRIMARY KEY,
    erased_at timestamptz NOT NULL DEFAULT now()
);
"""


def kit_upgrade(op: Any) -> None:
    """Called from each service's first migration: the kit's tables in the service schema."""
    for statement in KIT_DDL.split(";"):
        if statement.strip():
            op.execute(statement)


# ------------------------------------------------------------------ migrations


async def migrate(settings: ServiceSettings, migrations_dir: Path) -> None:
    """Run the service's Alembic history up to head in its schema (one instance at a time)."""
    from alembic import command
    from alembic.config import Config

    engine = make_engine(settings, pool_size=1)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                sa.text("SELECT pg_advisory_xact_lock(:k)"),
                {"k": advisory_key("migrate", settings.db_schema)},
            )
            await conn.execute(sa.text(f'CREATE SCHEMA IF NOT EXISTS "{settings.db_schema}"'))

            def run(sync_conn: sa.Connection) -> None:
                cfg = Config()
                cfg.set_main_option("script_location", str(migrations_dir))
                cfg.attributes["connection"] = sync_conn
                cfg.attributes["schema"] = settings.db_schema
                command.upgrade(cfg, "head")

            await conn.run_sync(run)
    finally:
        await engine.dispose()


def run_alembic_env() -> None:
    """Body of every service's migrations/env.py: migrate on the connection we were handed."""
    from alembic import context

    config = context.config
    connection = config.attributes["connection"]
    schema = config.attributes["schema"]
    context.configure(
        connection=connection,
        version_table_schema=schema,
        transactional_ddl=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def drop_schema(conn: AsyncConnection, schema: str) -> None:
    await conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
