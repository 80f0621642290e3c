"""./dev eval's stage accuracy: flagged before leaving, lead time, false alarms (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from tenure_cli.eval_cmd import left_at, stage_accuracy, warning_lead_days

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


def test_stage_accuracy_figures() -> None:
    customers = ["closer", "silent", "missed", "stayer", "alarm"]
    labels = {"closer": 1, "silent": 1, "missed": 1, "stayer": 0, "alarm": 0}
    outcome = {"closer": "closed", "silent": "inactive", "missed": "inactive",
               "stayer": "active", "alarm": "active"}
    histories = {
        "closer": {"history": history(("active", 0), ("at_risk", 70))},
        "silent": {"history": history(("active", 0), ("at_risk", 30))},
        "missed": {"history": history(("active", 0), ("dormant", 150))},
    }
    activity = {"silent": [day(10), day(50)], "missed": [day(10), day(60)]}
    stages = ["at_risk", "dormant", "dormant", "loyal", "at_risk"]
    figures = stage_accuracy(customers, labels, outcome, stages, histories, activity,
                             {"closer": day(100)}, as_of=day(160))
    assert figures["churners"] == 3
    assert figures["churners_flagged_share"] == 2 / 3
    assert figures["median_lead_days"] == 25.0  # closer 30 days ahead, silent 20
    assert figures["churners_flagged_at_as_of"] == 1.0
    assert figures["false_alarm_share"] == 0.5
