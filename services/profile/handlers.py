"""Profile's event handlers: one per event type, folding the batch through the unit of work."""

from __future__ import annotations

import logging
from datetime import date, datetime
from typing import Any

import sqlalchemy as sa

from services.profile import views
from services.profile.domain import snapshot_from_view
from services.profile.store import ProfileStore, customers
from services.profile.view import compute_view
from shared.crypto import SealError, unsealed_details
from shared.events import (
    AccountClosed,
    AccountOpened,
    AppClicked,
    ChurnScored,
    ConsentChanged,
    CustomerDetails,
    CustomerErased,
    CustomerRegistered,
    CustomerUpdated,
    EnvelopeBase,
    FeedbackKind,
    FeedbackSubmitted,
    InitiatedBy,
    ProfileUpdated,
    StageChanged,
    TransactionPosted,
    derived_event_id,
)
from shared.keys import privacy_schema
from shared.kit import UnitOfWork
from shared.logs import customer_ref
from shared.settings import OUTPUT_TOPICS

log = logging.getLogger("tenure.profile")
Uow = UnitOfWork[ProfileStore]

PII_FIELDS = ("name", "phone", "email", "national_id", "birth_date")
INDEXED = {"phone": "phone", "national_id": "national_id", "email": "email"}


def _timeline(uow: Uow, event: EnvelopeBase, summary: dict[str, Any]) -> None:
    uow.store.fold.timeline.append(
        {
            "customer_id": event.customer_id,
            "event_id": event.event_id,
            "occurred_at": event.occurred_at,
            "event_type": event.event_type,
            "summary": summary,
        }
    )


async def on_customer_registered(
    event: CustomerRegistered | CustomerUpdated, *, uow: Uow, now: datetime
) -> None:
    p = event.payload
    if p.sealed is not None:
        p = await _unsealed(uow, event)
    values = {
        "registered": True,
        "segment": p.segment.value,
        "time_zone": p.time_zone,
        "language": p.language,
        "rm_id": p.rm_id,
        "flags": p.flags.model_dump(),
    }
    if isinstance(event, CustomerRegistered):
        values["registered_at"] = event.occurred_at
    fold = uow.store.fold
    fold.customer_attributes(event.customer_id, event.occurred_at, values)
    protection = uow.store.protection
    if protection is not None:
        # Personal data is encrypted before it reaches the database, and searchable only
        # through a keyed blind index. A field the event leaves out is kept as it was.
        for name in PII_FIELDS:
            value = getattr(p, name)
            if value is None:
                continue
            text = value.isoformat() if isinstance(value, date) else str(value)
            fold.pii[(event.customer_id, name)] = protection.cipher.encrypt(
                text, field=name, customer_id=event.customer_id
            )
            if name in INDEXED:
                try:
                    digest = protection.blind.index(INDEXED[name], text)  # type: ignore[arg-type]
                except ValueError:
                    digest = None  # not a usable phone / id / e-mail: stored, not searchable
                fold.blind[(event.customer_id, INDEXED[name])] = digest
    _timeline(uow, event, {"segment": p.segment.value, "rm_id": p.rm_id})
    uow.store.touch(event, now)


on_customer_updated = on_customer_registered


async def _unsealed(uow: Uow, event: CustomerRegistered | CustomerUpdated) -> CustomerDetails:
    """The payload with its sealed personal fields opened with the customer's data key.

    A key that is gone (the customer was erased: crypto-shredded) or a blob that fails
    authentication raises, and the kit dead-letters the event with that reason; the DLQ
    then holds the original, still sealed, bytes.
    """
    opener = uow.store.protection.opener if uow.store.protection is not None else None
    if opener is None:
        raise SealError("sealed personal data, but profile has no key store")
    sealed = event.payload.sealed
    assert sealed is not None
    opened = await opener.open(uow.conn, sealed, customer_id=event.customer_id,
                               purpose=event.event_type)
    return unsealed_details(event.payload, opened)


async def on_consent_changed(event: ConsentChanged, *, uow: Uow, now: datetime) -> None:
    p = event.payload
    key = f"{p.channel.value}:{p.purpose.value}"
    uow.store.fold.consent(event.customer_id, event.occurred_at, key, p.granted)
    _timeline(uow, event, {"channel": p.channel.value, "purpose": p.purpose.value,
                           "granted": p.granted})
    uow.store.touch(event, now)


