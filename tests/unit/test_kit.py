"""The consumer kit's pure parts: classifying records and event-time watermarks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from shared.events import encode_event
from shared.kit import RawRecord, _Watermarks, classify
from shared.settings import ServiceSettings
from tests.support import factories as f


def _record(value: bytes, key: bytes | None = b"C-1", offset: int = 0) -> RawRecord:
    return RawRecord("tenure.transactions.v1", 0, offset, key, value)


def test_classify_keeps_valid_events_in_order_and_explains_rejects() -> None:
    settings = ServiceSettings(max_message_bytes=4096)
    good = [f.transaction("C-1") for _ in range(3)]
    foreign = f.transaction("C-1").model_copy(update={"source": "unknown-system"})
    records = [
        _record(encode_event(good[0]), offset=0),
        _record(b"\x00\x01", offset=1),
        _record(encode_event(good[1]), offset=2),
        _record(b"{" + b" " * 5000 + b"}", offset=3),
        _record(encode_event(foreign), offset=4),
        _record(encode_event(good[2]), key=b"C-2", offset=5),
    ]
    parsed, rejected = classify(records, settings)
    assert [p.event for p in parsed] == good[:2]
    assert [(r.offset, reason.split(":")[0]) for r, reason in rejected] == [
        (1, "malformed JSON"),
        (3, "message of 5002 bytes exceeds the limit of 4096"),
        (4, "source"),
        (5, "key"),
    ]


def test_partner_sources_are_accepted_by_prefix() -> None:
    settings = ServiceSettings()
    assert settings.source_allowed("partner:bank-x")
    assert not settings.source_allowed("bank-x")


T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_watermark_is_highest_event_time_minus_lateness_and_never_goes_back() -> None:
    marks = _Watermarks(timedelta(minutes=5))
    assert marks.advance("t", 0, T0, wall=0) == T0 - timedelta(minutes=5)
    late = marks.advance("t", 0, T0 - timedelta(days=1), wall=1)
    assert late == T0 - timedelta(minutes=5)
    assert marks.advance("t", 0, T0 + timedelta(hours=1), wall=2) == T0 + timedelta(minutes=55)
    assert marks.now("t", 1) is None


def test_idle_partition_follows_the_slowest_active_one() -> None:
    marks = _Watermarks(timedelta(0))
    marks.advance("t", 0, T0, wall=0)  # partition 0 goes quiet after this
    marks.advance("t", 1, T0 + timedelta(days=30), wall=100)
    marks.advance("t", 2, T0 + timedelta(days=20), wall=100)
    # Partition 0 is idle at wall 110 (idle_after 60): it follows the slowest active one.
    assert marks.clock("t", 0, idle_after=60, wall=110) == T0 + timedelta(days=20)
    # An active partition keeps its own clock.
    assert marks.clock("t", 1, idle_after=60, wall=110) == T0 + timedelta(days=30)
    # When every partition is idle, nobody moves anybody.
    assert marks.clock("t", 0, idle_after=60, wall=1000) == T0
