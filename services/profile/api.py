"""Profile's REST API: the customer view (deepened by the profile issue)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, Request

from services.profile.domain import snapshot
from services.profile.store import ProfileStore
from shared.auth import Principal, require
from shared.events import ProfileSnapshot

router = APIRouter(prefix="/v1", tags=["customers"])
CustomerIdPath = Annotated[str, Path(min_length=1, max_length=64)]


@router.get("/customers/{customer_id}", response_model=None, summary="The customer's view")
async def get_customer(
    request: Request,
    customer_id: CustomerIdPath,
    principal: Annotated[Principal, require("profile:read")],
    as_of: Annotated[datetime | None, Query(description="event time to compute figures at")] = None,
) -> dict[str, Any]:
    runtime = request.app.state.runtime
    async with runtime.engine.connect() as conn:
        loaded = await ProfileStore(conn).load([customer_id])
    customer = loaded.get(customer_id)
    if customer is None:
        raise HTTPException(404, f"customer {customer_id!r} is not known to profile")
    when = as_of or customer.get("last_event_at")
    view: ProfileSnapshot = snapshot(customer, when)
    return {
        "customer_id": customer_id,
        "last_event_at": customer.get("last_event_at"),
        "accounts": [
            {
                "account_id": a["account_id"],
                "product_type": a["product_type"],
                "currency": a["currency"],
                "balance": str(a["balance"]),
                "opened_at": a["opened_at"],
                "closed_at": a["closed_at"],
            }
            for a in customer["accounts"]
        ],
        **view.model_dump(mode="json"),
    }
