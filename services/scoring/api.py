"""Scoring's REST API: a customer's churn risk with its reasons, the as-of report, and the
model card with promotion and rollback."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, HTTPException, Path, Query, Request, Response

from services.scoring.domain import FACTS, INPUTS, Memory, recency_prior
from services.scoring.model import BEHAVIOUR, KINDS, PRIOR_NAME, RAW_INPUTS, assess
from services.scoring.store import (
    ScoringStore,
    checkpoints,
    label_counts,
    model_commands,
    model_events,
)
from shared.auth import Principal, require
from shared.events import ProfileSnapshot

router = APIRouter(prefix="/v1", tags=["churn"])

TARGET = (
    "churn within H days of the scoring time t: every account closed, or no customer-initiated "
    "activity (a customer transaction, an app event, feedback), in (t, t + H]. Resolved "
    "negative at the first such activity, positive at closure or when the partition's "
    "event-time clock passes t + H; it does not wait for the lifecycle's churned stage."
)


def _parts(request: Request) -> Any:
    return request.app.state.runtime.scoring


@router.get("/customers/{customer_id}/churn", summary="Latest churn score, reasons, history")
async def get_churn(
    request: Request,
    customer_id: Annotated[str, Path(min_length=1, max_length=64)],
    principal: Annotated[Principal, require("scoring:read")],
) -> dict[str, Any]:
    runtime = request.app.state.runtime
    settings = request.app.state.settings
    async with runtime.engine.connect() as conn:
        store = ScoringStore(conn, _parts(request).holder.current)
        latest = await store.latest(customer_id)
        if latest is None or latest["probability"] is None:
            raise HTTPException(404, f"customer {customer_id!r} has no churn score yet")
        principal.ensure_in_book("scoring", (latest.get("snapshot") or {}).get("rm_id"))
        history = await store.history(customer_id)
    return {
        "customer_id": customer_id,
        "probability": latest["probability"],
        "band": latest["band"],
        "horizon_days": settings.horizon_days,
        "model": latest["model"],
        "model_version": latest["model_version"],
        "cold_start": latest["cold_start"],
        "reasons": latest["reasons"],
        "as_of": latest["as_of"],
        "next_rescore_at": latest["next_due_at"],
        "history": [
            {"as_of": h["as_of"], "probability": h["probability"], "band": h["band"],
             "model_version": h["model_version"]}
            for h in history
        ],
    }


async def _settle(request: Request) -> None:
    """Wait (bounded) until the sweep has caught up with the clock and the learner has
    learnt every window closed by then, and predict with the checkpoint that includes them."""
    runtime = request.app.state.runtime
    settings = request.app.state.settings
    parts = _parts(request)
    deadline = time.monotonic() + settings.report_settle_seconds
    while time.monotonic() < deadline and not parts.ticker.settled():
        await asyncio.sleep(0.5)
    async with runtime.engine.connect() as conn:
        asked = await conn.scalar(sa.text("SELECT now()"))
        while time.monotonic() < deadline:
            waiting = await conn.scalar(sa.text(
                "SELECT count(*) FROM pending_samples WHERE closed_at IS NOT NULL "
                "AND closed_at <= :asked"), {"asked": asked})
            await conn.commit()
            if not waiting:
                break
            await asyncio.sleep(0.5)
    await parts.holder.refresh()


@router.get("/churn/report", summary="Every customer's churn risk as of an event time (paged)")
async def churn_report(
    request: Request,
    principal: Annotated[Principal, require("scoring:read")],
    as_of: Annotated[datetime, Query(description="event time to measure features at")],
    after: Annotated[
        str | None, Query(max_length=64, description="cursor: last customer_id")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 1000,
) -> dict[str, Any]:
    """Time-dependent features are measured at `as_of`, with the model as it stands now (the
    first page waits for the learner to include every window closed so far). Only customers
    first seen on or before `as_of` are listed."""
    if as_of.tzinfo is None:
        raise HTTPException(422, "as_of lacks a UTC offset")
    runtime = request.app.state.runtime
    settings = request.app.state.settings
    if after is None:
        await _settle(request)
    model = _parts(request).holder.current
    async with runtime.engine.connect() as conn:
        rows = await ScoringStore(conn, model).page(seen_by=as_of, after=after, limit=limit)
    items = []
    book = principal.book("scoring")
    for row in rows:
        snapshot = ProfileSnapshot.model_validate(row["snapshot"])
        if book is not None and snapshot.rm_id != book:
            continue  # a relationship manager's report lists their own book
        a = assess(model, snapshot, max(as_of, snapshot.as_of), settings.band_cuts,
                   settings.top_reasons, Memory.from_json(row["memory"]))
        items.append(
            {
                "customer_id": row["customer_id"],
                "probability": a.probability,
                "band": a.band.value,
                "horizon_days": settings.horizon_days,
                "model": a.model,
                "model_version": a.version,
                "cold_start": a.cold_start,
                "reasons": [r.text for r in a.reasons],
            }
        )
    return {
        "as_of": as_of,
        "items": items,
        "next": rows[-1]["customer_id"] if len(rows) == limit else None,
    }


@router.get("/model", summary="Model card: target, models, features, metrics, drift, history")
async def model_card(
    request: Request, principal: Annotated[Principal, require("scoring:read")],
) -> dict[str, Any]:
    runtime = request.app.state.runtime
    settings = request.app.state.settings
    holder = _parts(request).holder
    model = holder.current
    card = holder.card or {}
    async with runtime.engine.connect() as conn:
        kept = (await conn.execute(
            sa.select(checkpoints.c.version, checkpoints.c.created_at, checkpoints.c.reason,
                      checkpoints.c.champion, checkpoints.c.challenger,
                      checkpoints.c.labels_learnt, checkpoints.c.river_version,
                      checkpoints.c.pinned,
                      sa.func.octet_length(checkpoints.c.state_blob).label("bytes"))
            .order_by(checkpoints.c.version.desc()).limit(20)
        )).all()
        events = (await conn.execute(
            sa.select(model_events).order_by(model_events.c.id.desc()).limit(100)
        )).all()
        counts = await label_counts(conn)
    drift_events = [dict(e.details, version=e.version, recorded_at=e.created_at)
                    for e in events if e.kind == "drift"][:20]
    switches = [dict(e.details, version=e.version, recorded_at=e.created_at)
                for e in events if e.kind in ("proposal", "promotion", "rollback")][:50]
    return {
        "target": {"definition": TARGET, "horizon_days": settings.horizon_days},
        "version": model.version,
        "active": model.active_name,
        "cold_start": {
            "active": model.cold_start,
            "labels_learnt": model.labels_learnt,
            "min_labels": settings.min_labels_for_model,
            "prior": {"name": PRIOR_NAME, "definition": " ".join(
                (recency_prior.__doc__ or "").split("\n\n")[1].split())},
        },
        "champion": card.get("champion") or {"model": model.kind,
                                             "description": KINDS[model.kind].description,
                                             "labels_learnt": model.labels_learnt},
        "challenger": card.get("challenger") or {"model": settings.challenger,
                                                 "description":
                                                     KINDS[settings.challenger].description},
        "features": {
            "facts": [{"name": f.name, "description": f.description, "reference": f.reference}
                      for f in FACTS],
            "inputs": {**INPUTS, **RAW_INPUTS},
            "behaviour": list(BEHAVIOUR),
            "never": ["lifecycle stage", "churn score"],
        },
        "metrics": {
            "kind": "prequential (each label predicted before it is learnt)",
            "window": settings.metrics_window,
            "champion": (card.get("champion") or {}).get("prequential"),
            "challenger": (card.get("challenger") or {}).get("prequential"),
            "prior": (card.get("prior") or {}).get("prequential"),
            "recent_window": card.get("recent_window"),
        },
        "drift": {"detector": card.get("drift_detector"), "events": drift_events},
        "promotion": {"policy": settings.promotion, "proposal": card.get("proposal"),
                      "history": switches},
        "checkpoints": [dict(r._mapping) for r in kept],
        "labels": {
            **counts,
            "sampling": f"at most one per customer per {settings.sample_period_days:g} days, "
                        "at time-driven points, weighted by the time each stands for",
            # `treated` is the count of treated labels (label_counts); this says what is done
            # with them.
            "treated_policy": "recorded; not learnt" if settings.treated_weight == 0
                              else f"learnt with weight {settings.treated_weight}",
        },
    }


async def _command(
    request: Request, response: Response, principal: Principal, kind: str,
    target: int | None = None,
) -> dict[str, Any]:
    runtime = request.app.state.runtime
    async with runtime.engine.begin() as conn:
        command_id = await conn.scalar(
            model_commands.insert().values(kind=kind, target_version=target,
                                           requested_by=principal.subject)
            .returning(model_commands.c.id))
    learner = _parts(request).learner
    if learner is not None:
        learner.notify()
    deadline = time.monotonic() + 15.0
    while True:
        async with runtime.engine.connect() as conn:
            row = (await conn.execute(
                sa.select(model_commands).where(model_commands.c.id == command_id))).one()
        if row.status != "pending":
            break
        if time.monotonic() > deadline:
            response.status_code = 202
            return {"command_id": command_id, "status": "pending"}
        await asyncio.sleep(0.2)
    if row.status == "rejected":
        raise HTTPException(409, (row.result or {}).get("reason", "rejected"))
    await _parts(request).holder.refresh()
    return {"command_id": command_id, "status": row.status, **(row.result or {})}


@router.post("/model:promote", summary="Promote the challenger (approve a proposal)")
async def promote(
    request: Request, response: Response,
    principal: Annotated[Principal, require("scoring:admin")],
) -> dict[str, Any]:
    return await _command(request, response, principal, "promote")


@router.post("/model:rollback", summary="Restore an earlier checkpoint")
async def rollback(
    request: Request, response: Response,
    principal: Annotated[Principal, require("scoring:admin")],
    version: Annotated[int, Query(ge=1, le=2**31 - 1,
                                  description="checkpoint version to restore")],
) -> dict[str, Any]:
    runtime = request.app.state.runtime
    async with runtime.engine.connect() as conn:
        exists = await conn.scalar(
            sa.select(checkpoints.c.version).where(checkpoints.c.version == version))
    if exists is None:
        raise HTTPException(404, f"version: checkpoint {version} is not kept")
    return await _command(request, response, principal, "rollback", version)
