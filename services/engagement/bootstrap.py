"""Engagement's object graph."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from services.engagement import consumer
from services.engagement.settings import EngagementSettings
from services.engagement.store import EngagementStore
from shared.app import ServiceRuntime
from shared.bootstrap import build_runtime

MIGRATIONS = Path(__file__).parent / "migrations"


def bootstrap(settings: EngagementSettings, **overrides: Any) -> ServiceRuntime:
    return build_runtime(
        settings,
        **{
            "topics": consumer.TOPICS,
            "handlers": consumer.HANDLERS,
            "store_factory": EngagementStore,
            **overrides,
        },
    )
