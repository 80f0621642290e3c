"""The learner role and the published model.

One instance holds the learner role (a PostgreSQL advisory lock). It reads the labels of
closed windows (the partition's clock passed t + H) in horizon-end order, learns them off
the event loop (a worker thread), and commits a signed checkpoint in the same transaction
that moves those labels from `pending_samples` to `labels`: a crash before that commit
loses the in-memory learning and the labels are learnt again from the previous
checkpoint; after it, they are never read again. So nothing is lost and nothing is learnt
twice. Every instance, the learner included, predicts with the champion of the latest
checkpoint it has verified and loaded (`ModelHolder`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.scoring import learning
from services.scoring.learning import LearnerState, Outcome, Policy
from services.scoring.metrics import ScoringMetrics
from services.scoring.model import RIVER_VERSION, CheckpointRejected, ChurnModel, dump, load
from services.scoring.settings import ScoringSettings
from services.scoring.store import checkpoints, model_commands, model_events, pending_counts
from shared.db import advisory_key

log = logging.getLogger("tenure.scoring.learner")

_FETCH = sa.text(
    """
    SELECT id, customer_id, sampled_at, horizon_end, facts, weight, prediction, model_version,
           treated, label, outcome, resolved_at
    FROM pending_samples
    WHERE closed_at IS NOT NULL AND closed_at <= now() - make_interval(secs => :settle)
      AND recorded_at <= now() - make_interval(secs => :settle)
    ORDER BY horizon_end, id
    LIMIT :limit
    """
)
_TAKE = sa.text(
    "DELETE FROM pending_samples WHERE id = ANY(CAST(:ids AS bigint[])) "
    "RETURNING id, label, outcome"
)


def policy_of(settings: ScoringSettings) -> Policy:
    return Policy(
        promotion=settings.promotion,
        compare_window=settings.compare_window,
        min_compare=settings.min_compare,
        margin=settings.promotion_margin,
        auc_margin=settings.promotion_auc_margin,
        treated_weight=settings.treated_weight,
        adwin_delta=settings.adwin_delta,
    )


def fresh_state(settings: ScoringSettings) -> LearnerState:
    return LearnerState.fresh(
        horizon_days=settings.horizon_days, min_labels=settings.min_labels_for_model,
        champion=settings.champion, challenger=settings.challenger,
        window=settings.metrics_window, cuts=settings.band_cuts,
        adwin_delta=settings.adwin_delta,
    )


class ModelHolder:
    """What every handler predicts with: the champion of the latest verified checkpoint."""

    def __init__(self, settings: ScoringSettings, engine: AsyncEngine, metrics: ScoringMetrics):
        self.settings = settings
        self.engine = engine
        self.metrics = metrics
        self.current = ChurnModel(settings.horizon_days, settings.min_labels_for_model,
                                  settings.champion)
        self.card: dict[str, Any] | None = None
        self.loaded_at: datetime | None = None
        self._rejected: set[int] = set()
        self._stopping = asyncio.Event()
        metrics.cold_start.set(1)

    @property
    def version(self) -> int:
        return self.current.version

    async def refresh(self) -> bool:
        """Load the newest checkpoint if it is newer than the one predicting."""
        async with self.engine.connect() as conn:
            row = (await conn.execute(
                sa.select(checkpoints.c.version, checkpoints.c.river_version,
                          checkpoints.c.champion_blob, checkpoints.c.champion_signature,
                          checkpoints.c.card, checkpoints.c.created_at)
                .where(checkpoints.c.version > self.current.version)
                .order_by(checkpoints.c.version.desc()).limit(1)
            )).first()
        if row is None or row.version in self._rejected:
            return False
        try:
            model = await asyncio.to_thread(load, row.champion_blob, row.champion_signature,
                                            self.settings.checkpoint_key, row.river_version)
        except CheckpointRejected as exc:
            self._rejected.add(row.version)
            self.metrics.checkpoints_rejected.labels(str(exc).split(":", 1)[0]).inc()
            log.error("checkpoint refused", extra={"version": row.version, "reason": str(exc)})
            return False
        self.install(model, row.version, row.card)
        return True

    def install(self, model: ChurnModel, version: int, card: dict[str, Any] | None) -> None:
        model.version = version
        model.min_labels = self.settings.min_labels_for_model
        self.current = model
        self.card = card
        self.loaded_at = datetime.now().astimezone()
        self.metrics.publish_card(version, card or {}, model.cold_start, model.labels_learnt)

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the database may be away; keep the model
                log.warning("checkpoint poll failed", extra={"reason": type(exc).__name__})
            try:
                await asyncio.wait_for(self._stopping.wait(),
                                       self.settings.checkpoint_poll_seconds)
            except TimeoutError:
                pass


@dataclass
class Serialized:
    champion: tuple[bytes, bytes]
    state: tuple[bytes, bytes]
    card: dict[str, Any]


class Learner:
    """The learner role: restore, apply commands, learn resolved labels, checkpoint."""

    def __init__(
        self, settings: ScoringSettings, engine: AsyncEngine, holder: ModelHolder,
        metrics: ScoringMetrics,
        before_commit: Callable[[], Awaitable[None]] | None = None,
    ):
        self.settings = settings
        self.engine = engine
        self.holder = holder
        self.metrics = metrics
        self.policy = policy_of(settings)
        self.before_commit = before_commit  # tests: a crash between learning and commit
        self.state: LearnerState | None = None
        self.version = 0
        self.is_learner = False
        self.wakeup = asyncio.Event()
        self._stopping = asyncio.Event()

    def notify(self) -> None:
        self.wakeup.set()

    def stop(self) -> None:
        self._stopping.set()
        self.wakeup.set()

    # ------------------------------------------------------------------ the role

    async def run(self) -> None:
        key = advisory_key("learner", self.settings.db_schema)
        backoff = 0.5
        while not self._stopping.is_set():
            try:
                async with self.engine.connect() as conn:
                    got = await conn.scalar(sa.text("SELECT pg_try_advisory_lock(:k)"),
                                            {"k": key})
                    await conn.commit()
                    if not got:
                        await self._idle(2.0)
                        continue
                    self.is_learner = True
                    self.metrics.learner.set(1)
                    backoff = 0.5
                    try:
                        while not self._stopping.is_set():
                            learnt = await self.round(conn)
                            if learnt < self.settings.learn_batch:
                                await self._idle(self.settings.learn_interval_seconds)
                    finally:
                        self.is_learner = False
                        self.metrics.learner.set(0)
                        await conn.rollback()
                        await conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                        await conn.commit()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("learner failed; restarting from the last checkpoint",
                            exc_info=exc, extra={"reason": type(exc).__name__})
                self.state = None
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10)

    async def _idle(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self.wakeup.wait(), seconds)
        except TimeoutError:
            pass
        self.wakeup.clear()

    async def round(self, conn: AsyncConnection) -> int:
        """One learning round on `conn` (which holds the role). Returns labels consumed.

        Any failure discards the in-memory state: the next round restores the last
        committed checkpoint, so labels learnt but not committed are learnt again once."""
        try:
            if self.state is None:
                await self._restore(conn)
            await self._commands(conn)
            return await self._learn(conn)
        except BaseException:
            self.state = None
            with contextlib.suppress(Exception):
                await conn.rollback()
            raise

    # ------------------------------------------------------------------ restore

    async def _restore(self, conn: AsyncConnection) -> None:
        versions = (await conn.execute(
            sa.select(checkpoints.c.version).order_by(checkpoints.c.version.desc())
        )).scalars().all()
        await conn.commit()
        self.version = versions[0] if versions else 0
        for version in versions:  # the newest that verifies
            row = (await conn.execute(
                sa.select(checkpoints.c.version, checkpoints.c.river_version,
                          checkpoints.c.state_blob, checkpoints.c.state_signature)
                .where(checkpoints.c.version == version)
            )).one()
            await conn.commit()
            try:
                state = await asyncio.to_thread(load, row.state_blob, row.state_signature,
                                                self.settings.checkpoint_key, row.river_version)
            except CheckpointRejected as exc:
                self.metrics.checkpoints_rejected.labels(str(exc).split(":", 1)[0]).inc()
                log.error("checkpoint refused", extra={"version": row.version,
                                                       "reason": str(exc)})
                continue
            self.state = state
            return
        self.state = fresh_state(self.settings)

    # ------------------------------------------------------------------ learning

    async def _learn(self, conn: AsyncConnection) -> int:
        assert self.state is not None
        rows = [dict(r._mapping) for r in await conn.execute(
            _FETCH, {"settle": self.settings.label_settle_seconds,
                     "limit": self.settings.learn_batch})]
        counts = await pending_counts(conn)
        await conn.commit()
        self.metrics.pending.labels("open").set(counts["pending"])
        self.metrics.pending.labels("resolved").set(counts["resolved_window_open"])
        self.metrics.pending.labels("closed").set(counts["closed_not_learnt"])
        if not rows:
            return 0
        started = time.perf_counter()
        usable = [r for r in rows if r["label"] is not None]
        outcome = await asyncio.to_thread(
            learning.learn, self.state, learning.as_labels(usable), self.policy
        )
        serialized = await asyncio.to_thread(self._serialize)
        if self.before_commit is not None:
            await self.before_commit()
        version = await self._commit(conn, serialized, reason="learnt", rows=rows,
                                     outcome=outcome)
        self.metrics.learn_seconds.observe(time.perf_counter() - started)
        self.metrics.learnt.inc(len(outcome.learnt))
        self.metrics.treated_skipped.inc(len(outcome.skipped))
        log.debug("learnt", extra={"labels": len(outcome.learnt), "version": version})
        return len(rows)

    def _serialize(self) -> Serialized:
        assert self.state is not None
        key = self.settings.checkpoint_key
        return Serialized(dump(self.state.champion, key), dump(self.state, key),
                          learning.card(self.state, self.policy))

    async def _commit(
        self, conn: AsyncConnection, serialized: Serialized, *, reason: str,
        rows: list[dict[str, Any]] | None = None, outcome: Outcome | None = None,
        pinned: bool = False, events: list[dict[str, Any]] | None = None,
    ) -> int:
        """The checkpoint and the label progress it includes, in one transaction."""
        assert self.state is not None
        version = self.version + 1
        try:
            await conn.execute(checkpoints.insert().values(
                version=version, river_version=RIVER_VERSION, reason=reason,
                champion=self.state.champion.kind, challenger=self.state.challenger.kind,
                labels_learnt=self.state.labels_learnt,
                champion_blob=serialized.champion[0], champion_signature=serialized.champion[1],
                state_blob=serialized.state[0], state_signature=serialized.state[1],
                card=serialized.card, pinned=pinned or bool(outcome and any(
                    e["kind"] == "promotion" for e in outcome.events)),
            ))
            if rows:
                await self._move_labels(conn, rows, outcome, version)
            for event in [*(events or []), *(outcome.events if outcome else [])]:
                await conn.execute(model_events.insert().values(
                    kind=event["kind"], version=version, details=event))
            await conn.execute(
                sa.delete(checkpoints).where(
                    checkpoints.c.version <= version - self.settings.checkpoints_kept,
                    sa.not_(checkpoints.c.pinned),
                )
            )
            await conn.commit()
        except BaseException:
            await conn.rollback()
            raise
        self.version = version
        return version

    async def _move_labels(
        self, conn: AsyncConnection, rows: list[dict[str, Any]], outcome: Outcome | None,
        version: int,
    ) -> None:
        taken = {r.id: r for r in await conn.execute(_TAKE, {"ids": [r["id"] for r in rows]})}
        learnt = set(outcome.learnt) if outcome else set()
        champion_p = outcome.champion_p if outcome else {}
        records = []
        for r in rows:
            now_row = taken.get(r["id"])
            if now_row is None:
                continue  # erased meanwhile: the customer's labels go too
            records.append({
                "id": r["id"], "customer_id": r["customer_id"], "sampled_at": r["sampled_at"],
                "horizon_end": r["horizon_end"], "label": r["label"], "outcome": r["outcome"],
                "resolved_at": r["resolved_at"], "treated": r["treated"], "weight": r["weight"],
                "prediction": r["prediction"], "model_version": r["model_version"],
                "champion_probability": champion_p.get(r["id"]),
                "learnt_in": version if r["id"] in learnt else None,
                # Corrected between our read and this commit: learnt as read, recorded.
                "late_correction": now_row.label != r["label"],
            })
        if records:
            await conn.execute(sa.text(
                "INSERT INTO labels (id, customer_id, sampled_at, horizon_end, label, outcome, "
                "resolved_at, treated, weight, prediction, model_version, champion_probability, "
                "learnt_in, late_correction) VALUES (:id, :customer_id, :sampled_at, "
                ":horizon_end, :label, :outcome, :resolved_at, :treated, :weight, :prediction, "
                ":model_version, :champion_probability, :learnt_in, :late_correction) "
                "ON CONFLICT (id) DO NOTHING"
            ), records)

    # ------------------------------------------------------------------ commands

    async def _commands(self, conn: AsyncConnection) -> None:
        pending = (await conn.execute(
            sa.select(model_commands).where(model_commands.c.status == "pending")
            .order_by(model_commands.c.id)
        )).all()
        await conn.commit()
        for command in pending:
            if command.kind == "promote":
                await self._promote(conn, command)
            elif command.kind == "rollback":
                await self._rollback(conn, command)

    async def _finish(self, conn: AsyncConnection, command: Any, status: str,
                      result: dict[str, Any]) -> None:
        await conn.execute(model_commands.update().where(model_commands.c.id == command.id)
                           .values(status=status, result=result, done_at=sa.func.now()))
        await conn.commit()

    async def _promote(self, conn: AsyncConnection, command: Any) -> None:
        assert self.state is not None
        had = self.state.proposal
        reason = (f"approved by {command.requested_by}" if had
                  else f"manual promotion by {command.requested_by}")
        event = learning.promote(self.state, reason, self.policy)
        version = await self._commit(conn, await asyncio.to_thread(self._serialize),
                                     reason="promote", pinned=True, events=[event])
        await self._finish(conn, command, "done", {"version": version, **event})

    async def _rollback(self, conn: AsyncConnection, command: Any) -> None:
        row = (await conn.execute(
            sa.select(checkpoints.c.version, checkpoints.c.river_version,
                      checkpoints.c.state_blob, checkpoints.c.state_signature)
            .where(checkpoints.c.version == command.target_version)
        )).first()
        if row is None:
            await self._finish(conn, command, "rejected", {
                "reason": f"version: checkpoint {command.target_version} is not kept"})
            return
        try:
            restored: LearnerState = await asyncio.to_thread(
                load, row.state_blob, row.state_signature, self.settings.checkpoint_key,
                row.river_version)
        except CheckpointRejected as exc:
            await self._finish(conn, command, "rejected", {"reason": str(exc)})
            return
        assert self.state is not None
        event = {"kind": "rollback", "to_version": row.version, "from_version": self.version,
                 "requested_by": command.requested_by,
                 "from": self.state.champion.kind, "to": restored.champion.kind,
                 "figures": learning.figures(restored, self.policy.compare_window)}
        # Labels learnt since that checkpoint are not learnt again: the restored model goes
        # on from here (a rollback undoes learning, it does not replay it).
        self.state = restored
        version = await self._commit(conn, await asyncio.to_thread(self._serialize),
                                     reason=f"rollback to {row.version}", pinned=True,
                                     events=[event])
        await conn.execute(checkpoints.update().where(checkpoints.c.version == row.version)
                           .values(pinned=True))
        await self._finish(conn, command, "done", {"version": version, **event})