async def on_account_opened(event: AccountOpened, *, uow: Uow, now: datetime) -> None:
    p = event.payload
    fold = uow.store.fold
    fold.open_account(
        event.customer_id, p.account_id, p.product_type.value, p.currency,
        event.occurred_at, p.margin_rate,
    )
    fold.activity(event.customer_id, event.occurred_at, customer_initiated=True, transactions=0)
    fold.day(event.customer_id, event.occurred_at, app_events=0)
    _timeline(uow, event, {"account_id": p.account_id, "product_type": p.product_type.value})
    uow.store.touch(event, now)


async def on_account_closed(event: AccountClosed, *, uow: Uow, now: datetime) -> None:
    p = event.payload
    fold = uow.store.fold
    fold.close_account(
        event.customer_id, p.account_id, p.product_type.value, p.currency,
        event.occurred_at, p.reason,
    )
    fold.activity(event.customer_id, event.occurred_at, customer_initiated=False, transactions=0)
    _timeline(uow, event, {"account_id": p.account_id, "product_type": p.product_type.value,
                           "reason": p.reason})
    uow.store.touch(event, now)


async def on_transaction_posted(event: TransactionPosted, *, uow: Uow, now: datetime) -> None:
    p = event.payload
    fold = uow.store.fold
    by_customer = p.initiated_by is InitiatedBy.customer
    fold.activity(event.customer_id, event.occurred_at, customer_initiated=by_customer,
                  transactions=1)
    counts: dict[str, Any] = {}
    if by_customer:
        counts = {"transactions": 1, "amount": p.amount}
        if p.category.value == "card_purchase":
            counts["card_spend"] = p.amount
        if p.channel.value != "batch":
            counts[f"ch_{p.channel.value}"] = 1
    if p.category.value == "salary" and p.direction.value == "credit":
        counts["salary_credits"] = 1
    if counts:
        fold.day(event.customer_id, event.occurred_at, **counts)
    if p.balance_after is not None:
        fold.balance(
            event.customer_id, p.account_id, p.product_type.value, p.currency,
            p.balance_after, event.occurred_at,
        )
    _timeline(uow, event, {"amount": str(p.amount), "currency": p.currency,
                           "direction": p.direction.value, "category": p.category.value,
                           "channel": p.channel.value, "initiated_by": p.initiated_by.value})
    uow.store.touch(event, now)


async def on_app_click(event: AppClicked, *, uow: Uow, now: datetime) -> None:
    """Any app event is customer-initiated activity (DESIGN.md §2); a session starts at login."""
    p = event.payload
    fold = uow.store.fold
    fold.activity(event.customer_id, event.occurred_at, customer_initiated=True, transactions=0)
    login = p.action == "login"
    fold.day(event.customer_id, event.occurred_at, app_events=1, sessions=int(login),
             **({f"ch_{p.channel.value}": 1} if login else {}))
    _timeline(uow, event, {"action": p.action, "screen": p.screen, "channel": p.channel.value})
    uow.store.touch(event, now)


async def on_feedback(event: FeedbackSubmitted, *, uow: Uow, now: datetime) -> None:
    p = event.payload
    fold = uow.store.fold
    fold.activity(event.customer_id, event.occurred_at, customer_initiated=True, transactions=0)
    fold.day(event.customer_id, event.occurred_at, feedback=1)
    if p.kind is FeedbackKind.nps and p.score is not None:
        fold.customer_attributes(event.customer_id, event.occurred_at,
                                 {"last_nps": p.score, "last_nps_at": event.occurred_at})
    if p.kind in (FeedbackKind.complaint_opened, FeedbackKind.complaint_resolved):
        complaint_id = p.complaint_id or f"{event.event_id}"
        entry = fold.complaints.setdefault((event.customer_id, complaint_id), {})
        entry.update({"category": p.category, "severity": p.severity})
        key = "opened_at" if p.kind is FeedbackKind.complaint_opened else "resolved_at"
        entry[key] = event.occurred_at
    # The free text is personal data: it stays out of the timeline.
    _timeline(uow, event, {"kind": p.kind.value, "score": p.score, "category": p.category,
                           "complaint_id": p.complaint_id})
    uow.store.touch(event, now)


async def on_churn_scored(event: ChurnScored, *, uow: Uow, now: datetime) -> None:
    """The latest score, for the 360° view. It never reaches the snapshot's features."""
    p = event.payload
    uow.store.fold.signal(
        event.customer_id, churn_probability=p.probability, churn_band=p.band.value,
        churn_reasons=[r.text for r in p.reasons], churn_as_of=p.as_of,
    )


