"""The learner role against the real database, and the model API: a crash between learning
and checkpoint, checkpoint/restore, signed checkpoints, rollback and promotion."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncEngine

from services.scoring import learning
from services.scoring.domain import REFERENCE
from services.scoring.learner import Learner, ModelHolder, fresh_state, policy_of
from services.scoring.metrics import ScoringMetrics
from services.scoring.settings import ScoringSettings
from shared.db import make_engine
from tests.support.platform import Namespace, eventually, token

T0 = datetime(2025, 1, 6, tzinfo=UTC)
PROBES = [dict(REFERENCE, recency_days=float(d), purchase_trend=t)
          for d in (2, 20, 60, 120) for t in (-0.8, 0.0)]


class SimulatedCrash(Exception):
    pass


def settings_for(ns: Namespace, **overrides: Any) -> ScoringSettings:
    base = {"label_settle_seconds": 0, "min_labels_for_model": 10, "learn_batch": 500}
    return ns.settings("scoring", **{**base, **overrides})  # type: ignore[no-any-return]


@pytest.fixture
async def engine(ns: Namespace) -> AsyncIterator[AsyncEngine]:
    e = make_engine(settings_for(ns))
    try:
        yield e
    finally:
        await e.dispose()


async def resolved_labels(engine: AsyncEngine, n: int, *, seed: int, start: int = 0) -> None:
    """Resolved samples as scoring's handlers leave them: silence and falling pace churn."""
    rng = random.Random(seed)
    rows = []
    for i in range(start, start + n):
        facts = dict(REFERENCE, recency_days=rng.uniform(0, 150), purchase_trend=rng.uniform(-1, 1))
        churned = facts["recency_days"] / 100 - facts["purchase_trend"] + rng.gauss(0, 0.3) > 0.9
        at = T0 + timedelta(hours=i)
        rows.append({"customer_id": f"L-{i % 37}", "partition": 0, "sampled_at": at,
                     "horizon_end": at + timedelta(days=90), "facts": facts, "weight": 1.0,
                     "prediction": 0.5, "model_version": 0, "label": churned,
                     "outcome": "horizon" if churned else "activity",
                     "resolved_at": at + timedelta(days=90 if churned else 10),
                     # the partition's clock passed the window's end: learnable
                     "closed_at": datetime.now(UTC) - timedelta(seconds=1)})
    from services.scoring.store import pending_samples

    async with engine.begin() as conn:
        await conn.execute(pending_samples.insert(), rows)


async def learnt_in_order(engine: AsyncEngine) -> list[learning.Label]:
    async with engine.connect() as conn:
        rows = await conn.execute(sa.text(
            "SELECT id, facts, label, weight, treated, resolved_at, sampled_at "
            "FROM pending_samples ORDER BY horizon_end, id"))
        return learning.as_labels([dict(r._mapping) for r in rows])


async def count(engine: AsyncEngine, query: str) -> int:
    async with engine.connect() as conn:
        return int(await conn.scalar(sa.text(query)) or 0)


async def test_a_crash_between_learning_and_checkpoint_loses_nothing_and_learns_nothing_twice(
    ns: Namespace, engine: AsyncEngine,
) -> None:
    settings = settings_for(ns)
    await resolved_labels(engine, 300, seed=1)
    expected = await learnt_in_order(engine)
    metrics = ScoringMetrics(CollectorRegistry())
    holder = ModelHolder(settings, engine, metrics)

    async def crash() -> None:
        raise SimulatedCrash("the process dies after learning, before the commit")

    learner = Learner(settings, engine, holder, metrics, before_commit=crash)
    async with engine.connect() as conn:
        with pytest.raises(SimulatedCrash):
            await learner.round(conn)
    assert learner.state is None, "what was learnt in memory is thrown away"
    assert await count(engine, "SELECT count(*) FROM checkpoints") == 0
    assert await count(engine, "SELECT count(*) FROM pending_samples") == 300

    learner.before_commit = None
    async with engine.connect() as conn:
        assert await learner.round(conn) == 300
        assert await learner.round(conn) == 0, "nothing is learnt twice"
    assert await count(engine, "SELECT count(*) FROM pending_samples") == 0
    assert await count(engine, "SELECT count(*) FROM labels WHERE learnt_in = 1") == 300
    assert await count(engine, "SELECT labels_learnt FROM checkpoints WHERE version = 1") == 300

    # Exactly what learning each label once, in order, gives.
    reference = fresh_state(settings)
    learning.learn(reference, expected, policy_of(settings))
    assert learner.state is not None
    for facts in PROBES:
        assert learner.state.champion.predict(facts) == reference.champion.predict(facts)
        assert learner.state.challenger.predict(facts) == reference.challenger.predict(facts)

    # Checkpoint/restore: every instance predicts identically from the checkpoint...
    assert await holder.refresh() and holder.version == 1
    assert [holder.current.predict(f) for f in PROBES] == [
        reference.champion.predict(f) for f in PROBES]
    # ...and a new learner (after a restart) goes on from exactly that state.
    restarted = Learner(settings, engine, ModelHolder(settings, engine, metrics), metrics)
    async with engine.connect() as conn:
        assert await restarted.round(conn) == 0
    assert restarted.state is not None and restarted.version == 1
    assert [restarted.state.champion.predict(f) for f in PROBES] == [
        reference.champion.predict(f) for f in PROBES]
    assert restarted.state.champion_metrics.recent == reference.champion_metrics.recent


