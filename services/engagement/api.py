"""Engagement's REST API: actions and reasons, next best action, playbooks, RM tasks, uplift."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Body, HTTPException, Path, Query, Request
from sqlalchemy.dialects.postgresql import insert as pg_insert

from services.engagement.domain import uplift
from services.engagement.handlers import run_playbooks
from services.engagement.playbooks import InvalidPlaybook, compile_playbook
from services.engagement.store import (
    EngagementStore,
    actions,
    churn_events,
    outcomes,
    playbooks,
    rm_tasks,
)
from shared.auth import Principal, require
from shared.events import (
    EngagementOutcome,
    EngagementOutcomeRecorded,
    StageChange,
    StageChanged,
    derived_event_id,
)
from shared.kit import UnitOfWork
from shared.settings import OUTPUT_TOPICS

router = APIRouter(prefix="/v1", tags=["engagement"])
CustomerIdPath = Annotated[str, Path(min_length=1, max_length=64)]
PlaybookIdPath = Annotated[str, Path(pattern=r"^[a-z][a-z0-9_]{1,63}$")]
OUTCOMES = {"opened", "clicked", "accepted_offer", "declined", "task_completed"}


def _rt(request: Request) -> Any:
    return request.app.state.runtime


async def _ensure_in_book(store: EngagementStore, principal: Principal,
                          customer_id: str) -> None:
    """403 unless a relationship manager's token asks about a customer of their book."""
    if principal.book("engagement") is not None:
        contact = await store.contact(customer_id)
        principal.ensure_in_book("engagement", (contact or {}).get("rm_id"))


def _action_view(a: dict[str, Any]) -> dict[str, Any]:
    return {
        "action_id": str(a["action_id"]), "playbook": a["playbook"], "action": a["action"],
        "channel": a["channel"], "purpose": a["purpose"], "offer": a["offer"],
        "decision": a["decision"], "reason": a["reason"], "policy": a["policy"],
        "treated": a["treated"], "decided_at": a["decided_at"], "deliver_at": a["deliver_at"],
        "status": a["status"], "attempts": a["attempts"], "delivered_at": a["delivered_at"],
        "outcomes": a.get("outcomes", []),
    }


@router.get("/customers/{customer_id}/actions", summary="Decisions taken for a customer")
async def get_actions(
    request: Request, customer_id: CustomerIdPath,
    principal: Annotated[Principal, require("engagement:read")],
) -> dict[str, Any]:
    async with _rt(request).engine.connect() as conn:
        store = EngagementStore(conn)
        await _ensure_in_book(store, principal, customer_id)
        found = await store.actions_of(customer_id)
        consent = await store.consent_of(customer_id)
    return {
        "customer_id": customer_id,
        "consent": {f"{c}:{p}": g for (c, p), g in sorted(consent.items())},
        "actions": [_action_view(a) for a in found],
    }


@router.get("/customers/{customer_id}/next-best-action",
            summary="What would fire now for the customer's current stage, and why (or why not)")
async def next_best_action(
    request: Request, customer_id: CustomerIdPath,
    principal: Annotated[Principal, require("engagement:read")],
) -> dict[str, Any]:
    runtime = _rt(request)
    now = datetime.now(UTC)
    async with runtime.engine.connect() as conn:
        store = EngagementStore(conn, runtime.registry)
        contact = await store.contact(customer_id)
        principal.ensure_in_book("engagement", (contact or {}).get("rm_id"))
        if contact is None or not contact.get("stage"):
            return {"customer_id": customer_id, "candidates": [],
                    "why_nothing": "no stage known for this customer yet"}
        probe = StageChanged(
            event_id=uuid.uuid4(), customer_id=customer_id, occurred_at=now,
            source=request.app.state.settings.source_id,
            payload=StageChange(to_stage=contact["stage"], rule="next-best-action probe",
                                transition_at=now),
        )
        uow: UnitOfWork[EngagementStore] = UnitOfWork(conn, store, request.app.state.settings)
        decisions = await run_playbooks(
            probe, {"to": contact["stage"], "from": None, "rule": "probe"}, uow=uow, record=False
        )
    return {
        "customer_id": customer_id,
        "stage": contact["stage"],
        "candidates": [
            {"playbook": d["playbook"], "channel": d["channel"], "offer": d["offer"],
             "decision": d["decision"], "reason": d["reason"], "policy": d["policy"]}
            for d in decisions
        ],
        "why_nothing": None if decisions else f"no playbook fires for stage {contact['stage']}",
    }


