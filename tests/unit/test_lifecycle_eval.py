"""./dev eval's stage accuracy: flagged before leaving, lead time, false alarms (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from tenure_cli.eval_cmd import lapsed_at, left_at, stage_accuracy, warning_lead_days

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def day(n: float) -> datetime:
    return T0 + timedelta(days=n)


def history(*moves: tuple[str, float]) -> list[dict[str, Any]]:
    return [{"to": to, "transition_at": day(at)} for to, at in moves]


def test_a_churner_left_when_the_last_account_closed_or_at_the_last_own_activity() -> None:
    activity = [day(1), day(30), day(80)]
    assert left_at("closed", activity, day(100), as_of=day(90)) == day(100)
    assert left_at("inactive", activity, None, as_of=day(60)) == day(30)
    assert left_at("inactive", [], None, as_of=day(60)) is None


def test_the_warning_must_stand_when_the_customer_leaves() -> None:
    # at_risk on day 20, dormant after it: the warning stood from day 20.
    standing = history(("prospect", 0), ("onboarding", 0), ("at_risk", 20), ("dormant", 50))
    assert warning_lead_days(standing, day(60)) == 40.0
    # Cleared before leaving: no warning stood.
    cleared = history(("prospect", 0), ("active", 5), ("at_risk", 20), ("active", 30))
    assert warning_lead_days(cleared, day(60)) is None
    # A stage entered at the moment of leaving (the closure's own churned) does not count.
    assert warning_lead_days(history(("active", 0), ("churned", 60)), day(60)) is None
    # A second warning after a recovery counts from its own start.
    again = history(("active", 0), ("at_risk", 10), ("active", 20), ("at_risk", 45))
    assert warning_lead_days(again, day(60)) == 15.0


def test_a_churner_lapsed_at_the_closure_or_when_the_silence_reached_dormancy() -> None:
    activity = [day(1), day(30), day(80)]
    assert lapsed_at("closed", activity, day(100), as_of=day(90)) == day(100)
    assert lapsed_at("closed", activity, day(200), as_of=day(90)) == day(170)
    assert lapsed_at("inactive", activity, None, as_of=day(85)) == day(170)
    assert lapsed_at("inactive", [], None, as_of=day(60)) is None


def test_stage_accuracy_figures() -> None:
    customers = ["closer", "silent", "late", "missed", "gone", "stayer", "alarm", "loyal"]
    labels = {c: 1 for c in customers[:5]} | {"stayer": 0, "alarm": 0, "loyal": 0}
    outcome = {"closer": "closed", "silent": "inactive", "late": "inactive",
               "missed": "inactive", "gone": "inactive"}
    histories = {
        # Warned on day 150, closed on day 170: 20 days before leaving and before lapsing.
        "closer": {"history": history(("active", 0), ("at_risk", 150))},
        # Warned on day 130 while still active; last activity day 140, lapses on day 230.
        "silent": {"history": history(("active", 0), ("at_risk", 130))},
        # Warned on day 155 once silent (last activity day 145): only before the lapse.
        "late": {"history": history(("active", 0), ("at_risk", 155))},
        "missed": {"history": history(("active", 0))},
        # Silent since day 20: dormant on day 110, lapsed long before as_of.
        "gone": {"history": history(("active", 0), ("at_risk", 10), ("dormant", 110))},
        "loyal": {"history": history(("active", 0), ("loyal", 40), ("at_risk", 150))},
    }
    activity = {"closer": [day(5), day(100)], "silent": [day(10), day(140)],
                "late": [day(10), day(145)], "missed": [day(10), day(150)], "gone": [day(20)]}
    stages = ["at_risk", "at_risk", "at_risk", "active", "dormant", "loyal", "at_risk",
              "at_risk"]
    figures = stage_accuracy(customers, labels, outcome, stages, histories, activity,
                             {"closer": day(170)}, as_of=day(160))
    assert figures["churners"] == 5
    assert figures["leavers"] == 4 and figures["churners_already_lapsed"] == 1
    assert figures["warned_before_leaving_share"] == 2 / 4  # closer and silent
    assert figures["lead_before_leaving_days"] == [12.5, 15.0, 17.5]  # 20 and 10 days
    assert figures["warned_before_lapse_share"] == 3 / 4  # and late
    assert figures["lead_before_lapse_days"] == [50.0, 80.0, 90.0]  # 20, 100, 80 days
    # Every churner, strict: closer, silent, and gone (dormant reached from at_risk).
    assert figures["churners_flagged_share"] == 3 / 5
    assert figures["churners_flagged_at_as_of"] == 4 / 5
    assert figures["false_alarm_share"] == 2 / 3
    assert figures["stayers_dormant_or_churned_share"] == 0.0
    assert figures["loyal_base_at_risk_share"] == 1.0
    assert figures["false_alarms_by_rule"] == {"None": 1}  # the helper writes no rule
