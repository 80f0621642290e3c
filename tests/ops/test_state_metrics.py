"""Pure checks of the figures' bookkeeping: no database, no broker."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from prometheus_client import CollectorRegistry, Gauge

from services.engagement.metrics import EngagementMetrics
from shared.metrics import set_all


def _value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_set_all_drops_labels_that_left_the_data() -> None:
    registry = CollectorRegistry()
    gauge = Gauge("customers", "x", ["stage"], registry=registry)
    set_all(gauge, {"active": 5, "dormant": 2})
    set_all(gauge, {"active": 6})
    assert _value(registry, "customers", stage="active") == 6
    assert _value(registry, "customers", stage="dormant") is None


@dataclass
class FakeUow:
    emitted: list[Any] = field(default_factory=list)


def decided(playbook: str, decision: str, reason: str) -> Any:
    return SimpleNamespace(event_type="engagement.decided", payload=SimpleNamespace(
        playbook=playbook, decision=SimpleNamespace(value=decision), reason=reason))


async def test_decisions_count_once_per_committed_batch_even_when_it_was_retried() -> None:
    registry = CollectorRegistry()
    metrics = EngagementMetrics(registry, lambda: {})
    batch = FakeUow([decided("win-back", "sent", "policy_passed"),
                     decided("win-back", "suppressed", "cooldown"),
                     SimpleNamespace(event_type="engagement.delivered", payload=None)])
    await metrics.after_batch(batch)  # first attempt: its transaction rolls back
    await metrics.after_batch(batch)  # the retry commits
    metrics.committed()
    metrics.committed()  # a later batch that decided nothing
    name = "tenure_engagement_decisions_total"
    assert _value(registry, name, playbook="win-back", decision="sent",
                  reason="policy_passed") == 1
    assert _value(registry, name, playbook="win-back", decision="suppressed",
                  reason="cooldown") == 1


async def test_budget_left_is_the_monthly_budget_less_this_months_treatments() -> None:
    registry = CollectorRegistry()
    playbooks = {
        "retention-offer": SimpleNamespace(spec=SimpleNamespace(budget_per_month=500)),
        "birthday": SimpleNamespace(spec=SimpleNamespace(budget_per_month=None)),
        "win-back": SimpleNamespace(spec=SimpleNamespace(budget_per_month=10)),
    }
    metrics = EngagementMetrics(registry, lambda: playbooks)

    class FakeConn:
        async def execute(self, statement: Any, params: Any = None) -> Any:
            assert "month_start" in params
            return [SimpleNamespace(playbook="retention-offer", n=120),
                    SimpleNamespace(playbook="win-back", n=14)]

        async def scalar(self, statement: Any) -> int:
            return 3

    await metrics.refresh(FakeConn())
    name = "tenure_engagement_playbook_budget_remaining"
    assert _value(registry, name, playbook="retention-offer") == 380
    assert _value(registry, name, playbook="win-back") == 0  # never negative
    assert _value(registry, name, playbook="birthday") is None  # no budget, no figure
    assert _value(registry, "tenure_engagement_deliveries_pending") == 3
