"""Scoring's object graph: engine, published model, consumer with its sweep, the periodic
tick, the learner and the relay."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from services.scoring import consumer
from services.scoring.learner import Learner, ModelHolder
from services.scoring.metrics import ScoringMetrics
from services.scoring.settings import ScoringSettings
from services.scoring.store import ScoringStore
from services.scoring.sweep import Clock, Ticker, after_batch
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
    clock: Clock
    ticker: Ticker


def bootstrap(settings: ScoringSettings, **overrides: Any) -> ServiceRuntime:
    engine = overrides.pop("engine", None) or make_engine(settings)
    kit_metrics = overrides.pop("metrics", None) or KitMetrics(settings.service_name)
    metrics = ScoringMetrics(kit_metrics.registry, settings.service_name)
    holder = overrides.pop("holder", None) or ModelHolder(settings, engine, metrics)
    learner = overrides.pop("learner", None)
    if learner is None and settings.run_learner:
        learner = Learner(settings, engine, holder, metrics)
    runtime: ServiceRuntime | None = None

    def kit() -> Any:
        assert runtime is not None
        return runtime.consumers[0]

    clock = Clock(kit, [settings.topic(t) for t in consumer.ACTIVITY_TOPICS],
                  settings.topic(OUTPUT_TOPICS["profile_updates"]),
                  settings.idle_partition_seconds)

    def store_factory(conn: AsyncConnection) -> ScoringStore:
        return ScoringStore(conn, holder.current, metrics=metrics, clock=clock)

    def written() -> None:
        assert runtime is not None
        if runtime.relay is not None:
            runtime.relay.notify()
        if learner is not None:
            learner.notify()

    ticker = Ticker(engine=engine, settings=settings, clock=clock, consumer=kit,
                    store_factory=store_factory, on_written=written,
                    interval=settings.sweep_interval_seconds)
    extra = [holder.run, ticker.run, *([learner.run] if learner is not None else []),
             metrics.state_gauges(engine).run]
    runtime = build_runtime(
        settings,
        **{
            "topics": consumer.TOPICS,
            "handlers": consumer.HANDLERS,
            "store_factory": store_factory,
            "after_batch": after_batch(clock),
            "engine": engine,
            "metrics": kit_metrics,
            "extra_tasks": extra,
            **overrides,
        },
    )
    if learner is not None:
        committed = kit().on_committed

        def on_committed() -> None:
            committed()
            learner.notify()

        kit().on_committed = on_committed
    parts = ScoringParts(holder, learner, metrics, clock, ticker)
    runtime.scoring = parts  # type: ignore[attr-defined]
    # Windows the clock has closed that no learner has learnt yet: a report (tenure
    # churn-report) waits for 0, or it would score with a model that is behind the data.
    runtime.backlogs["learning_backlog"] = (
        "SELECT count(*) FROM pending_samples WHERE closed_at IS NOT NULL")
    return runtime
