"""The console's pure logic: searches, redirects, periods, upstream messages, dead letters."""

from __future__ import annotations

import pytest

from services.console.domain import (
    DeadLetter,
    InvalidInput,
    by_message,
    day_bound,
    dead_letter,
    funnel_rows,
    plan_search,
    problem_text,
    republish_target,
    safe_next,
)
from services.console.templating import when
from services.console.upstream import segment


@pytest.mark.parametrize(
    ("query", "by", "kind", "value"),
    [
        ("C-1001", "auto", "id", "C-1001"),
        ("  +44 7700 900123 ", "auto", "phone", "+44 7700 900123"),
        ("07700 900123", "auto", "phone", "07700 900123"),
        ("(020) 7946-0958", "auto", "phone", "(020) 7946-0958"),
        ("123456", "auto", "id", "123456"),  # too few digits for a phone number
        ("07700900123", "id", "id", "07700900123"),  # the person says it is an id
        ("C-1001", "phone", "phone", "C-1001"),  # profile will refuse it, with its reason
    ],
)
def test_a_search_is_an_id_or_a_phone(query: str, by: str, kind: str, value: str) -> None:
    plan = plan_search(query, by)
    assert (plan.kind, plan.value) == (kind, value)


@pytest.mark.parametrize(
    ("query", "by", "message"),
    [
        ("   ", "auto", "type a customer id or a phone number"),
        ("C-1", "email", "search by must be auto, id or phone"),
        ("x" * 65, "id", "at most 64 characters"),
        ("1" * 33, "phone", "at most 32 characters"),
    ],
)
def test_an_unusable_search_says_why(query: str, by: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        plan_search(query, by)


@pytest.mark.parametrize(
    "target",
    ["//evil.example/x", "https://evil.example", "/\\evil.example", "javascript:alert(1)",
     "/x\r\nSet-Cookie: a=b", "", None],
)
def test_sign_in_never_redirects_off_the_console(target: str | None) -> None:
    assert safe_next(target) == "/customers"


def test_sign_in_returns_to_the_page_asked_for() -> None:
    assert safe_next("/worklists?stage=at_risk&tier=high") == "/worklists?stage=at_risk&tier=high"


def test_period_bounds_are_rfc3339_with_an_offset() -> None:
    assert day_bound("2025-01-31", "since") == "2025-01-31T00:00:00+00:00"
    assert day_bound("2025-01-31T10:00:00Z", "since") == "2025-01-31T10:00:00+00:00"
    assert day_bound(None, "since") is None
    with pytest.raises(InvalidInput, match="a time needs a UTC offset"):
        day_bound("2025-01-31T10:00:00", "until")
    with pytest.raises(InvalidInput, match="until: give a date"):
        day_bound("yesterday", "until")


def test_an_upstream_refusal_reads_as_the_services_own_words() -> None:
    assert problem_text("profile", 404, {"title": "Not Found",
                                         "detail": "customer 'X' is not known to profile"}) \
        == "profile refused: customer 'X' is not known to profile (HTTP 404)"
    # A 500 says only what the service said (it never returns details); no body at all
    # still gives the status's name, never the raw body.
    assert problem_text("scoring", 500, {"title": "Internal error",
                                         "detail": "the error was logged; no details are "
                                                   "returned"}).startswith("scoring failed:")
    text = problem_text("engagement", 503, "Traceback (most recent call last): ...")
    assert text == "engagement failed: Service Unavailable (HTTP 503)"
    assert "Traceback" not in text


def test_funnel_rows_follow_the_lifecycle_order_with_zero_stages() -> None:
    rows = funnel_rows({"churned": 2, "active": 6})
    assert [r.stage for r in rows] == ["prospect", "onboarding", "active", "loyal", "at_risk",
                                       "dormant", "churned", "won_back"]
    assert {r.stage: r.bar for r in rows if r.customers} == {"active": 100, "churned": 33}
    assert sum(r.share for r in rows) == pytest.approx(1.0)
    assert all(r.bar == 0 for r in funnel_rows({}))


def test_a_dead_letter_hides_its_bytes_unless_the_reader_may_see_personal_data() -> None:
    raw = (b'{"event_id": "6f1c", "event_type": "customer.registered", "customer_id": "C-9", '
           b'"payload": {"name": "Ann Example", "phone": "+44 7700 900999"}}')
    headers = [("dlq.topic", b"t1.tenure.customers.v1"), ("dlq.partition", b"0"),
               ("dlq.offset", b"5"), ("dlq.service", b"profile"),
               ("dlq.reason", b"payload.phone: not a phone number"),
               ("dlq.failed_at", b"2026-01-02T03:04:05+00:00")]
    hidden = dead_letter(partition=2, offset=9, key=b"C-9", value=raw, headers=headers,
                         show_payload=False)
    assert (hidden.event_type, hidden.event_id, hidden.customer_id) == (
        "customer.registered", "6f1c", "C-9")
    assert (hidden.service, hidden.original_topic, hidden.original_position) == (
        "profile", "t1.tenure.customers.v1", "t1.tenure.customers.v1[0]@5")
    assert hidden.payload is None and "Ann" not in repr(hidden)
    shown = dead_letter(partition=2, offset=9, key=b"C-9", value=raw, headers=headers,
                        show_payload=True)
    assert shown.payload is not None and "Ann Example" in shown.payload


def test_a_dead_letter_that_is_not_json_is_still_described() -> None:
    letter = dead_letter(partition=0, offset=0, key=None, value=b"\xff\xfe not json",
                         headers=[], show_payload=True)
    assert (letter.event_type, letter.customer_id, letter.original_topic) == (None, None, None)
    assert letter.size == 11 and letter.key is None


def test_dead_letters_of_one_message_are_one_row() -> None:
    def letter(offset: int, service: str, origin_offset: int) -> DeadLetter:
        return dead_letter(partition=1, offset=offset, key=b"C-1", value=b"{}", headers=[
            ("dlq.topic", b"t.tenure.customers.v1"), ("dlq.partition", b"4"),
            ("dlq.offset", str(origin_offset).encode()), ("dlq.service", service.encode()),
            ("dlq.reason", f"{service} says no".encode())], show_payload=False)

    unknown = dead_letter(partition=0, offset=1, key=None, value=b"?", headers=[],
                          show_payload=False)
    groups = by_message([letter(9, "scoring", 30), letter(8, "profile", 31), unknown,
                         letter(7, "profile", 30), letter(6, "lifecycle", 30)])
    assert [(g.latest.offset, g.services) for g in groups] == [
        (9, ["lifecycle", "profile", "scoring"]), (8, ["profile"]), (1, ["?"])]
    assert groups[0].latest.original_position == "t.tenure.customers.v1[4]@30"


def test_re_publishing_goes_only_to_the_platforms_own_topics() -> None:
    allowed = {"p.tenure.customers.v1", "p.tenure.transactions.v1"}
    assert republish_target("p.tenure.customers.v1", allowed) == "p.tenure.customers.v1"
    with pytest.raises(InvalidInput, match="origin is unknown"):
        republish_target(None, allowed)
    with pytest.raises(InvalidInput, match="not the platform's"):
        republish_target("p.tenure.dlq.v1", allowed)
    partners = ("p.tenure.partner.",)
    assert republish_target("p.tenure.partner.bank-x.transactions.v1", allowed, partners) \
        == "p.tenure.partner.bank-x.transactions.v1"
    with pytest.raises(InvalidInput, match="not the platform's"):
        republish_target("tenure.partner.bank-x.transactions.v1", allowed, partners)


def test_customer_ids_are_one_path_segment_and_times_read_well() -> None:
    assert segment("C/1 2") == "C%2F1%202"
    assert when("2026-03-01T09:30:00.123456Z") == "2026-03-01 09:30 UTC"
    assert when("not a time") == "not a time"