@router.get("/playbooks", summary="Playbooks in force")
async def list_playbooks(
    request: Request, principal: Annotated[Principal, require("engagement:read")]
) -> dict[str, Any]:
    registry = _rt(request).registry
    return {"playbooks": [p.spec.model_dump(mode="json") for p in registry.playbooks.values()]}


@router.get("/playbooks/{playbook_id}", summary="One playbook")
async def get_playbook(
    request: Request, playbook_id: PlaybookIdPath,
    principal: Annotated[Principal, require("engagement:read")],
) -> dict[str, Any]:
    p = _rt(request).registry.playbooks.get(playbook_id)
    if p is None:
        raise HTTPException(404, f"no playbook {playbook_id!r}")
    return dict(p.spec.model_dump(mode="json"))


@router.put("/playbooks/{playbook_id}", summary="Create or replace a playbook (validated)")
async def put_playbook(
    request: Request, playbook_id: PlaybookIdPath,
    principal: Annotated[Principal, require("engagement:admin")],
    definition: Annotated[dict[str, Any], Body()],
) -> dict[str, Any]:
    if definition.get("id", playbook_id) != playbook_id:
        raise HTTPException(422, "id in the body differs from the path")
    try:
        playbook = compile_playbook({**definition, "id": playbook_id})
    except InvalidPlaybook as exc:
        raise HTTPException(422, str(exc)) from None
    runtime = _rt(request)
    async with runtime.engine.begin() as conn:
        stmt = pg_insert(playbooks).values(id=playbook_id,
                                           definition=playbook.spec.model_dump(mode="json"),
                                           source="api", updated_at=sa.func.now())
        await conn.execute(stmt.on_conflict_do_update(
            index_elements=[playbooks.c.id],
            set_={"definition": stmt.excluded.definition, "source": "api",
                  "updated_at": sa.func.now()}))
    runtime.registry.playbooks[playbook_id] = playbook
    return dict(playbook.spec.model_dump(mode="json"))


@router.delete("/playbooks/{playbook_id}", status_code=204, summary="Remove a playbook")
async def delete_playbook(
    request: Request, playbook_id: PlaybookIdPath,
    principal: Annotated[Principal, require("engagement:admin")],
) -> None:
    runtime = _rt(request)
    if playbook_id not in runtime.registry.playbooks:
        raise HTTPException(404, f"no playbook {playbook_id!r}")
    async with runtime.engine.begin() as conn:
        await conn.execute(sa.delete(playbooks).where(playbooks.c.id == playbook_id))
    runtime.registry.playbooks.pop(playbook_id, None)


@router.get("/playbooks/{playbook_id}/uplift",
            summary="Churn of treated versus holdout, with a 95% interval")
async def playbook_uplift(
    request: Request, playbook_id: PlaybookIdPath,
    principal: Annotated[Principal, require("engagement:read")],
    window_days: Annotated[int | None, Query(ge=1, le=730)] = None,
    decided_from: Annotated[datetime | None, Query()] = None,
    decided_before: Annotated[datetime | None, Query()] = None,
) -> dict[str, Any]:
    """Treated = a decision that contacted the customer (sent or deferred, not a dry run);
    holdout = the playbook's or the global control group. `decided_before` keeps to decisions
    whose whole window has been observed."""
    for name, moment in (("decided_from", decided_from), ("decided_before", decided_before)):
        if moment is None:
            continue
        if moment.tzinfo is None:
            raise HTTPException(422, f"{name} needs a UTC offset")
        try:
            moment.astimezone(UTC)
        except OverflowError:
            raise HTTPException(422, f"{name} is out of range") from None
    runtime = _rt(request)
    window = timedelta(days=window_days or request.app.state.settings.uplift_window_days)
    churned = (
        sa.exists().where(churn_events.c.customer_id == actions.c.customer_id,
                          churn_events.c.at > actions.c.decided_at,
                          churn_events.c.at <= actions.c.decided_at + window)
    )
    query = (
        sa.select(actions.c.treated, actions.c.decision, sa.func.count(),
                  sa.func.count().filter(churned))
        .where(actions.c.playbook == playbook_id,
               actions.c.decision.in_(["sent", "deferred", "holdout"]))
        .group_by(actions.c.treated, actions.c.decision)
    )
    if decided_from is not None:
        query = query.where(actions.c.decided_at >= decided_from)
    if decided_before is not None:
        query = query.where(actions.c.decided_at < decided_before)
    async with runtime.engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    treated = sum(r[2] for r in rows if r[0] and r[1] in ("sent", "deferred"))
    treated_churned = sum(r[3] for r in rows if r[0] and r[1] in ("sent", "deferred"))
    holdout = sum(r[2] for r in rows if r[1] == "holdout")
    holdout_churned = sum(r[3] for r in rows if r[1] == "holdout")
    u = uplift(treated, treated_churned, holdout, holdout_churned)
    return {"playbook": playbook_id, "window_days": window.days,
            "decided_from": decided_from, "decided_before": decided_before, **u.__dict__,
            "outcome": "churn = dormant or churned stage within the window after the decision"}


