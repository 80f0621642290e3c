"""Engagement's object graph: playbook registry, policy, consumer, relay, deliverer."""

from __future__ import annotations

from datetime import time, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.engagement import consumer
from services.engagement.channels import Deliverer
from services.engagement.metrics import attach as attach_metrics
from services.engagement.playbooks import Playbook, compile_playbook, load_defaults
from services.engagement.policy import Policy
from services.engagement.settings import EngagementSettings
from services.engagement.store import EngagementStore, playbooks
from shared.app import ServiceRuntime
from shared.bootstrap import build_runtime

MIGRATIONS = Path(__file__).parent / "migrations"


class Registry:
    """The playbooks in force (YAML defaults, then what REST changed) and the policy."""

    def __init__(self, settings: EngagementSettings):
        self.policy = Policy(
            global_holdout_share=settings.global_holdout_share,
            marketing_per_week=settings.marketing_per_week,
            marketing_per_month=settings.marketing_per_month,
            quiet_start=time.fromisoformat(settings.quiet_start),
            quiet_end=time.fromisoformat(settings.quiet_end),
            freshness=timedelta(hours=settings.freshness_hours),
        )
        self.playbooks: dict[str, Playbook] = {
            p.id: p for p in load_defaults(settings.playbooks_dir)
        }

    async def sync(self, engine: AsyncEngine) -> None:
        """Seed missing defaults into the database; the database's definitions win."""
        async with engine.begin() as conn:
            for p in self.playbooks.values():
                await conn.execute(
                    pg_insert(playbooks).values(
                        id=p.id, definition=p.spec.model_dump(mode="json"), source="yaml",
                        updated_at=sa.func.now(),
                    ).on_conflict_do_nothing()
                )
            rows = await conn.execute(sa.select(playbooks.c.id, playbooks.c.definition))
            self.playbooks = {r.id: compile_playbook(r.definition) for r in rows}


def bootstrap(settings: EngagementSettings, **overrides: Any) -> ServiceRuntime:
    registry = overrides.pop("registry", None) or Registry(settings)

    def store_factory(conn: AsyncConnection) -> EngagementStore:
        return EngagementStore(conn, registry)

    runtime_box: dict[str, ServiceRuntime] = {}

    async def sync() -> None:
        await registry.sync(runtime_box["runtime"].engine)

    async def deliver() -> None:
        runtime = runtime_box["runtime"]
        runtime.deliverer = Deliverer(settings, runtime.engine, runtime.relay)  # type: ignore[attr-defined]
        await runtime.deliverer.run()  # type: ignore[attr-defined]

    runtime = build_runtime(
        settings,
        **{
            "topics": consumer.TOPICS,
            "handlers": consumer.HANDLERS,
            "store_factory": store_factory,
            "startup": [sync],
            "extra_tasks": [deliver],
            **overrides,
        },
    )
    runtime_box["runtime"] = runtime
    runtime.registry = registry  # type: ignore[attr-defined]
    runtime.engagement_metrics = attach_metrics(runtime, registry)  # type: ignore[attr-defined]
    return runtime
