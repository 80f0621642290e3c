"""Lifecycle's REST API: a customer's stage, since when, why, and the history."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, Request

from services.lifecycle.store import LifecycleStore
from shared.auth import Principal, require
from shared.events import Stage

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


@router.get("/stages", summary="How many customers are in each stage")
async def stage_counts(
    request: Request, principal: Annotated[Principal, require("lifecycle:read")]
) -> dict[str, Any]:
    async with request.app.state.runtime.engine.connect() as conn:
        counts = await LifecycleStore(conn).counts()
    return {"stages": counts, "total": sum(counts.values())}


@router.get("/stages/customers", summary="Every customer's current stage (paged export)")
async def stage_export(
    request: Request,
    principal: Annotated[Principal, require("lifecycle:read")],
    after: Annotated[str | None, Query(max_length=64, description="cursor: last customer_id")] = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 1000,
    stage: Annotated[Stage | None, Query()] = None,
) -> dict[str, Any]:
    async with request.app.state.runtime.engine.connect() as conn:
        rows = await LifecycleStore(conn).page(after=after, limit=limit, stage=stage)
    return {"items": rows, "next": rows[-1]["customer_id"] if len(rows) == limit else None}
