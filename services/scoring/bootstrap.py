"""Scoring's object graph: engine, published model, consumer with its sweep, learner, relay."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from services.scoring import consumer, handlers
from services.scoring.learner import Learner, ModelHolder
from services.scoring.metrics import ScoringMetrics
from services.scoring.settings import ScoringSettings
from services.scoring.store import ScoringStore
from shared.app import ServiceRuntime
from shared.bootstrap import build_runtime
from shared.db import make_engine
from shared.metrics import KitMetrics
from shared.settings import OUTPUT_TOPICS

MIGRATIONS = Path(__file__).parent / "migrations"


@dataclass
class ScoringParts:
    holder: ModelHolder
    learner: Learner | None
    metrics: ScoringMetrics


def bootstrap(settings: ScoringSettings, **overrides: Any) -> ServiceRuntime:
    engine = overrides.pop("engine", None) or make_engine(settings)
    kit_metrics = overrides.pop("metrics", None) or KitMetrics(settings.service_name)
    metrics = ScoringMetrics(kit_metrics.registry, settings.service_name)
    holder = overrides.pop("holder", None) or ModelHolder(settings, engine, metrics)
    learner = overrides.pop("learner", None)
    if learner is None and settings.run_learner:
        learner = Learner(settings, engine, holder, metrics)
    runtime: ServiceRuntime | None = None

    def store_factory(conn: AsyncConnection) -> ScoringStore:
        return ScoringStore(conn, holder.current, metrics=metrics)

    def clock() -> dict[int, datetime]:
        """Each assigned partition's event-time clock (profile updates carry the evidence;
        an idle partition follows the slowest active one)."""
        assert runtime is not None
        kit = runtime.consumers[0]
        topic = settings.topic(OUTPUT_TOPICS["profile_updates"])
        out: dict[int, datetime] = {}
        for tp in kit.assigned:
            if tp.topic != topic:
                continue
            at = kit.marks.clock(topic, tp.partition, idle_after=settings.idle_partition_seconds)
            if at is not None:
                out[tp.partition] = at
        return out

    extra = [holder.run, *([learner.run] if learner is not None else [])]
    runtime = build_runtime(
        settings,
        **{
            "topics": consumer.TOPICS,
            "handlers": consumer.HANDLERS,
            "store_factory": store_factory,
            "after_batch": handlers.sweeper(clock),
            "engine": engine,
            "metrics": kit_metrics,
            "extra_tasks": extra,
            **overrides,
        },
    )
    if learner is not None:
        kit = runtime.consumers[0]
        committed = kit.on_committed

        def on_committed() -> None:
            committed()
            learner.notify()

        kit.on_committed = on_committed
    runtime.scoring = ScoringParts(holder, learner, metrics)  # type: ignore[attr-defined]
    return runtime
