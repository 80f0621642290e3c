"""Profile's REST API: the 360° view, timeline, RM worklists, segments, tags, erasure."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Path, Query, Request
from fastapi.responses import Response

from services.profile import pii, views
from services.profile.store import ProfileStore
from services.profile.tags import InvalidRules, load_rules
from services.profile.view import compute_view
from shared.auth import Principal, require
from shared.events import CustomerErased, ErasureRequest, derived_event_id
from shared.keys import is_held, privacy_schema
from shared.kit import UnitOfWork, partition_of
from shared.settings import INPUT_TOPICS

router = APIRouter(prefix="/v1", tags=["customers"])
CustomerIdPath = Annotated[str, Path(min_length=1, max_length=64)]
Purpose = Annotated[
    str | None,
    Header(alias="X-Purpose", max_length=200,
           description="why a person opens this profile (recorded in the audit log)"),
]
MASKS = {
    "name": pii.mask_name,
    "phone": pii.mask_phone,
    "email": pii.mask_email,
    "national_id": pii.mask_national_id,
}


def _runtime(request: Request) -> Any:
    return request.app.state.runtime


def _in_book(principal: Principal, customer: dict[str, Any]) -> None:
    """A relationship manager's person token sees the customers of their own book only,
    unless it also holds `profile:all-books`."""
    if (principal.kind == "person" and principal.rm_id
            and not principal.has("profile:all-books")
            and customer.get("rm_id") != principal.rm_id):
        raise HTTPException(403, "this customer is not in your book")


async def _audit_read(conn: Any, principal: Principal, action: str, customer_id: str | None,
                      purpose: str | None, detail: dict[str, Any]) -> None:
    """Every read of profiles by a person is audited: who, what and why (X-Purpose)."""
    if principal.kind == "person":
        await views.audit(conn, subject=principal.subject, kind=principal.kind, action=action,
                          customer_id=customer_id, purpose=purpose, detail=detail)


def _personal_data(runtime: Any, tokens: dict[str, bytes], customer_id: str,
                   unmasked: bool) -> dict[str, Any]:
    protection = runtime.protection
    out: dict[str, Any] = {}
    for field, token in tokens.items():
        value = protection.cipher.decrypt(token, field=field, customer_id=customer_id)
        if field == "birth_date":
            out[field] = value if unmasked else pii.mask_date(date.fromisoformat(value))
        else:
            out[field] = value if unmasked else MASKS[field](value)
    out["masked"] = not unmasked
    return out


@router.get("/customers/{customer_id}", summary="The 360° customer view")
async def get_customer(
    request: Request,
    customer_id: CustomerIdPath,
    principal: Annotated[Principal, require("profile:read")],
    purpose: Purpose = None,
    as_of: Annotated[datetime | None, Query(description="event time to compute figures at "
                                            "(default: the customer's partition watermark)")]
    = None,
) -> dict[str, Any]:
    if as_of is not None and as_of.tzinfo is None:
        raise HTTPException(422, "as_of lacks a UTC offset")
    if as_of is not None and not 1900 <= as_of.year <= 2999:
        raise HTTPException(422, "as_of must fall in the years 1900 to 2999")
    runtime = _runtime(request)
    # Reads need no transaction (each statement is its own snapshot under READ COMMITTED
    # anyway): autocommit saves the BEGIN and COMMIT round trips.
    async with runtime.engine.connect() as raw:
        conn = await raw.execution_options(isolation_level="AUTOCOMMIT")
        found = await views.bundle(conn, customer_id)
        if found is None:
            raise HTTPException(404, f"customer {customer_id!r} is not known to profile")
        customer = found.customer
        _in_book(principal, customer)
        when = as_of or _watermark(runtime, customer) or customer.get("last_event_at")
        figures = await views.figures(conn, {customer_id: when.date()})
        personal = _personal_data(runtime, found.pii, customer_id, principal.has("pii:read"))
        birth = None
        if "birth_date" in personal and not personal["masked"]:
            birth = date.fromisoformat(personal["birth_date"])
        view = compute_view(customer, when, figures.get(customer_id), found.complaints,
                            found.population, birth)
        if principal.kind == "person":
            await views.audit(conn, subject=principal.subject, kind=principal.kind,
                              action="read_profile", customer_id=customer_id, purpose=purpose,
                              detail={"pii": not personal["masked"]})
    return {
        "customer_id": customer_id,
        "as_of": when,
        "identity": {
            **personal,
            "segment": customer.get("segment"),
            "language": customer.get("language"),
            "time_zone": customer.get("time_zone"),
            "rm_id": customer.get("rm_id"),
            "flags": customer.get("flags"),
            "registered_at": customer.get("registered_at"),
        },
        "consent": customer.get("consent") or {},
        "holdings": {
            "products": view.products,
            "total_balance": str(view.total_balance),
            "accounts": [
                {
                    "account_id": a["account_id"],
                    "product_type": a["product_type"],
                    "currency": a["currency"],
                    "balance": str(a["balance"]),
                    "margin_rate": str(a["margin_rate"]) if a["margin_rate"] is not None else None,
                    "opened_at": a["opened_at"],
                    "closed_at": a["closed_at"],
                    "close_reason": a["close_reason"],
                }
                for a in customer["accounts"]
            ],
        },
        "activity": {
            "first_activity_at": customer.get("first_activity_at"),
            "last_activity_at": customer.get("last_activity_at"),
            "transaction_count": customer.get("transaction_count"),
            **{k: str(x) if isinstance(x, Decimal) else x for k, x in view.figures.items()},
            "channel_mix": view.channel_mix,
        },
        "feedback": view.feedback,
        "value": view.valuation,
        "tags": customer.get("tags") or [],
        "stage": {"stage": customer.get("stage"), "since": customer.get("stage_since")},
        "churn": {
            "probability": customer.get("churn_probability"),
            "band": customer.get("churn_band"),
            "reasons": customer.get("churn_reasons") or [],
            "as_of": customer.get("churn_as_of"),
        },
    }


def _watermark(runtime: Any, customer: dict[str, Any]) -> datetime | None:
    """The customer's partition watermark, so a silent customer's recency keeps growing."""
    consumer = runtime.consumers[0] if runtime.consumers else None
    last = customer.get("last_event_at")
    if consumer is None:
        return last
    now = consumer.marks.partition_now(partition_of(customer["customer_id"],
                                                    runtime.settings.partitions))
    if now is None:
        return last
    return max(now, last) if last else now


@router.get("/customers/{customer_id}/timeline", summary="The customer's last events")
async def get_timeline(
    request: Request,
    customer_id: CustomerIdPath,
    principal: Annotated[Principal, require("profile:read")],
    purpose: Purpose = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 100,
) -> dict[str, Any]:
    async with _runtime(request).engine.begin() as conn:
        loaded = await ProfileStore(conn).load([customer_id])
        if customer_id not in loaded:
            raise HTTPException(404, f"customer {customer_id!r} is not known to profile")
        _in_book(principal, loaded[customer_id])
        rows = await views.timeline_of(conn, customer_id, limit)
        await _audit_read(conn, principal, "read_timeline", customer_id, purpose,
                          {"events": len(rows)})
    return {
        "customer_id": customer_id,
        "events": [
            {"event_id": str(r["event_id"]), "event_type": r["event_type"],
             "occurred_at": r["occurred_at"], **r["summary"]}
            for r in rows
        ],
    }


@router.get("/customers", summary="RM worklists: customers by segment, tier, tag, stage, risk")
async def list_customers(
    request: Request,
    principal: Annotated[Principal, require("profile:read")],
    segment: Annotated[str | None, Query(max_length=40, description="RFM segment")] = None,
    tier: Annotated[str | None, Query(pattern="^(high|mid|low)$")] = None,
    tag: Annotated[str | None, Query(max_length=64)] = None,
    stage: Annotated[str | None, Query(max_length=20)] = None,
    min_churn: Annotated[float | None, Query(ge=0, le=1)] = None,
    phone: Annotated[str | None, Query(max_length=32, description="exact, any format")] = None,
    national_id: Annotated[str | None, Query(max_length=64)] = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    purpose: Purpose = None,
) -> dict[str, Any]:
    runtime = _runtime(request)
    after = _decode_cursor(cursor)
    only: list[str] | None = None
    async with runtime.engine.begin() as conn:
        for kind, value in (("phone", phone), ("national_id", national_id)):
            if value is not None:
                try:
                    digest = runtime.protection.blind.index(kind, value)
                except ValueError:
                    raise HTTPException(422, f"{kind} is not a usable {kind}") from None
                found = await views.find_by_index(conn, kind, digest)
                only = found if only is None else [c for c in only if c in found]
        book = principal.book("profile")
        rows = await views.page(conn, segment=segment, tier=tier, tag=tag, stage=stage,
                                min_churn=min_churn, only=only, rm_id=book, after=after,
                                limit=limit)
        # The filters' names, never their values (a phone number is personal data).
        await _audit_read(conn, principal, "list_customers", None, purpose, {
            "filters": sorted(k for k, v in (("segment", segment), ("tier", tier), ("tag", tag),
                              ("stage", stage), ("min_churn", min_churn), ("phone", phone),
                              ("national_id", national_id)) if v is not None),
            "returned": len(rows)})
    return {
        "items": [
            {**r, "clv": r["clv"], "last_activity_at": r["last_activity_at"]} for r in rows
        ],
        "next_cursor": _encode_cursor(rows[-1]["customer_id"]) if len(rows) == limit else None,
    }


def _encode_cursor(customer_id: str) -> str:
    return base64.urlsafe_b64encode(customer_id.encode()).decode()


def _decode_cursor(cursor: str | None) -> str | None:
    if cursor is None:
        return None
    try:
        return base64.urlsafe_b64decode(cursor.encode()).decode()
    except (ValueError, UnicodeDecodeError):
        raise HTTPException(422, "cursor is not one this API returned") from None


@router.get("/segments", summary="Customers per RFM segment, value tier, quadrant and stage")
async def segments(
    request: Request, principal: Annotated[Principal, require("profile:read")]
) -> dict[str, Any]:
    async with _runtime(request).engine.connect() as conn:
        return await views.segment_counts(conn)


@router.get("/tags/rules", summary="The tag rules in force")
async def tag_rules(
    request: Request, principal: Annotated[Principal, require("profile:read")]
) -> dict[str, Any]:
    rules = _runtime(request).protection.tags
    return {"files": list(rules.sources), "rules": rules.describe()}


@router.post("/tags/rules:reload", summary="Reload tag rules from their files, validated")
async def reload_tag_rules(
    request: Request, principal: Annotated[Principal, require("profile:admin")]
) -> dict[str, Any]:
    runtime = _runtime(request)
    try:
        rules = load_rules(request.app.state.settings.tags_dir)
    except InvalidRules as exc:
        raise HTTPException(422, f"rules not reloaded: {exc}") from None
    runtime.protection.tags = rules
    return {"reloaded": len(rules.rules), "files": list(rules.sources)}


@router.delete("/customers/{customer_id}", status_code=202, response_class=Response,
               summary="Erase a customer everywhere (right to erasure)",
               responses={202: {"description": "Erasure accepted (no body; X-Erasure-Id)"}})
async def erase_customer(
    request: Request,
    customer_id: CustomerIdPath,
    principal: Annotated[Principal, require("profile:erase")],
    purpose: Purpose = None,
) -> Response:
    runtime = _runtime(request)
    now = datetime.now(UTC)
    privacy = privacy_schema(request.app.state.settings.schema_prefix)
    async with runtime.engine.begin() as conn:
        if principal.book("profile") is not None:
            # A book-limited token erases only a known customer of its own book.
            known = (await ProfileStore(conn).load([customer_id])).get(customer_id) or {}
            principal.ensure_in_book("profile", known.get("rm_id"))
        if await is_held(conn, privacy, customer_id):
            # The bank must keep these records (litigation, fraud, a regulator's request).
            raise HTTPException(409, "customer is under legal hold; erasure is refused until "
                                "the hold is released")
        existed = await views.erase(conn, customer_id, now, privacy_schema=privacy)
        await views.audit(conn, subject=principal.subject, kind=principal.kind,
                          action="erase", customer_id=customer_id, purpose=purpose,
                          detail={"existed": existed})
        uow: UnitOfWork[None] = UnitOfWork(conn, None, request.app.state.settings)
        await uow.emit(
            CustomerErased(
                event_id=derived_event_id("customer.erased", customer_id),
                customer_id=customer_id,
                occurred_at=now,
                source=request.app.state.settings.source_id,
                payload=ErasureRequest(requested_by=principal.subject[:64]),
            ),
            INPUT_TOPICS["customers"],
        )
        await uow.flush()
    runtime.relay.notify()
    return Response(status_code=202, headers={"X-Erasure-Id": str(uuid.uuid5(
        uuid.NAMESPACE_URL, f"erasure:{customer_id}"))})
