"""The whole platform on a private namespace, for a replay judged afterwards.

`tenure eval` (the simulator) and `tenure backtest` (a history file) both run the four
services as processes on fresh topics and schemas (prefix `eval<hex>`), publish a past, ask
for the churn report as of a date, and judge it against what happened next. This module
holds what they share: bringing the namespace and the services up and down, and scoring a
report against labels next to the recency and BG/NBD baselines.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa
from aiokafka.admin import AIOKafkaAdminClient
from sqlalchemy.ext.asyncio import create_async_engine

from shared.db import migrate
from shared.settings import ALL_TOPICS, PlatformSettings
from shared.topics import ensure_topics
from tenure_cli import evaluation as ev
from tenure_cli.btyd import BGNBD, rfm_arrays, rfm_summary
from tenure_cli.procs import ServiceProcess
from tenure_cli.services import SERVICE_NAMES, migrations_dir, settings_class


@dataclass
class Platform:
    settings: PlatformSettings
    services: list[ServiceProcess]

    @property
    def urls(self) -> dict[str, str]:
        return {s.service: s.url for s in self.services}


@contextlib.asynccontextmanager
async def private_platform(logs: Path) -> AsyncIterator[Platform]:
    """The four services (and the others `SERVICE_NAMES` lists) as processes on a fresh
    namespace of the platform's Kafka and PostgreSQL, logging under `logs`; everything is
    stopped and the namespace dropped on the way out."""
    prefix = f"eval{uuid.uuid4().hex[:8]}"
    base = PlatformSettings()
    env = {
        "TENURE_KAFKA_BOOTSTRAP": base.kafka_bootstrap,
        "TENURE_DATABASE_URL": base.database_url,
        "TENURE_TOPIC_PREFIX": f"{prefix}.",
        "TENURE_SCHEMA_PREFIX": f"{prefix}_",
        "TENURE_LOG_LEVEL": "WARNING",
    }
    settings = PlatformSettings(topic_prefix=f"{prefix}.", schema_prefix=f"{prefix}_")
    await ensure_topics(settings)
    for name in SERVICE_NAMES:
        await migrate(settings_class(name)(**{"topic_prefix": settings.topic_prefix,
                                              "schema_prefix": settings.schema_prefix}),
                      migrations_dir(name))
    services = [ServiceProcess(n, env, logs / f"{n}.log") for n in SERVICE_NAMES]
    for s in services:
        s.start(wait=False)
    try:
        for s in services:
            s.wait()
        yield Platform(settings, services)
    finally:
        for s in services:
            s.stop()
        await drop_namespace(settings, prefix)


async def drop_namespace(settings: PlatformSettings, prefix: str) -> None:
    engine = create_async_engine(settings.database_url)
    try:
        async with engine.begin() as conn:
            # Every schema of the namespace: the services' and what they create besides
            # (the privacy key store's schema, for one).
            schemas = (await conn.execute(
                sa.text("SELECT nspname FROM pg_namespace WHERE starts_with(nspname, :p)"),
                {"p": f"{prefix}_"})).scalars().all()
            for schema in schemas:
                await conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    finally:
        await engine.dispose()
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        await admin.delete_topics([settings.topic(t) for t in ALL_TOPICS])
    except Exception:  # noqa: BLE001 - leftover topics are harmless, only untidy
        pass
    finally:
        await admin.close()


@dataclass
class Judged:
    """A report judged against labels: the customers judged, in order, and the figures."""

    customers: list[str]
    labels: np.ndarray
    model: np.ndarray
    btyd_scores: np.ndarray
    labelled: ev.ChurnLabels[str]
    figures: dict[str, Any]


def judge_report(
    report: Mapping[str, Mapping[str, Any]],
    activity: Mapping[str, list[datetime]],
    closed_all_at: Mapping[str, datetime | None],
    first_seen: Mapping[str, datetime],
    purchases: list[tuple[str, datetime]],
    as_of: datetime,
    horizon: int,
) -> Judged:
    """The report's probabilities against DESIGN.md §3's labels in (as_of, as_of + H], next to
    the recency baseline and a BG/NBD fitted on the customer-initiated transactions up to
    as_of: AUC, lift, calibration, and the paired bootstrap margins of the model's AUC."""
    labelled = ev.churn_labels(activity, closed_all_at, as_of, horizon,
                               first_seen_by_customer=first_seen)
    customers = [c for c in labelled.eligible if c in labelled.labels and c in report]
    y = np.array([labelled.labels[c] for c in customers], dtype=float)
    model = np.array([float(report[c]["probability"]) for c in customers])

    recency = ev.recency_baseline(ev.last_activity_before(activity, as_of), as_of,
                                  missing=10_000.0)
    recency_scores = np.array([recency.get(c, 10_000.0) for c in customers])

    summary = rfm_summary(purchases, as_of)
    ids, x, t_x, T = rfm_arrays(summary)
    btyd = BGNBD().fit(x, t_x, T)
    p_none = dict(zip(ids, btyd.churn_probability(float(horizon), x, t_x, T), strict=True))
    # No purchase at all in the calibration window: nothing to extrapolate, treat as gone.
    btyd_scores = np.array([float(p_none.get(c, 1.0)) for c in customers])
    figures = {
        "labelled": len(customers),
        "excluded": count(labelled.excluded.values()),
        "not_in_report": sum(1 for c in labelled.labels if c not in report),
        "model": ev.summarize(y, model, probabilities=model),
        "model_names": count(report[c]["model"] for c in customers),
        "recency_baseline": ev.summarize(y, recency_scores),
        "btyd_baseline": {**ev.summarize(y, btyd_scores, probabilities=btyd_scores),
                          "params": btyd.params},
        # Paired bootstrap over customers: is the model's AUC margin more than sampling noise?
        "model_vs_baselines": {
            "recency": ev.auc_difference(y, model, recency_scores),
            "btyd": ev.auc_difference(y, model, btyd_scores),
        },
        "calibration": [b.__dict__ for b in ev.calibration_table(y, model, bins=5)],
    }
    return Judged(customers, y, model, btyd_scores, labelled, figures)


def count(values: Any) -> dict[str, int]:
    """How often each value occurs, by its text, in order."""
    out: dict[str, int] = {}
    for v in values:
        out[str(v)] = out.get(str(v), 0) + 1
    return dict(sorted(out.items()))


def margin_text(d: dict[str, Any] | None) -> str:
    """An AUC margin with its interval (`evaluation.auc_difference`), as the reports show it."""
    if not d or d.get("difference") is None:
        return "n/a"
    return f"{d['difference']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}]"
