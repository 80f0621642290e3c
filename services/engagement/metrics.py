"""Engagement's own figures: decisions by outcome and reason, budgets left, work waiting."""

from __future__ import annotations

from collections import Counter as Tally
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from prometheus_client import CollectorRegistry, Counter, Gauge

from shared.metrics import StateGauges, set_all

# Treatments that use a playbook's monthly budget (as the policy counts them, see
# EngagementStore.budget_used), in the current calendar month (UTC).
_BUDGET_USED = sa.text(
    "SELECT playbook, count(*) AS n FROM actions WHERE decision IN ('sent', 'deferred') "
    "AND decided_at >= :month_start GROUP BY playbook"
)
_PENDING = sa.text("SELECT count(*) FROM actions WHERE status = 'pending'")
_OPEN_TASKS = sa.text("SELECT count(*) FROM rm_tasks WHERE status = 'open'")


class EngagementMetrics:
    """Decisions are counted after their batch commits: `after_batch` notes what the batch
    decided, `committed` adds it, so a batch that is retried is never counted twice."""

    def __init__(self, registry: CollectorRegistry, playbooks: Any):
        p = "tenure_engagement"
        self.registry = registry
        self.playbooks = playbooks  # () -> {id: Playbook}: the registry's current playbooks
        self.decisions = Counter(
            f"{p}_decisions", "engagement.decided emitted, by playbook, decision and reason",
            ["playbook", "decision", "reason"], registry=registry)
        self.budget_remaining = Gauge(
            f"{p}_playbook_budget_remaining",
            "Treatments a playbook may still send this calendar month (UTC)",
            ["playbook"], registry=registry)
        self.deliveries_pending = Gauge(
            f"{p}_deliveries_pending", "Decided messages waiting for delivery", registry=registry)
        self.rm_tasks_open = Gauge(
            f"{p}_rm_tasks_open", "Relationship-manager tasks not yet completed",
            registry=registry)
        self._noted: Tally[tuple[str, str, str]] = Tally()

    async def after_batch(self, uow: Any) -> None:
        noted: Tally[tuple[str, str, str]] = Tally()
        for event in uow.emitted:
            if event.event_type == "engagement.decided":
                d = event.payload
                noted[(d.playbook, getattr(d.decision, "value", str(d.decision)), d.reason)] += 1
        self._noted = noted  # replaces what an attempt that rolled back noted

    def committed(self) -> None:
        noted, self._noted = self._noted, Tally()
        for labels, n in noted.items():
            self.decisions.labels(*labels).inc(n)

    async def refresh(self, conn: Any) -> None:
        now = datetime.now(UTC)
        month_start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        used = {r.playbook: r.n for r in
                await conn.execute(_BUDGET_USED, {"month_start": month_start})}
        budgets = {pid: p.spec.budget_per_month for pid, p in self.playbooks().items()
                   if p.spec.budget_per_month is not None}
        set_all(self.budget_remaining,
                {pid: max(budget - used.get(pid, 0), 0) for pid, budget in budgets.items()})
        self.deliveries_pending.set(await conn.scalar(_PENDING) or 0)
        self.rm_tasks_open.set(await conn.scalar(_OPEN_TASKS) or 0)

    def state_gauges(self, engine: Any) -> StateGauges:
        return StateGauges(engine, self.refresh, service="engagement", registry=self.registry)


def attach(runtime: Any, registry: Any) -> EngagementMetrics:
    """Wire the figures into a built runtime: the batch hook, the commit callback and the
    state loop (the one place engagement's bootstrap calls)."""
    metrics = EngagementMetrics(runtime.metrics.registry, lambda: registry.playbooks)
    events = runtime.consumers[0]
    previous_hook, committed = events.after_batch, events.on_committed

    async def after_batch(uow: Any) -> None:
        if previous_hook is not None:
            await previous_hook(uow)
        await metrics.after_batch(uow)

    def on_committed() -> None:
        metrics.committed()
        committed()

    events.after_batch, events.on_committed = after_batch, on_committed
    runtime.extra_tasks.append(metrics.state_gauges(runtime.engine).run)
    return metrics
