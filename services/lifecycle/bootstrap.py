"""Lifecycle's object graph."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from services.lifecycle import consumer
from services.lifecycle.settings import LifecycleSettings
from services.lifecycle.store import LifecycleStore
from shared.app import ServiceRuntime
from shared.bootstrap import build_runtime

MIGRATIONS = Path(__file__).parent / "migrations"


def bootstrap(settings: LifecycleSettings, **overrides: Any) -> ServiceRuntime:
    return build_runtime(
        settings,
        **{
            "topics": consumer.TOPICS,
            "handlers": consumer.HANDLERS,
            "store_factory": LifecycleStore,
            **overrides,
        },
    )
