"""Lifecycle's handlers: each input event becomes a fact of its customer; once per batch the
customers it touched walk forward through event time (progress.py) and announce each move."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from services.lifecycle.clock import EventClock
from services.lifecycle.facts import fact_from_event
from services.lifecycle.progress import Context, advance_customers
from services.lifecycle.store import LifecycleStore
from shared.events import (
    AccountClosed,
    AccountOpened,
    ChurnScored,
    CustomerRegistered,
    EnvelopeBase,
    FeedbackSubmitted,
    ProfileUpdated,
)
from shared.kit import UnitOfWork

Uow = UnitOfWork[LifecycleStore]


def _keep(event: EnvelopeBase, uow: Uow) -> None:
    fact = fact_from_event(event)
    if fact is not None:
        uow.store.add(event.customer_id, fact)


async def on_customer_registered(event: CustomerRegistered, *, uow: Uow, now: datetime) -> None:
    _keep(event, uow)


async def on_account_opened(event: AccountOpened, *, uow: Uow, now: datetime) -> None:
    _keep(event, uow)


async def on_account_closed(event: AccountClosed, *, uow: Uow, now: datetime) -> None:
    _keep(event, uow)


async def on_feedback(event: FeedbackSubmitted, *, uow: Uow, now: datetime) -> None:
    """Feedback is customer-initiated activity, and complaints have an age."""
    _keep(event, uow)


async def on_profile_updated(event: ProfileUpdated, *, uow: Uow, now: datetime) -> None:
    _keep(event, uow)


async def on_churn_scored(event: ChurnScored, *, uow: Uow, now: datetime) -> None:
    """A score is an input to the stage (at_risk), never the other way round."""
    _keep(event, uow)


HANDLERS = {
    "customer.registered": on_customer_registered,
    "account.opened": on_account_opened,
    "account.closed": on_account_closed,
    "feedback.submitted": on_feedback,
    "profile.updated": on_profile_updated,
    "churn.scored": on_churn_scored,
}


@dataclass
class AdvanceTouched:
    """The batch hook: advance every customer the batch brought facts for, in the batch's
    transaction, up to what the partition's event clock allows."""

    clock: EventClock
    context: Callable[[], Context]

    async def __call__(self, uow: Uow) -> None:
        batch = uow.store.take_batch()
        if not batch:
            return
        await self.clock.refresh()
        rows = await uow.store.lock(batch)
        await advance_customers(
            uow, rows, batch, lambda row: self.clock.limits(row.partition), self.context()
        )
