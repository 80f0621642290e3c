"""Engagement's REST API: a customer's actions with their reasons."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request

from services.engagement.store import EngagementStore
from shared.auth import Principal, require

router = APIRouter(prefix="/v1", tags=["actions"])


@router.get("/customers/{customer_id}/actions", summary="Decisions taken for a customer")
async def get_actions(
    request: Request,
    customer_id: Annotated[str, Path(min_length=1, max_length=64)],
    principal: Annotated[Principal, require("engagement:read")],
) -> dict[str, Any]:
    async with request.app.state.runtime.engine.connect() as conn:
        store = EngagementStore(conn)
        actions = await store.actions_of(customer_id)
        consent = await store.consent_of(customer_id)
    return {
        "customer_id": customer_id,
        "consent": {f"{c}:{p}": g for (c, p), g in sorted(consent.items())},
        "actions": [
            {
                "action_id": str(a["action_id"]),
                "playbook": a["playbook"],
                "action": a["action"],
                "channel": a["channel"],
                "decision": a["decision"],
                "reason": a["reason"],
                "policy": a["policy"],
                "decided_at": a["decided_at"],
            }
            for a in actions
        ],
    }
