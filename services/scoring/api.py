"""Scoring's REST API: a customer's churn risk with its reasons."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Request

from services.scoring.store import ScoringStore
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
