"""Scoring's object graph: engine, model, consumer, relay."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from services.scoring import consumer
from services.scoring.model import ChurnModel
from services.scoring.settings import ScoringSettings
from services.scoring.store import ScoringStore
from shared.app import ServiceRuntime
from shared.bootstrap import build_runtime

MIGRATIONS = Path(__file__).parent / "migrations"


def bootstrap(settings: ScoringSettings, **overrides: Any) -> ServiceRuntime:
    model = overrides.pop("model", None) or ChurnModel(
        horizon_days=settings.horizon_days, min_labels=settings.min_labels_for_model
    )

    def store_factory(conn: AsyncConnection) -> ScoringStore:
        return ScoringStore(conn, model)

    runtime = build_runtime(
        settings,
        **{
            "topics": consumer.TOPICS,
            "handlers": consumer.HANDLERS,
            "store_factory": store_factory,
            **overrides,
        },
    )
    runtime.model = model  # type: ignore[attr-defined]
    return runtime
