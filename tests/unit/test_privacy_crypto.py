"""Sealed personal fields: what the wire carries, what binds a blob to its customer, and that
the contract takes personal fields either plain or sealed, never both."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime

import orjson
import pytest

from shared import events as ev
from shared.crypto import (
    MasterKeys,
    SealError,
    b64url,
    new_data_key,
    open_fields,
    seal_event,
    unsealed_details,
    withhold_personal_fields,
)

AT = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def registered(**payload: object) -> ev.CustomerRegistered:
    return ev.CustomerRegistered(
        event_id=uuid.uuid4(), customer_id="C-1", occurred_at=AT, source="core-banking",
        payload=ev.CustomerDetails(**payload),
    )


def test_a_sealed_event_carries_no_personal_value_and_opens_to_the_same_details() -> None:
    event = registered(name="Ada Lovelace", phone="+447700900123", email="ada@example.com",
                       national_id="QQ123456C", birth_date=date(1815, 12, 10),
                       segment="premier", rm_id="RM-7")
    key = new_data_key()
    sealed = seal_event(event, kid="dk-abc", data_key=key)
    wire = ev.encode_event(sealed)
    for value in (b"Ada", b"Lovelace", b"7700900123", b"ada@example.com", b"QQ123456C",
                  b"1815"):
        assert value not in wire
    parsed = ev.parse_event(wire)
    assert isinstance(parsed, ev.CustomerRegistered)
    assert parsed.payload.segment == "premier" and parsed.payload.rm_id == "RM-7"
    assert parsed.payload.sealed is not None and parsed.payload.sealed.kid == "dk-abc"
    opened = open_fields(parsed.payload.sealed, data_key=key, customer_id="C-1",
                         purpose="customer.registered")
    assert unsealed_details(parsed.payload, opened) == event.payload


def test_feedback_text_is_sealed_too() -> None:
    event = ev.FeedbackSubmitted(
        event_id=uuid.uuid4(), customer_id="C-1", occurred_at=AT, source="complaint-desk",
        payload=ev.FeedbackDetails(kind="complaint_opened", text="My card was cloned in Leeds"),
    )
    sealed = seal_event(event, kid="dk-1", data_key=new_data_key())
    assert b"Leeds" not in ev.encode_event(sealed)
    assert sealed.payload.kind == "complaint_opened"  # type: ignore[attr-defined]


def test_an_event_without_personal_fields_is_left_as_it_is() -> None:
    event = registered(segment="sme")
    assert seal_event(event, kid="dk-1", data_key=new_data_key()) is event


@pytest.mark.parametrize(
    ("customer_id", "purpose", "key_differs"),
    [("C-2", "customer.registered", False), ("C-1", "customer.updated", False),
     ("C-1", "customer.registered", True)],
)
def test_a_sealed_blob_opens_only_for_its_customer_event_type_and_key(
    customer_id: str, purpose: str, key_differs: bool
) -> None:
    key = new_data_key()
    sealed = seal_event(registered(name="Ada"), kid="dk-1", data_key=key)
    box = sealed.payload.sealed  # type: ignore[attr-defined]
    with pytest.raises(SealError) as caught:
        open_fields(box, data_key=new_data_key() if key_differs else key,
                    customer_id=customer_id, purpose=purpose)
    assert "Ada" not in str(caught.value) and "C-1" not in str(caught.value)


def test_the_contract_refuses_personal_fields_both_plain_and_sealed() -> None:
    sealed = seal_event(registered(name="Ada"), kid="dk-1", data_key=new_data_key())
    document = orjson.loads(ev.encode_event(sealed))
    document["payload"]["email"] = "ada@example.com"
    with pytest.raises(ev.InvalidEvent) as caught:
        ev.parse_event(orjson.dumps(document))
    assert "email must travel inside sealed" in str(caught.value)
    assert "ada@example.com" not in str(caught.value)


def test_the_contract_refuses_a_malformed_sealed_field() -> None:
    sealed = seal_event(registered(name="Ada"), kid="dk-1", data_key=new_data_key())
    document = orjson.loads(ev.encode_event(sealed))
    document["payload"]["sealed"]["ciphertext"] = "not base64url!"
    with pytest.raises(ev.InvalidEvent, match="sealed.ciphertext"):
        ev.parse_event(orjson.dumps(document))


def test_withholding_drops_the_personal_fields_and_keeps_the_rest() -> None:
    event = withhold_personal_fields(registered(name="Ada", phone="+447700900123",
                                                segment="private"))
    assert event.payload.name is None and event.payload.phone is None  # type: ignore[attr-defined]
    assert event.payload.segment == "private"  # type: ignore[attr-defined]


def test_master_keys_unwrap_what_any_configured_key_wrapped_and_nothing_else() -> None:
    m1_key = new_data_key()
    old = MasterKeys({"m1": m1_key}, active="m1")
    data_key = new_data_key()
    master_id, wrapped = old.wrap(data_key, kid="dk-1", customer_id="C-1")
    rotated = MasterKeys.from_setting(f"m2:{b64url(new_data_key())},m1:{b64url(m1_key)}")
    assert rotated.active_id == "m2" and rotated.ids == ("m2", "m1")
    assert rotated.unwrap(master_id, wrapped, kid="dk-1", customer_id="C-1") == data_key
    assert rotated.wrap(data_key, kid="dk-1", customer_id="C-1")[0] == "m2"
    with pytest.raises(SealError):
        rotated.unwrap(master_id, wrapped, kid="dk-1", customer_id="C-2")
    only_new = MasterKeys.from_setting(f"m2:{b64url(new_data_key())}")
    with pytest.raises(SealError, match="'m1' is not configured"):
        only_new.unwrap(master_id, wrapped, kid="dk-1", customer_id="C-1")


def test_master_key_setting_errors_never_echo_the_key() -> None:
    with pytest.raises(ValueError) as caught:
        MasterKeys.from_setting("m1:c2VjcmV0")
    assert "c2VjcmV0" not in str(caught.value)


def test_sealed_fields_that_break_the_contract_are_refused_by_field_never_by_value() -> None:
    key = new_data_key()
    sealed = seal_event(registered(name="Ada"), kid="dk-1", data_key=key)
    details: ev.CustomerDetails = sealed.payload  # type: ignore[attr-defined]
    with pytest.raises(SealError) as caught:
        unsealed_details(details, {"name": "Bartholomew " * 30})
    assert "name: String should have at most 200 characters" in str(caught.value)
    assert "Bartholomew" not in str(caught.value)
    with pytest.raises(SealError, match="unexpected fields"):
        unsealed_details(details, {"segment": "private"})


async def test_the_importers_path_passes_what_it_cannot_or_need_not_seal_untouched() -> None:
    from shared.keys import KeyStore, PiiSealer

    # No key is needed for these, so the sealer never reaches its (absent) database.
    sealer = PiiSealer(KeyStore("privacy", MasterKeys({"m1": new_data_key()}, active="m1")),
                       engine=None)  # type: ignore[arg-type]
    broken = b'{"event_type": "customer.registered", "payload": {"name": "Ada"'
    no_pii = ev.encode_event(registered(segment="sme"))
    wrong_version = orjson.dumps({**orjson.loads(no_pii), "schema_version": 2})
    for value in (broken, no_pii, wrong_version, b"[]"):
        assert await sealer.seal_raw(value) is value
    assert sealer.sealed == 0 and sealer.withheld == 0
