"""Partner lanes: names of partners, their topics and principals, and the routing decision.

Pure logic, no I/O. A partner publishes on its own topics (`tenure.partner.<id>.<stream>.v1`);
the broker's ACLs keep it there. This module decides, for one event read from such a topic,
whether it goes on to the bank's internal topic (translated to the bank's customer id) or to
the dead-letter topic, and why.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from shared.events import EnvelopeBase, derived_event_id
from shared.settings import INPUT_TOPICS

# Lower-case letters, digits and inner hyphens, no dots: the topic prefix `tenure.partner.<id>.`
# of one partner can never be a prefix of another's, so a PREFIXED ACL grants exactly one lane.
PARTNER_ID = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,18}[a-z0-9])?$")
PARTNER_TOPIC_ROOT = "tenure.partner."

# What a partner may say about a shared customer, per stream, and where it goes inside.
# Registrations, personal data, consent and erasure stay with the bank: a partner cannot send
# them. Accounts a partner reports are its own (their ids are namespaced by the partner), so
# it can never open or close one of the bank's.
STREAMS: dict[str, tuple[str, frozenset[str]]] = {
    "transactions": (INPUT_TOPICS["transactions"], frozenset({"transaction.posted"})),
    "accounts": (INPUT_TOPICS["customers"], frozenset({"account.opened", "account.closed"})),
    "feedback": (INPUT_TOPICS["feedback"], frozenset({"feedback.submitted"})),
}
PARTNER_EVENT_TYPES = frozenset().union(*(types for _, types in STREAMS.values()))
ACCOUNT_ID_MAX = 64


class InvalidPartnerId(ValueError):
    """A partner id that cannot name a lane."""


def check_partner_id(partner_id: str) -> str:
    """
    >>> check_partner_id("bank-x")
    'bank-x'
    >>> check_partner_id("Bank.X")
    Traceback (most recent call last):
    ...
    services.ingress.domain.InvalidPartnerId: partner id 'Bank.X' must be 1-20 characters: \
lower-case letters, digits and inner hyphens
    """
    if not PARTNER_ID.fullmatch(partner_id):
        raise InvalidPartnerId(
            f"partner id {partner_id!r} must be 1-20 characters: lower-case letters, digits "
            "and inner hyphens"
        )
    return partner_id


def username(partner_id: str) -> str:
    """The partner's SCRAM user name at the broker."""
    return f"partner-{partner_id}"


def principal(partner_id: str) -> str:
    return f"User:{username(partner_id)}"


def source_of(partner_id: str) -> str:
    """The envelope `source` a partner must put on its events (DESIGN.md §2)."""
    return f"partner:{partner_id}"


def topic_prefix(partner_id: str) -> str:
    """Every topic of the partner's lane starts with this (unprefixed) name."""
    return f"{PARTNER_TOPIC_ROOT}{partner_id}."


def partner_topics(partner_id: str) -> dict[str, str]:
    """
    >>> partner_topics("bank-x")["transactions"]
    'tenure.partner.bank-x.transactions.v1'
    """
    return {stream: f"{topic_prefix(partner_id)}{stream}.v1" for stream in STREAMS}


def topic_pattern(topic_prefix_of_deployment: str) -> str:
    """The regular expression the ingress subscribes with (every partner, every stream)."""
    streams = "|".join(re.escape(s) for s in STREAMS)
    root = re.escape(f"{topic_prefix_of_deployment}{PARTNER_TOPIC_ROOT}")
    return f"^{root}[a-z0-9-]+\\.({streams})\\.v1$"


def lane_of(topic: str, topic_prefix_of_deployment: str = "") -> tuple[str, str] | None:
    """(partner id, stream) of a partner topic, or None for any other topic.

    >>> lane_of("t1.tenure.partner.bank-x.accounts.v1", "t1.")
    ('bank-x', 'accounts')
    >>> lane_of("tenure.transactions.v1") is None
    True
    """
    root = f"{topic_prefix_of_deployment}{PARTNER_TOPIC_ROOT}"
    if not topic.startswith(root) or not topic.endswith(".v1"):
        return None
    partner_id, _, stream = topic[len(root):-len(".v1")].partition(".")
    if stream not in STREAMS or not PARTNER_ID.fullmatch(partner_id):
        return None
    return partner_id, stream


@dataclass(frozen=True)
class Forward:
    """The event as the bank's services will see it, and the (unprefixed) topic it goes to."""

    event: EnvelopeBase
    topic: str


@dataclass(frozen=True)
class Refuse:
    reason: str


def route(
    event: EnvelopeBase, partner_id: str, stream: str, bank_customer_id: str | None
) -> Forward | Refuse:
    """Decide one partner event. `bank_customer_id` is the mapping of the event's customer id
    for this partner (None: the partner may not speak for that customer)."""
    if event.source != source_of(partner_id):
        return Refuse(
            f"source: {event.source!r} is not the partner that owns this topic "
            f"(expected {source_of(partner_id)!r})"
        )
    target, allowed = STREAMS[stream]
    if event.event_type not in allowed:
        return Refuse(
            f"event_type: {event.event_type!r} may not be published on the partner's "
            f"{stream} stream (allowed: {', '.join(sorted(allowed))})"
        )
    if bank_customer_id is None:
        # The id itself stays out of the reason (DLQ headers are never encrypted); the original
        # message beside it says which customer it was.
        return Refuse(
            f"customer_id: partner {partner_id!r} may not speak for this customer "
            "(no shared-customer mapping for the envelope's customer_id)"
        )
    update: dict[str, Any] = {
        "customer_id": bank_customer_id,
        # A partner's ids are its own: derived per partner, they can never collide with (and
        # so suppress) another publisher's event; a re-sent partner event keeps its id.
        "event_id": derived_event_id("partner", partner_id, event.event_id),
        "causation_id": event.event_id,
    }
    payload = getattr(event, "payload", None)
    account_id = getattr(payload, "account_id", None)
    if payload is not None and account_id is not None:
        namespaced = f"{partner_id}:{account_id}"
        if len(namespaced) > ACCOUNT_ID_MAX:
            return Refuse(
                f"payload.account_id: too long once namespaced by the partner id "
                f"(at most {ACCOUNT_ID_MAX - len(partner_id) - 1} characters)"
            )
        update["payload"] = payload.model_copy(update={"account_id": namespaced})
    return Forward(event.model_copy(update=update), target)
