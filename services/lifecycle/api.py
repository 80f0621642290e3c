"""Lifecycle's REST API: a customer's stage, since when, why, and the history."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Request

from services.lifecycle.store import LifecycleStore
from shared.auth import Principal, require

router = APIRouter(prefix="/v1", tags=["stages"])


@router.get("/customers/{customer_id}/stage", summary="Current stage, since when, rule, history")
async def get_stage(
    request: Request,
    customer_id: Annotated[str, Path(min_length=1, max_length=64)],
    principal: Annotated[Principal, require("lifecycle:read")],
) -> dict[str, Any]:
    async with request.app.state.runtime.engine.connect() as conn:
        view = await LifecycleStore(conn).view(customer_id)
    if view is None:
        raise HTTPException(404, f"customer {customer_id!r} has no stage yet")
    return view