@router.get("/rm-tasks", summary="A relationship manager's task list")
async def list_rm_tasks(
    request: Request, principal: Annotated[Principal, require("engagement:read")],
    rm: Annotated[str | None, Query(max_length=64)] = None,
    status: Annotated[str, Query(pattern="^(open|completed)$")] = "open",
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> dict[str, Any]:
    if principal.kind == "person" and principal.rm_id and rm not in (None, principal.rm_id):
        raise HTTPException(403, "relationship managers see their own tasks")
    rm = rm or (principal.rm_id if principal.kind == "person" else None)
    query = sa.select(rm_tasks).where(rm_tasks.c.status == status) \
        .order_by(rm_tasks.c.created_at).limit(limit)
    if rm:
        query = query.where(rm_tasks.c.rm_id == rm)
    async with _rt(request).engine.connect() as conn:
        rows = [dict(r._mapping) for r in await conn.execute(query)]
    return {"tasks": [{**r, "task_id": str(r["task_id"])} for r in rows]}


@router.post("/rm-tasks/{task_id}:complete", summary="Close a task with its outcome")
async def complete_rm_task(
    request: Request, task_id: uuid.UUID,
    principal: Annotated[Principal, require("engagement:write")],
    body: Annotated[dict[str, Any], Body(examples=[{"outcome": "retained"}])],
) -> dict[str, Any]:
    outcome = str(body.get("outcome", ""))[:64]
    if not outcome:
        raise HTTPException(422, "outcome is required (e.g. retained, declined, unreachable)")
    async with _rt(request).engine.begin() as conn:
        book = principal.book("engagement")
        if book is not None:
            owner = await conn.scalar(
                sa.select(rm_tasks.c.rm_id).where(rm_tasks.c.task_id == task_id))
            if owner is not None and owner != book:
                raise HTTPException(403, "this task is not in your book")
        result = await conn.execute(
            rm_tasks.update().where(rm_tasks.c.task_id == task_id, rm_tasks.c.status == "open")
            .values(status="completed", outcome=outcome, completed_at=datetime.now(UTC))
            .returning(rm_tasks.c.customer_id)
        )
        row = result.first()
        if row is None:
            raise HTTPException(404, "no open task with that id")
        await _record_outcome(request, conn, task_id, row.customer_id, "task_completed", outcome)
    return {"task_id": str(task_id), "status": "completed", "outcome": outcome}


@router.post("/actions/{action_id}/outcomes", summary="Record an outcome (opened, clicked...)")
async def record_outcome(
    request: Request, action_id: uuid.UUID,
    principal: Annotated[Principal, require("engagement:write")],
    body: Annotated[dict[str, Any], Body(examples=[{"outcome": "accepted_offer"}])],
) -> dict[str, Any]:
    outcome = body.get("outcome")
    if not isinstance(outcome, str) or outcome not in OUTCOMES:  # a dict is unhashable
        raise HTTPException(422, f"outcome must be one of {sorted(OUTCOMES)}")
    async with _rt(request).engine.begin() as conn:
        store = EngagementStore(conn)
        action = await store.action(action_id)
        if action is None:
            raise HTTPException(404, "no action with that id")
        await _ensure_in_book(store, principal, action["customer_id"])
        await _record_outcome(request, conn, action_id, action["customer_id"], outcome, None)
    return {"action_id": str(action_id), "outcome": outcome}


async def _record_outcome(request: Request, conn: Any, action_id: uuid.UUID, customer_id: str,
                          outcome: str, detail: str | None) -> None:
    now = datetime.now(UTC)
    await conn.execute(pg_insert(outcomes).values(action_id=action_id, outcome=outcome, at=now,
                                                  detail=detail).on_conflict_do_nothing())
    uow: UnitOfWork[None] = UnitOfWork(conn, None, request.app.state.settings)
    await uow.emit(
        EngagementOutcomeRecorded(
            event_id=derived_event_id("engagement.outcome", action_id, outcome),
            customer_id=customer_id, occurred_at=now,
            source=request.app.state.settings.source_id, causation_id=action_id,
            payload=EngagementOutcome(action_id=action_id, outcome=outcome, detail=detail),
        ),
        OUTPUT_TOPICS["engagement_actions"],
    )
    await uow.flush()
