"""Scoring's REST API: a customer's churn risk with its reasons."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, Request

from services.scoring.model import assess
from services.scoring.store import ScoringStore
from shared.events import ProfileSnapshot
from shared.auth import Principal, require

router = APIRouter(prefix="/v1", tags=["churn"])


@router.get("/customers/{customer_id}/churn", summary="Latest churn score, reasons, history")
async def get_churn(
    request: Request,
    customer_id: Annotated[str, Path(min_length=1, max_length=64)],
    principal: Annotated[Principal, require("scoring:read")],
) -> dict[str, Any]:
    runtime = request.app.state.runtime
    async with runtime.engine.connect() as conn:
        store = ScoringStore(conn, runtime.model)
        latest = await store.latest(customer_id)
        if latest is None:
            raise HTTPException(404, f"customer {customer_id!r} has no churn score yet")
        history = await store.history(customer_id)
    return {
        "customer_id": customer_id,
        "probability": latest["probability"],
        "band": latest["band"],
        "horizon_days": runtime.model.horizon_days,
        "model": latest["model"],
        "model_version": latest["model_version"],
        "cold_start": latest["cold_start"],
        "reasons": latest["reasons"],
        "as_of": latest["as_of"],
        "history": [
            {"as_of": h["as_of"], "probability": h["probability"], "band": h["band"]}
            for h in history
        ],
    }


@router.get("/churn/report", summary="Every customer's churn risk as of an event time (paged)")
async def churn_report(
    request: Request,
    principal: Annotated[Principal, require("scoring:read")],
    as_of: Annotated[datetime, Query(description="event time to measure features at")],
    after: Annotated[str | None, Query(max_length=64, description="cursor: last customer_id")] = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 1000,
) -> dict[str, Any]:
    """Time-dependent features are measured at `as_of`, with the model as it stands now.
    Only customers first seen on or before `as_of` are listed."""
    if as_of.tzinfo is None:
        raise HTTPException(422, "as_of lacks a UTC offset")
    runtime = request.app.state.runtime
    settings = request.app.state.settings
    async with runtime.engine.connect() as conn:
        rows = await ScoringStore(conn, runtime.model).page(seen_by=as_of, after=after, limit=limit)
    items = []
    for row in rows:
        snapshot = ProfileSnapshot.model_validate(row["snapshot"])
        a = assess(runtime.model, snapshot, max(as_of, snapshot.as_of), settings.band_cuts,
                   settings.top_reasons)
        items.append(
            {
                "customer_id": row["customer_id"],
                "probability": a.probability,
                "band": a.band.value,
                "horizon_days": runtime.model.horizon_days,
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