async def on_stage_changed(event: StageChanged, *, uow: Uow, now: datetime) -> None:
    p = event.payload
    uow.store.fold.signal(event.customer_id, stage=p.to_stage.value,
                          stage_since=p.transition_at)


async def on_customer_erased(event: CustomerErased, *, uow: Uow, now: datetime) -> None:
    await uow.store.flush()
    await views.erase(uow.conn, event.customer_id, event.occurred_at,
                      privacy_schema=privacy_schema(uow.settings.schema_prefix))
    uow.store.touched.pop(event.customer_id, None)


async def emit_profile_updates(uow: Uow) -> None:
    """Once per batch per customer: the snapshot after everything the batch changed."""
    touched = uow.store.touched
    if not touched:
        return
    store = uow.store
    loaded = await store.load(list(touched))
    as_of = {
        cid: max(t.now, t.event.occurred_at) for cid, t in touched.items() if cid in loaded
    }
    figures = await views.figures(uow.conn, {c: t.date() for c, t in as_of.items()})
    complaints = await views.complaints_of(uow.conn, as_of)
    population = await views.population(uow.conn)
    births = await _birth_dates(uow, list(as_of))
    moves: dict[tuple[str, int], int] = {}
    updates = []
    for customer_id, when in as_of.items():
        customer = loaded[customer_id]
        view = compute_view(customer, when, figures.get(customer_id),
                            complaints.get(customer_id, []), population,
                            births.get(customer_id))
        tags = store.protection.tags.evaluate(view.variables) if store.protection else []
        old = customer.get("buckets") or {}
        for measure, bucket in view.buckets.items():
            if old.get(measure) != bucket:
                if old.get(measure) is not None:
                    before = (measure, int(old[measure]))
                    moves[before] = moves.get(before, 0) - 1
                if bucket is not None:
                    moves[(measure, bucket)] = moves.get((measure, bucket), 0) + 1
        updates.append({
            "b_customer_id": customer_id, "buckets": view.buckets, "tags": tags,
            "rfm_segment": view.valuation["rfm_segment"],
            "value_tier": view.valuation["value_tier"],
            "quadrant": view.valuation["quadrant"], "clv": view.valuation["clv"],
        })
        touch = touched[customer_id]
        try:
            payload = snapshot_from_view(customer, view, tags)
        except ValueError as exc:
            # The state is stored; only its snapshot breaks the contract (e.g. a balance
            # beyond the wire format). Say so rather than block the partition.
            log.error(
                "snapshot not emitted",
                extra={"customer": customer_ref(customer_id), "reason": type(exc).__name__},
            )
            continue
        await uow.emit(
            ProfileUpdated(
                event_id=derived_event_id("profile.updated", touch.event.event_id),
                customer_id=customer_id,
                occurred_at=touch.event.occurred_at,
                source=uow.settings.source_id,
                causation_id=touch.event.event_id,
                payload=payload,
            ),
            OUTPUT_TOPICS["profile_updates"],
        )
    if updates:
        await uow.conn.execute(_UPDATE_DERIVED, updates)
    await views.move_population(uow.conn, moves)
    touched.clear()


_UPDATE_DERIVED = (
    customers.update()
    .where(customers.c.customer_id == sa.bindparam("b_customer_id"))
    .values(
        buckets=sa.bindparam("buckets"),
        tags=sa.bindparam("tags"),
        rfm_segment=sa.bindparam("rfm_segment"),
        value_tier=sa.bindparam("value_tier"),
        quadrant=sa.bindparam("quadrant"),
        clv=sa.bindparam("clv"),
    )
)


async def _birth_dates(uow: Uow, ids: list[str]) -> dict[str, date]:
    protection = uow.store.protection
    if protection is None or not ids:
        return {}
    tokens = await views.tokens_of(uow.conn, ids, "birth_date")
    out: dict[str, date] = {}
    for cid, token in tokens.items():
        out[cid] = date.fromisoformat(
            protection.cipher.decrypt(token, field="birth_date", customer_id=cid)
        )
    return out


HANDLERS = {
    "customer.registered": on_customer_registered,
    "customer.updated": on_customer_updated,
    "consent.changed": on_consent_changed,
    "account.opened": on_account_opened,
    "account.closed": on_account_closed,
    "transaction.posted": on_transaction_posted,
    "app.click": on_app_click,
    "feedback.submitted": on_feedback,
    "churn.scored": on_churn_scored,
    "stage.changed": on_stage_changed,
    "customer.erased": on_customer_erased,
}
