"""The ingress decision for one partner event (pure: no broker, no database)."""

from __future__ import annotations

import re

import pytest

from services.ingress.domain import (
    STREAMS,
    Forward,
    InvalidPartnerId,
    Refuse,
    check_partner_id,
    lane_of,
    partner_topics,
    route,
    topic_pattern,
)
from shared.events import derived_event_id
from tests.support import factories as f


def from_partner(event, partner_id="bank-x"):  # type: ignore[no-untyped-def]
    return event.model_copy(update={"source": f"partner:{partner_id}"})


def test_an_admitted_event_speaks_of_the_banks_customer_with_a_per_partner_id() -> None:
    event = from_partner(f.transaction("X-1", account_id="CARD-7"))
    decision = route(event, "bank-x", "transactions", "C-1")
    assert isinstance(decision, Forward)
    assert decision.topic == "tenure.transactions.v1"
    out = decision.event
    assert out.customer_id == "C-1"
    assert out.event_id == derived_event_id("partner", "bank-x", event.event_id)
    assert out.event_id != event.event_id
    assert out.causation_id == event.event_id
    assert out.payload.account_id == "bank-x:CARD-7"  # type: ignore[attr-defined]
    assert out.payload.amount == event.payload.amount  # type: ignore[attr-defined]
    # The same partner event routed again is the same event inside (dropped as a duplicate).
    again = route(event, "bank-x", "transactions", "C-1")
    assert isinstance(again, Forward) and again.event.event_id == out.event_id


def test_the_same_id_from_two_partners_stays_two_events() -> None:
    event = f.transaction("X-1")
    a = route(from_partner(event, "bank-a"), "bank-a", "transactions", "C-1")
    b = route(from_partner(event, "bank-b"), "bank-b", "transactions", "C-1")
    assert isinstance(a, Forward) and isinstance(b, Forward)
    assert a.event.event_id != b.event.event_id


def test_a_source_other_than_the_topics_owner_is_refused() -> None:
    decision = route(from_partner(f.transaction("X-1"), "bank-y"), "bank-x", "transactions", "C-1")
    assert isinstance(decision, Refuse)
    assert decision.reason.startswith("source: 'partner:bank-y' is not the partner that owns")
    core = route(f.transaction("X-1"), "bank-x", "transactions", "C-1")  # source core-banking
    assert isinstance(core, Refuse) and core.reason.startswith("source:")


def test_an_unmapped_customer_is_refused() -> None:
    decision = route(from_partner(f.transaction("X-9")), "bank-x", "transactions", None)
    assert isinstance(decision, Refuse)
    assert "may not speak for this customer" in decision.reason
    assert "X-9" not in decision.reason  # DLQ headers are not encrypted: no ids in reasons


@pytest.mark.parametrize("event", [
    f.consent("X-1"),
    f.registered("X-1"),
    f.transaction("X-1"),
])
def test_event_types_outside_the_stream_are_refused(event) -> None:  # type: ignore[no-untyped-def]
    decision = route(from_partner(event), "bank-x", "feedback", "C-1")
    assert isinstance(decision, Refuse)
    assert decision.reason.startswith("event_type:")


def test_registrations_consent_and_erasure_have_no_partner_stream() -> None:
    allowed = set().union(*(types for _, types in STREAMS.values()))
    assert not allowed & {"customer.registered", "customer.updated", "customer.erased",
                          "consent.changed"}


def test_an_account_id_too_long_to_namespace_is_refused() -> None:
    event = from_partner(f.transaction("X-1", account_id="A" * 60))
    decision = route(event, "bank-x", "transactions", "C-1")
    assert isinstance(decision, Refuse) and decision.reason.startswith("payload.account_id")


def test_partner_ids_cannot_overlap_lanes() -> None:
    for bad in ("", "Bank", "bank.x", "-bank", "bank-", "a" * 21, "bank_x"):
        with pytest.raises(InvalidPartnerId):
            check_partner_id(bad)
    # No id's prefix is a prefix of another's lane (the ACL is PREFIXED on "<root><id>.").
    assert not partner_topics("bank-xy")["transactions"].startswith("tenure.partner.bank-x.")


def test_the_subscription_pattern_matches_partner_topics_only() -> None:
    pattern = re.compile(topic_pattern("t1."))
    assert pattern.fullmatch("t1.tenure.partner.bank-x.transactions.v1")
    assert pattern.fullmatch("t1.tenure.partner.bank-x.accounts.v1")
    assert not pattern.fullmatch("t1.tenure.transactions.v1")
    assert not pattern.fullmatch("t2.tenure.partner.bank-x.transactions.v1")
    assert not pattern.fullmatch("t1.tenure.partner.bank-x.secrets.v1")
    assert lane_of("t1.tenure.partner.bank-x.feedback.v1", "t1.") == ("bank-x", "feedback")
    assert lane_of("t1.tenure.partner.Bank.feedback.v1", "t1.") is None
