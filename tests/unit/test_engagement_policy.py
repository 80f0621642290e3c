"""The contact policy, rule by rule (pure: no I/O)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.engagement.domain import uplift
from services.engagement.playbooks import InvalidPlaybook, compile_playbook, festival_on
from services.engagement.policy import (
    Candidate,
    Contact,
    Past,
    Policy,
    bucket,
    decide,
    in_global_control,
)
from shared.events import Decision

POLICY = Policy(global_holdout_share=0.0)
OFFER = Candidate("retention_offer", "email", "marketing", 90, 60, 0.0, None)
CARE = Candidate("care_message", "sms", "service", 60, 30, 0.0, None)
# Monday 2 March 2026, 10:00 in London (UTC+0 in winter).
T = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
ALL_CONSENT = {(ch, p): True for ch in ("email", "sms", "push") for p in ("marketing", "service")}


def contact(**kw) -> Contact:  # type: ignore[no-untyped-def]
    base = {"customer_id": "C1", "time_zone": "Europe/London", "consent": ALL_CONSENT,
            "flags": {}, "open_complaints": 0}
    return Contact(**{**base, **kw})


def one(candidates=(OFFER,), history=(), budget=None, at=T, wall=None, policy=POLICY, **kw):  # type: ignore[no-untyped-def]
    return decide(list(candidates), contact(**kw), list(history), budget or {},
                  trigger_at=at, wall_clock=wall or at, policy=policy)


def sent(playbook: str, at: datetime, purpose: str = "marketing") -> Past:
    return Past(playbook, purpose, "sent", at)


def test_a_clean_case_is_sent() -> None:
    [v] = one()
    assert (v.decision, v.reason, v.deliver_at) == (Decision.sent, "policy_passed", T)


def test_consent_per_channel_and_purpose() -> None:
    [v] = one(consent={("email", "service"): True})
    assert (v.decision, v.reason) == (Decision.suppressed, "no_consent")
    rm = Candidate("rm_call", "rm_task", "service", 90, 30, 0.0, None)
    [v] = one(candidates=[rm], consent={})
    assert v.decision is Decision.sent  # a call by the customer's own RM needs no channel consent


def test_protective_flags_and_open_complaints_stop_marketing_not_service() -> None:
    assert one(flags={"vulnerable": True})[0].reason == "flag_vulnerable"
    assert one(flags={"collections": True})[0].reason == "flag_collections"
    assert one(open_complaints=1)[0].reason == "complaint_open"
    assert one(candidates=[CARE], flags={"vulnerable": True})[0].decision is Decision.sent


def test_cooldown_per_playbook() -> None:
    recent = [sent("retention_offer", T - timedelta(days=59))]
    assert one(history=recent)[0].reason == "cooldown"
    older = [sent("retention_offer", T - timedelta(days=61))]
    assert one(history=older)[0].decision is Decision.sent
    other = [sent("win_back", T - timedelta(days=1))]
    assert one(history=other)[0].decision is Decision.sent


def test_weekly_cap_counts_the_local_iso_week() -> None:
    # Two marketing messages on Monday and Tuesday of the same week: a third is capped.
    week = [sent("a", T - timedelta(hours=1)), sent("b", T + timedelta(days=1))]
    assert one(history=week, at=T + timedelta(days=2))[0].reason == "cap_week"
    # Next Monday is a new week.
    assert one(history=week, at=T + timedelta(days=7))[0].decision is Decision.sent


def test_week_boundary_is_the_customers_local_week() -> None:
    # Sunday 1 March 2026 23:30 UTC is already Monday 07:30 in Shanghai: same week as T.
    late_sunday = datetime(2026, 3, 1, 23, 30, tzinfo=UTC)
    history = [sent("a", late_sunday), sent("b", T)]
    assert one(history=history, time_zone="Asia/Shanghai",
               at=T + timedelta(hours=1))[0].reason == "cap_week"
    # In London it is still Sunday: last week; only one message counts this week.
    assert one(history=history, time_zone="Europe/London",
               at=T + timedelta(hours=1))[0].decision is Decision.sent


def test_monthly_cap_across_month_boundary() -> None:
    policy = Policy(global_holdout_share=0.0, marketing_per_week=10, marketing_per_month=6)
    march = [sent(f"p{i}", datetime(2026, 3, 2 + 4 * i, 10, tzinfo=UTC)) for i in range(6)]
    assert one(history=march, at=datetime(2026, 3, 30, 10, tzinfo=UTC),
               policy=policy)[0].reason == "cap_month"
    assert one(history=march, at=datetime(2026, 4, 1, 10, tzinfo=UTC),
               policy=policy)[0].decision is Decision.sent


def test_service_messages_are_not_capped() -> None:
    week = [sent("a", T), sent("b", T)]
    assert one(candidates=[CARE], history=week)[0].decision is Decision.sent


def test_budget_per_playbook() -> None:
    budgeted = Candidate("retention_offer", "email", "marketing", 90, 60, 0.0, 100)
    assert one(candidates=[budgeted], budget={"retention_offer": 100})[0].reason == "budget_exhausted"
    assert one(candidates=[budgeted], budget={"retention_offer": 99})[0].decision is Decision.sent


def test_quiet_hours_defer_to_the_next_local_morning() -> None:
    night = datetime(2026, 3, 2, 22, 30, tzinfo=UTC)
    [v] = one(at=night)
    assert (v.decision, v.reason) == (Decision.deferred, "quiet_hours")
    assert v.deliver_at == datetime(2026, 3, 3, 8, 0, tzinfo=UTC)
    # 22:30 UTC is 06:30 next day in Shanghai: deferred to 08:00 local = 00:00 UTC.
    [v] = one(at=night, time_zone="Asia/Shanghai")
    assert v.deliver_at == datetime(2026, 3, 3, 0, 0, tzinfo=UTC)
    assert v.treated


def test_stale_triggers_are_historical_and_never_delivered() -> None:
    [v] = one(wall=T + timedelta(hours=49))
    assert (v.decision, v.reason, v.treated) == (Decision.historical, "trigger_not_fresh", False)


def test_arbitration_highest_priority_wins() -> None:
    low = Candidate("dormant_wake_up", "push", "marketing", 40, 90, 0.0, None)
    verdicts = one(candidates=[low, OFFER])
    assert [(v.playbook, v.reason) for v in verdicts] == [
        ("retention_offer", "policy_passed"), ("dormant_wake_up", "lower_priority")]
    # When the winner is suppressed (no consent), the next one gets its turn.
    verdicts = one(candidates=[low, OFFER], consent={("push", "marketing"): True})
    assert [(v.playbook, v.decision.value) for v in verdicts] == [
        ("retention_offer", "suppressed"), ("dormant_wake_up", "sent")]


def test_holdouts_are_stable_and_near_their_share() -> None:
    held = Candidate("retention_offer", "email", "marketing", 90, 60, 0.2, None)
    ids = [f"C{i}" for i in range(5000)]
    first = [one(candidates=[held], customer_id=c)[0].decision for c in ids]
    again = [one(candidates=[held], customer_id=c)[0].decision for c in ids]
    assert first == again
    share = sum(d is Decision.holdout for d in first) / len(ids)
    assert 0.18 < share < 0.22
    control = Policy(global_holdout_share=0.05)
    in_control = sum(in_global_control(c, control) for c in ids) / len(ids)
    assert 0.04 < in_control < 0.06
    # Nested: the playbook holdout is drawn from a different hash than the global group.
    assert bucket("global-control", "C1") != bucket("retention_offer", "C1")


def test_playbook_validation_names_the_fault() -> None:
    good = {"id": "x_offer", "trigger": "stage.changed", "when": 'to == "at_risk"',
            "action": {"channel": "email", "template": "t"}, "purpose": "marketing",
            "priority": 1, "cooldown_days": 1}
    assert compile_playbook(good).fires({"to": "at_risk", "tier": None, "tags": [],
                                         "rfm_segment": None, "segment": None, "rm_id": None,
                                         "flags": {}, "open_complaints": 0, "festival": None,
                                         "from": None, "rule": ""})
    for change, fault in ((("when", "import os"), "x_offer"),
                          (("when", "tierr == 1"), "tierr"),
                          (("trigger", "sms.sent"), "trigger"),
                          (("purpose", "spam"), "purpose")):
        try:
            compile_playbook({**good, change[0]: change[1]})
        except InvalidPlaybook as exc:
            assert fault in str(exc)
        else:
            raise AssertionError(f"{change} accepted")


def test_uplift_interval_and_festivals() -> None:
    u = uplift(400, 40, 100, 20)
    assert round(u.uplift, 3) == 0.1 and u.ci_low < 0.1 < u.ci_high
    assert festival_on(datetime(2026, 9, 24).date()) == "mid_autumn"


def test_the_festival_calendar_is_configuration(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from datetime import date
    from pathlib import Path

    import pytest

    from services.engagement.playbooks import load_defaults, load_festivals
    from services.engagement.policy import local_date

    shipped = load_festivals(Path("services/engagement/playbooks"))
    assert set(shipped) == {"spring_festival", "mid_autumn", "year_end"}
    assert date(2026, 2, 17) in shipped["spring_festival"]
    (tmp_path / "bank.yaml").write_text("playbooks: []\nfestivals:\n  diwali: [2026-11-08]\n")
    calendar = load_festivals(tmp_path)
    assert calendar == {"diwali": [date(2026, 11, 8)]}
    assert festival_on(date(2026, 11, 6), calendar) == "diwali"
    assert festival_on(date(2026, 2, 16), calendar) is None
    (tmp_path / "bank.yaml").write_text("festivals:\n  diwali: [soon]\n")
    with pytest.raises(InvalidPlaybook, match="diwali.*'soon' is not a date"):
        load_defaults(tmp_path)
    (tmp_path / "bank.yaml").write_text("festivals:\n  diwali: [2026-13-08]\n")
    with pytest.raises(InvalidPlaybook, match="bank.yaml: not valid YAML"):
        load_defaults(tmp_path)
    # Festivals are the customer's local days: 20:00 UTC on 14 Feb is the 15th in Shanghai.
    evening = datetime(2026, 2, 13, 20, 0, tzinfo=UTC)
    assert local_date(evening, "Asia/Shanghai") == date(2026, 2, 14)
    assert festival_on(local_date(evening, "Asia/Shanghai"), shipped) == "spring_festival"
    assert festival_on(local_date(evening, "America/New_York"), shipped) is None


SCENARIOS = [
    # trigger, what the event and the contact say, the default playbooks that fire
    ("stage.changed", {"to": "onboarding"}, {"onboarding_welcome"}),
    ("stage.changed", {"to": "at_risk", "tier": "high", "rm_id": "RM1"},
     {"retention_offer", "rm_retention_call"}),
    ("stage.changed", {"to": "at_risk", "tier": "high"}, {"retention_offer"}),
    ("stage.changed", {"to": "at_risk", "tier": "low", "rm_id": "RM1"}, {"care_message"}),
    ("feedback.submitted", {"kind": "complaint_resolved"}, {"complaint_follow_up"}),
    ("feedback.submitted", {"kind": "complaint_opened"}, set()),
    ("feedback.submitted", {"kind": "nps", "score": 6}, {"detractor_follow_up"}),
    ("feedback.submitted", {"kind": "nps", "score": 7}, set()),
    ("stage.changed", {"to": "dormant"}, {"dormant_wake_up"}),
    ("profile.updated", {"tags": ["birthday_this_week"]}, {"birthday_greeting"}),
    ("profile.updated", {"festival": "spring_festival"}, {"festival_greeting"}),
    ("profile.updated", {}, set()),
    ("stage.changed", {"to": "loyal"}, {"loyalty_reward"}),
    ("stage.changed", {"to": "churned", "tier": "mid"}, {"win_back"}),
    ("stage.changed", {"to": "churned", "tier": "low"}, set()),
    ("stage.changed", {"to": "active"}, set()),
]


def test_every_default_playbook_fires_on_its_own_trigger_and_no_other() -> None:
    from pathlib import Path

    from services.engagement.playbooks import load_defaults

    defaults = load_defaults(Path("services/engagement/playbooks"))
    base = {"tier": None, "tags": [], "rfm_segment": None, "segment": None, "rm_id": None,
            "flags": {}, "open_complaints": 0, "festival": None, "to": None, "from": None,
            "rule": "", "kind": None, "score": None, "category": None, "probability": None,
            "band": None}
    covered: set[str] = set()
    for trigger, facts, expected in SCENARIOS:
        fired = {p.id for p in defaults
                 if p.spec.trigger == trigger and p.fires({**base, **facts})}
        assert fired == expected, (trigger, facts)
        covered |= fired
    assert covered == {p.id for p in defaults}  # every shipped playbook is exercised
    # A valuable at-risk customer gets the offer and their RM's call: separate groups, both go.
    by_id = {p.id: p for p in defaults}
    offer, call = by_id["retention_offer"], by_id["rm_retention_call"]
    assert offer.spec.group != call.spec.group
    treated_id = next(f"C{n}" for n in range(1000)
                      if all(bucket(p.id, f"C{n}") >= p.spec.holdout_share for p in (offer, call)))
    held_id = next(f"C{n}" for n in range(1000) if bucket(offer.id, f"C{n}") < 0.1)
    for p in (offer, call):
        [v] = decide([p.candidate()], contact(customer_id=treated_id), [], {}, trigger_at=T,
                     wall_clock=T, policy=POLICY)
        assert (v.decision, v.reason) == (Decision.sent, "policy_passed"), p.id
    [v] = decide([offer.candidate()], contact(customer_id=held_id), [], {}, trigger_at=T,
                 wall_clock=T, policy=POLICY)
    assert (v.decision, v.reason) == (Decision.holdout, "playbook_holdout")
