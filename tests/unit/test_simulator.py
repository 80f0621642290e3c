"""The synthetic bank: reproducible, and its ground truth agrees with its events."""

from __future__ import annotations

import itertools
from collections import defaultdict
from datetime import datetime, timedelta

import pytest

from shared.events import encode_event
from tenure_cli.simulator import SimConfig, ground_truth, simulate

SMALL = SimConfig(customers=150, seed=11, days=400)


def _customer_activity(events) -> dict[str, list[datetime]]:  # type: ignore[no-untyped-def]
    activity: dict[str, list[datetime]] = defaultdict(list)
    for e in events:
        initiated = e.event_type in ("app.click", "feedback.submitted") or (
            e.event_type == "transaction.posted" and e.payload.initiated_by.value == "customer"
        )
        if initiated:
            activity[e.customer_id].append(e.occurred_at)
    return activity


@pytest.fixture(scope="module")
def full_events() -> list:
    return list(simulate(SMALL))


def test_same_seed_same_events_other_seed_other_events(full_events: list) -> None:
    again = [encode_event(e) for e in itertools.islice(simulate(SMALL), 3000)]
    assert again == [encode_event(e) for e in full_events[:3000]]
    other = [encode_event(e) for e in itertools.islice(simulate(SimConfig(customers=150, seed=12, days=400)), 3000)]
    assert other != again


def test_events_are_in_event_time_order_within_the_window(full_events: list) -> None:
    times = [e.occurred_at for e in full_events]
    assert times == sorted(times)
    assert SMALL.start <= times[0] and times[-1] < SMALL.end
    assert len({e.event_id for e in full_events}) == len(full_events)


def test_churners_go_silent_after_churn_and_closers_close_everything(full_events: list) -> None:
    truth = {t["customer_id"]: t for t in ground_truth(SMALL)}
    activity = _customer_activity(full_events)
    opened: dict[str, set[str]] = defaultdict(set)
    closed: dict[str, set[str]] = defaultdict(set)
    for e in full_events:
        if e.event_type == "account.opened":
            opened[e.customer_id].add(e.payload.account_id)
        elif e.event_type == "account.closed":
            closed[e.customer_id].add(e.payload.account_id)
    churned_in_window = 0
    for cid, t in truth.items():
        if not t["churns"] or datetime.fromisoformat(t["churn_at"]) >= SMALL.end:
            assert not closed[cid], cid
            continue
        churned_in_window += 1
        churn_at = datetime.fromisoformat(t["churn_at"])
        assert all(a < churn_at for a in activity[cid]), cid
        if t["closes_accounts"]:
            assert closed[cid] == opened[cid] and opened[cid]
    assert churned_in_window >= 15


def test_loyal_customers_stay_active_and_decliners_decline(full_events: list) -> None:
    truth = {t["customer_id"]: t for t in ground_truth(SMALL)}
    activity = _customer_activity(full_events)
    # Routine behaviour only (purchases and app use): reason-specific signals such as
    # transfers to a competitor or complaints add events while routine use fades.
    routine = _customer_activity(
        e for e in full_events
        if e.event_type == "app.click"
        or (e.event_type == "transaction.posted" and e.payload.category.value == "card_purchase")
    )
    last_quarter = SMALL.end - timedelta(days=90)
    loyal = [c for c, t in truth.items() if t["archetype"] == "loyal"]
    active = sum(1 for c in loyal if any(a >= last_quarter for a in activity[c]))
    assert active / len(loyal) > 0.9
    before_total = during_total = 0
    for cid, t in truth.items():
        if not t["churns"] or t["archetype"] in ("silent_leaver", "life_event"):
            continue
        churn_at = datetime.fromisoformat(t["churn_at"])
        decline = datetime.fromisoformat(t["decline_starts_at"])
        span = churn_at - decline
        if churn_at >= SMALL.end or decline - 2 * span < SMALL.start:
            continue
        before = sum(1 for a in routine[cid] if decline - span <= a < decline)
        during = sum(1 for a in routine[cid] if decline <= a < churn_at)
        before_total += before
        during_total += during
    print(f"activity during decline / before: {during_total}/{before_total}")
    assert before_total > 100 and during_total / before_total < 0.8


