"""The one thing ingress does with an admitted partner event: re-publish it inside, sealed."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from services.ingress.domain import PARTNER_EVENT_TYPES
from shared.events import EnvelopeBase
from shared.keys import KeyStore, seal_in_transaction
from shared.kit import Handler, UnitOfWork
from shared.settings import topic_of


def make_handlers(key_store: KeyStore) -> dict[str, Handler]:
    async def on_partner_event(
        event: EnvelopeBase, *, uow: UnitOfWork[Any], now: datetime
    ) -> None:
        """The event arrives already translated (consumer.PartnerConsumer): the bank's customer
        id, a per-partner event id. Personal fields a partner sent in clear (a complaint's
        text) are sealed with the customer's data key in this transaction, as every publisher
        inside the bank does (docs/data-protection.md); a shredded customer's are withheld. The
        outbox publishes it keyed by the bank's customer id, in the same transaction that
        records the partner event as consumed."""
        event = await seal_in_transaction(uow.conn, key_store, event)
        await uow.emit(event, topic_of(event.event_type))

    return {event_type: on_partner_event for event_type in PARTNER_EVENT_TYPES}