async def test_a_checkpoint_that_fails_verification_is_never_loaded(
    ns: Namespace, engine: AsyncEngine,
) -> None:
    settings = settings_for(ns)
    await resolved_labels(engine, 50, seed=2)
    metrics = ScoringMetrics(CollectorRegistry())
    holder = ModelHolder(settings, engine, metrics)
    learner = Learner(settings, engine, holder, metrics)
    async with engine.connect() as conn:
        await learner.round(conn)
    assert await holder.refresh()
    before = [holder.current.predict(f) for f in PROBES]
    async with engine.begin() as conn:  # someone writes a version 2 without the key
        await conn.execute(sa.text(
            "INSERT INTO checkpoints (version, river_version, reason, champion, challenger, "
            "labels_learnt, champion_blob, champion_signature, state_blob, state_signature, "
            "card) SELECT 2, river_version, 'forged', champion, challenger, labels_learnt, "
            "champion_blob || '\\x00'::bytea, champion_signature, state_blob, state_signature, "
            "card FROM checkpoints WHERE version = 1"))
    assert not await holder.refresh()
    assert holder.version == 1 and [holder.current.predict(f) for f in PROBES] == before
    rejected = metrics.checkpoints_rejected.labels("signature")._value.get()
    assert rejected == 1


async def test_rollback_restores_an_earlier_checkpoint_and_promotion_needs_approval(
    ns: Namespace, engine: AsyncEngine,
) -> None:
    overrides = {"label_settle_seconds": 0, "min_labels_for_model": 10, "learn_batch": 500,
                 "promotion": "approve", "learn_interval_seconds": 0.1,
                 "checkpoint_poll_seconds": 0.1}
    async with ns.service("scoring", **overrides) as svc:
        parts = svc.runtime.scoring
        admin = {"Authorization": f"Bearer {token('scoring:admin')}"}

        async def version_at_least(v: int) -> bool:
            return parts.holder.version >= v

        await resolved_labels(engine, 200, seed=3)
        parts.learner.notify()
        await eventually(lambda: version_at_least(1), what="the first checkpoint")
        first = [parts.holder.current.predict(f) for f in PROBES]
        await resolved_labels(engine, 400, seed=4, start=200)
        parts.learner.notify()

        async def learnt_all() -> bool:
            return await count(engine, "SELECT count(*) FROM pending_samples") == 0

        await eventually(learnt_all, what="the second batch learnt")
        await eventually(lambda: version_at_least(2), what="a later checkpoint")
        later = parts.holder.version
        assert [parts.holder.current.predict(f) for f in PROBES] != first

        r = await svc.client.post("/v1/model:rollback", params={"version": 1}, headers=admin)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["to_version"] == 1 and body["version"] == later + 1
        assert parts.holder.version == later + 1
        assert [parts.holder.current.predict(f) for f in PROBES] == first

        missing = await svc.client.post("/v1/model:rollback", params={"version": 999},
                                        headers=admin)
        assert missing.status_code == 404 and "999" in missing.json()["detail"]
        reader = await svc.client.post("/v1/model:promote",
                                       headers={"Authorization": f"Bearer {token('scoring:read')}"})
        assert reader.status_code == 403

        promoted = await svc.client.post("/v1/model:promote", headers=admin)
        assert promoted.status_code == 200, promoted.text
        assert (promoted.json()["from"], promoted.json()["to"]) == ("btyd-logit",
                                                                    "hoeffding-tree")
        assert parts.holder.current.kind == "hoeffding-tree"

        card = (await svc.get("/v1/model")).json()
        assert card["champion"]["model"] == "hoeffding-tree"
        assert card["challenger"]["model"] == "btyd-logit"
        assert card["promotion"]["policy"] == "approve"
        history = card["promotion"]["history"]
        assert [h["kind"] for h in history[:2]] == ["promotion", "rollback"]
        assert "figures" in history[0] and "champion" in history[0]["figures"]
        versions = [c["version"] for c in card["checkpoints"]]
        assert versions == sorted(versions, reverse=True) and 1 in versions
        assert all(c["river_version"] for c in card["checkpoints"])
        # The rollback restored the models as they were at version 1 (200 labels seen).
        assert card["metrics"]["champion"]["labels_seen"] == 200
        assert {b["band"] for b in card["metrics"]["champion"]["calibration"]} == {
            "low", "medium", "high", "critical"}
        assert card["target"]["horizon_days"] == 90
        assert {f["name"] for f in card["features"]["facts"]} >= {"recency_days",
                                                                 "gap_stretch"}
        assert card["labels"]["learnt"] == 600

        metrics = (await svc.client.get("/metrics")).text
        for family in ("tenure_scoring_model_auc", "tenure_scoring_model_log_loss",
                       "tenure_scoring_model_brier", "tenure_scoring_model_calibration_observed",
                       "tenure_scoring_labels_learnt_total", "tenure_scoring_model_version"):
            assert family in metrics, family