def test_value_is_concentrated_in_the_top_fifth() -> None:
    wealth = sorted((t["wealth"] for t in ground_truth(SimConfig(customers=2000, seed=3))),
                    reverse=True)
    assert sum(wealth[: len(wealth) // 5]) / sum(wealth) > 0.6


def test_purchase_profile_is_only_sparse_card_purchases() -> None:
    config = SimConfig(customers=400, seed=5, days=500, profile="purchases")
    events = list(simulate(config))
    assert {e.event_type for e in events} == {"transaction.posted"}
    per_customer: dict[str, int] = defaultdict(int)
    for e in events:
        per_customer[e.customer_id] += 1
    counts = sorted(per_customer.values())
    assert counts[0] == 1, "one-purchase customers exist"
    assert counts[len(counts) // 2] <= 10, "most customers buy rarely"
    truth = {t["customer_id"]: t for t in ground_truth(config)}
    for e in events:
        t = truth[e.customer_id]
        if t["churn_at"] and not t["returns_at"]:
            assert e.occurred_at <= datetime.fromisoformat(t["churn_at"])


# ------------------------------------------------------------------ response to engagement


def test_stepped_simulation_equals_simulate_without_treatments() -> None:
    from tenure_cli.simulator import Simulation

    config = SimConfig(customers=40, seed=3, days=120)
    whole = [encode_event(e) for e in simulate(config)]
    sim = Simulation(config)
    stepped = []
    for k in range(1, 13):
        stepped += [encode_event(e) for e in sim.advance(config.start + timedelta(days=10 * k))]
    assert stepped == whole
    with pytest.raises(ValueError, match="whole day"):
        sim.advance(config.start + timedelta(days=130, hours=3))


def _leavers(config: SimConfig) -> list[dict]:
    return [t for t in ground_truth(config) if t["churn_at"]
            and datetime.fromisoformat(t["churn_at"]) < config.end - timedelta(days=60)
            and datetime.fromisoformat(t["churn_at"]) - timedelta(days=20)
            > max(datetime.fromisoformat(t["joined_at"]), config.start) + timedelta(days=2)]


def _index(cid: str) -> int:
    return int(cid[1:])


def test_a_message_keeps_a_leaver_with_its_seeded_chance_and_touches_nobody_else() -> None:
    from tenure_cli.simulator import Treatments, customer_events

    sure = SimConfig(customers=150, seed=11, days=400, offer_effects=(("retention_offer", 1.0),))
    leavers = _leavers(sure)[:8]
    assert leavers
    treatments = Treatments()
    received = {}
    for t in leavers:
        churn_at = datetime.fromisoformat(t["churn_at"])
        arrives = datetime.combine((churn_at - timedelta(days=20)).date(), datetime.min.time(),
                                   tzinfo=churn_at.tzinfo)
        received[t["customer_id"]] = treatments.receive(t["customer_id"], "retention_offer",
                                                        arrives)
    for t in leavers:
        cid, churn_at = t["customer_id"], datetime.fromisoformat(t["churn_at"])
        kept = list(customer_events(sure, _index(cid), treatments))
        r = received[cid]
        assert r.saved is True and r.would_have_left_at == churn_at
        assert not any(e.event_type == "account.closed" for e in kept)
        later = _customer_activity(kept)[cid]
        assert any(at > churn_at + timedelta(days=1) for at in later), cid
        # Until the message arrived, the customer did exactly what they would have done.
        untreated = [encode_event(e) for e in customer_events(sure, _index(cid))
                     if e.occurred_at < r.known_at]
        assert [encode_event(e) for e in kept if e.occurred_at < r.known_at] == untreated
    # A message without effect (or to a customer who is not leaving) changes nothing.
    idle = Treatments()
    stayer = next(t for t in ground_truth(sure) if not t["churns"])
    idle.receive(leavers[0]["customer_id"], "birthday", received[
        leavers[0]["customer_id"]].known_at)
    idle.receive(stayer["customer_id"], "retention_offer", sure.start + timedelta(days=30))
    for cid in (leavers[0]["customer_id"], stayer["customer_id"]):
        assert [encode_event(e) for e in customer_events(sure, _index(cid), idle)] == [
            encode_event(e) for e in customer_events(sure, _index(cid))]
    assert all(r.saved is False for cid in idle.customers() for r in idle.of(cid))


def test_the_share_kept_follows_the_configured_effect() -> None:
    from tenure_cli.simulator import Treatments, customer_events

    config = SimConfig(customers=600, seed=5, days=400, offer_effects=(("care_check_in", 0.4),))
    leavers = _leavers(config)
    treatments = Treatments()
    for t in leavers:
        churn_at = datetime.fromisoformat(t["churn_at"])
        arrives = datetime.combine((churn_at - timedelta(days=20)).date(), datetime.min.time(),
                                   tzinfo=churn_at.tzinfo)
        treatments.receive(t["customer_id"], "care_check_in", arrives)
        for _ in customer_events(config, _index(t["customer_id"]), treatments):
            pass
    responses = [r for cid in treatments.customers() for r in treatments.of(cid)]
    n = len(responses)
    kept = sum(r.saved for r in responses) / n
    assert n > 100
    assert abs(kept - 0.4) < 3 * (0.4 * 0.6 / n) ** 0.5
    # The response stream is seeded: the same messages, the same responses.
    again = Treatments()
    for cid in treatments.customers():
        for r in treatments.of(cid):
            again.receive(cid, r.template, r.known_at)
        for _ in customer_events(config, _index(cid), again):
            pass
    assert [r.saved for c in again.customers() for r in again.of(c)] == [
        r.saved for r in responses]
