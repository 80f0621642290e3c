"""Profile's object graph: engine, consumer, relay, store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from services.profile import consumer
from services.profile.settings import ProfileSettings
from services.profile.store import ProfileStore
from shared.app import ServiceRuntime
from shared.bootstrap import build_runtime

MIGRATIONS = Path(__file__).parent / "migrations"


def bootstrap(settings: ProfileSettings, **overrides: Any) -> ServiceRuntime:
    return build_runtime(
        settings,
        **{
            "topics": consumer.TOPICS,
            "handlers": consumer.HANDLERS,
            "store_factory": ProfileStore,
            "after_batch": consumer.AFTER_BATCH,
            **overrides,
        },
    )
