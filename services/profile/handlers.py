"""Profile's event handlers: one per event type, folding the batch through the unit of work."""

from __future__ import annotations

import logging
from datetime import datetime

from services.profile.domain import snapshot
from services.profile.store import ProfileStore
from shared.events import (
    AccountClosed,
    AccountOpened,
    AppClicked,
    ConsentChanged,
    CustomerRegistered,
    CustomerUpdated,
    FeedbackSubmitted,
    InitiatedBy,
    ProfileUpdated,
    TransactionPosted,
    derived_event_id,
)
from shared.kit import UnitOfWork
from shared.logs import customer_ref
from shared.settings import OUTPUT_TOPICS

log = logging.getLogger("tenure.profile")
Uow = UnitOfWork[ProfileStore]


async def on_customer_registered(
    event: CustomerRegistered | CustomerUpdated, *, uow: Uow, now: datetime
) -> None:
    p = event.payload
    # Personal fields (name, phone, e-mail, national id, birth date) are not stored yet: the
    # encrypted, blind-indexed store is the profile issue's work. Nothing personal is kept.
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
    uow.store.fold.customer_attributes(event.customer_id, event.occurred_at, values)
    uow.store.touch(event, now)


on_customer_updated = on_customer_registered


async def on_consent_changed(event: ConsentChanged, *, uow: Uow, now: datetime) -> None:
    p = event.payload
    key = f"{p.channel.value}:{p.purpose.value}"
    uow.store.fold.consent(event.customer_id, event.occurred_at, key, p.granted)
    uow.store.touch(event, now)


async def on_account_opened(event: AccountOpened, *, uow: Uow, now: datetime) -> None:
    p = event.payload
    fold = uow.store.fold
    fold.open_account(
        event.customer_id, p.account_id, p.product_type.value, p.currency,
        event.occurred_at, p.margin_rate,
    )
    fold.activity(event.customer_id, event.occurred_at, customer_initiated=True, transactions=0)
    uow.store.touch(event, now)


async def on_account_closed(event: AccountClosed, *, uow: Uow, now: datetime) -> None:
    p = event.payload
    fold = uow.store.fold
    fold.close_account(
        event.customer_id, p.account_id, p.product_type.value, p.currency,
        event.occurred_at, p.reason,
    )
    fold.activity(event.customer_id, event.occurred_at, customer_initiated=False, transactions=0)
    uow.store.touch(event, now)


async def on_transaction_posted(event: TransactionPosted, *, uow: Uow, now: datetime) -> None:
    p = event.payload
    fold = uow.store.fold
    fold.activity(
        event.customer_id,
        event.occurred_at,
        customer_initiated=p.initiated_by is InitiatedBy.customer,
        transactions=1,
    )
    if p.balance_after is not None:
        fold.balance(
            event.customer_id, p.account_id, p.product_type.value, p.currency,
            p.balance_after, event.occurred_at,
        )
    uow.store.touch(event, now)


async def on_engagement_signal(
    event: AppClicked | FeedbackSubmitted, *, uow: Uow, now: datetime
) -> None:
    """Any app event and any feedback is customer-initiated activity (DESIGN.md §2)."""
    uow.store.fold.activity(
        event.customer_id, event.occurred_at, customer_initiated=True, transactions=0
    )
    uow.store.touch(event, now)


async def emit_profile_updates(uow: Uow) -> None:
    """Once per batch per customer: the snapshot after everything the batch changed."""
    touched = uow.store.touched
    if not touched:
        return
    loaded = await uow.store.load(list(touched))
    for customer_id, touch in touched.items():
        customer = loaded.get(customer_id)
        if customer is None:
            continue
        as_of = max(touch.now, touch.event.occurred_at)
        try:
            payload = snapshot(customer, as_of)
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
    touched.clear()


HANDLERS = {
    "customer.registered": on_customer_registered,
    "customer.updated": on_customer_updated,
    "consent.changed": on_consent_changed,
    "account.opened": on_account_opened,
    "account.closed": on_account_closed,
    "transaction.posted": on_transaction_posted,
    "app.click": on_engagement_signal,
    "feedback.submitted": on_engagement_signal,
}
