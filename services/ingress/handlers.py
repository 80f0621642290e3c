"""The one thing ingress does with an admitted partner event: re-publish it inside."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from services.ingress.domain import PARTNER_EVENT_TYPES
from shared.events import EnvelopeBase
from shared.kit import UnitOfWork
from shared.settings import topic_of


async def on_partner_event(event: EnvelopeBase, *, uow: UnitOfWork[Any], now: datetime) -> None:
    """The event arrives already translated (consumer.PartnerConsumer): the bank's customer id,
    a per-partner event id. The outbox publishes it keyed by the bank's customer id, so it
    lands on the customer's partition of the internal topic, in the same transaction that
    records the partner event as consumed."""
    await uow.emit(event, topic_of(event.event_type))


HANDLERS = {event_type: on_partner_event for event_type in PARTNER_EVENT_TYPES}
