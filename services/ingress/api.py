"""Ingress REST API: partners and the shared-customer mapping a partner may speak for.

Adding, removing and rotating a partner changes the broker (credentials, ACLs) and prints a
secret, so it is an operator's command (`tenure partners`), not a route.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from services.ingress import store
from services.ingress.domain import PARTNER_ID
from shared.auth import Principal, require

router = APIRouter(prefix="/v1/partners", tags=["partners"])

PartnerId = Annotated[str, Path(pattern=PARTNER_ID.pattern, max_length=20)]
PartnerCustomerId = Annotated[str, Path(min_length=1, max_length=64)]


class Mapping(BaseModel):
    model_config = ConfigDict(extra="forbid")
    customer_id: Annotated[str, Field(min_length=1, max_length=64,
                                      description="the bank's customer id")]


def _engine(request: Request) -> Any:
    return request.app.state.runtime.engine


@router.get("", summary="Partners, their status and how many customers each may speak for")
async def list_partners(
    request: Request, principal: Annotated[Principal, require("partners:read")]
) -> dict[str, Any]:
    async with _engine(request).connect() as conn:
        return {"partners": await store.all_partners(conn)}


@router.get("/{partner_id}/customers", summary="The partner's shared customers (paged)")
async def list_mappings(
    request: Request,
    partner_id: PartnerId,
    principal: Annotated[Principal, require("partners:read")],
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    after: Annotated[str | None, Query(max_length=64,
                                       description="last partner_customer_id seen")] = None,
) -> dict[str, Any]:
    async with _engine(request).connect() as conn:
        if await store.partner(conn, partner_id) is None:
            raise HTTPException(404, f"no partner {partner_id!r}")
        rows = await store.mappings(conn, partner_id, limit=limit, after=after)
    return {
        "partner_id": partner_id,
        "customers": rows,
        "next_after": rows[-1]["partner_customer_id"] if len(rows) == limit else None,
    }


@router.put("/{partner_id}/customers/{partner_customer_id}", status_code=204,
            summary="Let the partner speak for one of the bank's customers under its own id")
async def put_mapping(
    request: Request,
    partner_id: PartnerId,
    partner_customer_id: PartnerCustomerId,
    body: Mapping,
    principal: Annotated[Principal, require("partners:write")],
) -> Response:
    async with _engine(request).begin() as conn:
        try:
            await store.map_customer(conn, partner_id, partner_customer_id, body.customer_id,
                                     datetime.now(UTC))
        except store.UnknownPartner as exc:
            raise HTTPException(404, str(exc)) from None
    return Response(status_code=204)


@router.delete("/{partner_id}/customers/{partner_customer_id}", status_code=204,
               summary="Stop the partner speaking for that customer")
async def delete_mapping(
    request: Request,
    partner_id: PartnerId,
    partner_customer_id: PartnerCustomerId,
    principal: Annotated[Principal, require("partners:write")],
) -> Response:
    async with _engine(request).begin() as conn:
        if not await store.unmap_customer(conn, partner_id, partner_customer_id):
            raise HTTPException(404, "no such mapping")
    return Response(status_code=204)
