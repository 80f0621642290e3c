"""Lifecycle's REST API: a customer's stage with its reasons and history, the stage counts,
the funnel between stages, and the rules in force (reloaded with validation)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, Request

from services.lifecycle import views
from services.lifecycle.rules import InvalidRules
from shared.auth import Principal, require
from shared.events import Stage

router = APIRouter(prefix="/v1", tags=["stages"])


def _parts(request: Request) -> Any:
    return request.app.state.runtime.lifecycle


def _aware(name: str, value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        raise HTTPException(422, f"{name} lacks a UTC offset (RFC 3339 requires one)")
    return value


@router.get("/customers/{customer_id}/stage",
            summary="Current stage, since when, the rule and its evidence, history, corrections")
async def get_stage(
    request: Request,
    customer_id: Annotated[str, Path(min_length=1, max_length=64)],
    principal: Annotated[Principal, require("lifecycle:read")],
) -> dict[str, Any]:
    principal.ensure_all_books("lifecycle")
    async with request.app.state.runtime.engine.connect() as conn:
        found = await views.view(conn, customer_id)
    if found is None:
        raise HTTPException(404, f"customer {customer_id!r} has no stage yet")
    return found


@router.get("/stages", summary="How many customers are in each stage")
async def stage_counts(
    request: Request, principal: Annotated[Principal, require("lifecycle:read")]
) -> dict[str, Any]:
    async with request.app.state.runtime.engine.connect() as conn:
        counts = await views.counts(conn)
    return {"stages": counts, "total": sum(counts.values())}


@router.get("/stages/transitions",
            summary="Flow between stages over a period of event time (the retention funnel)")
async def stage_flows(
    request: Request,
    principal: Annotated[Principal, require("lifecycle:read")],
    from_stage: Annotated[Stage | None, Query(alias="from")] = None,
    to_stage: Annotated[Stage | None, Query(alias="to")] = None,
    since: Annotated[datetime | None, Query(description="event time, inclusive")] = None,
    until: Annotated[datetime | None, Query(description="event time, exclusive")] = None,
) -> dict[str, Any]:
    since, until = _aware("since", since), _aware("until", until)
    if since is not None and until is not None and until <= since:
        raise HTTPException(422, "until must be later than since")
    async with request.app.state.runtime.engine.connect() as conn:
        flows = await views.flows(conn, from_stage=from_stage, to_stage=to_stage,
                                  since=since, until=until)
    entered: dict[str, int] = {}
    left: dict[str, int] = {}
    for f in flows:
        entered[f["to"]] = entered.get(f["to"], 0) + f["count"]
        if f["from"] is not None:
            left[f["from"]] = left.get(f["from"], 0) + f["count"]
    return {
        "since": since, "until": until,
        "from": from_stage.value if from_stage else None,
        "to": to_stage.value if to_stage else None,
        "flows": flows, "entered": entered, "left": left,
        "total": sum(f["count"] for f in flows),
    }


@router.get("/stages/customers", summary="Every customer's current stage (paged export)")
async def stage_export(
    request: Request,
    principal: Annotated[Principal, require("lifecycle:read")],
    after: Annotated[str | None, Query(max_length=64, description="cursor: last customer")] = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 1000,
    stage: Annotated[Stage | None, Query()] = None,
) -> dict[str, Any]:
    principal.ensure_all_books("lifecycle")
    async with request.app.state.runtime.engine.connect() as conn:
        rows = await views.page(conn, after=after, limit=limit, stage=stage)
    return {"items": rows, "next": rows[-1]["customer_id"] if len(rows) == limit else None}


@router.get("/stages/history",
            summary="Every customer's stage history as it stands (paged export)")
async def history_export(
    request: Request,
    principal: Annotated[Principal, require("lifecycle:read")],
    after: Annotated[str | None, Query(max_length=64, description="cursor: last customer")] = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 1000,
) -> dict[str, Any]:
    principal.ensure_all_books("lifecycle")
    async with request.app.state.runtime.engine.connect() as conn:
        rows = await views.histories(conn, after=after, limit=limit)
    return {"items": rows, "next": rows[-1]["customer_id"] if len(rows) == limit else None}


@router.get("/rules", summary="The lifecycle rules in force")
async def get_rules(
    request: Request, principal: Annotated[Principal, require("lifecycle:read")]
) -> dict[str, Any]:
    held = _parts(request).rules
    return {**held.rules.describe(), "loaded_at": held.loaded_at}


@router.post("/rules:reload", summary="Reload the rules from their file, validated")
async def reload_rules(
    request: Request, principal: Annotated[Principal, require("lifecycle:admin")]
) -> dict[str, Any]:
    parts = _parts(request)
    try:
        rules = parts.rules.reload()
    except InvalidRules as exc:
        raise HTTPException(422, f"rules not reloaded: {exc}") from None
    parts.metrics.rules_version.set(parts.rules.loaded_at.timestamp())
    return {"reloaded": len(rules.rules), "file": rules.source, "version": rules.version,
            "loaded_at": parts.rules.loaded_at}


@router.get("/sweeper", summary="The event clock per owned partition and the customers due")
async def sweeper_status(
    request: Request, principal: Annotated[Principal, require("lifecycle:read")]
) -> dict[str, Any]:
    status: dict[str, Any] = await _parts(request).sweeper.status()
    return status
